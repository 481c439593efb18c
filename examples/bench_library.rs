//! The library's pruning step alone, for `scripts/bench-official`: the part
//! of `maskforge prune` that matches the official code's timed
//! `prune_loop` call (scores or placement, masks and the effective pass),
//! without process start, argument parsing, building the zoo model,
//! reading the calibration data or writing the mask file.
//!
//! ```text
//! cargo run --release --example bench_library -- MODEL METHOD COMPRESSION [SAMPLES]
//! ```
//!
//! MODEL is a zoo name (vgg16, resnet20), METHOD a `--method` name
//! (snip, grasp, synflow, mica, rpi; quota IGQ for the random ones),
//! SAMPLES the number of `synthetic:N` calibration samples, all of them
//! used, in one batch (default 100). Prints the seconds of `prune_with`.

use std::sync::Arc;
use std::time::Instant;

use maskforge::autodiff::calibration::Calibration;
use maskforge::io::data::Dataset;
use maskforge::methods::prune::{prune_with, Method, PruneSpec};
use maskforge::methods::quota::{target_from_compression, Quota};
use maskforge::methods::scored::Context;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The binary's allocator tunables (src/main.rs), so the step allocates
    // as it does under `maskforge prune`.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables, under the allocator's
    // own lock, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 512 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: bench_library MODEL METHOD COMPRESSION [SAMPLES]".into());
    }
    let compression: f64 = args[2].parse()?;
    let samples: usize = args.get(3).map_or(Ok(100), |s| s.parse())?;
    let method: Method = args[1].parse()?;
    let net = maskforge::zoo::build(&args[0], 0)?;
    let mut ctx = Context {
        density: Some(1.0 / compression),
        ..Default::default()
    };
    if matches!(method, Method::Scored(..)) {
        let shape = net.values[net.inputs[0]].shape.clone();
        let classes = net.values[net.outputs[0]].numel();
        let data = Dataset::load(&format!("synthetic:{samples}"), &shape, classes, 0)?;
        let idx: Vec<usize> = (0..data.len()).collect();
        ctx.calibration = Some(Arc::new(Calibration::from_dataset(
            &data,
            &idx,
            samples,
            &ctx.device,
        )?));
    }
    let quota = if matches!(method, Method::Rpi | Method::Mica(_)) {
        Quota::Igq
    } else {
        Quota::Uniform
    };
    let spec = PruneSpec {
        method,
        quota,
        target_kept: target_from_compression(net.prunable_count(), compression)?,
        seed: 0,
        effective: false,
    };
    let t = Instant::now();
    let out = prune_with(&net, &spec, &ctx, &mut |_, _| {})?;
    let seconds = t.elapsed().as_secs_f64();
    println!("{seconds:.4} kept {}", out.raw.count_ones());
    Ok(())
}
