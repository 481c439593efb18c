//! The sparsity audit: direct vs effective counts per layer and in total.
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, audit::audit};
//! let net = zoo::build("resnet20", 0).unwrap();
//! let r = audit(&net, &MaskSet::dense(&net));
//! assert_eq!(r.kept, r.active);
//! assert_eq!(r.effective_compression, 1.0);
//! ```

use serde::Serialize;

use crate::effective::{analyse, node_counts, Analysis, NodeCounts};
use crate::mask::MaskSet;
use crate::network::{LayerKind, Network};

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
    #[serde(skip)]
    pub effective: MaskSet,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::INFINITY
    } else {
        a as f64 / b as f64
    }
}

/// Audit `masks` on `net`.
pub fn audit(net: &Network, masks: &MaskSet) -> AuditReport {
    audit_with(net, masks, analyse(net, masks))
}

/// Audit from an analysis already computed for `masks` (no second pass).
pub fn audit_with(net: &Network, masks: &MaskSet, a: Analysis) -> AuditReport {
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
    AuditReport {
        model: net.name.clone(),
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
        effective: a.active,
    }
}
