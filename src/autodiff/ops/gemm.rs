//! Strided matrix products on host slices with the `gemm` crate: the
//! kernel under [`super::conv`], and the dense layers' products in
//! training ([`product`]), which run on one thread when they are small.
//!
//! Why a size rule: candle's `matmul` hands every product to rayon's pool.
//! For LeNet-300-100's training step (batch 64, at most 64 x 784 x 300
//! multiply-adds) waking the second thread costs more than it saves: a
//! training epoch took 0.13 s on two threads against 0.08 s on one
//! (`scripts/bench-train.sh`, same run).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use maskforge::autodiff::ops::gemm::product;
//! let a = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
//! let b = Tensor::new(&[[5f32, 6.], [7., 8.]], &Device::Cpu).unwrap();
//! // Transposed views are read through their strides, not copied.
//! let p = product(&a.t().unwrap(), &b).unwrap();
//! assert_eq!(p.to_vec2::<f32>().unwrap(), [[26., 30.], [38., 44.]]);
//! ```

use candle_core::{DType, Device, Layout, Storage, Tensor, WithDType};
use gemm::Parallelism;

use crate::error::{Error, Result};

/// Products with fewer multiply-adds than this run on one thread.
pub const SERIAL_BELOW: usize = 1 << 24;

/// `a . b` for 2-D tensors (any strides), not tracked by candle's
/// autograd: f32 and f64 on the CPU below [`SERIAL_BELOW`] on one thread,
/// everything else through candle's `matmul`.
pub fn product(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ((m, k), (k2, n)) = (a.dims2()?, b.dims2()?);
    if k != k2 {
        return Err(Error::internal(format!(
            "product of {:?} and {:?}",
            a.dims(),
            b.dims()
        )));
    }
    let small = m * n * k < SERIAL_BELOW;
    let host = a.device().is_cpu() && b.device().is_cpu() && a.dtype() == b.dtype();
    match a.dtype() {
        DType::F32 if small && host => serial::<f32>(a, b, m, n, k),
        DType::F64 if small && host => serial::<f64>(a, b, m, n, k),
        _ => Ok(a.matmul(b)?),
    }
}

fn serial<T: WithDType>(a: &Tensor, b: &Tensor, m: usize, n: usize, k: usize) -> Result<Tensor> {
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (Storage::Cpu(ca), Storage::Cpu(cb)) = (&*sa, &*sb) else {
        return Ok(a.matmul(b)?);
    };
    let (da, db) = (T::cpu_storage_as_slice(ca)?, T::cpu_storage_as_slice(cb)?);
    let mut dst = vec![T::zero(); m * n];
    gemm(
        &mut dst,
        n,
        false,
        strided(da, la, m, k),
        strided(db, lb, k, n),
        Parallelism::None,
    );
    Ok(Tensor::from_vec(dst, (m, n), &Device::Cpu)?)
}

fn strided<'a, T>(data: &'a [T], l: &Layout, rows: usize, cols: usize) -> Mat<'a, T> {
    let st = l.stride();
    Mat {
        data: &data[l.start_offset()..],
        rows,
        cols,
        rs: st[0],
        cs: st[1],
    }
}

/// A read-only strided matrix: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<T> Mat<'_, T> {
    /// Whether every element lies inside `len` elements.
    fn fits(rows: usize, cols: usize, rs: usize, cs: usize, len: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
    }
}

/// `dst (= dst +) lhs . rhs`, `dst` row-major with row stride `ld`.
pub(crate) fn gemm<T: WithDType>(
    dst: &mut [T],
    ld: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    par: Parallelism,
) {
    let (m, n) = (lhs.rows, rhs.cols);
    assert!(Mat::<T>::fits(m, n, ld, 1, dst.len()));
    // SAFETY: `dst` holds the `m x n` block at row stride `ld` (asserted)
    // and, borrowed mutably, aliases neither operand.
    unsafe { product_into(dst.as_mut_ptr(), ld, accumulate, lhs, rhs, par) }
}

/// `lhs . rhs` as a new row-major `Vec` (`rows x cols`), written once by
/// the product: no zero fill first (for a SynFlow round's 15 M-weight
/// gradient, the fill was a fourteenth of the run).
pub(crate) fn gemm_fresh<T: WithDType>(lhs: Mat<T>, rhs: Mat<T>, par: Parallelism) -> Vec<T> {
    let len = lhs.rows * rhs.cols;
    let mut dst: Vec<T> = Vec::with_capacity(len);
    if lhs.cols == 0 {
        dst.resize(len, T::zero());
        return dst;
    }
    // SAFETY: `dst` has room for the `m x n` result at row stride `n` and
    // aliases neither operand; without `accumulate` gemm only writes it,
    // every element (the inner dimension is not empty), so it is
    // initialised before `set_len`.
    unsafe {
        product_into(dst.as_mut_ptr(), rhs.cols, false, lhs, rhs, par);
        dst.set_len(len);
    }
    dst
}

/// `dst (= dst +) lhs . rhs` through the `gemm` crate, the operands'
/// bounds checked.
///
/// # Safety
/// `dst` must be valid for writes (and for reads with `accumulate`) of the
/// `lhs.rows x rhs.cols` block at row stride `ld`, and alias neither operand.
unsafe fn product_into<T: WithDType>(
    dst: *mut T,
    ld: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    par: Parallelism,
) {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    assert_eq!(k, rhs.rows, "gemm: inner dimensions differ");
    assert!(Mat::<T>::fits(m, k, lhs.rs, lhs.cs, lhs.data.len()));
    assert!(Mat::<T>::fits(k, n, rhs.rs, rhs.cs, rhs.data.len()));
    if m == 0 || n == 0 {
        return;
    }
    let alpha = if accumulate { T::one() } else { T::zero() };
    // SAFETY: the operands' accesses stay inside their slices (asserted);
    // the caller vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            ld as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            alpha,
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against candle's matmul on plain, transposed and offset views.
    #[test]
    fn product_equals_candles_matmul_on_strided_views() {
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 1, 1), (3, 5, 2), (17, 9, 33), (64, 100, 10)] {
            let a = Tensor::randn(0f64, 1., (k + 2, m), &dev).unwrap();
            let b = Tensor::randn(0f64, 1., (k, n), &dev).unwrap();
            // `a` is read transposed and from its third row on.
            let at = a.narrow(0, 2, k).unwrap().t().unwrap();
            let want = at.contiguous().unwrap().matmul(&b).unwrap();
            let got = product(&at, &b).unwrap();
            let diff = (want - &got).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "{m}x{k}x{n}");
            let got32 = product(
                &at.to_dtype(DType::F32).unwrap(),
                &b.t().unwrap().to_dtype(DType::F32).unwrap().t().unwrap(),
            )
            .unwrap();
            let d32 = (got.to_dtype(DType::F32).unwrap() - got32)
                .unwrap()
                .abs()
                .unwrap();
            assert!(d32.max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-4);
        }
    }
}
