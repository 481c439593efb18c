//! The pipeline paper's soft activation (Sec. 3.3): every ReLU trained as
//! PSwish `t * sigmoid(beta t)`, with `beta` moving linearly from `beta_0`
//! to `beta_max` over `T` epochs, `beta_t = beta_0 (1 - t/T) + beta_max t/T`,
//! and `beta_max` from epoch `T` on: smooth at first, close to the ReLU at
//! the end. The executor evaluates it ([`crate::autodiff::executor::Executor::set_pswish`]);
//! the file written keeps the source's ReLU graph.
//!
//! ```
//! use maskforge::train::pswish::PSwish;
//! let p = PSwish { beta0: 1.0, beta_max: 9.0, epochs: 4 };
//! assert_eq!(p.beta(0), 1.0);
//! assert_eq!(p.beta(2), 5.0);
//! assert_eq!(p.beta(4), 9.0);
//! assert_eq!(p.beta(7), 9.0);
//! ```

/// PSwish's temperature schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PSwish {
    pub beta0: f64,
    pub beta_max: f64,
    /// `T`: epochs from `beta0` to `beta_max`.
    pub epochs: usize,
}

impl PSwish {
    /// The temperature of epoch `epoch` (from 0).
    pub fn beta(&self, epoch: usize) -> f64 {
        if epoch >= self.epochs {
            return self.beta_max;
        }
        let t = epoch as f64 / self.epochs as f64;
        self.beta0 * (1.0 - t) + self.beta_max * t
    }
}
