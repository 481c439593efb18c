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
    pub select: super::SelectionArgs,
    #[command(flatten)]
    pub scoring: super::prune::ScoringArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    /// Left dense by the selection: outside the quota and the target.
    frozen: bool,
    total: usize,
    kept: usize,
    density: f64,
}

pub fn run(a: Args) -> Result<()> {
    let m = a.model.load()?;
    let net = &m.network;
    let sel = a.select.selection(net)?;
    // The target and the quota are over the selected layers.
    let selected = sel.selected_weights(net);
    let (target, _) = a.amount.target(selected)?;
    let mut ctx = a.scoring.context(net, m.tokens.as_ref(), a.model.seed)?;
    ctx.density = Some(a.amount.density()?);
    ctx.selection = Some(sel.clone());
    let q = super::prune::parse_quota(&a.quota, net)?;
    let q = maskforge::methods::prune::resolve_quota(net, &q, target, &ctx)?;
    let counts = sel.kept_counts(net, &q, target)?;
    let rows: Vec<Row> = net
        .layers
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(li, (l, &k))| Row {
            name: l.name.clone(),
            frozen: !sel.is_selected(li),
            total: l.numel(),
            kept: k,
            density: k as f64 / l.numel() as f64,
        })
        .collect();
    if a.json {
        return super::print_json(&serde_json::json!({
            "quota": a.quota, "target_kept": target, "total": selected,
            "all_prunable": net.prunable_count(), "include": sel.include(),
            "exclude": sel.exclude(), "frozen_layers": sel.frozen_names(net), "layers": rows
        }));
    }
    println!(
        "{:<40} {:>12} {:>12} {:>10}",
        "layer", "total", "kept", "density"
    );
    for r in &rows {
        let density = if r.frozen {
            "frozen".to_string()
        } else {
            format!("{:.6}", r.density)
        };
        println!(
            "{:<40} {:>12} {:>12} {:>10}",
            r.name, r.total, r.kept, density
        );
    }
    if sel.is_all() {
        println!("total: {} kept of {}", target, selected);
    } else {
        println!(
            "total: {} kept of {} selected ({} frozen layers dense, {} prunable in all)",
            target,
            selected,
            net.layers.len() - sel.flags().iter().filter(|&&s| s).count(),
            net.prunable_count()
        );
    }
    Ok(())
}
