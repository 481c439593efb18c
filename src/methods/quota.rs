//! Layerwise sparsity quotas (LSQ): how many weights each prunable layer keeps.
//!
//! [`kept_counts`] turns a [`Quota`] and a network-wide number of kept weights
//! into one integer count per prunable layer, aligned with
//! [`Network::layers`](crate::graph::Network) and summing *exactly* to the
//! target. Placement of the kept weights inside a layer (random, MiCA, ...) is
//! someone else's job; this module only decides the per-layer budgets.
//!
//! The quotas (REFERENCE.md, "Layerwise sparsity quotas"); `n_l` is the number
//! of weights of layer `l`, `T` the target kept count:
//!
//! - **Uniform**: density `T / total` in every layer.
//! - **Uniform+** (Gale, Elsen & Hooker 2019, "The state of sparsity in deep
//!   neural networks"; named Uniform+ by Lee et al. 2021): the first
//!   convolution stays dense, the last layer keeps at least 20 % of its weights
//!   (sparsity capped at 80 %), and the remaining budget is spread with one
//!   density over the other layers (the last layer included when that density
//!   is above 20 %). Conv nets only.
//! - **ERK** (Erdős–Rényi-Kernel, Evci et al. 2020 "Rigging the lottery",
//!   google-research/rigl `sparse_utils.py`): density `eps * raw_l` with
//!   `raw_l = sum(shape) / prod(shape)` over the canonical shape
//!   (`(out + in + kh + kw) / (out * in * kh * kw)`, dense `(out + in) / (out * in)`);
//!   layers whose density would exceed 1 are made dense, removed from the
//!   budget, and `eps` is solved again (RigL's rule, not the effective-sparsity
//!   repository's push-to-previous-layer variant).
//! - **IGQ** (Ideal Gas Quotas, Vysogorets & Kempe, "Connectivity matters",
//!   papers/effective-sparsity-igq.txt Sec. 4): density
//!   `1 / (F * n_l + 1)` with the force `F >= 0` found by bisection.
//! - **SmartRatios** (Su et al. 2020, "Sanity-checking pruning methods: random
//!   tickets can win the jackpot", JingtongSu/sanity-checking-pruning
//!   `pruner/SmartRatio.py`): conv densities proportional to
//!   `(L-l+1)^2 + (L-l+1)` (divided by `l^2` without residual connections),
//!   dense layers at 30 %; see [`Quota::Smart`] for where the reference code
//!   is followed rather than the paper.
//! - **Counts**: given per-layer counts (e.g. the effective counts of a mask
//!   file, MiCA paper Sec. 4.7), rescaled when they do not sum to the target.
//!
//! **Rounding.** Every quota first produces real-valued counts summing to `T`;
//! they become integers by largest-remainder rounding (floor everything, then
//! hand the missing units to the largest fractional parts, ties to the earlier
//! layer), never above a layer's size nor below 0 (nor below a quota's own
//! floor, such as Uniform+'s dense first layer). Then every layer the quota
//! gives a positive density but that rounded to 0 receives one weight, taken
//! from the layer with the most weights above its floor; this is skipped when
//! no layer can spare one, i.e. when the target is smaller than the number of
//! such layers. Layers the quota gives density 0 (only possible with
//! [`Quota::Counts`]) stay empty.
//!
//! **Errors.** A target of 0 or above the total, or a quota that cannot reach
//! the target, is an [`Error::Input`] naming the layer(s) at fault and the
//! feasible range of compression; a quota is never silently violated.
//!
//! ```
//! use maskforge::methods::quota::{self, Quota};
//! let net = maskforge::zoo::build("vgg16", 0).unwrap();
//! let c = quota::parse_ratio("10^2").unwrap();
//! let target = quota::target_from_compression(net.prunable_count(), c).unwrap();
//! let k = quota::kept_counts(&net, &"igq".parse::<Quota>().unwrap(), target).unwrap();
//! assert_eq!(k.iter().sum::<usize>(), target);
//! ```

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::graph::{LayerKind, Network};
use crate::methods::scored::Scorer;

/// A layerwise sparsity quota.
#[derive(Clone, Debug, PartialEq)]
pub enum Quota {
    /// The same density in every layer.
    Uniform,
    /// Gale et al. 2019: first convolution dense, last layer at least 20 %
    /// dense (sparsity <= 80 %), one density for the rest. Conv nets only
    /// (the first prunable layer must be a convolution). The target must
    /// leave, beyond the dense first layer and the last layer's 20 %
    /// (rounded up to whole weights), at least one weight for each layer in
    /// between (a middle layer with no weight disconnects the network);
    /// otherwise an input error names both layers and the feasible range.
    UniformPlus,
    /// Erdős–Rényi-Kernel as in RigL (google-research/rigl `sparse_utils.py`):
    /// density proportional to `sum(shape) / prod(shape)` of the canonical
    /// shape (groups included in `in`), saturated layers made dense and
    /// removed from the budget until no density exceeds 1. RigL makes only
    /// the layers at the maximum dense per round; making every layer above 1
    /// dense at once reaches the same fixed point, since each round only
    /// raises `eps`. With that loop ERK is feasible for every target.
    Erk,
    /// Ideal Gas Quotas (Vysogorets & Kempe): density `1 / (F n_l + 1)`, the
    /// force `F >= 0` found by bisection in `f64` so that
    /// `sum n_l / (F n_l + 1)` equals the target to far below one weight.
    /// Feasible for every target; no layer loses all its weights unless the
    /// target is below the number of layers.
    Igq,
    /// SmartRatios (Su et al. 2020; JingtongSu/sanity-checking-pruning,
    /// `pruner/SmartRatio.py`). With `L` prunable layers numbered `l = 1..=L`
    /// in network order, a convolution's raw keep ratio is
    /// `(L-l+1)^2 + (L-l+1)`, divided by `l^2` when the network has no
    /// residual `Add` (VGG-like); dense layers keep 30 %; the conv ratios are
    /// scaled so that the total is the target; a conv density `>= 1` is
    /// clipped to 1 and its excess weights are pushed onward, filling the
    /// following conv layers in order.
    ///
    /// Where this follows the reference code rather than the paper:
    /// - the clip-and-carry rule (excess goes to the *next* conv layers in
    ///   order, each filled up to density 1 before the following one; dense
    ///   layers never absorb it) is the code's, which the paper does not
    ///   spell out; we carry exact real counts where the code truncates to
    ///   integers at each step, and the conv ratios are scaled exactly (the
    ///   code sums truncated per-layer products);
    /// - the 30 % of dense layers is the code's `linear_keep_ratio` default;
    /// - `l` counts every prunable layer, dense ones included, as the code's
    ///   layer index does;
    /// - "ResNet" is detected by the presence of an `Add` node, where the code
    ///   looks at the architecture's name.
    ///
    /// Infeasible (input error naming the dense layers and the feasible
    /// range) when the target is below 30 % of the dense layers plus one
    /// weight per conv layer, or above 30 % of the dense layers plus every
    /// conv weight; networks without a convolution are rejected.
    Smart,
    /// given per-layer kept counts (e.g. effective counts of a mask file)
    ///
    /// One entry per layer, each at most the layer's size. When they sum to
    /// the target they are returned unchanged; otherwise they are rescaled
    /// proportionally (the layers' densities keep their ratios; layers that
    /// would exceed density 1 become dense and the rest are rescaled again,
    /// as for ERK) and rounded. Layers with a count of 0 stay empty, so a
    /// target above the size of the layers with a positive count is an input
    /// error.
    Counts(Vec<usize>),
    /// The per-layer counts a ranking method keeps at the target (RPI-SNIP,
    /// RPI-GraSP, RPI-SynFlow in the MiCA paper). It needs the method's
    /// scores, so [`crate::methods::prune`] turns it into [`Quota::Counts`]
    /// before any placement; [`kept_counts`] alone cannot serve it.
    Scored(Scorer),
}

impl Quota {
    /// Every name [`Quota::from_str`](FromStr) reads; a mask file's counts
    /// come through [`Quota::from_effective`].
    pub const NAMES: &'static [&'static str] = &[
        "uniform", "uniform+", "erk", "igq", "smart", "snip", "grasp", "synflow",
    ];

    /// The quota of an existing mask (the MiCA paper's "corrected
    /// distribution", Sec. 4.7): the *effective* per-layer counts of `masks`.
    pub fn from_effective(net: &Network, masks: &crate::mask::MaskSet) -> Quota {
        let eff = crate::analysis::effective::effective_masks(net, masks);
        Quota::Counts(eff.layers.iter().map(|b| b.count_ones()).collect())
    }
}

impl FromStr for Quota {
    type Err = Error;

    /// `uniform`, `uniform+`, `erk`, `igq`, `smart` and the quotas of the
    /// ranking methods `snip`, `grasp`, `synflow` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uniform" => Ok(Quota::Uniform),
            "uniform+" => Ok(Quota::UniformPlus),
            "erk" => Ok(Quota::Erk),
            "igq" => Ok(Quota::Igq),
            "smart" => Ok(Quota::Smart),
            "snip" => Ok(Quota::Scored(Scorer::Snip)),
            "grasp" => Ok(Quota::Scored(Scorer::Grasp)),
            "synflow" => Ok(Quota::Scored(Scorer::Synflow)),
            _ => Err(Error::UnknownName {
                what: "quota",
                given: s.to_string(),
                expected: Quota::NAMES,
            }),
        }
    }
}

impl Quota {
    /// The name as written on the command line and in mask metadata
    /// (`"counts"` for [`Quota::Counts`]).
    pub fn name(&self) -> String {
        match self {
            Quota::Uniform => "uniform",
            Quota::UniformPlus => "uniform+",
            Quota::Erk => "erk",
            Quota::Igq => "igq",
            Quota::Smart => "smart",
            Quota::Counts(_) => "counts",
            Quota::Scored(s) => s.name(),
        }
        .to_string()
    }
}

/// Per-layer kept counts (aligned with `net.layers`) summing EXACTLY to
/// `target_kept`.
///
/// The real-valued quota is rounded as the module documentation describes
/// (largest remainder, within `[floor, size]` per layer, then at least one
/// weight for every layer of positive density where the budget allows).
/// Errors ([`Error::Input`]): a network without prunable weights, a target of
/// 0 or above the total, a quota that does not apply to the network or cannot
/// reach the target (the message names the layer(s) and the feasible range of
/// compression), malformed [`Quota::Counts`].
pub fn kept_counts(net: &Network, quota: &Quota, target_kept: usize) -> Result<Vec<usize>> {
    let sizes: Vec<usize> = net.layers.iter().map(|l| l.numel()).collect();
    let total: usize = sizes.iter().sum();
    if total == 0 {
        return Err(Error::input(format!(
            "'{}' has no prunable weights to keep",
            net.name
        )));
    }
    if target_kept == 0 || target_kept > total {
        return Err(Error::infeasible(
            None,
            format!(
                "cannot keep {target_kept} of the {total} prunable weights: the target must be \
             1 to {total} weights (compression 1 to {total})"
            ),
        ));
    }
    let plan = match quota {
        Quota::Uniform => uniform(&sizes, target_kept),
        Quota::UniformPlus => uniform_plus(net, &sizes, target_kept)?,
        Quota::Erk => erk(net, &sizes, target_kept)?,
        Quota::Igq => igq(&sizes, target_kept),
        Quota::Smart => smart(net, &sizes, target_kept)?,
        Quota::Counts(v) => {
            check_counts(net, &sizes, v)?;
            if v.iter().sum::<usize>() == target_kept {
                return Ok(v.clone());
            }
            counts(net, &sizes, v, target_kept)?
        }
        Quota::Scored(s) => {
            return Err(Error::input(format!(
                "the {} quota needs the method's scores: prune through methods::prune, which \
                 computes them",
                s.name()
            )))
        }
    };
    let k = apportion(&plan, target_kept)?;
    debug_assert_eq!(k.iter().sum::<usize>(), target_kept);
    Ok(k)
}

/// Target kept count for a compression ratio: `round(total / compression)`,
/// at least 1.
///
/// Errors ([`Error::Input`]): no prunable weights, a compression below 1 (or
/// not a number), or one so high that less than one weight would be kept
/// (the message gives the feasible range, 1 to `total`).
pub fn target_from_compression(total: usize, compression: f64) -> Result<usize> {
    if total == 0 {
        return Err(Error::input("there are no prunable weights to keep"));
    }
    if compression.is_nan() || compression < 1.0 {
        return Err(Error::input(format!(
            "compression must be at least 1 (got {compression}); feasible compressions are 1 to {total}"
        )));
    }
    let t = (total as f64 / compression).round();
    if t < 1.0 {
        return Err(Error::infeasible(
            None,
            format!(
                "compression {compression} keeps less than one of the {total} prunable weights; \
             feasible compressions are 1 to {total}"
            ),
        ));
    }
    let t = t as usize;
    if t > total {
        return Err(Error::infeasible(
            None,
            format!(
                "compression {compression} would keep {t} weights, more than the {total} there are"
            ),
        ));
    }
    Ok(t)
}

/// Parse a positive ratio written `1000`, `1e3`, `10^3` or `10^3.5` into
/// `f64`. Anything else, including zero, negative, infinite or NaN values, is
/// an `Err` with a one-line message.
pub fn parse_ratio(s: &str) -> Result<f64> {
    let t = s.trim();
    let bad = || {
        Error::input(format!(
            "'{s}' is not a positive number (write e.g. 1000, 1e3, 10^3 or 10^3.5)"
        ))
    };
    let num = |x: &str| x.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let v = match t.split_once('^') {
        Some((b, e)) => {
            let b = num(b).filter(|&b| b > 0.0).ok_or_else(bad)?;
            let e = num(e).ok_or_else(bad)?;
            b.powf(e)
        }
        None => num(t).ok_or_else(bad)?,
    };
    if !(v.is_finite() && v > 0.0) {
        return Err(bad());
    }
    Ok(v)
}

// ---------------------------------------------------------------------------
// Real-valued quotas

/// A real-valued quota: wanted counts summing to the target, and integer
/// bounds every rounded count must respect.
struct Plan {
    want: Vec<f64>,
    lo: Vec<usize>,
    hi: Vec<usize>,
}

impl Plan {
    fn free(want: Vec<f64>, sizes: &[usize]) -> Self {
        Self {
            lo: vec![0; sizes.len()],
            hi: sizes.to_vec(),
            want,
        }
    }
}

fn uniform(sizes: &[usize], target: usize) -> Plan {
    let total: usize = sizes.iter().sum();
    let d = target as f64 / total as f64;
    Plan::free(sizes.iter().map(|&n| d * n as f64).collect(), sizes)
}

fn uniform_plus(net: &Network, sizes: &[usize], target: usize) -> Result<Plan> {
    let first = &net.layers[0];
    if first.kind != LayerKind::Conv {
        return Err(Error::input(format!(
            "uniform+ (Gale et al. 2019) is for conv nets: the first prunable layer '{}' of \
             '{}' is not a convolution; use uniform, erk or igq",
            first.name, net.name
        )));
    }
    let total: usize = sizes.iter().sum();
    let l = sizes.len();
    let n1 = sizes[0];
    if l == 1 {
        if target != total {
            return Err(Error::infeasible(
                None,
                format!(
                    "uniform+ keeps the first layer '{}' dense and it is the only prunable layer, \
                 so compression {} is infeasible: the only feasible compression is 1",
                    first.name,
                    show(total as f64 / target as f64)
                ),
            ));
        }
        return Ok(Plan {
            want: vec![n1 as f64],
            lo: vec![n1],
            hi: vec![n1],
        });
    }
    let last = &net.layers[l - 1];
    let nl = sizes[l - 1];
    let last_min = nl.div_ceil(5); // density >= 0.2 in whole weights
    let middle = l - 2;
    let min_keep = n1 + last_min + middle;
    if target < min_keep {
        let between = if middle > 0 {
            format!(" and the {middle} layers between them at least one weight each")
        } else {
            String::new()
        };
        return Err(Error::infeasible(
            None,
            format!(
                "uniform+ cannot keep only {target} weights (compression {}): the first layer \
             '{}' stays dense ({n1} weights), the last layer '{}' keeps at least 20% \
             ({last_min} of {nl} weights){between}, {min_keep} weights in all; feasible \
             compressions for uniform+ on '{}' are 1 to {}",
                show(total as f64 / target as f64),
                first.name,
                last.name,
                net.name,
                show(total as f64 / min_keep as f64)
            ),
        ));
    }
    let mut want = vec![0.0; l];
    want[0] = n1 as f64;
    let rest = (target - n1) as f64;
    let d = rest / (total - n1) as f64;
    if d >= 0.2 {
        for (w, &n) in want.iter_mut().zip(sizes).skip(1) {
            *w = d * n as f64;
        }
    } else {
        // Only reachable with middle layers (else target < min_keep above).
        want[l - 1] = last_min as f64;
        let mid_total = (total - n1 - nl) as f64;
        let dm = (rest - last_min as f64) / mid_total;
        if !(0.0..=1.0).contains(&dm) {
            return Err(Error::infeasible(
                None,
                format!(
                    "uniform+ would need density {dm:.4} in the layers between '{}' and '{}'; \
                 feasible compressions for uniform+ on '{}' are 1 to {}",
                    first.name,
                    last.name,
                    net.name,
                    show(total as f64 / min_keep as f64)
                ),
            ));
        }
        for (w, &n) in want[1..l - 1].iter_mut().zip(&sizes[1..l - 1]) {
            *w = dm * n as f64;
        }
    }
    let mut lo = vec![0; l];
    lo[0] = n1;
    lo[l - 1] = last_min;
    Ok(Plan {
        want,
        lo,
        hi: sizes.to_vec(),
    })
}

/// RigL's ERK raw density of a canonical shape: sum of dims over product.
fn erk_raw(shape: &[usize]) -> f64 {
    let sum: usize = shape.iter().sum();
    let prod: usize = shape.iter().product();
    sum as f64 / prod as f64
}

fn erk(net: &Network, sizes: &[usize], target: usize) -> Result<Plan> {
    let raw: Vec<f64> = net.layers.iter().map(|l| erk_raw(&l.shape)).collect();
    let dens = saturating(sizes, &raw, target as f64).map_err(|max| {
        // Unreachable for 0 < target <= total; kept as a guard.
        let total: usize = sizes.iter().sum();
        Error::infeasible(
            None,
            format!(
                "erk cannot keep {target} weights: even with every layer dense it keeps {max}; \
             feasible compressions are {} and above",
                show(total as f64 / max)
            ),
        )
    })?;
    Ok(Plan::free(
        dens.iter().zip(sizes).map(|(d, &n)| d * n as f64).collect(),
        sizes,
    ))
}

/// Densities proportional to `raw` (>= 0) keeping `budget` weights, layers
/// whose density would exceed 1 made dense and removed from the budget until
/// none does. `Err(max)` when the layers with `raw > 0` hold only `max < budget`
/// weights.
fn saturating(sizes: &[usize], raw: &[f64], budget: f64) -> std::result::Result<Vec<f64>, f64> {
    let n = sizes.len();
    let mut dense = vec![false; n];
    loop {
        let fixed: f64 = (0..n).filter(|&i| dense[i]).map(|i| sizes[i] as f64).sum();
        let rest = budget - fixed;
        let divisor: f64 = (0..n)
            .filter(|&i| !dense[i])
            .map(|i| raw[i] * sizes[i] as f64)
            .sum();
        if divisor <= 0.0 || rest < 0.0 {
            // Every layer that can take weights is dense.
            if rest > 0.5 {
                return Err(fixed);
            }
            return Ok((0..n).map(|i| if dense[i] { 1.0 } else { 0.0 }).collect());
        }
        let eps = rest / divisor;
        let mut grew = false;
        for i in 0..n {
            if !dense[i] && eps * raw[i] > 1.0 {
                dense[i] = true;
                grew = true;
            }
        }
        if !grew {
            return Ok((0..n)
                .map(|i| if dense[i] { 1.0 } else { eps * raw[i] })
                .collect());
        }
    }
}

fn igq(sizes: &[usize], target: usize) -> Plan {
    let total: usize = sizes.iter().sum();
    let t = target as f64;
    let kept = |f: f64| -> f64 { sizes.iter().map(|&n| n as f64 / (f * n as f64 + 1.0)).sum() };
    let f = if target == total {
        0.0
    } else {
        // kept(F) decreases from total (F = 0) towards 0, and kept(F) < L / F,
        // so F = L / T already keeps fewer than T.
        let (mut lo, mut hi) = (0.0f64, sizes.len() as f64 / t);
        for _ in 0..2000 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if kept(mid) > t {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    };
    Plan::free(
        sizes
            .iter()
            .map(|&n| n as f64 / (f * n as f64 + 1.0))
            .collect(),
        sizes,
    )
}

/// Names of layers, quoted, at most a few.
fn layer_list(net: &Network, idx: &[usize]) -> String {
    let mut s: Vec<String> = idx
        .iter()
        .take(3)
        .map(|&i| format!("'{}'", net.layers[i].name))
        .collect();
    if idx.len() > 3 {
        s.push(format!("and {} more", idx.len() - 3));
    }
    s.join(", ")
}

fn smart(net: &Network, sizes: &[usize], target: usize) -> Result<Plan> {
    let total: usize = sizes.iter().sum();
    let l_all = sizes.len();
    let resnet = net.nodes.iter().any(|n| n.op.kind() == "Add");
    let (convs, denses): (Vec<usize>, Vec<usize>) =
        (0..l_all).partition(|&i| net.layers[i].kind == LayerKind::Conv);
    if convs.is_empty() {
        return Err(Error::input(format!(
            "smart ratios (Su et al. 2020) are for conv nets: '{}' has no convolution; use \
             uniform, erk or igq",
            net.name
        )));
    }
    // Dense layers keep 30 %: 3n/10 exactly, rounded to floor or ceil.
    let dense_keep: f64 = denses.iter().map(|&i| (3 * sizes[i]) as f64 / 10.0).sum();
    let conv_total: usize = convs.iter().map(|&i| sizes[i]).sum();
    let min_keep = dense_keep + convs.len() as f64;
    let max_keep = dense_keep + conv_total as f64;
    let t = target as f64;
    if t < min_keep || t > max_keep {
        let range = format!(
            "feasible compressions for smart on '{}' are {} to {}",
            net.name,
            show(total as f64 / max_keep),
            show(total as f64 / min_keep)
        );
        let dense_part = if denses.is_empty() {
            "there is no dense layer".to_string()
        } else {
            format!(
                "the dense layer(s) {} keep 30% ({} weights)",
                layer_list(net, &denses),
                show(dense_keep)
            )
        };
        let why = if t < min_keep {
            format!(
                "{dense_part} and each of the {} conv layers at least one weight",
                convs.len()
            )
        } else {
            format!(
                "{dense_part}, so even with every conv layer (from '{}' on) dense at most {} \
                 weights are kept",
                net.layers[convs[0]].name,
                show(max_keep)
            )
        };
        return Err(Error::infeasible(
            None,
            format!(
                "smart ratios cannot keep {target} weights (compression {}): {why}; {range}",
                show(total as f64 / t)
            ),
        ));
    }
    let big_l = l_all as f64;
    let raw: Vec<f64> = convs
        .iter()
        .map(|&i| {
            let l = (i + 1) as f64;
            let k = big_l - l + 1.0;
            let r = k * k + k;
            if resnet {
                r
            } else {
                r / (l * l)
            }
        })
        .collect();
    let weighted: f64 = convs
        .iter()
        .zip(&raw)
        .map(|(&i, r)| r * sizes[i] as f64)
        .sum();
    let scale = (t - dense_keep) / weighted;
    let mut dens: Vec<f64> = raw.iter().map(|r| scale * r).collect();
    // Clip at 1 and carry the excess weights onward, filling the following
    // conv layers in order (the reference code's rule).
    let mut carry = 0.0f64;
    for (j, &i) in convs.iter().enumerate() {
        let n = sizes[i] as f64;
        if dens[j] >= 1.0 {
            carry += (dens[j] - 1.0) * n;
            dens[j] = 1.0;
        } else if carry > 0.0 {
            let take = carry.min((1.0 - dens[j]) * n);
            dens[j] += take / n;
            carry -= take;
        }
    }
    // Densities decrease with l, so saturation is a prefix and the layers
    // after it always have room; guard against rounding anyway.
    if carry > 0.0 {
        for (j, &i) in convs.iter().enumerate() {
            let n = sizes[i] as f64;
            let take = carry.min((1.0 - dens[j]) * n);
            dens[j] += take / n;
            carry -= take;
        }
    }
    let mut plan = Plan::free(vec![0.0; l_all], sizes);
    for (j, &i) in convs.iter().enumerate() {
        plan.want[i] = dens[j] * sizes[i] as f64;
    }
    for &i in &denses {
        plan.want[i] = (3 * sizes[i]) as f64 / 10.0;
        plan.lo[i] = 3 * sizes[i] / 10;
        plan.hi[i] = (3 * sizes[i]).div_ceil(10);
    }
    Ok(plan)
}

fn check_counts(net: &Network, sizes: &[usize], v: &[usize]) -> Result<()> {
    if v.len() != sizes.len() {
        return Err(Error::input(format!(
            "the quota gives {} per-layer counts but '{}' has {} prunable layers",
            v.len(),
            net.name,
            sizes.len()
        )));
    }
    for (i, (&k, &n)) in v.iter().zip(sizes).enumerate() {
        if k > n {
            return Err(Error::infeasible(
                Some(&net.layers[i].name),
                format!("the quota keeps {k} weights, the layer has only {n}"),
            ));
        }
    }
    if v.iter().all(|&k| k == 0) {
        return Err(Error::input(
            "the quota keeps no weight in any layer, so it cannot be scaled to a target",
        ));
    }
    Ok(())
}

fn counts(net: &Network, sizes: &[usize], v: &[usize], target: usize) -> Result<Plan> {
    let raw: Vec<f64> = v
        .iter()
        .zip(sizes)
        .map(|(&k, &n)| k as f64 / n as f64)
        .collect();
    let dens = saturating(sizes, &raw, target as f64).map_err(|max| {
        let total: usize = sizes.iter().sum();
        let empty: Vec<usize> = (0..v.len()).filter(|&i| v[i] == 0).collect();
        Error::infeasible(
            None,
            format!(
                "the quota keeps nothing in layer(s) {}, so scaled to its densities it keeps at \
             most {max} weights, fewer than the target {target}; feasible compressions are {} \
             and above",
                layer_list(net, &empty),
                show(total as f64 / max)
            ),
        )
    })?;
    Ok(Plan::free(
        dens.iter().zip(sizes).map(|(d, &n)| d * n as f64).collect(),
        sizes,
    ))
}

// ---------------------------------------------------------------------------
// Rounding

/// Integer counts summing to `target`: largest-remainder rounding of
/// `plan.want` within `[plan.lo, plan.hi]`, then one weight for each layer of
/// positive wanted count that rounded to 0, taken from the layer with the most
/// weights above its floor (while one can spare a weight).
fn apportion(plan: &Plan, target: usize) -> Result<Vec<usize>> {
    let n = plan.want.len();
    let (lo, hi) = (&plan.lo, &plan.hi);
    if target < lo.iter().sum::<usize>() || target > hi.iter().sum::<usize>() {
        return Err(Error::internal(format!(
            "quota bounds {}..{} exclude the target {target}",
            lo.iter().sum::<usize>(),
            hi.iter().sum::<usize>()
        )));
    }
    let mut k: Vec<usize> = (0..n)
        .map(|i| {
            let w = plan.want[i];
            let f = if w.is_finite() && w > 0.0 {
                w.floor().min(hi[i] as f64) as usize
            } else {
                0
            };
            f.clamp(lo[i], hi[i])
        })
        .collect();
    let rem: Vec<f64> = (0..n)
        .map(|i| {
            let w = if plan.want[i].is_finite() {
                plan.want[i]
            } else {
                0.0
            };
            w - k[i] as f64
        })
        .collect();
    let mut sum: usize = k.iter().sum();
    let mut order: Vec<usize> = (0..n).collect();
    if sum < target {
        order.sort_by(|&a, &b| rem[b].total_cmp(&rem[a]).then(a.cmp(&b)));
        while sum < target {
            let before = sum;
            for &i in &order {
                if sum == target {
                    break;
                }
                if k[i] < hi[i] {
                    k[i] += 1;
                    sum += 1;
                }
            }
            if sum == before {
                return Err(Error::internal("quota rounding made no progress"));
            }
        }
    } else if sum > target {
        order.sort_by(|&a, &b| rem[a].total_cmp(&rem[b]).then(a.cmp(&b)));
        while sum > target {
            let before = sum;
            for &i in &order {
                if sum == target {
                    break;
                }
                if k[i] > lo[i] {
                    k[i] -= 1;
                    sum -= 1;
                }
            }
            if sum == before {
                return Err(Error::internal("quota rounding made no progress"));
            }
        }
    }
    // At least one weight wherever the quota wants some, budget permitting.
    for i in 0..n {
        if k[i] == 0 && plan.want[i] > 0.0 && hi[i] > 0 {
            let floor = |j: usize| lo[j].max(1);
            let donor = (0..n)
                .filter(|&j| k[j] > floor(j))
                .max_by(|&a, &b| (k[a] - floor(a)).cmp(&(k[b] - floor(b))).then(b.cmp(&a)));
            match donor {
                Some(j) => {
                    k[j] -= 1;
                    k[i] += 1;
                }
                None => break,
            }
        }
    }
    Ok(k)
}

/// A compression or count for messages: up to 4 decimals, trailing zeros cut.
fn show(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::Window;
    use crate::graph::tensor::{ConstTensor, DType};
    use crate::graph::NetworkBuilder;
    use crate::zoo;
    use proptest::prelude::*;

    const ALL: [Quota; 5] = [
        Quota::Uniform,
        Quota::UniformPlus,
        Quota::Erk,
        Quota::Igq,
        Quota::Smart,
    ];

    fn sizes(net: &Network) -> Vec<usize> {
        net.layers.iter().map(|l| l.numel()).collect()
    }

    fn dens(net: &Network, k: &[usize]) -> Vec<f64> {
        k.iter()
            .zip(sizes(net))
            .map(|(&k, n)| k as f64 / n as f64)
            .collect()
    }

    fn is_input(e: &Error) -> bool {
        !e.is_internal()
    }

    /// Smart ratios' raw keep ratio of layer index `i` (0-based), by the formula.
    fn smart_raw(net: &Network, i: usize) -> f64 {
        let big_l = net.layers.len() as f64;
        let l = (i + 1) as f64;
        let k = big_l - l + 1.0;
        let resnet = net.nodes.iter().any(|n| n.op.kind() == "Add");
        if resnet {
            k * k + k
        } else {
            (k * k + k) / (l * l)
        }
    }

    /// The invariants every successful quota must satisfy, plus the
    /// quota-specific constraints and feasibility conditions.
    fn check(net: &Network, q: &Quota, target: usize) {
        let n = sizes(net);
        let total: usize = n.iter().sum();
        let r = kept_counts(net, q, target);
        // Feasibility as the documentation states it, computed independently.
        let feasible = match q {
            Quota::UniformPlus => {
                net.layers[0].kind == LayerKind::Conv
                    && if n.len() == 1 {
                        target == total
                    } else {
                        target >= n[0] + n[n.len() - 1].div_ceil(5) + (n.len() - 2)
                    }
            }
            Quota::Smart => {
                let convs = net
                    .layers
                    .iter()
                    .filter(|l| l.kind == LayerKind::Conv)
                    .count();
                let d: f64 = net
                    .layers
                    .iter()
                    .filter(|l| l.kind == LayerKind::Dense)
                    .map(|l| 0.3 * l.numel() as f64)
                    .sum();
                let c: usize = net
                    .layers
                    .iter()
                    .filter(|l| l.kind == LayerKind::Conv)
                    .map(|l| l.numel())
                    .sum();
                let t = target as f64;
                // 0.3 * n differs from 3n/10 by an ulp: stay off the edges.
                if convs > 0
                    && ((t - d - convs as f64).abs() < 1e-6 || (t - d - c as f64).abs() < 1e-6)
                {
                    return;
                }
                convs > 0 && t >= d + convs as f64 && t <= d + c as f64
            }
            Quota::Counts(v) => {
                target
                    <= n.iter()
                        .zip(v)
                        .filter(|p| *p.1 > 0)
                        .map(|p| *p.0)
                        .sum::<usize>()
            }
            _ => true,
        };
        let k = match r {
            Ok(k) => {
                assert!(
                    feasible,
                    "{q:?} accepted infeasible target {target} on {:?}",
                    n
                );
                k
            }
            Err(e) => {
                assert!(is_input(&e), "{e}");
                assert!(
                    !feasible,
                    "{q:?} rejected feasible target {target} on {n:?}: {e}"
                );
                return;
            }
        };
        assert_eq!(k.len(), n.len());
        assert_eq!(k.iter().sum::<usize>(), target, "{q:?} on {n:?}");
        for (i, (&k, &n)) in k.iter().zip(&n).enumerate() {
            assert!(k <= n, "layer {i}: {k} > {n}");
        }
        let positive = match q {
            Quota::Counts(v) => v.iter().filter(|&&v| v > 0).count(),
            _ => n.len(),
        };
        if target >= positive {
            for i in 0..n.len() {
                let wanted = match q {
                    Quota::Counts(v) => v[i] > 0,
                    _ => true,
                };
                if wanted {
                    assert!(
                        k[i] >= 1,
                        "{q:?}: layer {i} empty with target {target} on {n:?}"
                    );
                }
            }
        }
        match q {
            Quota::UniformPlus => {
                assert_eq!(k[0], n[0]);
                let last = n.len() - 1;
                assert!(5 * k[last] >= n[last], "last layer below 20%");
            }
            Quota::Smart => {
                for (i, l) in net.layers.iter().enumerate() {
                    if l.kind == LayerKind::Dense {
                        assert!(10 * k[i] + 9 >= 3 * n[i] && 10 * k[i] <= 3 * n[i] + 9);
                    }
                }
            }
            Quota::Counts(v) if v.iter().sum::<usize>() == target => assert_eq!(&k, v),
            Quota::Counts(v) => {
                for i in 0..n.len() {
                    if v[i] == 0 {
                        assert_eq!(k[i], 0);
                    }
                }
            }
            _ => {}
        }
    }

    /// A chain of convolutions (given out channels and odd kernel sizes), an
    /// optional residual block, then one or two dense layers.
    fn conv_net(chans: &[(usize, usize)], residual: bool, dense: &[usize]) -> Network {
        let mut b = NetworkBuilder::new("random");
        let w = |s: Vec<usize>| ConstTensor::splat(s, 1.0, DType::F32);
        let mut x = b.input("x", vec![chans[0].0, 4, 4]).unwrap();
        for (i, &(c, k)) in chans[1..].iter().enumerate() {
            let c_in = b.shape(x)[0];
            let name = format!("conv{i}");
            x = b
                .conv(
                    &name,
                    x,
                    &format!("{name}.weight"),
                    w(vec![c, c_in, k, k]),
                    None,
                    Window::same(1, k / 2),
                    1,
                )
                .unwrap();
        }
        if residual {
            let c = b.shape(x)[0];
            let h = b
                .conv(
                    "res",
                    x,
                    "res.weight",
                    w(vec![c, c, 3, 3]),
                    None,
                    Window::same(1, 1),
                    1,
                )
                .unwrap();
            x = b.add("add", &[x, h]).unwrap();
        }
        x = b.flatten("flatten", x);
        for (i, &o) in dense.iter().enumerate() {
            let f = b.shape(x)[0];
            let name = format!("fc{i}");
            x = b
                .dense(&name, x, &format!("{name}.weight"), w(vec![o, f]), None)
                .unwrap();
        }
        b.output(x);
        b.finish().unwrap()
    }

    fn target_of(total: usize, frac: f64) -> usize {
        ((frac * total as f64).round() as usize).clamp(1, total)
    }

    fn counts_of(net: &Network, u: &[f64]) -> Vec<usize> {
        sizes(net)
            .iter()
            .zip(u.iter().cycle())
            .map(|(&n, &u)| ((u * (n + 1) as f64) as usize).min(n))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn mlp_counts_sum_exactly(
            widths in prop::collection::vec(1usize..400, 2..7),
            frac in 0.0f64..1.0,
            tiny in 1usize..12,
            u in prop::collection::vec(0.0f64..1.0, 6),
        ) {
            let spec = widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("-");
            let net = zoo::build(&format!("mlp:{spec}"), 0).unwrap();
            let total = net.prunable_count();
            for target in [target_of(total, frac), tiny.min(total), total] {
                for q in ALL.iter().cloned().chain([Quota::Counts(counts_of(&net, &u))]) {
                    if matches!(q, Quota::Counts(ref v) if v.iter().all(|&v| v == 0)) {
                        continue;
                    }
                    check(&net, &q, target);
                }
                // MLPs are not conv nets.
                prop_assert!(kept_counts(&net, &Quota::UniformPlus, target).is_err());
                prop_assert!(kept_counts(&net, &Quota::Smart, target).is_err());
            }
        }

        #[test]
        fn conv_counts_sum_exactly(
            chans in prop::collection::vec((1usize..24, prop::sample::select(vec![1usize, 3, 5])), 2..6),
            residual in any::<bool>(),
            dense in prop::collection::vec(1usize..40, 1..3),
            frac in 0.0f64..1.0,
            tiny in 1usize..12,
            u in prop::collection::vec(0.0f64..1.0, 6),
        ) {
            let net = conv_net(&chans, residual, &dense);
            let total = net.prunable_count();
            for target in [target_of(total, frac), target_of(total, frac * frac * frac), tiny.min(total), total] {
                for q in ALL.iter().cloned().chain([Quota::Counts(counts_of(&net, &u))]) {
                    if matches!(q, Quota::Counts(ref v) if v.iter().all(|&v| v == 0)) {
                        continue;
                    }
                    check(&net, &q, target);
                }
            }
        }

        #[test]
        fn zoo_counts_sum_exactly(
            name in prop::sample::select(vec!["vgg16", "resnet20", "lenet5", "lenet300"]),
            log_c in 0.0f64..5.0,
            u in prop::collection::vec(0.0f64..1.0, 6),
        ) {
            let net = zoo::build(name, 0).unwrap();
            let total = net.prunable_count();
            let target = target_from_compression(total, 10f64.powf(log_c)).unwrap();
            for q in ALL.iter().cloned().chain([Quota::Counts(counts_of(&net, &u))]) {
                check(&net, &q, target);
            }
        }
    }

    #[test]
    fn igq_matches_its_closed_form() {
        for name in ["vgg16", "resnet20", "lenet5", "lenet300"] {
            let net = zoo::build(name, 0).unwrap();
            let n = sizes(&net);
            for c in [2.0, 10.0, 100.0, 1000.0] {
                let target = target_from_compression(net.prunable_count(), c).unwrap();
                let k = kept_counts(&net, &Quota::Igq, target).unwrap();
                // Recover F from the largest layer (most precise), check all.
                let big = (0..n.len()).max_by_key(|&i| n[i]).unwrap();
                let d = k[big] as f64 / n[big] as f64;
                let f = (1.0 / d - 1.0) / n[big] as f64;
                assert!(f > 0.0);
                for i in 0..n.len() {
                    let want = n[i] as f64 / (f * n[i] as f64 + 1.0);
                    assert!(
                        (k[i] as f64 - want).abs() <= 2.0,
                        "{name} at {c}: layer {i} keeps {} but 1/(F n + 1) gives {want}",
                        k[i]
                    );
                }
                // Larger layers are pruned harder.
                for i in 0..n.len() {
                    for j in 0..n.len() {
                        if n[i] < n[j] && k[i] > 1 {
                            assert!(k[i] as f64 / n[i] as f64 >= k[j] as f64 / n[j] as f64 - 1e-3);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn erk_saturates_small_layers_and_keeps_rigl_ratios() {
        for (name, c) in [
            ("vgg16", 2.0),
            ("vgg16", 5.0),
            ("lenet5", 1.5),
            ("resnet20", 1.5),
        ] {
            let net = zoo::build(name, 0).unwrap();
            let n = sizes(&net);
            let target = target_from_compression(net.prunable_count(), c).unwrap();
            let k = kept_counts(&net, &Quota::Erk, target).unwrap();
            let raw: Vec<f64> = net
                .layers
                .iter()
                .map(|l| {
                    l.shape.iter().sum::<usize>() as f64 / l.shape.iter().product::<usize>() as f64
                })
                .collect();
            let sat: Vec<usize> = (0..n.len()).filter(|&i| k[i] == n[i]).collect();
            let free: Vec<usize> = (0..n.len()).filter(|&i| k[i] < n[i]).collect();
            assert!(!sat.is_empty(), "{name} at {c}: nothing saturated");
            assert!(free.len() >= 2, "{name} at {c}");
            // Saturated layers are those of largest raw density.
            let min_sat = sat.iter().map(|&i| raw[i]).fold(f64::INFINITY, f64::min);
            let max_free = free.iter().map(|&i| raw[i]).fold(0.0, f64::max);
            assert!(min_sat >= max_free);
            // Unsaturated layers keep density proportional to raw (RigL).
            let eps: Vec<f64> = free
                .iter()
                .map(|&i| k[i] as f64 / n[i] as f64 / raw[i])
                .collect();
            for (j, &i) in free.iter().enumerate() {
                let tol = 1.5 / k[i] as f64 + 1.5 / k[free[0]] as f64;
                assert!(
                    (eps[j] / eps[0] - 1.0).abs() <= tol,
                    "{name} at {c}: layer {i} eps {} vs {}",
                    eps[j],
                    eps[0]
                );
            }
            // The saturated layers' excess went to the others: eps grew over
            // the naive (unclipped) solution.
            let naive = target as f64 / raw.iter().zip(&n).map(|(r, &n)| r * n as f64).sum::<f64>();
            assert!(eps[0] > naive * 1.0001, "{name} at {c}: no redistribution");
        }
    }

    #[test]
    fn uniform_plus_first_dense_last_at_least_20_percent() {
        let net = zoo::build("vgg16", 0).unwrap();
        let n = sizes(&net);
        let last = n.len() - 1;
        // Compression 10: uniform density ~0.1 < 0.2, so the cap binds.
        let target = target_from_compression(net.prunable_count(), 10.0).unwrap();
        let k = kept_counts(&net, &Quota::UniformPlus, target).unwrap();
        assert_eq!(k[0], n[0]);
        assert_eq!(k[last], n[last].div_ceil(5));
        let d = dens(&net, &k);
        for i in 2..last {
            assert!(
                (d[i] - d[1]).abs() <= 1.0 / n[i] as f64 + 1.0 / n[1] as f64,
                "{d:?}"
            );
        }
        assert!(d[1] < 0.2);
        // Compression 2: density ~0.5 everywhere but the first layer.
        let target = target_from_compression(net.prunable_count(), 2.0).unwrap();
        let k = kept_counts(&net, &Quota::UniformPlus, target).unwrap();
        let d = dens(&net, &k);
        assert_eq!(k[0], n[0]);
        assert!(d[last] > 0.2 && (d[last] - d[1]).abs() < 1e-3, "{d:?}");
        assert_eq!(k.iter().sum::<usize>(), target);
    }

    #[test]
    fn uniform_plus_errors_name_the_layers() {
        let net = zoo::build("lenet5", 0).unwrap();
        // 150 (conv1) + ceil(0.2 * 840) (fc3) + 3 middle layers = 321 weights.
        let total = net.prunable_count();
        let err = kept_counts(&net, &Quota::UniformPlus, 320).unwrap_err();
        let msg = err.to_string();
        assert!(is_input(&err));
        assert!(
            msg.contains("'conv1.weight'") && msg.contains("'fc3.weight'"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("1 to {}", show(total as f64 / 321.0))),
            "{msg}"
        );
        assert!(kept_counts(&net, &Quota::UniformPlus, 321).is_ok());
        let vgg = zoo::build("vgg16", 0).unwrap();
        let t = target_from_compression(vgg.prunable_count(), 10_000.0).unwrap();
        let msg = kept_counts(&vgg, &Quota::UniformPlus, t)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("'layers.0.conv.weight'") && msg.contains("feasible"),
            "{msg}"
        );
        let mlp = zoo::build("lenet300", 0).unwrap();
        let msg = kept_counts(&mlp, &Quota::UniformPlus, 1000)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("conv nets") && msg.contains("'fc1.weight'"),
            "{msg}"
        );
    }

    #[test]
    fn smart_ratios_earlier_layers_denser_and_formula() {
        let net = zoo::build("vgg16", 0).unwrap();
        let n = sizes(&net);
        let last = n.len() - 1;
        let target = target_from_compression(net.prunable_count(), 100.0).unwrap();
        let k = kept_counts(&net, &Quota::Smart, target).unwrap();
        let d = dens(&net, &k);
        assert_eq!(k[last], 3 * n[last] / 10); // 1536 of 5120
        for i in 1..last {
            assert!(d[i] < d[i - 1], "layer {i} denser than {}: {d:?}", i - 1);
        }
        // Past the layer absorbing the first layers' excess, conv densities
        // follow the raw ratios (with 1/l^2).
        let a = (0..last).find(|&i| d[i] < 1.0).unwrap();
        let r = a + 1;
        for i in r + 1..last {
            let want = smart_raw(&net, i) / smart_raw(&net, r);
            let tol = 2.0 / k[i] as f64 + 2.0 / k[r] as f64;
            assert!((d[i] / d[r] / want - 1.0).abs() < tol, "layer {i}: {d:?}");
        }
        // ResNet: no 1/l^2.
        let res = zoo::build("resnet20", 0).unwrap();
        let t = target_from_compression(res.prunable_count(), 100.0).unwrap();
        let k = kept_counts(&res, &Quota::Smart, t).unwrap();
        let d = dens(&res, &k);
        let (a, b) = (3, 15);
        let want = smart_raw(&res, a) / smart_raw(&res, b);
        assert!((want - ((19.0f64.powi(2) + 19.0) / (7.0f64.powi(2) + 7.0))).abs() < 1e-12);
        let tol = 2.0 / k[a] as f64 + 2.0 / k[b] as f64;
        assert!(
            d[a] < 1.0 && (d[a] / d[b] / want - 1.0).abs() < tol,
            "{} vs {want}",
            d[a] / d[b]
        );
    }

    #[test]
    fn smart_ratios_push_the_excess_onward() {
        let net = zoo::build("vgg16", 0).unwrap();
        let n = sizes(&net);
        let last = n.len() - 1;
        let total = net.prunable_count();
        for c in [1.5, 3.0, 10.0] {
            let target = target_from_compression(total, c).unwrap();
            let k = kept_counts(&net, &Quota::Smart, target).unwrap();
            let weighted: f64 = (0..last).map(|i| smart_raw(&net, i) * n[i] as f64).sum();
            let scale = (target as f64 - 0.3 * n[last] as f64) / weighted;
            // A saturated prefix, one layer absorbing the excess, then the
            // untouched scaled ratios.
            let a = (0..last).find(|&i| k[i] < n[i]).unwrap();
            assert!(a >= 1, "at {c} nothing saturated");
            assert!(scale * smart_raw(&net, 0) >= 1.0);
            let excess: f64 = (0..a)
                .map(|i| (scale * smart_raw(&net, i) - 1.0) * n[i] as f64)
                .sum();
            let want_a = scale * smart_raw(&net, a) * n[a] as f64 + excess;
            assert!(
                (k[a] as f64 - want_a).abs() <= 2.0,
                "at {c}: layer {a} {} vs {want_a}",
                k[a]
            );
            for i in a + 1..last {
                let want = scale * smart_raw(&net, i) * n[i] as f64;
                assert!(
                    (k[i] as f64 - want).abs() <= 2.0,
                    "at {c}: layer {i} {} vs {want}",
                    k[i]
                );
            }
        }
        // All convs dense + 30% of fc is the most smart ratios can keep.
        let msg = kept_counts(&net, &Quota::Smart, total)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("'fc.weight'") && msg.contains("feasible"),
            "{msg}"
        );
        assert!(kept_counts(&net, &Quota::Smart, total - n[last] + 1536).is_ok());
    }

    #[test]
    fn counts_pass_through_or_scale() {
        let net = zoo::build("lenet5", 0).unwrap();
        let n = sizes(&net);
        let v = vec![100, 1000, 5000, 1000, 200];
        let sum: usize = v.iter().sum();
        assert_eq!(
            kept_counts(&net, &Quota::Counts(v.clone()), sum).unwrap(),
            v
        );
        // Half the target: densities halve.
        let k = kept_counts(&net, &Quota::Counts(v.clone()), sum / 2).unwrap();
        for i in 0..n.len() {
            assert!((k[i] as f64 - v[i] as f64 / 2.0).abs() <= 1.0, "{k:?}");
        }
        // Double: conv1 (100 of 150) saturates, the rest keep their ratios.
        let k = kept_counts(&net, &Quota::Counts(v.clone()), 2 * sum).unwrap();
        assert_eq!(k[0], n[0]);
        let s = (2 * sum - n[0]) as f64 / (sum - v[0]) as f64;
        for i in 1..n.len() {
            assert!((k[i] as f64 - s * v[i] as f64).abs() <= 1.0, "{k:?}");
        }
        // Zero layers stay empty; beyond their reach is an error naming them.
        let z = vec![150, 2400, 0, 10080, 840];
        let reach: usize = z.iter().sum();
        assert_eq!(
            kept_counts(&net, &Quota::Counts(z.clone()), reach / 2).unwrap()[2],
            0
        );
        let msg = kept_counts(&net, &Quota::Counts(z), reach + 1)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("'fc1.weight'") && msg.contains("feasible"),
            "{msg}"
        );
        let msg = kept_counts(&net, &Quota::Counts(vec![1, 2]), 3)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("2 per-layer counts") && msg.contains("5 prunable layers"),
            "{msg}"
        );
        let e = kept_counts(&net, &Quota::Counts(vec![151, 1, 1, 1, 1]), 155).unwrap_err();
        assert!(
            matches!(e.root(), Error::Infeasible { layer: Some(l), .. } if l == "conv1.weight"),
            "{e}"
        );
    }

    #[test]
    fn targets_out_of_range_and_tiny_targets() {
        let net = zoo::build("vgg16", 0).unwrap();
        let total = net.prunable_count();
        for q in ALL {
            assert!(is_input(&kept_counts(&net, &q, 0).unwrap_err()));
            assert!(is_input(&kept_counts(&net, &q, total + 1).unwrap_err()));
        }
        // 14 layers, 14 weights: one each, whatever the quota's shape.
        for q in [Quota::Uniform, Quota::Erk, Quota::Igq] {
            assert_eq!(kept_counts(&net, &q, 14).unwrap(), vec![1; 14]);
            let k = kept_counts(&net, &q, 5).unwrap();
            assert_eq!(k.iter().sum::<usize>(), 5);
        }
        assert_eq!(kept_counts(&net, &Quota::Igq, total).unwrap(), sizes(&net));
    }

    #[test]
    fn largest_remainder_rounding() {
        let plan = |want: Vec<f64>, lo: Vec<usize>, hi: Vec<usize>| Plan { want, lo, hi };
        // Floors 1+1+1 = 3, one unit to the largest remainder (0.6).
        let p = plan(vec![1.6, 1.3, 1.1], vec![0; 3], vec![5; 3]);
        assert_eq!(apportion(&p, 4).unwrap(), vec![2, 1, 1]);
        // Two units: ties go to the earlier layer.
        let p = plan(vec![1.5, 1.5, 1.0], vec![0; 3], vec![5; 3]);
        assert_eq!(apportion(&p, 5).unwrap(), vec![2, 2, 1]);
        let p = plan(vec![1.5, 1.5, 1.0], vec![0; 3], vec![5; 3]);
        assert_eq!(apportion(&p, 4).unwrap(), vec![2, 1, 1]);
        // Never above the size: the unit goes to the next remainder.
        let p = plan(vec![2.9, 0.8, 1.3], vec![0; 3], vec![2, 5, 5]);
        assert_eq!(apportion(&p, 5).unwrap(), vec![2, 1, 2]);
        // A floor forces a unit up; the excess leaves the smallest remainder.
        let p = plan(vec![1.2, 3.7, 2.1], vec![2, 0, 0], vec![5; 3]);
        assert_eq!(apportion(&p, 6).unwrap(), vec![2, 3, 1]);
        // A positive share that rounds to 0 gets one weight from the layer
        // with the most to spare; a zero share stays empty.
        let p = plan(vec![0.3, 9.4, 0.3, 0.0], vec![0; 4], vec![10; 4]);
        assert_eq!(apportion(&p, 10).unwrap(), vec![1, 8, 1, 0]);
        // No budget for that: plain rounding.
        let p = plan(vec![0.4, 0.3, 0.3], vec![0; 3], vec![10; 3]);
        assert_eq!(apportion(&p, 1).unwrap(), vec![1, 0, 0]);
    }

    #[test]
    fn compression_to_target() {
        assert_eq!(target_from_compression(1000, 10.0).unwrap(), 100);
        assert_eq!(target_from_compression(1000, 1.0).unwrap(), 1000);
        assert_eq!(target_from_compression(1000, 3.0).unwrap(), 333);
        assert_eq!(target_from_compression(1000, 1500.0).unwrap(), 1);
        assert_eq!(target_from_compression(14_715_584, 100.0).unwrap(), 147_156);
        for c in [0.5, 0.0, -3.0, f64::NAN, 3000.0, f64::INFINITY] {
            let e = target_from_compression(1000, c).unwrap_err();
            assert!(is_input(&e) && e.to_string().contains("1 to 1000"), "{e}");
        }
        assert!(target_from_compression(0, 2.0).is_err());
    }

    #[test]
    fn ratios_parse() {
        let close = |s: &str, v: f64| {
            let got = parse_ratio(s).unwrap();
            assert!((got / v - 1.0).abs() < 1e-12, "{s}: {got}");
        };
        close("1000", 1000.0);
        close("1e3", 1000.0);
        close(" 10^3 ", 1000.0);
        close("10^0.5", 10f64.sqrt());
        close("10^3.5", 3162.277660168379);
        close("2.5", 2.5);
        for bad in [
            "abc", "-5", "0", "", "10^", "^3", "10^x", "-10^2", "inf", "NaN", "1e400",
        ] {
            assert!(parse_ratio(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn names_round_trip() {
        for &name in Quota::NAMES {
            assert_eq!(name.parse::<Quota>().unwrap().name(), name);
        }
        assert_eq!("ERK".parse::<Quota>().unwrap(), Quota::Erk);
        assert_eq!(Quota::Counts(vec![1]).name(), "counts");
        let e = "masks:x.safetensors".parse::<Quota>().unwrap_err();
        for c in Quota::NAMES {
            assert!(e.to_string().contains(c), "{e}");
        }
    }

    /// Largest-remainder rounding written out again: floor every wanted
    /// count, then one more to the largest fractional parts (ties to the
    /// earlier layer) until the sum is `target`.
    fn largest_remainder(want: &[f64], target: usize) -> Vec<usize> {
        let mut k: Vec<usize> = want.iter().map(|w| w.floor() as usize).collect();
        let missing = target - k.iter().sum::<usize>();
        let frac = |i: usize| want[i] - want[i].floor();
        let mut order: Vec<usize> = (0..want.len()).collect();
        order.sort_by(|&a, &b| frac(b).total_cmp(&frac(a)).then(a.cmp(&b)));
        for &i in &order[..missing] {
            k[i] += 1;
        }
        k
    }

    /// VGG-16 (CIFAR) at 100x: every quota's per-layer counts equal its
    /// definition (REFERENCE.md, computed here from the layer shapes without
    /// the module's helpers) rounded by largest remainder.
    /// `cargo test --lib quota::tests::vgg16_at_compression_100 -- --nocapture`
    /// also prints the per-layer densities of every quota.
    #[test]
    fn vgg16_at_compression_100() {
        let net = zoo::build("vgg16", 0).unwrap();
        let n = sizes(&net);
        let nf: Vec<f64> = n.iter().map(|&x| x as f64).collect();
        let l = n.len();
        let total: usize = n.iter().sum();
        // 13 convs 3x3 (64, 64, 128, 128, 256 x3, 512 x6) and a 512 -> 10 dense layer.
        let convs = [
            3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512,
        ]
        .windows(2)
        .map(|w| w[0] * w[1] * 9)
        .sum::<usize>();
        assert_eq!((l, total), (14, convs + 5120));
        let target = target_from_compression(net.prunable_count(), 100.0).unwrap();
        assert_eq!(target, (total as f64 / 100.0).round() as usize);
        let t = target as f64;
        let tf = total as f64;

        // Uniform: the same density everywhere.
        let uniform: Vec<f64> = nf.iter().map(|x| x * t / tf).collect();
        // Uniform+: first conv dense; the rest at one density, below 20 %, so
        // the last layer is held at 20 % and the middle layers share the rest.
        let d = (t - nf[0]) / (tf - nf[0]);
        assert!(d < 0.2);
        let last_min = n[l - 1].div_ceil(5) as f64;
        let dm = (t - nf[0] - last_min) / (tf - nf[0] - nf[l - 1]);
        let mut uplus: Vec<f64> = nf.iter().map(|x| dm * x).collect();
        uplus[0] = nf[0];
        uplus[l - 1] = last_min;
        // ERK (RigL): eps * sum(shape) / prod(shape); layers above density 1
        // made dense and eps solved again.
        let raw: Vec<f64> = net
            .layers
            .iter()
            .map(|x| {
                x.shape.iter().sum::<usize>() as f64 / x.shape.iter().product::<usize>() as f64
            })
            .collect();
        let mut dense = vec![false; l];
        let erk: Vec<f64> = loop {
            let fixed: f64 = (0..l).filter(|&i| dense[i]).map(|i| nf[i]).sum();
            let div: f64 = (0..l).filter(|&i| !dense[i]).map(|i| raw[i] * nf[i]).sum();
            let eps = (t - fixed) / div;
            let over: Vec<usize> = (0..l)
                .filter(|&i| !dense[i] && eps * raw[i] > 1.0)
                .collect();
            if over.is_empty() {
                break (0..l)
                    .map(|i| {
                        if dense[i] {
                            nf[i]
                        } else {
                            eps * raw[i] * nf[i]
                        }
                    })
                    .collect();
            }
            over.into_iter().for_each(|i| dense[i] = true);
        };
        // IGQ: n / (F n + 1) summing to the target, F by bisection in log space.
        let igq_kept = |f: f64| nf.iter().map(|x| x / (f * x + 1.0)).sum::<f64>();
        let (mut lo, mut hi) = (1e-15f64, 1.0f64);
        for _ in 0..300 {
            let mid = (lo * hi).sqrt();
            if igq_kept(mid) > t {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let f = (lo * hi).sqrt();
        let igq: Vec<f64> = nf.iter().map(|x| x / (f * x + 1.0)).collect();
        // SmartRatios (no residual adds): conv l keeps in proportion to
        // ((L-l+1)^2 + (L-l+1)) / l^2, the dense layer 30 %; a conv above
        // density 1 is clipped and its excess goes to the following convs.
        let lf = l as f64;
        let r: Vec<f64> = (1..l)
            .map(|i| {
                let k = lf - i as f64 + 1.0;
                (k * k + k) / (i * i) as f64
            })
            .collect();
        let dense_keep = 0.3 * nf[l - 1];
        let scale = (t - dense_keep) / r.iter().zip(&nf).map(|(a, b)| a * b).sum::<f64>();
        let mut smart: Vec<f64> = r.iter().zip(&nf).map(|(a, b)| scale * a * b).collect();
        let mut excess = 0.0;
        for (want, size) in smart.iter_mut().zip(&nf) {
            let room = size - *want;
            if room <= 0.0 {
                excess -= room;
                *want = *size;
            } else {
                let moved = excess.min(room);
                *want += moved;
                excess -= moved;
            }
        }
        assert_eq!(excess, 0.0);
        assert_eq!(smart[0], nf[0], "the first conv is clipped at this target");
        smart.push(dense_keep);

        for (q, want) in [
            (Quota::Uniform, uniform),
            (Quota::UniformPlus, uplus),
            (Quota::Erk, erk),
            (Quota::Igq, igq),
            (Quota::Smart, smart),
        ] {
            assert!((want.iter().sum::<f64>() - t).abs() < 1e-6, "{q:?}");
            let k = kept_counts(&net, &q, target).unwrap();
            assert_eq!(k, largest_remainder(&want, target), "{q:?}");
        }
        // The figures that tell the quotas apart.
        let k = |q: Quota| kept_counts(&net, &q, target).unwrap();
        assert_eq!(k(Quota::UniformPlus)[0], n[0]);
        assert_eq!(k(Quota::UniformPlus)[l - 1], 1024);
        assert_eq!(k(Quota::Smart)[l - 1], 1536);
        assert_eq!(k(Quota::Erk)[0], 1293, "ERK keeps 75 % of the first conv");

        let mut rows = Vec::new();
        for q in ALL {
            let k = kept_counts(&net, &q, target).unwrap();
            rows.push((q.name(), dens(&net, &k)));
        }
        print!("{:<22} {:>9}", "layer", "weights");
        for (name, _) in &rows {
            print!(" {name:>9}");
        }
        println!();
        for (i, l) in net.layers.iter().enumerate() {
            print!("{:<22} {:>9}", l.name, n[i]);
            for (_, d) in &rows {
                print!(" {:>9.5}", d[i]);
            }
            println!();
        }
        println!("target {target} of {} weights", net.prunable_count());
    }
}
