//! Masked training (`maskforge train`): minibatch gradient descent on a
//! (pruned) network with our executor and reverse pass
//! ([`crate::autodiff::backward::parameter_gradients`]).
//!
//! Trained: every prunable layer's weight (canonical layout, times its
//! mask in the forward pass) and the layers' biases; every other stored
//! tensor stays as the source has it. Pruned weights are set to 0 before
//! the first step and their gradients and optimiser state are forced to
//! 0 ([`optim`]), so they are exactly 0 throughout and in the file
//! written. Networks with BatchNorm are refused for now: their running
//! statistics would need updating.
//!
//! Each epoch visits the training samples in an order drawn from the
//! stream `(seed, "train-shuffle", epoch)` ([`crate::rng`]), at the rate of
//! its [`schedule`] and the label smoothing of its epoch ([`smoothing`]),
//! and ends with the held-out set's accuracy and loss. The same inputs and
//! seed give bit-identical weights.
//!
//! ```
//! use maskforge::{zoo, io::data::Dataset, train::{train, Config}};
//! let net = zoo::build("mlp:4-8-3", 0).unwrap();
//! let data = Dataset::load("synthetic:40", &[4], 3, 0).unwrap();
//! let cfg = Config { epochs: 2, batch_size: 8, ..Config::default() };
//! let r = train(&net, None, &data, Some(&data), &cfg, &mut |_| {}).unwrap();
//! assert_eq!(r.log.len(), 2);
//! assert!(r.log[1].train_loss.is_finite() && r.log[1].held_out.is_some());
//! ```

pub mod mask_learning;
pub mod optim;
pub mod pipeline;
pub mod pswish;
pub mod schedule;
pub mod smoothing;

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::autodiff::backward::parameter_gradients;
use crate::autodiff::executor::{Executor, Mode};
use crate::error::{Error, Result};
use crate::graph::op::{Norm, Op};
use crate::graph::tensor::ConstTensor;
use crate::graph::Network;
use crate::io::data::Dataset;
use crate::mask::MaskSet;
use mask_learning::{MaskLearning, MaskStats};
use optim::{Optimizer, Param, Real, State};
use schedule::Schedule;

/// Hyperparameters of a run. The defaults train LeNet-300-100 and
/// LeNet-5 on MNIST well: Adam at 1e-3, batches of 64, 10 epochs, cosine
/// decay, no label smoothing.
#[derive(Clone, Debug)]
pub struct Config {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    /// Initial label smoothing `a_0` and its decay time in epochs.
    pub label_smoothing: f64,
    pub smoothing_epochs: usize,
    /// Train every ReLU as PSwish with this temperature schedule.
    pub pswish: Option<pswish::PSwish>,
    pub seed: u64,
    /// f32 (the default) or f64 (for checks against finite differences).
    pub dtype: DType,
    /// Learn a sparsity mask alongside the weights ([`mask_learning`]) and
    /// write `theta * M`: the pipeline's pre-pruning training.
    pub mask_learning: Option<MaskLearning>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            optimizer: Optimizer::adam(0.0),
            schedule: Schedule::Cosine,
            label_smoothing: 0.0,
            smoothing_epochs: 0,
            pswish: None,
            seed: 0,
            dtype: DType::F32,
            mask_learning: None,
        }
    }
}

/// One epoch's figures.
#[derive(Clone, Debug, Serialize)]
pub struct EpochLog {
    /// From 1.
    pub epoch: usize,
    pub lr: f64,
    pub label_smoothing: f64,
    /// PSwish's temperature this epoch (with `--activation pswish`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pswish_beta: Option<f64>,
    /// Mean training loss over the epoch's batches (with smoothing), and
    /// the fraction of training samples classified right as they were seen.
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// Accuracy and mean cross-entropy on the held-out set, if any.
    pub held_out: Option<HeldOut>,
    /// Wall time of the epoch's training steps (not the evaluation).
    pub seconds: f64,
    /// With mask learning: the keep probabilities after the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<MaskStats>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct HeldOut {
    pub accuracy: f64,
    pub loss: f64,
}

/// Where a run is: called after every batch.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub epoch: usize,
    pub batch: usize,
    pub batches: usize,
}

/// A trained network (its stored tensors updated in their own names,
/// layouts and dtypes), the names rewritten, and the log.
pub struct Trained {
    pub network: Network,
    pub rewritten: Vec<String>,
    pub log: Vec<EpochLog>,
}

/// What a trained tensor is in the executor.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Weight(usize),
    Bias,
}

/// The keep probabilities of a mask-learning run, one per prunable layer.
struct Learned<T> {
    ml: MaskLearning,
    seed: u64,
    base_lr: f64,
    probs: Vec<(Param<T>, State<T>)>,
}

/// An executor and the optimiser's view of its parameters: one training
/// step at a time ([`Trainer::step`]); [`train`] runs the epochs.
pub struct Trainer<'a, T> {
    pub ex: Executor<'a>,
    masks: Option<&'a MaskSet>,
    params: Vec<(Slot, Param<T>, State<T>)>,
    optimizer: Optimizer,
    steps: u64,
    learned: Option<Learned<T>>,
}

impl<'a, T: Real> Trainer<'a, T> {
    /// A trainer in `T`'s dtype (f32 or f64) with its executor.
    pub fn new(net: &'a Network, masks: Option<&'a MaskSet>, optimizer: Optimizer) -> Result<Self> {
        let dtype = T::DTYPE;
        if let Some(n) = net
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Norm(Norm::BatchNorm { .. })))
        {
            return Err(Error::unsupported(format!(
                "training a network with BatchNorm (node '{}'): its running statistics are not updated yet",
                n.name
            )));
        }
        if let Some(m) = masks {
            if m.layers.len() != net.layers.len() {
                return Err(Error::internal("train: masks do not match the network"));
            }
        }
        let ex = Executor::new(net, &Device::Cpu, dtype)?;
        let mut params = Vec::new();
        for (li, w) in ex.weights.iter().enumerate() {
            let mask = masks.map(|m| {
                (0..m.layers[li].len())
                    .map(|i| m.layers[li].get(i))
                    .collect::<Vec<bool>>()
            });
            let values = host::<T>(w.as_tensor())?;
            let p = Param::new(&net.layers[li].name, values, mask);
            params.push((Slot::Weight(li), p));
        }
        for li in 0..net.layers.len() {
            let Some(b) = crate::init::bias_of(net, li) else {
                continue;
            };
            if params.iter().any(|(_, p)| p.name == b) {
                continue;
            }
            let t = ex
                .parameter(&b)
                .ok_or_else(|| Error::internal(format!("bias '{b}' missing")))?;
            let p = Param::new(&b, host::<T>(t)?, None);
            params.push((Slot::Bias, p));
        }
        let params = params
            .into_iter()
            .map(|(slot, p)| {
                let s = optimizer.state(&p);
                (slot, p, s)
            })
            .collect::<Vec<_>>();
        // Upload the weights with their pruned entries zeroed.
        for (slot, p, _) in &params {
            if let Slot::Weight(li) = slot {
                let w = &ex.weights[*li];
                w.set(&Tensor::from_slice(&p.values, w.dims(), &Device::Cpu)?)?;
            }
        }
        Ok(Self {
            ex,
            masks,
            params,
            optimizer,
            steps: 0,
            learned: None,
        })
    }

    /// From now on, learn a keep probability per weight (from 1/2; pruned
    /// weights at 0), sampling the weights used in each step from the
    /// streams of `seed` ([`mask_learning`]); `base_lr` is the weights'
    /// initial rate, against which a step's rate gives the schedule.
    pub fn learn_mask(&mut self, ml: MaskLearning, seed: u64, base_lr: f64) -> Result<()> {
        let mut probs = Vec::with_capacity(self.ex.weights.len());
        for (li, layer) in self.ex.weights.iter().enumerate() {
            let mask = self.masks.map(|m| {
                (0..m.layers[li].len())
                    .map(|i| m.layers[li].get(i))
                    .collect::<Vec<bool>>()
            });
            let p = Param::new(
                &format!("{li}"),
                vec![T::from_f64(0.5); layer.elem_count()],
                mask,
            );
            let s = self.optimizer.without_decay().state(&p);
            probs.push((p, s));
        }
        self.learned = Some(Learned {
            ml,
            seed,
            base_lr,
            probs,
        });
        for li in 0..self.ex.weights.len() {
            self.upload_expected(li)?;
        }
        Ok(())
    }

    /// The learned keep probabilities of layer `li` (canonical layout).
    pub fn mask_probabilities(&self, li: usize) -> Option<&[T]> {
        self.learned
            .as_ref()
            .map(|l| l.probs[li].0.values.as_slice())
    }

    /// Where the learned probabilities stand (with mask learning).
    pub fn mask_stats(&self) -> Option<MaskStats> {
        let l = self.learned.as_ref()?;
        let layers: Vec<&[T]> = l.probs.iter().map(|(p, _)| p.values.as_slice()).collect();
        Some(MaskStats::of(&l.ml, &layers))
    }

    /// Layer `li`'s weight param (its index in `params`).
    fn weight_param(&self, li: usize) -> Result<usize> {
        self.params
            .iter()
            .position(|(s, _, _)| matches!(s, Slot::Weight(l) if *l == li))
            .ok_or_else(|| Error::internal(format!("weight of layer {li} missing")))
    }

    /// The weights layer `li` uses outside a step: `theta`, or `theta * M`
    /// with mask learning.
    fn expected_weights(&self, li: usize) -> Result<Vec<T>> {
        let theta = &self.params[self.weight_param(li)?].1.values;
        Ok(match &self.learned {
            None => theta.clone(),
            Some(l) => theta
                .iter()
                .zip(&l.probs[li].0.values)
                .map(|(&t, &m)| t * m)
                .collect(),
        })
    }

    fn upload_expected(&self, li: usize) -> Result<()> {
        let values = self.expected_weights(li)?;
        self.upload(li, &values)
    }

    fn upload(&self, li: usize, values: &[T]) -> Result<()> {
        let w = &self.ex.weights[li];
        w.set(&Tensor::from_slice(values, w.dims(), &Device::Cpu)?)?;
        Ok(())
    }

    /// With mask learning: draw this step's weights, upload `theta * m`
    /// and return the draws per layer.
    fn draw_weights(&self) -> Result<Option<Vec<Vec<bool>>>> {
        let Some(l) = &self.learned else {
            return Ok(None);
        };
        let mut draws = Vec::with_capacity(l.probs.len());
        for (li, (probs, _)) in l.probs.iter().enumerate() {
            let name = &self.params[self.weight_param(li)?].1.name;
            let m = mask_learning::sample(&probs.values, l.seed, name, self.steps + 1);
            let theta = &self.params[self.weight_param(li)?].1.values;
            let zero = T::from_f64(0.0);
            let used: Vec<T> = theta
                .iter()
                .zip(&m)
                .map(|(&t, &k)| if k { t } else { zero })
                .collect();
            self.upload(li, &used)?;
            draws.push(m);
        }
        Ok(Some(draws))
    }

    /// The current values of a trained tensor (canonical layout), by name.
    pub fn values(&self, name: &str) -> Option<&[T]> {
        self.params
            .iter()
            .find(|(_, p, _)| p.name == name)
            .map(|(_, p, _)| p.values.as_slice())
    }

    /// One step on the batch `x`, `labels` (`u32`) at rate `lr` and label
    /// smoothing `alpha`; returns the batch's mean loss and how many of its
    /// samples were classified right (before the step).
    pub fn step(
        &mut self,
        x: &Tensor,
        labels: &[u32],
        lr: f64,
        alpha: f64,
    ) -> Result<(f64, usize)> {
        let n = labels.len();
        let mut loss = 0.0;
        let mut correct = 0;
        let seed = |logits: &Tensor| -> Result<Tensor> {
            let z = logits.flatten_from(1)?;
            let rows: Vec<Vec<f64>> = z.to_dtype(DType::F64)?.to_vec2()?;
            let mut g = Vec::with_capacity(rows.len() * rows.first().map_or(0, Vec::len));
            for (row, &y) in rows.iter().zip(labels) {
                let (l, d) = smoothing::loss_and_gradient(row, y as usize, alpha);
                loss += l;
                correct += usize::from(argmax(row) == y as usize);
                g.extend(d.into_iter().map(|v| v / n as f64));
            }
            let g = Tensor::from_vec(g, z.dims(), &Device::Cpu)?.to_dtype(logits.dtype())?;
            Ok(g.reshape(logits.dims())?)
        };
        let draws = self.draw_weights()?;
        let grads = parameter_gradients(&self.ex, x, self.masks, Mode::Train, seed)?;
        self.steps += 1;
        for (slot, p, s) in self.params.iter_mut() {
            let g = match slot {
                Slot::Weight(li) => grads.weights[*li].as_ref(),
                Slot::Bias => grads
                    .biases
                    .iter()
                    .find(|(b, _)| *b == p.name)
                    .map(|(_, g)| g),
            };
            let mut g = match g {
                Some(g) => host::<T>(g)?,
                None => vec![T::from_f64(0.0); p.values.len()],
            };
            if let (Slot::Weight(li), Some(l), Some(d)) = (&*slot, self.learned.as_mut(), &draws) {
                learn_step(
                    l,
                    *li,
                    &p.values,
                    &mut g,
                    &d[*li],
                    self.optimizer,
                    lr,
                    self.steps,
                );
            }
            self.optimizer.step(p, s, &g, lr, self.steps);
            match slot {
                Slot::Weight(li) => {
                    let values = match &self.learned {
                        None => p.values.clone(),
                        Some(l) => p
                            .values
                            .iter()
                            .zip(&l.probs[*li].0.values)
                            .map(|(&t, &m)| t * m)
                            .collect(),
                    };
                    let w = &self.ex.weights[*li];
                    w.set(&Tensor::from_slice(&values, w.dims(), &Device::Cpu)?)?;
                }
                Slot::Bias => {
                    let dims = self.ex.parameter(&p.name).map(|t| t.dims().to_vec());
                    let dims = dims.ok_or_else(|| Error::internal("bias missing"))?;
                    let t = Tensor::from_slice(&p.values, dims, &Device::Cpu)?;
                    self.ex.set_parameter(&p.name, &t)?;
                }
            }
        }
        Ok((loss / n.max(1) as f64, correct))
    }

    /// Accuracy and mean cross-entropy on every sample of `data`.
    pub fn evaluate(&self, data: &Dataset, batch_size: usize) -> Result<HeldOut> {
        let idx: Vec<usize> = (0..data.len()).collect();
        let (mut loss, mut correct) = (0.0, 0usize);
        for chunk in idx.chunks(batch_size.max(1)) {
            let (x, y) = batch(data, chunk)?;
            let z = self
                .ex
                .logits(&x, self.masks, Mode::Eval)?
                .flatten_from(1)?;
            let rows: Vec<Vec<f64>> = z.to_dtype(DType::F64)?.to_vec2()?;
            for (row, &label) in rows.iter().zip(&y) {
                loss += smoothing::loss_and_gradient(row, label as usize, 0.0).0;
                correct += usize::from(argmax(row) == label as usize);
            }
        }
        let n = data.len().max(1) as f64;
        Ok(HeldOut {
            accuracy: correct as f64 / n,
            loss: loss / n,
        })
    }

    /// The network with the trained values in its stored tensors (each in
    /// its source's layout and dtype; with mask learning the weights are
    /// `theta * M`), and their names.
    pub fn into_network(self, net: &Network) -> Result<(Network, Vec<String>)> {
        let mut out = net.clone();
        let mut rewritten = Vec::new();
        for (slot, p, _) in &self.params {
            let source = out
                .params
                .get(&p.name)
                .ok_or_else(|| Error::internal(format!("parameter '{}' missing", p.name)))?;
            let values = match slot {
                Slot::Weight(li) => self.expected_weights(*li)?,
                Slot::Bias => p.values.clone(),
            };
            let canon: Vec<f32> = values.iter().map(|&v| v.to_f64() as f32).collect();
            let stored = match slot {
                Slot::Weight(li) => crate::init::to_stored_order(&net.layers[*li], &canon),
                Slot::Bias => canon,
            };
            let t = ConstTensor::from_f32_as(source.shape.clone(), source.dtype(), &stored)?;
            out.params.insert(&p.name, t);
            rewritten.push(p.name.clone());
        }
        Ok((out, rewritten))
    }
}

/// Train `net` (with `masks`) on `data` for `cfg.epochs` epochs,
/// evaluating on `held_out` after each; `progress` is called after every
/// batch.
pub fn train(
    net: &Network,
    masks: Option<&MaskSet>,
    data: &Dataset,
    held_out: Option<&Dataset>,
    cfg: &Config,
    progress: &mut dyn FnMut(Progress),
) -> Result<Trained> {
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::input(
            "the batch size and the number of epochs must be positive",
        ));
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return Err(Error::input(format!(
            "learning rate {}: must be positive",
            cfg.lr
        )));
    }
    if !(0.0..=1.0).contains(&cfg.label_smoothing) {
        return Err(Error::input(format!(
            "label smoothing {}: must be in [0, 1]",
            cfg.label_smoothing
        )));
    }
    match cfg.dtype {
        DType::F32 => run::<f32>(net, masks, data, held_out, cfg, progress),
        DType::F64 => run::<f64>(net, masks, data, held_out, cfg, progress),
        d => Err(Error::input(format!("training in {d:?}: f32 or f64 only"))),
    }
}

fn run<T: Real>(
    net: &Network,
    masks: Option<&MaskSet>,
    data: &Dataset,
    held_out: Option<&Dataset>,
    cfg: &Config,
    progress: &mut dyn FnMut(Progress),
) -> Result<Trained> {
    let mut t = Trainer::<T>::new(net, masks, cfg.optimizer)?;
    if let Some(ml) = cfg.mask_learning {
        t.learn_mask(ml, cfg.seed, cfg.lr)?;
    }
    let mut log = Vec::with_capacity(cfg.epochs);
    let batches = data.len().div_ceil(cfg.batch_size);
    for epoch in 0..cfg.epochs {
        let lr = cfg.schedule.rate(cfg.lr, epoch, cfg.epochs);
        let alpha = smoothing::alpha(cfg.label_smoothing, epoch, cfg.smoothing_epochs);
        let beta = cfg.pswish.map(|p| p.beta(epoch));
        t.ex.set_pswish(beta);
        let mut order: Vec<usize> = (0..data.len()).collect();
        let key = crate::rng::stream_key(cfg.seed, "train-shuffle", &epoch.to_string());
        order.shuffle(&mut crate::rng::stream(key));
        let start = std::time::Instant::now();
        let (mut loss, mut correct) = (0.0, 0usize);
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let (x, y) = batch(data, chunk)?;
            let (l, c) = t.step(&x, &y, lr, alpha)?;
            if !l.is_finite() {
                return Err(Error::input(format!(
                    "the loss diverged ({l}) in epoch {} at rate {lr}: lower --lr",
                    epoch + 1
                )));
            }
            loss += l * chunk.len() as f64;
            correct += c;
            progress(Progress {
                epoch,
                batch: b + 1,
                batches,
            });
        }
        let seconds = start.elapsed().as_secs_f64();
        let held = held_out.map(|d| t.evaluate(d, 256)).transpose()?;
        log.push(EpochLog {
            epoch: epoch + 1,
            lr,
            label_smoothing: alpha,
            pswish_beta: beta,
            train_loss: loss / data.len() as f64,
            train_accuracy: correct as f64 / data.len() as f64,
            held_out: held,
            seconds,
            mask: t.mask_stats(),
        });
    }
    let (network, rewritten) = t.into_network(net)?;
    Ok(Trained {
        network,
        rewritten,
        log,
    })
}

/// `data` split into a training set and a held-out `fraction` of it
/// (rounded, at least one sample each), drawn from the stream
/// `(seed, "train-val-split")`; both keep the file's order.
pub fn split(data: &Dataset, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
    let n = data.len();
    let k = (fraction * n as f64).round() as usize;
    if !(fraction > 0.0 && fraction < 1.0) || k == 0 || k >= n {
        return Err(Error::input(format!(
            "{fraction}: must leave at least one sample on each side of the split of {n}"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut crate::rng::stream(crate::rng::stream_key(
        seed,
        "train-val-split",
        "",
    )));
    let (mut held, mut kept) = (order[..k].to_vec(), order[k..].to_vec());
    held.sort_unstable();
    kept.sort_unstable();
    let subset = |idx: &[usize]| {
        let (x, y) = data.batch(idx);
        Dataset {
            shape: data.shape.clone(),
            x,
            y,
        }
    };
    Ok((subset(&kept), subset(&held)))
}

/// The samples `idx` of `data` as an input tensor and labels.
fn batch(data: &Dataset, idx: &[usize]) -> Result<(Tensor, Vec<u32>)> {
    let (x, y) = data.batch(idx);
    let mut shape = vec![idx.len()];
    shape.extend(&data.shape);
    Ok((Tensor::from_vec(x, shape, &Device::Cpu)?, y))
}

/// The mask half of a step on layer `li` (straight-through, see
/// [`mask_learning`]): `M` moves by `g * theta + lambda1 (1 - 2M) +
/// lambda2` and is projected onto `[0, 1]`; `g`, the gradient of the
/// used weights `theta * m`, becomes `theta`'s (`g * m`).
#[allow(clippy::too_many_arguments)]
fn learn_step<T: Real>(
    l: &mut Learned<T>,
    li: usize,
    theta: &[T],
    g: &mut [T],
    draw: &[bool],
    optimizer: Optimizer,
    lr: f64,
    step: u64,
) {
    let (probs, state) = &mut l.probs[li];
    let grad_m: Vec<T> = g
        .iter()
        .zip(theta)
        .zip(&probs.values)
        .map(|((&gw, &t), &m)| gw * t + T::from_f64(l.ml.gradient(m.to_f64())))
        .collect();
    optimizer
        .without_decay()
        .step(probs, state, &grad_m, l.ml.lr * lr / l.base_lr, step);
    mask_learning::project(&mut probs.values);
    for (gw, &kept) in g.iter_mut().zip(draw) {
        if !kept {
            *gw = T::from_f64(0.0);
        }
    }
}

fn host<T: Real>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.flatten_all()?.to_dtype(T::DTYPE)?.to_vec1()?)
}

/// Index of the largest value, the first on ties.
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
