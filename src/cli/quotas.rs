//! `maskforge quotas`: per-layer densities and counts of a quota.

use serde::Serialize;

use maskforge::error::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[arg(long, default_value = "igq")]
    pub quota: String,
    #[command(flatten)]
    pub amount: super::prune::Amount,
    #[command(flatten)]
    pub scoring: super::prune::ScoringArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    total: usize,
    kept: usize,
    density: f64,
}

pub fn run(a: Args) -> Result<()> {
    let m = a.model.load()?;
    let net = &m.network;
    let (target, _) = a.amount.target(net.prunable_count())?;
    let mut ctx = a.scoring.context(net, m.tokens.as_ref(), a.model.seed)?;
    ctx.density = Some(a.amount.density()?);
    let q = super::prune::parse_quota(&a.quota, net)?;
    let q = maskforge::methods::prune::resolve_quota(net, &q, target, &ctx)?;
    let counts = maskforge::methods::quota::kept_counts(net, &q, target)?;
    let rows: Vec<Row> = net
        .layers
        .iter()
        .zip(&counts)
        .map(|(l, &k)| Row {
            name: l.name.clone(),
            total: l.numel(),
            kept: k,
            density: k as f64 / l.numel() as f64,
        })
        .collect();
    if a.json {
        return super::print_json(&serde_json::json!({
            "quota": a.quota, "target_kept": target, "total": net.prunable_count(), "layers": rows
        }));
    }
    println!(
        "{:<40} {:>12} {:>12} {:>10}",
        "layer", "total", "kept", "density"
    );
    for r in &rows {
        println!(
            "{:<40} {:>12} {:>12} {:>10.6}",
            r.name, r.total, r.kept, r.density
        );
    }
    println!("total: {} kept of {}", target, net.prunable_count());
    Ok(())
}
