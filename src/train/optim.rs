//! The optimisers: SGD with momentum and weight decay, and Adam, each as
//! PyTorch defines its update (`torch.optim.SGD` without dampening or
//! Nesterov, `torch.optim.Adam` with L2 weight decay added to the
//! gradient), on host copies of the parameters in the dtype trained in
//! (f32, as PyTorch's, or f64).
//!
//! A parameter may carry a mask: where it is 0 the value and every state
//! entry are set to 0 after each update (as if its gradient and weight
//! decay were 0 from a start at 0), so a pruned weight stays exactly 0.
//!
//! ```
//! use maskforge::train::optim::{Optimizer, Param};
//! let mut p = Param::new("w", vec![1.0f64, 2.0], Some(vec![true, false]));
//! let sgd = Optimizer::Sgd { momentum: 0.9, weight_decay: 0.0 };
//! let mut state = sgd.state(&p);
//! sgd.step(&mut p, &mut state, &[0.5, 7.0], 0.1, 1);
//! assert_eq!(p.values, vec![0.95, 0.0]);
//! sgd.step(&mut p, &mut state, &[0.5, 7.0], 0.1, 2);
//! // buf = 0.9 * 0.5 + 0.5 = 0.95
//! assert!((p.values[0] - 0.855).abs() < 1e-12);
//! assert_eq!(p.values[1], 0.0);
//! ```

/// The element types trained in.
pub trait Real: candle_core::WithDType {
    fn sqrt(self) -> Self;
}

impl Real for f32 {
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Real for f64 {
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// One trained tensor: its name, values (canonical layout for a layer's
/// weight) and the entries that must stay 0 (pruned).
#[derive(Clone, Debug)]
pub struct Param<T> {
    pub name: String,
    pub values: Vec<T>,
    /// Indices of the pruned entries.
    pruned: Vec<usize>,
}

impl<T: Real> Param<T> {
    /// `mask[i]` false: entry `i` is pruned (set to 0 here and kept so).
    pub fn new(name: &str, mut values: Vec<T>, mask: Option<Vec<bool>>) -> Self {
        let pruned: Vec<usize> = mask
            .map(|m| (0..m.len()).filter(|&i| !m[i]).collect())
            .unwrap_or_default();
        for &i in &pruned {
            values[i] = T::from_f64(0.0);
        }
        Self {
            name: name.to_string(),
            values,
            pruned,
        }
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
pub struct State<T> {
    first: Vec<T>,
    second: Vec<T>,
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

    /// The same rule without weight decay (for parameters that are not
    /// weights, such as learned mask probabilities).
    pub fn without_decay(self) -> Self {
        match self {
            Optimizer::Sgd { momentum, .. } => Optimizer::Sgd {
                momentum,
                weight_decay: 0.0,
            },
            Optimizer::Adam {
                beta1, beta2, eps, ..
            } => Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay: 0.0,
            },
        }
    }

    /// Zero state for `p`.
    pub fn state<T: Real>(&self, p: &Param<T>) -> State<T> {
        let n = p.values.len();
        State {
            first: vec![T::from_f64(0.0); n],
            second: match self {
                Optimizer::Adam { .. } => vec![T::from_f64(0.0); n],
                Optimizer::Sgd { .. } => Vec::new(),
            },
        }
    }

    /// One update of `p` by its gradient `grad` at rate `lr`; `t` is the
    /// step number from 1 (Adam's bias correction).
    pub fn step<T: Real>(&self, p: &mut Param<T>, s: &mut State<T>, grad: &[T], lr: f64, t: u64) {
        assert_eq!(grad.len(), p.values.len(), "gradient of '{}'", p.name);
        let c = T::from_f64;
        match *self {
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } => {
                let (wd, mom, lr) = (c(weight_decay), c(momentum), c(lr));
                let vals = p.values.iter_mut().zip(grad);
                if momentum == 0.0 {
                    for (v, &g) in vals {
                        *v -= lr * (g + wd * *v);
                    }
                } else {
                    // PyTorch's first step sets the buffer to g.
                    let keep = if t == 1 { T::from_f64(0.0) } else { mom };
                    for ((v, &g), b) in vals.zip(s.first.iter_mut()) {
                        *b = keep * *b + (g + wd * *v);
                        *v -= lr * *b;
                    }
                }
            }
            Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let c2 = c((1.0 - beta2.powf(t as f64)).sqrt());
                let step = c(lr / (1.0 - beta1.powf(t as f64)));
                let (b1, b2, eps, wd) = (c(beta1), c(beta2), c(eps), c(weight_decay));
                let (o1, o2) = (c(1.0 - beta1), c(1.0 - beta2));
                let state = s.first.iter_mut().zip(s.second.iter_mut());
                for ((v, &g), (m, q)) in p.values.iter_mut().zip(grad).zip(state) {
                    let g = g + wd * *v;
                    *m = b1 * *m + o1 * g;
                    *q = b2 * *q + o2 * g * g;
                    *v -= step * *m / (q.sqrt() / c2 + eps);
                }
            }
        }
        for &i in &p.pruned {
            p.values[i] = T::from_f64(0.0);
            s.first[i] = T::from_f64(0.0);
            if let Some(q) = s.second.get_mut(i) {
                *q = T::from_f64(0.0);
            }
        }
    }
}
