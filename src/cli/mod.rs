//! The command line (CONVENTIONS.md, "Command line"): argument parsing and the
//! subcommands, each a thin layer over the library. Flag names live here
//! only: library errors say what was wrong, and the command adds which flag
//! carried it ([`flag`]).

mod audit;
mod eval;
mod init;
mod inspect;
mod pipeline;
mod prune;
mod quotas;
mod sweep;
mod train;
mod zoo;

use std::path::Path;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};

use maskforge::error::{Error, Result};
use maskforge::io::maskfile::{MaskDType, MaskFormat, Naming};
use maskforge::methods::selection::Selection;
use maskforge::vocab::Named;

#[derive(Parser, Debug)]
#[command(
    name = "maskforge",
    version,
    about = "Pruning masks at initialization and effective-sparsity audits"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Direct vs effective sparsity per layer and in total.
    Audit(audit::Args),
    /// Accuracy of the (masked) network on labelled data, without training.
    Eval(eval::Args),
    /// Write the prunable weights re-initialised (ZerO or Kaiming) as .safetensors or .onnx.
    Init(init::Args),
    /// The layer graph as maskforge sees it, and any unsupported op.
    Inspect(inspect::Args),
    /// The end-to-end pruning pipeline: init, pre-pruning training with a
    /// learned mask, magnitude pruning, post-pruning training.
    Pipeline(pipeline::Args),
    /// Write a pruning mask: random (rpi, mica), magnitude/LAMP, gradient
    /// and flow scores (snip, grasp, synflow, snip-it) or neurons (ossum).
    Prune(prune::Args),
    /// Per-layer densities and counts of a quota.
    Quotas(quotas::Args),
    /// Prune over a range of compressions; CSV of direct vs effective figures, and plots.
    Sweep(sweep::Args),
    /// Masked training (SGD or Adam); writes the trained weights as .safetensors or .onnx.
    Train(train::Args),
    /// Built-in architectures.
    #[command(subcommand)]
    Zoo(zoo::ZooCommand),
}

/// Options shared by every command that reads a model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// zoo:NAME, model.onnx, weights.safetensors, *.safetensors.index.json, or a folder
    /// with model.safetensors (compressed-tensors sparse checkpoints included)
    pub model: String,
    /// Architecture for a safetensors checkpoint: model.onnx or zoo:NAME.
    #[arg(long)]
    pub arch: Option<String>,
    /// Seed of zoo weights (and of any randomness).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fix a symbolic ONNX input shape, batch first: NAME=1x3x224x224 (repeatable).
    #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = input_shape)]
    pub input_shape: Vec<(String, Vec<usize>)>,
}

/// `--include GLOB` / `--exclude GLOB`: the prunable layers a command
/// prunes or counts ([`maskforge::methods::selection`]).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SelectionArgs {
    /// Prune only weights whose name matches GLOB (repeatable; `*` crosses
    /// dots: '*.mlp.*', 'features.0.weight'). Default: every layer pruned by default.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Keep weights whose name matches GLOB dense (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
}

impl SelectionArgs {
    /// Whether any glob was given.
    pub fn given(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    /// The selection on `net`; errors name the flag that carried the glob.
    pub fn selection(&self, net: &maskforge::graph::Network) -> Result<Selection> {
        Selection::from_globs(net, &self.include, &[]).map_err(flag("--include"))?;
        Selection::from_globs(net, &self.include, &self.exclude).map_err(|e| {
            if self.exclude.is_empty() {
                e.context("--include")
            } else {
                e.context("--exclude")
            }
        })
    }
}

/// `NAME=1x3x224x224`.
fn input_shape(s: &str) -> std::result::Result<(String, Vec<usize>), String> {
    let (name, dims) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("'{s}': expected NAME=DIMS, e.g. images=1x3x640x640"))?;
    let dims: Vec<usize> = dims
        .split(['x', ','])
        .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            format!("'{dims}': dimensions must be positive integers separated by 'x'")
        })?;
    if name.is_empty() {
        return Err(format!("'{s}': the input name is empty"));
    }
    Ok((name.to_string(), dims))
}

impl ModelArgs {
    /// Reading options from `--input-shape`.
    pub fn read_options(&self) -> Result<maskforge::io::onnx::ReadOptions> {
        let mut o = maskforge::io::onnx::ReadOptions::default();
        for (name, dims) in &self.input_shape {
            if o.input_shapes.insert(name.clone(), dims.clone()).is_some() {
                return Err(Error::input(format!("--input-shape gives '{name}' twice")));
            }
        }
        Ok(o)
    }

    /// Load the model; errors about its architecture name `--arch`.
    pub fn load(&self) -> Result<maskforge::io::model::Loaded> {
        let options = self.read_options()?;
        maskforge::io::model::load_with(&self.model, self.arch.as_deref(), self.seed, &options)
            .map_err(|e| {
                if matches!(e.root(), Error::Architecture(_)) {
                    e.context("--arch")
                } else {
                    e
                }
            })
    }
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Audit(a) => audit::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Init(a) => init::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Quotas(a) => quotas::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Train(a) => train::run(a),
        Command::Pipeline(a) => pipeline::run(a),
        Command::Zoo(z) => zoo::run(z),
    }
}

/// A value parser for a library enum with names ([`Named`]): `--help`
/// lists the names, and a wrong one is refused by clap with that list.
pub fn named<T: Named + Clone + Send + Sync + 'static>() -> impl TypedValueParser<Value = T> {
    clap::builder::PossibleValuesParser::new(T::NAMES).try_map(|s| s.parse::<T>())
}

/// Attach the flag that carried a value to a library error about it.
pub fn flag(name: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.context(name)
}

/// `--mask-dtype` and `--naming`: how a mask file is encoded.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct MaskFormatArgs {
    /// Element type of the mask tensors.
    #[arg(long, value_parser = named::<MaskDType>(), default_value = "bool")]
    pub mask_dtype: MaskDType,
    /// Key masks by the weight's name, or as `<prefix>.weight_mask` for
    /// `torch.nn.utils.prune.custom_from_mask`.
    #[arg(long, value_parser = named::<Naming>(), default_value = "source")]
    pub naming: Naming,
}

impl MaskFormatArgs {
    pub fn format(self) -> MaskFormat {
        MaskFormat {
            mask_dtype: self.mask_dtype,
            naming: self.naming,
        }
    }
}

/// `--mean`/`--std`: input standardisation for the commands that read data.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NormalizationArgs {
    /// Subtract from every input (after scaling pixels to [0, 1]); one value
    /// or one per channel, comma-separated.
    #[arg(long, requires = "std", value_parser = numbers)]
    pub mean: Option<Numbers>,
    /// Divide every input by this; one value or one per channel.
    #[arg(long, requires = "mean", value_parser = numbers)]
    pub std: Option<Numbers>,
}

/// A comma-separated list of numbers.
#[derive(Debug, Clone)]
pub struct Numbers(pub Vec<f32>);

fn numbers(s: &str) -> std::result::Result<Numbers, String> {
    s.split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Numbers)
        .map_err(|_| format!("expected numbers like 0.1307 or 0.5,0.5,0.5, got '{s}'"))
}

impl NormalizationArgs {
    /// Standardise `d` when the flags are given.
    pub fn apply(&self, d: &mut maskforge::io::data::Dataset) -> Result<()> {
        match (&self.mean, &self.std) {
            (Some(m), Some(s)) => d.normalize(&m.0, &s.0).map_err(flag("--mean/--std")),
            _ => Ok(()),
        }
    }
}

/// Refuse a run whose outputs collide with its inputs or each other before
/// any of them is written (`None`s are outputs not asked for).
pub fn check_outputs(outputs: &[Option<&Path>], inputs: &[&Path]) -> Result<()> {
    let outs: Vec<&Path> = outputs.iter().flatten().copied().collect();
    maskforge::io::fs::check_outputs(&outs, inputs)
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| maskforge::error::Error::internal(format!("JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(label: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} rounds")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// A compression figure for tables: `inf` when nothing is left.
pub fn fmt_ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "inf".into()
    }
}
