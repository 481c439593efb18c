//! Which prunable layers a run prunes: the `--include GLOB` / `--exclude
//! GLOB` selection on weight names.
//!
//! A layer is *selected* when (no include glob is given and its
//! [`Layer::default_selected`] is set, or its weight name matches some
//! include glob) and its name matches no exclude glob. The other layers are
//! *frozen*: they stay fully dense (every weight kept) in the mask written,
//! and every target and quota is taken over the selected layers only
//! (compression = selected weights / kept selected weights; see
//! [`crate::methods::prune`]).
//!
//! Glob syntax (the `globset` crate's, matched against the whole weight
//! name, case-sensitive): `*` any run of characters, dots and slashes
//! included (`*.mlp.*` matches `model.layers.0.mlp.up_proj.weight`; `**`
//! is the same as `*`), `?` one character, `[abc]` / `[a-z]` / `[!abc]` one
//! character of (not of) a set, `{a,b}` either alternative, `\*` a literal
//! star. A glob that matches no prunable weight is an input error naming it
//! (a typo must not silently prune everything), and so is a selection of no
//! layer at all.
//!
//! ```
//! use maskforge::methods::selection::Selection;
//! let net = maskforge::zoo::build("lenet300", 0).unwrap();
//! // Weight names: fc1.weight, fc2.weight, fc3.weight.
//! let sel = Selection::from_globs(&net, &[], &["fc1.*".to_string()]).unwrap();
//! assert_eq!(sel.flags(), &[false, true, true]);
//! assert_eq!(sel.selected_weights(&net), 300 * 100 + 100 * 10);
//! // A glob that matches nothing names itself.
//! let err = Selection::from_globs(&net, &["fc9*".to_string()], &[]).unwrap_err();
//! assert!(err.to_string().contains("'fc9*'"));
//! ```

use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};
use crate::graph::{Layer, Network};
use crate::mask::MaskSet;
use crate::methods::quota::Quota;

/// Kept and active counts over a set of layers, and the compressions
/// they give (`total / kept`, `total / active`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Totals {
    pub total: usize,
    pub kept: usize,
    pub active: usize,
    pub direct_compression: f64,
    pub effective_compression: f64,
}

impl Totals {
    fn of(total: usize, kept: usize, active: usize) -> Self {
        Self {
            total,
            kept,
            active,
            direct_compression: total as f64 / kept as f64,
            effective_compression: total as f64 / active as f64,
        }
    }
}

/// The layers a run prunes (`flags()[l]`) and the globs that chose them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    selected: Vec<bool>,
    include: Vec<String>,
    exclude: Vec<String>,
}

/// Whether an include or an exclude glob failed; names the list in errors.
#[derive(Clone, Copy)]
enum Side {
    Include,
    Exclude,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Include => "include",
            Side::Exclude => "exclude",
        }
    }
}

fn compile(glob: &str, side: Side) -> Result<GlobMatcher> {
    let g: Glob = GlobBuilder::new(glob)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|e| {
            Error::input(format!(
                "{} glob '{glob}' is not a valid glob: {}",
                side.name(),
                e.kind()
            ))
        })?;
    Ok(g.compile_matcher())
}

/// The layers each of `globs` matches, with an error naming the first glob
/// that matches none.
fn matches(net: &Network, globs: &[String], side: Side) -> Result<Vec<bool>> {
    let mut any = vec![false; net.layers.len()];
    for g in globs {
        let m = compile(g, side)?;
        let mut hit = false;
        for (li, l) in net.layers.iter().enumerate() {
            if m.is_match(&l.name) {
                any[li] = true;
                hit = true;
            }
        }
        if !hit {
            return Err(Error::input(format!(
                "{} glob '{g}' matches no prunable weight of '{}' (its weights: {})",
                side.name(),
                net.name,
                examples(&net.layers)
            )));
        }
    }
    Ok(any)
}

/// A few weight names, to show what a glob is matched against.
fn examples(layers: &[Layer]) -> String {
    let mut v: Vec<String> = layers
        .iter()
        .take(4)
        .map(|l| format!("'{}'", l.name))
        .collect();
    if layers.len() > 4 {
        v.push(format!("... {} in all", layers.len()));
    }
    v.join(", ")
}

impl Selection {
    /// Every layer, whatever its default (placing given per-layer counts).
    pub fn everything(net: &Network) -> Self {
        Self {
            selected: vec![true; net.layers.len()],
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// The network's default: every layer whose
    /// [`Layer::default_selected`] is set.
    pub fn defaults(net: &Network) -> Self {
        Self {
            selected: net.layers.iter().map(|l| l.default_selected).collect(),
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// The layers chosen by `include` (none given: the defaults) minus
    /// those matched by `exclude`. Input errors: an invalid glob, a glob
    /// that matches no prunable weight, no layer left.
    pub fn from_globs(net: &Network, include: &[String], exclude: &[String]) -> Result<Self> {
        let base = if include.is_empty() {
            net.layers.iter().map(|l| l.default_selected).collect()
        } else {
            matches(net, include, Side::Include)?
        };
        let out = matches(net, exclude, Side::Exclude)?;
        let selected: Vec<bool> = base.iter().zip(&out).map(|(&b, &o)| b && !o).collect();
        if !selected.iter().any(|&s| s) {
            return Err(Error::input(format!(
                "the include/exclude globs select no prunable layer of '{}'",
                net.name
            )));
        }
        Ok(Self {
            selected,
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        })
    }

    /// `flags()[l]`: whether layer `l` (of `net.layers`) is pruned.
    pub fn flags(&self) -> &[bool] {
        &self.selected
    }

    /// Whether layer `li` is pruned (false: frozen, kept dense).
    pub fn is_selected(&self, li: usize) -> bool {
        self.selected.get(li).copied().unwrap_or(false)
    }

    /// Whether every layer is selected (nothing frozen).
    pub fn is_all(&self) -> bool {
        self.selected.iter().all(|&s| s)
    }

    /// The include globs given (empty: the defaults).
    pub fn include(&self) -> &[String] {
        &self.include
    }

    /// The exclude globs given.
    pub fn exclude(&self) -> &[String] {
        &self.exclude
    }

    /// Weights in the selected layers: the `N` of every target.
    pub fn selected_weights(&self, net: &Network) -> usize {
        self.weights(net, true)
    }

    /// Weights in the frozen layers (all kept).
    pub fn frozen_weights(&self, net: &Network) -> usize {
        self.weights(net, false)
    }

    fn weights(&self, net: &Network, selected: bool) -> usize {
        net.layers
            .iter()
            .enumerate()
            .filter(|&(li, _)| self.is_selected(li) == selected)
            .map(|(_, l)| l.numel())
            .sum()
    }

    /// Ones of `masks` in the selected layers.
    pub fn count_selected(&self, masks: &MaskSet) -> usize {
        masks
            .layers
            .iter()
            .enumerate()
            .filter(|&(li, _)| self.is_selected(li))
            .map(|(_, b)| b.count_ones())
            .sum()
    }

    /// The figures of masks `raw` with active weights `active` over the
    /// selected layers (what targets refer to) and over every prunable
    /// layer (frozen ones dense), in that order.
    pub fn totals(&self, net: &Network, raw: &MaskSet, active: &MaskSet) -> (Totals, Totals) {
        let selected = Totals::of(
            self.selected_weights(net),
            self.count_selected(raw),
            self.count_selected(active),
        );
        let all = Totals::of(net.prunable_count(), raw.count_ones(), active.count_ones());
        (selected, all)
    }

    /// Names of the frozen layers' weights, in network order.
    pub fn frozen_names(&self, net: &Network) -> Vec<String> {
        net.layers
            .iter()
            .enumerate()
            .filter(|&(li, _)| !self.is_selected(li))
            .map(|(_, l)| l.name.clone())
            .collect()
    }

    /// Frozen layers score `+inf` (ranked above every selected weight:
    /// always kept by any cut that keeps at least the frozen weights).
    pub fn freeze_scores(&self, scores: &mut [Vec<f64>]) {
        for (li, s) in scores.iter_mut().enumerate() {
            if !self.is_selected(li) {
                s.iter_mut().for_each(|x| *x = f64::INFINITY);
            }
        }
    }

    /// Set every weight of the frozen layers of `masks` (kept dense).
    pub fn fill_frozen(&self, masks: &mut MaskSet) {
        for (li, b) in masks.layers.iter_mut().enumerate() {
            if !self.is_selected(li) {
                *b = crate::bitset::BitSet::full(b.len());
            }
        }
    }

    /// Per-layer counts of the whole network from counts of the selected
    /// layers only (in order): frozen layers keep all their weights.
    pub fn expand_counts(&self, net: &Network, selected: &[usize]) -> Vec<usize> {
        let mut it = selected.iter();
        net.layers
            .iter()
            .enumerate()
            .map(|(li, l)| {
                if self.is_selected(li) {
                    it.next().copied().unwrap_or(0)
                } else {
                    l.numel()
                }
            })
            .collect()
    }

    /// The entries of a per-layer vector that belong to selected layers.
    pub fn pick<T: Clone>(&self, all: &[T]) -> Vec<T> {
        all.iter()
            .enumerate()
            .filter(|&(li, _)| self.is_selected(li))
            .map(|(_, x)| x.clone())
            .collect()
    }

    /// `net` as the quotas see it: only the selected layers are prunable
    /// (the graph is shared, the weights are not copied). Quotas computed on
    /// it are those of a network without the frozen layers.
    pub fn quota_view(&self, net: &Network) -> Network {
        Network {
            name: net.name.clone(),
            values: net.values.clone(),
            nodes: net.nodes.clone(),
            inputs: net.inputs.clone(),
            outputs: net.outputs.clone(),
            layers: self.pick(&net.layers),
            params: Default::default(),
            graph: net.graph.clone(),
        }
    }

    /// [`crate::methods::quota::kept_counts`] over the selected layers only
    /// (on [`Selection::quota_view`]: the quota of a network without the
    /// frozen layers), `target` kept among them; frozen layers keep all
    /// their weights. A [`Quota::Counts`] of one count per layer of `net`
    /// is read at the selected layers.
    pub fn kept_counts(&self, net: &Network, quota: &Quota, target: usize) -> Result<Vec<usize>> {
        if self.is_all() {
            return crate::methods::quota::kept_counts(net, quota, target);
        }
        let quota = match quota {
            Quota::Counts(v) if v.len() == net.layers.len() => Quota::Counts(self.pick(v)),
            q => q.clone(),
        };
        let view = self.quota_view(net);
        let counts = crate::methods::quota::kept_counts(&view, &quota, target)?;
        Ok(self.expand_counts(net, &counts))
    }

    /// The provenance strings of mask files: the globs joined by `,`
    /// (empty when none was given).
    pub fn provenance(&self) -> (String, String) {
        (self.include.join(","), self.exclude.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn star_crosses_dots_and_the_whole_name_must_match() {
        let m = compile("*.mlp.*", Side::Include).unwrap();
        assert!(m.is_match("model.layers.0.mlp.up_proj.weight"));
        assert!(!m.is_match("model.layers.0.self_attn.q_proj.weight"));
        // Anchored: "fc1" alone does not match "fc1.weight".
        assert!(!compile("fc1", Side::Include)
            .unwrap()
            .is_match("fc1.weight"));
        assert!(compile("model.layers.*.{q,k,v}_proj.weight", Side::Include)
            .unwrap()
            .is_match("model.layers.11.k_proj.weight"));
    }

    #[test]
    fn include_exclude_and_defaults() {
        let net = crate::zoo::build("lenet300", 0).unwrap();
        let all = Selection::from_globs(&net, &[], &[]).unwrap();
        assert!(all.is_all());
        assert_eq!(all, Selection::defaults(&net));
        let one = Selection::from_globs(&net, &s(&["fc2.weight"]), &[]).unwrap();
        assert_eq!(one.flags(), &[false, true, false]);
        let both = Selection::from_globs(&net, &s(&["fc*"]), &s(&["fc3*"])).unwrap();
        assert_eq!(both.flags(), &[true, true, false]);
        assert_eq!(both.frozen_weights(&net), 100 * 10);
        assert_eq!(both.expand_counts(&net, &[5, 6]), vec![5, 6, 1000]);
    }

    #[test]
    fn errors_name_the_glob() {
        let net = crate::zoo::build("lenet300", 0).unwrap();
        let e = Selection::from_globs(&net, &[], &s(&["fc1.weight", "fc4*"])).unwrap_err();
        assert!(!e.is_internal());
        assert!(e.to_string().contains("exclude glob 'fc4*'"), "{e}");
        let e = Selection::from_globs(&net, &s(&["fc[1"]), &[]).unwrap_err();
        assert!(e.to_string().contains("'fc[1'"), "{e}");
        let e = Selection::from_globs(&net, &s(&["fc1*"]), &s(&["*"])).unwrap_err();
        assert!(e.to_string().contains("select no prunable layer"), "{e}");
    }

    #[test]
    fn default_unselected_layers_need_an_include() {
        use crate::graph::tensor::ConstTensor;
        let mut b = crate::graph::NetworkBuilder::new("emb");
        let x = b.input("x", vec![4]).unwrap();
        let w = ConstTensor::f32(vec![3, 4], vec![0.5; 12]);
        let h = b.dense("embed", x, "embed.weight", w, None).unwrap();
        let w = ConstTensor::f32(vec![2, 3], vec![0.5; 6]);
        let y = b.dense("fc", h, "fc.weight", w, None).unwrap();
        b.output(y);
        b.exclude_by_default("embed.weight").unwrap();
        assert!(b.exclude_by_default("nope.weight").is_err());
        let net = b.finish().unwrap();
        assert_eq!(Selection::defaults(&net).flags(), &[false, true]);
        let named = Selection::from_globs(&net, &s(&["embed.*"]), &[]).unwrap();
        assert_eq!(named.flags(), &[true, false]);
        let e = Selection::from_globs(&net, &[], &s(&["fc.weight"])).unwrap_err();
        assert!(e.to_string().contains("select no prunable layer"), "{e}");
    }
}
