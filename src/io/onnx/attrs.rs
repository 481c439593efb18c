//! Typed access to a node's attributes.
//!
//! An attribute stored with the wrong type (an `INTS` where an `INT` belongs,
//! a float stride) is an input error naming the node and attribute, never a
//! silent 0: a prost-decoded [`AttributeProto`] carries every field, so
//! reading `a.i` of a `FLOAT` attribute would quietly give the default.
//!
//! ```
//! use candle_onnx::onnx::{AttributeProto, NodeProto};
//! use maskforge::io::onnx::attrs::Attrs;
//! let n = NodeProto {
//!     op_type: "Conv".into(),
//!     attribute: vec![AttributeProto { name: "group".into(), r#type: 1, f: 2.0, ..Default::default() }],
//!     ..Default::default()
//! };
//! // `group` is an INT; a FLOAT there is refused, not read as 0.
//! let e = Attrs::of(&n).int("group", 1).unwrap_err();
//! assert!(e.to_string().contains("group"));
//! ```

use candle_onnx::onnx::{AttributeProto, NodeProto, TensorProto};

use crate::error::{Error, Result};

/// `AttributeProto.type` codes (onnx.proto's AttributeType).
mod code {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
}

/// The attributes of one node.
pub struct Attrs<'n> {
    node: &'n NodeProto,
}

impl<'n> Attrs<'n> {
    pub fn of(node: &'n NodeProto) -> Self {
        Self { node }
    }

    fn get(&self, name: &str) -> Option<&'n AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// The attribute if present, checked to be of type `want`. Files from
    /// old exporters leave `type` unset (0); those are read as the field the
    /// op defines.
    fn typed(&self, name: &str, want: i32, what: &str) -> Result<Option<&'n AttributeProto>> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.r#type == want || a.r#type == 0 => Ok(Some(a)),
            Some(a) => Err(Error::input(format!(
                "{} node '{}': attribute '{name}' must be {what}, found {}",
                self.node.op_type,
                label(self.node),
                type_name(a.r#type)
            ))),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self
            .typed(name, code::INT, "an integer")?
            .map_or(default, |a| a.i))
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self
            .typed(name, code::FLOAT, "a float")?
            .map_or(default, |a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .typed(name, code::INTS, "a list of integers")?
            .map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self
            .typed(name, code::FLOATS, "a list of floats")?
            .map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        Ok(self
            .typed(name, code::STRING, "a string")?
            .map_or(default.to_string(), |a| {
                String::from_utf8_lossy(&a.s).into_owned()
            }))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<TensorProto>> {
        Ok(self
            .typed(name, code::TENSOR, "a tensor")?
            .and_then(|a| a.t.clone()))
    }

    /// An integer attribute that must lie in `range`.
    pub fn int_in(
        &self,
        name: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64> {
        let v = self.int(name, default)?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(Error::input(format!(
                "{} node '{}': attribute '{name}' = {v} is out of range {range:?}",
                self.node.op_type,
                label(self.node)
            )))
        }
    }

    /// A string attribute that must be one of `allowed` (the first is the default).
    pub fn choice(&self, name: &str, allowed: &[&str]) -> Result<String> {
        let v = self.string(name, allowed[0])?;
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(Error::input(format!(
                "{} node '{}': attribute '{name}' = '{v}' is not one of {allowed:?}",
                self.node.op_type,
                label(self.node)
            )))
        }
    }
}

/// A node's name for messages (its first output when unnamed).
pub fn label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

fn type_name(t: i32) -> &'static str {
    match t {
        code::FLOAT => "a float",
        code::INT => "an integer",
        code::STRING => "a string",
        code::TENSOR => "a tensor",
        5 => "a graph",
        code::FLOATS => "a list of floats",
        code::INTS => "a list of integers",
        8 => "a list of strings",
        _ => "an unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: "Conv".into(),
            name: "c1".into(),
            attribute: attrs,
            ..Default::default()
        }
    }

    #[test]
    fn untyped_attributes_of_old_exporters_read_as_their_field() {
        let n = node(vec![AttributeProto {
            name: "group".into(),
            i: 4,
            ..Default::default()
        }]);
        assert_eq!(Attrs::of(&n).int("group", 1).unwrap(), 4);
    }

    #[test]
    fn a_list_where_a_scalar_belongs_is_refused_with_the_node_name() {
        let n = node(vec![AttributeProto {
            name: "group".into(),
            r#type: code::INTS,
            ints: vec![2],
            ..Default::default()
        }]);
        let e = Attrs::of(&n).int("group", 1).unwrap_err().to_string();
        assert!(
            e.contains("'c1'") && e.contains("group") && e.contains("list"),
            "{e}"
        );
    }

    #[test]
    fn choices_name_the_allowed_values() {
        let n = node(vec![AttributeProto {
            name: "mode".into(),
            r#type: code::STRING,
            s: b"bicubic".to_vec(),
            ..Default::default()
        }]);
        let e = Attrs::of(&n)
            .choice("mode", &["nearest", "linear", "cubic"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bicubic") && e.contains("linear"), "{e}");
    }
}
