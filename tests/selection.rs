//! `--include GLOB` / `--exclude GLOB` (issue #12): frozen layers stay
//! dense, targets and quotas count the selected layers only, rankings never
//! cut a frozen weight. Each check compares with an independent figure
//! (the target of the selected weights alone, a quota on a network that
//! lacks the frozen layers, a sort of the selected weights).

mod common;
use common::{maskforge, maskforge_ok};

use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::{Network, NetworkBuilder};
use maskforge::io::maskfile;
use maskforge::mask::MaskSet;
use maskforge::methods::prune::{prune_with, Method, PruneSpec};
use maskforge::methods::quota::{kept_counts, target_from_compression, Quota};
use maskforge::methods::scored::Context;
use maskforge::methods::selection::Selection;
use maskforge::zoo;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ctx_of(sel: Selection) -> Context {
    Context {
        selection: Some(sel),
        ..Context::default()
    }
}

/// `prune` through the binary; the mask file read back and the JSON report.
fn prune_cli(model: &str, args: &[&str]) -> (MaskSet, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let mut all = vec!["prune", model];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "-o", out.to_str().unwrap()]);
    let o = maskforge_ok(&all);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let net = zoo::build(model.trim_start_matches("zoo:"), 0).unwrap();
    (maskfile::read(&net, &out).unwrap(), report)
}

fn kept_outside(m: &MaskSet, frozen: usize) -> usize {
    m.layers
        .iter()
        .enumerate()
        .filter(|&(li, _)| li != frozen)
        .map(|(_, b)| b.count_ones())
        .sum()
}

/// VGG-16 with its first conv excluded: that conv is written dense, and
/// the other layers keep exactly the target computed over them alone, for
/// quota methods (RPI, MiCA) and the written effective mask alike.
#[test]
fn excluded_first_conv_is_dense_and_the_target_counts_the_rest() {
    let net = zoo::build("vgg16", 0).unwrap();
    let first = &net.layers[0];
    let rest = net.prunable_count() - first.numel();
    let target = target_from_compression(rest, 100.0).unwrap();
    for method in [
        &["--method", "rpi", "--quota", "erk"][..],
        &["--method", "mica"],
    ] {
        let mut args = method.to_vec();
        args.extend_from_slice(&[
            "--compression",
            "100",
            "--exclude",
            "layers.0.*",
            "--keep-inactive",
        ]);
        let (m, report) = prune_cli("zoo:vgg16", &args);
        assert_eq!(m.layers[0].count_ones(), first.numel(), "{method:?}");
        assert_eq!(kept_outside(&m, 0), target, "{method:?}");
        // The report's totals are the selected layers', the whole net's apart.
        assert_eq!(report["total"], rest);
        assert_eq!(report["kept"], target);
        assert_eq!(report["all_prunable"]["total"], net.prunable_count());
        assert_eq!(report["all_prunable"]["kept"], target + first.numel());
        assert_eq!(report["frozen_layers"][0], "layers.0.conv.weight");
        assert_eq!(report["layers"][0]["frozen"], true);
        assert_eq!(report["layers"][1]["frozen"], false);
    }
}

/// Every kind of method on LeNet-5 (ranking, flow rounds, per-layer quota,
/// effective target): the excluded first conv is written dense (its
/// inactive weights included) and the rest meets the target over the rest.
#[test]
fn every_method_leaves_the_excluded_layer_dense() {
    let net = zoo::build("lenet5", 0).unwrap();
    let rest = net.prunable_count() - net.layers[0].numel();
    let target = target_from_compression(rest, 20.0).unwrap();
    let runs: &[&[&str]] = &[
        &["--method", "magnitude"],
        &["--method", "lamp"],
        &["--method", "synflow", "--synflow-counts", "nearest"],
        &[
            "--method",
            "magnitude",
            "--scope",
            "layer",
            "--quota",
            "igq",
        ],
        &["--method", "rpi", "--quota", "uniform"],
        &["--method", "snip", "--data", "synthetic:40"],
        &["--method", "grasp", "--data", "synthetic:40"],
        &["--method", "snip-it", "--data", "synthetic:40"],
        &["--method", "rpi", "--quota", "synflow"],
    ];
    for run in runs {
        let mut args = run.to_vec();
        args.extend_from_slice(&["--compression", "20", "--exclude", "conv1.weight"]);
        args.push("--keep-inactive");
        let (m, _) = prune_cli("zoo:lenet5", &args);
        assert_eq!(m.layers[0].count_ones(), 150, "{run:?}");
        assert_eq!(kept_outside(&m, 0), target, "{run:?}");
    }
    // An effective target: the selected layers' active weights reach it;
    // the frozen conv is still written whole (effective mask by default).
    let (m, report) = prune_cli(
        "zoo:lenet5",
        &[
            "--method",
            "rpi",
            "--compression",
            "200",
            "--effective",
            "--exclude",
            "conv1.weight",
        ],
    );
    assert_eq!(m.layers[0].count_ones(), 150);
    // The smallest kept count whose active count reaches the target (a
    // count over all layers would count the frozen conv's 150 in it).
    let want = target_from_compression(rest, 200.0).unwrap();
    let active = report["active"].as_u64().unwrap() as usize;
    assert!((want..want + 10).contains(&active), "{active} for {want}");
    assert_eq!(kept_outside(&m, 0), active);
}

/// ERK over a selection equals ERK on a network that has only the selected
/// layers: LeNet-300-100 without fc1 is the MLP 300-100-10.
#[test]
fn quotas_over_a_selection_equal_quotas_of_a_network_without_the_rest() {
    let net = zoo::build("lenet300", 0).unwrap();
    let small = zoo::build("mlp:300-100-10", 0).unwrap();
    assert_eq!(small.layers[0].shape, net.layers[1].shape);
    let sel = Selection::from_globs(&net, &[], &strings(&["fc1.*"])).unwrap();
    let target = target_from_compression(small.prunable_count(), 7.0).unwrap();
    for q in [Quota::Erk, Quota::Igq, Quota::Uniform] {
        let want = kept_counts(&small, &q, target).unwrap();
        let got = sel.kept_counts(&net, &q, target).unwrap();
        assert_eq!(got, vec![net.layers[0].numel(), want[0], want[1]], "{q:?}");
    }
    // Through the binary, and RPI places exactly those counts.
    let o = maskforge_ok(&[
        "quotas",
        "zoo:lenet300",
        "--quota",
        "erk",
        "--compression",
        "7",
        "--exclude",
        "fc1.*",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let want = kept_counts(&small, &Quota::Erk, target).unwrap();
    assert_eq!(v["layers"][1]["kept"], want[0]);
    assert_eq!(v["layers"][2]["kept"], want[1]);
    assert_eq!(v["layers"][0]["frozen"], true);
    assert_eq!(v["total"], small.prunable_count());
    let (m, _) = prune_cli(
        "zoo:lenet300",
        &[
            "--method",
            "rpi",
            "--quota",
            "erk",
            "--compression",
            "7",
            "--exclude",
            "fc1.*",
            "--keep-inactive",
        ],
    );
    assert_eq!(m.layers[1].count_ones(), want[0]);
    assert_eq!(m.layers[2].count_ones(), want[1]);
}

/// An MLP whose first layer's weights are tiny (and some exactly zero).
fn tiny_first_layer() -> Network {
    let mut b = NetworkBuilder::new("tiny-first");
    let x = b.input("x", vec![8]).unwrap();
    let w: Vec<f32> = (0..48)
        .map(|i| if i % 5 == 0 { 0.0 } else { 1e-6 * i as f32 })
        .collect();
    let h = b
        .dense("a", x, "a.weight", ConstTensor::f32(vec![6, 8], w), None)
        .unwrap();
    let w: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let y = b
        .dense("b", h, "b.weight", ConstTensor::f32(vec![4, 6], w), None)
        .unwrap();
    b.output(y);
    b.finish().unwrap()
}

/// Global magnitude and LAMP never cut a frozen weight, however small (or
/// zero), and keep the top of the selected weights by an independent sort.
#[test]
fn global_rankings_keep_an_excluded_layer_of_tiny_weights() {
    let net = tiny_first_layer();
    let sel = Selection::from_globs(&net, &[], &strings(&["a.*"])).unwrap();
    let w = net.canonical_weights(1).unwrap();
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&i, &j| w[j].abs().total_cmp(&w[i].abs()));
    let spec = |method, target_kept| PruneSpec {
        method,
        quota: Quota::Uniform,
        target_kept,
        seed: 0,
        effective: false,
    };
    // b's weights repeat (-5..5): cut between levels, where no tie splits.
    let above = |t: f32| w.iter().filter(|x| x.abs() > t).count();
    let k = above(3.5);
    for method in ["magnitude", "lamp"] {
        let m: Method = method.parse().unwrap();
        let out = prune_with(&net, &spec(m, k), &ctx_of(sel.clone()), &mut |_, _| {}).unwrap();
        assert_eq!(out.raw.layers[0].count_ones(), 48, "{method}");
        assert_eq!(out.raw.layers[1].count_ones(), k, "{method}");
        if method == "magnitude" {
            for &i in &order[..k] {
                assert!(out.raw.layers[1].get(i), "{method}: weight {i} of b");
            }
        }
    }
    // Without the exclusion the tiny layer is what a magnitude cut empties.
    let m: Method = "magnitude".parse().unwrap();
    let out = prune_with(&net, &spec(m, k), &Context::default(), &mut |_, _| {}).unwrap();
    assert_eq!(out.raw.layers[0].count_ones(), 0);
}

/// A glob that matches nothing is an input error naming it, before any
/// file is written; so is a selection of no layer.
#[test]
fn a_glob_matching_nothing_is_an_input_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    for (flag, glob) in [("--exclude", "conv9.*"), ("--include", "layers.*.mlp.*")] {
        let o = maskforge(&[
            "prune",
            "zoo:lenet5",
            "--method",
            "rpi",
            "--compression",
            "10",
            flag,
            glob,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("'{glob}'")), "{err}");
        assert!(err.contains(flag), "{err}");
        assert!(!out.exists());
    }
    let o = maskforge(&[
        "quotas",
        "zoo:lenet5",
        "--compression",
        "10",
        "--exclude",
        "*",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("select no prunable layer"));
}

/// `--include` of one layer prunes only it, to the target over it alone;
/// an N:M pattern likewise applies to the selected layers only.
#[test]
fn include_restricts_pruning_to_the_layers_named() {
    let net = zoo::build("lenet5", 0).unwrap();
    let (m, report) = prune_cli(
        "zoo:lenet5",
        &[
            "--method",
            "mica",
            "--compression",
            "40",
            "--include",
            "fc1.weight",
            "--keep-inactive",
        ],
    );
    for (li, l) in net.layers.iter().enumerate() {
        let want = if l.name == "fc1.weight" {
            target_from_compression(l.numel(), 40.0).unwrap()
        } else {
            l.numel()
        };
        assert_eq!(m.layers[li].count_ones(), want, "{}", l.name);
    }
    assert_eq!(report["frozen_layers"].as_array().unwrap().len(), 4);
    // 2:4 on fc1 and fc2 of LeNet-300-100 only; fc3 (which fits 4) is dense.
    let (m, _) = prune_cli(
        "zoo:lenet300",
        &[
            "--method",
            "magnitude",
            "--pattern",
            "2:4",
            "--exclude",
            "fc3.*",
        ],
    );
    assert_eq!(m.layers[0].count_ones(), 235_200 / 2);
    assert_eq!(m.layers[1].count_ones(), 30_000 / 2);
    assert_eq!(m.layers[2].count_ones(), 1000);
}

/// A weight the model's reader marks as not selected by default (an
/// embedding, a `lm_head`) stays dense unless `--include` names it.
#[test]
fn a_layer_excluded_by_default_is_dense_unless_included() {
    let mut b = NetworkBuilder::new("head");
    let x = b.input("x", vec![16]).unwrap();
    let w: Vec<f32> = (0..16 * 16)
        .map(|i| ((i * 37) % 101) as f32 - 50.0)
        .collect();
    let h = b
        .dense(
            "body",
            x,
            "body.weight",
            ConstTensor::f32(vec![16, 16], w),
            None,
        )
        .unwrap();
    let w: Vec<f32> = (0..16 * 8).map(|i| ((i * 53) % 97) as f32 - 48.0).collect();
    let y = b
        .dense(
            "head",
            h,
            "lm_head.weight",
            ConstTensor::f32(vec![8, 16], w),
            None,
        )
        .unwrap();
    b.output(y);
    b.exclude_by_default("lm_head.weight").unwrap();
    let net = b.finish().unwrap();
    let spec = PruneSpec {
        method: Method::Rpi,
        quota: Quota::Uniform,
        target_kept: 64,
        seed: 3,
        effective: false,
    };
    // No selection given: the defaults, the head frozen.
    let out = prune_with(&net, &spec, &Context::default(), &mut |_, _| {}).unwrap();
    assert_eq!(out.raw.layers[1].count_ones(), 128);
    assert_eq!(out.raw.layers[0].count_ones(), 64);
    // The target is over the selected weights: more than the body is refused.
    let too_many = PruneSpec {
        target_kept: 257,
        ..spec.clone()
    };
    assert!(prune_with(&net, &too_many, &Context::default(), &mut |_, _| {}).is_err());
    // --include names it: only the head is pruned.
    let sel = Selection::from_globs(&net, &strings(&["lm_head.*"]), &[]).unwrap();
    let out = prune_with(&net, &spec, &ctx_of(sel), &mut |_, _| {}).unwrap();
    assert_eq!(out.raw.layers[0].count_ones(), 256);
    assert_eq!(out.raw.layers[1].count_ones(), 64);
    // Both, by globs: the quota spreads over both.
    let sel = Selection::from_globs(&net, &strings(&["*"]), &[]).unwrap();
    let out = prune_with(&net, &spec, &ctx_of(sel), &mut |_, _| {}).unwrap();
    assert_eq!(out.raw.count_ones(), 64);
    assert!(out.raw.layers[1].count_ones() < 128);
}

/// SynFlow's rounds count the selected weights only: with the reference
/// counts, round k of R keeps N_sel - int((1 - d^(k/R)) N_sel) of them,
/// and the frozen layer is dense at every round's end (its flow is the
/// dense layer's).
#[test]
fn synflow_rounds_count_the_selected_weights() {
    let net = zoo::build("lenet5", 0).unwrap();
    let sel = Selection::from_globs(&net, &[], &strings(&["fc3.*"])).unwrap();
    let n = sel.selected_weights(&net);
    let d: f64 = 0.05;
    let target = (d * n as f64).round() as usize;
    let ctx = Context {
        rounds: 5,
        density: Some(d),
        ..ctx_of(sel.clone())
    };
    let spec = PruneSpec {
        method: "synflow".parse().unwrap(),
        quota: Quota::Uniform,
        target_kept: target,
        seed: 0,
        effective: false,
    };
    let out = prune_with(&net, &spec, &ctx, &mut |_, _| {}).unwrap();
    assert_eq!(out.raw.layers[4].count_ones(), 840);
    assert_eq!(out.history.len(), 5);
    for (k, h) in out.history.iter().enumerate() {
        let dk = d.powf((k + 1) as f64 / 5.0);
        let kept = n - ((1.0 - dk) * n as f64) as usize;
        assert_eq!(
            (h * n as f64).round() as usize,
            kept,
            "round {} of {n} selected weights",
            k + 1
        );
    }
    assert_eq!(
        sel.count_selected(&out.raw),
        n - ((1.0 - d) * n as f64) as usize
    );
}

/// `audit` and `sweep` count the selected layers in their totals and
/// report the frozen ones.
#[test]
fn audit_and_sweep_count_the_selected_layers() {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("m.safetensors");
    let net = zoo::build("lenet300", 0).unwrap();
    maskforge_ok(&[
        "prune",
        "zoo:lenet300",
        "--method",
        "rpi",
        "--compression",
        "50",
        "--keep-inactive",
        "-o",
        masks.to_str().unwrap(),
    ]);
    let m = maskfile::read(&net, &masks).unwrap();
    let o = maskforge_ok(&[
        "audit",
        "zoo:lenet300",
        "--masks",
        masks.to_str().unwrap(),
        "--exclude",
        "fc3.weight",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total"], 235_200 + 30_000);
    assert_eq!(
        v["kept"],
        m.layers[0].count_ones() + m.layers[1].count_ones()
    );
    assert_eq!(v["all_prunable"]["kept"], m.count_ones());
    assert_eq!(v["layers"][2]["frozen"], true);
    assert_eq!(v["frozen_layers"][0], "fc3.weight");

    let csv = dir.path().join("s.csv");
    maskforge_ok(&[
        "sweep",
        "zoo:lenet300",
        "--methods",
        "rpi",
        "--quotas",
        "igq",
        "--compressions",
        "10",
        "--include",
        "fc1.*",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
    // kept, active, total: fc1 alone, 235 200 / 10.
    assert_eq!(row[9], "23520");
    assert_eq!(row[11], "235200");
}
