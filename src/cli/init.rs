//! `maskforge init`: write a model's prunable weights re-initialised (ZerO or
//! seeded Kaiming-normal) as `.safetensors` or `.onnx`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use maskforge::error::Result;
use maskforge::init::zero::{Orientation, Rule};
use maskforge::init::{reinitialise, Applied, LayerInit, Scheme};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// The initialisation to write.
    #[arg(long, value_enum)]
    pub scheme: InitArg,
    /// weights.safetensors or model.onnx.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// An initialisation named on the command line (`init --scheme`, `zoo export --init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InitArg {
    /// Seeded Kaiming-normal from per-layer streams, as the zoo.
    Kaiming,
    /// ZerO, Hadamard on shrinking layers (the pipeline paper's Algorithm 1).
    Zero,
    /// ZerO, Hadamard on growing layers (the ZerO authors' code).
    ZeroGrowing,
}

impl InitArg {
    pub fn scheme(self, seed: u64) -> Scheme {
        match self {
            InitArg::Kaiming => Scheme::Kaiming { seed },
            InitArg::Zero => Scheme::Zero(Orientation::Shrinking),
            InitArg::ZeroGrowing => Scheme::Zero(Orientation::Growing),
        }
    }

    fn name(self) -> &'static str {
        match self {
            InitArg::Kaiming => "kaiming",
            InitArg::Zero => "zero",
            InitArg::ZeroGrowing => "zero-growing",
        }
    }
}

#[derive(Serialize)]
struct Summary<'a> {
    model: &'a str,
    scheme: &'static str,
    /// The seed of the Kaiming streams (none for ZerO, which is deterministic).
    seed: Option<u64>,
    output: String,
    weights: usize,
    biases_zeroed: usize,
    layers: &'a [LayerInit],
}

pub fn run(a: Args) -> Result<()> {
    maskforge::init::Format::of(&a.output)?;
    let m = a.model.load()?;
    let scheme = a.scheme.scheme(a.model.seed);
    let r = reinitialise(&m.network, scheme)?;
    let inputs: Vec<&Path> = m.files.iter().map(|p| p.as_path()).collect();
    // As `prune --apply`: only a model read from an ONNX file keeps its graph.
    let onnx_source = m
        .files
        .first()
        .filter(|_| a.model.model.to_ascii_lowercase().ends_with(".onnx"));
    maskforge::init::write(&a.output, &inputs, &r, onnx_source.map(|p| p.as_path()))?;
    let summary = Summary {
        model: &a.model.model,
        scheme: a.scheme.name(),
        seed: matches!(scheme, Scheme::Kaiming { .. }).then_some(a.model.seed),
        output: a.output.display().to_string(),
        weights: m.network.prunable_count(),
        biases_zeroed: r.layers.iter().filter(|l| l.bias.is_some()).count(),
        layers: &r.layers,
    };
    if a.json {
        return super::print_json(&summary);
    }
    print_table(&summary);
    Ok(())
}

fn rule_text(a: &Applied) -> (String, String) {
    match a {
        Applied::Zero(Rule::Identity) => ("identity".into(), "1".into()),
        Applied::Zero(Rule::PartialIdentity) => ("partial-identity".into(), "1".into()),
        Applied::Zero(Rule::Hadamard { m, scale }) => {
            (format!("hadamard H_{m}"), scale.to_string())
        }
        Applied::Kaiming { rule, std } => (rule.to_string(), format!("std {std}")),
    }
}

fn print_table(s: &Summary) {
    println!(
        "{:<40} {:<6} {:<20} {:>6} {:<18} {:>12}",
        "layer", "kind", "shape", "groups", "rule", "scale"
    );
    for l in s.layers {
        let (rule, scale) = rule_text(&l.applied);
        println!(
            "{:<40} {:<6} {:<20} {:>6} {:<18} {:>12}",
            l.name,
            format!("{:?}", l.kind),
            format!("{:?}", l.shape),
            l.groups,
            rule,
            scale
        );
    }
    println!(
        "{} init of {}: {} layers ({} weights), {} biases set to 0; wrote {}",
        s.scheme,
        s.model,
        s.layers.len(),
        s.weights,
        s.biases_zeroed,
        s.output
    );
}
