//! From the optimum of an NPB programme (pairs and taps per group of equal
//! path count) to a tap count for every (input, output) channel pair.
//!
//! The programme leaves open which inputs of a group and which outputs get
//! the pairs, and how the taps stack on them: every such choice has the
//! same objective ([`super::programme`]). The reference code takes whatever
//! its MIP solver returns. We fix the choice so that it realises the
//! optimum:
//! - a group's pairs go to `min(s_g, K_g)` of its inputs (lowest index
//!   first), as evenly as possible, so every input the optimum uses is used;
//! - inputs are visited richest first; each takes the outputs no input has
//!   used yet first (so `min(C_out, sum K)` outputs are used), then outputs
//!   it has not taken, at random ([`Spread`]): uniformly when the optimum
//!   pairs some input with every output (a full row), otherwise favouring
//!   low-numbered outputs (weight `((C_out - j) / C_out)^16` for output
//!   `j`);
//! - every pair gets one tap, and a group's extra taps stack up to
//!   `max_taps` on its pairs in that order, lowest output first.
//!
//! Why so: the path counts the outputs receive become the next layer's
//! `P`, and how unequal they are decides how many inputs the next programme
//! spreads over (inputs within a few percent of the richest are worth a
//! node). The reference takes whatever its solver (HiGHS through cvxpy)
//! returns, and its solutions (`scripts/npb_official.py --dump`) spread
//! many single pairs evenly after a full row (ResNet-20 at 10^-2: 29 to 62
//! per programme over 32 outputs, at most 5 on one) but pile some of them
//! on one output elsewhere (VGG-16 at 10^-3: 22 of 112 on output 0 in
//! `layers.7`). The pile-up makes the next layer concentrate on a few rich
//! inputs: that is how their late VGG-16 layers at 10^-3 become a tube of 4
//! to 12 channels with many paths.
//!
//! Our programmes are not theirs (our `P` differs), so copying their
//! per-programme counts does not carry over. This rule is the one that
//! reproduces their whole masks: within 2 % of their effective nodes and
//! log10 paths, or better, on their seed-0 runs of ResNet-20 and VGG-16 at
//! 10^-1 to 10^-3 (fitted there: on other densities and VGG-19 it is
//! within about 11 %). One weighting for every programme cannot: favouring
//! low outputs everywhere (exponent 4) costs ResNet-20 9 % of its nodes at
//! 10^-2, uniform everywhere leaves VGG-16 at 10^-3 with 10^19.1 paths
//! against their 10^23.1. docs/npb.md tables every rule measured, both sides over five
//! seeds, and runs the rule was not chosen on.
//!
//! ```
//! use maskforge::methods::npb::{allot::allot, programme::Programme};
//! use rand::SeedableRng;
//! let p = Programme { path_in: vec![1.0, 1.0], outputs: 3, budget: 4, max_taps: 9, alpha: 0.01, beta: 1.0 };
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let m = allot(&p, &p.solve().unwrap(), &mut rng);
//! // Four pairs of one tap each (beta rewards pairs), every input and output used.
//! assert_eq!(m.iter().sum::<u32>(), 4);
//! assert!(m.iter().all(|&t| t <= 1));
//! assert!((p.objective(&m) - p.solve().unwrap().objective).abs() < 1e-12);
//! ```

use super::programme::{Plan, Programme};

/// How a row's outputs beyond the uncovered ones are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Every free output alike.
    Uniform,
    /// Output `j` of `C` with weight `((C - j) / C)^SKEW`.
    LowFavoured,
}

impl Spread {
    /// Uniform when `plan` pairs an input with every one of `c_out`
    /// outputs, low-favoured otherwise (the module doc says why).
    pub fn of(plan: &Plan, c_out: usize) -> Self {
        let full_row = plan.groups.iter().any(|g| {
            let rows = g.inputs.len().min(g.pairs);
            rows > 0 && g.pairs.div_ceil(rows) >= c_out
        });
        if full_row {
            Spread::Uniform
        } else {
            Spread::LowFavoured
        }
    }

    fn weight(self, j: usize, c_out: usize) -> f64 {
        match self {
            Spread::Uniform => 1.0,
            Spread::LowFavoured => ((c_out - j) as f64 / c_out as f64).powi(SKEW),
        }
    }
}

/// Tap counts `C_in x C_out`, row-major, realising `plan`.
pub fn allot(p: &Programme, plan: &Plan, rng: &mut impl rand::Rng) -> Vec<u32> {
    let c_out = p.outputs;
    let spread = Spread::of(plan, c_out);
    let mut m = vec![0u32; p.path_in.len() * c_out];
    // Outputs are first used in increasing order: those below it are used.
    let mut next_unused = 0;
    for g in &plan.groups {
        let rows = g.inputs.len().min(g.pairs);
        if rows == 0 {
            continue;
        }
        let mut extra = g.taps - g.pairs;
        for (r, &i) in g.inputs[..rows].iter().enumerate() {
            let k = g.pairs / rows + usize::from(r < g.pairs % rows);
            let row = &mut m[i * c_out..(i + 1) * c_out];
            let mut taken = 0;
            while taken < k && next_unused < c_out {
                row[next_unused] = 1;
                taken += 1;
                next_unused += 1;
            }
            for j in sample_free(row, k - taken, spread, rng) {
                row[j] = 1;
            }
            for cell in row.iter_mut().filter(|c| **c > 0) {
                let more = extra.min(p.max_taps - 1);
                *cell += more as u32;
                extra -= more;
            }
        }
        debug_assert_eq!(extra, 0, "a group's taps fit on its pairs");
    }
    m
}

/// How strongly [`Spread::LowFavoured`] favours low-numbered outputs.
const SKEW: i32 = 16;

/// `k` of the row's free outputs (cells still 0), drawn without
/// replacement with the `spread`'s weights (Efraimidis and Spirakis: the
/// `k` largest `ln(u) / w`).
fn sample_free(row: &[u32], k: usize, spread: Spread, rng: &mut impl rand::Rng) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = (0..row.len())
        .filter(|&j| row[j] == 0)
        .map(|j| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (u.ln() / spread.weight(j, row.len()), j)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().take(k).map(|(_, j)| j).collect()
}
