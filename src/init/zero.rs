//! ZerO initialisation: deterministic weights made of zeros, ones and scaled
//! Hadamard entries (Zhao, Schäfer, Anandkumar 2022, "ZerO Initialization:
//! Initializing Neural Networks with only Zeros and Ones", Algorithm 1; used
//! as the pre-pruning initialisation of `papers/end-to-end-pruning-pipeline.txt`,
//! Sec. 3.1, Definitions 1-2 and Algorithm 1 there).
//!
//! maskforge stores a weight `[out, in]` (as PyTorch's `nn.Linear.weight`,
//! `y = W x`). Equal widths always give the identity `I`. Which of the other
//! two cases gets the Hadamard depends on the [`Orientation`]:
//!
//! - [`Orientation::Shrinking`] (the default, `--scheme zero`): the pipeline
//!   paper's Algorithm 1 as printed. A shrinking layer (`in > out`) gets
//!   `c · I*_{out,2^m} H_m I*_{2^m,in}`, i.e. `W[o][i] = c · H_m[o][i]`, with
//!   `m = ceil(log2(in))` and `c = 2^{-(m-1)/2}`; a growing layer (`out > in`)
//!   gets the partial identity, `W[o][i] = 1` when `o == i`, else 0.
//! - [`Orientation::Growing`] (`--scheme zero-growing`): the ZerO authors'
//!   code. A growing layer gets `W[o][i] = c · H_m[o][i]` with `m =
//!   ceil(log2(out))`, a shrinking one the partial identity (inputs `out..in`
//!   start unused).
//!
//! `H_m` is the Sylvester Hadamard matrix. In both readings `m` comes from the
//! larger width, and the Hadamard's entries are `c · H_m[o][i]`.
//!
//! Why two readings: both test the matrix's shape the same way (`rows ==
//! cols`: identity, `rows < cols`: partial identity, `rows > cols`: Hadamard,
//! `m` from the rows), but the rows are different things. The pipeline paper
//! writes `W^(l) ∈ R^{n_l × n_{l+1}}`, a kernel in `[in, out]` layout (as a
//! TF/JAX Dense kernel, `y = x W`), so its Hadamard branch `n_l > n_{l+1}` is
//! a shrinking layer and `m = ceil(log2 n_l)` the input width; its `[in,
//! out]` entry `K[i][o] = c · H_m[i][o]` is stored as `W[o][i] = c ·
//! H_m[i][o] = c · H_m[o][i]`, `H_m` being symmetric. ZerO's code tests
//! `weight.size(0) > weight.size(1)` on a PyTorch `[out, in]` weight, whose
//! rows are outputs, so there the Hadamard goes on growing layers.
//!
//! The default follows our issue, which states the contract as the pipeline
//! paper's Algorithm 1 ("Hadamard for shrinking layers"). `zero-growing`
//! reproduces ZerO's own setting, for whoever wants its guarantee: with a
//! partial identity, a growing layer's extra outputs `in..out` start at zero
//! (and tied, ZerO's "training degeneracy"), which the Hadamard on growing
//! layers avoids. `c` follows both papers; ZerO's code divides by `2^{m/2}`
//! instead.
//!
//! Convolutions (`[out, in/groups, kh, kw]`) get the channel matrix at the
//! kernel centre `(kh/2, kw/2)` and zeros at every other tap, so a conv
//! starts as a 1x1 channel map. For an even kernel that is the lower/right of
//! the two middle taps (as `torch.nn.init.dirac_`). A grouped conv gets one
//! `[out/groups, in/groups]` matrix per group, each group mapping its own
//! input channels to its own outputs; a depthwise conv (one input channel per
//! group, one output) is therefore the identity per channel.
//!
//! ```
//! use maskforge::init::zero::{self, Orientation::{Growing, Shrinking}};
//! let c = 0.5f32.sqrt();
//! // 4 -> 2 shrinks. Default: m = ceil(log2 4) = 2, c = 2^{-1/2}, rows 0..2 of H_2.
//! assert_eq!(
//!     zero::matrix(2, 4, Shrinking),
//!     vec![c, c, c, c, c, -c, c, -c]
//! );
//! // ZerO's code: the partial identity.
//! assert_eq!(
//!     zero::matrix(2, 4, Growing),
//!     vec![1., 0., 0., 0., 0., 1., 0., 0.]
//! );
//! // 2 -> 4 grows. Default: the partial identity; ZerO's code: m = 2, columns 0..2 of H_2.
//! assert_eq!(
//!     zero::matrix(4, 2, Shrinking),
//!     vec![1., 0., 0., 1., 0., 0., 0., 0.]
//! );
//! assert_eq!(
//!     zero::matrix(4, 2, Growing),
//!     vec![c, c, c, -c, c, c, c, -c]
//! );
//! ```

/// Which layers get Algorithm 1's Hadamard branch (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Orientation {
    /// The pipeline paper's Algorithm 1 as printed: Hadamard when the layer
    /// shrinks (`in > out`), `m = ceil(log2 in)`; growing layers get the
    /// partial identity.
    #[default]
    Shrinking,
    /// The ZerO authors' code: Hadamard when the layer grows (`out > in`),
    /// `m = ceil(log2 out)`; shrinking layers get the partial identity.
    Growing,
}

/// How Algorithm 1 fills one `[out, in]` matrix.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "rule")]
pub enum Rule {
    Identity,
    PartialIdentity,
    /// `c · H_m` truncated to `[out, in]`.
    Hadamard {
        m: u32,
        scale: f32,
    },
}

/// The rule for a matrix mapping `n_in` inputs to `n_out` outputs.
pub fn rule(n_out: usize, n_in: usize, orientation: Orientation) -> Rule {
    if n_out == n_in {
        return Rule::Identity;
    }
    let hadamard = match orientation {
        Orientation::Shrinking => n_in > n_out,
        Orientation::Growing => n_out > n_in,
    };
    if !hadamard {
        return Rule::PartialIdentity;
    }
    let m = log2_ceil(n_out.max(n_in));
    Rule::Hadamard {
        m,
        scale: hadamard_scale(m),
    }
}

/// `ceil(log2(n))` for `n >= 1`.
pub(crate) fn log2_ceil(n: usize) -> u32 {
    assert!(n >= 1, "log2 of 0");
    usize::BITS - (n - 1).leading_zeros()
}

/// `c = 2^{-(m-1)/2}`, Algorithm 1's scale of `H_m`.
pub(crate) fn hadamard_scale(m: u32) -> f32 {
    2f64.powf(-(m as f64 - 1.0) / 2.0) as f32
}

/// The Sylvester Hadamard matrix `H_m` (`2^m x 2^m`, row-major), built by
/// the recursion `H_m = [[H_{m-1}, H_{m-1}], [H_{m-1}, -H_{m-1}]]`.
pub fn hadamard(m: u32) -> Vec<f32> {
    let mut h = vec![1.0f32];
    let mut n = 1usize;
    for _ in 0..m {
        let mut next = vec![0.0f32; 4 * n * n];
        for r in 0..n {
            for c in 0..n {
                let v = h[r * n + c];
                next[r * 2 * n + c] = v;
                next[r * 2 * n + c + n] = v;
                next[(r + n) * 2 * n + c] = v;
                next[(r + n) * 2 * n + c + n] = -v;
            }
        }
        h = next;
        n *= 2;
    }
    h
}

/// Entry `(r, c)` of any `H_m` large enough to hold it, without building it:
/// each level of the recursion flips the sign when both indices fall in the
/// lower-right block, i.e. once per bit set in both, so the sign is
/// `(-1)^popcount(r & c)`. A layer between 50 000 and 3 units needs 3
/// rows (or columns) of `H_16`, not its 2^32 entries.
pub(crate) fn hadamard_entry(r: usize, c: usize) -> f32 {
    if (r & c).count_ones().is_multiple_of(2) {
        1.0
    } else {
        -1.0
    }
}

/// Algorithm 1's `[out, in]` matrix, row-major.
pub fn matrix(n_out: usize, n_in: usize, orientation: Orientation) -> Vec<f32> {
    let mut w = vec![0.0f32; n_out * n_in];
    fill_matrix(n_out, n_in, orientation, |o, i, v| w[o * n_in + i] = v);
    w
}

/// Call `set(o, i, value)` for every nonzero entry of Algorithm 1's matrix.
fn fill_matrix(
    n_out: usize,
    n_in: usize,
    orientation: Orientation,
    mut set: impl FnMut(usize, usize, f32),
) {
    match rule(n_out, n_in, orientation) {
        Rule::Identity | Rule::PartialIdentity => {
            for d in 0..n_out.min(n_in) {
                set(d, d, 1.0);
            }
        }
        Rule::Hadamard { scale, .. } => {
            for o in 0..n_out {
                for i in 0..n_in {
                    set(o, i, scale * hadamard_entry(o, i));
                }
            }
        }
    }
}

/// The kernel tap that carries the channel matrix: the centre, or for an
/// even extent the lower/right of the two middle taps.
pub(crate) fn centre_tap(k: usize) -> usize {
    k / 2
}

/// A conv weight `[out, in/groups, kh, kw]`, row-major: per group, the
/// `[out/groups, in/groups]` matrix of Algorithm 1 at the kernel centre.
pub fn conv_kernel(
    out_channels: usize,
    in_per_group: usize,
    kernel: [usize; 2],
    groups: usize,
    orientation: Orientation,
) -> Vec<f32> {
    let [kh, kw] = kernel;
    let taps = kh * kw;
    let centre = centre_tap(kh) * kw + centre_tap(kw);
    let out_per_group = out_channels / groups;
    let mut w = vec![0.0f32; out_channels * in_per_group * taps];
    for g in 0..groups {
        fill_matrix(out_per_group, in_per_group, orientation, |o, i, v| {
            let row = g * out_per_group + o;
            w[(row * in_per_group + i) * taps + centre] = v;
        });
    }
    w
}

/// The rule applied to each group's channel matrix of a conv.
pub fn conv_rule(
    out_channels: usize,
    in_per_group: usize,
    groups: usize,
    orientation: Orientation,
) -> Rule {
    rule(out_channels / groups, in_per_group, orientation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transpose_product(h: &[f32], n: usize) -> Vec<f32> {
        let mut p = vec![0.0f32; n * n];
        for r in 0..n {
            for c in 0..n {
                p[r * n + c] = (0..n).map(|k| h[r * n + k] * h[c * n + k]).sum();
            }
        }
        p
    }

    #[test]
    fn hadamard_rows_are_orthogonal() {
        for m in 0..=5 {
            let n = 1usize << m;
            let p = transpose_product(&hadamard(m), n);
            for r in 0..n {
                for c in 0..n {
                    let want = if r == c { n as f32 } else { 0.0 };
                    assert_eq!(p[r * n + c], want, "H_{m} H_{m}^T at ({r},{c})");
                }
            }
        }
    }

    #[test]
    fn hadamard_h2_by_hand() {
        #[rustfmt::skip]
        let h2 = vec![
            1.,  1.,  1.,  1.,
            1., -1.,  1., -1.,
            1.,  1., -1., -1.,
            1., -1., -1.,  1.,
        ];
        assert_eq!(hadamard(2), h2);
    }

    #[test]
    fn closed_form_entries_match_the_recursion() {
        for m in 0..=6 {
            let n = 1usize << m;
            let h = hadamard(m);
            for r in 0..n {
                for c in 0..n {
                    assert_eq!(hadamard_entry(r, c), h[r * n + c], "H_{m}[{r}][{c}]");
                }
            }
        }
    }

    #[test]
    fn log2_ceil_by_hand() {
        let got: Vec<u32> = [1, 2, 3, 4, 5, 8, 9, 1024, 1025]
            .iter()
            .map(|&n| log2_ceil(n))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 2, 3, 3, 4, 10, 11]);
    }

    #[test]
    fn equal_sizes_give_the_identity_in_both_orientations() {
        for or in [Orientation::Shrinking, Orientation::Growing] {
            assert_eq!(matrix(3, 3, or), vec![1., 0., 0., 0., 1., 0., 0., 0., 1.]);
            assert_eq!(rule(3, 3, or), Rule::Identity);
        }
    }

    #[test]
    fn the_default_orientation_is_shrinking() {
        assert_eq!(Orientation::default(), Orientation::Shrinking);
    }

    #[test]
    fn shrinking_4_to_2_is_h2_rows_scaled_by_one_over_root_two() {
        // m = ceil(log2 4) = 2 (the input width), c = 2^{-1/2}: rows 0..2 of H_2.
        let c = std::f32::consts::FRAC_1_SQRT_2;
        assert_eq!(
            rule(2, 4, Orientation::Shrinking),
            Rule::Hadamard { m: 2, scale: c }
        );
        #[rustfmt::skip]
        let want = vec![
            c,  c, c,  c,
            c, -c, c, -c,
        ];
        assert_eq!(matrix(2, 4, Orientation::Shrinking), want);
        // 2 -> 1: m = 1, c = 1, row 0 of H_1.
        assert_eq!(matrix(1, 2, Orientation::Shrinking), vec![1., 1.]);
    }

    #[test]
    fn shrinking_5_to_3_is_h3_truncated_and_halved() {
        // m = ceil(log2 5) = 3, c = 2^{-1} = 0.5; rows 0..3, columns 0..5 of H_3.
        assert_eq!(
            rule(3, 5, Orientation::Shrinking),
            Rule::Hadamard { m: 3, scale: 0.5 }
        );
        #[rustfmt::skip]
        let want = vec![
            0.5,  0.5,  0.5,  0.5, 0.5,
            0.5, -0.5,  0.5, -0.5, 0.5,
            0.5,  0.5, -0.5, -0.5, 0.5,
        ];
        assert_eq!(matrix(3, 5, Orientation::Shrinking), want);
    }

    #[test]
    fn shrinking_orientation_gives_growing_layers_the_partial_identity() {
        // 3 -> 5: (I_3, 0)^T, outputs 3 and 4 start at zero.
        assert_eq!(rule(5, 3, Orientation::Shrinking), Rule::PartialIdentity);
        #[rustfmt::skip]
        let want = vec![
            1., 0., 0.,
            0., 1., 0.,
            0., 0., 1.,
            0., 0., 0.,
            0., 0., 0.,
        ];
        assert_eq!(matrix(5, 3, Orientation::Shrinking), want);
        assert_eq!(matrix(2, 1, Orientation::Shrinking), vec![1., 0.]);
    }

    #[test]
    fn shrinking_from_a_power_of_two_keeps_h_rows_orthogonal() {
        // 8 -> 3: the 3 rows of c·H_3 are orthogonal with norm² 8c² = 2 (c = 1/2).
        let (o, i) = (3, 8);
        let w = matrix(o, i, Orientation::Shrinking);
        for a in 0..o {
            for b in 0..o {
                let dot: f32 = (0..i).map(|k| w[a * i + k] * w[b * i + k]).sum();
                assert_eq!(dot, if a == b { 2.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn growing_orientation_gives_shrinking_layers_the_partial_identity() {
        // 4 -> 2 and 5 -> 3: (I_out, 0).
        assert_eq!(rule(2, 4, Orientation::Growing), Rule::PartialIdentity);
        assert_eq!(
            matrix(2, 4, Orientation::Growing),
            vec![1., 0., 0., 0., 0., 1., 0., 0.]
        );
        #[rustfmt::skip]
        let w53 = vec![
            1., 0., 0., 0., 0.,
            0., 1., 0., 0., 0.,
            0., 0., 1., 0., 0.,
        ];
        assert_eq!(matrix(3, 5, Orientation::Growing), w53);
    }

    #[test]
    fn growing_3_to_5_is_h3_truncated_and_halved() {
        // Growing orientation. m = ceil(log2 5) = 3, c = 2^{-1} = 0.5; rows
        // 0..5, columns 0..3 of H_3.
        assert_eq!(
            rule(5, 3, Orientation::Growing),
            Rule::Hadamard { m: 3, scale: 0.5 }
        );
        #[rustfmt::skip]
        let want = vec![
            0.5,  0.5,  0.5,
            0.5, -0.5,  0.5,
            0.5,  0.5, -0.5,
            0.5, -0.5, -0.5,
            0.5,  0.5,  0.5,
        ];
        assert_eq!(matrix(5, 3, Orientation::Growing), want);
    }

    #[test]
    fn growing_2_to_4_scales_by_one_over_root_two() {
        // Growing orientation. m = 2, c = 2^{-1/2}: columns 0..2 of H_2.
        let c = std::f32::consts::FRAC_1_SQRT_2;
        assert_eq!(
            matrix(4, 2, Orientation::Growing),
            vec![c, c, c, -c, c, c, c, -c]
        );
        // 1 -> 2: m = 1, c = 1.
        assert_eq!(matrix(2, 1, Orientation::Growing), vec![1., 1.]);
    }

    #[test]
    fn growing_to_a_power_of_two_keeps_h_columns_orthogonal() {
        // Growing orientation, 3 -> 8: the 3 columns of c·H_3 are orthogonal
        // with norm² 8c² = 2 (c = 1/2): ZerO's scale doubles the energy a
        // ReLU halves.
        let (o, i) = (8, 3);
        let w = matrix(o, i, Orientation::Growing);
        for a in 0..i {
            for b in 0..i {
                let dot: f32 = (0..o).map(|r| w[r * i + a] * w[r * i + b]).sum();
                assert_eq!(dot, if a == b { 2.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn conv_shrinking_puts_h2_rows_at_the_kernel_centre() {
        // 4 -> 2 channels, 3x3, shrinking: tap (1,1) = index 4 holds
        // 2^{-1/2}·H_2 rows 0..2, every other tap 0.
        let c = std::f32::consts::FRAC_1_SQRT_2;
        let block = [[c, c, c, c], [c, -c, c, -c]];
        let w = conv_kernel(2, 4, [3, 3], 1, Orientation::Shrinking);
        for o in 0..2 {
            for i in 0..4 {
                for t in 0..9 {
                    let want = if t == 4 { block[o][i] } else { 0.0 };
                    assert_eq!(w[(o * 4 + i) * 9 + t], want, "tap {t} of ({o},{i})");
                }
            }
        }
        // Grouped: 8 -> 4 in 2 groups, each 4 -> 2 with m from the group's
        // 4 inputs (m = 2), not the conv's 8.
        assert_eq!(
            conv_rule(4, 4, 2, Orientation::Shrinking),
            Rule::Hadamard { m: 2, scale: c }
        );
        let g = conv_kernel(4, 4, [1, 1], 2, Orientation::Shrinking);
        let want: Vec<f32> = block.iter().chain(&block).flatten().copied().collect();
        assert_eq!(g, want);
        // Growing channels under the default: the partial identity at the centre.
        let p = conv_kernel(3, 2, [1, 1], 1, Orientation::Shrinking);
        assert_eq!(p, vec![1., 0., 0., 1., 0., 0.]);
    }

    #[test]
    fn conv_sets_only_the_kernel_centre() {
        // Growing orientation, 2 -> 3 channels, 3x3: centre tap (1,1) holds
        // rule(3, 2) = c·H_2 rows 0..3.
        let w = conv_kernel(3, 2, [3, 3], 1, Orientation::Growing);
        let m = matrix(3, 2, Orientation::Growing);
        for o in 0..3 {
            for i in 0..2 {
                for t in 0..9 {
                    let v = w[(o * 2 + i) * 9 + t];
                    if t == 4 {
                        assert_eq!(v, m[o * 2 + i]);
                    } else {
                        assert_eq!(v, 0.0, "tap {t} of ({o},{i})");
                    }
                }
            }
        }
        assert_eq!(w.iter().filter(|v| **v != 0.0).count(), 6);
    }

    #[test]
    fn even_kernels_use_the_lower_right_middle_tap() {
        // 1 -> 1 channel, 4x2 kernel: tap (2, 1) of a [4, 2] grid = index 5.
        let w = conv_kernel(1, 1, [4, 2], 1, Orientation::default());
        let mut want = vec![0.0; 8];
        want[5] = 1.0;
        assert_eq!(w, want);
    }

    #[test]
    fn grouped_convs_get_one_matrix_per_group() {
        // Growing orientation, 4 in, 6 out, 2 groups: each group maps 2 inputs
        // to 3 outputs with rule(3, 2) = 2^{-1/2}·H_2 truncated; 1x1 kernel.
        let w = conv_kernel(6, 2, [1, 1], 2, Orientation::Growing);
        let m = matrix(3, 2, Orientation::Growing);
        let mut want = m.clone();
        want.extend(&m);
        assert_eq!(w, want);
        // Depthwise (groups = channels): the identity per channel, in
        // either orientation.
        for or in [Orientation::Shrinking, Orientation::Growing] {
            let d = conv_kernel(3, 1, [3, 3], 3, or);
            for ch in 0..3 {
                for t in 0..9 {
                    assert_eq!(d[ch * 9 + t], if t == 4 { 1.0 } else { 0.0 });
                }
            }
        }
    }
}
