//! The NPB pruner (`--method npb`): its per-layer programme against brute
//! force and against the reference's programme written out in full, and
//! the whole method's masks.

mod common;

use maskforge::analysis::effective::effective_masks;
use maskforge::analysis::paths::effective_paths;
use maskforge::error::Error;
use maskforge::methods::npb::allot::{allot, Spread};
use maskforge::methods::npb::caps::TapSchedule;
use maskforge::methods::npb::programme::Programme;
use maskforge::methods::npb::{npb, NpbSettings};
use maskforge::methods::quota::{kept_counts, Quota};
use maskforge::zoo;
use microlp::{ComparisonOp, OptimizationDirection, Problem};
use rand::{Rng, SeedableRng};

fn random_programme(
    rng: &mut impl Rng,
    max_in: usize,
    max_out: usize,
    max_taps: usize,
) -> Programme {
    let inputs = rng.random_range(1..=max_in);
    let outputs = rng.random_range(1..=max_out);
    let max_taps = rng.random_range(1..=max_taps);
    // Path counts with ties (equal inputs) and dead inputs (0).
    let levels = [0.0, 1.0, 1.0, 2.5, 4.0, 7.0];
    let mut path_in: Vec<f64> = (0..inputs)
        .map(|_| levels[rng.random_range(0..levels.len())])
        .collect();
    if path_in.iter().all(|&p| p == 0.0) {
        path_in[0] = 1.0;
    }
    let room = inputs * outputs * max_taps;
    Programme {
        path_in,
        outputs,
        budget: rng.random_range(1..=room),
        max_taps,
        alpha: [0.01, 0.5, 0.99][rng.random_range(0..3)],
        beta: [0.0, 0.001, 1.0][rng.random_range(0..3)],
    }
}

/// The best objective over every tap-count matrix within the budget.
fn brute_force(p: &Programme) -> f64 {
    let cells = p.path_in.len() * p.outputs;
    let base = p.max_taps as u64 + 1;
    let mut best = f64::NEG_INFINITY;
    let mut m = vec![0u32; cells];
    for code in 0..base.pow(cells as u32) {
        let mut c = code;
        for cell in m.iter_mut() {
            *cell = (c % base) as u32;
            c /= base;
        }
        if m.iter().map(|&v| v as usize).sum::<usize>() <= p.budget {
            best = best.max(p.objective(&m));
        }
    }
    best
}

#[test]
fn the_programme_reaches_the_brute_force_optimum() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for case in 0..300 {
        let p = random_programme(&mut rng, 3, 3, 2);
        let plan = p.solve().unwrap();
        let m = allot(&p, &plan, &mut rng);
        let best = brute_force(&p);
        let what = format!("case {case}: {p:?}");
        assert!(
            (plan.objective - best).abs() < 1e-9,
            "{what}: solver {} vs brute force {best}",
            plan.objective
        );
        assert!(
            (p.objective(&m) - best).abs() < 1e-9,
            "{what}: the allotted matrix scores {}",
            p.objective(&m)
        );
        assert!(
            m.iter().map(|&v| v as usize).sum::<usize>() <= p.budget,
            "{what}: over budget"
        );
        assert!(
            m.iter().all(|&v| v as usize <= p.max_taps),
            "{what}: over max_taps"
        );
    }
}

/// The reference's programme as their cvxpy code states it (pvh1602/NPB,
/// `optimize_layerwise`): one integer per channel pair, and each `pos(x)`
/// as cvxpy rewrites it, an epigraph variable `t >= x, t >= 0`.
fn their_programme(p: &Programme) -> f64 {
    let (c_in, c_out) = (p.path_in.len(), p.outputs);
    let nodes = (c_in + c_out) as f64;
    let n = p.budget as f64;
    let max_path = p.max_path();
    let mut lp = Problem::new(OptimizationDirection::Maximize);
    let m: Vec<_> = (0..c_in * c_out)
        .map(|k| {
            lp.add_integer_var(
                (1.0 - p.alpha) * p.path_in[k / c_out] / max_path,
                (0, p.max_taps as i32),
            )
        })
        .collect();
    // t >= 1 - sum(M over a line), entering the objective with -alpha / nodes.
    let empty_line = |lp: &mut Problem, cells: Vec<usize>, cost: f64| {
        let t = lp.add_var(-cost, (0.0, f64::INFINITY));
        let mut terms = vec![(t, 1.0)];
        terms.extend(cells.iter().map(|&k| (m[k], 1.0)));
        lp.add_constraint(terms.as_slice(), ComparisonOp::Ge, 1.0);
    };
    for i in 0..c_in {
        empty_line(
            &mut lp,
            (0..c_out).map(|j| i * c_out + j).collect(),
            p.alpha / nodes,
        );
    }
    for j in 0..c_out {
        empty_line(
            &mut lp,
            (0..c_in).map(|i| i * c_out + j).collect(),
            p.alpha / nodes,
        );
    }
    for k in 0..c_in * c_out {
        empty_line(&mut lp, vec![k], p.beta / n);
    }
    let all: Vec<_> = m.iter().map(|&v| (v, 1.0)).collect();
    lp.add_constraint(all.as_slice(), ComparisonOp::Le, n);
    let solution = lp.solve().unwrap().into_solution().unwrap();
    // Their constants: alpha * (nodes / nodes) and beta * n / n.
    solution.objective() + p.alpha + p.beta
}

#[test]
fn the_grouped_programme_has_the_optimum_of_theirs() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for case in 0..60 {
        let p = random_programme(&mut rng, 6, 5, 3);
        let ours = p.solve().unwrap().objective;
        let theirs = their_programme(&p);
        assert!(
            (ours - theirs).abs() < 1e-7,
            "case {case}: {p:?}: ours {ours}, theirs {theirs}"
        );
    }
}

/// Pairs on each output beyond the first one of the row that covers it.
fn open_pairs_per_output(p: &Programme, m: &[u32]) -> Vec<usize> {
    let mut per_output = vec![0usize; p.outputs];
    for row in m.chunks(p.outputs) {
        for (j, &t) in row.iter().enumerate() {
            per_output[j] += usize::from(t > 0);
        }
    }
    per_output.iter().map(|&n| n.saturating_sub(1)).collect()
}

/// The allotment's two regimes (allot's module doc): after a full row the
/// open pairs spread evenly; with single pairs only they pile up on the
/// first outputs.
#[test]
fn open_pairs_spread_after_a_full_row_and_pile_up_without_one() {
    let singles = Programme {
        path_in: vec![1.0; 256],
        outputs: 32,
        budget: 112,
        max_taps: 1,
        alpha: 0.01,
        beta: 1.0,
    };
    let mut rich_first = vec![0.1; 64];
    rich_first[0] = 1.0;
    let full_row = Programme {
        path_in: rich_first,
        budget: 110,
        ..singles.clone()
    };
    for (p, spread) in [
        (&singles, Spread::LowFavoured),
        (&full_row, Spread::Uniform),
    ] {
        let plan = p.solve().unwrap();
        assert_eq!(Spread::of(&plan, p.outputs), spread);
        for seed in 0..20 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let m = allot(p, &plan, &mut rng);
            let open = open_pairs_per_output(p, &m);
            let total: usize = open.iter().sum();
            let first_eight: usize = open[..8].iter().sum();
            let what = format!("{spread:?} seed {seed}: {open:?}");
            assert!(total >= 60, "{what}");
            match spread {
                Spread::LowFavoured => assert!(first_eight * 10 >= total * 9, "{what}"),
                Spread::Uniform => {
                    assert!(first_eight * 2 <= total, "{what}");
                    assert!(*open.iter().max().unwrap() <= 9, "{what}");
                }
            }
        }
    }
}

#[test]
fn max_path_follows_their_numpy_edge_cases() {
    let p = |budget, max_taps| Programme {
        path_in: vec![3.0, 1.0, 2.0],
        outputs: 2,
        budget,
        max_taps,
        alpha: 0.01,
        beta: 1.0,
    };
    // 5 taps, 2 per input: the 2 richest inputs full (3 + 2) * 2, then 1 of the next (1).
    assert_eq!(p(5, 1).max_path(), 11.0);
    // Fewer taps than one input holds: numpy's sort(P)[-0:] is every input
    // (6 * 4), plus 3 taps of the richest (3 * 3).
    assert_eq!(p(3, 2).max_path(), 33.0);
    // Every input full: no next input, no remainder term.
    assert_eq!(p(6, 1).max_path(), 12.0);
}

fn resnet20_counts(compression: f64) -> (maskforge::graph::Network, Vec<usize>) {
    let net = zoo::build("resnet20", 0).unwrap();
    let target = (net.prunable_count() as f64 / compression).round() as usize;
    let counts = kept_counts(&net, &Quota::Erk, target).unwrap();
    (net, counts)
}

#[test]
fn resnet20_masks_keep_the_quota_active_and_balance_nodes_and_paths() {
    let (net, counts) = resnet20_counts(100.0);
    let settings = NpbSettings::default();
    let masks = npb(&net, &counts, &settings, 0).unwrap();
    let active = effective_masks(&net, &masks);
    let target: usize = counts.iter().sum();
    // The quota, plus the reference's rounding up per chunk and whole-unit refills.
    assert!(
        masks.count_ones() >= target - target / 50 && masks.count_ones() <= target + target / 20,
        "kept {} for a quota of {target}",
        masks.count_ones()
    );
    assert_eq!(
        active.count_ones(),
        masks.count_ones(),
        "every kept weight on a path"
    );
    // Deterministic for a seed; another seed moves the taps.
    assert_eq!(npb(&net, &counts, &settings, 0).unwrap(), masks);
    assert_ne!(npb(&net, &counts, &settings, 1).unwrap(), masks);
    // Where the paper puts NPB: about the nodes of random pruning at the
    // same quota (which spreads over every channel) with orders of
    // magnitude more paths.
    let rpi = maskforge::methods::random::rpi::rpi(&net, &counts, 0);
    let (rpi_nodes, rpi_paths) = nodes_and_paths(&net, &rpi);
    let (our_nodes, our_paths) = nodes_and_paths(&net, &masks);
    let what = format!(
        "NPB {our_nodes} nodes 10^{our_paths:.1} paths, RPI {rpi_nodes} nodes 10^{rpi_paths:.1}"
    );
    assert!(our_paths > rpi_paths + 2.0, "{what}");
    assert!(our_nodes as f64 > 0.9 * rpi_nodes as f64, "{what}");
}

#[test]
fn a_layer_no_path_reaches_is_an_error_naming_it() {
    let (net, mut counts) = resnet20_counts(100.0);
    counts[0] = 0;
    let e = npb(&net, &counts, &NpbSettings::default(), 0).unwrap_err();
    let Error::Infeasible { layer, detail } = e.root() else {
        panic!("{e}")
    };
    assert_eq!(
        layer.as_deref(),
        Some(net.layers[1].name.as_str()),
        "{detail}"
    );
    assert!(
        detail.contains("no input channel carries a path"),
        "{detail}"
    );
}

#[test]
fn max_taps_too_small_for_a_budget_is_an_error_naming_the_layer() {
    let (net, counts) = resnet20_counts(3.0);
    let settings = NpbSettings {
        max_taps: 1,
        ..NpbSettings::default()
    };
    let e = npb(&net, &counts, &settings, 0).unwrap_err();
    let Error::Infeasible {
        layer: Some(layer),
        detail,
    } = e.root()
    else {
        panic!("{e}")
    };
    assert!(net.layer_index(layer).is_some(), "{layer}");
    assert!(detail.contains("--max-taps 1"), "{detail}");
    let out = common::maskforge(&[
        "prune",
        "zoo:resnet20",
        "--method",
        "npb",
        "--max-taps",
        "1",
        "--compression",
        "3",
        "-o",
        "/dev/null",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(layer.as_str()));
}

#[test]
fn the_cli_defaults_to_erk_and_refuses_npb_flags_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let out = dir.path().join("m.safetensors");
    common::maskforge_ok(&[
        "prune",
        "zoo:lenet300",
        "--method",
        "npb",
        "--compression",
        "50",
        "--alpha",
        "0.5",
        "-o",
        common::s(&out),
        "--report",
        common::s(&report),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["quota"], "erk");
    assert_eq!(r["method"], "npb");
    let bad = common::maskforge(&[
        "prune",
        "zoo:lenet300",
        "--method",
        "rpi",
        "--alpha",
        "0.5",
        "--compression",
        "50",
        "-o",
        common::s(&out),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("apply to --method npb"));
    let npb_with = |extra: &[&str]| {
        let mut args = vec![
            "prune",
            "zoo:resnet20",
            "--method",
            "npb",
            "--compression",
            "100",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", common::s(&out)]);
        common::maskforge(&args)
    };
    let reference = npb_with(&["--max-taps-schedule", "reference"]);
    assert!(reference.status.success(), "{reference:?}");
    // Two schedules at once is a usage error (exit 1), not a silent choice.
    let both = npb_with(&["--max-taps-schedule", "reference", "--max-taps-step", "2"]);
    assert_eq!(both.status.code(), Some(1), "{both:?}");
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}

/// A fixture of fixtures/npb (made by fixtures/npb/make.sh from the
/// official code's run), decompressed.
fn fixture(name: &str) -> Vec<u8> {
    use std::io::Read;
    let path = common::root().join("fixtures/npb").join(name);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Every programme the reference solved in a run, posed again from its
/// inputs: our optimum is at least the value cvxpy (HiGHS) reached.
fn check_their_programmes(run: &str) {
    let doc: serde_json::Value =
        serde_json::from_slice(&fixture(&format!("{run}.json.gz"))).unwrap();
    let programmes = doc["programmes"].as_array().unwrap();
    assert!(!programmes.is_empty());
    for r in programmes {
        let param = r["param"].as_str().unwrap();
        assert_eq!(r["status"], "optimal", "{run} {param}");
        assert_eq!(
            r["min_param_to_node"], 1,
            "{run} {param}: the programme we transcribe"
        );
        let path_in: Vec<f64> = doc["p_in"][param]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let p = Programme {
            path_in,
            outputs: r["shape"][0].as_u64().unwrap() as usize,
            budget: r["n_params"].as_u64().unwrap() as usize,
            max_taps: r["max_param_per_kernel"].as_u64().unwrap() as usize,
            alpha: r["alpha"].as_f64().unwrap(),
            beta: r["beta"].as_f64().unwrap(),
        };
        let theirs = r["objective"].as_f64().unwrap();
        let ours = p.solve().unwrap().objective;
        assert!(
            ours >= theirs - 1e-9 * theirs.abs().max(1.0),
            "{run} {param} chunk {}: ours {ours} < theirs {theirs}",
            r["chunk"]
        );
    }
}

#[test]
fn every_programme_of_their_resnet20_runs_reaches_their_objective() {
    for run in ["resnet20_0.1", "resnet20_0.01", "resnet20_0.001"] {
        check_their_programmes(run);
    }
}

#[test]
fn every_programme_of_their_vgg16_runs_reaches_their_objective() {
    for run in ["vgg16_0.1", "vgg16_0.01", "vgg16_0.001"] {
        check_their_programmes(run);
    }
}

/// `TapSchedule::Reference` gives every conv layer after the first the cap
/// the reference's runs record per programme (their `max_param_per_kernel`,
/// bounded by the kernel's taps), on ResNet-20 and VGG-16 at every density:
/// their rules transcribed from the graph, not from layer names.
#[test]
fn the_reference_schedule_gives_the_caps_their_runs_record() {
    for run in [
        "resnet20_0.1",
        "resnet20_0.01",
        "resnet20_0.001",
        "vgg16_0.1",
        "vgg16_0.01",
        "vgg16_0.001",
    ] {
        let doc: serde_json::Value =
            serde_json::from_slice(&fixture(&format!("{run}.json.gz"))).unwrap();
        let net = zoo::build(run.split('_').next().unwrap(), 0).unwrap();
        let order = maskforge::methods::npb::inflow::layer_order(&net);
        let settings = scheduled(TapSchedule::Reference);
        let caps = maskforge::methods::npb::caps::caps(&net, &order, &settings);
        let mut checked = 0;
        for r in doc["programmes"].as_array().unwrap() {
            let param = r["param"].as_str().unwrap();
            let li = net.layer_index(param).unwrap();
            let rank = order.iter().position(|&l| l == li).unwrap();
            let layer = &net.layers[li];
            if rank == 0 || layer.kind != maskforge::graph::LayerKind::Conv {
                continue;
            }
            let taps: usize = layer.shape[2..].iter().product();
            assert_eq!(
                caps[rank].min(taps) as u64,
                r["max_param_per_kernel"].as_u64().unwrap(),
                "{run} {param}"
            );
            checked += 1;
        }
        assert!(checked > 10, "{run}: {checked} programmes checked");
    }
}

/// The reference schedule on exported graphs: torchvision's RegNetY has a
/// projection shortcut (a 1 x 1 conv beside the block's first conv) in the
/// first block of each of its three stages, so the cap drops 9 -> 7 -> 5
/// (then stays: their floor is 5), each time right after a 1 x 1 conv;
/// MobileNetV3 and ConvNeXt (identity shortcuts only) and ShuffleNetV2
/// (concatenations) keep 9 throughout.
#[test]
fn the_reference_schedule_reads_shortcuts_from_exported_graphs() {
    let reference = scheduled(TapSchedule::Reference);
    let mut seen = Vec::new();
    for g in common::fixtures() {
        let net = g.load().network;
        let order = maskforge::methods::npb::inflow::layer_order(&net);
        let caps = maskforge::methods::npb::caps::caps(&net, &order, &reference);
        seen.push(g.name.clone());
        let drops: Vec<usize> = (1..caps.len()).filter(|&r| caps[r] < caps[r - 1]).collect();
        match g.name.as_str() {
            "regnet_y_tiny" => {
                assert_eq!(drops.len(), 2, "{}: {caps:?}", g.name);
                assert_eq!((caps[0], *caps.last().unwrap()), (9, 5), "{}", g.name);
                for r in drops {
                    let before = &net.layers[order[r - 1]];
                    assert_eq!(
                        before.shape[2..],
                        [1, 1],
                        "{}: drop after {}",
                        g.name,
                        before.name
                    );
                }
            }
            "mobilenetv3_small" | "convnext_tiny" | "shufflenetv2" => {
                assert!(caps.iter().all(|&c| c == 9), "{}: {caps:?}", g.name)
            }
            _ => {}
        }
    }
    for name in [
        "regnet_y_tiny",
        "mobilenetv3_small",
        "convnext_tiny",
        "shufflenetv2",
    ] {
        assert!(
            seen.iter().any(|s| s == name),
            "fixture {name} missing: {seen:?}"
        );
    }
}

/// Effective nodes and log10 paths of a mask set, by our audit.
fn nodes_and_paths(
    net: &maskforge::graph::Network,
    masks: &maskforge::mask::MaskSet,
) -> (usize, f64) {
    let a = maskforge::analysis::effective::analyse(net, masks);
    let nodes = maskforge::analysis::effective::node_counts(net, &a)
        .iter()
        .map(|c| c.functional)
        .sum();
    (nodes, effective_paths(net, &a.active).unwrap().log10)
}

/// Our masks against the reference's final masks of the same model and
/// density: as many effective nodes, and log10 paths within 2 %, or more.
fn compare_with_their_masks(model: &str, density: f64) {
    compare_with_their_masks_by(model, density, 0.98, 0.25, &NpbSettings::default())
}

/// As [`compare_with_their_masks`], with `paths_floor` for our log10 paths
/// over theirs, `kept_tolerance` for the kept counts, and our `settings`.
fn compare_with_their_masks_by(
    model: &str,
    density: f64,
    paths_floor: f64,
    kept_tolerance: f64,
    settings: &NpbSettings,
) {
    let run = format!("{model}_{density}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("theirs.safetensors");
    std::fs::write(&file, fixture(&format!("{run}.masks.safetensors.gz"))).unwrap();
    let net = zoo::build(model, 0).unwrap();
    let theirs = maskforge::io::maskfile::read(&net, &file).unwrap();
    let target = (net.prunable_count() as f64 * density).round() as usize;
    let counts = kept_counts(&net, &Quota::Erk, target).unwrap();
    let ours = npb(&net, &counts, settings, 0).unwrap();
    let (our_nodes, our_paths) = nodes_and_paths(&net, &ours);
    let (their_nodes, their_paths) = nodes_and_paths(&net, &theirs);
    let what = format!("{run}: ours {our_nodes} nodes 10^{our_paths:.3} paths, theirs {their_nodes} nodes 10^{their_paths:.3}");
    assert!(our_nodes as f64 >= 0.98 * their_nodes as f64, "{what}");
    assert!(our_paths >= paths_floor * their_paths, "{what}");
    // Kept counts: the same quota, up to per-chunk rounding and whole-kernel
    // refills (at 10^-3 these add a third or more: 423 and 352 for a quota
    // of 271; filling exactly the inactive count would keep 271 at 10^13.3
    // paths, theirs 10^13.7 with 352).
    let (k_ours, k_theirs) = (ours.count_ones() as f64, theirs.count_ones() as f64);
    assert!(
        (k_ours - k_theirs).abs() <= kept_tolerance * k_theirs,
        "{what}: kept {k_ours} vs {k_theirs}"
    );
}

#[test]
fn resnet20_masks_match_theirs_in_nodes_and_paths() {
    for density in [0.1, 0.01, 0.001] {
        compare_with_their_masks("resnet20", density);
    }
}

#[test]
fn vgg16_masks_match_theirs_in_nodes_and_paths() {
    compare_with_their_masks("vgg16", 0.1);
    compare_with_their_masks("vgg16", 0.01);
}

/// VGG-16 at 10^-3 is where the choices left open to the reference code
/// decide: their caps (3 in the last two convs) and their solver's pile-up
/// of single pairs on a few outputs make their late layers a tube of 4 to
/// 12 channels (498 nodes, 10^23.1 paths). Their fine-tuning drops 3 160
/// weights it cannot make effective, so kept counts differ by up to 30 %.
#[test]
fn vgg16_at_a_thousandth_matches_theirs_in_nodes_and_paths() {
    compare_with_their_masks_by("vgg16", 0.001, 0.98, 0.3, &NpbSettings::default());
}

/// `--max-taps-schedule constant` on the point where the cap matters most:
/// at least their nodes, and 80 % of their log10 paths or more (the late
/// layers spread over more channels with a cap of 9: 10^21.9 against their
/// 10^23.1).
#[test]
fn vgg16_at_a_thousandth_with_a_constant_cap_keeps_their_nodes() {
    let constant = scheduled(TapSchedule::Constant);
    compare_with_their_masks_by("vgg16", 0.001, 0.8, 0.3, &constant);
}

/// A layer with exactly one inactive weight: the reference leaves it
/// (`n_ineff > 1`); we move it, so every kept weight serves a path.
#[test]
fn a_lone_inactive_weight_is_reinvested() {
    use maskforge::bitset::BitSet;
    use maskforge::methods::npb::reinvest::reinvest;
    let net = zoo::build("lenet5", 0).unwrap();
    let mut masks = maskforge::mask::MaskSet::dense(&net);
    // conv2 reads only conv1's filter 0; conv1 keeps 20 taps of filter 0
    // and one of filter 5, which nothing reads.
    let conv2 = net.layer_index("conv2.weight").unwrap();
    masks.layers[conv2] = BitSet::from_fn(masks.layers[conv2].len(), |k| (k / 25) % 6 == 0);
    masks.layers[0] = BitSet::from_fn(150, |k| k < 20 || k == 125);
    assert_eq!(
        effective_masks(&net, &masks).layers[0].count_ones(),
        20,
        "the tap of filter 5 starts inactive"
    );
    reinvest(&net, &mut masks, &[0, 1, 2, 3, 4]);
    // Moved into filter 0, the kernel with the most active taps, filled whole.
    assert_eq!(masks.layers[0], BitSet::from_fn(150, |k| k < 25));
    assert_eq!(
        effective_masks(&net, &masks).count_ones(),
        masks.count_ones()
    );
}

/// The default settings with `schedule`.
fn scheduled(schedule: TapSchedule) -> NpbSettings {
    NpbSettings {
        schedule,
        ..NpbSettings::default()
    }
}

/// Largest number of kept taps in one kernel of a conv layer.
fn fullest_kernel(
    net: &maskforge::graph::Network,
    masks: &maskforge::mask::MaskSet,
    name: &str,
) -> usize {
    let li = net.layer_index(name).unwrap();
    let taps: usize = net.layers[li].shape[2..].iter().product();
    (0..masks.layers[li].len() / taps)
        .map(|k| masks.layers[li].count_ones_in(k * taps, (k + 1) * taps))
        .max()
        .unwrap()
}

#[test]
fn max_taps_step_lowers_the_cap_per_halving_of_the_input() {
    let (net, counts) = resnet20_counts(10.0);
    let constant = scheduled(TapSchedule::Constant);
    let constant = npb(&net, &counts, &constant, 0).unwrap();
    let stepped = scheduled(TapSchedule::PerHalving(2));
    let lowered = npb(&net, &counts, &stepped, 0).unwrap();
    // Stage 1 (32 x 32) keeps 9, stage 2 (16 x 16) 7, stage 3 (8 x 8) 5.
    assert_eq!(fullest_kernel(&net, &constant, "blocks.4.conv1.weight"), 9);
    assert_eq!(fullest_kernel(&net, &lowered, "blocks.1.conv1.weight"), 9);
    assert_eq!(fullest_kernel(&net, &lowered, "blocks.4.conv1.weight"), 7);
    assert!(fullest_kernel(&net, &lowered, "blocks.7.conv1.weight") <= 5);
}

/// Every exported fixture graph (grouped and depthwise convs, squeeze-excite
/// gates, channel shuffles, concats, upsampling, attention, dense layers over
/// tokens): NPB runs, keeps about its quota, leaves a path, and is
/// deterministic for a seed.
#[test]
fn npb_prunes_every_fixture_graph() {
    for g in common::fixtures() {
        let net = g.load().network;
        let target = (net.prunable_count() / 50).max(net.layers.len());
        let counts = kept_counts(&net, &Quota::Erk, target).unwrap();
        let what = format!("{} at {target} kept", g.name);
        let masks = npb(&net, &counts, &NpbSettings::default(), 0)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let kept = masks.count_ones();
        // Per-chunk rounding up and whole-kernel refills add (a depthwise
        // 5 x 5 kernel is 25 taps); inactive weights no refill can place
        // are dropped, as the reference does: on MobileNetV3 at 50x the
        // kept count ends at two thirds of the quota (docs/npb.md).
        eprintln!("{what}: kept {kept}");
        assert!(
            kept as f64 >= 0.5 * target as f64 && kept as f64 <= 2.0 * target as f64,
            "{what}: kept {kept}"
        );
        let (nodes, paths) = nodes_and_paths(&net, &masks);
        assert!(
            nodes > 0 && paths.is_finite(),
            "{what}: {nodes} nodes, 10^{paths} paths"
        );
        assert_eq!(
            npb(&net, &counts, &NpbSettings::default(), 0).unwrap(),
            masks,
            "{what}"
        );
    }
}
