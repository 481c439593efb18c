//! Bad inputs through the binary: every one is an input error (exit code 1)
//! with exactly one line `error: <cause>` on stderr that names the offending
//! file, tensor, layer or op, and no output file (nor a leftover temporary
//! file) appears (CONVENTIONS.md, "What comes out" and "Command line").

mod common;
use common::{maskforge, maskforge_ok, s};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};

/// `.maskforge-*.tmp` files left in `dir` (a failed atomic write).
fn stray_temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".maskforge-") && n.ends_with(".tmp"))
        .collect()
}

/// Exit code 1, exactly one stderr line `error: ...` containing every needle.
fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1; stderr: {stderr}"
    );
    let body = stderr.strip_suffix('\n').unwrap_or(&stderr);
    assert!(
        !body.is_empty() && !body.contains('\n'),
        "stderr must be exactly one line, got: {stderr:?}"
    );
    assert!(
        body.starts_with("error: "),
        "stderr must start with 'error: ', got: {stderr:?}"
    );
    for n in needles {
        assert!(
            body.contains(n),
            "stderr should name {n:?}, got: {stderr:?}"
        );
    }
    body.to_string()
}

/// Run `audit <args> -o <dir>/out.safetensors`, expect an input error naming
/// every needle, no output file and no stray temporary file.
fn audit_fails(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let out_file = dir.join("out.safetensors");
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", s(&out_file)]);
    let out = maskforge(&all);
    let msg = assert_one_line_error(&out, needles);
    assert!(
        !out_file.exists(),
        "a failed audit must not create {}",
        out_file.display()
    );
    assert_eq!(stray_temps(dir), Vec::<String>::new(), "stray temp files");
    msg
}

fn export(name: &str, path: &Path) {
    let out = maskforge(&["zoo", "export", name, "-o", s(path)]);
    assert!(
        out.status.success(),
        "zoo export {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One tensor to serialise: name, dtype, shape, little-endian bytes.
struct T {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn f32_tensor(name: &str, shape: &[usize], seed: u64) -> T {
    let n: usize = shape.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data = (0..n)
        .flat_map(|_| (rng.random_range(0.01f32..1.0)).to_le_bytes())
        .collect();
    T {
        name: name.into(),
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        data,
    }
}

fn bool_tensor(name: &str, shape: &[usize]) -> T {
    T {
        name: name.into(),
        dtype: Dtype::BOOL,
        shape: shape.to_vec(),
        data: vec![1u8; shape.iter().product()],
    }
}

fn st_bytes(ts: &[T]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = ts
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize(views, None::<HashMap<String, String>>).unwrap()
}

/// The six tensors of a LeNet-300-100 state dict (zoo names), `skip` left out
/// and `override_shape` replacing one tensor's shape.
fn lenet300(skip: Option<&str>, override_shape: Option<(&str, &[usize])>) -> Vec<T> {
    let specs: [(&str, &[usize]); 6] = [
        ("fc1.weight", &[300, 784]),
        ("fc1.bias", &[300]),
        ("fc2.weight", &[100, 300]),
        ("fc2.bias", &[100]),
        ("fc3.weight", &[10, 100]),
        ("fc3.bias", &[10]),
    ];
    specs
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| Some(*n) != skip)
        .map(|(i, (n, sh))| {
            let sh = match override_shape {
                Some((o, s2)) if o == *n => s2,
                _ => sh,
            };
            f32_tensor(n, sh, i as u64)
        })
        .collect()
}

fn write_lenet300(path: &Path) {
    std::fs::write(path, st_bytes(&lenet300(None, None))).unwrap();
}

// ---------------------------------------------------------------- ONNX files

#[test]
fn truncated_onnx_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.onnx");
    export("lenet5", &full);
    let bytes = std::fs::read(&full).unwrap();
    assert!(bytes.len() > 1000, "lenet5 export is suspiciously small");
    let cut = dir.path().join("x.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    audit_fails(dir.path(), &[s(&cut)], &[s(&cut)]);
    // inspect reads it through the same door.
    let out = maskforge(&["inspect", s(&cut)]);
    assert_one_line_error(&out, &[s(&cut)]);
}

#[test]
fn garbage_bytes_named_onnx_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("garbage.onnx");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let bytes: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
    std::fs::write(&p, bytes).unwrap();
    let msg = audit_fails(dir.path(), &[s(&p)], &[s(&p)]);
    assert!(msg.contains("ONNX"), "should say it is not ONNX: {msg}");
}

#[test]
fn empty_onnx_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.onnx");
    std::fs::write(&p, b"").unwrap();
    let msg = audit_fails(dir.path(), &[s(&p)], &[s(&p)]);
    assert!(msg.contains("empty"), "should say the file is empty: {msg}");
}

#[test]
fn text_file_is_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let text = "This is a README, not a neural network.\nline two\n";
    for name in ["model.onnx", "notes.txt"] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let msg = audit_fails(dir.path(), &[s(&p)], &[s(&p)]);
        assert!(msg.contains("not an ONNX model"), "{name}: {msg}");
        std::fs::remove_file(&p).unwrap();
    }
}

/// lenet300 exported, with node `node_ix` (or the first Relu) renamed to FancyOp.
fn fancy_model(dir: &Path) -> PathBuf {
    let src = dir.join("lenet300.onnx");
    export("lenet300", &src);
    let mut m = maskforge::io::onnx::decode_file(&src).unwrap();
    let g = m.graph.as_mut().unwrap();
    let relu = g
        .node
        .iter_mut()
        .find(|n| n.op_type == "Relu")
        .expect("lenet300 export has a Relu node");
    relu.op_type = "FancyOp".into();
    let p = dir.join("fancy.onnx");
    std::fs::write(&p, maskforge::io::onnx::writer::encode(&m)).unwrap();
    std::fs::remove_file(&src).unwrap();
    p
}

#[test]
fn unsupported_op_is_named_by_audit_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let p = fancy_model(dir.path());
    audit_fails(dir.path(), &[s(&p)], &[s(&p), "FancyOp"]);

    let out = maskforge(&["inspect", s(&p)]);
    assert_one_line_error(&out, &[s(&p), "FancyOp"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FancyOp") && stdout.contains("1 unsupported"),
        "inspect should list the unsupported op on stdout: {stdout}"
    );

    let out = maskforge(&["inspect", s(&p), "--json"]);
    assert_one_line_error(&out, &["FancyOp"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let list = v["unsupported"].as_array().expect("unsupported list");
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["op"], "FancyOp");
}

#[test]
fn custom_domain_op_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("lenet300.onnx");
    export("lenet300", &src);
    let mut m = maskforge::io::onnx::decode_file(&src).unwrap();
    let node = m
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Gemm")
        .unwrap();
    node.domain = "com.example.fancy".into();
    let p = dir.path().join("custom.onnx");
    std::fs::write(&p, maskforge::io::onnx::writer::encode(&m)).unwrap();
    audit_fails(dir.path(), &[s(&p)], &[s(&p), "Gemm", "com.example.fancy"]);
}

// --------------------------------------------------------- safetensors files

#[test]
fn safetensors_header_length_beyond_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt.safetensors");
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"fc1.weight\":{\"dtype\":\"F32\",\"shape\":[1],");
    std::fs::write(&p, bytes).unwrap();
    audit_fails(dir.path(), &[s(&p), "--arch", "zoo:lenet300"], &[s(&p)]);

    // Shorter than the 8-byte length prefix.
    std::fs::write(&p, [1u8, 2, 3]).unwrap();
    audit_fails(dir.path(), &[s(&p), "--arch", "zoo:lenet300"], &[s(&p)]);
}

#[test]
fn safetensors_offsets_beyond_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt.safetensors");
    // A well-formed header whose tensor claims 400 bytes; only 16 follow.
    let mut header =
        br#"{"fc1.weight":{"dtype":"F32","shape":[10,10],"data_offsets":[0,400]}}"#.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(&p, &bytes).unwrap();
    audit_fails(dir.path(), &[s(&p), "--arch", "zoo:lenet300"], &[s(&p)]);

    // A real checkpoint with its data cut short.
    let full = st_bytes(&lenet300(None, None));
    std::fs::write(&p, &full[..full.len() - 100]).unwrap();
    audit_fails(dir.path(), &[s(&p), "--arch", "zoo:lenet300"], &[s(&p)]);
    // Same without --arch (chain inference must not get further either).
    audit_fails(dir.path(), &[s(&p)], &[s(&p)]);
}

#[test]
fn safetensors_weight_shape_mismatch_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt.safetensors");
    let ts = lenet300(None, Some(("fc2.weight", &[100, 301])));
    std::fs::write(&p, st_bytes(&ts)).unwrap();
    let msg = audit_fails(
        dir.path(),
        &[s(&p), "--arch", "zoo:lenet300"],
        &[s(&p), "'fc2.weight'"],
    );
    assert!(
        msg.contains("[100, 301]"),
        "should give the bad shape: {msg}"
    );
}

#[test]
fn safetensors_bias_shape_mismatch_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt.safetensors");
    let ts = lenet300(None, Some(("fc2.bias", &[99])));
    std::fs::write(&p, st_bytes(&ts)).unwrap();
    audit_fails(
        dir.path(),
        &[s(&p), "--arch", "zoo:lenet300"],
        &[s(&p), "'fc2.bias'"],
    );
}

#[test]
fn safetensors_missing_weight_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt.safetensors");
    let ts = lenet300(Some("fc3.weight"), None);
    std::fs::write(&p, st_bytes(&ts)).unwrap();
    let msg = audit_fails(
        dir.path(),
        &[s(&p), "--arch", "zoo:lenet300"],
        &[s(&p), "'fc3.weight'"],
    );
    assert!(msg.contains("missing"), "{msg}");
}

#[test]
fn binding_by_order_with_wrong_order_names_the_tensor() {
    // No name matches, so tensors bind in storage order; safetensors stores
    // them sorted by name, so "x" [10,100] comes first and cannot be fc1.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt.safetensors");
    let ts = vec![
        f32_tensor("z", &[300, 784], 1),
        f32_tensor("y", &[100, 300], 2),
        f32_tensor("x", &[10, 100], 3),
    ];
    std::fs::write(&p, st_bytes(&ts)).unwrap();
    audit_fails(
        dir.path(),
        &[s(&p), "--arch", "zoo:lenet300"],
        &[s(&p), "'x'", "fc1.weight"],
    );
}

#[test]
fn safetensors_with_unsupported_dtype_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt.safetensors");
    let mut ts = lenet300(None, None);
    ts.push(T {
        name: "step".into(),
        dtype: Dtype::U64,
        shape: vec![1],
        data: 7u64.to_le_bytes().to_vec(),
    });
    std::fs::write(&p, st_bytes(&ts)).unwrap();
    audit_fails(
        dir.path(),
        &[s(&p), "--arch", "zoo:lenet300"],
        &[s(&p), "'step'"],
    );
}

#[test]
fn index_json_naming_a_missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    let shard1 = dir.path().join("model-00001-of-00002.safetensors");
    let ts = lenet300(None, None);
    let (first, _) = ts.split_at(2);
    std::fs::write(&shard1, st_bytes(first)).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    let mut map = serde_json::Map::new();
    for t in &ts {
        let f = if t.name.starts_with("fc1") {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(t.name.clone(), f.into());
    }
    let idx = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(&index, idx.to_string()).unwrap();
    audit_fails(
        dir.path(),
        &[s(&index), "--arch", "zoo:lenet300"],
        &[s(&index), "model-00002-of-00002.safetensors"],
    );
}

#[test]
fn index_json_escaping_its_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("ckpt");
    std::fs::create_dir(&sub).unwrap();
    write_lenet300(&dir.path().join("outside.safetensors"));
    let index = sub.join("model.safetensors.index.json");
    let idx = serde_json::json!({"weight_map": {"fc1.weight": "../outside.safetensors"}});
    std::fs::write(&index, idx.to_string()).unwrap();
    audit_fails(
        &sub,
        &[s(&index), "--arch", "zoo:lenet300"],
        &[s(&index), "../outside.safetensors"],
    );
}

#[test]
fn index_json_with_a_tensor_in_two_shards() {
    let dir = tempfile::tempdir().unwrap();
    let ts = lenet300(None, None);
    std::fs::write(dir.path().join("a.safetensors"), st_bytes(&ts[..4])).unwrap();
    std::fs::write(dir.path().join("b.safetensors"), st_bytes(&ts[3..])).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    let idx = serde_json::json!({"weight_map": {
        "fc1.weight": "a.safetensors", "fc3.weight": "b.safetensors"
    }});
    std::fs::write(&index, idx.to_string()).unwrap();
    // ts[3] is fc2.bias, written to both shards.
    audit_fails(
        dir.path(),
        &[s(&index), "--arch", "zoo:lenet300"],
        &["'fc2.bias'", "two shards"],
    );
}

#[test]
fn index_json_that_is_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index, "{\"weight_map\": {").unwrap();
    audit_fails(
        dir.path(),
        &[s(&index), "--arch", "zoo:lenet300"],
        &[s(&index)],
    );
    std::fs::write(&index, "{\"metadata\": {}}").unwrap();
    audit_fails(
        dir.path(),
        &[s(&index), "--arch", "zoo:lenet300"],
        &[s(&index), "weight_map"],
    );
}

// ------------------------------------------------------------------ outputs

#[test]
fn output_equal_to_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    write_lenet300(&ckpt);
    let before = std::fs::read(&ckpt).unwrap();
    let check = |args: &[&str], input: &Path, before: &[u8]| {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        let out = maskforge(&all);
        assert_one_line_error(&out, &["overwrite"]);
        assert!(
            std::fs::read(input).unwrap() == before,
            "{} was modified",
            input.display()
        );
        assert_eq!(stray_temps(dir.path()), Vec::<String>::new());
        assert!(!dir.path().join("out.safetensors").exists());
    };
    // Same path.
    check(
        &[s(&ckpt), "--arch", "zoo:lenet300", "-o", s(&ckpt)],
        &ckpt,
        &before,
    );
    // Same file, spelled differently.
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let other = dir.path().join("sub/../ckpt.safetensors");
    check(
        &[s(&ckpt), "--arch", "zoo:lenet300", "-o", s(&other)],
        &ckpt,
        &before,
    );
    // An ONNX model.
    let onnx = dir.path().join("lenet300.onnx");
    export("lenet300", &onnx);
    let onnx_before = std::fs::read(&onnx).unwrap();
    check(&[s(&onnx), "-o", s(&onnx)], &onnx, &onnx_before);
    // The --arch file of a checkpoint.
    check(
        &[s(&ckpt), "--arch", s(&onnx), "-o", s(&onnx)],
        &onnx,
        &onnx_before,
    );
    // The --masks file.
    let masks = dir.path().join("masks.safetensors");
    let mts = vec![
        bool_tensor("fc1.weight", &[300, 784]),
        bool_tensor("fc2.weight", &[100, 300]),
        bool_tensor("fc3.weight", &[10, 100]),
    ];
    std::fs::write(&masks, st_bytes(&mts)).unwrap();
    let masks_before = std::fs::read(&masks).unwrap();
    check(
        &["zoo:lenet300", "--masks", s(&masks), "-o", s(&masks)],
        &masks,
        &masks_before,
    );
}

#[test]
fn unwritable_output_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // -o names an existing directory: the rename fails after the temp file
    // was written; the temp file must be removed.
    let target = dir.path().join("taken");
    std::fs::create_dir(&target).unwrap();
    let out = maskforge(&["audit", "zoo:lenet300", "-o", s(&target)]);
    assert_one_line_error(&out, &[s(&target)]);
    assert!(target.is_dir());
    assert_eq!(stray_temps(dir.path()), Vec::<String>::new());
    // -o in a folder that does not exist.
    let missing = dir.path().join("no/such/dir/out.safetensors");
    let out = maskforge(&["audit", "zoo:lenet300", "-o", s(&missing)]);
    assert_one_line_error(&out, &[s(&missing)]);
    assert!(!dir.path().join("no").exists());
}

// ---------------------------------------------------------- masks and names

#[test]
fn masks_with_a_wrong_shape_name_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("masks.safetensors");
    let mts = vec![
        bool_tensor("fc1.weight", &[784, 300]),
        bool_tensor("fc2.weight", &[100, 300]),
        bool_tensor("fc3.weight", &[10, 100]),
    ];
    std::fs::write(&masks, st_bytes(&mts)).unwrap();
    audit_fails(
        dir.path(),
        &["zoo:lenet300", "--masks", s(&masks)],
        &[s(&masks), "'fc1.weight'"],
    );
    // Same for a checkpoint bound to the zoo architecture.
    let ckpt = dir.path().join("ckpt.safetensors");
    write_lenet300(&ckpt);
    audit_fails(
        dir.path(),
        &[s(&ckpt), "--arch", "zoo:lenet300", "--masks", s(&masks)],
        &[s(&masks), "'fc1.weight'"],
    );
}

#[test]
fn masks_missing_a_layer_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("masks.safetensors");
    let mts = vec![
        bool_tensor("fc1.weight", &[300, 784]),
        bool_tensor("fc2.weight", &[100, 300]),
    ];
    std::fs::write(&masks, st_bytes(&mts)).unwrap();
    audit_fails(
        dir.path(),
        &["zoo:lenet300", "--masks", s(&masks)],
        &[s(&masks), "'fc3.weight'"],
    );
}

#[test]
fn masks_file_that_is_not_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("masks.safetensors");
    std::fs::write(&masks, "not a tensor file").unwrap();
    audit_fails(
        dir.path(),
        &["zoo:lenet300", "--masks", s(&masks)],
        &[s(&masks)],
    );
    let missing = dir.path().join("nope.safetensors");
    audit_fails(
        dir.path(),
        &["zoo:lenet300", "--masks", s(&missing)],
        &[s(&missing)],
    );
}

#[test]
fn unknown_zoo_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    audit_fails(dir.path(), &["zoo:nosuchnet"], &["nosuchnet"]);
    audit_fails(dir.path(), &["zoo:mlp:10-x"], &["mlp:10-x"]);
    let out = maskforge(&["inspect", "zoo:nosuchnet"]);
    assert_one_line_error(&out, &["nosuchnet"]);
    let f = dir.path().join("x.onnx");
    let out = maskforge(&["zoo", "export", "nosuchnet", "-o", s(&f)]);
    assert_one_line_error(&out, &["nosuchnet"]);
    assert!(!f.exists());
    assert_eq!(stray_temps(dir.path()), Vec::<String>::new());
    // An unknown --arch zoo name for a checkpoint.
    let ckpt = dir.path().join("ckpt.safetensors");
    write_lenet300(&ckpt);
    audit_fails(
        dir.path(),
        &[s(&ckpt), "--arch", "zoo:nosuchnet"],
        &["nosuchnet"],
    );
}

#[test]
fn arch_is_refused_where_it_makes_no_sense() {
    let dir = tempfile::tempdir().unwrap();
    audit_fails(
        dir.path(),
        &["zoo:lenet300", "--arch", "zoo:lenet300"],
        &["--arch"],
    );
    let onnx = dir.path().join("lenet300.onnx");
    export("lenet300", &onnx);
    audit_fails(
        dir.path(),
        &[s(&onnx), "--arch", "zoo:lenet300"],
        &["--arch"],
    );
    // An --arch that is neither ONNX nor zoo:NAME.
    let ckpt = dir.path().join("ckpt.safetensors");
    write_lenet300(&ckpt);
    audit_fails(
        dir.path(),
        &[s(&ckpt), "--arch", "lenet300.pt"],
        &["--arch", "lenet300.pt"],
    );
}

#[test]
fn missing_model_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("absent.onnx");
    audit_fails(dir.path(), &[s(&p)], &[s(&p)]);
    let p = dir.path().join("absent.safetensors");
    audit_fails(dir.path(), &[s(&p), "--arch", "zoo:lenet300"], &[s(&p)]);
    let onnx = dir.path().join("absent-arch.onnx");
    let ckpt = dir.path().join("ckpt.safetensors");
    write_lenet300(&ckpt);
    audit_fails(dir.path(), &[s(&ckpt), "--arch", s(&onnx)], &[s(&onnx)]);
}

#[test]
fn pytorch_mask_with_a_wrong_shape_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pruned.safetensors");
    let mut ts: Vec<T> = lenet300(Some("fc1.weight"), None);
    ts.push(f32_tensor("fc1.weight_orig", &[300, 784], 9));
    ts.push(bool_tensor("fc1.weight_mask", &[784, 300]));
    std::fs::write(&p, st_bytes(&ts)).unwrap();
    audit_fails(
        dir.path(),
        &[s(&p), "--arch", "zoo:lenet300"],
        &[s(&p), "'fc1.weight_mask'"],
    );
}

#[test]
fn onnx_initializer_with_short_data_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("lenet300.onnx");
    export("lenet300", &src);
    let mut m = maskforge::io::onnx::decode_file(&src).unwrap();
    let init = m
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == "fc2.weight")
        .unwrap();
    assert_eq!(init.raw_data.len(), 100 * 300 * 4);
    init.raw_data.truncate(1000);
    let p = dir.path().join("short.onnx");
    std::fs::write(&p, maskforge::io::onnx::writer::encode(&m)).unwrap();
    audit_fails(dir.path(), &[s(&p)], &[s(&p), "'fc2.weight'"]);
}

/// lenet300 exported with fc1.weight moved to `weights.bin` beside the model.
fn external_data_model(dir: &Path) -> (PathBuf, PathBuf) {
    use candle_onnx::onnx::StringStringEntryProto;
    let src = dir.join("src.onnx");
    export("lenet300", &src);
    let mut m = maskforge::io::onnx::decode_file(&src).unwrap();
    std::fs::remove_file(&src).unwrap();
    let init = m
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == "fc1.weight")
        .unwrap();
    let data = std::mem::take(&mut init.raw_data);
    let bin = dir.join("weights.bin");
    std::fs::write(&bin, &data).unwrap();
    init.data_location = 1; // EXTERNAL
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: k.into(),
        value: v,
    };
    init.external_data = vec![
        entry("location", "weights.bin".into()),
        entry("offset", "0".into()),
        entry("length", data.len().to_string()),
    ];
    let p = dir.join("ext.onnx");
    std::fs::write(&p, maskforge::io::onnx::writer::encode(&m)).unwrap();
    (p, bin)
}

#[test]
fn missing_external_data_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (model, bin) = external_data_model(dir.path());
    // The model reads while its data file is there...
    let out = maskforge(&["audit", s(&model), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and names the missing file when it is not.
    std::fs::remove_file(&bin).unwrap();
    audit_fails(dir.path(), &[s(&model)], &[s(&model), s(&bin)]);
    // A data file too short for the tensor.
    std::fs::write(&bin, [0u8; 64]).unwrap();
    audit_fails(dir.path(), &[s(&model)], &["weights.bin", "'fc1.weight'"]);
}

#[test]
fn output_equal_to_external_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (model, bin) = external_data_model(dir.path());
    let before = std::fs::read(&bin).unwrap();
    let out = maskforge(&["audit", s(&model), "-o", s(&bin)]);
    assert!(
        std::fs::read(&bin).unwrap() == before,
        "the external-data file was overwritten"
    );
    assert_one_line_error(&out, &["overwrite"]);
    assert_eq!(stray_temps(dir.path()), Vec::<String>::new());
}

#[test]
fn output_equal_to_a_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ts = lenet300(None, None);
    let (f1, f2) = ("model-1.safetensors", "model-2.safetensors");
    std::fs::write(dir.path().join(f1), st_bytes(&ts[..2])).unwrap();
    std::fs::write(dir.path().join(f2), st_bytes(&ts[2..])).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    let mut map = serde_json::Map::new();
    for (i, t) in ts.iter().enumerate() {
        map.insert(t.name.clone(), if i < 2 { f1 } else { f2 }.into());
    }
    std::fs::write(&index, serde_json::json!({ "weight_map": map }).to_string()).unwrap();
    let shard = dir.path().join(f1);
    let before = std::fs::read(&shard).unwrap();
    let out = maskforge(&[
        "audit",
        s(&index),
        "--arch",
        "zoo:lenet300",
        "-o",
        s(&shard),
    ]);
    assert!(
        std::fs::read(&shard).unwrap() == before,
        "the shard was overwritten"
    );
    assert_one_line_error(&out, &["overwrite"]);
    assert_eq!(stray_temps(dir.path()), Vec::<String>::new());
}

#[test]
fn uppercase_index_json_is_read_as_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("MODEL.SAFETENSORS.INDEX.JSON");
    let idx = serde_json::json!({"weight_map": {"fc1.weight": "shard-1.safetensors"}});
    std::fs::write(&index, idx.to_string()).unwrap();
    audit_fails(
        dir.path(),
        &[s(&index), "--arch", "zoo:lenet300"],
        &[s(&index), "shard-1.safetensors"],
    );
}

/// Run `prune <args> -o <dir>/out.safetensors`, expect an input error naming
/// every needle and no output.
fn prune_fails(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let out_file = dir.join("out.safetensors");
    let mut all = vec!["prune"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", s(&out_file)]);
    let msg = assert_one_line_error(&maskforge(&all), needles);
    assert!(!out_file.exists(), "a failed prune must not write");
    assert_eq!(stray_temps(dir), Vec::<String>::new(), "stray temp files");
    msg
}

/// An exported lenet300 whose graph is edited by `edit`.
fn edited_model(dir: &Path, edit: impl FnOnce(&mut maskforge::io::onnx::ModelProto)) -> PathBuf {
    let src = dir.join("src.onnx");
    export("lenet300", &src);
    let mut m = maskforge::io::onnx::decode_file(&src).unwrap();
    edit(&mut m);
    let p = dir.join("edited.onnx");
    std::fs::write(&p, maskforge::io::onnx::writer::encode(&m)).unwrap();
    p
}

#[test]
fn onnx_with_a_cycle_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = edited_model(dir.path(), |m| {
        let g = m.graph.as_mut().unwrap();
        // fc1 reads relu1's output, relu1 reads fc1's: a cycle.
        let relu_out = g.node.iter().find(|n| n.op_type == "Relu").unwrap().output[0].clone();
        let fc1 = g.node.iter_mut().find(|n| n.op_type == "Gemm").unwrap();
        fc1.input[0] = relu_out;
    });
    audit_fails(dir.path(), &[s(&p)], &["cycle"]);
}

#[test]
fn onnx_with_a_dangling_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = edited_model(dir.path(), |m| {
        let g = m.graph.as_mut().unwrap();
        let fc2 = g
            .node
            .iter_mut()
            .filter(|n| n.op_type == "Gemm")
            .nth(1)
            .unwrap();
        fc2.input[0] = "nowhere".into();
    });
    audit_fails(dir.path(), &[s(&p)], &["nowhere"]);
}

#[test]
fn safetensors_with_overlapping_offsets_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"fc1.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"fc2.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}"#;
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(&[0u8; 24]);
    let p = dir.path().join("overlap.safetensors");
    std::fs::write(&p, bytes).unwrap();
    audit_fails(dir.path(), &[s(&p)], &["overlap.safetensors"]);
}

#[test]
fn infeasible_quota_names_the_layer_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let msg = prune_fails(
        dir.path(),
        &[
            "zoo:vgg16",
            "--method",
            "rpi",
            "--quota",
            "uniform+",
            "--compression",
            "1e5",
        ],
        &["uniform+", "feasible"],
    );
    assert!(
        msg.contains("fc.weight") || msg.contains("layers."),
        "{msg}"
    );
}

#[test]
fn compressions_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Above the parameter count (less than one weight kept), below 1, not a number.
    prune_fails(
        dir.path(),
        &["zoo:lenet300", "--method", "rpi", "--compression", "1e9"],
        &["266200"],
    );
    prune_fails(
        dir.path(),
        &["zoo:lenet300", "--method", "rpi", "--compression", "0.5"],
        &["0.5"],
    );
    prune_fails(
        dir.path(),
        &["zoo:lenet300", "--method", "rpi", "--compression", "lots"],
        &["lots"],
    );
    prune_fails(
        dir.path(),
        &["zoo:lenet300", "--method", "rpi", "--density", "1.5"],
        &["1.5"],
    );
}

#[test]
fn unknown_method_and_quota_are_named() {
    let dir = tempfile::tempdir().unwrap();
    prune_fails(
        dir.path(),
        &["zoo:lenet300", "--method", "bogus", "--compression", "10"],
        &["bogus"],
    );
    prune_fails(
        dir.path(),
        &[
            "zoo:lenet300",
            "--method",
            "rpi",
            "--quota",
            "weird",
            "--compression",
            "10",
        ],
        &["weird"],
    );
}

/// A write that hits the file-size limit (a stand-in for a full disk) fails
/// with exit 1 and leaves nothing behind.
#[test]
fn disk_full_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.safetensors");
    // 64 KiB limit; VGG-16's BOOL mask file is 14.7 MB.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -f 64; exec '{}' prune zoo:vgg16 --method rpi --compression 10 -o '{}'",
            env!("CARGO_BIN_EXE_maskforge"),
            s(&out_file)
        ))
        .output()
        .unwrap();
    assert_one_line_error(&out, &["out.safetensors"]);
    assert!(!out_file.exists());
    assert_eq!(stray_temps(dir.path()), Vec::<String>::new());
}

/// Calibration data that does not fit the model: labels beyond its outputs,
/// inputs of the wrong size, a missing file, and no data at all.
#[test]
fn bad_calibration_data_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("digits.csv");
    // LeNet-300-100 reads 784 pixels and has 10 outputs: label 12 is out of range.
    let row = |label: u32| format!("{}{label}\n", "0,".repeat(784));
    std::fs::write(&csv, row(3) + &row(12)).unwrap();
    prune_fails(
        dir.path(),
        &[
            "zoo:lenet300",
            "--method",
            "snip",
            "--compression",
            "10",
            "--data",
            s(&csv),
        ],
        &["label 12", "10 outputs"],
    );
    let small = dir.path().join("small.csv");
    std::fs::write(&small, "1,2,3,0\n4,5,6,1\n").unwrap();
    prune_fails(
        dir.path(),
        &[
            "zoo:lenet300",
            "--method",
            "snip",
            "--compression",
            "10",
            "--data",
            s(&small),
        ],
        &["small.csv", "784"],
    );
    prune_fails(
        dir.path(),
        &[
            "zoo:lenet300",
            "--method",
            "grasp",
            "--compression",
            "10",
            "--data",
            "/nonexistent/x.csv",
        ],
        &["x.csv"],
    );
    prune_fails(
        dir.path(),
        &["zoo:lenet300", "--method", "snip", "--compression", "10"],
        &["--data"],
    );
}

// ------------------------------------- malformed graphs built from protobuf

mod proto {
    use candle_onnx::onnx::{
        tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto,
        OperatorSetIdProto, TensorProto,
    };
    pub use maskforge::io::onnx::writer::{int, ints, value_info as vi};

    pub fn node(op: &str, name: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.into()],
            attribute: attrs,
            ..Default::default()
        }
    }

    pub fn i64s(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Int64 as i32,
            int64_data: v.to_vec(),
            ..Default::default()
        }
    }

    pub fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            float_data: v.to_vec(),
            ..Default::default()
        }
    }

    /// `x` [N, 2, 4, 4] -> Relu -> `y`, plus `extra` nodes and initializers
    /// (their outputs may dangle: every node is translated all the same).
    pub fn model(extra: Vec<NodeProto>, inits: Vec<TensorProto>) -> ModelProto {
        let mut nodes = vec![node("Relu", "y", &["x"], vec![])];
        nodes.extend(extra);
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                name: "malformed".into(),
                node: nodes,
                initializer: inits,
                input: vec![vi("x", &[2, 4, 4])],
                output: vec![vi("y", &[2, 4, 4])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The malformed graphs, by file name: each must be refused naming its bad node.
fn malformed_models() -> Vec<(&'static str, &'static str, maskforge::io::onnx::ModelProto)> {
    use proto::*;
    let shape_x = || node("Shape", "shape_x", &["x"], vec![]);
    vec![
        (
            "slice_without_ends.onnx",
            "slice_no_ends",
            model(
                vec![
                    shape_x(),
                    node("Slice", "slice_no_ends", &["shape_x", "starts"], vec![]),
                ],
                vec![i64s("starts", &[1], &[1])],
            ),
        ),
        (
            "slice_empty_starts.onnx",
            "slice_empty",
            model(
                vec![
                    shape_x(),
                    node(
                        "Slice",
                        "slice_empty",
                        &["shape_x", "starts", "ends"],
                        vec![],
                    ),
                ],
                vec![i64s("starts", &[0], &[]), i64s("ends", &[1], &[2])],
            ),
        ),
        (
            "slice_empty_attr_ends.onnx",
            "slice_attr",
            model(
                vec![
                    shape_x(),
                    node(
                        "Slice",
                        "slice_attr",
                        &["shape_x"],
                        vec![ints("starts", &[0]), ints("ends", &[])],
                    ),
                ],
                vec![],
            ),
        ),
        (
            "reduce_const_first.onnx",
            "reduce_c",
            model(
                vec![node("ReduceMean", "reduce_c", &["c", "x"], vec![])],
                vec![f32s("c", &[2], &[1.0, 2.0])],
            ),
        ),
        (
            "pool_const_first.onnx",
            "pool_c",
            model(
                vec![node(
                    "MaxPool",
                    "pool_c",
                    &["c", "x"],
                    vec![ints("kernel_shape", &[2, 2])],
                )],
                vec![f32s("c", &[2], &[1.0, 2.0])],
            ),
        ),
        (
            "matmul_one_input.onnx",
            "mm_one",
            model(vec![node("MatMul", "mm_one", &["x"], vec![])], vec![]),
        ),
        (
            "mul_empty_operand.onnx",
            "mul_empty",
            model(vec![node("Mul", "mul_empty", &["x", ""], vec![])], vec![]),
        ),
        (
            "flatten_axis_out_of_range.onnx",
            "flat9",
            model(
                vec![node("Flatten", "flat9", &["x"], vec![int("axis", 9)])],
                vec![],
            ),
        ),
        (
            "flatten_const_axis_out_of_range.onnx",
            "flatc",
            model(
                vec![
                    shape_x(),
                    node("Flatten", "flatc", &["shape_x"], vec![int("axis", 5)]),
                ],
                vec![],
            ),
        ),
        (
            "transpose_const_bad_perm.onnx",
            "tr_c",
            model(
                vec![
                    shape_x(),
                    node("Transpose", "tr_c", &["shape_x"], vec![ints("perm", &[3])]),
                ],
                vec![],
            ),
        ),
        (
            "transpose_perm_overflow.onnx",
            "tr_min",
            model(
                vec![node(
                    "Transpose",
                    "tr_min",
                    &["x"],
                    vec![ints("perm", &[0, i64::MIN, 2, 3])],
                )],
                vec![],
            ),
        ),
        (
            "pool_zero_kernel.onnx",
            "pool0",
            model(
                vec![node(
                    "MaxPool",
                    "pool0",
                    &["x"],
                    vec![ints("kernel_shape", &[0, 0])],
                )],
                vec![],
            ),
        ),
        (
            "pool_huge_pads.onnx",
            "pool_pads",
            model(
                vec![node(
                    "AveragePool",
                    "pool_pads",
                    &["x"],
                    vec![
                        ints("kernel_shape", &[2, 2]),
                        ints("pads", &[i64::MAX, i64::MAX, i64::MAX, i64::MAX]),
                    ],
                )],
                vec![],
            ),
        ),
        (
            // Found by the fuzzer: pads that do not overflow but make an
            // output of ~2^63 rows (the analyses never finished).
            "pool_pads_huge_output.onnx",
            "pool_big",
            model(
                vec![node(
                    "AveragePool",
                    "pool_big",
                    &["x"],
                    vec![
                        ints("kernel_shape", &[2, 2]),
                        ints(
                            "pads",
                            &[i64::MAX - 38, i64::MAX, i64::MAX, i64::MAX - 16384],
                        ),
                    ],
                )],
                vec![],
            ),
        ),
        ("input_too_large.onnx", "x", {
            let mut m = model(vec![], vec![]);
            m.graph.as_mut().unwrap().input[0] = vi("x", &[1 << 20, 1 << 20, 1]);
            m
        }),
        (
            // size 0 underflowed in the executor (prune --method snip).
            "lrn_size_zero.onnx",
            "lrn0",
            model(
                vec![node("LRN", "lrn0", &["x"], vec![int("size", 0)])],
                vec![],
            ),
        ),
        (
            "reshape_target_overflow.onnx",
            "rs_big",
            model(
                vec![node("Reshape", "rs_big", &["x", "target"], vec![])],
                vec![i64s("target", &[4], &[1, 1 << 40, 1 << 40, 0])],
            ),
        ),
        (
            "constant_of_shape_overflow.onnx",
            "'cos'",
            model(
                vec![
                    node("ConstantOfShape", "cos", &["big"], vec![]),
                    node("Add", "cos_add", &["cos", "one"], vec![]),
                ],
                vec![
                    i64s("big", &[2], &[1 << 40, 1 << 40]),
                    i64s("one", &[1], &[1]),
                ],
            ),
        ),
    ]
}

#[test]
fn malformed_graphs_are_input_errors_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (file, node, m) in malformed_models() {
        let p = dir.path().join(file);
        std::fs::write(&p, maskforge::io::onnx::writer::encode(&m)).unwrap();
        let out_file = dir.path().join("out.safetensors");
        let out = maskforge(&["audit", s(&p), "-o", s(&out_file)]);
        let r = std::panic::catch_unwind(|| assert_one_line_error(&out, &[s(&p), node]));
        if r.is_err() || out_file.exists() || !stray_temps(dir.path()).is_empty() {
            failures.push(format!(
                "{file}: exit {:?}, stderr {:?}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .take(2)
                    .collect::<Vec<_>>()
            ));
        }
        std::fs::remove_file(&p).unwrap();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Writes the malformed graphs into fuzz/seeds/onnx_reader. Ignored in the
/// suite because it writes into the source tree; scripts/fuzz.sh runs it
/// (`cargo test --test bad_inputs -- --ignored write_onnx_fuzz_seeds`)
/// before every fuzzing session, so the seeds follow the catalogue.
#[test]
#[ignore = "writes into the source tree; scripts/fuzz.sh runs it"]
fn write_onnx_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/onnx_reader");
    for (file, _, m) in malformed_models() {
        std::fs::write(
            dir.join(format!("bad_{file}")),
            maskforge::io::onnx::writer::encode(&m),
        )
        .unwrap();
    }
}

/// An IDX images file whose header dimensions overflow when multiplied.
#[test]
fn idx_header_overflow_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let idx = |nd: u8, dims: &[u32], data: &[u8]| {
        let mut b = vec![0, 0, 8, nd];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    };
    let images = dir.path().join("train-images-idx3-ubyte");
    let labels = dir.path().join("train-labels-idx1-ubyte");
    std::fs::write(&images, idx(3, &[u32::MAX, u32::MAX, u32::MAX], &[0; 16])).unwrap();
    std::fs::write(&labels, idx(1, &[1], &[0])).unwrap();
    prune_fails(
        dir.path(),
        &[
            "zoo:lenet300",
            "--method",
            "snip",
            "--compression",
            "10",
            "--data",
            s(&images),
        ],
        &[s(&images)],
    );
}

// ------------------------------------------------- modern graphs (issue #11)

/// lenet300 exported and edited by `edit`, written to `dir/name`.
fn edited_lenet300(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut candle_onnx::onnx::GraphProto),
) -> PathBuf {
    let src = dir.join("lenet300.onnx");
    export("lenet300", &src);
    let mut m = maskforge::io::onnx::decode_file(&src).unwrap();
    edit(m.graph.as_mut().unwrap());
    let p = dir.join(name);
    std::fs::write(&p, maskforge::io::onnx::writer::encode(&m)).unwrap();
    std::fs::remove_file(&src).unwrap();
    p
}

#[test]
fn recurrent_and_control_flow_ops_are_all_named_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = edited_lenet300(dir.path(), "rnn.onnx", |g| {
        g.node[2].op_type = "LSTM".into();
        g.node[4].op_type = "If".into();
    });
    let msg = audit_fails(dir.path(), &[s(&p)], &["2 unsupported", "LSTM", "relu1"]);
    assert!(msg.contains("If") && msg.contains("relu2"), "{msg}");
    let out = maskforge(&["inspect", s(&p), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let ops: Vec<&str> = v["unsupported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["LSTM", "If"], "{v}");
}

#[test]
fn a_symbolic_dimension_needs_input_shape() {
    use candle_onnx::onnx::tensor_shape_proto::dimension::Value as D;
    let dir = tempfile::tempdir().unwrap();
    let p = edited_lenet300(dir.path(), "symbolic.onnx", |g| {
        let t = match g.input[0].r#type.as_mut().unwrap().value.as_mut().unwrap() {
            candle_onnx::onnx::type_proto::Value::TensorType(t) => t,
            _ => unreachable!(),
        };
        t.shape.as_mut().unwrap().dim[2].value = Some(D::DimParam("height".into()));
    });
    audit_fails(
        dir.path(),
        &[s(&p)],
        &["'input'", "dimension 2", "'height'", "--input-shape"],
    );
    // The wrong input name and a rank mismatch are named too.
    audit_fails(
        dir.path(),
        &[s(&p), "--input-shape", "images=1x1x28x28"],
        &["'images'", "input"],
    );
    audit_fails(
        dir.path(),
        &[s(&p), "--input-shape", "input=1x28x28"],
        &["3 dimensions", "declares 4"],
    );
    audit_fails(
        dir.path(),
        &[s(&p), "--input-shape", "input=1x1x28x27"],
        &["dimension 3", "fixes it at 28"],
    );
    // Given the shape, it reads; the mask file records the shape used.
    let out_file = dir.path().join("eff.safetensors");
    maskforge_ok(&[
        "audit",
        s(&p),
        "--input-shape",
        "input=1x1x28x28",
        "-o",
        s(&out_file),
    ]);
    let bytes = std::fs::read(&out_file).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("__metadata__");
    assert_eq!(
        meta.get("input_shape").map(String::as_str),
        Some("input=1x1x28x28")
    );
}

#[test]
fn a_mistyped_attribute_is_an_input_error_not_a_silent_default() {
    let dir = tempfile::tempdir().unwrap();
    let p = edited_lenet300(dir.path(), "mistyped.onnx", |g| {
        let a = &mut g.node[1].attribute[0];
        assert_eq!(a.name, "transB");
        // transB = 1 stored as a FLOAT: read as an INT it would be 0 and the
        // weight would be taken untransposed.
        a.r#type = 1;
        a.f = 1.0;
        a.i = 0;
    });
    audit_fails(dir.path(), &[s(&p)], &["fc1", "transB", "integer", "float"]);
}
