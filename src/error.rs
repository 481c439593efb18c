//! The error type of maskforge and the exit codes it maps to.
//!
//! Two kinds: an *input* error (bad file, bad argument, unsupported model:
//! exit code 1) and an *internal* failure (a bug or an I/O fault we did not
//! cause: exit code 2).
//!
//! ```
//! use maskforge::error::Error;
//! let e = Error::input("weights.safetensors: header is truncated");
//! assert_eq!(e.exit_code(), 1);
//! ```

/// What went wrong, with a one-line cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's input or request is at fault.
    #[error("{0}")]
    Input(String),
    /// Something failed that the user could not have prevented.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// 1 for input errors, 2 for internal failures (CONVENTIONS.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 1,
            Error::Internal(_) => 2,
        }
    }

    /// Prefix the message with context (a file or layer name), keeping the kind.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            Error::Input(m) => Error::Input(format!("{ctx}: {m}")),
            Error::Internal(m) => Error::Internal(format!("{ctx}: {m}")),
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Internal(format!("candle: {e}"))
    }
}
