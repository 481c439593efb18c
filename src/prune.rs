//! Random-family pruning: RPI and MiCA with any quota, optionally reaching a
//! target *effective* compression (work in progress).

use crate::error::{Error, Result};
use crate::mask::MaskSet;
use crate::network::Network;
use crate::quota::Quota;

/// How MiCA picks the previous layer's node count inside its feasible range
/// (Algorithm 1; the official code's `rand`/`min`/`max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum MicaChoice {
    Rand,
    Min,
    Max,
}

/// A random-family pruning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Method {
    /// Random pruning with exact per-layer counts.
    Rpi,
    /// Minimum Connection Assurance.
    Mica(MicaChoice),
}

/// What to prune and how far.
#[derive(Clone, Debug)]
pub struct PruneSpec {
    pub method: Method,
    pub quota: Quota,
    /// Target number of kept weights (direct), or of active weights with `effective`.
    pub target_kept: usize,
    pub seed: u64,
    /// Reach the target as an *effective* count (effective pruning).
    pub effective: bool,
}

/// The masks a run produced.
#[derive(Clone, Debug)]
pub struct PruneOutcome {
    /// Masks as placed (`--keep-inactive`).
    pub raw: MaskSet,
    /// Their effective masks.
    pub effective: MaskSet,
    /// Per-layer quota counts the placement used.
    pub counts: Vec<usize>,
}

/// Prune `net` as `spec` says.
pub fn prune(net: &Network, spec: &PruneSpec) -> Result<PruneOutcome> {
    let _ = (net, spec);
    Err(Error::internal("prune: not implemented yet"))
}
