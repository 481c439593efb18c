//! Data movement by an explicit element map ([`IndexMap`]): Slice, Gather,
//! Split, Expand, Tile, Pad, Resize, DepthToSpace, a Where with a constant
//! condition and a transposed convolution's zero insertion, all as
//!
//! `out[e] = sum_k weight[e * taps + k] * src[index[e * taps + k]]`
//!
//! with `src` the per-sample concatenation of every input (row-major)
//! followed by the map's constants, broadcast over the batch. One
//! `index_select` along the flattened per-sample axis reads every tap; the
//! weights multiply and the taps are summed. candle differentiates it
//! (`index_select`'s backward is `index_add`: each source element gets the
//! sum of the weighted gradients of the outputs that read it).
//!
//! The index and weight tensors are built once per node ([`Gather::new`]),
//! not per pass.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use maskforge::autodiff::ops::gather::Gather;
//! use maskforge::graph::index_map::{pad, PadMode};
//! // Constant-pad a row of 2 by one 7 on each side.
//! let (map, shape) = pad(&[2], &[1], &[1], PadMode::Constant(7.0)).unwrap();
//! let g = Gather::new(&map, DType::F64, &Device::Cpu).unwrap();
//! let x = Tensor::new(&[[1.0f64, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
//! let y = g.forward(&[x], &shape).unwrap();
//! assert_eq!(y.to_vec2::<f64>().unwrap(), [[7.0, 1.0, 2.0, 7.0], [7.0, 3.0, 4.0, 7.0]]);
//! ```

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::graph::op::IndexMap;

/// An [`IndexMap`] ready to run on a device.
pub struct Gather {
    /// Source index of every tap, `[len * taps]`, `u32`.
    index: Tensor,
    /// Tap weights `[len, taps]`; `None` when all are 1.
    weight: Option<Tensor>,
    /// The constants `[1, consts]`; `None` when there are none.
    consts: Option<Tensor>,
    /// The constants as the linearised network reads them, where they
    /// differ: a masked attention score (`f32::MIN`, which a softmax turns
    /// into weight 0) carries no flow there, so it reads 0 instead of a
    /// value that a sum over the axis would overflow on.
    linear_consts: Option<Tensor>,
    taps: usize,
    len: usize,
}

impl Gather {
    pub fn new(map: &IndexMap, dtype: DType, device: &Device) -> Result<Self> {
        let (taps, len) = (map.taps.max(1), map.len());
        let index = Tensor::from_slice(map.index.as_slice(), map.index.len(), device)?;
        let weight = match &map.weight {
            Some(w) => {
                Some(Tensor::from_slice(w.as_slice(), (len, taps), device)?.to_dtype(dtype)?)
            }
            None => None,
        };
        let row = |c: &[f32]| -> Result<Option<Tensor>> {
            Ok(Some(
                Tensor::from_slice(c, (1, c.len()), device)?.to_dtype(dtype)?,
            ))
        };
        let consts = if map.consts.is_empty() {
            None
        } else {
            row(&map.consts)?
        };
        let masked = |c: f32| c == f32::MIN || c == f32::NEG_INFINITY;
        let linear_consts = if map.consts.iter().any(|&c| masked(c)) {
            let c: Vec<f32> = map
                .consts
                .iter()
                .map(|&c| if masked(c) { 0.0 } else { c })
                .collect();
            row(&c)?
        } else {
            None
        };
        Ok(Self {
            index,
            weight,
            consts,
            linear_consts,
            taps,
            len,
        })
    }

    /// [`Gather::forward`] on the linearised network (SynFlow's): masked
    /// entries read 0.
    pub fn forward_linear(&self, ins: &[Tensor], shape: &[usize]) -> Result<Tensor> {
        self.apply(
            ins,
            shape,
            self.linear_consts.as_ref().or(self.consts.as_ref()),
        )
    }

    /// The map applied to the batched inputs `ins` (`[N, ...]` each), as
    /// `[N, ...shape]`.
    pub fn forward(&self, ins: &[Tensor], shape: &[usize]) -> Result<Tensor> {
        self.apply(ins, shape, self.consts.as_ref())
    }

    fn apply(&self, ins: &[Tensor], shape: &[usize], consts: Option<&Tensor>) -> Result<Tensor> {
        let n = ins[0].dim(0)?;
        let mut parts = ins
            .iter()
            .map(|t| t.flatten_from(1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if let Some(c) = consts {
            let c = c.to_dtype(parts[0].dtype())?;
            parts.push(c.broadcast_as((n, c.dim(1)?))?.contiguous()?);
        }
        let src = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(&parts, 1)?
        };
        let mut y = src.index_select(&self.index, 1)?;
        if self.taps > 1 || self.weight.is_some() {
            y = y.reshape((n, self.len, self.taps))?;
            if let Some(w) = &self.weight {
                y = y.broadcast_mul(&w.to_dtype(y.dtype())?)?;
            }
            y = y.sum(2)?;
        }
        let mut out = vec![n];
        out.extend(shape);
        Ok(y.reshape(out)?)
    }
}
