//! Advertised features of `maskforge prune`, each checked through the binary
//! against an independent computation: SNIP-it (with and without
//! `--effective`), `--mask-dtype`, `--naming torch-prune`, `--quota
//! masks:FILE`, `--mica-choice min|max`, GraSP's score sign and LAMP against
//! global magnitude.

mod common;
use common::maskforge;

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::SafeTensors;

/// Run `prune ARGS -o OUT --json` and return the report.
fn prune(out: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["prune"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", out.to_str().unwrap(), "--json"]);
    let o = maskforge(&all);
    assert!(
        o.status.success(),
        "prune {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A tensor of a safetensors file as stored: dtype name, shape, bytes.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    dtype: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Every tensor of a safetensors file, read with the `safetensors` crate
/// (not maskforge's reader).
fn read_st(path: &Path) -> BTreeMap<String, Stored> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            (
                name,
                Stored {
                    dtype: format!("{:?}", v.dtype()),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                },
            )
        })
        .collect()
}

/// Stored 0/1 pattern of a BOOL or U8 mask tensor.
fn pattern(t: &Stored) -> Vec<bool> {
    assert!(t.dtype == "BOOL" || t.dtype == "U8", "{}", t.dtype);
    t.data
        .iter()
        .map(|&b| {
            assert!(b <= 1, "mask byte {b}");
            b == 1
        })
        .collect()
}

fn f32s(t: &Stored) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn u(v: &serde_json::Value) -> usize {
    v.as_u64().unwrap() as usize
}

/// Per-layer (name, quota, kept, active) of a prune report.
fn layers(r: &serde_json::Value) -> Vec<(String, usize, usize, usize)> {
    r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                u(&l["quota"]),
                u(&l["kept"]),
                u(&l["active"]),
            )
        })
        .collect()
}

// ------------------------------------------------------------------ SNIP-it

const LENET300: usize = 266_200;
const DATA: &str = "synthetic:200";

/// SNIP-it: the per-round densities follow the exponential schedule
/// `density^(k/R)`; with `--effective` exactly the target number of weights
/// are active (it keeps more), without it exactly the target are kept; and
/// the kept set is not one-shot SNIP's.
#[test]
fn snip_it_schedule_effective_target_and_not_one_shot() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "zoo:lenet300",
        "--compression",
        "100",
        "--data",
        DATA,
        "--keep-inactive",
    ];
    let target = 2662; // round(266200 / 100)
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(format!("{name}.safetensors"));
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let r = prune(&out, &args);
        (r, read_st(&out))
    };
    let (direct, m_direct) = run("direct", &["--method", "snip-it"]);
    let (eff, m_eff) = run("eff", &["--method", "snip-it", "--effective"]);
    let (snip, m_snip) = run("snip", &["--method", "snip"]);

    // Without --effective: exactly the target kept, some of it inactive (so
    // --effective has work to do on this case).
    assert_eq!(u(&direct["kept"]), target);
    assert!(u(&direct["active"]) < target, "{direct}");
    // With --effective: exactly the target active, more kept, no note.
    assert_eq!(eff["effective_target"], true);
    assert_eq!(u(&eff["active"]), target, "effective SNIP-it: {eff}");
    assert!(u(&eff["kept"]) > target, "{eff}");
    assert!(eff["note"].is_null(), "{eff}");
    assert_eq!(u(&snip["kept"]), target);

    // The exponential schedule, 5 rounds by default: round k keeps
    // round(N * d^(k/5)); the last round is the cut (direct: the target,
    // effective: what the effective cut kept).
    let d = target as f64 / LENET300 as f64;
    for (r, last) in [(&direct, target), (&eff, u(&eff["kept"]))] {
        let h: Vec<f64> = r["round_densities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(h.len(), 5, "{r}");
        for (k, &got) in h.iter().enumerate().take(4) {
            let want = (LENET300 as f64 * d.powf((k + 1) as f64 / 5.0)).round() / LENET300 as f64;
            assert!(
                (got - want).abs() < 1e-12,
                "round {}: {got} vs {want}",
                k + 1
            );
        }
        assert!(
            (h[4] - last as f64 / LENET300 as f64).abs() < 1e-12,
            "{h:?}"
        );
    }
    // --rounds changes the schedule's length.
    let (three, _) = run("three", &["--method", "snip-it", "--rounds", "3"]);
    assert_eq!(three["round_densities"].as_array().unwrap().len(), 3);

    // Iterative SNIP is not one-shot SNIP, and --effective keeps another set
    // than the direct cut.
    assert_ne!(m_direct, m_snip, "SNIP-it kept exactly SNIP's weights");
    assert_ne!(m_direct, m_eff);
}

/// SNIP-it's rounds through the library loop it runs on (`iterate` with
/// SNIP scores on the current masks): each round's mask lies inside the
/// previous one (pruned weights score 0 and stay pruned), pruned weights do
/// score exactly 0, and the result is the binary's mask.
#[test]
fn snip_it_rounds_keep_pruned_weights_pruned() {
    use candle_core::{DType, Device};
    use maskforge::autodiff::calibration::Calibration;
    use maskforge::autodiff::executor::Executor;
    use maskforge::mask::MaskSet;
    use maskforge::methods::scored::snip;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("it.safetensors");
    prune(
        &out,
        &[
            "zoo:lenet300",
            "--method",
            "snip-it",
            "--compression",
            "100",
            "--data",
            DATA,
            "--keep-inactive",
        ],
    );
    let net = maskforge::zoo::build("lenet300", 0).unwrap();
    let cli = maskforge::io::maskfile::read(&net, &out).unwrap();

    // The calibration the binary builds for `--data synthetic:200` (seed 0,
    // 10 per class, batches of 100).
    let shape = net.values[net.inputs[0]].shape.clone();
    let classes = net.values[net.outputs[0]].numel();
    let data = maskforge::io::data::Dataset::load(DATA, &shape, classes, 0).unwrap();
    let idx = data.per_class(10, 0);
    let cal = Calibration::from_dataset(&data, &idx, 100, &Device::Cpu).unwrap();
    let ex = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();

    let mut seen: Vec<MaskSet> = Vec::new();
    let mut zero_scores_of_pruned = true;
    let schedule = maskforge::methods::scored::Schedule {
        rounds: 5,
        density: 2662.0 / net.prunable_count() as f64,
        counts: maskforge::methods::scored::Counts::Nearest,
    };
    let (masks, _) = maskforge::methods::scored::iterate(
        &net,
        2662,
        schedule,
        &mut |m| {
            seen.push(m.clone());
            let s = snip::scores(&ex, m, &cal)?;
            for (bits, layer) in m.layers.iter().zip(&s) {
                for (i, &x) in layer.iter().enumerate() {
                    if !bits.get(i) && x != 0.0 {
                        zero_scores_of_pruned = false;
                    }
                }
            }
            Ok(s)
        },
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(zero_scores_of_pruned, "a pruned weight got a SNIP score");
    seen.push(masks.clone());
    assert_eq!(seen.len(), 6);
    for k in 1..seen.len() {
        assert!(
            seen[k].is_subset_of(&seen[k - 1]),
            "round {k} revived weights pruned earlier"
        );
        assert!(seen[k].count_ones() < seen[k - 1].count_ones());
    }
    assert_eq!(masks, cli, "the binary's SNIP-it is not this loop");
}

// -------------------------------------------------------------- mask dtype

/// `--mask-dtype u8|f32` write U8 / F32 tensors with the BOOL file's keys,
/// shapes and 0/1 pattern.
#[test]
fn mask_dtypes_carry_the_bool_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let file = |dt: &str| {
        let out = dir.path().join(format!("{dt}.safetensors"));
        prune(
            &out,
            &[
                "zoo:resnet20",
                "--method",
                "rpi",
                "--compression",
                "10",
                "--seed",
                "1",
                "--mask-dtype",
                dt,
            ],
        );
        read_st(&out)
    };
    let b = file("bool");
    let u8s = file("u8");
    let f = file("f32");
    assert_eq!(b.len(), 22, "one mask per ResNet-20 weight");
    let mut ones = 0;
    let mut zeros = 0;
    for (name, t) in &b {
        assert_eq!(t.dtype, "BOOL", "{name}");
        let want = pattern(t);
        ones += want.iter().filter(|&&x| x).count();
        zeros += want.iter().filter(|&&x| !x).count();
        let tu = &u8s[name];
        assert_eq!(tu.dtype, "U8", "{name}");
        assert_eq!(tu.shape, t.shape, "{name}");
        assert_eq!(pattern(tu), want, "{name}: u8 pattern");
        let tf = &f[name];
        assert_eq!(tf.dtype, "F32", "{name}");
        assert_eq!(tf.shape, t.shape, "{name}");
        let got: Vec<f32> = f32s(tf);
        let want_f: Vec<f32> = want.iter().map(|&x| x as u8 as f32).collect();
        assert_eq!(got, want_f, "{name}: f32 pattern");
    }
    assert_eq!(u8s.len(), b.len());
    assert_eq!(f.len(), b.len());
    assert!(ones > 0 && zeros > 0, "a pattern that tells dtypes apart");
}

// ------------------------------------------------------------------ naming

/// `--naming torch-prune` on an ONNX export with PyTorch-style names: every
/// prunable weight `<prefix>.weight` gets `<prefix>.weight_mask`, shaped as
/// the ONNX initializer, with the default file's pattern; nothing else.
#[test]
fn torch_prune_naming_maps_every_weight() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("r20.onnx");
    let o = maskforge(&["zoo", "export", "resnet20", "-o", onnx.to_str().unwrap()]);
    assert!(o.status.success());
    // The prunable weights as `inspect` names them, and their shapes as the
    // ONNX file stores them (read with the raw protobuf, not the graph).
    let o = maskforge(&["inspect", onnx.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let weights: Vec<String> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["weight"].as_str().map(String::from))
        .collect();
    assert_eq!(weights.len(), 22);
    let proto = maskforge::io::onnx::decode_file(&onnx).unwrap();
    let dims: BTreeMap<String, Vec<usize>> = proto
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.dims.iter().map(|&d| d as usize).collect()))
        .collect();

    let run = |naming: &str| {
        let out = dir.path().join(format!("{naming}.safetensors"));
        prune(
            &out,
            &[
                onnx.to_str().unwrap(),
                "--method",
                "rpi",
                "--compression",
                "20",
                "--naming",
                naming,
            ],
        );
        read_st(&out)
    };
    let source = run("source");
    let torch = run("torch-prune");
    assert_eq!(source.len(), weights.len());
    assert_eq!(torch.len(), weights.len());
    for w in &weights {
        let prefix = w
            .strip_suffix(".weight")
            .unwrap_or_else(|| panic!("{w}: not a PyTorch-style name"));
        let key = format!("{prefix}.weight_mask");
        let t = torch
            .get(&key)
            .unwrap_or_else(|| panic!("{key} missing; keys {:?}", torch.keys()));
        assert_eq!(&t.shape, &dims[w], "{key}: shape of {w}");
        assert_eq!(t, &source[w], "{key}: not the mask of {w}");
    }
}

// ------------------------------------------------------------ masks:FILE

/// `--quota masks:FILE`: each layer keeps the *effective* count of FILE's
/// layer (not its raw count), when the target is FILE's effective total.
#[test]
fn masks_quota_takes_the_effective_counts() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.safetensors");
    // RPI at 300x on ResNet-20 leaves many kept weights inactive.
    prune(
        &src,
        &[
            "zoo:resnet20",
            "--method",
            "rpi",
            "--compression",
            "300",
            "--keep-inactive",
        ],
    );
    let o = maskforge(&[
        "audit",
        "zoo:resnet20",
        "--masks",
        src.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success());
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let raw: Vec<usize> = a["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| u(&l["kept"]))
        .collect();
    let eff: Vec<usize> = a["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| u(&l["active"]))
        .collect();
    assert!(
        raw.iter().zip(&eff).filter(|(r, e)| r != e).count() >= 5,
        "FILE must tell raw from effective counts: {raw:?} {eff:?}"
    );
    let total = u(&a["total"]);
    let active: usize = eff.iter().sum();
    let c = format!("{:.12}", total as f64 / active as f64);
    let out = dir.path().join("q.safetensors");
    let q = format!("masks:{}", src.to_str().unwrap());
    for method in ["rpi", "mica"] {
        let r = prune(
            &out,
            &[
                "zoo:resnet20",
                "--method",
                method,
                "--quota",
                &q,
                "--compression",
                &c,
                "--keep-inactive",
            ],
        );
        let got: Vec<usize> = layers(&r).iter().map(|l| l.2).collect();
        assert_eq!(got, eff, "{method}: per-layer kept vs FILE's effective");
        let quota: Vec<usize> = layers(&r).iter().map(|l| l.1).collect();
        assert_eq!(quota, eff, "{method}: reported quota");
    }
}

// ------------------------------------------------------------- MiCA choice

/// `--mica-choice min|max` on LeNet-300-100 (dense layers, block size 1):
/// Algorithm 1 by hand from the quota counts. The last layer uses
/// `V = min(10, e)` outputs; a layer with `e` edges on `V` outputs asks its
/// producer for `ceil(e/V)` (min) or `floor(e/1) = e` (max) nodes, clamped to
/// its channels; that producer then uses `min(asked, n_out, e)` outputs.
/// The number of rows with a kept weight in each layer must be that.
#[test]
fn mica_min_and_max_take_the_ends_of_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let n_out = [300usize, 100, 10];
    let n_in = [784usize, 300, 100];
    let mut used_by_choice = Vec::new();
    for choice in ["min", "max"] {
        let out = dir.path().join(format!("{choice}.safetensors"));
        let r = prune(
            &out,
            &[
                "zoo:lenet300",
                "--method",
                "mica",
                "--mica-choice",
                choice,
                "--compression",
                "100",
                "--keep-inactive",
            ],
        );
        let e: Vec<usize> = layers(&r).iter().map(|l| l.1).collect();
        // Algorithm 1, output to input.
        let mut want = [0usize; 3];
        let mut asked: Option<usize> = None;
        for l in (0..3).rev() {
            let v = asked.unwrap_or(n_out[l]).min(n_out[l]).min(e[l]);
            want[l] = v;
            let (lo, hi) = (e[l].div_ceil(v), e[l]);
            assert!(lo < hi, "a range wider than one point");
            let r = if choice == "min" { lo } else { hi };
            asked = Some(r.clamp(1, n_in[l]));
        }
        let st = read_st(&out);
        let mut used = [0usize; 3];
        for (l, name) in ["fc1.weight", "fc2.weight", "fc3.weight"]
            .iter()
            .enumerate()
        {
            let p = pattern(&st[*name]);
            assert_eq!(p.iter().filter(|&&x| x).count(), e[l], "{name}: edges");
            used[l] = (0..n_out[l])
                .filter(|&o| p[o * n_in[l]..(o + 1) * n_in[l]].iter().any(|&x| x))
                .count();
        }
        assert_eq!(used, want, "--mica-choice {choice}: output nodes used");
        used_by_choice.push(used);
    }
    assert_ne!(used_by_choice[0], used_by_choice[1], "min and max agree");
}

// ------------------------------------------------------------ GraSP's sign

/// GraSP keeps the *highest* `w * Hg` (the reference prunes the lowest,
/// not negated): against `w * Hg` from the library's Hessian-gradient
/// product (itself checked against an analytic Hessian in
/// tests/gradients.rs) on the calibration the binary uses, every kept score
/// is at least every pruned one; the negated ranking would keep another set.
#[test]
fn grasp_keeps_the_highest_signed_score() {
    use candle_core::{DType, Device};
    use maskforge::autodiff::calibration::Calibration;
    use maskforge::autodiff::executor::Executor;
    use maskforge::mask::MaskSet;
    use maskforge::methods::scored::grasp;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("grasp.safetensors");
    let r = prune(
        &out,
        &[
            "zoo:lenet300",
            "--method",
            "grasp",
            "--compression",
            "20",
            "--data",
            DATA,
            "--keep-inactive",
        ],
    );
    let k = u(&r["kept"]);
    assert_eq!(k, 13_310);
    let net = maskforge::zoo::build("lenet300", 0).unwrap();
    let mask = maskforge::io::maskfile::read(&net, &out).unwrap();

    let shape = net.values[net.inputs[0]].shape.clone();
    let classes = net.values[net.outputs[0]].numel();
    let data = maskforge::io::data::Dataset::load(DATA, &shape, classes, 0).unwrap();
    let idx = data.per_class(10, 0);
    let cal = Calibration::from_dataset(&data, &idx, 100, &Device::Cpu).unwrap();
    let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
    let (hg, w) =
        grasp::hessian_gradient(&ex, &MaskSet::dense(&net), &cal, grasp::TEMPERATURE).unwrap();
    let score: Vec<Vec<f64>> = hg
        .iter()
        .zip(&w)
        .map(|(h, w)| h.iter().zip(w).map(|(a, b)| a * b).collect())
        .collect();
    let all: Vec<f64> = score.iter().flatten().copied().collect();
    let positive = all.iter().filter(|&&s| s > 0.0).count();
    let negative = all.iter().filter(|&&s| s < 0.0).count();
    assert!(
        positive > k && negative > k,
        "scores of both signs, {positive} positive and {negative} negative, so the sign decides"
    );
    let mut min_kept = f64::INFINITY;
    let mut max_pruned = f64::NEG_INFINITY;
    for (bits, s) in mask.layers.iter().zip(&score) {
        for (i, &x) in s.iter().enumerate() {
            if bits.get(i) {
                min_kept = min_kept.min(x);
            } else {
                max_pruned = max_pruned.max(x);
            }
        }
    }
    assert!(
        min_kept >= max_pruned,
        "GraSP kept a score {min_kept} below a pruned {max_pruned}: not the highest w*Hg"
    );
    // The kept set is the top of the signed scores: all positive here.
    assert!(min_kept > 0.0, "kept a non-positive score {min_kept}");
}

// --------------------------------------------------------- LAMP vs magnitude

/// A LeNet-300-100 checkpoint (Kaiming weights of the zoo) with `fc2.weight`
/// scaled by 1e-3: written with the `safetensors` crate.
fn scaled_lenet300(dir: &Path) -> std::path::PathBuf {
    let plain = dir.join("plain.safetensors");
    let o = maskforge(&[
        "init",
        "zoo:lenet300",
        "--scheme",
        "kaiming",
        "-o",
        plain.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut ts = read_st(&plain);
    let fc2 = ts.get_mut("fc2.weight").unwrap();
    assert_eq!(fc2.dtype, "F32");
    fc2.data = f32s(fc2)
        .iter()
        .flat_map(|x| (x * 1e-3).to_le_bytes())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = ts
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    t.shape.clone(),
                    &t.data,
                )
                .unwrap(),
            )
        })
        .collect();
    let p = dir.join("scaled.safetensors");
    std::fs::write(
        &p,
        safetensors::tensor::serialize(views, None::<std::collections::HashMap<String, String>>)
            .unwrap(),
    )
    .unwrap();
    p
}

/// With one layer at a thousandth of the others' scale, global magnitude
/// empties it and LAMP does not; LAMP's mask is exactly the global top-k of
/// the LAMP scores computed here from the file (w^2 over the sum of w^2 of
/// the weights at least as large, per layer), which inside each layer keeps
/// the largest |w|.
#[test]
fn lamp_keeps_a_small_scale_layer_that_magnitude_empties() {
    let dir = tempfile::tempdir().unwrap();
    let ck = scaled_lenet300(dir.path());
    let weights = read_st(&ck);
    let names = ["fc1.weight", "fc2.weight", "fc3.weight"];
    let run = |method: &str| {
        let out = dir.path().join(format!("{method}.safetensors"));
        let r = prune(
            &out,
            &[
                ck.to_str().unwrap(),
                "--arch",
                "zoo:lenet300",
                "--method",
                method,
                "--compression",
                "50",
                "--keep-inactive",
            ],
        );
        (r, read_st(&out))
    };
    let k = 5324; // round(266200 / 50)
    let (mag_r, mag) = run("magnitude");
    let (lamp_r, lamp) = run("lamp");
    assert_eq!(u(&mag_r["kept"]), k);
    assert_eq!(u(&lamp_r["kept"]), k);
    assert_eq!(
        pattern(&mag["fc2.weight"]).iter().filter(|&&x| x).count(),
        0,
        "global magnitude should empty the small-scale layer"
    );
    let lamp_fc2 = pattern(&lamp["fc2.weight"]).iter().filter(|&&x| x).count();
    assert!(lamp_fc2 >= 10, "LAMP kept {lamp_fc2} weights of fc2");

    // LAMP scores by hand, from the file's values.
    let mut scored: Vec<(f64, usize, usize)> = Vec::new(); // (score, layer, index)
    for (l, name) in names.iter().enumerate() {
        let w: Vec<f64> = f32s(&weights[*name]).iter().map(|&x| x as f64).collect();
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| (w[a] * w[a]).total_cmp(&(w[b] * w[b])));
        let mut suffix = 0.0;
        let mut s = vec![0.0; w.len()];
        for &i in order.iter().rev() {
            suffix += w[i] * w[i];
            s[i] = w[i] * w[i] / suffix;
        }
        scored.extend(s.iter().enumerate().map(|(i, &x)| (x, l, i)));
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let cut = scored[k - 1].0;
    assert!(scored[k].0 < cut, "no tie at the cut");
    for (l, name) in names.iter().enumerate() {
        let p = pattern(&lamp[*name]);
        let w = f32s(&weights[*name]);
        let mut min_kept = f32::INFINITY;
        let mut max_pruned = 0f32;
        for (i, &kept) in p.iter().enumerate() {
            if kept {
                min_kept = min_kept.min(w[i].abs());
            } else {
                max_pruned = max_pruned.max(w[i].abs());
            }
        }
        assert!(
            min_kept >= max_pruned,
            "{name}: LAMP kept |w| {min_kept} below a pruned {max_pruned}"
        );
        for &(s, sl, i) in &scored {
            if sl == l {
                assert_eq!(p[i], s >= cut, "{name}[{i}]: LAMP score {s} vs cut {cut}");
            }
        }
    }
}
