//! The command line (CONVENTIONS.md, "Command line"): argument parsing and the
//! subcommands, each a thin layer over the library.

mod audit;
mod eval;
mod init;
mod inspect;
mod prune;
mod quotas;
mod sweep;
mod zoo;

use clap::{Parser, Subcommand};

use crate::error::Result;

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
    /// Write a pruning mask (rpi, mica) for a quota and a compression.
    Prune(prune::Args),
    /// Per-layer densities and counts of a quota.
    Quotas(quotas::Args),
    /// Prune over a range of compressions; CSV of direct vs effective figures, and plots.
    Sweep(sweep::Args),
    /// Built-in architectures.
    #[command(subcommand)]
    Zoo(zoo::ZooCommand),
}

/// Options shared by every command that reads a model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// zoo:NAME, model.onnx, weights.safetensors or *.safetensors.index.json
    pub model: String,
    /// Architecture for a safetensors checkpoint: model.onnx or zoo:NAME.
    #[arg(long)]
    pub arch: Option<String>,
    /// Seed of zoo weights (and of any randomness).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
        Command::Zoo(z) => zoo::run(z),
    }
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| crate::error::Error::internal(format!("JSON: {e}")))?;
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
