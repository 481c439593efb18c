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
//!   it has not taken, at random, low-numbered outputs favoured (weight
//!   `((C_out - j) / C_out)^4` for output `j`);
//! - every pair gets one tap, and a group's extra taps stack up to
//!   `max_taps` on its pairs in that order, lowest output first.
//!
//! Why so: the path counts the outputs receive become the next layer's
//! `P`, and how unequal they are decides how many inputs the next programme
//! spreads over (inputs within a few percent of the richest are worth a
//! node). A regular placement (every input on the lowest-numbered outputs)
//! makes large groups of exactly equal counts, which the next programme
//! covers whole: on VGG-16 at density 10^-2 that kept twice the reference's
//! nodes with 10^2 times fewer paths. Uniform random placement leaves the
//! counts within a few percent of each other (the next programme again
//! spreads: 10^0.6 times fewer paths than the reference there); favouring
//! low-numbered outputs spreads them out as the reference's solver output
//! happens to, and matches or passes its nodes and paths at five of the six
//! measured points (docs/npb.md has the skews tried, and the sixth).
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

/// Tap counts `C_in x C_out`, row-major, realising `plan`.
pub fn allot(p: &Programme, plan: &Plan, rng: &mut impl rand::Rng) -> Vec<u32> {
    let c_out = p.outputs;
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
            for j in skewed_sample(row, k - taken, rng) {
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

/// How strongly the free outputs of a row favour low numbers: output `j`
/// of `C` is drawn with weight `((C - j) / C)^SKEW`.
const SKEW: i32 = 4;

/// `k` of the row's free outputs (cells still 0), drawn without
/// replacement with the [`SKEW`] weights (Efraimidis and Spirakis: the
/// `k` largest `ln(u) / w`).
fn skewed_sample(row: &[u32], k: usize, rng: &mut impl rand::Rng) -> Vec<usize> {
    let c_out = row.len() as f64;
    let mut keyed: Vec<(f64, usize)> = (0..row.len())
        .filter(|&j| row[j] == 0)
        .map(|j| {
            let w = ((c_out - j as f64) / c_out).powi(SKEW);
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (u.ln() / w, j)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().take(k).map(|(_, j)| j).collect()
}
