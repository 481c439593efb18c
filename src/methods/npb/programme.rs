//! One layer's integer programme of node-path balancing (NPB): how many
//! weights to keep between each input and each output channel.
//!
//! The programme of Pham et al., *Towards data-agnostic pruning at
//! initialization: what makes a good sparse mask?* (NeurIPS 2023; the
//! node-path balancing paper, papers/npb-node-path-balancing-abstract.txt),
//! as their code states it (pvh1602/NPB, `Pruners/utils.py`,
//! `optimize_layerwise`). With `M[i, j]` the number of kept taps between
//! input channel `i` and output channel `j` (an integer in `0..=max_taps`),
//! `P[i]` the path count reaching input `i`, and `n` the layer's budget:
//!
//! ```text
//! maximise   alpha * A / (C_in + C_out) + (1 - alpha) * B / max_path + beta * R
//!   A = C_in + C_out - sum_i pos(1 - sum_j M[i, j]) - sum_j pos(1 - sum_i M[i, j])
//!   B = sum_i P[i] * sum_j M[i, j]
//!   R = (n - sum_ij pos(1 - M[i, j])) / n
//! subject to sum_ij M[i, j] <= n,  0 <= M[i, j] <= max_taps,  M integer
//! ```
//!
//! `A` counts the effective nodes (a channel with at least one kept tap),
//! `B` the paths the layer passes on, `R` the channel pairs in use. On
//! integers, `pos(1 - x)` is 1 when `x = 0` and 0 otherwise, so each `pos`
//! term is an indicator of an empty row, column or pair: that is the
//! linearisation ([`Programme::objective`] evaluates it as written).
//! `max_path` is their normaliser ([`Programme::max_path`]).
//!
//! # How it is solved, exactly
//! Output channels enter the objective only through "is column `j` used",
//! so they are interchangeable, and so are inputs with equal `P`. Group the
//! inputs by `P`; per group `g` of `s_g` inputs let `K_g` be its nonzero
//! pairs, `W_g` its kept taps and `U_g` its used inputs, and `Y` the used
//! outputs:
//!
//! ```text
//! maximise  alpha/(C_in+C_out) * (sum_g U_g + Y) + (1-alpha)/max_path * sum_g P_g W_g
//!           + beta/n * sum_g K_g + beta * (n - C_in C_out) / n
//!   K_g <= W_g <= max_taps K_g,  U_g <= min(s_g, K_g),  K_g <= s_g C_out,
//!   Y <= min(C_out, sum_g K_g),  sum_g W_g <= n,  all integer.
//! ```
//!
//! Every mask gives such numbers with the same objective, and every such
//! solution is realised by a mask at least as good (spread `K_g` over
//! `min(s_g, K_g)` inputs, each over distinct outputs taken cyclically so
//! that `min(C_out, sum K)` outputs are used: [`super::allot`]), so both
//! programmes have the same optimum. The grouped one has `3 G + 1`
//! variables instead of `C_in C_out` integers and their indicators; microlp
//! solves it by branch and bound to proven optimality (MIP gap 0). The tests
//! solve the programme as written, with every `M[i, j]` and indicator, on
//! small layers and find the same optimum.
//!
//! ```
//! use maskforge::methods::npb::programme::Programme;
//! // Two inputs, the second carrying twice the paths; two outputs; 3 taps.
//! let p = Programme { path_in: vec![1.0, 2.0], outputs: 2, budget: 3, max_taps: 1, alpha: 0.01, beta: 1.0 };
//! let plan = p.solve().unwrap();
//! // Both pairs of the richer input, and one pair of the other (every node used).
//! assert_eq!(plan.groups.iter().map(|g| (g.pairs, g.taps)).collect::<Vec<_>>(), vec![(2, 2), (1, 1)]);
//! ```

use microlp::{ComparisonOp, OptimizationDirection, Problem, SolveOptions, Variable};

use crate::error::{Error, Result};

/// One programme: a layer (or a chunk of its output channels).
#[derive(Clone, Debug, PartialEq)]
pub struct Programme {
    /// `P[i]`: the paths reaching each input channel (any common scale).
    pub path_in: Vec<f64>,
    /// Output channels `C_out`.
    pub outputs: usize,
    /// `n`: kept taps at most.
    pub budget: usize,
    /// Kept taps per (input, output) pair at most.
    pub max_taps: usize,
    pub alpha: f64,
    pub beta: f64,
}

/// Inputs of equal `P`, and what the optimum gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Input channels of the group, ascending.
    pub inputs: Vec<usize>,
    /// `K_g`: (input, output) pairs with at least one tap.
    pub pairs: usize,
    /// `W_g`: kept taps.
    pub taps: usize,
}

/// The optimum of a programme, per group of equal `P`, richest group first.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub groups: Vec<Group>,
    /// The programme's objective at the optimum.
    pub objective: f64,
}

impl Programme {
    fn inputs(&self) -> usize {
        self.path_in.len()
    }

    /// Their normaliser of `B`: the paths of `n` taps stacked `max_taps`
    /// deep on every output of the richest inputs. Transcribed with its
    /// edge cases: when fewer than `C_out * max_taps` taps are kept, numpy's
    /// `sort(P)[-0:]` takes *every* input (not none), and the remainder
    /// term is dropped when there is no next input.
    pub fn max_path(&self) -> f64 {
        let mut sorted = self.path_in.clone();
        sorted.sort_by(f64::total_cmp);
        let per_input = self.outputs * self.max_taps;
        let full = self.budget / per_input;
        let remainder = self.budget - full * per_input;
        let top = match full {
            0 => &sorted[..],
            k => &sorted[sorted.len().saturating_sub(k)..],
        };
        let base = top.iter().sum::<f64>() * per_input as f64;
        match sorted.len().checked_sub(full + 1) {
            Some(i) => base + remainder as f64 * sorted[i],
            None => base,
        }
    }

    /// The objective of a tap-count matrix `m` (`C_in x C_out`, row-major),
    /// term by term as their code writes it.
    pub fn objective(&self, m: &[u32]) -> f64 {
        let (c_in, c_out) = (self.inputs(), self.outputs);
        assert_eq!(m.len(), c_in * c_out, "a C_in x C_out matrix");
        let pos = |x: f64| x.max(0.0);
        let row = |i: usize| {
            m[i * c_out..(i + 1) * c_out]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
        };
        let col = |j: usize| (0..c_in).map(|i| m[i * c_out + j] as f64).sum::<f64>();
        let nodes = (c_in + c_out) as f64;
        let empty_rows: f64 = (0..c_in).map(|i| pos(1.0 - row(i))).sum();
        let empty_cols: f64 = (0..c_out).map(|j| pos(1.0 - col(j))).sum();
        let a = (nodes - empty_rows - empty_cols) / nodes;
        let b = match self.max_path() {
            0.0 => 0.0,
            max_path => (0..c_in).map(|i| self.path_in[i] * row(i)).sum::<f64>() / max_path,
        };
        let n = self.budget as f64;
        let empty_pairs: f64 = m.iter().map(|&v| pos(1.0 - v as f64)).sum();
        let r = (n - empty_pairs) / n;
        self.alpha * a + (1.0 - self.alpha) * b + self.beta * r
    }

    /// Inputs grouped by equal `P`, richest first.
    fn groups(&self) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.inputs()).collect();
        order.sort_by(|&a, &b| self.path_in[b].total_cmp(&self.path_in[a]).then(a.cmp(&b)));
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in order {
            match groups.last_mut() {
                Some(g) if self.path_in[g[0]] == self.path_in[i] => g.push(i),
                _ => groups.push(vec![i]),
            }
        }
        groups
    }

    /// Check the programme can be posed: the budget fits in `max_taps` per
    /// pair. (A programme whose inputs carry no path, a group of a grouped
    /// conv behind dead channels, has `max_path = 0`: its `B` term is 0.)
    pub fn check(&self) -> Result<()> {
        if self.outputs == 0 || self.inputs() == 0 {
            return Err(Error::infeasible(None, "the layer has no channels"));
        }
        if self.path_in.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err(Error::internal("path counts must be finite and >= 0"));
        }
        let room = self.inputs() * self.outputs * self.max_taps;
        if self.budget > room {
            return Err(Error::infeasible(
                None,
                format!(
                    "{} kept weights do not fit in {} x {} channel pairs at --max-taps {} (at most {room}); raise --max-taps",
                    self.budget,
                    self.inputs(),
                    self.outputs,
                    self.max_taps
                ),
            ));
        }
        Ok(())
    }

    /// Solve the grouped programme to proven optimality.
    pub fn solve(&self) -> Result<Plan> {
        self.check()?;
        let groups = self.groups();
        if self.budget == 0 {
            let groups = groups
                .into_iter()
                .map(|inputs| Group {
                    inputs,
                    pairs: 0,
                    taps: 0,
                })
                .collect();
            return Ok(Plan {
                groups,
                objective: f64::NAN,
            });
        }
        let n = self.budget as f64;
        let c_out = self.outputs;
        let nodes = (self.inputs() + c_out) as f64;
        let max_path = self.max_path();
        // Scaled by n: coefficients near 1 keep the simplex well conditioned.
        let node_gain = self.alpha / nodes * n;
        let pair_gain = self.beta;
        let mut lp = Problem::new(OptimizationDirection::Maximize);
        let int = |x: usize| {
            i32::try_from(x).map_err(|_| Error::input("a layer too large for NPB's programme"))
        };
        let mut vars: Vec<(Variable, Variable)> = Vec::with_capacity(groups.len());
        let mut all_pairs = Vec::with_capacity(groups.len());
        let mut all_taps = Vec::with_capacity(groups.len());
        for g in &groups {
            let s = g.len();
            let p = self.path_in[g[0]];
            let pairs = lp.add_integer_var(pair_gain, (0, int(s * c_out)?));
            let path_gain = if max_path > 0.0 { p / max_path } else { 0.0 };
            let taps = lp.add_integer_var(
                (1.0 - self.alpha) * path_gain * n,
                (0, int(s * c_out * self.max_taps)?),
            );
            let used = lp.add_integer_var(node_gain, (0, int(s)?));
            lp.add_constraint([(pairs, 1.0), (taps, -1.0)], ComparisonOp::Le, 0.0);
            lp.add_constraint(
                [(taps, 1.0), (pairs, -(self.max_taps as f64))],
                ComparisonOp::Le,
                0.0,
            );
            lp.add_constraint([(used, 1.0), (pairs, -1.0)], ComparisonOp::Le, 0.0);
            vars.push((pairs, taps));
            all_pairs.push((pairs, -1.0));
            all_taps.push((taps, 1.0));
        }
        let used_outputs = lp.add_integer_var(node_gain, (0, int(c_out)?));
        all_pairs.push((used_outputs, 1.0));
        lp.add_constraint(all_pairs.as_slice(), ComparisonOp::Le, 0.0);
        lp.add_constraint(all_taps.as_slice(), ComparisonOp::Le, n);
        let solution = lp
            .solve_with(SolveOptions::default())
            .map_err(|e| Error::internal(format!("NPB programme: {e}")))?
            .into_solution()
            .map_err(|_| Error::internal("NPB programme: the solver stopped without a solution"))?;
        let constant = self.beta * (n - (self.inputs() * c_out) as f64) / n;
        let objective = solution.objective() / n + constant;
        let groups = groups
            .into_iter()
            .zip(&vars)
            .map(|(inputs, &(pairs, taps))| Group {
                inputs,
                pairs: solution.var_value(pairs) as usize,
                taps: solution.var_value(taps) as usize,
            })
            .collect();
        Ok(Plan { groups, objective })
    }
}
