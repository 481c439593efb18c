//! `maskforge eval`: accuracy of the masked network without training.

use std::path::PathBuf;

use maskforge::error::Result;
use maskforge::io::data::Dataset;
use maskforge::report::eval::evaluate;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Mask file to apply; without it, the weights as stored (and any
    /// `*_mask` tensors of a pruned PyTorch checkpoint).
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// Labelled data: x/y safetensors, IDX images (labels beside), CSV. Every
    /// sample is used.
    #[arg(long)]
    pub data: String,
    #[command(flatten)]
    pub normalization: super::NormalizationArgs,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let m = a.model.load()?;
    let net = &m.network;
    let masks = m.masks(a.masks.as_deref())?;
    let shape = net.values[net.inputs[0]].shape.clone();
    let classes = net.values[net.outputs[0]].numel();
    let mut data =
        Dataset::load(&a.data, &shape, classes, a.model.seed).map_err(super::flag("--data"))?;
    a.normalization.apply(&mut data)?;
    let r = evaluate(
        net,
        masks.as_ref(),
        &data,
        a.batch_size,
        &candle_core::Device::Cpu,
    )?;
    if a.json {
        return super::print_json(&r);
    }
    println!(
        "accuracy {:.4} ({} of {}), mean cross-entropy {:.4}",
        r.accuracy, r.correct, r.samples, r.loss
    );
    Ok(())
}
