//! Learning-rate schedules, one rate per epoch (as PyTorch's schedulers
//! stepped once an epoch): constant, step decay at milestones, cosine
//! annealing to 0 over the run.
//!
//! ```
//! use maskforge::train::schedule::Schedule;
//! let step = Schedule::Step { milestones: vec![2, 4], gamma: 0.1 };
//! let lrs: Vec<f64> = (0..5).map(|e| step.rate(0.1, e, 5)).collect();
//! assert_eq!(lrs[..2], [0.1, 0.1]);
//! assert!((lrs[2] - 0.01).abs() < 1e-15 && (lrs[4] - 0.001).abs() < 1e-15);
//! let cos = Schedule::Cosine;
//! assert_eq!(cos.rate(0.1, 0, 4), 0.1);
//! assert!((cos.rate(0.1, 2, 4) - 0.05).abs() < 1e-15);
//! ```

/// How the learning rate changes from epoch to epoch.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// The base rate times `gamma` for each milestone epoch reached
    /// (PyTorch's `MultiStepLR`).
    Step { milestones: Vec<usize>, gamma: f64 },
    /// `base * (1 + cos(pi * epoch / epochs)) / 2` (PyTorch's
    /// `CosineAnnealingLR` with `T_max = epochs`, `eta_min = 0`).
    Cosine,
}

impl Schedule {
    /// The rate of epoch `epoch` (from 0) of a run of `epochs`.
    pub fn rate(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Step { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| m <= epoch).count();
                base * gamma.powi(passed as i32)
            }
            Schedule::Cosine => {
                let t = epoch as f64 / epochs.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}
