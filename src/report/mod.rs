//! What maskforge reports beyond a mask: compression [`sweep`]s and their
//! [`plot`]s, and the accuracy of a masked network ([`eval`]).

pub mod eval;
pub mod plot;
pub mod sweep;
