//! `maskforge pipeline`: the end-to-end pruning pipeline in one command
//! ([`maskforge::train::pipeline`]), every stage written to a file in the
//! output folder so that any stage can be rerun or replaced by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use maskforge::error::{Error, Result};
use maskforge::init::zero::Orientation;
use maskforge::init::Scheme;
use maskforge::io::maskfile;
use maskforge::train::pipeline::{self, Settings, Stage};
use maskforge::train::EpochLog;

use super::train::{DataArgs, HyperArgs, MaskLearningArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub amount: super::prune::Amount,
    /// Stage 1: `zero` (the paper's ZerO, Algorithm 1), `zero-growing`,
    /// or `keep` the model's weights (the default: the paper finds ZerO
    /// and the learned mask do not combine, Sec. 5).
    #[arg(long, value_enum, default_value_t = InitArg::Keep)]
    pub init: InitArg,
    /// Stage 2 epochs (default: --epochs).
    #[arg(long)]
    pub pre_epochs: Option<usize>,
    /// Stage 2 without a learned mask (plain dense training: "vanilla").
    #[arg(long)]
    pub no_learn_mask: bool,
    #[command(flatten)]
    pub mask_learning: MaskLearningArgs,
    /// Both trainings' settings; label smoothing and PSwish apply to the
    /// post-pruning stage only, as in the paper.
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Output folder: init.safetensors (with --init zero*),
    /// pre-trained.safetensors, masks.safetensors, trained.safetensors and
    /// pipeline.json.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InitArg {
    Keep,
    Zero,
    ZeroGrowing,
}

#[derive(Serialize)]
struct Summary<'a> {
    model: &'a str,
    files: BTreeMap<&'static str, String>,
    init: &'static str,
    learned_mask: bool,
    target_kept: usize,
    /// Kept by the magnitude cut, and of those on an input-output path
    /// (the mask written and trained).
    kept: usize,
    active: usize,
    direct_compression: f64,
    effective_compression: f64,
    train_samples: usize,
    held_out_samples: usize,
    held_out: Option<&'static str>,
    /// Layers the cut emptied of active weights (the network is then
    /// disconnected).
    layers_without_active_weights: &'a [String],
    /// Why fewer than the target were kept, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    pre_training: &'a [EpochLog],
    post_training: &'a [EpochLog],
}

pub fn run(a: Args) -> Result<()> {
    let m = a.model.load()?;
    let net = &m.network;
    let settings = settings(&a, net)?;
    let (data, held_out, kind) = a.data.load(net, a.model.seed)?;
    let files = Files::in_folder(&a.output, settings.init.is_some())?;
    let inputs: Vec<&Path> = m.files.iter().map(|p| p.as_path()).collect();
    super::check_outputs(&files.all(), &inputs)?;
    let bar = super::train::epoch_bar();
    let (mut pre, mut post) = (
        super::train::bar_reporter(&bar, "pre-pruning ", settings.pre.epochs),
        super::train::bar_reporter(&bar, "post-pruning ", settings.post.epochs),
    );
    let out = pipeline::run(
        net,
        &data,
        held_out.as_ref(),
        &settings,
        &mut |s, p| match s {
            Stage::PreTraining => pre(p),
            Stage::PostTraining => post(p),
        },
    )?;
    bar.finish_and_clear();
    if let (Some(r), Some(path)) = (&out.initialised, &files.init) {
        maskforge::init::write(path, &inputs, r, None)?;
    }
    let pre = &out.pre_trained;
    maskforge::init::write_network(&files.pre, &inputs, &pre.network, &pre.rewritten, None)?;
    let masks = out.pruned.effective();
    let report = maskforge::analysis::audit::audit_with(
        &pre.network,
        &out.pruned.raw,
        out.pruned.analysis.clone(),
        maskforge::analysis::audit::Paths::Skip,
    )?;
    let kept = out.pruned.raw.count_ones();
    let short = (kept < settings.target_kept).then(|| {
        format!(
            "the pre-trained weights have only {kept} nonzero entries, fewer than the target {}: \
             the learned mask is sparser than asked and magnitude pruning never keeps a zero \
             (lower --lambda2 or --mask-lr for a denser mask)",
            settings.target_kept
        )
    });
    if let Some(n) = &short {
        eprintln!("note: {n}");
    }
    if !report.layers_without_active_weights.is_empty() {
        // Global magnitude can empty whole layers (their weights are
        // smaller than the rest); post-training then cannot recover.
        eprintln!(
            "warning: the magnitude cut left layers with no active weight (network disconnected): {}; \
             post-pruning training cannot learn through them (ask for a higher density)",
            report.layers_without_active_weights.join(", ")
        );
    }
    let meta = mask_metadata(&a, &files.pre, &report)?;
    maskfile::write(
        &files.masks,
        &inputs,
        &pre.network,
        masks,
        maskfile::MaskFormat::default(),
        &meta,
        None,
    )?;
    let fin = &out.trained;
    maskforge::init::write_network(&files.trained, &inputs, &fin.network, &fin.rewritten, None)?;
    let summary = Summary {
        model: &a.model.model,
        files: files.named(),
        init: init_name(a.init),
        learned_mask: settings.pre.mask_learning.is_some(),
        target_kept: settings.target_kept,
        kept,
        active: masks.count_ones(),
        direct_compression: report.direct_compression,
        effective_compression: report.effective_compression,
        train_samples: data.len(),
        held_out_samples: held_out.as_ref().map_or(0, |d| d.len()),
        held_out: kind,
        layers_without_active_weights: &report.layers_without_active_weights,
        note: short,
        pre_training: &pre.log,
        post_training: &fin.log,
    };
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| Error::internal(format!("pipeline summary: {e}")))?;
    maskforge::io::fs::write_atomic(&files.summary, &inputs, |w| {
        std::io::Write::write_all(w, &json)
    })?;
    if a.json {
        return super::print_json(&summary);
    }
    print_summary(&summary);
    Ok(())
}

fn settings(a: &Args, net: &maskforge::graph::Network) -> Result<Settings> {
    let post = a.hyper.config(a.model.seed)?;
    let mut pre = pipeline::pre_config(post.clone());
    pre.epochs = a.pre_epochs.unwrap_or(post.epochs);
    pre.mask_learning = a.mask_learning.settings_if(!a.no_learn_mask)?;
    let (target_kept, _) = a.amount.target(net.prunable_count())?;
    Ok(Settings {
        init: match a.init {
            InitArg::Keep => None,
            InitArg::Zero => Some(Scheme::Zero(Orientation::Shrinking)),
            InitArg::ZeroGrowing => Some(Scheme::Zero(Orientation::Growing)),
        },
        pre,
        post,
        target_kept,
        density: Some(a.amount.density()?),
    })
}

fn init_name(i: InitArg) -> &'static str {
    match i {
        InitArg::Keep => "keep",
        InitArg::Zero => "zero",
        InitArg::ZeroGrowing => "zero-growing",
    }
}

/// The provenance `prune` writes, for the masks of the pre-trained file.
fn mask_metadata(
    a: &Args,
    pre_trained: &Path,
    r: &maskforge::analysis::audit::AuditReport,
) -> Result<BTreeMap<String, String>> {
    // The hash `prune` would record for the pre-trained file: read it back
    // as `prune pre-trained.safetensors --arch MODEL` reads it.
    let arch = match &a.model.arch {
        Some(arch) => Some(arch.clone()),
        None if a.model.model.starts_with("zoo:") || a.model.model.ends_with(".onnx") => {
            Some(a.model.model.clone())
        }
        None => None,
    };
    let path = pre_trained.to_string_lossy();
    let reread = maskforge::io::model::load(&path, arch.as_deref(), a.model.seed)?;
    Ok(maskforge::io::maskfile::Provenance {
        method: "magnitude".into(),
        quota: "global".into(),
        target_compression: a.amount.compression()?.to_string(),
        seed: a.model.seed.to_string(),
        direct_compression: r.direct_compression,
        effective_compression: r.effective_compression,
        model_sha256: reread.sha256()?,
        input_shape: reread.network.input_signature(),
    }
    .into_metadata())
}

/// The files a run writes.
struct Files {
    init: Option<PathBuf>,
    pre: PathBuf,
    masks: PathBuf,
    trained: PathBuf,
    summary: PathBuf,
}

impl Files {
    fn in_folder(dir: &Path, init: bool) -> Result<Self> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::input(format!(
                "-o {}: expected a folder",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::input(format!("-o {}: {e}", dir.display())))?;
        Ok(Self {
            init: init.then(|| dir.join("init.safetensors")),
            pre: dir.join("pre-trained.safetensors"),
            masks: dir.join("masks.safetensors"),
            trained: dir.join("trained.safetensors"),
            summary: dir.join("pipeline.json"),
        })
    }

    fn all(&self) -> Vec<Option<&Path>> {
        vec![
            self.init.as_deref(),
            Some(&self.pre),
            Some(&self.masks),
            Some(&self.trained),
            Some(&self.summary),
        ]
    }

    fn named(&self) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::new();
        if let Some(p) = &self.init {
            m.insert("init", p.display().to_string());
        }
        m.insert("pre_trained", self.pre.display().to_string());
        m.insert("masks", self.masks.display().to_string());
        m.insert("trained", self.trained.display().to_string());
        m.insert("summary", self.summary.display().to_string());
        m
    }
}

fn print_summary(s: &Summary) {
    let last = |log: &[EpochLog]| {
        log.last()
            .and_then(|e| e.held_out)
            .map_or("-".to_string(), |h| format!("{:.4}", h.accuracy))
    };
    let held = s.held_out.unwrap_or("held-out");
    println!(
        "pre-pruning training ({} epochs{}): {held} accuracy {}",
        s.pre_training.len(),
        if s.learned_mask { ", learned mask" } else { "" },
        last(s.pre_training)
    );
    if let Some(m) = s.pre_training.last().and_then(|e| e.mask) {
        println!(
            "  learned mask: mean keep probability {:.4}, {:.2} % at or above 1/2, {:.2} % undecided",
            m.mean,
            100.0 * m.kept_half,
            100.0 * m.undecided
        );
    }
    println!(
        "magnitude pruning: {} weights kept (target {}), {} of them active; compression {:.2} direct, {:.2} effective",
        s.kept, s.target_kept, s.active, s.direct_compression, s.effective_compression
    );
    println!(
        "post-pruning training ({} epochs): {held} accuracy {}",
        s.post_training.len(),
        last(s.post_training)
    );
    for (k, v) in &s.files {
        println!("  {k}: {v}");
    }
}
