//! `maskforge train`: masked training of a model on labelled data, the
//! trained weights written under the source's names, layout and dtype.

use std::path::{Path, PathBuf};

use serde::Serialize;

use maskforge::error::{Error, Result};
use maskforge::io::data::Dataset;
use maskforge::train::mask_learning::MaskLearning;
use maskforge::train::optim::Optimizer;
use maskforge::train::pipeline::DEFAULT_MASK_LEARNING;
use maskforge::train::pswish::PSwish;
use maskforge::train::schedule::Schedule;
use maskforge::train::{train, Config, EpochLog, Progress};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Mask file: pruned weights are 0 and stay 0; without it, dense
    /// training (or the checkpoint's own `*_mask` tensors).
    #[arg(long)]
    pub masks: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Learn a sparsity mask alongside the weights (the pipeline paper's
    /// pre-pruning training, Sec. 3.1) and write `theta * M`.
    #[arg(long)]
    pub learn_mask: bool,
    #[command(flatten)]
    pub mask_learning: MaskLearningArgs,
    /// trained.safetensors or trained.onnx.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// The labelled data of a training run.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// Training data: x/y safetensors, IDX images (labels beside), CSV.
    #[arg(long)]
    pub data: String,
    /// Held-out data evaluated after every epoch (same formats).
    #[arg(long, conflicts_with = "val_fraction")]
    pub test: Option<String>,
    /// Hold out this fraction of --data (a seeded draw) instead of --test.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    #[command(flatten)]
    pub normalization: super::NormalizationArgs,
}

/// Training data, the held-out set if any, and what the held-out set is.
pub type Splits = (Dataset, Option<Dataset>, Option<&'static str>);

impl DataArgs {
    /// Load the data for `net`'s input and classes; `seed` draws the
    /// `--val-fraction` split.
    pub fn load(&self, net: &maskforge::graph::Network, seed: u64) -> Result<Splits> {
        let shape = net.values[net.inputs[0]].shape.clone();
        let classes = net.values[net.outputs[0]].numel();
        let load = |spec: &str, flag: &'static str| -> Result<Dataset> {
            let mut d = Dataset::load(spec, &shape, classes, seed).map_err(super::flag(flag))?;
            self.normalization.apply(&mut d)?;
            Ok(d)
        };
        let data = load(&self.data, "--data")?;
        Ok(match (&self.test, self.val_fraction) {
            (Some(t), _) => (data, Some(load(t, "--test")?), Some("test")),
            (None, Some(f)) => {
                let (tr, va) = maskforge::train::split(&data, f, seed)
                    .map_err(super::flag("--val-fraction"))?;
                (tr, Some(va), Some("validation"))
            }
            (None, None) => (data, None, None),
        })
    }
}

/// The optimisation settings of a training run.
#[derive(clap::Args, Debug)]
pub struct HyperArgs {
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    pub optimizer: OptimizerArg,
    /// Learning rate (default 1e-3 for Adam, 0.1 for SGD).
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD's momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// L2 weight decay added to the gradient (PyTorch's `weight_decay`).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    /// Epochs (from 0) at which `--schedule step` multiplies the rate by --gamma.
    #[arg(long, value_delimiter = ',')]
    pub milestones: Vec<usize>,
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// Initial label smoothing, decayed linearly to 0 over --smoothing-epochs.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Epochs over which label smoothing decays to 0 (default: --epochs).
    #[arg(long)]
    pub smoothing_epochs: Option<usize>,
    /// `pswish` trains every ReLU as the pipeline paper's PSwish
    /// `x * sigmoid(beta x)`, beta from --beta0 to --beta-max over
    /// --beta-epochs (the file written keeps the ReLU graph).
    #[arg(long, value_enum, default_value_t = ActivationArg::Relu)]
    pub activation: ActivationArg,
    /// PSwish's initial temperature.
    #[arg(long, default_value_t = 1.0)]
    pub beta0: f64,
    /// PSwish's final temperature.
    #[arg(long, default_value_t = 10.0)]
    pub beta_max: f64,
    /// Epochs over which PSwish's temperature rises to --beta-max (default: --epochs).
    #[arg(long)]
    pub beta_epochs: Option<usize>,
}

/// The regulariser of a learned mask: `lambda1 sum M(1-M) + lambda2 sum M`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct MaskLearningArgs {
    /// Weight of `sum M(1-M)` (pushes each keep probability to 0 or 1).
    #[arg(long, default_value_t = DEFAULT_LAMBDA1)]
    pub lambda1: f64,
    /// Weight of `sum M` (pushes keep probabilities to 0).
    #[arg(long, default_value_t = DEFAULT_LAMBDA2)]
    pub lambda2: f64,
    /// The keep probabilities' own learning rate (on the weights' schedule).
    #[arg(long, default_value_t = DEFAULT_MASK_LR)]
    pub mask_lr: f64,
}

// Chosen on a validation split of the 4 000 training digits (docs/pipeline.md).
const DEFAULT_LAMBDA1: f64 = DEFAULT_MASK_LEARNING.lambda1;
const DEFAULT_LAMBDA2: f64 = DEFAULT_MASK_LEARNING.lambda2;
const DEFAULT_MASK_LR: f64 = DEFAULT_MASK_LEARNING.lr;

impl MaskLearningArgs {
    /// The settings when `learn` is set. Lambda flags without it are an
    /// error: they would silently do nothing.
    pub fn settings_if(&self, learn: bool) -> Result<Option<MaskLearning>> {
        if learn {
            return self.settings().map(Some);
        }
        let given = self.lambda1 != DEFAULT_LAMBDA1
            || self.lambda2 != DEFAULT_LAMBDA2
            || self.mask_lr != DEFAULT_MASK_LR;
        if given {
            return Err(Error::input(
                "--lambda1, --lambda2 and --mask-lr need --learn-mask",
            ));
        }
        Ok(None)
    }

    pub fn settings(&self) -> Result<MaskLearning> {
        if !(self.mask_lr > 0.0 && self.mask_lr.is_finite()) {
            return Err(Error::input(format!(
                "--mask-lr {}: must be positive",
                self.mask_lr
            )));
        }
        for (flag, v) in [("--lambda1", self.lambda1), ("--lambda2", self.lambda2)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::input(format!("{flag} {v}: must be 0 or positive")));
            }
        }
        Ok(MaskLearning {
            lambda1: self.lambda1,
            lambda2: self.lambda2,
            lr: self.mask_lr,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerArg {
    Adam,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ActivationArg {
    /// The network's own activations.
    Relu,
    Pswish,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    Constant,
    Step,
    Cosine,
}

#[derive(Serialize)]
struct Summary<'a> {
    model: &'a str,
    output: String,
    train_samples: usize,
    held_out_samples: usize,
    /// `test` (--test), `validation` (--val-fraction) or none.
    held_out: Option<&'static str>,
    optimizer: &'static str,
    lr: f64,
    batch_size: usize,
    seed: u64,
    epochs: &'a [EpochLog],
}

impl HyperArgs {
    /// The run's [`Config`] (no mask learning), seeded by `seed`.
    pub fn config(&self, seed: u64) -> Result<Config> {
        let optimizer = match self.optimizer {
            OptimizerArg::Adam => Optimizer::adam(self.weight_decay),
            OptimizerArg::Sgd => Optimizer::Sgd {
                momentum: self.momentum,
                weight_decay: self.weight_decay,
            },
        };
        let schedule = match self.schedule {
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Step if self.milestones.is_empty() => {
                return Err(Error::input("--schedule step needs --milestones, e.g. 5,8"))
            }
            ScheduleArg::Step => Schedule::Step {
                milestones: self.milestones.clone(),
                gamma: self.gamma,
            },
        };
        let lr = self.lr.unwrap_or(match self.optimizer {
            OptimizerArg::Adam => 1e-3,
            OptimizerArg::Sgd => 0.1,
        });
        Ok(Config {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr,
            optimizer,
            schedule,
            label_smoothing: self.label_smoothing,
            smoothing_epochs: self.smoothing_epochs.unwrap_or(self.epochs),
            pswish: (self.activation == ActivationArg::Pswish).then_some(PSwish {
                beta0: self.beta0,
                beta_max: self.beta_max,
                epochs: self.beta_epochs.unwrap_or(self.epochs),
            }),
            seed,
            dtype: candle_core::DType::F32,
            mask_learning: None,
        })
    }

    pub fn optimizer_name(&self) -> &'static str {
        match self.optimizer {
            OptimizerArg::Adam => "adam",
            OptimizerArg::Sgd => "sgd",
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    maskforge::init::Format::of(&a.output)?;
    let mut cfg = a.hyper.config(a.model.seed)?;
    cfg.mask_learning = a.mask_learning.settings_if(a.learn_mask)?;
    let m = a.model.load()?;
    let inputs: Vec<&Path> = m.files.iter().map(|p| p.as_path()).collect();
    super::check_outputs(&[Some(&a.output)], &inputs)?;
    let net = &m.network;
    let masks = m
        .masks(a.masks.as_deref())
        .map_err(super::flag("--masks"))?;
    let (data, held_out, kind) = a.data.load(net, a.model.seed)?;
    let bar = epoch_bar();
    let json = a.json;
    let mut report = bar_reporter(&bar, "", cfg.epochs);
    let r = train(
        net,
        masks.as_ref(),
        &data,
        held_out.as_ref(),
        &cfg,
        &mut report,
    )?;
    bar.finish_and_clear();
    // As `init`: only a model read from an ONNX file keeps its graph.
    let onnx_source = m
        .files
        .first()
        .filter(|_| a.model.model.to_ascii_lowercase().ends_with(".onnx"));
    maskforge::init::write_network(
        &a.output,
        &inputs,
        &r.network,
        &r.rewritten,
        onnx_source.map(|p| p.as_path()),
    )?;
    let summary = Summary {
        model: &a.model.model,
        output: a.output.display().to_string(),
        train_samples: data.len(),
        held_out_samples: held_out.as_ref().map_or(0, Dataset::len),
        held_out: kind,
        optimizer: a.hyper.optimizer_name(),
        lr: cfg.lr,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        epochs: &r.log,
    };
    if json {
        return super::print_json(&summary);
    }
    print_table(&summary);
    Ok(())
}

/// A progress callback drawing on `bar`, its prefix `label` + the epoch.
pub fn bar_reporter<'b>(
    bar: &'b indicatif::ProgressBar,
    label: &'b str,
    epochs: usize,
) -> impl FnMut(Progress) + 'b {
    move |p: Progress| {
        if p.batch == 1 {
            bar.reset();
            bar.set_length(p.batches as u64);
            bar.set_prefix(format!("{label}epoch {}/{epochs}", p.epoch + 1));
        }
        bar.set_position(p.batch as u64);
    }
}

pub fn epoch_bar() -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batches")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn print_table(s: &Summary) {
    let held = s.held_out.unwrap_or("held-out");
    println!(
        "{:>5} {:>10} {:>9} {:>10} {:>9} {:>10} {:>9} {:>8}",
        "epoch",
        "lr",
        "smoothing",
        "train loss",
        "train acc",
        &format!("{held} loss"),
        &format!("{held} acc"),
        "seconds"
    );
    for e in s.epochs {
        let (l, acc) = e.held_out.map_or(("-".into(), "-".into()), |h| {
            (format!("{:.4}", h.loss), format!("{:.4}", h.accuracy))
        });
        println!(
            "{:>5} {:>10.3e} {:>9.3} {:>10.4} {:>9.4} {:>10} {:>9} {:>8.2}",
            e.epoch, e.lr, e.label_smoothing, e.train_loss, e.train_accuracy, l, acc, e.seconds
        );
    }
    println!(
        "trained {} on {} samples for {} epochs; wrote {}",
        s.model,
        s.train_samples,
        s.epochs.len(),
        s.output
    );
}
