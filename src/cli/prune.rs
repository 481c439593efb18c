//! `maskforge prune`: every method behind one command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::{audit_with, Paths};
use crate::error::{Error, Result};
use crate::magnitude::{Ranking, Scope};
use crate::maskfile::{self, MaskFormat};
use crate::network::Network;
use crate::prune::{prune_with, Method, MicaChoice, PruneSpec};
use crate::quota::{self, Quota};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Pruning method: rpi or mica.
    #[arg(long)]
    pub method: String,
    /// Layerwise quota: uniform, uniform+, erk, igq, smart, masks:FILE.
    #[arg(long, default_value = "igq")]
    pub quota: String,
    #[command(flatten)]
    pub amount: Amount,
    /// Reach the target as an effective compression (effective pruning).
    #[arg(long)]
    pub effective: bool,
    /// MiCA's choice of node counts inside the feasible range.
    #[arg(long, value_enum, default_value = "rand")]
    pub mica_choice: MicaChoice,
    /// For magnitude: one global threshold, or per-layer counts from --quota.
    #[arg(long, value_enum, default_value = "global")]
    pub scope: Scope,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Write the raw mask (inactive edges included) instead of the effective one.
    #[arg(long)]
    pub keep_inactive: bool,
    /// Also write the masked weights (.safetensors or .onnx).
    #[arg(long)]
    pub apply: Option<PathBuf>,
    /// Per-layer report as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub format: MaskFormat,
    #[arg(long)]
    pub json: bool,
}

/// Options of the score-based methods (snip, grasp, synflow, snip-it) and
/// of the quotas taken from them.
#[derive(clap::Args, Debug, Clone)]
pub struct ScoringArgs {
    /// Calibration data: x/y safetensors, IDX images (labels beside), CSV, or synthetic:N.
    #[arg(long)]
    pub data: Option<String>,
    /// Calibration sample size per class.
    #[arg(long, default_value_t = 10)]
    pub samples_per_class: usize,
    /// Calibration batch size.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Rounds of the iterative methods (default: synflow 100, snip-it 5).
    #[arg(long, default_value_t = 0)]
    pub rounds: usize,
    /// Where gradients are computed.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl ScoringArgs {
    /// The scoring context for `net` (data read only when given).
    pub fn context(&self, net: &Network, seed: u64) -> Result<crate::scored::Context> {
        let device = match self.device {
            DeviceArg::Cpu => candle_core::Device::Cpu,
            DeviceArg::Cuda => cuda_device()?,
        };
        let calibration = match &self.data {
            None => None,
            Some(spec) => Some(std::sync::Arc::new(calibration(
                net, spec, self, seed, &device,
            )?)),
        };
        Ok(crate::scored::Context {
            calibration,
            device,
            rounds: self.rounds,
            ..Default::default()
        })
    }
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<candle_core::Device> {
    candle_core::Device::new_cuda(0).map_err(|e| Error::input(format!("--device cuda: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<candle_core::Device> {
    Err(Error::input(
        "--device cuda: this maskforge was built without the `cuda` feature (cargo build --features cuda)",
    ))
}

fn calibration(
    net: &Network,
    spec: &str,
    a: &ScoringArgs,
    seed: u64,
    device: &candle_core::Device,
) -> Result<crate::snip::Calibration> {
    let shape = net.values[net.inputs[0]].shape.clone();
    let classes = net.values[net.outputs[0]].numel();
    let data = crate::data::Dataset::load(spec, &shape, classes, seed)?;
    let idx = data.per_class(a.samples_per_class.max(1), seed);
    let mut batches = Vec::new();
    for chunk in idx.chunks(a.batch_size.max(1)) {
        let (x, y) = data.batch(chunk);
        let mut s = vec![chunk.len()];
        s.extend(&shape);
        batches.push((
            candle_core::Tensor::from_vec(x, s, device)?,
            candle_core::Tensor::from_vec(y, chunk.len(), device)?,
        ));
    }
    Ok(crate::snip::Calibration { batches })
}

/// How much to prune: exactly one of the three.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Amount {
    /// total / kept, e.g. 1000, 1e3, 10^3.
    #[arg(long)]
    pub compression: Option<String>,
    /// kept / total in (0, 1].
    #[arg(long)]
    pub density: Option<f64>,
    /// 1 - density in [0, 1).
    #[arg(long)]
    pub sparsity: Option<f64>,
}

impl Amount {
    /// Target kept count and the compression it stands for.
    pub fn target(&self, total: usize) -> Result<(usize, f64)> {
        let compression = match (&self.compression, self.density, self.sparsity) {
            (Some(c), _, _) => {
                quota::parse_ratio(c).map_err(|e| Error::input(format!("--compression: {e}")))?
            }
            (_, Some(d), _) if d > 0.0 && d <= 1.0 => 1.0 / d,
            (_, _, Some(s)) if (0.0..1.0).contains(&s) => 1.0 / (1.0 - s),
            (_, Some(d), _) => {
                return Err(Error::input(format!("--density {d} is outside (0, 1]")))
            }
            (_, _, Some(s)) => {
                return Err(Error::input(format!("--sparsity {s} is outside [0, 1)")))
            }
            _ => return Err(Error::input("give --compression, --density or --sparsity")),
        };
        Ok((
            quota::target_from_compression(total, compression)?,
            compression,
        ))
    }
}

/// Parse a method name.
pub fn parse_method(s: &str, choice: MicaChoice, scope: Scope) -> Result<Method> {
    use crate::scored::Scorer;
    match s {
        "rpi" | "random" => Ok(Method::Rpi),
        "mica" => Ok(Method::Mica(choice)),
        "magnitude" => Ok(Method::Ranked(Ranking::Magnitude, scope)),
        // LAMP's scores are built for one global threshold.
        "lamp" => Ok(Method::Ranked(Ranking::Lamp, Scope::Global)),
        "snip" => Ok(Method::Scored(Scorer::Snip, scope)),
        "grasp" => Ok(Method::Scored(Scorer::Grasp, scope)),
        "synflow" => Ok(Method::Scored(Scorer::Synflow, Scope::Global)),
        "snip-it" => Ok(Method::Scored(Scorer::SnipIt, Scope::Global)),
        "ossum" => Err(Error::input(
            "--method ossum: neuron methods are not implemented yet",
        )),
        other => Err(Error::input(format!(
            "--method {other}: expected rpi, mica, magnitude, lamp, snip, grasp, synflow or snip-it"
        ))),
    }
}

/// Parse a quota, reading `masks:FILE` against `net` (its effective counts);
/// `snip`/`grasp`/`synflow` take the per-layer counts that method keeps at
/// `target` (RPI-SNIP etc. in the MiCA paper).
pub fn parse_quota(
    s: &str,
    net: &Network,
    target: usize,
    ctx: &crate::scored::Context,
) -> Result<Quota> {
    use crate::scored::Scorer;
    if let Some(file) = s.strip_prefix("masks:") {
        let m = maskfile::read(net, Path::new(file))?;
        let eff = crate::effective::effective_masks(net, &m);
        return Ok(Quota::Counts(
            eff.layers.iter().map(|b| b.count_ones()).collect(),
        ));
    }
    let scorer = match s {
        "snip" => Some(Scorer::Snip),
        "grasp" => Some(Scorer::Grasp),
        "synflow" => Some(Scorer::Synflow),
        _ => None,
    };
    if let Some(scorer) = scorer {
        let (m, _) = crate::scored::prune_scored(
            net,
            scorer,
            Scope::Global,
            None,
            target,
            ctx,
            &mut |_, _| {},
        )?;
        return Ok(Quota::Counts(
            m.layers.iter().map(|b| b.count_ones()).collect(),
        ));
    }
    s.parse::<Quota>()
        .map_err(|e| Error::input(format!("--quota {s}: {e}")))
}

#[derive(Serialize)]
struct LayerReport {
    name: String,
    total: usize,
    quota: usize,
    kept: usize,
    active: usize,
}

#[derive(Serialize)]
struct Report {
    model: String,
    method: String,
    quota: String,
    seed: u64,
    effective_target: bool,
    target_compression: f64,
    total: usize,
    kept: usize,
    active: usize,
    direct_compression: f64,
    effective_compression: f64,
    functional_node_ratio: f64,
    note: Option<String>,
    /// Iterative methods: density after each round.
    round_densities: Vec<f64>,
    layers: Vec<LayerReport>,
}

pub fn run(a: Args) -> Result<()> {
    let m = crate::model::load(&a.model.model, a.model.arch.as_deref(), a.model.seed)?;
    let net = &m.network;
    let method = parse_method(&a.method, a.mica_choice, a.scope)?;
    let (target_kept, target_compression) = a.amount.target(net.prunable_count())?;
    let ctx = a.scoring.context(net, a.model.seed)?;
    let q = parse_quota(&a.quota, net, target_kept, &ctx)?;
    let spec = PruneSpec {
        method,
        quota: q,
        target_kept,
        seed: a.model.seed,
        effective: a.effective,
    };
    let bar = super::progress_bar(&a.method);
    let out = prune_with(net, &spec, &ctx, &mut |k, n| {
        bar.set_length(n as u64);
        bar.set_position(k as u64);
    })?;
    bar.finish_and_clear();
    // The report has no path figures: skip the path count.
    let r = audit_with(net, &out.raw, out.analysis.clone(), Paths::Skip)?;
    let written = if a.keep_inactive {
        &out.raw
    } else {
        out.effective()
    };
    let mut inputs: Vec<&Path> = m.files.iter().map(|p| p.as_path()).collect();
    if let Some(f) = a.quota.strip_prefix("masks:") {
        inputs.push(Path::new(f));
    }
    let mut meta = BTreeMap::new();
    meta.insert("maskforge_version".into(), env!("CARGO_PKG_VERSION").into());
    meta.insert("method".into(), a.method.clone());
    meta.insert("quota".into(), a.quota.clone());
    meta.insert("target_compression".into(), target_compression.to_string());
    meta.insert("seed".into(), a.model.seed.to_string());
    meta.insert(
        "direct_compression".into(),
        r.direct_compression.to_string(),
    );
    meta.insert(
        "effective_compression".into(),
        r.effective_compression.to_string(),
    );
    meta.insert("model_sha256".into(), m.sha256.clone());
    maskfile::write(
        &a.output,
        &inputs,
        net,
        written,
        a.format,
        &meta,
        m.sharding.as_ref(),
    )?;
    if let Some(p) = &a.apply {
        let onnx_src = m
            .files
            .first()
            .filter(|f| f.extension().is_some_and(|e| e == "onnx"));
        let onnx_src = if a.model.model.to_ascii_lowercase().ends_with(".onnx") {
            onnx_src
        } else {
            None
        };
        crate::apply::write(p, &inputs, net, written, onnx_src.map(|x| x.as_path()))?;
    }
    let report = Report {
        model: net.name.clone(),
        method: a.method.clone(),
        quota: a.quota.clone(),
        seed: a.model.seed,
        effective_target: a.effective,
        target_compression,
        total: r.total,
        kept: r.kept,
        active: r.active,
        direct_compression: r.direct_compression,
        effective_compression: r.effective_compression,
        functional_node_ratio: r.functional_node_ratio,
        note: out.note.clone(),
        round_densities: out.history.clone(),
        layers: r
            .layers
            .iter()
            .zip(&out.counts)
            .map(|(l, &q)| LayerReport {
                name: l.name.clone(),
                total: l.total,
                quota: q,
                kept: l.kept,
                active: l.active,
            })
            .collect(),
    };
    if let Some(p) = &a.report {
        let s =
            serde_json::to_string_pretty(&report).map_err(|e| Error::internal(e.to_string()))?;
        crate::io::write_atomic(p, &inputs, |w| std::io::Write::write_all(w, s.as_bytes()))?;
    }
    if let Some(n) = &out.note {
        eprintln!("note: {n}");
    }
    if a.json {
        return super::print_json(&report);
    }
    println!(
        "{:<40} {:>12} {:>10} {:>10} {:>10}",
        "layer", "total", "quota", "kept", "active"
    );
    for l in &report.layers {
        println!(
            "{:<40} {:>12} {:>10} {:>10} {:>10}",
            l.name, l.total, l.quota, l.kept, l.active
        );
    }
    println!(
        "{} {} on {}: kept {} of {} (direct {}x), active {} (effective {}x); wrote {}",
        a.method,
        a.quota,
        report.model,
        report.kept,
        report.total,
        super::fmt_ratio(report.direct_compression),
        report.active,
        super::fmt_ratio(report.effective_compression),
        a.output.display()
    );
    Ok(())
}
