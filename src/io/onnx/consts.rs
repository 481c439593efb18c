//! Constants met while reading an ONNX graph, and the folding of the shape
//! arithmetic exporters emit (`Shape -> Gather -> Concat -> Reshape`).
//!
//! A constant remembers which stored tensor it came from and how its
//! elements map onto that tensor's elements, so a weight reached through
//! `Identity`/`Cast`/`Reshape`/`Transpose` is still keyed, and masked, by the
//! name and layout of the stored tensor (CONVENTIONS.md).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::graph::tensor::{ConstTensor, DType};

/// A constant value in the graph: a view onto a stored tensor.
#[derive(Clone, Debug)]
pub struct Const {
    /// Shape of this view.
    pub shape: Vec<usize>,
    /// Name of the stored tensor (initializer or `Constant*` output).
    pub stored_name: String,
    pub stored: ConstTensor,
    /// View element -> stored element; `None` for the identity.
    pub index: Option<Arc<Vec<u32>>>,
}

impl Const {
    pub fn stored(name: &str, t: ConstTensor) -> Self {
        Self {
            shape: t.shape.clone(),
            stored_name: name.to_string(),
            stored: t,
            index: None,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The stored tensor behind this view, as a prunable weight's source.
    pub fn stored_weight(&self) -> crate::graph::builder::StoredWeight {
        crate::graph::builder::StoredWeight {
            name: self.stored_name.clone(),
            tensor: self.stored.clone(),
            index: self.index.clone(),
        }
    }

    /// The view's values as a fresh tensor.
    pub fn materialize(&self) -> Result<ConstTensor> {
        match &self.index {
            None => {
                let mut t = self.stored.clone();
                t.shape = self.shape.clone();
                Ok(t)
            }
            Some(ix) => {
                let v = self.stored.to_f32()?;
                Ok(ConstTensor::f32(
                    self.shape.clone(),
                    ix.iter().map(|&i| v[i as usize]).collect(),
                ))
            }
        }
    }

    pub fn to_i64(&self) -> Result<Vec<i64>> {
        Ok(self.materialize()?.to_i64())
    }

    /// The same elements under a new shape (Reshape, Flatten, (Un)Squeeze).
    pub fn reshaped(&self, shape: Vec<usize>) -> Self {
        Self {
            shape,
            ..self.clone()
        }
    }

    /// Axis permutation, composing the index map.
    pub fn transposed(&self, perm: &[usize]) -> Result<Self> {
        let mut seen = vec![false; self.shape.len()];
        if perm.len() != self.shape.len()
            || perm
                .iter()
                .any(|&p| p >= seen.len() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::input(format!(
                "'{}': perm {perm:?} is not a permutation of {} axes",
                self.stored_name,
                self.shape.len()
            )));
        }
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let (is, os) = (strides(&self.shape), strides(&shape));
        let dims = shape.clone();
        self.remapped(shape, |e| {
            (0..perm.len())
                .map(|d| ((e / os[d]) % dims[d]) * is[perm[d]])
                .sum()
        })
    }
}

impl Const {
    /// A view of `shape` whose element `e` is this view's element `src(e)`
    /// (a transposed convolution's weight seen as an ordinary one).
    pub fn remapped(&self, shape: Vec<usize>, src: impl Fn(usize) -> usize) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.numel() || n > u32::MAX as usize {
            return Err(Error::internal(format!(
                "'{}': cannot view {:?} as {shape:?}",
                self.stored_name, self.shape
            )));
        }
        let index: Vec<u32> = (0..n)
            .map(|e| match &self.index {
                Some(ix) => ix[src(e)],
                None => src(e) as u32,
            })
            .collect();
        Ok(Self {
            shape,
            stored_name: self.stored_name.clone(),
            stored: self.stored.clone(),
            index: Some(Arc::new(index)),
        })
    }
}

pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Resolve an ONNX Reshape target against the input shape (0 copies, -1 infers).
pub fn resolve_reshape(input: &[usize], target: &[i64], allow_zero: bool) -> Result<Vec<usize>> {
    let n: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allow_zero => out.push(*input.get(i).ok_or_else(|| {
                Error::input(format!(
                    "Reshape: 0 at axis {i} but the input has rank {}",
                    input.len()
                ))
            })?),
            t if t >= 0 => out.push(t as usize),
            _ => return Err(Error::input(format!("Reshape: invalid target {target:?}"))),
        }
    }
    let known = out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::input(format!("Reshape: target {target:?} is too large")))?;
    if let Some(i) = infer {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(Error::input(format!(
                "Reshape: cannot reshape {input:?} into {target:?}"
            )));
        }
        out[i] = n / known;
    } else if known != n {
        return Err(Error::input(format!(
            "Reshape: cannot reshape {input:?} ({n} elements) into {target:?}"
        )));
    }
    Ok(out)
}

/// The dtype an ONNX Cast produces, for folding.
pub fn cast(t: &Const, to: DType) -> Result<Const> {
    if t.stored.dtype().is_float() == to.is_float() {
        return Ok(t.clone());
    }
    let m = t.materialize()?;
    let out = if to.is_float() {
        ConstTensor::f32(m.shape.clone(), m.to_f32()?)
    } else {
        ConstTensor::i64(m.shape.clone(), m.to_i64())
    };
    Ok(Const::stored(&t.stored_name, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_targets_resolve_like_onnx() {
        assert_eq!(
            resolve_reshape(&[1, 256, 6, 6], &[1, -1], false).unwrap(),
            vec![1, 9216]
        );
        assert_eq!(
            resolve_reshape(&[1, 256, 6, 6], &[0, -1], false).unwrap(),
            vec![1, 9216]
        );
        assert!(resolve_reshape(&[1, 10], &[3, -1], false).is_err());
    }

    #[test]
    fn transposes_compose_back_to_the_stored_element() {
        let t = ConstTensor::f32(vec![2, 3], (0..6).map(|x| x as f32).collect());
        let c = Const::stored("w", t);
        let tt = c.transposed(&[1, 0]).unwrap();
        assert_eq!(
            tt.materialize().unwrap().to_f32().unwrap(),
            vec![0., 3., 1., 4., 2., 5.]
        );
        let back = tt.transposed(&[1, 0]).unwrap();
        assert_eq!(back.index.as_deref().unwrap(), &vec![0, 1, 2, 3, 4, 5]);
    }
}
