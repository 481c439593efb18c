//! Random-family pruning: RPI and MiCA with any quota, optionally reaching a
//! target *effective* compression.
//!
//! Effective pruning follows Algorithm 1 of the effective-sparsity paper
//! (papers/effective-sparsity-igq.txt, Sec. 5): bisection over the direct
//! kept count `K`, with the quota re-evaluated at each `K`. RPI masks are
//! prefixes of one random permutation per layer ([`crate::methods::random::rpi`]), so with a
//! layerwise-monotone quota (IGQ, ERK, uniform) the masks are nested and the
//! active count is monotone in `K`; MiCA masks are rebuilt at each `K` (they
//! keep nearly every edge active, so the bisection converges the same way).
//!
//! ```
//! use maskforge::{zoo, methods::prune::*, methods::quota::Quota};
//! let net = zoo::build("lenet300", 0).unwrap();
//! let spec = PruneSpec { method: Method::Rpi, quota: Quota::Igq, target_kept: 2662, seed: 0, effective: false };
//! let out = prune(&net, &spec).unwrap();
//! assert_eq!(out.raw.count_ones(), 2662);
//! assert!(out.effective().is_subset_of(&out.raw));
//! ```

use crate::analysis::effective::analyse;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::methods::magnitude::Ranking;
use crate::methods::quota::Quota;
use crate::methods::random::mica::MicaChoice;
use crate::methods::scored::Scorer;
use crate::methods::select::Scope;

/// A random-family pruning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Method {
    /// Random pruning with exact per-layer counts.
    Rpi,
    /// Minimum Connection Assurance.
    Mica(MicaChoice),
    /// A ranking of trained weights (magnitude, LAMP) cut globally or per
    /// layer with the quota's counts.
    Ranked(crate::methods::magnitude::Ranking, Scope),
    /// A gradient or flow score (SNIP, GraSP, SynFlow, SNIP-it).
    Scored(crate::methods::scored::Scorer, Scope),
    /// Node-path balancing: a programme per layer.
    Npb(crate::methods::npb::NpbSettings),
}

impl Method {
    /// Every name [`Method::from_str`](std::str::FromStr) reads.
    pub const NAMES: &'static [&'static str] = &[
        "rpi",
        "mica",
        "mica-min",
        "mica-max",
        "magnitude",
        "lamp",
        "snip",
        "grasp",
        "synflow",
        "snip-it",
        "npb",
        "wanda",
    ];

    /// The method with the given scope where it has one: magnitude, SNIP
    /// and GraSP can cut per layer with a quota's counts; LAMP's scores,
    /// SynFlow and SNIP-it are built for one global cut and stay global.
    pub fn with_scope(self, scope: Scope) -> Self {
        match self {
            Method::Ranked(Ranking::Magnitude, _) => Method::Ranked(Ranking::Magnitude, scope),
            Method::Scored(s @ (Scorer::Snip | Scorer::Grasp), _) => Method::Scored(s, scope),
            m => m,
        }
    }

    /// MiCA with the given choice; other methods unchanged.
    pub fn with_mica_choice(self, choice: MicaChoice) -> Self {
        match self {
            Method::Mica(_) => Method::Mica(choice),
            m => m,
        }
    }

    /// The scope of the final cut (random methods place per layer).
    pub fn scope(self) -> Scope {
        match self {
            Method::Rpi | Method::Mica(_) | Method::Npb(_) => Scope::Layer,
            Method::Ranked(_, s) | Method::Scored(_, s) => s,
        }
    }
}

/// `rpi` (or `random`), `mica` (the random choice, as in the paper),
/// `mica-min`, `mica-max`, `magnitude`, `lamp`, `snip`, `grasp`, `synflow`,
/// `snip-it`; the ranking methods global (see [`Method::with_scope`]).
impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "rpi" | "random" => Method::Rpi,
            "mica" => Method::Mica(MicaChoice::Rand),
            "mica-min" => Method::Mica(MicaChoice::Min),
            "mica-max" => Method::Mica(MicaChoice::Max),
            "magnitude" => Method::Ranked(Ranking::Magnitude, Scope::Global),
            "lamp" => Method::Ranked(Ranking::Lamp, Scope::Global),
            "snip" => Method::Scored(Scorer::Snip, Scope::Global),
            "grasp" => Method::Scored(Scorer::Grasp, Scope::Global),
            "synflow" => Method::Scored(Scorer::Synflow, Scope::Global),
            "snip-it" => Method::Scored(Scorer::SnipIt, Scope::Global),
            "wanda" => Method::Scored(Scorer::Wanda, Scope::Layer),
            "npb" => Method::Npb(crate::methods::npb::NpbSettings::default()),
            other => {
                return Err(Error::UnknownName {
                    what: "method",
                    given: other.to_string(),
                    expected: Method::NAMES,
                })
            }
        })
    }
}

/// The name [`Method::from_str`](std::str::FromStr) reads back (the scope
/// is not part of it).
impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Method::Rpi => "rpi",
            Method::Mica(MicaChoice::Rand) => "mica",
            Method::Mica(MicaChoice::Min) => "mica-min",
            Method::Mica(MicaChoice::Max) => "mica-max",
            Method::Ranked(Ranking::Magnitude, _) => "magnitude",
            Method::Ranked(Ranking::Lamp, _) => "lamp",
            Method::Scored(s, _) => s.name(),
            Method::Npb(_) => "npb",
        };
        f.write_str(name)
    }
}

/// What to prune and how far.
#[derive(Clone, Debug)]
pub struct PruneSpec {
    pub method: Method,
    pub quota: Quota,
    /// Target number of kept weights (direct), or of active weights with
    /// `effective`, in the selected layers (the context's
    /// [`crate::methods::selection::Selection`]: every layer by default);
    /// frozen layers keep all their weights on top of it.
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
    /// The liveness analysis of `raw` (for reports without a second pass).
    pub analysis: crate::analysis::effective::Analysis,
    /// Per-layer quota counts the placement used.
    pub counts: Vec<usize>,
    /// With `effective`: why the target could not be met exactly, if so.
    pub note: Option<String>,
    /// Iterative methods: the density after each round.
    pub history: Vec<f64>,
    /// MiCA: the layers keeping inactive weights and why (empty when every
    /// kept weight is functional); `None` for every other method.
    pub mica_unguaranteed: Option<Vec<crate::methods::random::mica::Unguaranteed>>,
}

impl PruneOutcome {
    /// The outcome of masks placed by other means (neuron methods, a mask
    /// file): each layer's quota is what it keeps.
    pub fn of(net: &Network, raw: MaskSet) -> Self {
        let counts = raw.layers.iter().map(|b| b.count_ones()).collect();
        outcome(net, raw, counts, Vec::new())
    }

    /// The effective masks of `raw` (its active weights).
    pub fn effective(&self) -> &MaskSet {
        &self.analysis.active
    }
}

/// Place masks with exactly `counts[l]` weights per layer.
pub fn place(net: &Network, method: Method, counts: &[usize], seed: u64) -> Result<MaskSet> {
    match method {
        Method::Rpi => Ok(crate::methods::random::rpi::rpi(net, counts, seed)),
        Method::Mica(choice) => crate::methods::random::mica::mica(net, counts, choice, seed),
        Method::Npb(settings) => crate::methods::npb::npb(net, counts, &settings, seed),
        Method::Ranked(r, _) => {
            let s = crate::methods::magnitude::scores(net, r, None)?;
            Ok(MaskSet {
                layers: crate::methods::select::keep_top_per_layer(&s, counts),
            })
        }
        Method::Scored(scorer, _) => {
            let total = counts.iter().sum();
            // Given counts place in every layer, frozen ones included.
            let ctx = crate::methods::scored::Context {
                selection: Some(crate::methods::selection::Selection::everything(net)),
                ..Default::default()
            };
            let (m, _) = crate::methods::scored::prune_scored(
                net,
                scorer,
                Scope::Layer,
                Some(counts),
                total,
                crate::methods::scored::Cut::Direct,
                &ctx,
                &mut |_, _| {},
            )?;
            Ok(m)
        }
    }
}

fn outcome(net: &Network, raw: MaskSet, counts: Vec<usize>, history: Vec<f64>) -> PruneOutcome {
    let analysis = analyse(net, &raw);
    PruneOutcome {
        counts,
        analysis,
        raw,
        note: None,
        history,
        mica_unguaranteed: None,
    }
}

fn run_at(
    net: &Network,
    spec: &PruneSpec,
    kept: usize,
    ctx: &crate::methods::scored::Context,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PruneOutcome> {
    use crate::methods::magnitude::scores;
    use crate::methods::select::keep_top;
    let sel = ctx.selection_of(net);
    if let Method::Ranked(r, Scope::Global) = spec.method {
        let layers = match r {
            crate::methods::magnitude::Ranking::Magnitude => {
                crate::methods::magnitude::magnitude_global_streaming_selected(
                    net,
                    kept,
                    sel.flags(),
                )?
            }
            _ => {
                let mut s = scores(net, r, None)?;
                sel.freeze_scores(&mut s);
                keep_top(&s, kept + sel.frozen_weights(net))
            }
        };
        let raw = MaskSet { layers };
        let counts = raw.layers.iter().map(|b| b.count_ones()).collect();
        return Ok(outcome(net, raw, counts, vec![]));
    }
    if let Method::Scored(scorer, scope) = spec.method {
        let counts = match scope {
            Scope::Layer => Some(sel.kept_counts(net, &spec.quota, kept)?),
            Scope::Global => None,
        };
        let (raw, history) = crate::methods::scored::prune_scored(
            net,
            scorer,
            scope,
            counts.as_deref(),
            kept,
            if spec.effective && scorer.iterative() {
                crate::methods::scored::Cut::Effective
            } else {
                crate::methods::scored::Cut::Direct
            },
            ctx,
            progress,
        )?;
        let counts = raw.layers.iter().map(|b| b.count_ones()).collect();
        return Ok(outcome(net, raw, counts, history));
    }
    let counts = sel.kept_counts(net, &spec.quota, kept)?;
    let (raw, analysis, mica_unguaranteed) = match spec.method {
        Method::Mica(choice) => {
            let r = crate::methods::random::mica::mica_run(net, &counts, choice, spec.seed)?;
            (r.masks, r.analysis, Some(r.unguaranteed))
        }
        m => {
            let raw = place(net, m, &counts, spec.seed)?;
            let a = analyse(net, &raw);
            (raw, a, None)
        }
    };
    Ok(PruneOutcome {
        raw,
        analysis,
        counts,
        note: None,
        history: vec![],
        mica_unguaranteed,
    })
}

/// Prune `net` as `spec` says (methods that need no calibration data).
pub fn prune(net: &Network, spec: &PruneSpec) -> Result<PruneOutcome> {
    prune_with(
        net,
        spec,
        &crate::methods::scored::Context::default(),
        &mut |_, _| {},
    )
}

/// Prune with calibration data and a progress callback for the score-based
/// methods. One-shot scores are computed once, also under `effective`.
pub fn prune_with(
    net: &Network,
    spec: &PruneSpec,
    ctx: &crate::methods::scored::Context,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PruneOutcome> {
    let sel = ctx.selection_of(net);
    if sel.flags().len() != net.layers.len() {
        return Err(Error::internal(format!(
            "a selection of {} layers for a network of {}",
            sel.flags().len(),
            net.layers.len()
        )));
    }
    let total = sel.selected_weights(net);
    if spec.target_kept == 0 || spec.target_kept > total {
        let over = if sel.is_all() { "" } else { " selected" };
        return Err(Error::input(format!(
            "target of {} kept weights is outside 1..={total} (the{over} prunable weights)",
            spec.target_kept
        )));
    }
    let loss_based = matches!(
        spec.method,
        Method::Scored(Scorer::Snip | Scorer::Grasp | Scorer::SnipIt, _)
    ) || matches!(
        spec.quota,
        Quota::Scored(Scorer::Snip | Scorer::Grasp | Scorer::SnipIt)
    );
    let resolved;
    let spec = match spec.quota {
        Quota::Scored(_) => {
            resolved = PruneSpec {
                quota: resolve_quota(net, &spec.quota, spec.target_kept, ctx)?,
                ..spec.clone()
            };
            &resolved
        }
        _ => spec,
    };
    let iterative = matches!(spec.method, Method::Scored(s, _) if s.iterative());
    let mut out = prune_at_target(net, spec, ctx, progress, iterative)?;
    if loss_based && out.note.is_none() {
        out.note = crate::methods::scored::snip::Objective::of(net).note(net);
    }
    Ok(out)
}

fn prune_at_target(
    net: &Network,
    spec: &PruneSpec,
    ctx: &crate::methods::scored::Context,
    progress: &mut dyn FnMut(usize, usize),
    iterative: bool,
) -> Result<PruneOutcome> {
    let sel = ctx.selection_of(net);
    let total = sel.selected_weights(net);
    // Active weights count in the selected layers only.
    let active = |out: &PruneOutcome| sel.count_selected(out.effective());
    if !spec.effective {
        return run_at(net, spec, one_shot_kept(net, spec, ctx), ctx, progress);
    }
    let target = spec.target_kept;
    if iterative {
        // The last round already cut for the effective target.
        let mut out = run_at(net, spec, target, ctx, progress)?;
        out.note = unreachable(target, active(&out));
        return Ok(out);
    }
    let first = run_at(net, spec, target, ctx, progress)?;
    if active(&first) >= target {
        return Ok(first);
    }
    // Smallest K whose active count reaches the target; a K the quota cannot
    // serve (too dense for it) sends the search lower.
    let (mut lo, mut hi) = (target + 1, total);
    let mut best = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let reached = match run_at(net, spec, mid, ctx, &mut |_, _| {}) {
            Ok(out) => {
                let r = active(&out) >= target;
                if r {
                    best = Some(out);
                }
                r
            }
            Err(e) if matches!(e.root(), Error::Infeasible { .. }) => true,
            Err(e) => return Err(e),
        };
        if reached {
            hi = mid - 1;
        } else {
            lo = mid + 1;
        }
    }
    match best {
        Some(out) => Ok(out),
        None => {
            let mut out = first;
            out.note = unreachable(target, active(&out));
            Ok(out)
        }
    }
}

/// The count a one-shot global cut keeps: the reference code's
/// `N - int((1 - d) N)` ([`crate::methods::select::reference_kept`]) for
/// the density `d` asked for (`ctx.density`) when that is within one weight
/// of the target; the target otherwise and for every other method.
fn one_shot_kept(net: &Network, spec: &PruneSpec, ctx: &crate::methods::scored::Context) -> usize {
    let one_shot_global = match spec.method {
        Method::Ranked(_, scope) => scope == Scope::Global,
        Method::Scored(s, scope) => scope == Scope::Global && !s.iterative(),
        _ => false,
    };
    let total = ctx.selection_of(net).selected_weights(net);
    match ctx.density {
        Some(d) if one_shot_global && (d * total as f64 - spec.target_kept as f64).abs() <= 1.0 => {
            crate::methods::select::reference_kept(total, d).max(1)
        }
        _ => spec.target_kept,
    }
}

/// `quota` ready for [`crate::methods::quota::kept_counts`]: the quota of a
/// ranking method becomes the per-layer counts that method keeps at
/// `target` with one global cut (computed once: an effective target's
/// bisection rescales them like any other [`Quota::Counts`]); every other
/// quota is returned as it is.
pub fn resolve_quota(
    net: &Network,
    quota: &Quota,
    target: usize,
    ctx: &crate::methods::scored::Context,
) -> Result<Quota> {
    let Quota::Scored(scorer) = *quota else {
        return Ok(quota.clone());
    };
    let (m, _) = crate::methods::scored::prune_scored(
        net,
        scorer,
        Scope::Global,
        None,
        target,
        crate::methods::scored::Cut::Direct,
        ctx,
        &mut |_, _| {},
    )?;
    Ok(Quota::Counts(
        m.layers.iter().map(|b| b.count_ones()).collect(),
    ))
}

/// The note of an effective target a run with `active` active (selected)
/// weights falls short of, if it does.
fn unreachable(target: usize, active: usize) -> Option<String> {
    (active < target).then(|| {
        format!(
            "an effective count of {target} cannot be reached with this method and quota; closest achievable: {active} active"
        )
    })
}

/// Prune to the N:M `pattern` ([`crate::methods::nm`]): the method's
/// scores choose inside each group (RPI: `N` of each `M` drawn uniformly
/// from the stream `(seed, "nm-random", layer)`; magnitude and LAMP: the
/// largest `|w|`, LAMP's order inside a layer being magnitude's; SNIP,
/// GraSP: their one-shot scores; SynFlow: its rounds, each keeping a
/// shrinking share of every group,
/// [`crate::methods::scored::rounds::iterate_groups`]). RPI, magnitude and
/// LAMP work one layer at a time, reading (and releasing) one layer's
/// weights: a checkpoint larger than memory streams through. Returns the
/// placement and, for SynFlow, the density after each round.
pub fn prune_pattern(
    net: &Network,
    method: Method,
    pattern: crate::methods::nm::Pattern,
    seed: u64,
    ctx: &crate::methods::scored::Context,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(crate::methods::nm::Placed, Vec<f64>)> {
    use crate::methods::nm::{keep_in_layer, keep_top_in_groups, place, random_in_layer};
    let (n, m) = (pattern.n, pattern.m);
    let layers = net.layers.len();
    // Frozen layers stay dense (and are not read).
    let sel = ctx.selection_of(net);
    let mut placed = match method {
        Method::Rpi => place(net, m, |li, l| {
            progress(li + 1, layers);
            if !sel.is_selected(li) {
                return Ok(crate::bitset::BitSet::full(l.numel()));
            }
            let key = crate::rng::stream_key(seed, "nm-random", &l.name);
            Ok(random_in_layer(l, n, m, key))
        })?,
        Method::Ranked(..) => place(net, m, |li, l| {
            progress(li + 1, layers);
            if !sel.is_selected(li) {
                return Ok(crate::bitset::BitSet::full(l.numel()));
            }
            let keys = net.magnitude_keys(li)?;
            let bits = keep_in_layer(l, n, m, |range, out| keys.fill(range, out))?;
            if let Some(t) = net.params.get(&l.name) {
                t.release();
            }
            Ok(bits)
        })?,
        Method::Scored(s @ (Scorer::Snip | Scorer::Grasp | Scorer::Wanda), _) => {
            let scores = crate::methods::scored::one_shot_scores(net, s, ctx, progress)?;
            keep_top_in_groups(net, &scores, pattern)
        }
        Method::Scored(Scorer::Synflow, _) => {
            let rounds = if ctx.rounds == 0 { 100 } else { ctx.rounds };
            let flow = crate::methods::scored::synflow::Flow::new(net, ctx.synflow.precision)?;
            return crate::methods::scored::rounds::iterate_groups(
                net,
                pattern,
                rounds,
                &sel,
                &mut |mk| flow.scores(mk),
                progress,
            );
        }
        other => {
            return Err(Error::input(format!(
                "an N:M pattern with {other}: it applies to rpi, magnitude, lamp, snip, grasp, wanda and synflow"
            )))
        }
    };
    sel.fill_frozen(&mut placed.masks);
    Ok((placed, Vec::new()))
}
