//! ZerO initialisation: deterministic weights made of zeros, ones and scaled
//! Hadamard entries (Zhao, Schäfer, Anandkumar 2022, "ZerO Initialization:
//! Initializing Neural Networks with only Zeros and Ones", Algorithm 1; used
//! as the pre-pruning initialisation of `papers/end-to-end-pruning-pipeline.txt`,
//! Sec. 3.1, Definitions 1-2 and Algorithm 1 there).
//!
//! For a weight matrix stored `[out, in]` (maskforge's canonical layout, as
//! PyTorch's `nn.Linear.weight`), with `y = W x`:
//!
//! - `out == in`: the identity `I`.
//! - `out < in` (the layer shrinks): the partial identity `I*_{out,in}`,
//!   `W[o][i] = 1` when `o == i`, else 0; inputs `out..in` start unused.
//! - `out > in` (the layer grows): `c · I*_{out,2^m} H_m I*_{2^m,in}` with
//!   `m = ceil(log2(out))`, `c = 2^{-(m-1)/2}` and `H_m` the Sylvester
//!   Hadamard matrix, i.e. `W[o][i] = c · H_m[o][i]`.
//!
//! Orientation: the ZerO paper writes `W_l ∈ R^{P_l × Q_l}` with `x_l = W_l
//! x_{l-1}` (rows = outputs), and its reference code applies the Hadamard
//! branch when `weight.size(0) > weight.size(1)`, i.e. when the layer grows.
//! The pipeline paper copies the algorithm but labels the matrix `n_l ×
//! n_{l+1}` (rows = inputs), which read literally would put the Hadamard on
//! shrinking layers. We follow ZerO: the Hadamard is what keeps the extra
//! outputs of a growing layer from starting at zero and staying tied (the
//! "training degeneracy" of ZerO's Theorem 1), which a shrinking layer does
//! not suffer. The matrix shape itself is the same under either reading: the
//! Hadamard always fills the tall case, rows > columns, with `m` taken from
//! the larger dimension. `c` follows both papers; ZerO's code divides by
//! `2^{m/2}` instead.
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
//! use maskforge::zero;
//! // 2 -> 4 grows: m = 2, c = 2^{-1/2}, the first two columns of H_2.
//! let c = 0.5f32.sqrt();
//! assert_eq!(
//!     zero::matrix(4, 2),
//!     vec![c, c, c, -c, c, c, c, -c]
//! );
//! // 3 -> 2 shrinks: the partial identity.
//! assert_eq!(zero::matrix(2, 3), vec![1., 0., 0., 0., 1., 0.]);
//! ```

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
pub fn rule(n_out: usize, n_in: usize) -> Rule {
    use std::cmp::Ordering::*;
    match n_out.cmp(&n_in) {
        Equal => Rule::Identity,
        Less => Rule::PartialIdentity,
        Greater => {
            let m = log2_ceil(n_out);
            Rule::Hadamard {
                m,
                scale: hadamard_scale(m),
            }
        }
    }
}

/// `ceil(log2(n))` for `n >= 1`.
pub fn log2_ceil(n: usize) -> u32 {
    assert!(n >= 1, "log2 of 0");
    usize::BITS - (n - 1).leading_zeros()
}

/// `c = 2^{-(m-1)/2}`, Algorithm 1's scale of `H_m`.
pub fn hadamard_scale(m: u32) -> f32 {
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
/// `(-1)^popcount(r & c)`. A layer growing to 50 000 outputs needs a few
/// columns of `H_16`, not its 2^32 entries.
pub fn hadamard_entry(r: usize, c: usize) -> f32 {
    if (r & c).count_ones().is_multiple_of(2) {
        1.0
    } else {
        -1.0
    }
}

/// Algorithm 1's `[out, in]` matrix, row-major.
pub fn matrix(n_out: usize, n_in: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; n_out * n_in];
    fill_matrix(n_out, n_in, |o, i, v| w[o * n_in + i] = v);
    w
}

/// Call `set(o, i, value)` for every nonzero entry of Algorithm 1's matrix.
fn fill_matrix(n_out: usize, n_in: usize, mut set: impl FnMut(usize, usize, f32)) {
    match rule(n_out, n_in) {
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
pub fn centre_tap(k: usize) -> usize {
    k / 2
}

/// A conv weight `[out, in/groups, kh, kw]`, row-major: per group, the
/// `[out/groups, in/groups]` matrix of Algorithm 1 at the kernel centre.
pub fn conv_kernel(
    out_channels: usize,
    in_per_group: usize,
    kernel: [usize; 2],
    groups: usize,
) -> Vec<f32> {
    let [kh, kw] = kernel;
    let taps = kh * kw;
    let centre = centre_tap(kh) * kw + centre_tap(kw);
    let out_per_group = out_channels / groups;
    let mut w = vec![0.0f32; out_channels * in_per_group * taps];
    for g in 0..groups {
        fill_matrix(out_per_group, in_per_group, |o, i, v| {
            let row = g * out_per_group + o;
            w[(row * in_per_group + i) * taps + centre] = v;
        });
    }
    w
}

/// The rule applied to each group's channel matrix of a conv.
pub fn conv_rule(out_channels: usize, in_per_group: usize, groups: usize) -> Rule {
    rule(out_channels / groups, in_per_group)
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
    fn equal_sizes_give_the_identity() {
        assert_eq!(matrix(3, 3), vec![1., 0., 0., 0., 1., 0., 0., 0., 1.]);
        assert_eq!(rule(3, 3), Rule::Identity);
    }

    #[test]
    fn shrinking_gives_the_partial_identity() {
        // 4 -> 2 and 5 -> 3: (I_out, 0).
        assert_eq!(matrix(2, 4), vec![1., 0., 0., 0., 0., 1., 0., 0.]);
        #[rustfmt::skip]
        let w53 = vec![
            1., 0., 0., 0., 0.,
            0., 1., 0., 0., 0.,
            0., 0., 1., 0., 0.,
        ];
        assert_eq!(matrix(3, 5), w53);
    }

    #[test]
    fn growing_3_to_5_is_h3_truncated_and_halved() {
        // m = ceil(log2 5) = 3, c = 2^{-1} = 0.5; rows 0..5, columns 0..3 of H_3.
        assert_eq!(rule(5, 3), Rule::Hadamard { m: 3, scale: 0.5 });
        #[rustfmt::skip]
        let want = vec![
            0.5,  0.5,  0.5,
            0.5, -0.5,  0.5,
            0.5,  0.5, -0.5,
            0.5, -0.5, -0.5,
            0.5,  0.5,  0.5,
        ];
        assert_eq!(matrix(5, 3), want);
    }

    #[test]
    fn growing_2_to_4_scales_by_one_over_root_two() {
        // m = 2, c = 2^{-1/2}: columns 0..2 of H_2.
        let c = std::f32::consts::FRAC_1_SQRT_2;
        assert_eq!(matrix(4, 2), vec![c, c, c, -c, c, c, c, -c]);
        // 1 -> 2: m = 1, c = 1.
        assert_eq!(matrix(2, 1), vec![1., 1.]);
    }

    #[test]
    fn growing_to_a_power_of_two_keeps_h_columns_orthogonal() {
        // 3 -> 8: the 3 columns of c·H_3 are orthogonal with norm² 8c² = 2
        // (c = 1/2): ZerO's scale doubles the energy a ReLU halves.
        let (o, i) = (8, 3);
        let w = matrix(o, i);
        for a in 0..i {
            for b in 0..i {
                let dot: f32 = (0..o).map(|r| w[r * i + a] * w[r * i + b]).sum();
                assert_eq!(dot, if a == b { 2.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn conv_sets_only_the_kernel_centre() {
        // 2 -> 3 channels, 3x3: centre tap (1,1) holds rule(3,2) = c·H_2 rows 0..3.
        let w = conv_kernel(3, 2, [3, 3], 1);
        let m = matrix(3, 2);
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
        let w = conv_kernel(1, 1, [4, 2], 1);
        let mut want = vec![0.0; 8];
        want[5] = 1.0;
        assert_eq!(w, want);
    }

    #[test]
    fn grouped_convs_get_one_matrix_per_group() {
        // 4 in, 6 out, 2 groups: each group maps 2 inputs to 3 outputs with
        // rule(3, 2) = 2^{-1/2}·H_2 truncated; 1x1 kernel.
        let w = conv_kernel(6, 2, [1, 1], 2);
        let m = matrix(3, 2);
        let mut want = m.clone();
        want.extend(&m);
        assert_eq!(w, want);
        // Depthwise (groups = channels): the identity per channel.
        let d = conv_kernel(3, 1, [3, 3], 3);
        for ch in 0..3 {
            for t in 0..9 {
                assert_eq!(d[ch * 9 + t], if t == 4 { 1.0 } else { 0.0 });
            }
        }
    }
}
