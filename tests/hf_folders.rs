//! Hugging Face folders (issue #12): every family's network, built from
//! config.json, reproduces the outputs transformers computed for the same
//! weights (fixtures/make_hf.py wrote both), within 1e-4 in fp32.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::{root, s, tensors};
use maskforge::autodiff::executor::{Executor, Mode};
use maskforge::io::model::{load_with, Loaded};
use maskforge::io::onnx::ReadOptions;

fn folder(name: &str) -> PathBuf {
    root().join("fixtures/hf").join(name)
}

/// The reference file: input and outputs by name, as (shape, values).
fn reference(name: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    tensors(&folder(name).join("reference.safetensors"))
        .into_iter()
        .map(|(n, _, shape, v)| (n, (shape, v)))
        .collect()
}

fn load(name: &str, shapes: &[(&str, Vec<usize>)]) -> Loaded {
    let options = ReadOptions {
        input_shapes: shapes
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect(),
    };
    load_with(s(&folder(name)), None, 0, &options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The network's input for the reference: looked-up embeddings for token
/// ids, the pixels as they are.
fn input(m: &Loaded, r: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Tensor {
    let dev = Device::Cpu;
    if let Some((shape, ids)) = r.get("input_ids") {
        let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
        let tokens = m.tokens.as_ref().expect("a text model has a token lookup");
        let x = tokens.embed(&ids).unwrap();
        return Tensor::from_vec(x, (1, shape[1], tokens.hidden()), &dev).unwrap();
    }
    let (shape, px) = &r["pixel_values"];
    Tensor::from_vec(px.clone(), shape.as_slice(), &dev).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_family(name: &str) {
    let r = reference(name);
    let seq = r.get("input_ids").map(|(s, _)| s[1]);
    let shapes: Vec<(&str, Vec<usize>)> =
        seq.map(|l| ("input_ids", vec![1, l])).into_iter().collect();
    let m = load(name, &shapes);
    let x = input(&m, &r);
    let net = &m.network;
    let ex = Executor::new(net, &Device::Cpu, DType::F32).unwrap();
    let mut compared = 0;
    for &out in &net.outputs {
        let oname = &net.value(out).name;
        let (shape, want) = r
            .get(oname.as_str())
            .unwrap_or_else(|| panic!("{name}: no reference for output '{oname}'"));
        let got = ex.value(&x, None, Mode::Eval, out).unwrap();
        assert_eq!(got.dims()[1..], shape[1..], "{name} {oname}");
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let d = max_abs_diff(&got, want);
        assert!(d < 1e-4, "{name} {oname}: max |ours - transformers| = {d}");
        // Not a vacuous match: the outputs vary.
        let spread = want.iter().cloned().fold(f32::MIN, f32::max)
            - want.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 0.1, "{name} {oname}: reference is flat");
        compared += 1;
    }
    assert!(compared > 0);
}

#[test]
fn bert_matches_transformers() {
    check_family("bert");
}

#[test]
fn roberta_masked_lm_matches_transformers() {
    check_family("roberta");
}

#[test]
fn gpt2_matches_transformers() {
    check_family("gpt2");
}

#[test]
fn llama_sharded_with_llama3_rope_matches_transformers() {
    check_family("llama");
}

#[test]
fn mistral_sliding_window_matches_transformers() {
    check_family("mistral");
}

#[test]
fn qwen2_bf16_with_qkv_bias_matches_transformers() {
    check_family("qwen2");
}

#[test]
fn vit_matches_transformers() {
    check_family("vit");
}

/// The llama folder and its ONNX export (fixtures/hf/llama_embeds.onnx, the
/// same weights under the same names, stored transposed) audit to the same
/// per-layer kept and active counts under the same masks.
#[test]
fn folder_and_onnx_export_audit_alike() {
    let hf = load("llama", &[("input_ids", vec![1, 10])]);
    let onnx = load_with(
        s(&folder("llama_embeds.onnx")),
        None,
        0,
        &ReadOptions {
            input_shapes: [("inputs_embeds".to_string(), vec![1, 10, 64])].into(),
        },
    )
    .unwrap();
    let (a, b) = (&hf.network, &onnx.network);
    assert_eq!(a.layers.len(), b.layers.len());
    for seed in 0..3 {
        let masks = common::random_masks(a, 0.03, seed);
        // Masks are canonical ([out, in]) in memory: move them by name.
        let moved = maskforge::mask::MaskSet {
            layers: b
                .layers
                .iter()
                .map(|l| {
                    let i = a.layer_index(&l.name).expect("same names");
                    assert_eq!(a.layers[i].shape, l.shape, "{}", l.name);
                    masks.layers[i].clone()
                })
                .collect(),
        };
        let ra = maskforge::analysis::audit::audit(a, &masks).unwrap();
        let rb = maskforge::analysis::audit::audit(b, &moved).unwrap();
        for la in &ra.layers {
            let lb = rb.layers.iter().find(|l| l.name == la.name).unwrap();
            assert_eq!(
                (la.kept, la.active),
                (lb.kept, lb.active),
                "{} seed {seed}",
                la.name
            );
        }
        // At 3 % density paths are lost: the comparison is not between
        // two dense audits.
        assert!(ra.active < ra.kept, "seed {seed}: nothing inactive");
    }
}

/// A copy of fixture folder `name` in a temporary directory, with
/// config.json edited by `edit` and the tensors kept by `keep`.
fn altered_copy(
    name: &str,
    edit: impl Fn(&mut serde_json::Value),
    keep: impl Fn(&str) -> bool,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = folder(name);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| keep(n)).collect();
    safetensors::serialize_to_file(kept, None, &dir.path().join("model.safetensors")).unwrap();
    dir
}

fn fails_with(dir: &std::path::Path, needle: &str) {
    let out = common::maskforge(&["inspect", s(dir)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

#[test]
fn unknown_model_type_is_an_input_error_naming_it() {
    let dir = altered_copy("gpt2", |c| c["model_type"] = "falcon".into(), |_| true);
    fails_with(dir.path(), "model_type 'falcon' is not supported");
}

#[test]
fn a_weight_missing_from_the_shards_is_named() {
    let gone = "transformer.h.1.mlp.c_fc.weight";
    let dir = altered_copy("gpt2", |_| {}, |n| n != gone);
    fails_with(dir.path(), gone);
    // A bias the config promises is required too.
    let gone = "model.layers.0.self_attn.v_proj.bias";
    let dir = altered_copy(
        "qwen2",
        |c| c["attention_bias"] = true.into(),
        |n| n != gone,
    );
    fails_with(dir.path(), gone);
}

#[test]
fn config_json_itself_names_the_folder() {
    let out = common::maskforge_ok(&["inspect", s(&folder("bert").join("config.json")), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["model"], "bert");
    // The default sequence (16) unless --input-shape says otherwise.
    assert_eq!(
        j["inputs"][0],
        serde_json::json!(["inputs_embeds", [16, 32]])
    );
}

/// `prune --apply` on a folder writes every tensor of it in its own dtype
/// (bf16 stays bf16, the embedding is there): put beside config.json it is a
/// folder again, whose zeros audit to the mask that was written.
#[test]
fn apply_writes_a_drop_in_model_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::copy(folder("qwen2").join("config.json"), out.join("config.json")).unwrap();
    let masks = dir.path().join("masks.safetensors");
    common::maskforge_ok(&[
        "prune",
        s(&folder("qwen2")),
        "--method",
        "magnitude",
        "--compression",
        "5",
        "--keep-inactive",
        "-o",
        s(&masks),
        "--apply",
        s(&out.join("model.safetensors")),
    ]);
    let read = |p: &std::path::Path| {
        let bytes = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<(String, safetensors::Dtype, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.dtype(), t.data().to_vec()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let before = read(&folder("qwen2").join("model.safetensors"));
    let after = read(&out.join("model.safetensors"));
    assert_eq!(before.len(), after.len());
    let m = load("qwen2", &[]);
    let mut changed = 0;
    for ((n, d, a), (n2, d2, b)) in before.iter().zip(&after) {
        assert_eq!((n, d), (n2, d2));
        if m.network.layer_index(n).is_none() {
            assert_eq!(a, b, "{n} is not a layer: copied unchanged");
        } else {
            changed += (a != b) as usize;
        }
    }
    assert!(changed > 0);
    let audit = common::maskforge_ok(&["audit", s(&out), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let from_masks =
        common::maskforge_ok(&["audit", s(&folder("qwen2")), "--masks", s(&masks), "--json"]);
    let k: serde_json::Value = serde_json::from_slice(&from_masks.stdout).unwrap();
    assert_eq!(j["kept"], k["kept"]);
    assert_eq!(j["active"], k["active"]);
}

/// SynFlow's linearised pass through a causal mask: a masked score carries
/// no flow (it used to read f32::MIN and overflow the softmax's sum).
#[test]
fn synflow_runs_through_causal_masks() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["gpt2", "llama", "mistral"] {
        let out = dir.path().join(format!("{name}.safetensors"));
        let run = common::maskforge_ok(&[
            "prune",
            s(&folder(name)),
            "--method",
            "synflow",
            "--compression",
            "10",
            "--rounds",
            "10",
            "--keep-inactive",
            "-o",
            s(&out),
            "--json",
        ]);
        let j: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let total = j["total"].as_u64().unwrap() as f64;
        let kept = j["kept"].as_u64().unwrap() as f64;
        assert!((total / kept - 10.0).abs() < 0.01, "{name}: {j}");
    }
}

/// A compressed-tensors Hugging Face folder (fixtures/hf/llama_24: the llama
/// fixture pruned 2:4 and stored sparse-24-bitmask by the library) loads from
/// its own config.json and audits to the library's per-weight counts.
#[test]
fn compressed_tensors_folder_audits_from_its_bitmasks() {
    let dir = folder("llama_24");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let out = common::maskforge_ok(&["audit", s(&dir), "--pattern", "2:4", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = j["layers"].as_array().unwrap();
    assert_eq!(layers.len(), expected["weights"].as_object().unwrap().len());
    for l in layers {
        let name = l["name"].as_str().unwrap();
        assert_eq!(l["kept"], expected["weights"][name]["nonzero"], "{name}");
    }
    assert_eq!(j["pattern"]["conforms"], true);
    let m = load("llama_24", &[]);
    let names: Vec<&str> = m.network.layers.iter().map(|l| l.name.as_str()).collect();
    assert!(names.contains(&"model.layers.1.mlp.down_proj.weight"));
}

/// Dead factors on the real folders (issue #12's must-show, on exporter
/// output rather than hand-built graphs): masks dense but for a few rows,
/// then which weights the audit finds inactive.
fn inactive_after_pruning_rows(
    name: &str,
    rows: &[(&str, &[usize])],
) -> std::collections::BTreeMap<String, Vec<usize>> {
    let m = load(name, &[]);
    let net = &m.network;
    let mut masks = maskforge::mask::MaskSet::dense(net);
    for (layer, rs) in rows {
        let li = net.layer_index(layer).unwrap();
        let width = net.layers[li].shape[1];
        for &r in rs.iter() {
            for c in 0..width {
                masks.layers[li].set(r * width + c, false);
            }
        }
    }
    let report = maskforge::analysis::audit::audit(net, &masks).unwrap();
    net.layers
        .iter()
        .enumerate()
        .map(|(li, l)| {
            let dead: Vec<usize> = masks.layers[li]
                .ones()
                .filter(|&e| !report.effective.layers[li].get(e))
                .collect();
            (l.name.clone(), dead)
        })
        .filter(|(_, d)| !d.is_empty())
        .collect()
}

#[test]
fn a_pruned_key_dimension_kills_its_query_dimensions_in_the_group() {
    // llama: 4 query heads share 2 key/value heads (head_dim 16): key
    // dimension 1 of kv head 0 and its RoPE partner 9.
    let dead = inactive_after_pruning_rows(
        "llama",
        &[("model.layers.0.self_attn.k_proj.weight", &[1, 9])],
    );
    let q = "model.layers.0.self_attn.q_proj.weight";
    let rows: std::collections::BTreeSet<usize> = dead[q].iter().map(|e| e / 64).collect();
    // Query heads 0 and 1 (kv group 0), dimensions 1 and 9; whole rows.
    assert_eq!(rows, [1, 9, 17, 25].into());
    assert_eq!(dead[q].len(), 4 * 64);
    assert_eq!(dead.len(), 1, "{:?}", dead.keys().collect::<Vec<_>>());
    // One partner alone keeps the rotated key dimension alive.
    let dead =
        inactive_after_pruning_rows("llama", &[("model.layers.0.self_attn.k_proj.weight", &[1])]);
    assert!(dead.is_empty(), "{dead:?}");
    // qwen2 has key biases: the pruned key dimension is a constant, not 0.
    let dead = inactive_after_pruning_rows(
        "qwen2",
        &[("model.layers.0.self_attn.k_proj.weight", &[1, 5])],
    );
    assert!(dead.is_empty(), "{dead:?}");
}

#[test]
fn a_pruned_swiglu_gate_row_kills_its_up_row_and_down_column() {
    let dead =
        inactive_after_pruning_rows("llama", &[("model.layers.1.mlp.gate_proj.weight", &[7])]);
    let up: Vec<usize> = (7 * 64..8 * 64).collect();
    assert_eq!(dead["model.layers.1.mlp.up_proj.weight"], up);
    let down: Vec<usize> = (0..64).map(|o| o * 96 + 7).collect();
    assert_eq!(dead["model.layers.1.mlp.down_proj.weight"], down);
    assert_eq!(dead.len(), 2);
}

/// The values `zero_at_zero_input` proves 0 (which lets the dead-factor pass
/// skip the forward that would read every weight) are 0 in that forward,
/// on every family and on exported graphs.
#[test]
fn values_proved_zero_are_zero_in_the_zero_input_forward() {
    use maskforge::analysis::factors::zero_at_zero_input;
    let mut nets: Vec<maskforge::graph::Network> = [
        "bert", "roberta", "gpt2", "llama", "mistral", "qwen2", "vit",
    ]
    .iter()
    .map(|n| {
        load(
            n,
            &[("input_ids", vec![1, 10])]
                .into_iter()
                .filter(|_| *n != "vit")
                .collect::<Vec<_>>(),
        )
        .network
    })
    .collect();
    for g in common::fixtures() {
        nets.push(g.load().network);
    }
    let mut proved = 0;
    for net in &nets {
        let zero = zero_at_zero_input(net);
        let ex = Executor::new(net, &Device::Cpu, DType::F64).unwrap();
        let vals = ex.zero_input_values(None, None).unwrap();
        for (v, z) in zero.iter().enumerate() {
            if !z || net.inputs.contains(&v) {
                continue;
            }
            let Some(t) = &vals[v] else { continue };
            let x: Vec<f64> = t.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                x.iter().all(|&e| e == 0.0),
                "{}: '{}' is not 0",
                net.name,
                net.values[v].name
            );
            proved += 1;
        }
    }
    assert!(proved > 100, "only {proved} values proved zero");
}
