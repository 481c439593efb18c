//! `maskforge sweep`: prune at a range of compressions with several methods
//! and quotas, write one CSV row per run, optionally plot the curves.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use maskforge::error::{Error, Result};
use maskforge::report::sweep::{self, SweepConfig, SweepRow};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Comma list of methods, as prune's --method names them: rpi, mica,
    /// mica-min, mica-max, magnitude, lamp, synflow (snip, grasp and snip-it
    /// need calibration data, which sweep does not take).
    #[arg(long)]
    pub methods: String,
    /// Comma list of quotas: uniform, uniform+, erk, igq, smart, synflow.
    #[arg(long)]
    pub quotas: String,
    /// Pre-defined compressions: a:b:step in log10 exponents (0.5:6:0.5 is
    /// 10^0.5 .. 10^6), or a comma list of ratios (10,100,1e3,10^3.5).
    #[arg(long)]
    pub compressions: String,
    #[command(flatten)]
    pub select: super::SelectionArgs,
    /// Number of pruning seeds per point: 0..K-1.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// One row per run (method, quota, compression, seed).
    #[arg(long)]
    pub csv: PathBuf,
    /// The curves, three panels in one file: .svg or .png.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    total: usize,
    runs: usize,
    failed: usize,
    csv: &'a Path,
    plot: Option<&'a Path>,
    rows: &'a [SweepRow],
}

pub fn run(a: Args) -> Result<()> {
    // Every usage error before any work.
    let mut cfg = SweepConfig::parse(&a.methods, &a.quotas, &a.compressions, a.seeds)?;
    if let Some(p) = &a.plot {
        maskforge::report::plot::Format::from_path(p).map_err(super::flag("--plot"))?;
    }
    let m = a.model.load()?;
    let net = &m.network;
    cfg.selection = Some(a.select.selection(net)?);
    let inputs: Vec<&Path> = m.files.iter().map(|p| p.as_path()).collect();
    super::check_outputs(&[Some(&a.csv), a.plot.as_deref()], &inputs)?;

    let bar = ProgressBar::with_draw_target(Some(cfg.runs() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("sweep {bar:40} {pos}/{len} runs [{elapsed_precise} < {eta}]")
            .map_err(|e| Error::internal(format!("progress bar: {e}")))?,
    );
    let rows = sweep::run(net, &a.model.model, &cfg, |done, _| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    let rows = rows?;

    sweep::write_csv(&rows, &a.csv, &inputs)?;
    if let Some(p) = &a.plot {
        maskforge::report::plot::render(&rows, p, &inputs)?;
    }

    let failed = rows.iter().filter(|r| !r.is_ok()).count();
    if a.json {
        return super::print_json(&Report {
            model: &a.model.model,
            total: cfg
                .selection
                .as_ref()
                .map_or(net.prunable_count(), |s| s.selected_weights(net)),
            runs: rows.len(),
            failed,
            csv: &a.csv,
            plot: a.plot.as_deref(),
            rows: &rows,
        });
    }
    print_table(&rows);
    println!(
        "{} runs, {} failed (see the error column); wrote {}{}",
        rows.len(),
        failed,
        a.csv.display(),
        a.plot
            .as_ref()
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// Means over seeds, one line per (method, quota, compression).
fn print_table(rows: &[SweepRow]) {
    if let Some(r) = rows.first() {
        println!("model: {} ({} prunable weights)", r.model, r.total);
    }
    println!(
        "{:<10} {:<10} {:>12} {:>12} {:>12} {:>10} {:>10} {:>11} {:>9} {:>7}",
        "method",
        "quota",
        "target",
        "direct",
        "effective",
        "edge",
        "node",
        "log10 paths",
        "eff.nodes",
        "ok"
    );
    for s in sweep::series(rows) {
        for p in &s.points {
            let runs = format!("{}/{}", p.ok, p.ok + p.failed);
            match &p.mean {
                Some(m) => println!(
                    "{:<10} {:<10} {:>12} {:>12} {:>12} {:>10.4} {:>10.4} {:>11.3} {:>9.1} {:>7}",
                    s.method,
                    s.quota,
                    super::fmt_ratio(p.target_compression),
                    super::fmt_ratio(m.direct_compression),
                    super::fmt_ratio(m.effective_compression),
                    m.functional_edge_ratio,
                    m.functional_node_ratio,
                    m.log10_effective_paths,
                    m.effective_nodes,
                    runs
                ),
                None => println!(
                    "{:<10} {:<10} {:>12} {:>12} {:>12} {:>10} {:>10} {:>11} {:>9} {:>7}",
                    s.method,
                    s.quota,
                    super::fmt_ratio(p.target_compression),
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    runs
                ),
            }
        }
    }
}
