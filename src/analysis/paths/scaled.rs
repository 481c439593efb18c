//! Path counts far beyond f64's range: a vector of f64 with one shared
//! power-of-two scale.
//!
//! Effective-path counts (Pham et al., node-path balancing,
//! papers/npb-node-path-balancing-abstract.txt) grow like the product of the
//! layer widths and leave f64 behind on deep networks. A [`Scaled`] value
//! stores element `i` as `data[i] * 2^exp2`: after every operation the data
//! are renormalised so that the largest lies in `[0.5, 1)`, and values of
//! different scales are aligned to the larger scale before they are added
//! (residual Adds, Concats). Multiplying by a power of two is exact in binary
//! floating point, so rescaling adds no rounding error; the only loss is an
//! element more than 2^1022 times smaller than the largest of its value,
//! which drops below f64's normal range. Such elements are counted
//! ([`Underflow`]) so that a caller can say the result may be low.
//!
//! ```
//! use maskforge::analysis::paths::scaled::{Scaled, Underflow};
//! let mut lost = Underflow::default();
//! // 3 * 2^2000 + 1 * 2^1999: far beyond f64, exact here.
//! let a = Scaled::new(vec![0.75], 2002, &mut lost);
//! let b = Scaled::new(vec![0.5], 2000, &mut lost);
//! let (parts, exp2) = Scaled::align(&[&a, &b], &mut lost);
//! let sum = Scaled::new(vec![parts[0][0] + parts[1][0]], exp2, &mut lost);
//! let expected = (3.5f64).log2() + 2000.0; // 3.5 * 2^2000
//! assert!((sum.log2_total() - expected).abs() < 1e-12);
//! assert_eq!(lost.0, 0);
//! ```

use std::borrow::Cow;

/// How many element counts fell below f64's normal range while being
/// rescaled (their precision was lost; zero in every zoo model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Underflow(pub usize);

/// Element `i` stands for `data[i] * 2^exp2`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaled {
    pub data: Vec<f64>,
    pub exp2: i64,
}

impl Scaled {
    /// `data * 2^exp2`, renormalised.
    pub fn new(data: Vec<f64>, exp2: i64, lost: &mut Underflow) -> Self {
        let mut s = Scaled { data, exp2 };
        s.normalize(lost);
        s
    }

    /// `n` elements of count 1 (an input: every element starts one path).
    pub fn ones(n: usize) -> Self {
        Scaled {
            data: vec![0.5; n],
            exp2: 1,
        }
    }

    /// True when no element has a path.
    pub fn is_zero(&self) -> bool {
        self.data.iter().all(|&x| x == 0.0)
    }

    /// Rescale by a power of two so that the largest element lies in
    /// `[0.5, 1)`; an all-zero value gets scale 0.
    pub fn normalize(&mut self, lost: &mut Underflow) {
        let max = self.data.iter().copied().fold(0.0, f64::max);
        if max == 0.0 {
            self.exp2 = 0;
            return;
        }
        let k = exponent(max);
        if k != 0 {
            scale_in_place(&mut self.data, -k, lost);
            self.exp2 += k;
        }
    }

    /// The data of every value in `values` rescaled to one common scale (the
    /// largest of the nonzero ones), and that scale's exponent.
    pub fn align<'a>(values: &[&'a Scaled], lost: &mut Underflow) -> (Vec<Cow<'a, [f64]>>, i64) {
        let top = values
            .iter()
            .filter(|v| !v.is_zero())
            .map(|v| v.exp2)
            .max()
            .unwrap_or(0);
        let parts = values
            .iter()
            .map(|v| {
                if v.exp2 == top || v.is_zero() {
                    Cow::Borrowed(v.data.as_slice())
                } else {
                    let mut d = v.data.clone();
                    scale_in_place(&mut d, v.exp2 - top, lost);
                    Cow::Owned(d)
                }
            })
            .collect();
        (parts, top)
    }

    /// log2 of the sum of all element counts (`-inf` when all are zero).
    pub fn log2_total(&self) -> f64 {
        let s: f64 = self.data.iter().sum();
        if s == 0.0 {
            f64::NEG_INFINITY
        } else {
            s.log2() + self.exp2 as f64
        }
    }
}

/// log2 of a sum of counts given as log2 values, without leaving log space.
pub fn log2_sum(logs: impl IntoIterator<Item = f64>) -> f64 {
    let logs: Vec<f64> = logs.into_iter().filter(|l| l.is_finite()).collect();
    let Some(top) = logs.iter().copied().reduce(f64::max) else {
        return f64::NEG_INFINITY;
    };
    top + logs.iter().map(|l| (l - top).exp2()).sum::<f64>().log2()
}

/// Multiply every element by `2^e`, counting positive elements that end
/// below the normal range.
fn scale_in_place(data: &mut [f64], e: i64, lost: &mut Underflow) {
    for x in data.iter_mut().filter(|x| **x != 0.0) {
        *x = ldexp(*x, e);
        if *x < f64::MIN_POSITIVE {
            lost.0 += 1;
        }
    }
}

/// `k` with `x = m * 2^k`, `m` in `[0.5, 1)`, for a positive finite `x`.
fn exponent(x: f64) -> i64 {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i64;
    if biased == 0 {
        // Subnormal: x = mantissa * 2^-1074.
        let mantissa = bits & ((1u64 << 52) - 1);
        (64 - mantissa.leading_zeros() as i64) - 1074
    } else {
        biased - 1022
    }
}

/// `2^e` exactly where f64 can hold it (subnormal powers included), else 0
/// or infinity.
fn pow2(e: i64) -> f64 {
    match e {
        e if e < -1074 => 0.0,
        e if e < -1022 => f64::from_bits(1u64 << (e + 1074)),
        e if e <= 1023 => f64::from_bits(((e + 1023) as u64) << 52),
        _ => f64::INFINITY,
    }
}

/// `x * 2^e`, in steps so that no factor overflows: exact unless the result
/// leaves the normal range.
fn ldexp(mut x: f64, mut e: i64) -> f64 {
    while e > 1000 {
        x *= pow2(1000);
        e -= 1000;
    }
    while e < -1000 && x != 0.0 {
        x *= pow2(-1000);
        e += 1000;
    }
    x * pow2(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponent_and_pow2_agree_with_the_definition() {
        for x in [1.0, 0.75, 0.5, 3.0, 1e300, 1e-300, 5e-324, 2.5e-310] {
            let k = exponent(x);
            let m = ldexp(x, -k);
            assert!((0.5..1.0).contains(&m), "{x}: {k} {m}");
            assert_eq!(ldexp(m, k), x);
        }
        assert_eq!(pow2(0), 1.0);
        assert_eq!(pow2(-1074), 5e-324);
        assert_eq!(pow2(-1075), 0.0);
        assert_eq!(pow2(1023), 2f64.powi(1023));
        // Multi-step scaling, up and down, stays exact.
        assert_eq!(ldexp(5e-324, 2000), 2f64.powi(926));
        assert_eq!(ldexp(2f64.powi(1000), -2000), 2f64.powi(-1000));
    }

    #[test]
    fn normalize_keeps_the_value_and_bounds_the_data() {
        let mut lost = Underflow::default();
        let s = Scaled::new(vec![3.0, 1.0, 0.0, 12.0], 5, &mut lost);
        assert_eq!(s.data, vec![0.1875, 0.0625, 0.0, 0.75]);
        assert_eq!(s.exp2, 9);
        assert!((s.log2_total() - (16.0f64.log2() + 5.0)).abs() < 1e-15);
        let z = Scaled::new(vec![0.0; 3], 7, &mut lost);
        assert_eq!((z.exp2, z.log2_total()), (0, f64::NEG_INFINITY));
        assert_eq!(lost.0, 0);
    }

    #[test]
    fn alignment_beyond_the_range_counts_the_loss() {
        let mut lost = Underflow::default();
        let big = Scaled::new(vec![0.5], 3000, &mut lost);
        let small = Scaled::new(vec![0.5, 0.25], 0, &mut lost);
        let (parts, top) = Scaled::align(&[&big, &small], &mut lost);
        assert_eq!(top, 3000);
        assert_eq!(parts[0][0], 0.5);
        assert_eq!(parts[1].as_ref(), &[0.0, 0.0]);
        assert_eq!(lost.0, 2);
        // A zero value never sets the scale.
        let zero = Scaled::new(vec![0.0], 0, &mut lost);
        assert_eq!(Scaled::align(&[&zero, &small], &mut lost).1, small.exp2);
    }

    #[test]
    fn log_sums() {
        let l = log2_sum([10.0, 10.0, f64::NEG_INFINITY]);
        assert!((l - 11.0).abs() < 1e-12);
        assert_eq!(log2_sum([]), f64::NEG_INFINITY);
        assert!((log2_sum([5000.0, 4999.0]) - (5000.0 + 1.5f64.log2())).abs() < 1e-9);
    }
}
