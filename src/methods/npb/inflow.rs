//! The paths reaching each input channel of a layer: NPB's `P_in`.
//!
//! The reference code sets every weight to one, removes BatchNorm, turns
//! average pools into window sums and runs a ones input through the network
//! whose earlier layers are already masked (later layers still dense), then
//! sums the layer's input over its spatial positions. That forward is the
//! path count of [`crate::analysis::paths`], which we read at the layer's
//! input: per channel of a conv's `[C, H, W]` input, summed over positions;
//! per feature of a dense layer, summed over leading axes. Only ratios
//! matter to the programme, so the counts are returned divided by the
//! largest (they overflow f64 on deep networks otherwise).
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, methods::npb::inflow::paths_into};
//! let net = zoo::build("mlp:4-3-2", 0).unwrap();
//! let mut masks = MaskSet::dense(&net);
//! // Cut input 0 -> hidden 1: hidden 1 then carries 3 paths, the others 4.
//! masks.layers[0].set(1 * 4 + 0, false);
//! assert_eq!(paths_into(&net, &masks, 1).unwrap(), vec![1.0, 0.75, 1.0]);
//! ```

use crate::analysis::paths::counts_at_sum_rule;
use crate::error::Result;
use crate::graph::{LayerKind, Network};
use crate::mask::MaskSet;

/// Prunable layers in the order their nodes run (from the input).
pub fn layer_order(net: &Network) -> Vec<usize> {
    let mut order: Vec<usize> = (0..net.layers.len()).collect();
    order.sort_by_key(|&li| net.layers[li].node);
    order
}

/// `P_in` of layer `li` under `masks`, scaled so that the largest is 1
/// (all zero when no path reaches the layer).
pub fn paths_into(net: &Network, masks: &MaskSet, li: usize) -> Result<Vec<f64>> {
    let layer = &net.layers[li];
    let input = net.nodes[layer.node].inputs[0];
    // Placement reads products as sums (the masks after this layer are
    // not placed yet); the audit of the result applies dead factors.
    let counts = counts_at_sum_rule(net, masks, input)?;
    let shape = &net.value(input).shape;
    let mut per_channel = match layer.kind {
        LayerKind::Conv => {
            let channels = shape[0];
            let positions = counts.data.len() / channels.max(1);
            counts
                .data
                .chunks(positions.max(1))
                .map(|c| c.iter().sum::<f64>())
                .collect::<Vec<_>>()
        }
        LayerKind::Dense => {
            let features = *shape.last().unwrap_or(&1);
            let mut sums = vec![0.0; features];
            for row in counts.data.chunks(features.max(1)) {
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }
            sums
        }
    };
    let max = per_channel.iter().copied().fold(0.0, f64::max);
    if max > 0.0 {
        per_channel.iter_mut().for_each(|p| *p /= max);
    }
    Ok(per_channel)
}
