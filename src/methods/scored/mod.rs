//! Pruning by data-driven and flow scores: SNIP, GraSP (one shot, global or
//! per layer), SynFlow and iterative SNIP (rounds with the exponential
//! schedule `density_k = density^(k / rounds)`).
//!
//! ```no_run
//! use maskforge::methods::scored::{Cut, Scorer, Context, prune_scored};
//! let net = maskforge::zoo::build("vgg16", 0).unwrap();
//! let ctx = Context { rounds: 100, ..Context::default() };
//! let (masks, densities) = prune_scored(&net, Scorer::Synflow, maskforge::methods::select::Scope::Global, None, 14_716, Cut::Direct, &ctx, &mut |_, _| {}).unwrap();
//! ```

pub mod grasp;
pub mod kept;
pub mod rounds;
pub mod snip;
pub mod synflow;
pub mod wanda;

use std::sync::Arc;

use candle_core::{DType, Device};

use crate::autodiff::calibration::Calibration;
use crate::autodiff::executor::Executor;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::methods::select::Scope;
use crate::methods::select::{keep_top, keep_top_per_layer, keep_top_signed};
use crate::methods::selection::Selection;
pub use rounds::{iterate, iterate_frozen, Counts, LastCut, RoundScores, Schedule};

/// A score-based method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Scorer {
    Snip,
    Grasp,
    Synflow,
    SnipIt,
    /// |W| x input feature norm, per output row (LLM pruning).
    Wanda,
}

impl Scorer {
    pub fn name(self) -> &'static str {
        match self {
            Scorer::Snip => "snip",
            Scorer::Grasp => "grasp",
            Scorer::Synflow => "synflow",
            Scorer::SnipIt => "snip-it",
            Scorer::Wanda => "wanda",
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
    /// The density the target stands for, as the user gave it (`1 /
    /// compression`; `10^-c` for a compression written `10^c`, as the
    /// reference code forms it): SynFlow's schedule density with
    /// [`Counts::Reference`]. Used only when it is within one weight of
    /// `target / N`; otherwise (and when `None`, and with
    /// [`Counts::Nearest`]) the schedule takes `target / N`.
    pub density: Option<f64>,
    /// SynFlow's precision and per-round counts.
    pub synflow: synflow::Options,
    /// The layers pruned ([`Selection`]); `None`: the network's defaults
    /// ([`Selection::defaults`]). Targets count the selected weights only;
    /// frozen layers score `+inf` in every ranking and round (always kept).
    pub selection: Option<Selection>,
}

impl Context {
    /// The selection in force on `net`.
    pub fn selection_of(&self, net: &Network) -> Selection {
        match &self.selection {
            Some(s) => s.clone(),
            None => Selection::defaults(net),
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Self {
            calibration: None,
            device: Device::Cpu,
            rounds: 0,
            cache: Arc::default(),
            density: None,
            synflow: synflow::Options::default(),
            selection: None,
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

/// SNIP's or GraSP's scores of the dense network (higher kept; GraSP's
/// signed), computed once per context and scorer.
pub fn one_shot_scores(
    net: &Network,
    scorer: Scorer,
    ctx: &Context,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Arc<Vec<Vec<f64>>>> {
    let cached = ctx
        .cache
        .lock()
        .ok()
        .and_then(|c| c.iter().find(|(k, _)| *k == scorer).map(|(_, s)| s.clone()));
    if let Some(s) = cached {
        return Ok(s);
    }
    let cal = calibration(ctx, scorer)?;
    // GraSP picks its precision by how it computes H g (grasp.rs).
    let ex = if scorer == Scorer::Grasp {
        crate::methods::scored::grasp::executor(net, &ctx.device, cal)?
    } else {
        Executor::new(net, &ctx.device, DType::F32)?
    };
    let dense = MaskSet::dense(net);
    let s = Arc::new(match scorer {
        Scorer::Snip => crate::methods::scored::snip::scores(&ex, &dense, cal)?,
        Scorer::Grasp => crate::methods::scored::grasp::scores(&ex, &dense, cal)?,
        Scorer::Wanda => wanda::scores(&ex, cal, ctx.selection_of(net).flags())?,
        _ => {
            return Err(Error::internal(format!(
                "{} is not one-shot",
                scorer.name()
            )))
        }
    });
    progress(1, 1);
    if let Ok(mut c) = ctx.cache.lock() {
        c.push((scorer, s.clone()));
    }
    Ok(s)
}

/// How the last round of an iterative method cuts its ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Keep the target number of weights.
    Direct,
    /// Keep the fewest top-ranked weights of which the target number are
    /// active (effective pruning, Sec. 5 of the effective-sparsity paper):
    /// [`crate::methods::select::effective_top`].
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
    // Targets count the selected weights; frozen layers rank above all.
    let sel = ctx.selection_of(net);
    let frozen = sel.frozen_weights(net);
    let freeze = |mut s: Vec<Vec<f64>>| {
        sel.freeze_scores(&mut s);
        s
    };
    // The last round of the iterative methods: the schedule's own cut, or
    // the effective one (active weights counted in the selected layers).
    let mut effective = |s: &[Vec<f64>]| -> Result<MaskSet> {
        Ok(crate::methods::select::effective_top_by(
            net,
            s,
            target,
            |active| sel.count_selected(active),
        ))
    };
    let mut last: Option<&mut LastCut> = match cut {
        Cut::Direct => None,
        Cut::Effective => Some(&mut effective),
    };
    let total = sel.selected_weights(net) as f64;
    let counts = if scope == Scope::Layer { counts } else { None };
    match scorer {
        Scorer::Snip | Scorer::Grasp => {
            let s = one_shot_scores(net, scorer, ctx, progress)?;
            let layers = if sel.is_all() {
                select(&s, scorer == Scorer::Grasp, target, counts)
            } else {
                let s = freeze(s.to_vec());
                select(&s, scorer == Scorer::Grasp, target + frozen, counts)
            };
            let m = MaskSet { layers };
            Ok((m, vec![]))
        }
        Scorer::Wanda => {
            let counts = counts.ok_or_else(|| Error::internal("wanda needs per-layer counts"))?;
            let s = one_shot_scores(net, scorer, ctx, progress)?;
            let rows: Vec<usize> = net.layers.iter().map(|l| l.shape[0]).collect();
            let layers = wanda::keep_per_row(&rows, &s, counts)?;
            Ok((MaskSet { layers }, vec![]))
        }
        Scorer::Synflow => {
            let rounds = if ctx.rounds == 0 { 100 } else { ctx.rounds };
            let flow = synflow::Flow::new(net, ctx.synflow.precision)?;
            // Nearest counts are maskforge's earlier rule: d = target / N.
            let asked = ctx.density.filter(|d| {
                ctx.synflow.counts == Counts::Reference && (d * total - target as f64).abs() <= 1.0
            });
            let schedule = Schedule {
                rounds,
                density: asked.unwrap_or(target as f64 / total),
                counts: ctx.synflow.counts,
            };
            iterate_frozen(
                net,
                frozen,
                target,
                schedule,
                &mut |m| {
                    let mut kept = flow.kept_scores(m)?;
                    sel.freeze_scores(&mut kept.layers);
                    Ok(kept)
                },
                last.take(),
                progress,
            )
        }
        Scorer::SnipIt => {
            let cal = calibration(ctx, scorer)?;
            let rounds = if ctx.rounds == 0 { 5 } else { ctx.rounds };
            let ex = Executor::new(net, &ctx.device, DType::F32)?;
            let schedule = Schedule {
                rounds,
                density: target as f64 / total,
                counts: Counts::Nearest,
            };
            iterate_frozen(
                net,
                frozen,
                target,
                schedule,
                &mut |m| Ok(freeze(crate::methods::scored::snip::scores(&ex, m, cal)?)),
                last.take(),
                progress,
            )
        }
    }
}
