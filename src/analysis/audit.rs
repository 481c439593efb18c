//! The sparsity audit: direct vs effective counts per layer and in total,
//! and the two node-path balancing figures (Pham et al.,
//! papers/npb-node-path-balancing-abstract.txt): effective paths
//! ([`crate::analysis::paths`]) and effective nodes (the functional nodes of
//! [`crate::analysis::effective::node_counts`], summed over the layers).
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, analysis::audit::audit};
//! let net = zoo::build("resnet20", 0).unwrap();
//! let r = audit(&net, &MaskSet::dense(&net)).unwrap();
//! assert_eq!(r.kept, r.active);
//! assert_eq!(r.effective_compression, 1.0);
//! assert_eq!(r.effective_nodes, r.total_nodes);
//! assert!(r.paths.unwrap().log10_effective_paths > 20.0);
//! ```

use serde::Serialize;

use crate::analysis::effective::{analyse, node_counts, Analysis, NodeCounts};
use crate::analysis::paths::effective_paths;
use crate::error::Result;
use crate::graph::{LayerKind, Network};
use crate::mask::MaskSet;

/// One prunable layer's figures.
#[derive(Clone, Debug, Serialize)]
pub struct LayerAudit {
    pub name: String,
    pub kind: LayerKind,
    pub shape: Vec<usize>,
    pub total: usize,
    pub kept: usize,
    pub active: usize,
    pub nodes: NodeCounts,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    pub model: String,
    /// The input shapes the audit is exact for ([`Network::input_signature`]).
    pub input_shape: String,
    pub layers: Vec<LayerAudit>,
    pub total: usize,
    pub kept: usize,
    pub active: usize,
    /// total / kept.
    pub direct_compression: f64,
    /// total / active.
    pub effective_compression: f64,
    /// Functional nodes over nodes reached from the input (MiCA Fig. 9).
    pub functional_node_ratio: f64,
    /// Layers with no active weight (the network is cut there).
    pub layers_without_active_weights: Vec<String>,
    /// NPB: output units (channels, neurons) of the prunable layers that lie
    /// on some effective path, summed over the layers; per layer it is
    /// `nodes.functional`.
    pub effective_nodes: usize,
    /// Output units of the prunable layers, summed.
    pub total_nodes: usize,
    /// NPB effective paths, at the top level of the JSON; `None` when the
    /// caller skipped them ([`Paths::Skip`]).
    #[serde(flatten)]
    pub paths: Option<PathFigures>,
    #[serde(skip)]
    pub effective: MaskSet,
}

/// The effective-path figures of an audit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PathFigures {
    /// NPB: log10 of the number of input -> output paths through kept
    /// weights; `-inf` (`null` in JSON) when the network is cut.
    pub log10_effective_paths: f64,
    /// Path counts that lost precision below f64's range (see
    /// [`crate::analysis::paths::PathCount`]); when nonzero the path figure may be low.
    pub paths_underflowed: usize,
}

/// Whether an audit counts the effective paths: a forward pass over the
/// network, several times the cost of the rest of the audit, so a caller
/// that does not report them skips it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paths {
    Count,
    Skip,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::INFINITY
    } else {
        a as f64 / b as f64
    }
}

/// Audit `masks` on `net`, effective paths included.
pub fn audit(net: &Network, masks: &MaskSet) -> Result<AuditReport> {
    audit_with(net, masks, analyse(net, masks), Paths::Count)
}

/// Audit from an analysis already computed for `masks` (no second pass).
pub fn audit_with(
    net: &Network,
    masks: &MaskSet,
    a: Analysis,
    paths: Paths,
) -> Result<AuditReport> {
    // Inactive weights lie on no path: counting on the active masks gives
    // the same number and skips dead work.
    let paths = match paths {
        Paths::Count => {
            let p = effective_paths(net, &a.active)?;
            Some(PathFigures {
                log10_effective_paths: p.log10,
                paths_underflowed: p.underflowed,
            })
        }
        Paths::Skip => None,
    };
    let nodes = node_counts(net, &a);
    let layers: Vec<LayerAudit> = net
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerAudit {
            name: l.name.clone(),
            kind: l.kind,
            shape: l.stored_shape.clone(),
            total: l.numel(),
            kept: masks.layers[i].count_ones(),
            active: a.active.layers[i].count_ones(),
            nodes: nodes[i],
        })
        .collect();
    let total = layers.iter().map(|l| l.total).sum();
    let kept = layers.iter().map(|l| l.kept).sum();
    let active = layers.iter().map(|l| l.active).sum();
    let reached: usize = nodes.iter().map(|n| n.reached).sum();
    let functional: usize = nodes.iter().map(|n| n.functional).sum();
    Ok(AuditReport {
        model: net.name.clone(),
        input_shape: net.input_signature(),
        layers_without_active_weights: layers
            .iter()
            .filter(|l| l.active == 0)
            .map(|l| l.name.clone())
            .collect(),
        layers,
        total,
        kept,
        active,
        direct_compression: ratio(total, kept),
        effective_compression: ratio(total, active),
        functional_node_ratio: if reached == 0 {
            0.0
        } else {
            functional as f64 / reached as f64
        },
        effective_nodes: functional,
        total_nodes: nodes.iter().map(|n| n.total).sum(),
        paths,
        effective: a.active,
    })
}
