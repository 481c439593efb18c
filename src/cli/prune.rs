//! `maskforge prune`: every method behind one command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::analysis::audit::{audit_with, Paths};
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::io::maskfile::{self, MaskFormat};
use crate::methods::magnitude::{Ranking, Scope};
use crate::methods::prune::{prune_with, Method, MicaChoice, PruneSpec};
use crate::methods::quota::{self, Quota};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Pruning method: rpi, mica, magnitude, lamp, snip, grasp, synflow,
    /// snip-it; neuron methods ossum, neuron-norm, neuron-random.
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
    /// OSSuM: how class-wise scores combine (sum: Eq. 2, linear: Eq. 4, log: Eq. 5).
    #[arg(long, value_enum, default_value = "sum")]
    pub rank: crate::methods::neuron::ossum::Rank,
    /// OSSuM on deeper nets: earlier hidden layers by norm (OSSuM+Norm) or
    /// by OSSuM against a random read-out (OSSuM+PAB, Algorithm 2).
    #[arg(long, value_enum, default_value = "norm")]
    pub deep: crate::methods::neuron::ossum::Deep,
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
    /// Calibration sample size per class (0: every sample).
    #[arg(long, default_value_t = 10)]
    pub samples_per_class: usize,
    /// Calibration batch size.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Rounds of the iterative methods (default: synflow 100, snip-it 5).
    #[arg(long, default_value_t = 0)]
    pub rounds: usize,
    /// SynFlow's float type: f32 as the reference code (its masks exactly),
    /// or f64 for networks whose flow overflows f32.
    #[arg(long, value_enum, default_value = "f32")]
    pub synflow_precision: crate::methods::scored::synflow::Precision,
    /// SynFlow's weights pruned per round: the reference code's
    /// int((1 - d^(k/R)) N) with ties pruned, or the nearest count with
    /// exactly the target kept at the end (maskforge's earlier rule).
    #[arg(long, value_enum, default_value = "reference")]
    pub synflow_counts: crate::methods::scored::Counts,
    /// Where gradients are computed.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    #[command(flatten)]
    pub normalization: crate::io::data::Normalization,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl ScoringArgs {
    /// The scoring context for `net` (data read only when given).
    pub fn context(&self, net: &Network, seed: u64) -> Result<crate::methods::scored::Context> {
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
        Ok(crate::methods::scored::Context {
            calibration,
            device,
            rounds: self.rounds,
            synflow: crate::methods::scored::synflow::Options {
                precision: self.synflow_precision,
                counts: self.synflow_counts,
            },
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
) -> Result<crate::methods::scored::snip::Calibration> {
    let shape = net.values[net.inputs[0]].shape.clone();
    let classes = net.values[net.outputs[0]].numel();
    let mut data = crate::io::data::Dataset::load(spec, &shape, classes, seed)?;
    a.normalization.apply(&mut data)?;
    let idx: Vec<usize> = match a.samples_per_class {
        0 => (0..data.len()).collect(),
        k => data.per_class(k, seed),
    };
    crate::methods::scored::snip::Calibration::from_dataset(&data, &idx, a.batch_size, device)
}

/// How much to prune: exactly one of these. For neuron methods the ratios
/// count the neurons of each hidden layer, not weights.
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
    /// Neuron methods: neurons to keep per hidden layer, e.g. 100,50.
    #[arg(long)]
    pub widths: Option<String>,
}

impl Amount {
    /// Target kept count and the compression it stands for.
    pub fn target(&self, total: usize) -> Result<(usize, f64)> {
        let compression = self.compression()?;
        Ok((
            quota::target_from_compression(total, compression)?,
            compression,
        ))
    }

    /// The compression asked for (total / kept).
    pub fn compression(&self) -> Result<f64> {
        Ok(match (&self.compression, self.density, self.sparsity) {
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
            _ if self.widths.is_some() => {
                return Err(Error::input(
                    "--widths applies to the neuron methods (ossum, neuron-norm, neuron-random)",
                ))
            }
            _ => return Err(Error::input("give --compression, --density or --sparsity")),
        })
    }

    /// The density asked for, formed as the reference code forms its
    /// own: `b^-e` for a compression written `b^e` (Synaptic-Flow's
    /// `10**(-compression)`), `1 / c` for other compressions, `--density`
    /// itself, `1 - sparsity`.
    pub fn density(&self) -> Result<f64> {
        let c = self.compression()?;
        let power = self.compression.as_deref().and_then(|s| {
            let (b, e) = s.trim().split_once('^')?;
            let (b, e) = (b.trim().parse::<f64>().ok()?, e.trim().parse::<f64>().ok()?);
            Some(b.powf(-e)).filter(|d| d.is_finite() && *d > 0.0)
        });
        Ok(match (&self.compression, self.density, self.sparsity) {
            (Some(_), _, _) => power.unwrap_or(1.0 / c),
            (_, Some(d), _) => d,
            (_, _, Some(s)) => 1.0 - s,
            _ => 1.0 / c,
        })
    }

    /// Neurons to keep in each hidden layer.
    pub fn neuron_counts(
        &self,
        net: &Network,
        groups: &[crate::methods::neuron::NeuronGroup],
    ) -> Result<(Vec<usize>, f64)> {
        if let Some(w) = &self.widths {
            let widths = w
                .split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| Error::input(format!("--widths {w}: expected widths like 100,50")))?;
            let counts = crate::methods::neuron::counts_for_widths(net, groups, &widths)?;
            let total: usize = groups.iter().map(|g| g.width).sum();
            let ratio = total as f64 / counts.iter().sum::<usize>() as f64;
            return Ok((counts, ratio));
        }
        let c = self.compression()?;
        Ok((
            crate::methods::neuron::counts_for_fraction(groups, 1.0 / c)?,
            c,
        ))
    }
}

/// Parse a method name.
pub fn parse_method(s: &str, choice: MicaChoice, scope: Scope) -> Result<Method> {
    use crate::methods::scored::Scorer;
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
        other => Err(Error::input(format!(
            "--method {other}: expected rpi, mica, magnitude, lamp, snip, grasp, synflow, snip-it, ossum, neuron-norm or neuron-random"
        ))),
    }
}

/// The neuron method `s` names, if it is one.
pub fn parse_neuron_method(
    s: &str,
    rank: crate::methods::neuron::ossum::Rank,
    deep: crate::methods::neuron::ossum::Deep,
) -> Option<crate::methods::neuron::ossum::NeuronMethod> {
    use crate::methods::neuron::ossum::NeuronMethod;
    match s {
        "ossum" => Some(NeuronMethod::Ossum { rank, deep }),
        "neuron-norm" => Some(NeuronMethod::Norm),
        "neuron-random" => Some(NeuronMethod::Random),
        _ => None,
    }
}

/// Parse a quota, reading `masks:FILE` against `net` (its effective counts);
/// `snip`/`grasp`/`synflow` take the per-layer counts that method keeps at
/// `target` (RPI-SNIP etc. in the MiCA paper).
pub fn parse_quota(
    s: &str,
    net: &Network,
    target: usize,
    ctx: &crate::methods::scored::Context,
) -> Result<Quota> {
    use crate::methods::scored::Scorer;
    if let Some(file) = s.strip_prefix("masks:") {
        let m = maskfile::read(net, Path::new(file))?;
        let eff = crate::analysis::effective::effective_masks(net, &m);
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
        let (m, _) = crate::methods::scored::prune_scored(
            net,
            scorer,
            Scope::Global,
            None,
            target,
            crate::methods::scored::Cut::Direct,
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

/// Neuron methods: the kept neurons of one hidden layer.
#[derive(Serialize)]
struct NeuronReport {
    /// The producing layer's weight.
    layer: String,
    width: usize,
    kept: usize,
    /// The score the layer was ranked by (ossum, ossum-pab, norm, random).
    scored_by: String,
    kept_indices: Vec<usize>,
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
    /// Layers that keep no weight at all (layer collapse: no path is left
    /// through them, so every kept weight is inactive).
    collapsed_layers: Vec<String>,
    /// Iterative methods: density after each round.
    round_densities: Vec<f64>,
    layers: Vec<LayerReport>,
    /// Neuron methods: kept neurons per hidden layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    neurons: Option<Vec<NeuronReport>>,
}

/// What a method produced, before it is written and reported.
struct Produced {
    out: crate::methods::prune::PruneOutcome,
    target_compression: f64,
    quota: String,
    neurons: Option<Vec<NeuronReport>>,
}

pub fn run(a: Args) -> Result<()> {
    let m = crate::io::model::load(&a.model.model, a.model.arch.as_deref(), a.model.seed)?;
    let produced = match parse_neuron_method(&a.method, a.rank, a.deep) {
        Some(nm) => prune_neurons(&a, &m.network, nm)?,
        None => prune_weights(&a, &m.network)?,
    };
    emit(&a, &m, produced)
}

fn prune_weights(a: &Args, net: &Network) -> Result<Produced> {
    let method = parse_method(&a.method, a.mica_choice, a.scope)?;
    let (target_kept, target_compression) = a.amount.target(net.prunable_count())?;
    let mut ctx = a.scoring.context(net, a.model.seed)?;
    ctx.density = Some(a.amount.density()?);
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
    Ok(Produced {
        out,
        target_compression,
        quota: a.quota.clone(),
        neurons: None,
    })
}

fn prune_neurons(
    a: &Args,
    net: &Network,
    method: crate::methods::neuron::ossum::NeuronMethod,
) -> Result<Produced> {
    if a.effective {
        return Err(Error::input(format!(
            "--effective with {}: neuron methods prune whole neurons; give the neurons to keep (--sparsity, --density, --compression or --widths)",
            a.method
        )));
    }
    let groups = crate::methods::neuron::groups(net);
    if groups.is_empty() {
        return Err(Error::input(format!(
            "--method {}: {} has no hidden layer whose neurons can be pruned (a layer qualifies when its output reaches one other layer through activations, norms, pools or a flatten)",
            a.method, net.name
        )));
    }
    let (counts, target_compression) = a.amount.neuron_counts(net, &groups)?;
    let ctx = a.scoring.context(net, a.model.seed)?;
    let r = crate::methods::neuron::ossum::prune_neurons(
        net,
        &groups,
        method,
        &counts,
        ctx.calibration.as_deref(),
        &ctx.device,
        a.model.seed,
    )?;
    let neurons = r
        .groups
        .iter()
        .zip(&r.kept)
        .zip(&r.scored_by)
        .map(|((g, keep), by)| NeuronReport {
            layer: net.layers[g.producer].name.clone(),
            width: g.width,
            kept: keep.iter().filter(|&&k| k).count(),
            scored_by: by.to_string(),
            kept_indices: (0..g.width).filter(|&j| keep[j]).collect(),
        })
        .collect();
    let analysis = crate::analysis::effective::analyse(net, &r.masks);
    let counts = r.masks.layers.iter().map(|b| b.count_ones()).collect();
    Ok(Produced {
        out: crate::methods::prune::PruneOutcome {
            raw: r.masks,
            analysis,
            counts,
            note: None,
            history: Vec::new(),
        },
        target_compression,
        quota: "neurons".into(),
        neurons: Some(neurons),
    })
}

fn emit(a: &Args, m: &crate::io::model::Loaded, p: Produced) -> Result<()> {
    let net = &m.network;
    let out = &p.out;
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
    meta.insert("quota".into(), p.quota.clone());
    meta.insert(
        "target_compression".into(),
        p.target_compression.to_string(),
    );
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
    if let Some(ns) = &p.neurons {
        meta.insert("target_unit".into(), "neurons".into());
        if a.method == "ossum" {
            meta.insert("ossum_rank".into(), format!("{:?}", a.rank).to_lowercase());
            meta.insert("ossum_deep".into(), format!("{:?}", a.deep).to_lowercase());
        }
        let kept: Vec<String> = ns
            .iter()
            .map(|n| format!("{}:{}", n.layer, n.kept))
            .collect();
        meta.insert("kept_neurons".into(), kept.join(","));
    }
    maskfile::write(
        &a.output,
        &inputs,
        net,
        written,
        a.format,
        &meta,
        m.sharding.as_ref(),
    )?;
    if let Some(path) = &a.apply {
        let onnx_src = m
            .files
            .first()
            .filter(|f| f.extension().is_some_and(|e| e == "onnx"));
        let onnx_src = if a.model.model.to_ascii_lowercase().ends_with(".onnx") {
            onnx_src
        } else {
            None
        };
        crate::io::apply::write(path, &inputs, net, written, onnx_src.map(|x| x.as_path()))?;
    }
    let report = Report {
        model: net.name.clone(),
        method: a.method.clone(),
        quota: p.quota.clone(),
        seed: a.model.seed,
        effective_target: a.effective,
        target_compression: p.target_compression,
        total: r.total,
        kept: r.kept,
        active: r.active,
        direct_compression: r.direct_compression,
        effective_compression: r.effective_compression,
        functional_node_ratio: r.functional_node_ratio,
        note: out.note.clone(),
        collapsed_layers: r
            .layers
            .iter()
            .filter(|l| l.kept == 0)
            .map(|l| l.name.clone())
            .collect(),
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
        neurons: p.neurons,
    };
    if let Some(path) = &a.report {
        let s =
            serde_json::to_string_pretty(&report).map_err(|e| Error::internal(e.to_string()))?;
        crate::io::fs::write_atomic(path, &inputs, |w| {
            std::io::Write::write_all(w, s.as_bytes())
        })?;
    }
    if let Some(n) = &out.note {
        eprintln!("note: {n}");
    }
    if !report.collapsed_layers.is_empty() {
        eprintln!(
            "warning: layer collapse: {} of {} layers keep no weight ({}), so no input-to-output path is left",
            report.collapsed_layers.len(),
            report.layers.len(),
            report.collapsed_layers.join(", ")
        );
    }
    if a.json {
        return super::print_json(&report);
    }
    print_table(a, &report);
    Ok(())
}

fn print_table(a: &Args, report: &Report) {
    if let Some(ns) = &report.neurons {
        println!(
            "{:<40} {:>8} {:>8} {:>10}",
            "hidden layer", "neurons", "kept", "scored by"
        );
        for n in ns {
            println!(
                "{:<40} {:>8} {:>8} {:>10}",
                n.layer, n.width, n.kept, n.scored_by
            );
        }
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
        report.quota,
        report.model,
        report.kept,
        report.total,
        super::fmt_ratio(report.direct_compression),
        report.active,
        super::fmt_ratio(report.effective_compression),
        a.output.display()
    );
}
