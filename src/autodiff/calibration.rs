//! Calibration batches: labelled samples already on the device the
//! executor runs on, shared by the data-driven scorers (SNIP, GraSP,
//! SNIP-it) and by OSSuM's forward pass.
//!
//! ```
//! use maskforge::autodiff::calibration::Calibration;
//! use maskforge::io::data::Dataset;
//! let data = Dataset::load("synthetic:5", &[1, 4, 4], 3, 0).unwrap();
//! let cal = Calibration::from_dataset(&data, &[0, 1, 2, 3, 4], 2, &candle_core::Device::Cpu).unwrap();
//! // Batches of 2, 2 and 1 samples, inputs [n, 1, 4, 4], labels [n].
//! let sizes: Vec<usize> = cal.batches.iter().map(|(x, _)| x.dims()[0]).collect();
//! assert_eq!(sizes, vec![2, 2, 1]);
//! assert_eq!(cal.batches[2].0.dims(), &[1, 1, 4, 4]);
//! ```

use candle_core::Tensor;

use crate::error::Result;

/// Calibration batches: inputs `[n, ...]` and `u32` labels `[n]`.
pub struct Calibration {
    pub batches: Vec<(Tensor, Tensor)>,
}

impl Calibration {
    /// The samples `idx` of `data`, in batches of `batch_size`, on `device`.
    pub fn from_dataset(
        data: &crate::io::data::Dataset,
        idx: &[usize],
        batch_size: usize,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let mut batches = Vec::new();
        for chunk in idx.chunks(batch_size.max(1)) {
            let (x, y) = data.batch(chunk);
            let mut shape = vec![chunk.len()];
            shape.extend(&data.shape);
            batches.push((
                Tensor::from_vec(x, shape, device)?,
                Tensor::from_vec(y, chunk.len(), device)?,
            ));
        }
        Ok(Self { batches })
    }
}
