//! compressed-tensors sparse checkpoints (`sparse-bitmask`,
//! `sparse-24-bitmask`) read without decompressing them: the fixtures
//! `fixtures/ct_lenet5_*` were written by compressed-tensors 0.14.0.1
//! (`fixtures/make_compressed_tensors.py`), with each weight's nonzero count
//! and the SHA-256 of the library's own decompression in `expected.json`.

mod common;
use common::{maskforge, maskforge_ok, root, s};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maskforge::io::checkpoint::Checkpoint;
use maskforge::io::stfile::{serialize, Entry};
use safetensors::SafeTensors;
use serde_json::Value;
use sha2::{Digest, Sha256};

const FIXTURES: [&str; 2] = ["ct_lenet5_bitmask", "ct_lenet5_24"];

fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn audit_json(args: &[&str]) -> Value {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_slice(&maskforge_ok(&all).stdout).expect("JSON report")
}

/// `(layer, kept, active)` per layer.
fn per_layer(report: &Value) -> Vec<(String, u64, u64)> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["kept"].as_u64().unwrap(),
                l["active"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn st_dtype(d: safetensors::Dtype) -> &'static str {
    match d {
        safetensors::Dtype::F32 => "F32",
        safetensors::Dtype::BF16 => "BF16",
        safetensors::Dtype::F16 => "F16",
        safetensors::Dtype::I64 => "I64",
        safetensors::Dtype::U8 => "U8",
        other => panic!("unexpected dtype {other:?}"),
    }
}

/// Copy fixture `name` into `dir`, passing every stored tensor through
/// `edit` (return `None` to drop it).
fn rewrite(name: &str, dir: &Path, edit: impl Fn(&str, Entry) -> Option<Entry>) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(fixture(name).join("config.json"), out.join("config.json")).unwrap();
    let bytes = std::fs::read(fixture(name).join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let entries = st
        .tensors()
        .into_iter()
        .filter_map(|(k, v)| {
            let e = Entry {
                name: k.clone(),
                dtype: st_dtype(v.dtype()),
                shape: v.shape().to_vec(),
                data: v.data().to_vec(),
            };
            edit(&k, e)
        })
        .collect();
    std::fs::write(
        out.join("model.safetensors"),
        serialize(entries, &BTreeMap::new()),
    )
    .unwrap();
    out
}

/// The checkpoint written back dense by maskforge's reader: every
/// compressed weight reconstructed, every other model tensor as stored.
fn decompress_with_maskforge(dir: &Path, out: &Path) -> BTreeMap<String, String> {
    let ckpt = Checkpoint::open(dir).unwrap();
    let mut entries = Vec::new();
    let mut sha = BTreeMap::new();
    for (k, e) in &ckpt.tensors {
        if !ckpt.compressed.is_part(k) {
            entries.push((k.clone(), e.tensor.clone()));
        }
    }
    for (k, c) in &ckpt.compressed.weights {
        entries.push((k.clone(), c.dense()));
    }
    let entries: Vec<Entry> = entries
        .into_iter()
        .map(|(k, t)| {
            let data = t.le_bytes().unwrap();
            if k.ends_with(".weight") {
                sha.insert(k.clone(), format!("{:x}", Sha256::digest(&data)));
            }
            let dtype = match t.dtype() {
                maskforge::graph::tensor::DType::F32 => "F32",
                maskforge::graph::tensor::DType::BF16 => "BF16",
                other => panic!("{k}: {other:?}"),
            };
            Entry {
                name: k,
                dtype,
                shape: t.shape.clone(),
                data,
            }
        })
        .collect();
    std::fs::write(out, serialize(entries, &BTreeMap::new())).unwrap();
    sha
}

#[test]
fn audit_of_compressed_equals_audit_of_decompressed() {
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let exp = expected(name);
        let folder = fixture(name);
        let r = audit_json(&[s(&folder), "--arch", "zoo:lenet5"]);
        let layers = per_layer(&r);
        // The counts the library's own decompression gives.
        for (layer, kept, _) in &layers {
            let want = exp["weights"][layer]["nonzero"].as_u64().unwrap();
            assert_eq!(*kept, want, "{name}: {layer} kept");
        }
        // The file itself (config.json beside it) reads the same.
        let file = folder.join("model.safetensors");
        assert_eq!(
            per_layer(&audit_json(&[s(&file), "--arch", "zoo:lenet5"])),
            layers,
            "{name}: the file and its folder"
        );
        // maskforge's own dense reconstruction: byte for byte the library's,
        // and its audit (zeros as the mask) the compressed one's.
        let dense = tmp.path().join(format!("{name}-dense.safetensors"));
        let sha = decompress_with_maskforge(&folder, &dense);
        for (w, h) in &sha {
            assert_eq!(
                exp["weights"][w]["sha256"].as_str().unwrap(),
                h,
                "{name}: {w} reconstructed"
            );
        }
        assert_eq!(sha.len(), 5);
        let d = audit_json(&[s(&dense), "--arch", "zoo:lenet5"]);
        assert_eq!(per_layer(&d), layers, "{name}: dense against compressed");
        assert_eq!(d["kept"], r["kept"]);
        assert_eq!(d["active"], r["active"]);
    }
}

/// The 2:4 fixture stores zeros in fc2's groups that kept fewer than two
/// weights: they are pruned (as in the dense weights), and the bitmask's
/// positions still hold the pattern.
#[test]
fn stored_zeros_of_a_24_bitmask_are_pruned() {
    let ckpt = Checkpoint::open(&fixture("ct_lenet5_24")).unwrap();
    let fc2 = &ckpt.compressed.weights["fc2.weight"];
    assert_eq!(fc2.stored_positions().count_ones(), 84 * 120 / 2);
    assert_eq!(
        fc2.mask().count_ones() as u64,
        expected("ct_lenet5_24")["weights"]["fc2.weight"]["nonzero"]
            .as_u64()
            .unwrap()
    );
    let r = audit_json(&[
        s(&fixture("ct_lenet5_24")),
        "--arch",
        "zoo:lenet5",
        "--pattern",
        "2:4",
    ]);
    for l in r["pattern"]["layers"].as_array().unwrap() {
        if l["layer"].as_str().unwrap().starts_with("fc") {
            assert_eq!(l["conforms"], true, "{l}");
        }
    }
}

/// Auditing binds every weight and takes the masks from the bitmasks: no
/// compressed weight is decompressed.
#[test]
fn audit_reads_no_dense_weight() {
    for name in FIXTURES {
        let ckpt = Checkpoint::open(&fixture(name)).unwrap();
        let arch = maskforge::zoo::build("lenet5", 0).unwrap();
        let bound = ckpt.bind(arch).unwrap();
        let masks = bound.stored_masks.expect("masks from the bitmasks");
        let report = maskforge::analysis::audit::audit(&bound.network, &masks).unwrap();
        assert!(report.kept > 0);
        assert!(!ckpt.compressed.is_empty());
        for (w, c) in &ckpt.compressed.weights {
            assert!(!c.is_materialized(), "{name}: {w} was decompressed");
        }
        // Asking for the values reconstructs that weight alone.
        let (first, c) = ckpt.compressed.weights.iter().next().unwrap();
        let _ = c.dense().to_f32().unwrap();
        assert!(c.is_materialized());
        for (w, c) in ckpt.compressed.weights.iter().skip(1) {
            assert!(!c.is_materialized(), "{w} decompressed along with {first}");
        }
    }
}

/// Commands that need values (magnitude pruning) read the reconstructed
/// weights: the same masks as from the decompressed checkpoint.
#[test]
fn magnitude_pruning_of_compressed_equals_dense() {
    let tmp = tempfile::tempdir().unwrap();
    let name = "ct_lenet5_bitmask";
    let dense = tmp.path().join("dense.safetensors");
    decompress_with_maskforge(&fixture(name), &dense);
    let prune = |model: &Path, out: &Path| {
        maskforge_ok(&[
            "prune",
            s(model),
            "--arch",
            "zoo:lenet5",
            "--method",
            "magnitude",
            "--compression",
            "4",
            "--keep-inactive",
            "-o",
            s(out),
        ]);
        let bytes = std::fs::read(out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<(String, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(k, t)| (k, t.data().to_vec()))
            .collect();
        v.sort();
        v
    };
    let a = prune(&fixture(name), &tmp.path().join("a.safetensors"));
    let b = prune(&dense, &tmp.path().join("b.safetensors"));
    assert_eq!(a.len(), 5);
    assert_eq!(a, b);
}

fn audit_error(folder: &Path) -> String {
    let out = maskforge(&["audit", s(folder), "--arch", "zoo:lenet5"]);
    assert_eq!(out.status.code(), Some(1), "an input error");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn corrupt_parts_are_input_errors_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    // A bitmask with a row byte missing.
    let d = rewrite("ct_lenet5_bitmask", &tmp.path().join("a"), |k, mut e| {
        if k == "fc1.bitmask" {
            e.shape = vec![120, 49];
            e.data.truncate(120 * 49);
        }
        Some(e)
    });
    let err = audit_error(&d);
    assert!(
        err.contains("'fc1.bitmask'") && err.contains("[120, 49]"),
        "{err}"
    );
    // One bit flipped: the values no longer match it.
    let d = rewrite("ct_lenet5_bitmask", &tmp.path().join("b"), |k, mut e| {
        if k == "fc2.bitmask" {
            e.data[0] ^= 1;
        }
        Some(e)
    });
    let err = audit_error(&d);
    assert!(
        err.contains("'fc2.compressed'") && err.contains("'fc2.bitmask'"),
        "{err}"
    );
    // The same in the 2:4 format.
    let d = rewrite("ct_lenet5_24", &tmp.path().join("c"), |k, mut e| {
        if k == "fc3.bitmask" {
            e.data[3] ^= 0x10;
        }
        Some(e)
    });
    let err = audit_error(&d);
    assert!(err.contains("'fc3.bitmask'"), "{err}");
    // Row offsets missing, and wrong.
    let d = rewrite("ct_lenet5_bitmask", &tmp.path().join("d"), |k, e| {
        (k != "conv2.row_offsets").then_some(e)
    });
    let err = audit_error(&d);
    assert!(err.contains("'conv2.row_offsets' is missing"), "{err}");
    let d = rewrite("ct_lenet5_bitmask", &tmp.path().join("e"), |k, mut e| {
        if k == "fc1.row_offsets" {
            e.data[8] ^= 1;
        }
        Some(e)
    });
    let err = audit_error(&d);
    assert!(
        err.contains("'fc1.row_offsets'") && err.contains("row 1"),
        "{err}"
    );
}

#[test]
fn unknown_format_name_is_an_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = rewrite("ct_lenet5_bitmask", tmp.path(), |_, e| Some(e));
    let cfg = d.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"sparse-bitmask\"", "\"sparse-bitmask-v9\"");
    std::fs::write(&cfg, text).unwrap();
    let err = audit_error(&d);
    assert!(
        err.contains("sparse-bitmask-v9") && err.contains("sparsity_config"),
        "{err}"
    );
    // Without a config.json the format is read from the tensors.
    std::fs::remove_file(&cfg).unwrap();
    let r = audit_json(&[s(&d), "--arch", "zoo:lenet5"]);
    let want: u64 = expected("ct_lenet5_bitmask")["weights"]
        .as_object()
        .unwrap()
        .values()
        .map(|w| w["nonzero"].as_u64().unwrap())
        .sum();
    assert_eq!(r["kept"].as_u64().unwrap(), want);
}

/// Sharded (`model.safetensors.index.json` in the folder), with one weight's
/// parts split across the shards: the same audit.
#[test]
fn sharded_compressed_checkpoint_reads_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let name = "ct_lenet5_bitmask";
    let out = tmp.path().join(name);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(fixture(name).join("config.json"), out.join("config.json")).unwrap();
    let bytes = std::fs::read(fixture(name).join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut shards: [Vec<Entry>; 2] = [Vec::new(), Vec::new()];
    let mut map = serde_json::Map::new();
    for (k, v) in st.tensors() {
        // fc1's values and row offsets in the second shard, its bitmask and
        // shape in the first.
        let i = usize::from(k.starts_with("fc") && k != "fc1.bitmask" && k != "fc1.shape");
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        map.insert(k.clone(), Value::String(file));
        shards[i].push(Entry {
            name: k,
            dtype: st_dtype(v.dtype()),
            shape: v.shape().to_vec(),
            data: v.data().to_vec(),
        });
    }
    for (i, entries) in shards.into_iter().enumerate() {
        let file = out.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        std::fs::write(file, serialize(entries, &BTreeMap::new())).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(out.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let whole = audit_json(&[s(&fixture(name)), "--arch", "zoo:lenet5"]);
    let sharded = audit_json(&[s(&out), "--arch", "zoo:lenet5"]);
    assert_eq!(per_layer(&sharded), per_layer(&whole));
    let index = out.join("model.safetensors.index.json");
    let by_index = audit_json(&[s(&index), "--arch", "zoo:lenet5"]);
    assert_eq!(per_layer(&by_index), per_layer(&whole));
    // The effective masks written from it, one shard per checkpoint shard.
    let masks = tmp.path().join("masks.safetensors.index.json");
    maskforge_ok(&["audit", s(&out), "--arch", "zoo:lenet5", "-o", s(&masks)]);
    assert!(masks.exists());
}

/// Random byte flips in the parts (shape, bitmask, row offsets) give an
/// error or a checkpoint whose masks and weights read; never a panic.
#[test]
fn flipped_bytes_in_the_parts_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let bytes = std::fs::read(fixture(name).join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let parts: Vec<(String, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .filter(|(k, _)| !k.ends_with(".weight") && !k.ends_with(".bias"))
            .map(|(k, v)| (k, v.data().to_vec()))
            .collect();
        for round in 0..60 {
            let (key, data) = &parts[rng.random_range(0..parts.len())];
            let at = rng.random_range(0..data.len());
            let bit = 1u8 << rng.random_range(0..8);
            let d = rewrite(
                name,
                &tmp.path().join(format!("{name}-{round}")),
                |k, mut e| {
                    if k == key {
                        e.data[at] ^= bit;
                    }
                    Some(e)
                },
            );
            let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
            let Ok(ckpt) = Checkpoint::from_bytes("flipped", bytes) else {
                continue;
            };
            if let Ok(bound) = ckpt.bind(maskforge::zoo::build("lenet5", 0).unwrap()) {
                for l in &bound.network.layers {
                    let _ = bound.network.params.get(&l.name).unwrap().to_f32();
                }
            }
        }
    }
}

/// A config.json that does not parse is an error for a compressed
/// checkpoint, and ignored beside a plain one.
#[test]
fn broken_config_json_matters_only_to_compressed_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = rewrite("ct_lenet5_24", tmp.path(), |_, e| Some(e));
    std::fs::write(d.join("config.json"), "{broken").unwrap();
    let err = audit_error(&d);
    assert!(
        err.contains("config.json") && err.contains("not valid JSON"),
        "{err}"
    );
    let plain = d.join("plain.safetensors");
    maskforge_ok(&["audit", "zoo:lenet5", "-o", s(&plain)]);
    maskforge_ok(&["audit", s(&plain), "--arch", "zoo:lenet5"]);
}
