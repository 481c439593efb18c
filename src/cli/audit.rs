//! `maskforge audit`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maskforge::analysis::audit::{audit, AuditReport};
use maskforge::error::Result;
use maskforge::io::maskfile;
use maskforge::mask::MaskSet;
use maskforge::methods::nm::{check, Conformance, Pattern};
use maskforge::methods::selection::Selection;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Mask file to audit; without it, zeros in the weights (or `*_mask`
    /// tensors of a pruned PyTorch checkpoint) are the mask.
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// Write the effective mask here (CONVENTIONS format).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub format: super::MaskFormatArgs,
    /// Count only these layers in the totals (--include/--exclude GLOB);
    /// the others are reported as frozen.
    #[command(flatten)]
    pub select: super::SelectionArgs,
    /// Also check an N:M pattern (e.g. 2:4): per layer, whether every
    /// group of M consecutive weights along the input dimension keeps at
    /// most N (the mask's, or the checkpoint's nonzero weights).
    #[arg(long)]
    pub pattern: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let pattern = a
        .pattern
        .as_deref()
        .map(Pattern::parse)
        .transpose()
        .map_err(super::flag("--pattern"))?;
    let m = a.model.load()?;
    let net = &m.network;
    let masks = match m.masks(a.masks.as_deref())? {
        Some(masks) => masks,
        None => MaskSet::from_weights(net)?,
    };
    let mut report = audit(net, &masks)?;
    // The totals count the selected layers; the whole network's figures go
    // under `all_prunable`.
    let sel = a.select.selection(net)?;
    let (selected, all) = sel.totals(net, &masks, &report.effective);
    report.total = selected.total;
    report.kept = selected.kept;
    report.active = selected.active;
    report.direct_compression = selected.direct_compression;
    report.effective_compression = selected.effective_compression;
    // The pattern is judged on the selected layers: frozen ones are dense
    // by intent (an LM head, an embedding) and listed as frozen.
    let conformance = pattern.map(|p| {
        let layers: Vec<_> = check(net, &masks, p)
            .into_iter()
            .enumerate()
            .filter(|(li, _)| sel.is_selected(*li))
            .map(|(_, c)| c)
            .collect();
        (p, layers)
    });
    if let Some(out) = &a.output {
        let mut inputs: Vec<&Path> = m.files.iter().map(|p| p.as_path()).collect();
        if let Some(p) = &a.masks {
            inputs.push(p);
        }
        let mut meta = metadata(
            &report,
            &m.sha256()?,
            m.network.input_signature(),
            a.masks.is_some(),
        );
        if !sel.is_all() || a.select.given() {
            let (include, exclude) = sel.provenance();
            meta.insert("include".into(), include);
            meta.insert("exclude".into(), exclude);
            meta.insert("frozen_layers".into(), sel.frozen_names(net).join(","));
        }
        maskfile::write(
            out,
            &inputs,
            net,
            &report.effective,
            a.format.format(),
            &meta,
            m.sharding.as_ref(),
        )?;
    }
    if a.json {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| maskforge::error::Error::internal(e.to_string()))?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("all_prunable".into(), serde_json::json!(all));
            obj.insert("include".into(), serde_json::json!(sel.include()));
            obj.insert("exclude".into(), serde_json::json!(sel.exclude()));
            obj.insert(
                "frozen_layers".into(),
                serde_json::json!(sel.frozen_names(net)),
            );
            if let Some(layers) = obj.get_mut("layers").and_then(|l| l.as_array_mut()) {
                for (li, l) in layers.iter_mut().enumerate() {
                    if let Some(l) = l.as_object_mut() {
                        l.insert("frozen".into(), (!sel.is_selected(li)).into());
                    }
                }
            }
        }
        if let (Some((p, layers)), Some(obj)) = (&conformance, v.as_object_mut()) {
            obj.insert(
                "pattern".into(),
                serde_json::json!({
                    "pattern": p.to_string(),
                    "conforms": layers.iter().all(|l| l.conforms),
                    "layers": layers,
                }),
            );
        }
        return super::print_json(&v);
    }
    print_table(&report, &sel);
    if !sel.is_all() {
        println!(
            "all prunable layers: {} weights, {} kept, {} active (direct {}x, effective {}x)",
            all.total,
            all.kept,
            all.active,
            super::fmt_ratio(all.direct_compression),
            super::fmt_ratio(all.effective_compression)
        );
    }
    if let Some((p, layers)) = &conformance {
        print_conformance(*p, layers);
    }
    Ok(())
}

fn print_conformance(p: Pattern, layers: &[Conformance]) {
    println!(
        "{:<40} {:>10} {:>10} {:>10}  {p}",
        "layer", "groups", "breaking", "exactly N"
    );
    for l in layers {
        let verdict = match (&l.unfit, l.conforms) {
            (Some(why), _) => format!("cannot hold it: {why}"),
            (None, true) => "conforms".to_string(),
            (None, false) => format!("breaks {p}"),
        };
        println!(
            "{:<40} {:>10} {:>10} {:>10}  {verdict}",
            l.layer, l.groups, l.violating, l.exactly_n
        );
    }
    let breaking: Vec<&str> = layers
        .iter()
        .filter(|l| l.unfit.is_none() && !l.conforms)
        .map(|l| l.layer.as_str())
        .collect();
    if breaking.is_empty() {
        println!("every layer that can hold {p} conforms");
    } else {
        println!(
            "{} layers break {p}: {}",
            breaking.len(),
            breaking.join(", ")
        );
    }
}

fn metadata(
    r: &AuditReport,
    sha: &str,
    inputs: String,
    from_file: bool,
) -> BTreeMap<String, String> {
    maskfile::Provenance {
        method: "effective".into(),
        quota: if from_file { "masks" } else { "weights" }.into(),
        target_compression: super::fmt_ratio(r.direct_compression),
        seed: "none".into(),
        direct_compression: r.direct_compression,
        effective_compression: r.effective_compression,
        model_sha256: sha.into(),
        input_shape: inputs,
    }
    .into_metadata()
}

fn print_table(r: &AuditReport, sel: &Selection) {
    println!("model: {} (input {})", r.model, r.input_shape);
    println!(
        "{:<40} {:>6} {:>12} {:>12} {:>12} {:>10}",
        "layer", "kind", "total", "kept", "active", "functional"
    );
    for (li, l) in r.layers.iter().enumerate() {
        let kind = if sel.is_selected(li) {
            format!("{:?}", l.kind)
        } else {
            "frozen".to_string()
        };
        println!(
            "{:<40} {:>6} {:>12} {:>12} {:>12} {:>4}/{:<5}",
            l.name, kind, l.total, l.kept, l.active, l.nodes.functional, l.nodes.total
        );
    }
    let over = if sel.is_all() {
        String::new()
    } else {
        format!(
            " in the selected layers ({} frozen layers not counted)",
            sel.flags().iter().filter(|&&s| !s).count()
        )
    };
    println!(
        "total: {} weights, {} kept, {} active{over}",
        r.total, r.kept, r.active
    );
    println!(
        "direct compression {}x, effective compression {}x, functional-node ratio {:.4}",
        super::fmt_ratio(r.direct_compression),
        super::fmt_ratio(r.effective_compression),
        r.functional_node_ratio
    );
    if let Some(p) = &r.paths {
        println!(
            "node-path balancing: {}, {} of {} nodes effective (per layer: functional)",
            fmt_paths(p.log10_effective_paths),
            r.effective_nodes,
            r.total_nodes
        );
        if p.paths_underflowed > 0 {
            println!(
                "warning: {} path counts fell below f64's range; the path figure may be low",
                p.paths_underflowed
            );
        }
    }
    if !r.layers_without_active_weights.is_empty() {
        println!(
            "layers with no active weight (network disconnected): {}",
            r.layers_without_active_weights.join(", ")
        );
    }
}

/// `10^56.744 effective paths`, or `no effective path` when the count is 0.
fn fmt_paths(log10: f64) -> String {
    if log10.is_finite() {
        format!("10^{log10:.3} effective paths")
    } else {
        "no effective path".into()
    }
}
