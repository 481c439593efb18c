//! `maskforge prune`: every method behind one command.

use std::path::{Path, PathBuf};

use serde::Serialize;

use maskforge::analysis::audit::{audit_with, Paths};
use maskforge::error::{Error, Result};
use maskforge::graph::Network;
use maskforge::io::maskfile;
use maskforge::io::model::Loaded;
use maskforge::methods::neuron::ossum::{Deep, NeuronMethod, Rank};
use maskforge::methods::nm::{Conformance, DenseLayer, Pattern};
use maskforge::methods::npb::caps::TapSchedule;
use maskforge::methods::npb::NpbSettings;
use maskforge::methods::prune::{prune_pattern, prune_with, Method, PruneOutcome, PruneSpec};
use maskforge::methods::quota::{self, Quota};
use maskforge::methods::random::mica::{MicaChoice, Unguaranteed};
use maskforge::methods::scored::synflow::Precision;
use maskforge::methods::scored::{Counts, Scorer};
use maskforge::methods::select::Scope;
use maskforge::methods::selection::{Selection, Totals};

use super::{flag, named, MaskFormatArgs, NormalizationArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Pruning method: rpi, mica (mica-min, mica-max), magnitude, lamp,
    /// snip, grasp, synflow, snip-it; neuron methods ossum, neuron-norm,
    /// neuron-random.
    #[arg(long)]
    pub method: String,
    /// Layerwise quota: uniform, uniform+, erk, igq, smart, the quota of a
    /// ranking method (snip, grasp, synflow), or masks:FILE (the effective
    /// per-layer counts of a mask file). Default igq; erk for npb.
    #[arg(long)]
    pub quota: Option<String>,
    #[command(flatten)]
    pub amount: Amount,
    #[command(flatten)]
    pub select: super::SelectionArgs,
    /// Reach the target as an effective compression (effective pruning).
    #[arg(long)]
    pub effective: bool,
    /// MiCA's choice of node counts inside the feasible range.
    #[arg(long, value_parser = named::<MicaChoice>())]
    pub mica_choice: Option<MicaChoice>,
    /// For magnitude, snip and grasp: one global threshold, or per-layer
    /// counts from --quota.
    #[arg(long, value_parser = named::<Scope>(), default_value = "global")]
    pub scope: Scope,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    #[command(flatten)]
    pub npb: NpbArgs,
    /// OSSuM: how class-wise scores combine (sum: Eq. 2, linear: Eq. 4, log: Eq. 5).
    #[arg(long, value_parser = named::<Rank>(), default_value = "sum")]
    pub rank: Rank,
    /// OSSuM on deeper nets: earlier hidden layers by norm (OSSuM+Norm) or
    /// by OSSuM against a random read-out (OSSuM+PAB, Algorithm 2).
    #[arg(long, value_parser = named::<Deep>(), default_value = "norm")]
    pub deep: Deep,
    /// N:M semi-structured masks, e.g. 2:4: exactly N kept in every M
    /// consecutive weights along each layer's input dimension (rpi,
    /// magnitude, lamp, snip, grasp, synflow). Sets the density: no
    /// --compression, --quota or --effective. The raw mask is written.
    #[arg(long)]
    pub pattern: Option<String>,
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
    pub format: MaskFormatArgs,
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// `--quota` as given, or the method's default: ERK for NPB (the
    /// reference's `--init_mode ERK`), uniform for Wanda, IGQ otherwise.
    fn quota_name(&self) -> &str {
        match &self.quota {
            Some(q) => q,
            None if self.method == "npb" => "erk",
            // The paper prunes every layer to the same sparsity.
            None if self.method == "wanda" => "uniform",
            None => "igq",
        }
    }
}

/// Options of `--method npb` (node-path balancing); unset ones take the
/// reference code's ResNet-20 settings ([`NpbSettings::default`]).
#[derive(clap::Args, Debug, Default)]
pub struct NpbArgs {
    /// NPB: weight of effective nodes against effective paths (0.01).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// NPB: weight of used channel pairs (1).
    #[arg(long)]
    pub beta: Option<f64>,
    /// NPB: kept taps per kernel at most (9).
    #[arg(long)]
    pub max_taps: Option<usize>,
    /// NPB: output channels per programme of a wide layer (32).
    #[arg(long)]
    pub chunk: Option<usize>,
    /// NPB: chunk conv layers with more channel pairs than this (default:
    /// the reference's rule, 2048 for residual nets on 32x32, else 16384).
    #[arg(long)]
    pub chunk_above: Option<usize>,
    /// NPB: lower --max-taps by this much per halving of a conv layer's
    /// input height, to no less than 3 (0: constant).
    #[arg(long, conflicts_with = "max_taps_schedule")]
    pub max_taps_step: Option<usize>,
    /// NPB: how --max-taps changes along the network: reference (default:
    /// the reference code's rules, lowered by 2 after each projection
    /// shortcut while above 5 on residual nets, at its fixed layer indices
    /// on plain chains, kept on other graphs; docs/npb.md) or constant.
    #[arg(long, value_enum)]
    pub max_taps_schedule: Option<ScheduleArg>,
}

/// `--max-taps-schedule` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ScheduleArg {
    Constant,
    Reference,
}

impl NpbArgs {
    fn given(&self) -> bool {
        self.alpha.is_some()
            || self.beta.is_some()
            || self.max_taps.is_some()
            || self.chunk.is_some()
            || self.chunk_above.is_some()
            || self.max_taps_step.is_some()
            || self.max_taps_schedule.is_some()
    }

    fn settings(&self) -> NpbSettings {
        let d = NpbSettings::default();
        NpbSettings {
            alpha: self.alpha.unwrap_or(d.alpha),
            beta: self.beta.unwrap_or(d.beta),
            max_taps: self.max_taps.unwrap_or(d.max_taps),
            chunk: self.chunk.unwrap_or(d.chunk),
            chunk_above: self.chunk_above.or(d.chunk_above),
            schedule: match (self.max_taps_step, self.max_taps_schedule) {
                (Some(0), _) | (None, Some(ScheduleArg::Constant)) => TapSchedule::Constant,
                (Some(step), _) => TapSchedule::PerHalving(step),
                (None, Some(ScheduleArg::Reference)) => TapSchedule::Reference,
                (None, None) => d.schedule,
            },
        }
    }
}

/// Options of the score-based methods (snip, grasp, synflow, snip-it) and
/// of the quotas taken from them.
#[derive(clap::Args, Debug, Clone)]
pub struct ScoringArgs {
    /// Calibration data: x/y safetensors, IDX images (labels beside), CSV, or
    /// synthetic:N; for a Hugging Face text model, input_ids safetensors or
    /// synthetic-tokens:N:LEN.
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
    #[arg(long, value_parser = named::<Precision>(), default_value = "f32")]
    pub synflow_precision: Precision,
    /// SynFlow's weights pruned per round: the reference code's
    /// int((1 - d^(k/R)) N) with ties pruned, or the nearest count with
    /// exactly the target kept at the end (maskforge's earlier rule).
    #[arg(long, value_parser = named::<Counts>(), default_value = "reference")]
    pub synflow_counts: Counts,
    /// Where gradients are computed.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    #[command(flatten)]
    pub normalization: NormalizationArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl ScoringArgs {
    /// The scoring context for `net` (data read only when given).
    pub fn context(
        &self,
        net: &Network,
        tokens: Option<&maskforge::io::hf::tokens::TokenEmbedding>,
        seed: u64,
    ) -> Result<maskforge::methods::scored::Context> {
        let device = match self.device {
            DeviceArg::Cpu => candle_core::Device::Cpu,
            DeviceArg::Cuda => cuda_device()?,
        };
        let calibration = match &self.data {
            None => None,
            Some(spec) => Some(std::sync::Arc::new(match tokens {
                Some(t) => token_calibration(net, t, spec, self, seed, &device)?,
                None => calibration(net, spec, self, seed, &device)?,
            })),
        };
        Ok(maskforge::methods::scored::Context {
            calibration,
            device,
            rounds: self.rounds,
            synflow: maskforge::methods::scored::synflow::Options {
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
) -> Result<maskforge::autodiff::calibration::Calibration> {
    let shape = net.values[net.inputs[0]].shape.clone();
    let classes = net.values[net.outputs[0]].numel();
    let mut data =
        maskforge::io::data::Dataset::load(spec, &shape, classes, seed).map_err(flag("--data"))?;
    a.normalization.apply(&mut data)?;
    let idx: Vec<usize> = match a.samples_per_class {
        0 => (0..data.len()).collect(),
        k => data.per_class(k, seed),
    };
    maskforge::autodiff::calibration::Calibration::from_dataset(&data, &idx, a.batch_size, device)
}

/// Token ids for a text model, looked up into its `inputs_embeds`.
fn token_calibration(
    net: &Network,
    tokens: &maskforge::io::hf::tokens::TokenEmbedding,
    spec: &str,
    a: &ScoringArgs,
    seed: u64,
    device: &candle_core::Device,
) -> Result<maskforge::autodiff::calibration::Calibration> {
    let len = net.values[net.inputs[0]].shape[0];
    let data = maskforge::io::token_data::TokenData::load(spec, tokens.vocab(), len, seed)
        .map_err(flag("--data"))?;
    data.calibration(tokens, a.batch_size, device)
}

/// How much to prune: exactly one of these. For neuron methods the ratios
/// count the neurons of each hidden layer, not weights.
#[derive(clap::Args, Debug)]
#[group(required = false, multiple = false)]
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
            (Some(c), _, _) => quota::parse_ratio(c).map_err(flag("--compression"))?,
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
        groups: &[maskforge::methods::neuron::NeuronGroup],
    ) -> Result<(Vec<usize>, f64)> {
        if let Some(w) = &self.widths {
            let widths = w
                .split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| Error::input(format!("--widths {w}: expected widths like 100,50")))?;
            let counts = maskforge::methods::neuron::counts_for_widths(net, groups, &widths)
                .map_err(flag("--widths"))?;
            let total: usize = groups.iter().map(|g| g.width).sum();
            let ratio = total as f64 / counts.iter().sum::<usize>() as f64;
            return Ok((counts, ratio));
        }
        let c = self.compression()?;
        Ok((
            maskforge::methods::neuron::counts_for_fraction(groups, 1.0 / c)?,
            c,
        ))
    }
}

/// What `--method` names: a weight method or a neuron method.
#[derive(Clone, Copy, Debug)]
enum Chosen {
    Weights(Method),
    Neurons(NeuronMethod),
}

/// `--method` with its modifiers (`--scope`, `--mica-choice`, `--rank`,
/// `--deep`); one vocabulary with `sweep --methods` ([`Method`]).
fn parse_method(a: &Args) -> Result<Chosen> {
    if let Some(m) = NeuronMethod::parse(&a.method, a.rank, a.deep) {
        return Ok(Chosen::Neurons(m));
    }
    let method: Method = a.method.parse().map_err(|_| {
        Error::input(format!(
            "--method {}: expected one of {}, {}",
            a.method,
            Method::NAMES.join(", "),
            NeuronMethod::NAMES.join(", ")
        ))
    })?;
    if a.mica_choice.is_some() && !matches!(method, Method::Mica(_)) {
        return Err(Error::input(format!(
            "--mica-choice applies to --method mica, not {method}"
        )));
    }
    if a.npb.given() && !matches!(method, Method::Npb(_)) {
        return Err(Error::input(format!(
            "--alpha, --beta, --max-taps, --max-taps-step, --max-taps-schedule, --chunk and --chunk-above apply to --method npb, not {method}"
        )));
    }
    let method = match method {
        Method::Npb(_) => {
            let settings = a.npb.settings();
            settings.check()?;
            Method::Npb(settings)
        }
        m => m.with_scope(a.scope),
    };
    Ok(Chosen::Weights(match a.mica_choice {
        Some(c) => method.with_mica_choice(c),
        None => method,
    }))
}

/// Refuse a data-driven method or quota without `--data` before any work.
fn require_data(a: &Args, chosen: Chosen) -> Result<()> {
    let scorer_needs = |s: Scorer| s.needs_data();
    let by_method = match chosen {
        Chosen::Weights(Method::Scored(s, _)) => scorer_needs(s),
        Chosen::Neurons(NeuronMethod::Ossum { .. }) => true,
        _ => false,
    };
    let by_quota = matches!(a.quota_name().parse::<Quota>(), Ok(Quota::Scored(s)) if scorer_needs(s))
        && matches!(chosen, Chosen::Weights(m) if m.scope() == Scope::Layer);
    if a.scoring.data.is_some() || !(by_method || by_quota) {
        return Ok(());
    }
    let what = if by_method {
        format!("--method {}", a.method)
    } else {
        format!("--quota {}", a.quota_name())
    };
    Err(Error::input(format!(
        "{what} needs calibration data: give --data FILE (safetensors x/y, IDX, CSV) or --data synthetic:N"
    )))
}

/// `--quota`: a named quota, or `masks:FILE` read against `net` (its
/// effective per-layer counts).
pub fn parse_quota(s: &str, net: &Network) -> Result<Quota> {
    match s.strip_prefix("masks:") {
        Some(file) => {
            let m = maskfile::read(net, Path::new(file)).map_err(flag("--quota masks:"))?;
            Ok(Quota::from_effective(net, &m))
        }
        None => s.parse::<Quota>().map_err(flag("--quota")),
    }
}

/// The files a run reads, which no output may replace.
fn inputs<'a>(m: &'a maskforge::io::model::Loaded, quota: &'a str) -> Vec<&'a Path> {
    let mut inputs: Vec<&Path> = m.files.iter().map(|p| p.as_path()).collect();
    if let Some(f) = quota.strip_prefix("masks:") {
        inputs.push(Path::new(f));
    }
    inputs
}

#[derive(Serialize)]
struct LayerReport {
    name: String,
    /// Not selected by the defaults and --include/--exclude: kept dense,
    /// outside the totals and the target.
    frozen: bool,
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
    input_shape: String,
    method: String,
    quota: String,
    seed: u64,
    effective_target: bool,
    target_compression: f64,
    /// Over the selected layers (what the target counts): `total`, `kept`,
    /// `active` and the two compressions.
    total: usize,
    kept: usize,
    active: usize,
    direct_compression: f64,
    effective_compression: f64,
    /// The same figures over every prunable layer, frozen ones dense.
    all_prunable: Totals,
    /// The --include and --exclude globs given.
    include: Vec<String>,
    exclude: Vec<String>,
    /// Weights of the layers left dense by the selection.
    frozen_layers: Vec<String>,
    functional_node_ratio: f64,
    note: Option<String>,
    /// Layers that keep no weight at all (layer collapse: no path is left
    /// through them, so every kept weight is inactive).
    collapsed_layers: Vec<String>,
    /// Iterative methods: density after each round.
    round_densities: Vec<f64>,
    /// MiCA: layers where a kept weight is inactive, each with the cause
    /// (empty when every kept weight is functional).
    #[serde(skip_serializing_if = "Option::is_none")]
    mica_unguaranteed: Option<Vec<Unguaranteed>>,
    layers: Vec<LayerReport>,
    /// Neuron methods: kept neurons per hidden layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    neurons: Option<Vec<NeuronReport>>,
    /// With --pattern: the layers left dense and every layer's conformance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pattern: Option<PatternReport>,
}

#[derive(Serialize)]
struct PatternReport {
    pattern: String,
    dense_layers: Vec<DenseLayer>,
    layers: Vec<Conformance>,
}

/// What a method produced, before it is written and reported.
struct Produced {
    out: PruneOutcome,
    target_compression: f64,
    /// The quota as reported: `global` for one global cut, `neurons` for
    /// neuron methods, else the `--quota` given.
    quota: String,
    neurons: Option<Vec<NeuronReport>>,
    /// The method's canonical name (`mica-min` for `mica --mica-choice min`).
    method: String,
    /// With --pattern: the pattern and the layers it could not fit.
    pattern: Option<(Pattern, Vec<DenseLayer>)>,
    /// The layers pruned; the others stay dense.
    selection: Selection,
}

pub fn run(a: Args) -> Result<()> {
    let m = a.model.load()?;
    let chosen = parse_method(&a)?;
    require_data(&a, chosen)?;
    super::check_outputs(
        &[Some(&a.output), a.apply.as_deref(), a.report.as_deref()],
        &inputs(&m, a.quota_name()),
    )?;
    // The model's hash (provenance in the mask file) reads every byte of a
    // checkpoint: on a second core while the pruning runs.
    std::thread::scope(|scope| {
        scope.spawn(|| m.sha256().ok());
        prune_and_emit(&a, &m, chosen)
    })
}

fn prune_and_emit(a: &Args, m: &Loaded, chosen: Chosen) -> Result<()> {
    let produced = match (chosen, &a.pattern) {
        (Chosen::Weights(method), Some(p)) => prune_to_pattern(a, m, method, p)?,
        (Chosen::Neurons(_), Some(_)) => {
            return Err(Error::input(format!(
                "--pattern with --method {}: neuron methods remove whole neurons",
                a.method
            )))
        }
        (Chosen::Neurons(_), None) if a.select.given() => {
            return Err(Error::input(format!(
                "--include/--exclude with --method {}: neuron methods prune the hidden neurons of every layer",
                a.method
            )))
        }
        (Chosen::Neurons(nm), None) => prune_neurons(a, m, nm)?,
        (Chosen::Weights(method), None) => prune_weights(a, m, method)?,
    };
    emit(a, m, produced)
}

fn prune_weights(a: &Args, m: &Loaded, method: Method) -> Result<Produced> {
    let net = &m.network;
    let selection = a.select.selection(net)?;
    // The target counts the selected weights only.
    let (target_kept, target_compression) = a.amount.target(selection.selected_weights(net))?;
    let global_cut = method.scope() == Scope::Global;
    let quota = if global_cut {
        // One global threshold: the quota plays no part.
        Quota::Uniform
    } else {
        parse_quota(a.quota_name(), net)?
    };
    let mut ctx = a.scoring.context(net, m.tokens.as_ref(), a.model.seed)?;
    ctx.density = Some(a.amount.density()?);
    ctx.selection = Some(selection.clone());
    let spec = PruneSpec {
        method,
        quota,
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
        quota: if global_cut {
            "global".into()
        } else {
            a.quota_name().to_string()
        },
        neurons: None,
        method: method.to_string(),
        pattern: None,
        selection,
    })
}

fn prune_to_pattern(a: &Args, m: &Loaded, method: Method, pattern: &str) -> Result<Produced> {
    let net = &m.network;
    let pattern = Pattern::parse(pattern).map_err(flag("--pattern"))?;
    let amount_given =
        a.amount.compression.is_some() || a.amount.density.is_some() || a.amount.sparsity.is_some();
    if amount_given || a.quota.is_some() || a.effective {
        return Err(Error::input(format!(
            "--pattern {pattern} sets the density ({}) and the place of every kept weight: \
             drop --compression/--density/--sparsity, --quota and --effective",
            pattern.density()
        )));
    }
    let selection = a.select.selection(net)?;
    let mut ctx = a.scoring.context(net, m.tokens.as_ref(), a.model.seed)?;
    ctx.selection = Some(selection.clone());
    let bar = super::progress_bar(&a.method);
    let (placed, history) =
        prune_pattern(net, method, pattern, a.model.seed, &ctx, &mut |k, n| {
            bar.set_length(n as u64);
            bar.set_position(k as u64);
        })?;
    bar.finish_and_clear();
    let mut out = PruneOutcome::of(net, placed.masks);
    out.history = history;
    let kept = selection.count_selected(&out.raw);
    Ok(Produced {
        target_compression: selection.selected_weights(net) as f64 / kept.max(1) as f64,
        out,
        quota: pattern.to_string(),
        neurons: None,
        method: method.to_string(),
        pattern: Some((pattern, placed.dense)),
        selection,
    })
}

fn prune_neurons(a: &Args, m: &Loaded, method: NeuronMethod) -> Result<Produced> {
    let net = &m.network;
    if a.effective {
        return Err(Error::input(format!(
            "--effective with {}: neuron methods prune whole neurons; give the neurons to keep (--sparsity, --density, --compression or --widths)",
            a.method
        )));
    }
    let groups = maskforge::methods::neuron::groups(net);
    if groups.is_empty() {
        return Err(Error::input(format!(
            "--method {}: {} has no hidden layer whose neurons can be pruned (a layer qualifies when its output reaches one other layer through activations, norms, pools or a flatten)",
            a.method, net.name
        )));
    }
    let (counts, target_compression) = a.amount.neuron_counts(net, &groups)?;
    let ctx = a.scoring.context(net, m.tokens.as_ref(), a.model.seed)?;
    let r = maskforge::methods::neuron::ossum::prune_neurons(
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
    Ok(Produced {
        out: PruneOutcome::of(net, r.masks),
        target_compression,
        quota: "neurons".into(),
        neurons: Some(neurons),
        method: a.method.clone(),
        pattern: None,
        selection: Selection::everything(net),
    })
}

fn emit(a: &Args, m: &maskforge::io::model::Loaded, p: Produced) -> Result<()> {
    let net = &m.network;
    let out = &p.out;
    // The report has no path figures: skip the path count.
    let r = audit_with(net, &out.raw, out.analysis.clone(), Paths::Skip)?;
    // A pattern is a storage format: dropping inactive weights would leave
    // groups below N, so the raw mask is written.
    let sel = &p.selection;
    // Frozen layers are written dense, also in the effective mask.
    let mut effective;
    let written = if a.keep_inactive || p.pattern.is_some() {
        &out.raw
    } else if sel.is_all() {
        out.effective()
    } else {
        effective = out.effective().clone();
        sel.fill_frozen(&mut effective);
        &effective
    };
    let inputs = inputs(m, a.quota_name());
    let (selected, all) = sel.totals(net, &out.raw, out.effective());
    let frozen_layers = sel.frozen_names(net);
    let mut meta = maskfile::Provenance {
        method: p.method.clone(),
        quota: p.quota.clone(),
        target_compression: p.target_compression.to_string(),
        seed: a.model.seed.to_string(),
        direct_compression: selected.direct_compression,
        effective_compression: selected.effective_compression,
        model_sha256: m.sha256()?,
        input_shape: net.input_signature(),
    }
    .into_metadata();
    // With a selection: the globs, the layers left dense, and the figures
    // over every prunable layer (the two above count the selected ones).
    if !sel.is_all() || a.select.given() {
        let (include, exclude) = sel.provenance();
        meta.insert("include".into(), include);
        meta.insert("exclude".into(), exclude);
        meta.insert("frozen_layers".into(), frozen_layers.join(","));
        meta.insert(
            "all_direct_compression".into(),
            all.direct_compression.to_string(),
        );
        meta.insert(
            "all_effective_compression".into(),
            all.effective_compression.to_string(),
        );
    }
    if let Some((pattern, _)) = &p.pattern {
        meta.insert("pattern".into(), pattern.to_string());
    }
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
        a.format.format(),
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
        match &m.folder_checkpoint {
            Some(ckpt)
                if !path
                    .to_string_lossy()
                    .to_ascii_lowercase()
                    .ends_with(".onnx") =>
            {
                maskforge::io::apply::write_checkpoint(path, &inputs, ckpt, net, written)
            }
            _ => maskforge::io::apply::write(
                path,
                &inputs,
                net,
                written,
                onnx_src.map(|x| x.as_path()),
            ),
        }
        .map_err(super::flag("--apply"))?;
    }
    let report = Report {
        model: net.name.clone(),
        input_shape: net.input_signature(),
        method: p.method.clone(),
        quota: p.quota.clone(),
        seed: a.model.seed,
        effective_target: a.effective,
        target_compression: p.target_compression,
        total: selected.total,
        kept: selected.kept,
        active: selected.active,
        direct_compression: selected.direct_compression,
        effective_compression: selected.effective_compression,
        all_prunable: all,
        include: sel.include().to_vec(),
        exclude: sel.exclude().to_vec(),
        frozen_layers,
        functional_node_ratio: r.functional_node_ratio,
        note: out.note.clone(),
        collapsed_layers: r
            .layers
            .iter()
            .filter(|l| l.kept == 0)
            .map(|l| l.name.clone())
            .collect(),
        round_densities: out.history.clone(),
        mica_unguaranteed: out.mica_unguaranteed.clone(),
        layers: r
            .layers
            .iter()
            .zip(&out.counts)
            .enumerate()
            .map(|(li, (l, &q))| LayerReport {
                name: l.name.clone(),
                frozen: !sel.is_selected(li),
                total: l.total,
                quota: q,
                kept: l.kept,
                active: l.active,
            })
            .collect(),
        neurons: p.neurons,
        pattern: p.pattern.as_ref().map(|(pattern, dense)| PatternReport {
            pattern: pattern.to_string(),
            dense_layers: dense.clone(),
            layers: maskforge::methods::nm::check(net, &out.raw, *pattern),
        }),
    };
    if let Some(pr) = report
        .pattern
        .as_ref()
        .filter(|p| !p.dense_layers.is_empty())
    {
        let names: Vec<&str> = pr.dense_layers.iter().map(|d| d.layer.as_str()).collect();
        eprintln!(
            "note: {} layers cannot hold {} and stay dense: {} (reasons under pattern.dense_layers in --json/--report)",
            names.len(),
            pr.pattern,
            names.join(", ")
        );
    }
    if let Some(path) = &a.report {
        let s =
            serde_json::to_string_pretty(&report).map_err(|e| Error::internal(e.to_string()))?;
        maskforge::io::fs::write_atomic(path, &inputs, |w| {
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
    if let Some(u) = report.mica_unguaranteed.as_ref().filter(|u| !u.is_empty()) {
        let names: Vec<&str> = u.iter().map(|x| x.layer.as_str()).collect();
        eprintln!(
            "warning: MiCA cannot make every kept weight functional on this graph and quota: {} inactive in {} layers ({}); causes under mica_unguaranteed in --json/--report",
            u.iter().map(|x| x.inactive).sum::<usize>(),
            u.len(),
            names.join(", ")
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
        let quota = if l.frozen {
            "frozen".to_string()
        } else {
            l.quota.to_string()
        };
        println!(
            "{:<40} {:>12} {:>10} {:>10} {:>10}",
            l.name, l.total, quota, l.kept, l.active
        );
    }
    let over = if report.frozen_layers.is_empty() {
        String::new()
    } else {
        format!(
            " selected ({} frozen layers dense)",
            report.frozen_layers.len()
        )
    };
    println!(
        "{} {} on {}: kept {} of {}{over} (direct {}x), active {} (effective {}x); wrote {}",
        report.method,
        report.quota,
        report.model,
        report.kept,
        report.total,
        super::fmt_ratio(report.direct_compression),
        report.active,
        super::fmt_ratio(report.effective_compression),
        a.output.display()
    );
    if !report.frozen_layers.is_empty() {
        let all = &report.all_prunable;
        println!(
            "all prunable layers: kept {} of {} (direct {}x), active {} (effective {}x)",
            all.kept,
            all.total,
            super::fmt_ratio(all.direct_compression),
            all.active,
            super::fmt_ratio(all.effective_compression)
        );
    }
}
