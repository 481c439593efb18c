//! The optimisers: SGD with momentum and weight decay, and Adam, each as
//! PyTorch defines its update (`torch.optim.SGD` without dampening or
//! Nesterov, `torch.optim.Adam` with L2 weight decay added to the
//! gradient), on host copies of the parameters in f64.
//!
//! A parameter may carry a mask: where it is 0 the gradient, the weight
//! decay term and every state entry are forced to 0 and the value is not
//! touched, so a pruned weight that starts at 0 stays exactly 0.
//!
//! ```
//! use maskforge::train::optim::{Optimizer, Param};
//! let mut p = Param::new("w", vec![1.0, 2.0], Some(vec![true, false]));
//! p.values[1] = 0.0;
//! let sgd = Optimizer::Sgd { momentum: 0.9, weight_decay: 0.0 };
//! let mut state = sgd.state(&p);
//! sgd.step(&mut p, &mut state, &[0.5, 7.0], 0.1, 1);
//! assert_eq!(p.values, vec![0.95, 0.0]);
//! sgd.step(&mut p, &mut state, &[0.5, 7.0], 0.1, 2);
//! // buf = 0.9 * 0.5 + 0.5 = 0.95
//! assert!((p.values[0] - 0.855).abs() < 1e-12);
//! assert_eq!(p.values[1], 0.0);
//! ```

/// One trained tensor: its name, values (canonical layout for a layer's
/// weight) and which entries may change (`None`: all).
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub values: Vec<f64>,
    pub mask: Option<Vec<bool>>,
}

impl Param {
    pub fn new(name: &str, values: Vec<f64>, mask: Option<Vec<bool>>) -> Self {
        Self {
            name: name.to_string(),
            values,
            mask,
        }
    }

    fn kept(&self, i: usize) -> bool {
        self.mask.as_ref().is_none_or(|m| m[i])
    }
}

/// An update rule and its hyperparameters (the rate comes per step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    Sgd {
        momentum: f64,
        weight_decay: f64,
    },
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

/// Per-parameter state: SGD's momentum buffer, Adam's two moments.
#[derive(Clone, Debug)]
pub struct State {
    first: Vec<f64>,
    second: Vec<f64>,
}

impl Optimizer {
    /// Adam with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8).
    pub fn adam(weight_decay: f64) -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// Zero state for `p`.
    pub fn state(&self, p: &Param) -> State {
        let n = p.values.len();
        State {
            first: vec![0.0; n],
            second: match self {
                Optimizer::Adam { .. } => vec![0.0; n],
                Optimizer::Sgd { .. } => Vec::new(),
            },
        }
    }

    /// One update of `p` by its gradient `grad` at rate `lr`; `t` is the
    /// step number from 1 (Adam's bias correction).
    // Four arrays indexed together read best by index.
    #[allow(clippy::needless_range_loop)]
    pub fn step(&self, p: &mut Param, s: &mut State, grad: &[f64], lr: f64, t: u64) {
        assert_eq!(grad.len(), p.values.len(), "gradient of '{}'", p.name);
        match *self {
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } => {
                for i in 0..grad.len() {
                    if !p.kept(i) {
                        s.first[i] = 0.0;
                        continue;
                    }
                    let g = grad[i] + weight_decay * p.values[i];
                    let d = if momentum != 0.0 {
                        // PyTorch's first step sets the buffer to g.
                        s.first[i] = if t == 1 { g } else { momentum * s.first[i] + g };
                        s.first[i]
                    } else {
                        g
                    };
                    p.values[i] -= lr * d;
                }
            }
            Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let c1 = 1.0 - beta1.powf(t as f64);
                let c2 = (1.0 - beta2.powf(t as f64)).sqrt();
                let step = lr / c1;
                for i in 0..grad.len() {
                    if !p.kept(i) {
                        s.first[i] = 0.0;
                        s.second[i] = 0.0;
                        continue;
                    }
                    let g = grad[i] + weight_decay * p.values[i];
                    s.first[i] = beta1 * s.first[i] + (1.0 - beta1) * g;
                    s.second[i] = beta2 * s.second[i] + (1.0 - beta2) * g * g;
                    let denom = s.second[i].sqrt() / c2 + eps;
                    p.values[i] -= step * s.first[i] / denom;
                }
            }
        }
    }
}
