//! The error type of maskforge: what went wrong, with the facts a caller
//! needs to act on it (the op and node, the layer, the name that was not
//! understood), and whether the caller's input is at fault at all.
//!
//! Callers branch on variants, never on message text: the ONNX reader
//! collects [`Error::Unsupported`] per node and reports every one at once,
//! effective pruning's bisection treats only [`Error::Infeasible`] as "too
//! dense for this quota". [`Error::context`] prefixes a file or node name
//! without hiding the variant beneath ([`Error::root`]).
//!
//! ```
//! use maskforge::error::Error;
//! let e = Error::infeasible(Some("fc1.weight"), "cannot keep 90 of 80 weights")
//!     .context("lenet300");
//! assert!(matches!(e.root(), Error::Infeasible { .. }));
//! assert!(!e.is_internal());
//! assert_eq!(e.to_string(), "lenet300: fc1.weight: cannot keep 90 of 80 weights");
//! ```

/// What went wrong, with a one-line cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name outside its vocabulary (a method, quota, dtype, ...).
    #[error("unknown {what} '{given}' (expected {})", expected.join(", "))]
    UnknownName {
        what: &'static str,
        given: String,
        expected: &'static [&'static str],
    },
    /// A construct of the model that maskforge does not translate; `op` and
    /// `node` are empty until the reader that met it fills them in.
    #[error("{}", unsupported_line(op, node, detail))]
    Unsupported {
        op: String,
        node: String,
        detail: String,
    },
    /// Every unsupported construct of one model, in graph order.
    #[error("{} unsupported op(s): {}", ops.len(), ops.iter().map(|o| o.to_string()).collect::<Vec<_>>().join("; "))]
    UnsupportedOps { ops: Vec<UnsupportedOp> },
    /// A quota or target the network cannot meet (a layer too small for its
    /// count, a density outside what the quota can reach).
    #[error("{}{detail}", layer.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
    Infeasible {
        layer: Option<String>,
        detail: String,
    },
    /// The architecture a checkpoint needs (and cannot be inferred), or one
    /// given where it does not apply or cannot be read.
    #[error("{0}")]
    Architecture(String),
    /// Any other fault of the caller's input or request.
    #[error("{0}")]
    Input(String),
    /// `source` with the file, node or argument it happened in.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
    /// Something failed that the user could not have prevented.
    #[error("internal error: {0}")]
    Internal(String),
}

/// One unsupported construct: the op, the node and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOp {
    pub op: String,
    pub node: String,
    pub detail: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&unsupported_line(&self.op, &self.node, &self.detail))
    }
}

fn unsupported_line(op: &str, node: &str, detail: &str) -> String {
    match (op.is_empty(), node.is_empty()) {
        (true, _) => format!("unsupported: {detail}"),
        (false, true) => format!("{op}: {detail}"),
        (false, false) => format!("{op} (node '{node}'): {detail}"),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// A construct the reader does not translate (it adds op and node).
    pub fn unsupported(detail: impl Into<String>) -> Self {
        Error::Unsupported {
            op: String::new(),
            node: String::new(),
            detail: detail.into(),
        }
    }

    /// A target the network cannot meet, at `layer` if one is to blame.
    pub fn infeasible(layer: Option<&str>, detail: impl Into<String>) -> Self {
        Error::Infeasible {
            layer: layer.map(str::to_string),
            detail: detail.into(),
        }
    }

    /// Prefix the message with where it happened (a file, layer or
    /// argument), keeping the variant reachable through [`Error::root`].
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        Error::Context {
            context: ctx.to_string(),
            source: Box::new(self),
        }
    }

    /// The error beneath every [`Error::Context`].
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// True for failures the user could not have prevented (a bug, or an
    /// I/O fault we did not cause); false when the input is at fault.
    pub fn is_internal(&self) -> bool {
        matches!(self.root(), Error::Internal(_))
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Internal(format!("candle: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_variant_and_the_internal_kind() {
        let e = Error::internal("disk").context("a.onnx").context("audit");
        assert!(e.is_internal());
        assert_eq!(e.to_string(), "audit: a.onnx: internal error: disk");
        let u = Error::unsupported("Loop").context("node 'x'");
        assert!(matches!(u.root(), Error::Unsupported { .. }));
        assert!(!u.is_internal());
    }

    #[test]
    fn unsupported_ops_are_listed_in_one_line() {
        let e = Error::UnsupportedOps {
            ops: vec![
                UnsupportedOp {
                    op: "LSTM".into(),
                    node: "rnn".into(),
                    detail: "recurrent ops are not supported".into(),
                },
                UnsupportedOp {
                    op: "If".into(),
                    node: String::new(),
                    detail: "subgraphs are not supported".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "2 unsupported op(s): LSTM (node 'rnn'): recurrent ops are not supported; If: subgraphs are not supported"
        );
    }
}
