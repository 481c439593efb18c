//! `maskforge train`: masked training of a model on labelled data, the
//! trained weights written under the source's names, layout and dtype.

use std::path::{Path, PathBuf};

use serde::Serialize;

use maskforge::error::{Error, Result};
use maskforge::io::data::Dataset;
use maskforge::train::optim::Optimizer;
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
    /// trained.safetensors or trained.onnx.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
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

impl Args {
    fn config(&self) -> Result<Config> {
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
            seed: self.model.seed,
            dtype: candle_core::DType::F32,
        })
    }
}

pub fn run(a: Args) -> Result<()> {
    maskforge::init::Format::of(&a.output)?;
    let cfg = a.config()?;
    let m = a.model.load()?;
    let inputs: Vec<&Path> = m.files.iter().map(|p| p.as_path()).collect();
    super::check_outputs(&[Some(&a.output)], &inputs)?;
    let net = &m.network;
    let masks = m
        .masks(a.masks.as_deref())
        .map_err(super::flag("--masks"))?;
    let shape = net.values[net.inputs[0]].shape.clone();
    let classes = net.values[net.outputs[0]].numel();
    let load = |spec: &str, flag: &'static str| -> Result<Dataset> {
        let mut d =
            Dataset::load(spec, &shape, classes, a.model.seed).map_err(super::flag(flag))?;
        a.normalization.apply(&mut d)?;
        Ok(d)
    };
    let data = load(&a.data, "--data")?;
    let (data, held_out, kind) = match (&a.test, a.val_fraction) {
        (Some(t), _) => (data, Some(load(t, "--test")?), Some("test")),
        (None, Some(f)) => {
            let (tr, va) = maskforge::train::split(&data, f, a.model.seed)
                .map_err(super::flag("--val-fraction"))?;
            (tr, Some(va), Some("validation"))
        }
        (None, None) => (data, None, None),
    };
    let bar = epoch_bar();
    let json = a.json;
    let mut report = |p: Progress| {
        if p.batch == 1 {
            bar.reset();
            bar.set_length(p.batches as u64);
            bar.set_prefix(format!("epoch {}/{}", p.epoch + 1, cfg.epochs));
        }
        bar.set_position(p.batch as u64);
    };
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
        optimizer: match a.optimizer {
            OptimizerArg::Adam => "adam",
            OptimizerArg::Sgd => "sgd",
        },
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

fn epoch_bar() -> indicatif::ProgressBar {
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
