//! The end-to-end pruning pipeline (papers/end-to-end-pruning-pipeline.txt,
//! Sec. 3 and 4.2: "train -> magnitude-based pruning -> train"):
//!
//! 1. initialise: ZerO (Sec. 3.1, Algorithm 1) or the model's own weights;
//! 2. pre-pruning training that learns a sparsity mask `M` (Sec. 3.1,
//!    [`super::mask_learning`]), ending with `theta <- theta * M`;
//! 3. global magnitude pruning of `theta * M` to the target;
//! 4. post-pruning training of the kept weights (Sec. 3.2, with its
//!    decayed label smoothing and PSwish when the config asks for them).
//!
//! Each stage reads only what the previous one produced, so `maskforge
//! pipeline` (which writes every stage to a file) and the commands `init`,
//! `train --learn-mask`, `prune --method magnitude` and `train --masks`
//! run one by one give the same weights.
//!
//! ```
//! use maskforge::{io::data::Dataset, train::{Config, pipeline}, zoo};
//! let net = zoo::build("mlp:4-8-3", 0).unwrap();
//! let data = Dataset::load("synthetic:40", &[4], 3, 0).unwrap();
//! let pre = Config { epochs: 1, batch_size: 8, ..pipeline::pre_config(Config::default()) };
//! let post = Config { epochs: 1, batch_size: 8, ..Config::default() };
//! let s = pipeline::Settings { init: None, pre, post, target_kept: 12, density: None };
//! let out = pipeline::run(&net, &data, None, &s, &mut |_, _| {}).unwrap();
//! // The cut keeps 12; the weights it leaves on no input-output path are
//! // dropped before post-training, as `prune` writes its masks.
//! assert_eq!(out.pruned.raw.count_ones(), 12);
//! assert!(out.pruned.effective().count_ones() <= 12);
//! ```

use serde::Serialize;

use crate::error::Result;
use crate::graph::Network;
use crate::init::{reinitialise, Reinit, Scheme};
use crate::io::data::Dataset;
use crate::methods::magnitude::Ranking;
use crate::methods::prune::{prune_with, Method, PruneOutcome, PruneSpec};
use crate::methods::quota::Quota;
use crate::methods::select::Scope;

use super::mask_learning::MaskLearning;
use super::{train, Config, Progress, Trained};

/// The pipeline's mask learning when a caller gives none: the defaults
/// of `maskforge train --learn-mask`, chosen on a validation split of the
/// 4 000 training digits (docs/pipeline.md).
pub const DEFAULT_MASK_LEARNING: MaskLearning = MaskLearning {
    lambda1: 1e-5,
    lambda2: 1e-5,
    lr: 0.03,
};

/// `cfg` as pre-pruning training: the default mask learning, no label
/// smoothing, no PSwish (the paper applies those after pruning only).
pub fn pre_config(cfg: Config) -> Config {
    Config {
        mask_learning: Some(DEFAULT_MASK_LEARNING),
        label_smoothing: 0.0,
        pswish: None,
        ..cfg
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Re-initialise first (`None` keeps the model's weights).
    pub init: Option<Scheme>,
    /// Pre-pruning training (with `mask_learning` for the paper's stage).
    pub pre: Config,
    /// Post-pruning training of the kept weights.
    pub post: Config,
    /// Weights kept by the magnitude pruning.
    pub target_kept: usize,
    /// The density the target stands for, as `prune` forms it (see
    /// [`crate::methods::scored::Context::density`]), so that the count
    /// equals `prune --method magnitude`'s.
    pub density: Option<f64>,
}

/// Which training stage a progress report is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    PreTraining,
    PostTraining,
}

/// Every stage's product.
pub struct Stages {
    pub initialised: Option<Reinit>,
    pub pre_trained: Trained,
    pub pruned: PruneOutcome,
    pub trained: Trained,
}

/// Run the four stages on `net` with `data` (and `held_out` evaluated
/// after every epoch of both trainings).
pub fn run(
    net: &Network,
    data: &Dataset,
    held_out: Option<&Dataset>,
    s: &Settings,
    progress: &mut dyn FnMut(Stage, Progress),
) -> Result<Stages> {
    let initialised = s.init.map(|scheme| reinitialise(net, scheme)).transpose()?;
    let start = initialised.as_ref().map_or(net, |r| &r.network);
    let pre_trained = train(start, None, data, held_out, &s.pre, &mut |p| {
        progress(Stage::PreTraining, p)
    })?;
    let pruned = magnitude(&pre_trained.network, s)?;
    let trained = train(
        &pre_trained.network,
        Some(pruned.effective()),
        data,
        held_out,
        &s.post,
        &mut |p| progress(Stage::PostTraining, p),
    )?;
    Ok(Stages {
        initialised,
        pre_trained,
        pruned,
        trained,
    })
}

/// Global magnitude pruning of the pre-trained weights, as `prune
/// --method magnitude` does it.
fn magnitude(net: &Network, s: &Settings) -> Result<PruneOutcome> {
    let spec = PruneSpec {
        method: Method::Ranked(Ranking::Magnitude, Scope::Global),
        quota: Quota::Igq,
        target_kept: s.target_kept,
        seed: s.pre.seed,
        effective: false,
    };
    let ctx = crate::methods::scored::Context {
        density: s.density,
        ..Default::default()
    };
    prune_with(net, &spec, &ctx, &mut |_, _| {})
}
