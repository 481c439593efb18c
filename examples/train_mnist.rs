//! Pruning at initialisation, then training, on the 5 000 real MNIST digits
//! (issue #15, item 3): LeNet-300-100 and LeNet-5, each net pruned, trained
//! with [`maskforge::train::train`] and tested, over several seeds (one seed
//! is the zoo's init seed, the pruning seed and the training seed).
//!
//! Experiments (each a list of arms; add one in [`experiments`]):
//! - (a) papers/effective-sparsity-igq.txt, Fig. 2 (LeNet-300-100 there):
//!   random pruning with uniform layer quotas (the random baseline of its
//!   Sec. 3) pruned to a *direct* compression C, the same pruned to an
//!   *effective* compression C (its Sec. 5, Algorithm 1), and SynFlow (100
//!   rounds, data-free), at C = 10 .. 10^3.
//! - (b) papers/mica-restricted-random-pruning.txt, Fig. 5 (VGG-16 and
//!   ResNet-20 there): RPI vs MiCA, both with IGQ quotas, at C = 10^2 ..
//!   10^3.5.
//! - (c) papers/end-to-end-pruning-pipeline.txt, Table 1 (a 6-layer MLP
//!   there): the pipeline (pre-pruning training with a learned mask, global
//!   magnitude pruning, post-pruning training; [`maskforge::train::pipeline`])
//!   against "vanilla" magnitude pruning (plain training, the same cut and
//!   post-training) and SNIP at initialisation (10 digits per class), at 5,
//!   2 and 1 % density. As in the paper, the two-stage arms train the
//!   epochs twice (before and after the cut) and SNIP once.
//!
//! The dense nets are trained too (the reference line). Every fifth digit
//! (4, 9, ...) is the test set, the other 4 000 train, as in `tests/train.rs`;
//! pixels are scaled to [0, 1] and not standardised, as there.
//!
//! Run by `scripts/repro-mnist.sh`. Writes `OUT.csv` (one row per run),
//! `OUT-NET.svg` (accuracy against compression, one panel per experiment)
//! and the Markdown table of means, which it prints and puts into `OUT.md`
//! between the markers [`TABLE_BEGIN`] and [`TABLE_END`] (the prose around
//! them is kept).
//!
//! `cargo run --release --example train_mnist -- DATA.csv.gz OUT
//!  [--seeds N] [--epochs N] [--nets lenet300,lenet5] [--experiments a,b]`

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use maskforge::autodiff::calibration::Calibration;
use maskforge::io::data::Dataset;
use maskforge::mask::MaskSet;
use maskforge::methods::magnitude::Ranking;
use maskforge::methods::quota::target_from_compression;
use maskforge::methods::random::mica::MicaChoice;
use maskforge::methods::scored::{Context, Scorer};
use maskforge::methods::select::Scope;
use maskforge::report::eval::evaluate;
use maskforge::train::{pipeline, train, Config};
use maskforge::{prune_with, Method, Network, PruneOutcome, PruneSpec, Quota};
use plotters::coord::combinators::LogCoord;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const TABLE_BEGIN: &str = "<!-- repro-mnist table: begin (written by scripts/repro-mnist.sh) -->";
const TABLE_END: &str = "<!-- repro-mnist table: end -->";
/// SynFlow's rounds in its paper and in the effective-sparsity paper.
const SYNFLOW_ROUNDS: usize = 100;
const FONT: &str = "sans-serif";
/// The experiment (and arm) name of the dense reference runs.
const DENSE: &str = "dense";

/// A network and how it is trained. Adam with cosine decay and batches of
/// 64 (the library's defaults); the rate and epochs are what make the dense
/// nets pass 95 % (LeNet-300-100) and 97 % (LeNet-5) on the 1 000 test
/// digits while the whole script stays near 20 minutes on 2 cores. 5e-3
/// rather than the default 1e-3: sparse nets trained better with it in the
/// same epochs (0 to 7 points on MiCA-IGQ and RPI-IGQ masks between 10^1.5
/// and 10^2.5), and the dense nets no worse.
struct NetSpec {
    name: &'static str,
    epochs: usize,
    lr: f64,
}

const NETS: [NetSpec; 2] = [
    NetSpec {
        name: "lenet300",
        epochs: 40,
        lr: 5e-3,
    },
    NetSpec {
        name: "lenet5",
        epochs: 25,
        lr: 5e-3,
    },
];

/// A compression to prune to.
#[derive(Clone, Debug)]
struct Compression {
    label: String,
    value: f64,
    /// The density it stands for as the reference code forms it (SynFlow's
    /// schedule runs to exactly this density).
    density: f64,
}

impl Compression {
    /// `c` itself (density `1 / c`).
    fn ratio(c: f64) -> Self {
        Self {
            label: format!("{c}"),
            value: c,
            density: 1.0 / c,
        }
    }

    /// `10^e`.
    fn power(e: f64) -> Self {
        Self {
            label: format!("10^{e}"),
            value: 10f64.powf(e),
            density: 10f64.powf(-e),
        }
    }

    fn dense() -> Self {
        Self {
            label: "1".into(),
            value: 1.0,
            density: 1.0,
        }
    }
}

/// What an arm may use to make its masks for one run (an arm that needs
/// more, such as calibration digits for SNIP, gets it added here).
struct Setting<'a> {
    net_name: &'static str,
    net: &'a Network,
    compression: &'a Compression,
    seed: u64,
    /// The digits and the training settings (for arms that train before
    /// they prune, or score on data).
    split: &'a Split,
    cfg: &'a Config,
    /// Networks trained before a cut, by arm, computed once per net and
    /// seed for all compressions.
    pretrained: &'a RefCell<Vec<(&'static str, Network)>>,
}

/// What an arm hands to training: the masks, and the weights to start
/// from when they are not the net's initial ones (a pre-trained net).
struct Prepared {
    start: Option<Network>,
    outcome: PruneOutcome,
}

type MakeMasks = Box<dyn Fn(&Setting) -> maskforge::Result<Prepared>>;

/// Where the plot puts a run: at the direct compression it was pruned to,
/// or at the effective compression it reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum XPos {
    Direct,
    Effective,
}

struct Arm {
    label: &'static str,
    x: XPos,
    make: MakeMasks,
}

struct Experiment {
    id: &'static str,
    title: &'static str,
    compressions: Vec<Compression>,
    arms: Vec<Arm>,
}

/// The experiments, in the order they run and are drawn.
fn experiments() -> Vec<Experiment> {
    let synflow = Method::Scored(Scorer::Synflow, Scope::Global);
    let mica = Method::Mica(MicaChoice::Rand);
    vec![
        Experiment {
            id: "a",
            title: "(a) random: direct vs effective compression; SynFlow (eff. sparsity Fig. 2)",
            compressions: [1.0, 1.5, 2.0, 2.5, 3.0].map(Compression::power).to_vec(),
            arms: vec![
                // Fig. 2's random pruning is uniform over layers (its Sec. 3).
                // Judged by direct compression: drawn where it was cut.
                pruned(
                    "rpi-uniform/direct",
                    XPos::Direct,
                    Method::Rpi,
                    Quota::Uniform,
                    false,
                ),
                pruned(
                    "rpi-uniform/effective",
                    XPos::Effective,
                    Method::Rpi,
                    Quota::Uniform,
                    true,
                ),
                // One global cut: the quota plays no part.
                pruned("synflow", XPos::Effective, synflow, Quota::Uniform, false),
            ],
        },
        Experiment {
            id: "b",
            title: "(b) RPI vs MiCA, IGQ quotas (MiCA, Fig. 5)",
            compressions: [2.0, 2.5, 3.0, 3.5].map(Compression::power).to_vec(),
            // At the pre-defined compression: RPI's effective one is
            // infinite wherever it cuts the net, which a plot against it
            // (as MiCA's Fig. 5) cannot show; the table gives both.
            arms: vec![
                pruned("rpi-igq", XPos::Direct, Method::Rpi, Quota::Igq, false),
                pruned("mica-igq", XPos::Direct, mica, Quota::Igq, false),
            ],
        },
        Experiment {
            id: "c",
            title: "(c) pipeline vs vanilla magnitude vs SNIP (pipeline paper, Table 1)",
            compressions: [20.0, 50.0, 100.0].map(Compression::ratio).to_vec(),
            arms: vec![
                two_stage("pipeline", PreTraining::LearnedMask),
                two_stage("magnitude (vanilla)", PreTraining::Plain),
                Arm {
                    label: "snip",
                    x: XPos::Direct,
                    make: Box::new(snip_at_init),
                },
            ],
        },
    ]
}

/// How a two-stage arm trains before its magnitude cut.
#[derive(Clone, Copy)]
enum PreTraining {
    /// The pipeline paper's Sec. 3.1 (`train --learn-mask` defaults).
    LearnedMask,
    /// Plain training: the paper's "vanilla" baseline.
    Plain,
}

/// Train (once per net and seed), then cut by global magnitude: the
/// pipeline's stages 2 and 3; `run_one` is its stage 4.
fn two_stage(label: &'static str, pre: PreTraining) -> Arm {
    Arm {
        label,
        x: XPos::Direct,
        make: Box::new(move |s: &Setting| {
            let trained = pretrained(s, label, pre)?;
            let magnitude = Method::Ranked(Ranking::Magnitude, Scope::Global);
            let outcome = prune_to(s, &trained, magnitude, Quota::Uniform, false, None)?;
            Ok(Prepared {
                start: Some(trained),
                outcome,
            })
        }),
    }
}

fn pretrained(s: &Setting, label: &'static str, pre: PreTraining) -> maskforge::Result<Network> {
    if let Some((_, n)) = s.pretrained.borrow().iter().find(|(l, _)| *l == label) {
        return Ok(n.clone());
    }
    let cfg = match pre {
        PreTraining::LearnedMask => pipeline::pre_config(s.cfg.clone()),
        PreTraining::Plain => s.cfg.clone(),
    };
    let t = train(s.net, None, &s.split.train, None, &cfg, &mut |_| {})?;
    s.pretrained.borrow_mut().push((label, t.network.clone()));
    Ok(t.network)
}

/// SNIP at initialisation on 10 training digits per class (the `prune`
/// command's default), one global cut.
fn snip_at_init(s: &Setting) -> maskforge::Result<Prepared> {
    let idx = s.split.train.per_class(10, s.seed);
    let cal = Calibration::from_dataset(&s.split.train, &idx, 100, &Device::Cpu)?;
    let snip = Method::Scored(Scorer::Snip, Scope::Global);
    let outcome = prune_to(s, s.net, snip, Quota::Uniform, false, Some(Arc::new(cal)))?;
    Ok(Prepared {
        start: None,
        outcome,
    })
}

/// The dense net, trained as the pruned ones are: the reference.
fn dense() -> Arm {
    Arm {
        label: DENSE,
        x: XPos::Direct,
        make: Box::new(|s: &Setting| {
            Ok(Prepared {
                start: None,
                outcome: PruneOutcome::of(s.net, MaskSet::dense(s.net)),
            })
        }),
    }
}

/// An arm pruning with the library's [`prune_with`].
fn pruned(label: &'static str, x: XPos, method: Method, quota: Quota, effective: bool) -> Arm {
    Arm {
        label,
        x,
        make: Box::new(move |s: &Setting| {
            Ok(Prepared {
                start: None,
                outcome: prune_to(s, s.net, method, quota.clone(), effective, None)?,
            })
        }),
    }
}

/// Prune `net` (the setting's net, or a pre-trained copy) to the setting's
/// compression, with `calibration` for the data-driven methods.
fn prune_to(
    s: &Setting,
    net: &Network,
    method: Method,
    quota: Quota,
    effective: bool,
    calibration: Option<Arc<Calibration>>,
) -> maskforge::Result<PruneOutcome> {
    let spec = PruneSpec {
        method,
        quota,
        target_kept: target_from_compression(net.prunable_count(), s.compression.value)?,
        seed: s.seed,
        effective,
    };
    // As `maskforge prune --compression 10^e` sets it up.
    let ctx = Context {
        rounds: SYNFLOW_ROUNDS,
        density: Some(s.compression.density),
        calibration,
        ..Context::default()
    };
    prune_with(net, &spec, &ctx, &mut |_, _| {})
}

/// One trained and tested net.
struct Run {
    experiment: &'static str,
    net: &'static str,
    arm: &'static str,
    x_pos: XPos,
    compression: Compression,
    direct: f64,
    /// Infinite when no kept weight is on an input-output path.
    effective: f64,
    seed: u64,
    accuracy: f64,
    epochs: usize,
}

impl Run {
    /// Where the plot puts it (`None`: a cut net under [`XPos::Effective`]).
    fn x(&self) -> Option<f64> {
        let x = match self.x_pos {
            XPos::Direct => self.direct,
            XPos::Effective => self.effective,
        };
        x.is_finite().then_some(x)
    }
}

/// The test and training digits, shaped for one network.
struct Split {
    train: Dataset,
    test: Dataset,
}

impl Split {
    /// Every fifth digit to test, the rest to train (as `tests/train.rs`).
    fn of(data: &Dataset, net: &Network) -> Self {
        let shape = net.values[net.inputs[0]].shape.clone();
        let part = |test: bool| {
            let idx: Vec<usize> = (0..data.len()).filter(|i| (i % 5 == 4) == test).collect();
            let (x, y) = data.batch(&idx);
            Dataset {
                shape: shape.clone(),
                x,
                y,
            }
        };
        Self {
            train: part(false),
            test: part(true),
        }
    }
}

struct Options {
    seeds: u64,
    epochs: Option<usize>,
    nets: Vec<String>,
    experiments: Vec<String>,
}

fn parse_options(args: &[String]) -> Res<Options> {
    let mut o = Options {
        seeds: 3,
        epochs: None,
        nets: NETS.iter().map(|n| n.name.to_string()).collect(),
        experiments: experiments().iter().map(|e| e.id.to_string()).collect(),
    };
    let list = |v: &str| v.split(',').map(|s| s.trim().to_string()).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            return Err(format!("{} needs a value", pair[0]).into());
        };
        match flag.as_str() {
            "--seeds" => o.seeds = value.parse()?,
            "--epochs" => o.epochs = Some(value.parse()?),
            "--nets" => o.nets = list(value),
            "--experiments" => o.experiments = list(value),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if let Some(n) = o.nets.iter().find(|n| !NETS.iter().any(|s| s.name == *n)) {
        return Err(format!("unknown net {n} (lenet300, lenet5)").into());
    }
    Ok(o)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(data_path), Some(out)) = (args.first(), args.get(1)) else {
        return Err("usage: train_mnist DATA.csv.gz OUT [--seeds N] [--epochs N] [--nets a,b] [--experiments a,b]".into());
    };
    let opts = parse_options(&args[2..])?;
    let data = Dataset::load(data_path, &[784], 10, 0)?;
    let exps: Vec<Experiment> = experiments()
        .into_iter()
        .filter(|e| opts.experiments.iter().any(|id| id == e.id))
        .collect();
    let start = Instant::now();
    let mut runs = Vec::new();
    for spec in chosen_nets(&opts) {
        let epochs = opts.epochs.unwrap_or(spec.epochs);
        for seed in 0..opts.seeds {
            runs.extend(run_net(spec, epochs, seed, &data, &exps)?);
        }
    }
    eprintln!("all runs: {:.0} s", start.elapsed().as_secs_f64());
    std::fs::write(format!("{out}.csv"), csv(&runs))?;
    let table = table(&runs, &opts, &exps);
    print!("{table}");
    write_table(&format!("{out}.md"), &table)?;
    for spec in chosen_nets(&opts) {
        plot(&runs, spec.name, &exps, &format!("{out}-{}.svg", spec.name))?;
    }
    Ok(())
}

/// The nets asked for, in [`NETS`] order.
fn chosen_nets(opts: &Options) -> impl Iterator<Item = &NetSpec> {
    NETS.iter()
        .filter(|n| opts.nets.iter().any(|m| m == n.name))
}

/// Every arm of every experiment (and the dense net) on one net and seed.
fn run_net(
    spec: &NetSpec,
    epochs: usize,
    seed: u64,
    data: &Dataset,
    exps: &[Experiment],
) -> Res<Vec<Run>> {
    let net = maskforge::zoo::build(spec.name, seed)?;
    let split = Split::of(data, &net);
    let cfg = Config {
        epochs,
        lr: spec.lr,
        seed,
        ..Config::default()
    };
    let dense_c = Compression::dense();
    let pretrained = RefCell::new(Vec::new());
    let at = |compression| Setting {
        net_name: spec.name,
        net: &net,
        compression,
        seed,
        split: &split,
        cfg: &cfg,
        pretrained: &pretrained,
    };
    let mut runs = vec![run_one(DENSE, &dense(), &at(&dense_c), &split, &cfg)?];
    for e in exps {
        for arm in &e.arms {
            for c in &e.compressions {
                runs.push(run_one(e.id, arm, &at(c), &split, &cfg)?);
            }
        }
    }
    Ok(runs)
}

fn run_one(
    experiment: &'static str,
    arm: &Arm,
    s: &Setting,
    split: &Split,
    cfg: &Config,
) -> Res<Run> {
    let start = Instant::now();
    let Prepared {
        start: pre_trained,
        outcome: out,
    } = (arm.make)(s)?;
    if let Some(note) = &out.note {
        eprintln!("  note: {note}");
    }
    let total = s.net.prunable_count() as f64;
    // Train the effective masks (what `maskforge prune` writes): an inactive
    // weight either never reaches the output or only carries a constant that
    // the next layer's bias can carry as well, so nothing is lost.
    let masks = out.effective();
    let from = pre_trained.as_ref().unwrap_or(s.net);
    let trained = train(from, Some(masks), &split.train, None, cfg, &mut |_| {})?;
    let accuracy = evaluate(
        &trained.network,
        Some(masks),
        &split.test,
        500,
        &Device::Cpu,
    )?
    .accuracy;
    let run = Run {
        experiment,
        net: s.net_name,
        arm: arm.label,
        x_pos: arm.x,
        compression: s.compression.clone(),
        direct: total / out.raw.count_ones() as f64,
        effective: total / masks.count_ones() as f64,
        seed: s.seed,
        accuracy,
        epochs: cfg.epochs,
    };
    eprintln!(
        "[{experiment}] {} {} {} seed {}: direct {:.1}, effective {:.1}, test accuracy {:.3} ({:.1} s)",
        run.net,
        run.arm,
        run.compression.label,
        run.seed,
        run.direct,
        run.effective,
        run.accuracy,
        start.elapsed().as_secs_f64()
    );
    Ok(run)
}

fn csv(runs: &[Run]) -> String {
    let mut s = String::from(
        "experiment,net,method,target_compression,direct_compression,effective_compression,seed,test_accuracy,epochs\n",
    );
    for r in runs {
        s += &format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.experiment,
            r.net,
            r.arm,
            r.compression.value,
            r.direct,
            r.effective,
            r.seed,
            r.accuracy,
            r.epochs
        );
    }
    s
}

/// The runs of one (experiment, net, arm, compression), over seeds.
struct Group<'a> {
    runs: Vec<&'a Run>,
}

impl Group<'_> {
    fn first(&self) -> &Run {
        self.runs[0]
    }

    fn accuracies(&self) -> Vec<f64> {
        self.runs.iter().map(|r| r.accuracy).collect()
    }

    /// Where the plot puts the mean: the geometric mean of the runs'
    /// positions (compressions multiply), cut nets left out.
    fn x(&self) -> Option<f64> {
        geo_mean(self.runs.iter().filter_map(|r| r.x()))
    }
}

/// Groups in the order the runs came.
fn groups<'a>(runs: impl IntoIterator<Item = &'a Run>) -> Vec<Group<'a>> {
    let mut out: Vec<Group> = Vec::new();
    for r in runs {
        let key = |r: &Run| (r.experiment, r.net, r.arm, r.compression.label.clone());
        match out.iter_mut().find(|g| key(g.first()) == key(r)) {
            Some(g) => g.runs.push(r),
            None => out.push(Group { runs: vec![r] }),
        }
    }
    out
}

fn geo_mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let logs: Vec<f64> = xs.map(f64::ln).collect();
    (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The Markdown tables of means over seeds: the dense nets, then one table
/// per experiment, a row per (net, arm, compression).
fn table(runs: &[Run], opts: &Options, exps: &[Experiment]) -> String {
    let mut s = format!(
        "Test accuracy on the 1 000 held-out digits after training, in % (mean ± std and \
         min–max over {} seed{}). C: compression, total / kept (direct) or total / active \
         (effective) weights, geometric mean over the seeds; \"k cut\": k seeds left no \
         input-output path (effective C infinite).\n",
        opts.seeds,
        if opts.seeds == 1 { "" } else { "s" }
    );
    let sections =
        std::iter::once((DENSE, "Dense reference")).chain(exps.iter().map(|e| (e.id, e.title)));
    for (id, title) in sections {
        s += &format!("\n**{title}**\n\n");
        s += "| net | method | target C | direct C | effective C | accuracy % | min–max | epochs |\n\
              |---|---|---|---|---|---|---|---|\n";
        for g in groups(runs.iter().filter(|r| r.experiment == id)) {
            s += &table_row(&g);
        }
    }
    s
}

fn table_row(g: &Group) -> String {
    let f = g.first();
    let acc = g.accuracies();
    let (m, sd) = mean_std(&acc);
    let (lo, hi) = min_max(&acc);
    format!(
        "| {} | {} | {} | {} | {} | {:.1} ± {:.1} | {:.1}–{:.1} | {} |\n",
        f.net,
        f.arm,
        f.compression.label,
        fmt_c(geo_mean(g.runs.iter().map(|r| r.direct))),
        effective_cell(g),
        100.0 * m,
        100.0 * sd,
        100.0 * lo,
        100.0 * hi,
        f.epochs
    )
}

/// The effective compression of a group: the geometric mean of the
/// connected nets and how many were cut.
fn effective_cell(g: &Group) -> String {
    let finite = g.runs.iter().map(|r| r.effective).filter(|e| e.is_finite());
    let cut = g.runs.iter().filter(|r| !r.effective.is_finite()).count();
    let mean = fmt_c(geo_mean(finite));
    match cut {
        0 => mean,
        k if k == g.runs.len() => format!("∞ ({k} cut)"),
        k => format!("{mean} ({k} cut)"),
    }
}

fn fmt_c(c: Option<f64>) -> String {
    match c {
        None => "∞".into(),
        Some(c) if c < 99.95 => format!("{c:.1}"),
        Some(c) => format!("{c:.0}"),
    }
}

/// `text` into `path` between the table markers, or a new file with it.
fn write_table(path: &str, text: &str) -> Res<()> {
    let block = format!("{TABLE_BEGIN}\n{text}{TABLE_END}");
    let doc = match std::fs::read_to_string(path) {
        Ok(old) => match (old.find(TABLE_BEGIN), old.find(TABLE_END)) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{block}{}", &old[..a], &old[b + TABLE_END.len()..])
            }
            _ => return Err(format!("{path}: no table markers to write between").into()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("{block}\n"),
        Err(e) => return Err(e.into()),
    };
    std::fs::write(path, doc)?;
    Ok(())
}

/// Line colours (Tableau 10), one per arm of a panel.
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];
const PANEL_W: u32 = 720;
const PANEL_H: u32 = 500;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, RangedCoordf64>>;

/// One net's figure: a panel per experiment, side by side.
fn plot(runs: &[Run], net: &str, exps: &[Experiment], path: &str) -> Res<()> {
    maskforge::report::plot::ensure_font()?;
    let panels = exps.len().max(1);
    let root = SVGBackend::new(path, (PANEL_W * panels as u32, PANEL_H)).into_drawing_area();
    root.fill(&WHITE)?;
    let dense: Vec<f64> = runs
        .iter()
        .filter(|r| r.net == net && r.experiment == DENSE)
        .map(|r| r.accuracy)
        .collect();
    let dense = (!dense.is_empty()).then(|| mean_std(&dense).0);
    for (e, area) in exps.iter().zip(root.split_evenly((1, panels))) {
        let mine: Vec<&Run> = runs
            .iter()
            .filter(|r| r.net == net && r.experiment == e.id)
            .collect();
        panel(&area, net, e, &mine, dense)?;
    }
    root.present()?;
    Ok(())
}

/// One experiment: per arm, the mean accuracy with min–max bars over seeds
/// (a line) and every run (a faint dot), against log compression.
fn panel(area: &Area, net: &str, e: &Experiment, runs: &[&Run], dense: Option<f64>) -> Res<()> {
    let xs: Vec<f64> = runs.iter().filter_map(|r| r.x()).collect();
    let (lo, hi) = match min_max(&xs) {
        (lo, hi) if lo <= hi => (lo / 1.6, hi * 1.6),
        _ => (1.0, 10.0),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{net}: {}", e.title), (FONT, 14))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0f64)?;
    chart
        .configure_mesh()
        .x_desc(x_desc(e))
        .y_desc("test accuracy after training")
        .x_label_formatter(&tick)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(TRANSPARENT)
        .draw()?;
    if let Some(d) = dense {
        let grey = BLACK.mix(0.5);
        chart
            .draw_series(DashedLineSeries::new([(lo, d), (hi, d)], 6, 4, grey.into()))?
            .label(format!("dense ({:.1} %)", 100.0 * d))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], grey));
    }
    let gs = groups(runs.iter().copied());
    for (i, arm) in e.arms.iter().enumerate() {
        let mine: Vec<&Group> = gs.iter().filter(|g| g.first().arm == arm.label).collect();
        draw_arm(&mut chart, arm.label, COLORS[i % COLORS.len()], &mine)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 12))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    Ok(())
}

/// A log axis tick's label: 1, 2 and 5 times a power of ten only (plotters
/// puts a tick at every integer multiple, too many to label).
fn tick(v: &f64) -> String {
    let mantissa = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 1e-6)
    {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

fn x_desc(e: &Experiment) -> &'static str {
    let effective = e.arms.iter().any(|a| a.x == XPos::Effective);
    let direct = e.arms.iter().any(|a| a.x == XPos::Direct);
    match (direct, effective) {
        (true, true) => "compression: direct for \"/direct\", effective for the rest",
        (false, true) => "effective compression",
        _ => "pre-defined (direct) compression",
    }
}

fn draw_arm(chart: &mut Chart, label: &str, c: RGBColor, groups: &[&Group]) -> Res<()> {
    let mut line = Vec::new();
    for g in groups {
        let acc = g.accuracies();
        let dots = g.runs.iter().filter_map(|r| r.x().map(|x| (x, r.accuracy)));
        chart.draw_series(dots.map(|p| Circle::new(p, 2, c.mix(0.45).filled())))?;
        let Some(x) = g.x() else { continue };
        let (lo, hi) = min_max(&acc);
        chart.draw_series([PathElement::new([(x, lo), (x, hi)], c.stroke_width(1))])?;
        line.push((x, mean_std(&acc).0));
    }
    chart
        .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    Ok(())
}
