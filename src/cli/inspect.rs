//! `maskforge inspect`.

use serde::Serialize;

use maskforge::error::{Error, Result};
use maskforge::graph::Network;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct NodeView {
    name: String,
    op: &'static str,
    inputs: Vec<String>,
    output: String,
    shape: Vec<usize>,
    weight: Option<String>,
    params: Option<usize>,
    /// A prunable weight the model keeps dense unless `--include` names it
    /// (an embedding, `lm_head`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dense_by_default: bool,
}

#[derive(Serialize)]
struct Inspection {
    model: String,
    inputs: Vec<(String, Vec<usize>)>,
    outputs: Vec<(String, Vec<usize>)>,
    prunable_layers: usize,
    prunable_weights: usize,
    residual_adds: usize,
    concats: usize,
    nodes: Vec<NodeView>,
}

fn inspection(net: &Network) -> Inspection {
    let io = |vs: &[usize]| {
        vs.iter()
            .map(|&v| (net.values[v].name.clone(), net.values[v].shape.clone()))
            .collect()
    };
    Inspection {
        model: net.name.clone(),
        inputs: io(&net.inputs),
        outputs: io(&net.outputs),
        prunable_layers: net.layers.len(),
        prunable_weights: net.prunable_count(),
        residual_adds: net.nodes.iter().filter(|n| n.op.kind() == "Add").count(),
        concats: net.nodes.iter().filter(|n| n.op.kind() == "Concat").count(),
        nodes: net
            .nodes
            .iter()
            .map(|n| NodeView {
                name: n.name.clone(),
                op: n.op.kind(),
                inputs: n
                    .inputs
                    .iter()
                    .map(|&v| net.values[v].name.clone())
                    .collect(),
                output: net.values[n.output].name.clone(),
                shape: net.values[n.output].shape.clone(),
                weight: n.op.weight().map(str::to_string),
                params: n
                    .op
                    .weight()
                    .and_then(|w| net.layer_index(w))
                    .map(|i| net.layers[i].numel()),
                dense_by_default: n
                    .op
                    .weight()
                    .and_then(|w| net.layer_index(w))
                    .is_some_and(|i| !net.layers[i].default_selected),
            })
            .collect(),
    }
}

fn list_unsupported(spec: &str, ops: &[maskforge::error::UnsupportedOp], json: bool) -> Result<()> {
    if json {
        let list: Vec<_> = ops
            .iter()
            .map(|u| serde_json::json!({"op": u.op, "node": u.node, "why": u.detail}))
            .collect();
        super::print_json(&serde_json::json!({ "model": spec, "unsupported": list }))
    } else {
        println!("{spec}: {} unsupported op(s):", ops.len());
        for u in ops {
            println!("  {u}");
        }
        Ok(())
    }
}

pub fn run(a: Args) -> Result<()> {
    let spec = &a.model.model;
    // One read: a model with unreadable ops lists them all on stdout too.
    let m = match a.model.load() {
        Ok(m) => m,
        Err(e) => {
            if let Error::UnsupportedOps { ops } = e.root() {
                list_unsupported(spec, ops, a.json)?;
                return Err(Error::input(format!(
                    "{spec}: {} unsupported op(s), first: {}",
                    ops.len(),
                    ops[0]
                )));
            }
            return Err(e);
        }
    };
    let ins = inspection(&m.network);
    if a.json {
        return super::print_json(&ins);
    }
    println!("model: {}", ins.model);
    for (n, s) in &ins.inputs {
        println!("input  {n} {s:?}");
    }
    for (n, s) in &ins.outputs {
        println!("output {n} {s:?}");
    }
    println!(
        "{} nodes, {} prunable layers, {} prunable weights, {} adds, {} concats",
        ins.nodes.len(),
        ins.prunable_layers,
        ins.prunable_weights,
        ins.residual_adds,
        ins.concats
    );
    println!("{:<36} {:<14} {:<20} inputs", "node", "op", "shape");
    for n in &ins.nodes {
        let w = n
            .weight
            .as_ref()
            .map(|w| {
                let dense = if n.dense_by_default {
                    ", dense unless --include names it"
                } else {
                    ""
                };
                format!(
                    "  [prunable: {w}, {} weights{dense}]",
                    n.params.unwrap_or(0)
                )
            })
            .unwrap_or_default();
        println!(
            "{:<36} {:<14} {:<20} {}{}",
            n.name,
            n.op,
            format!("{:?}", n.shape),
            n.inputs.join(", "),
            w
        );
    }
    Ok(())
}
