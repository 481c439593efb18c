//! NPB's last step: weights that lie on no input -> output path are moved
//! where they will.
//!
//! The programmes see only the paths *into* a layer, so a layer may keep
//! weights on inputs no path reaches or on outputs a later layer ignores.
//! The reference code (pvh1602/NPB, `Pruners/utils.py`, `fine_tune_mask`)
//! then, for each conv layer in order, with `n` its inactive weights plus
//! those carried over:
//! - when `n > 1`: keeps only the layer's active weights and fills whole
//!   units, those with the most active weights first, until `n` weights are
//!   added (the last unit is filled whole, so a few more may be kept). A
//!   unit is a kernel, or for a 1 x 1 conv an input channel (every output
//!   of it);
//! - drops what is still inactive after the fill and carries that count to
//!   the next conv layer.
//!
//! Differences: a single inactive weight is moved too (theirs leaves it:
//! `n > 1`), so every kept weight serves a path; liveness is recomputed
//! before each layer (theirs reads one gradient taken before any change);
//! ties between units go to the lower index (theirs to whatever `argsort`
//! returns); and dense layers, which theirs leaves as they are (its CIFAR
//! nets have one, the classifier), are refilled too, by input feature like
//! a 1 x 1 conv but weight by weight, exactly `n` (a dense programme may give pairs to features no
//! path reaches: LeNet-5's hidden layers lost half their weights so).
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, bitset::BitSet, methods::npb::reinvest::reinvest};
//! use maskforge::analysis::effective::effective_masks;
//! let net = zoo::build("lenet5", 0).unwrap();
//! let mut masks = MaskSet::dense(&net);
//! // conv2 keeps only filters that read input channel 0 of conv1's 6...
//! let l = net.layer_index("conv2.weight").unwrap();
//! masks.layers[l] = BitSet::from_fn(masks.layers[l].len(), |k| (k / 25) % 6 == 0);
//! // ...while conv1 keeps 20 taps of filter 0 and 2 of filter 5, which
//! // conv2 never reads.
//! masks.layers[0] = BitSet::from_fn(150, |k| k < 20 || k == 125 || k == 126);
//! reinvest(&net, &mut masks, &[0, 1, 2, 3, 4]);
//! // The 2 dead taps went to filter 0, the one with the most active taps,
//! // filled whole (5 taps: a unit is filled whole).
//! assert_eq!(masks.layers[0], BitSet::from_fn(150, |k| k < 25));
//! assert_eq!(effective_masks(&net, &masks).count_ones(), masks.count_ones());
//! ```

use crate::analysis::effective::effective_masks;
use crate::bitset::BitSet;
use crate::graph::{LayerKind, Network};
use crate::mask::MaskSet;

use super::Shape;

/// Reinvest the inactive weights of every layer, visited in `order`: conv
/// layers by whole units, dense layers weight by weight.
pub fn reinvest(net: &Network, masks: &mut MaskSet, order: &[usize]) {
    // Liveness changes only where a layer is refilled (dropping inactive
    // weights changes no one's), so it is recomputed only then.
    let mut active = effective_masks(net, masks);
    let mut carried = 0;
    for &li in order {
        let owed = masks.layers[li].count_ones() - active.layers[li].count_ones() + carried;
        if owed == 0 {
            continue;
        }
        let whole = net.layers[li].kind == LayerKind::Conv;
        masks.layers[li] =
            fill_richest(&active.layers[li], &units(&Shape::of(net, li)), owed, whole);
        active = effective_masks(net, masks);
        carried = masks.layers[li].count_ones() - active.layers[li].count_ones();
        masks.layers[li] = active.layers[li].clone();
    }
}

/// The units a layer is refilled by: element indices of each kernel, or of
/// each input channel of a 1 x 1 conv without groups.
fn units(shape: &Shape) -> Vec<Vec<usize>> {
    let (outs, ins) = (shape.groups * shape.out_per_group, shape.in_per_group);
    if shape.taps == 1 && shape.groups == 1 {
        return (0..ins)
            .map(|i| (0..outs).map(|o| o * ins + i).collect())
            .collect();
    }
    (0..outs * ins)
        .map(|k| (k * shape.taps..(k + 1) * shape.taps).collect())
        .collect()
}

/// `active` plus units, most active first, until `owed` are added: whole
/// units (the last may overshoot), or weight by weight.
fn fill_richest(active: &BitSet, units: &[Vec<usize>], mut owed: usize, whole: bool) -> BitSet {
    let held = |u: &[usize]| u.iter().filter(|&&k| active.get(k)).count();
    let mut order: Vec<(usize, usize)> = units
        .iter()
        .enumerate()
        .map(|(u, e)| (held(e), u))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut mask = active.clone();
    for (held, u) in order {
        if owed == 0 {
            break;
        }
        if whole {
            owed = owed.saturating_sub(units[u].len() - held);
            units[u].iter().for_each(|&k| mask.set(k, true));
            continue;
        }
        for &k in &units[u] {
            if owed > 0 && !mask.get(k) {
                mask.set(k, true);
                owed -= 1;
            }
        }
    }
    mask
}
