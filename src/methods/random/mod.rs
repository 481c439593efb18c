//! Random pruning with exact per-layer counts: plain [`rpi`] and MiCA's
//! restricted placement ([`mica`]), both drawn from per-layer seeded streams.

pub mod mica;
pub mod rpi;
