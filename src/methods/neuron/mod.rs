//! Neurons as pruning units (structured pruning): which hidden layers can
//! lose whole neurons, and the weight masks a choice of kept neurons implies.
//!
//! A *neuron group* is a prunable layer (the producer) whose output reaches
//! exactly one other prunable layer (the consumer) through one-to-one or
//! per-channel operations only: activations, BatchNorm and affine constants,
//! pools, and a Flatten into a dense layer. Neuron `j` of the group is the
//! producer's output row (dense) or filter (conv) `j`; pruning it clears that
//! row and the consumer's matching input columns (`block` columns per neuron
//! when a conv's channel of `H x W` values is flattened into a dense layer),
//! so no trace of the neuron is left in either weight (bias and BatchNorm
//! shift of a pruned neuron still produce a constant, which the cleared
//! columns stop). The output layer's neurons are the classes and are never
//! pruned; a layer whose output feeds a residual `Add` or a `Concat` is not a
//! group, because removing its channel would also need the partner's, nor
//! is one whose output meets any op that mixes or moves elements across
//! channels (products of activations, MatMul, normalisations over axes,
//! element maps): its channels are no longer neurons there. Dense layers
//! over leading axes (`[..., in] -> [..., out]`, a transformer's linear
//! layers) are neither producers nor consumers of a group: their neurons are
//! shared by every position, which neither these masks nor the neuron
//! scores (one feature vector per sample) model yet.
//!
//! Units are chosen per group by a score ([`keep_top`]: highest kept, ties to
//! the lower index, so a run is deterministic); the scores themselves come
//! from [`crate::methods::neuron::ossum`] (OSSuM, its variants, norm and random baselines).
//!
//! ```
//! use maskforge::{zoo, methods::neuron};
//! let net = zoo::build("lenet300", 0).unwrap();
//! let groups = neuron::groups(&net);
//! assert_eq!(groups.len(), 2); // the 300 and the 100 hidden neurons
//! let keep = vec![neuron::keep_top(&vec![1.0; 300], 30), neuron::keep_top(&vec![1.0; 100], 10)];
//! let masks = neuron::structured_masks(&net, &groups, &keep);
//! // 30 rows of fc1, 30 x 10 of fc2, 10 columns of fc3.
//! assert_eq!(masks.count_ones(), 30 * 784 + 30 * 10 + 10 * 10);
//! ```

pub mod ossum;

use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{LayerKind, Network, ValueId};
use crate::mask::MaskSet;

/// A hidden layer whose neurons can be pruned as units.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NeuronGroup {
    /// The layer whose output neurons (rows or filters) these are.
    pub producer: usize,
    /// The one prunable layer reading them.
    pub consumer: usize,
    /// Number of neurons: the producer's output channels.
    pub width: usize,
    /// Consumer input features per neuron (1, or `H * W` after a Flatten).
    pub block: usize,
    /// The consumer's input value: the activations a neuron scorer reads.
    pub features: ValueId,
}

/// Every neuron group of `net`, in layer order.
pub fn groups(net: &Network) -> Vec<NeuronGroup> {
    let consumers = net.consumers();
    let layer_of = net.layer_of_node();
    (0..net.layers.len())
        .filter_map(|li| group_of(net, &consumers, &layer_of, li))
        .collect()
}

/// Follow layer `li`'s output to the single prunable layer reading it.
fn group_of(
    net: &Network,
    consumers: &[Vec<usize>],
    layer_of: &[Option<usize>],
    li: usize,
) -> Option<NeuronGroup> {
    let width = net.layers[li].shape[0];
    let mut v = net.nodes[net.layers[li].node].output;
    let mut block = 1;
    let mut flat = false;
    if net.layers[li].kind == LayerKind::Dense && net.values[v].shape.len() > 1 {
        return None;
    }
    loop {
        if net.outputs.contains(&v) {
            return None;
        }
        let [c] = consumers[v][..] else {
            return None;
        };
        let node = &net.nodes[c];
        if node.inputs.len() != 1 {
            return None;
        }
        if let Some(consumer) = layer_of[c] {
            let l = &net.layers[consumer];
            let fits = match (&node.op, l.kind) {
                (Op::Conv { conv, .. }, LayerKind::Conv) => {
                    conv.groups == 1 && block == 1 && conv.in_channels == width
                }
                // A dense layer over leading axes reads features on the
                // last axis of each position, not the producer's neurons.
                (_, LayerKind::Dense) => {
                    net.values[v].shape.len() == 1 && l.shape[1] == width * block
                }
                _ => false,
            };
            return fits.then_some(NeuronGroup {
                producer: li,
                consumer,
                width,
                block,
                features: v,
            });
        }
        let shape_in = &net.values[v].shape;
        let shape_out = &net.values[node.output].shape;
        match &node.op {
            Op::Activation(_) | Op::Norm(_) | Op::Identity => {}
            Op::Pool(_) | Op::GlobalPool(_) => {}
            // A Flatten keeps channel-major order: channel j owns a block.
            Op::Reshape if !flat && shape_out.len() == 1 && shape_in.first() == Some(&width) => {
                block = shape_in[1..].iter().product();
                flat = true;
            }
            _ => return None,
        }
        let channels = if flat { width * block } else { width };
        if shape_out.first() != Some(&channels) {
            return None;
        }
        v = node.output;
    }
}

/// The indices of the `k` highest scores, as a keep flag per neuron; ties
/// go to the lower index.
pub fn keep_top(scores: &[f64], k: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut keep = vec![false; scores.len()];
    for &j in order.iter().take(k) {
        keep[j] = true;
    }
    keep
}

/// Clear the rows of pruned neurons in each group's producer and the
/// matching input columns of its consumer, starting from the dense mask.
pub fn structured_masks(net: &Network, groups: &[NeuronGroup], keep: &[Vec<bool>]) -> MaskSet {
    let mut masks = MaskSet::dense(net);
    for (g, k) in groups.iter().zip(keep) {
        apply_group(net, &mut masks, g, k);
    }
    masks
}

/// Clear group `g`'s pruned neurons (`keep[j] == false`) in `masks`.
pub fn apply_group(net: &Network, masks: &mut MaskSet, g: &NeuronGroup, keep: &[bool]) {
    let row = net.layers[g.producer].numel() / g.width;
    let cons = &net.layers[g.consumer];
    let (c_out, c_in) = (cons.shape[0], cons.shape[1]);
    let taps: usize = cons.shape[2..].iter().product();
    for j in (0..g.width).filter(|&j| !keep[j]) {
        let p = &mut masks.layers[g.producer];
        (j * row..(j + 1) * row).for_each(|i| p.set(i, false));
        let c = &mut masks.layers[g.consumer];
        for o in 0..c_out {
            let start = (o * c_in + j * g.block) * taps;
            (start..start + g.block * taps).for_each(|i| c.set(i, false));
        }
    }
}

/// Neurons kept per group for a kept fraction (at least one each).
pub fn counts_for_fraction(groups: &[NeuronGroup], kept_fraction: f64) -> Result<Vec<usize>> {
    if !(kept_fraction > 0.0 && kept_fraction <= 1.0) {
        return Err(Error::input(format!(
            "kept neuron fraction {kept_fraction} is outside (0, 1]"
        )));
    }
    Ok(groups
        .iter()
        .map(|g| ((g.width as f64 * kept_fraction).round() as usize).clamp(1, g.width))
        .collect())
}

/// Neurons kept per group from explicit widths (`--widths 100,50`).
pub fn counts_for_widths(
    net: &Network,
    groups: &[NeuronGroup],
    widths: &[usize],
) -> Result<Vec<usize>> {
    if widths.len() != groups.len() {
        return Err(Error::input(format!(
            "got {} widths but the model has {} prunable hidden layers ({})",
            widths.len(),
            groups.len(),
            names(net, groups)
        )));
    }
    groups
        .iter()
        .zip(widths)
        .map(|(g, &w)| {
            if w == 0 || w > g.width {
                Err(Error::input(format!(
                    "{} has {} neurons, cannot keep {w}",
                    net.layers[g.producer].name, g.width
                )))
            } else {
                Ok(w)
            }
        })
        .collect()
}

/// The producers' names, for messages.
pub fn names(net: &Network, groups: &[NeuronGroup]) -> String {
    groups
        .iter()
        .map(|g| net.layers[g.producer].name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo;

    #[test]
    fn mlp_groups_map_rows_to_the_next_layers_columns() {
        let net = zoo::build("mlp:6-4-3-2", 0).unwrap();
        let g = groups(&net);
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].producer, g[0].consumer, g[0].width, g[0].block),
            (0, 1, 4, 1)
        );
        assert_eq!(
            (g[1].producer, g[1].consumer, g[1].width, g[1].block),
            (1, 2, 3, 1)
        );
        // Prune neuron 1 of the first hidden layer only.
        let keep = vec![vec![true, false, true, true], vec![true; 3]];
        let m = structured_masks(&net, &g, &keep);
        let fc1 = &m.layers[0];
        for i in 0..24 {
            assert_eq!(fc1.get(i), !(6..12).contains(&i), "fc1 bit {i}");
        }
        let fc2 = &m.layers[1]; // [3, 4]: column 1 cleared
        for o in 0..3 {
            for i in 0..4 {
                assert_eq!(fc2.get(o * 4 + i), i != 1);
            }
        }
        assert_eq!(m.layers[2].count_ones(), 6);
    }

    #[test]
    fn conv_channels_flattened_into_a_dense_layer_own_a_block() {
        // LeNet-5: conv1 -> pool -> conv2 -> pool -> flatten -> fc1 ...
        let net = zoo::build("lenet5", 0).unwrap();
        let g = groups(&net);
        let conv2 = net
            .layers
            .iter()
            .position(|l| l.name == "conv2.weight")
            .unwrap();
        let g2 = g.iter().find(|g| g.producer == conv2).unwrap();
        let fc1 = &net.layers[g2.consumer];
        assert_eq!(fc1.kind, LayerKind::Dense);
        assert_eq!(g2.width * g2.block, fc1.shape[1]);
        let mut keep: Vec<Vec<bool>> = g.iter().map(|g| vec![true; g.width]).collect();
        let at = g.iter().position(|x| x == g2).unwrap();
        keep[at][0] = false;
        let m = structured_masks(&net, &g, &keep);
        let cleared = net.layers[g2.consumer].numel() - m.layers[g2.consumer].count_ones();
        assert_eq!(cleared, fc1.shape[0] * g2.block);
        for o in 0..fc1.shape[0] {
            let row = o * fc1.shape[1];
            assert!(!m.layers[g2.consumer].get(row));
            assert!(m.layers[g2.consumer].get(row + g2.block));
        }
    }

    #[test]
    fn residual_outputs_are_not_groups() {
        let net = zoo::build("resnet20", 0).unwrap();
        let g = groups(&net);
        // Only the first conv of each basic block feeds a single conv
        // through BN and ReLU; the second feeds the residual Add.
        assert_eq!(g.len(), 9);
        for x in &g {
            assert!(
                net.layers[x.producer].name.contains("conv1"),
                "{}",
                net.layers[x.producer].name
            );
        }
    }

    #[test]
    fn dense_layers_over_leading_axes_are_not_neuron_groups() {
        use crate::graph::op::{Activation, Window};
        use crate::graph::tensor::ConstTensor;
        use crate::graph::NetworkBuilder;
        let w = |o: usize, i: usize| ConstTensor::f32(vec![o, i], vec![0.5; o * i]);
        // [4, 4] -> fc1 (4 -> 4 at each of 4 positions) -> GELU [-> Flatten]
        // -> fc2: fc1's neurons are shared by the positions (and a Flatten
        // interleaves them position-major, although 4 * 4 = 16 fits).
        for flatten in [false, true] {
            let mut b = NetworkBuilder::new("seq");
            let x = b.input("x", vec![4, 4]).unwrap();
            let h = b.dense("fc1", x, "fc1.w", w(4, 4), None).unwrap();
            let mut h = b.activation("gelu", h, Activation::Gelu);
            if flatten {
                h = b.flatten("flat", h);
            }
            let n_in = *b.shape(h).last().unwrap();
            let y = b.dense("fc2", h, "fc2.w", w(2, n_in), None).unwrap();
            b.output(y);
            assert!(groups(&b.finish().unwrap()).is_empty(), "flatten {flatten}");
        }
        // A conv's 3 channels are not the features of a dense layer over
        // the last axis of [3, 3, 3], although both number 3.
        let mut b = NetworkBuilder::new("conv-dense");
        let x = b.input("x", vec![1, 3, 3]).unwrap();
        let c = ConstTensor::f32(vec![3, 1, 1, 1], vec![1.0; 3]);
        let h = b
            .conv("c", x, "c.w", c, None, Window::same(1, 0), 1)
            .unwrap();
        let y = b.dense("fc", h, "fc.w", w(2, 3), None).unwrap();
        b.output(y);
        assert!(groups(&b.finish().unwrap()).is_empty());
    }

    #[test]
    fn keep_top_breaks_ties_by_index() {
        assert_eq!(
            keep_top(&[1.0, 3.0, 3.0, 0.0], 2),
            vec![false, true, true, false]
        );
        assert_eq!(keep_top(&[2.0, 2.0, 2.0], 2), vec![true, true, false]);
    }
}
