//! Pruning by data-driven and flow scores: SNIP, GraSP (one shot, global or
//! per layer), SynFlow and iterative SNIP (rounds with the exponential
//! schedule `density_k = density^(k / rounds)`).
//!
//! ```no_run
//! use maskforge::methods::scored::{Cut, Scorer, Context, prune_scored};
//! let net = maskforge::zoo::build("vgg16", 0).unwrap();
//! let ctx = Context { rounds: 100, ..Context::default() };
//! let (masks, densities) = prune_scored(&net, Scorer::Synflow, maskforge::methods::magnitude::Scope::Global, None, 14_716, Cut::Direct, &ctx, &mut |_, _| {}).unwrap();
//! ```

pub mod grasp;
pub mod snip;
pub mod synflow;

use std::sync::Arc;

use candle_core::{DType, Device};

use crate::autodiff::calibration::Calibration;
use crate::autodiff::executor::Executor;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::methods::magnitude::{keep_top, keep_top_per_layer, keep_top_signed, Scope};

/// A score-based method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Scorer {
    Snip,
    Grasp,
    Synflow,
    SnipIt,
}

impl Scorer {
    pub fn name(self) -> &'static str {
        match self {
            Scorer::Snip => "snip",
            Scorer::Grasp => "grasp",
            Scorer::Synflow => "synflow",
            Scorer::SnipIt => "snip-it",
        }
    }

    pub fn needs_data(self) -> bool {
        !matches!(self, Scorer::Synflow)
    }

    pub fn iterative(self) -> bool {
        matches!(self, Scorer::Synflow | Scorer::SnipIt)
    }
}

/// Scores already computed, by scorer.
pub type ScoreCache = Arc<std::sync::Mutex<Vec<(Scorer, Arc<Vec<Vec<f64>>>)>>>;

/// What score-based pruning needs beyond the network.
#[derive(Clone)]
pub struct Context {
    pub calibration: Option<Arc<Calibration>>,
    pub device: Device,
    /// Rounds of the iterative methods (SynFlow: 100, SNIP-it: 5 by default).
    pub rounds: usize,
    /// One-shot scores, computed once per run and scorer (effective pruning
    /// asks for masks at many targets).
    pub cache: ScoreCache,
}

impl Default for Context {
    fn default() -> Self {
        Self {
            calibration: None,
            device: Device::Cpu,
            rounds: 0,
            cache: Arc::default(),
        }
    }
}

fn calibration(ctx: &Context, s: Scorer) -> Result<&Calibration> {
    ctx.calibration
        .as_deref()
        .ok_or_else(|| missing_data(s.name()))
}

/// The error of a data-driven `method` run without `--data`.
pub fn missing_data(method: &str) -> Error {
    Error::input(format!(
        "{method} needs calibration data: safetensors x/y, IDX or CSV samples, or synthetic:N"
    ))
}

/// Keep `target` weights by `scores`, globally or with per-layer `counts`.
fn select(
    scores: &[Vec<f64>],
    signed: bool,
    target: usize,
    counts: Option<&[usize]>,
) -> Vec<crate::bitset::BitSet> {
    match (counts, signed) {
        (None, false) => keep_top(scores, target),
        (None, true) => keep_top_signed(scores, target),
        (Some(c), false) => keep_top_per_layer(scores, c),
        (Some(c), true) => scores
            .iter()
            .zip(c)
            .map(|(s, &k)| keep_top_signed(std::slice::from_ref(s), k).remove(0))
            .collect(),
    }
}

/// How the last round of an iterative method cuts its ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Keep the target number of weights.
    Direct,
    /// Keep the fewest top-ranked weights of which the target number are
    /// active (effective pruning, Sec. 5 of the effective-sparsity paper):
    /// [`crate::methods::prune::effective_top`].
    Effective,
}

/// Prune to `target` kept weights; `counts` (per-layer quota) applies to
/// the one-shot methods with `Scope::Layer`; `cut` to the last round of the
/// iterative ones (one-shot methods reach effective targets by bisection
/// over whole runs, [`crate::methods::prune::prune_with`]). Returns the masks and,
/// for the iterative methods, the density after each round.
#[allow(clippy::too_many_arguments)]
pub fn prune_scored(
    net: &Network,
    scorer: Scorer,
    scope: Scope,
    counts: Option<&[usize]>,
    target: usize,
    cut: Cut,
    ctx: &Context,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(MaskSet, Vec<f64>)> {
    let mut last = |s: &[Vec<f64>]| -> Result<MaskSet> {
        Ok(match cut {
            Cut::Direct => MaskSet {
                layers: keep_top(s, target),
            },
            Cut::Effective => crate::methods::prune::effective_top(net, s, target),
        })
    };
    let counts = if scope == Scope::Layer { counts } else { None };
    match scorer {
        Scorer::Snip | Scorer::Grasp => {
            let cached = ctx
                .cache
                .lock()
                .ok()
                .and_then(|c| c.iter().find(|(k, _)| *k == scorer).map(|(_, s)| s.clone()));
            let s = match cached {
                Some(s) => s,
                None => {
                    let cal = calibration(ctx, scorer)?;
                    let ex = Executor::new(net, &ctx.device, DType::F32)?;
                    let dense = MaskSet::dense(net);
                    let s = Arc::new(if scorer == Scorer::Snip {
                        crate::methods::scored::snip::scores(&ex, &dense, cal)?
                    } else {
                        crate::methods::scored::grasp::scores(&ex, &dense, cal)?
                    });
                    progress(1, 1);
                    if let Ok(mut c) = ctx.cache.lock() {
                        c.push((scorer, s.clone()));
                    }
                    s
                }
            };
            let m = MaskSet {
                layers: select(&s, scorer == Scorer::Grasp, target, counts),
            };
            Ok((m, vec![]))
        }
        Scorer::Synflow => {
            let rounds = if ctx.rounds == 0 { 100 } else { ctx.rounds };
            let flow = crate::methods::scored::synflow::Flow::new(net)?;
            iterate(
                net,
                target,
                rounds,
                &mut |m| flow.scores(m),
                &mut last,
                progress,
            )
        }
        Scorer::SnipIt => {
            let cal = calibration(ctx, scorer)?;
            let rounds = if ctx.rounds == 0 { 5 } else { ctx.rounds };
            let ex = Executor::new(net, &ctx.device, DType::F32)?;
            iterate(
                net,
                target,
                rounds,
                &mut |m| crate::methods::scored::snip::scores(&ex, m, cal),
                &mut last,
                progress,
            )
        }
    }
}

/// The rounds of the iterative methods (SynFlow, SNIP-it): round `k` of
/// `rounds` re-scores the current masks with `score` and keeps the top
/// `total * density^(k / rounds)` (the exponential schedule); the last
/// round's scores go to `cut`. Returns the masks and the density after
/// each round; `progress(round, rounds)` after each.
pub fn iterate(
    net: &Network,
    target: usize,
    rounds: usize,
    score: &mut dyn FnMut(&MaskSet) -> Result<Vec<Vec<f64>>>,
    cut: &mut dyn FnMut(&[Vec<f64>]) -> Result<MaskSet>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(MaskSet, Vec<f64>)> {
    let rounds = rounds.max(1);
    let total = net.prunable_count() as f64;
    let density = target as f64 / total;
    let mut masks = MaskSet::dense(net);
    let mut history = Vec::with_capacity(rounds);
    for k in 1..=rounds {
        let s = score(&masks)?;
        masks = if k == rounds {
            cut(&s)?
        } else {
            let keep = (total * density.powf(k as f64 / rounds as f64)).round() as usize;
            MaskSet {
                layers: keep_top(&s, keep),
            }
        };
        history.push(masks.count_ones() as f64 / total);
        progress(k, rounds);
    }
    Ok((masks, history))
}
