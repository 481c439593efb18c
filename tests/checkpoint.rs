//! safetensors checkpoints through the binary: binding by name and by storage
//! order, shards, PyTorch pruned modules (`*_orig` + `*_mask`), chain
//! inference without `--arch`, half-precision dtypes, and the effective mask
//! file `audit -o` writes.

mod common;
use common::{maskforge, s};
use std::process::Command;

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::Value;
use sha2::{Digest, Sha256};

const LENET300_TOTAL: usize = 784 * 300 + 300 * 100 + 100 * 10;

/// Run and parse the `--json` report; the run must succeed.
fn audit_json(args: &[&str]) -> Value {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = maskforge(&all);
    assert!(
        out.status.success(),
        "audit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report on stdout")
}

fn num(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}")) as usize
}

/// A tensor of f32 values, written in `dtype`.
#[derive(Clone)]
struct W {
    name: String,
    shape: Vec<usize>,
    vals: Vec<f32>,
}

impl W {
    fn new(name: &str, shape: &[usize], vals: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), vals.len());
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            vals,
        }
    }

    fn nnz(&self) -> usize {
        // -0.0 == 0.0, so negative zeros count as pruned.
        self.vals.iter().filter(|&&x| x != 0.0).count()
    }

    fn renamed(&self, name: &str) -> Self {
        Self {
            name: name.into(),
            ..self.clone()
        }
    }
}

/// IEEE half bits of `x`; `x` must be zero or exactly representable.
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    if x == 0.0 {
        return sign;
    }
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = b & 0x7f_ffff;
    assert!(
        (1..31).contains(&exp) && mant & 0x1fff == 0,
        "{x} is not an exact f16"
    );
    sign | ((exp as u16) << 10) | (mant >> 13) as u16
}

fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    assert_eq!(b & 0xffff, 0, "{x} is not an exact bf16");
    (b >> 16) as u16
}

fn encode(vals: &[f32], dt: Dtype) -> Vec<u8> {
    match dt {
        Dtype::F32 => vals.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F64 => vals
            .iter()
            .flat_map(|&x| (x as f64).to_le_bytes())
            .collect(),
        Dtype::F16 => vals
            .iter()
            .flat_map(|&x| f16_bits(x).to_le_bytes())
            .collect(),
        Dtype::BF16 => vals
            .iter()
            .flat_map(|&x| bf16_bits(x).to_le_bytes())
            .collect(),
        Dtype::U8 | Dtype::BOOL => vals.iter().map(|&x| (x != 0.0) as u8).collect(),
        d => panic!("no encoder for {d:?}"),
    }
}

/// safetensors bytes of `ws`, each written in the dtype `dt` gives it.
fn st_bytes_with(ws: &[W], dt: impl Fn(&W) -> Dtype) -> Vec<u8> {
    let bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = ws
        .iter()
        .map(|w| {
            let d = dt(w);
            (w.name.clone(), d, w.shape.clone(), encode(&w.vals, d))
        })
        .collect();
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(n, d, sh, b)| (n.clone(), TensorView::new(*d, sh.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize(views, None::<HashMap<String, String>>).unwrap()
}

fn st_bytes(ws: &[W], dt: Dtype) -> Vec<u8> {
    st_bytes_with(ws, |_| dt)
}

/// A value exact in f16 and bf16: ±k/16, k in 1..=32.
fn exact_value(rng: &mut impl Rng) -> f32 {
    let k = rng.random_range(1..=32) as f32 / 16.0;
    if rng.random_bool(0.5) {
        k
    } else {
        -k
    }
}

/// Values with a fraction `zeros` of (positive and negative) zeros.
fn values(n: usize, zeros: f64, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            if rng.random_bool(zeros) {
                if rng.random_bool(0.5) {
                    0.0
                } else {
                    -0.0
                }
            } else {
                exact_value(&mut rng)
            }
        })
        .collect()
}

/// A LeNet-300-100 state dict in the zoo's names: fc1.weight ~90% zeros,
/// fc2.weight ~30% zeros, fc3.weight dense, nonzero biases.
fn lenet300() -> Vec<W> {
    vec![
        W::new("fc1.weight", &[300, 784], values(300 * 784, 0.9, 1)),
        W::new("fc1.bias", &[300], values(300, 0.0, 2)),
        W::new("fc2.weight", &[100, 300], values(100 * 300, 0.3, 3)),
        W::new("fc2.bias", &[100], values(100, 0.0, 4)),
        W::new("fc3.weight", &[10, 100], values(1000, 0.0, 5)),
        W::new("fc3.bias", &[10], values(10, 0.0, 6)),
    ]
}

fn weight<'a>(ws: &'a [W], name: &str) -> &'a W {
    ws.iter().find(|w| w.name == name).unwrap()
}

fn layer_kept(report: &Value) -> Vec<(String, usize)> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap().to_string(), num(&l["kept"])))
        .collect()
}

// ------------------------------------------------------------------ (a)

#[test]
fn weight_zeros_are_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let ws = lenet300();
    let ckpt = dir.path().join("ckpt.safetensors");
    std::fs::write(&ckpt, st_bytes(&ws, Dtype::F32)).unwrap();
    let r = audit_json(&[s(&ckpt), "--arch", "zoo:lenet300"]);

    let nnz1 = weight(&ws, "fc1.weight").nnz();
    let nnz2 = weight(&ws, "fc2.weight").nnz();
    // About 10% of fc1 survives: the fixture is what we think it is.
    assert!((21_000..26_000).contains(&nnz1), "{nnz1}");
    assert_eq!(num(&r["total"]), LENET300_TOTAL);
    assert_eq!(num(&r["kept"]), nnz1 + nnz2 + 1000);
    assert_eq!(
        layer_kept(&r),
        vec![
            ("fc1.weight".to_string(), nnz1),
            ("fc2.weight".to_string(), nnz2),
            ("fc3.weight".to_string(), 1000),
        ]
    );
    let totals: Vec<usize> = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| num(&l["total"]))
        .collect();
    assert_eq!(totals, vec![235_200, 30_000, 1000]);
    // Every hidden neuron keeps inputs and outputs at these densities.
    assert_eq!(r["active"], r["kept"]);
    let dc = r["direct_compression"].as_f64().unwrap();
    let want = LENET300_TOTAL as f64 / (nnz1 + nnz2 + 1000) as f64;
    assert!((dc - want).abs() < 1e-9, "{dc} vs {want}");

    // The zoo weights are dense; the checkpoint's, not the zoo's, are audited.
    let zoo = audit_json(&["zoo:lenet300"]);
    assert_eq!(num(&zoo["kept"]), LENET300_TOTAL);
}

#[test]
fn onnx_arch_binds_like_the_zoo_arch() {
    let dir = tempfile::tempdir().unwrap();
    let ws = lenet300();
    let ckpt = dir.path().join("ckpt.safetensors");
    std::fs::write(&ckpt, st_bytes(&ws, Dtype::F32)).unwrap();
    let onnx = dir.path().join("lenet300.onnx");
    let out = maskforge(&["zoo", "export", "lenet300", "-o", s(&onnx)]);
    assert!(out.status.success());
    let a = audit_json(&[s(&ckpt), "--arch", "zoo:lenet300"]);
    let b = audit_json(&[s(&ckpt), "--arch", s(&onnx)]);
    assert_eq!(layer_kept(&a), layer_kept(&b));
    assert_eq!(a["active"], b["active"]);
    assert_eq!(num(&b["kept"]), num(&a["kept"]));
    assert!(num(&b["kept"]) < LENET300_TOTAL);
}

// ------------------------------------------------------------------ (b)

#[test]
fn sharded_checkpoint_gives_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let ws = lenet300();
    let single = dir.path().join("model.safetensors");
    std::fs::write(&single, st_bytes(&ws, Dtype::F32)).unwrap();
    let one = audit_json(&[s(&single), "--arch", "zoo:lenet300"]);

    let shards = dir.path().join("sharded");
    std::fs::create_dir(&shards).unwrap();
    let (f1, f2) = (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    );
    let (first, second): (Vec<W>, Vec<W>) =
        ws.iter().cloned().partition(|w| w.name.starts_with("fc1"));
    std::fs::write(shards.join(f1), st_bytes(&first, Dtype::F32)).unwrap();
    std::fs::write(shards.join(f2), st_bytes(&second, Dtype::F32)).unwrap();
    let mut map = serde_json::Map::new();
    for w in &first {
        map.insert(w.name.clone(), f1.into());
    }
    for w in &second {
        map.insert(w.name.clone(), f2.into());
    }
    let index = shards.join("model.safetensors.index.json");
    let idx = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(&index, serde_json::to_string_pretty(&idx).unwrap()).unwrap();
    let sharded = audit_json(&[s(&index), "--arch", "zoo:lenet300"]);
    assert_eq!(one, sharded);
    assert!(num(&one["kept"]) < LENET300_TOTAL);

    // Shards also bind in storage order (shard by shard) when names differ.
    let renamed: Vec<W> = ["a", "b", "c"]
        .iter()
        .zip(["fc1.weight", "fc2.weight", "fc3.weight"])
        .map(|(n, o)| weight(&ws, o).renamed(n))
        .collect();
    // a, b in shard 1 and c in shard 2: storage order is (shard, offset).
    std::fs::write(shards.join(f1), st_bytes(&renamed[..2], Dtype::F32)).unwrap();
    std::fs::write(shards.join(f2), st_bytes(&renamed[2..], Dtype::F32)).unwrap();
    let idx = serde_json::json!({"weight_map": {"a": f1, "b": f1, "c": f2}});
    std::fs::write(&index, idx.to_string()).unwrap();
    let by_order = audit_json(&[s(&index), "--arch", "zoo:lenet300"]);
    let kept: Vec<usize> = layer_kept(&by_order).into_iter().map(|(_, k)| k).collect();
    let want: Vec<usize> = layer_kept(&one).into_iter().map(|(_, k)| k).collect();
    assert_eq!(kept, want);

    // Storage order, not name order: one tensor per shard, named against
    // the grain ("z" in shard 1 is fc1, "x" in shard 3 is fc3).
    let shards3 = dir.path().join("three");
    std::fs::create_dir(&shards3).unwrap();
    let mut map = serde_json::Map::new();
    for (i, (n, o)) in [
        ("z", "fc1.weight"),
        ("y", "fc2.weight"),
        ("x", "fc3.weight"),
    ]
    .into_iter()
    .enumerate()
    {
        let f = format!("model-0000{}-of-00003.safetensors", i + 1);
        let w = weight(&ws, o).renamed(n);
        std::fs::write(shards3.join(&f), st_bytes(&[w], Dtype::F32)).unwrap();
        map.insert(n.into(), f.into());
    }
    let index3 = shards3.join("model.safetensors.index.json");
    std::fs::write(
        &index3,
        serde_json::json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    let r = audit_json(&[s(&index3), "--arch", "zoo:lenet300"]);
    let names_kept: Vec<(String, usize)> = layer_kept(&r);
    assert_eq!(
        names_kept,
        vec![
            ("z".to_string(), want[0]),
            ("y".to_string(), want[1]),
            ("x".to_string(), want[2]),
        ]
    );
    assert_eq!(r["active"], one["active"]);
}

// ------------------------------------------------------------------ (c)

/// fc1 pruned the PyTorch way, the mask stored in `mask_dt`. Returns the
/// bytes, the mask's ones, the nonzeros of weight_orig and of
/// weight_orig * mask, and fc2's nonzeros.
fn pruned_checkpoint(mask_dt: Dtype) -> (Vec<u8>, usize, usize, usize, usize) {
    let ws = lenet300();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(77);
    let n = 300 * 784;
    // ~20% kept by the mask.
    let mask: Vec<f32> = (0..n).map(|_| rng.random_bool(0.2) as u8 as f32).collect();
    // weight_orig: dense, except zeros at some kept positions (a zero value
    // that the mask keeps is still kept).
    let orig: Vec<f32> = mask
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            if m != 0.0 && i % 7 == 0 {
                0.0
            } else {
                exact_value(&mut rng)
            }
        })
        .collect();
    let mask_ones = mask.iter().filter(|&&m| m != 0.0).count();
    let orig_nnz = orig.iter().filter(|&&x| x != 0.0).count();
    let product_nnz = orig
        .iter()
        .zip(&mask)
        .filter(|(&x, &m)| x * m != 0.0)
        .count();
    let mut out: Vec<W> = ws
        .iter()
        .filter(|w| w.name != "fc1.weight")
        .cloned()
        .collect();
    out.push(W::new("fc1.weight_orig", &[300, 784], orig));
    out.push(W::new("fc1.weight_mask", &[300, 784], mask));
    let nnz2 = weight(&ws, "fc2.weight").nnz();
    let bytes = st_bytes_with(&out, |w| {
        if w.name.ends_with("_mask") {
            mask_dt
        } else {
            Dtype::F32
        }
    });
    (bytes, mask_ones, orig_nnz, product_nnz, nnz2)
}

#[test]
fn pytorch_pruned_checkpoint_uses_the_mask() {
    for dt in [Dtype::U8, Dtype::F32, Dtype::BOOL] {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, mask_ones, orig_nnz, product_nnz, nnz2) = pruned_checkpoint(dt);
        let ckpt = dir.path().join("pruned.safetensors");
        std::fs::write(&ckpt, bytes).unwrap();
        let r = audit_json(&[s(&ckpt), "--arch", "zoo:lenet300"]);
        let kept = layer_kept(&r);
        assert_eq!(
            kept[0].1, mask_ones,
            "{dt:?}: fc1 kept must be the mask's ones"
        );
        // The fixture tells the readings apart: neither the zeros of
        // weight_orig nor those of weight_orig * mask give the mask's count.
        assert_ne!(mask_ones, orig_nnz);
        assert_ne!(mask_ones, product_nnz);
        // Layers without a stored mask still take their zeros as the mask.
        assert_eq!(kept[1].1, nnz2, "{dt:?}: fc2");
        assert_eq!(kept[2].1, 1000, "{dt:?}: fc3");
        assert_eq!(num(&r["kept"]), mask_ones + nnz2 + 1000);
        assert_eq!(num(&r["total"]), LENET300_TOTAL);
    }
}

// ------------------------------------------------------------------ (d)

#[test]
fn binding_by_storage_order_and_effective_mask_file() {
    let dir = tempfile::tempdir().unwrap();
    // Storage order is (dtype, name): with one dtype, "a" < "b" < "c" is
    // also the layer order.
    let mut a = W::new("a", &[300, 784], values(300 * 784, 0.5, 11));
    let mut b = W::new("b", &[100, 300], values(100 * 300, 0.2, 12));
    let c = W::new("c", &[10, 100], values(1000, 0.0, 13));
    // Hidden-1 neuron 7 gets no input: b[:, 7] is kept but inactive.
    a.vals[7 * 784..8 * 784].iter_mut().for_each(|x| *x = 0.0);
    // Hidden-2 neuron 0 gets no input: c[:, 0] is kept but inactive.
    b.vals[..300].iter_mut().for_each(|x| *x = 0.0);
    let biases = vec![
        W::new("a_bias", &[300], values(300, 0.0, 14)),
        W::new("b_bias", &[100], values(100, 0.0, 15)),
        W::new("c_bias", &[10], values(10, 0.0, 16)),
    ];
    let mut all = vec![a.clone(), b.clone(), c.clone()];
    all.extend(biases);
    let ckpt = dir.path().join("renamed.safetensors");
    let bytes = st_bytes(&all, Dtype::F32);
    std::fs::write(&ckpt, &bytes).unwrap();
    let eff = dir.path().join("eff.safetensors");
    let r = audit_json(&[s(&ckpt), "--arch", "zoo:lenet300", "-o", s(&eff)]);

    assert_eq!(
        layer_kept(&r),
        vec![
            ("a".to_string(), a.nnz()),
            ("b".to_string(), b.nnz()),
            ("c".to_string(), c.nnz()),
        ]
    );
    // Expected effective masks, stored layout [out, in].
    let nz = |w: &W| -> Vec<u8> { w.vals.iter().map(|&x| (x != 0.0) as u8).collect() };
    let eff_a = nz(&a);
    let eff_b: Vec<u8> = nz(&b)
        .iter()
        .enumerate()
        .map(|(i, &m)| m & (i % 300 != 7) as u8)
        .collect();
    let eff_c: Vec<u8> = nz(&c)
        .iter()
        .enumerate()
        .map(|(i, &m)| m & (i % 100 != 0) as u8)
        .collect();
    let ones = |v: &[u8]| v.iter().filter(|&&x| x != 0).count();
    let active = ones(&eff_a) + ones(&eff_b) + ones(&eff_c);
    assert!(
        active < num(&r["kept"]),
        "the fixture must have inactive weights"
    );
    assert_eq!(num(&r["active"]), active);

    let file = std::fs::read(&eff).expect("-o wrote the effective masks");
    let st = SafeTensors::deserialize(&file).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, vec!["a", "b", "c"]);
    for (name, w, want) in [("a", &a, &eff_a), ("b", &b, &eff_b), ("c", &c, &eff_c)] {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::BOOL, "{name}");
        assert_eq!(t.shape(), w.shape.as_slice(), "{name}");
        assert!(
            t.data() == want.as_slice(),
            "{name}: effective mask differs"
        );
    }

    let (_, meta) = SafeTensors::read_metadata(&file).unwrap();
    let meta = meta.metadata().clone().expect("__metadata__");
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    for k in [
        "maskforge_version",
        "method",
        "quota",
        "target_compression",
        "seed",
        "direct_compression",
        "effective_compression",
        "model_sha256",
    ] {
        assert!(meta.contains_key(k), "metadata lacks {k}: {meta:?}");
    }
    assert_eq!(meta["maskforge_version"], env!("CARGO_PKG_VERSION"));
    // The content hash (tensors, not file bytes): 64 hex digits, and not the
    // hash of the file itself.
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    assert_eq!(meta["model_sha256"].len(), 64);
    assert!(meta["model_sha256"].chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(meta["model_sha256"], sha);
    let dc: f64 = meta["direct_compression"].parse().unwrap();
    let ec: f64 = meta["effective_compression"].parse().unwrap();
    let kept = num(&r["kept"]) as f64;
    assert!((dc - LENET300_TOTAL as f64 / kept).abs() < 1e-9, "{dc}");
    assert!(
        (ec - LENET300_TOTAL as f64 / active as f64).abs() < 1e-9,
        "{ec}"
    );

    // Auditing the written mask file against the same checkpoint: already
    // effective, so kept == active == the previous active count.
    let again = audit_json(&[s(&ckpt), "--arch", "zoo:lenet300", "--masks", s(&eff)]);
    assert_eq!(num(&again["kept"]), active);
    assert_eq!(num(&again["active"]), active);
}

// ------------------------------------------------------------------ (e)

#[test]
fn chain_is_inferred_without_arch() {
    let dir = tempfile::tempdir().unwrap();
    let ws = lenet300();
    let ckpt = dir.path().join("ckpt.safetensors");
    std::fs::write(&ckpt, st_bytes(&ws, Dtype::F32)).unwrap();
    let inferred = audit_json(&[s(&ckpt)]);
    let bound = audit_json(&[s(&ckpt), "--arch", "zoo:lenet300"]);
    assert_eq!(num(&inferred["total"]), LENET300_TOTAL);
    assert_eq!(layer_kept(&inferred), layer_kept(&bound));
    assert_eq!(inferred["active"], bound["active"]);
    let shapes: Vec<Value> = inferred["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["shape"].clone())
        .collect();
    assert_eq!(
        shapes,
        vec![
            serde_json::json!([300, 784]),
            serde_json::json!([100, 300]),
            serde_json::json!([10, 100])
        ]
    );

    // A dead hidden neuron is seen through the inferred chain as well.
    let mut ws2 = ws.clone();
    let fc2 = ws2.iter_mut().find(|w| w.name == "fc2.weight").unwrap();
    fc2.vals[..300].iter_mut().for_each(|x| *x = 0.0);
    std::fs::write(&ckpt, st_bytes(&ws2, Dtype::F32)).unwrap();
    let r = audit_json(&[s(&ckpt)]);
    assert_eq!(
        num(&r["kept"]) - num(&r["active"]),
        10,
        "fc3's 10 weights from the dead neuron are inactive"
    );
}

fn assert_needs_arch(ckpt: &Path, needles: &[&str]) {
    let out = maskforge(&["audit", s(ckpt)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let body = stderr.trim_end_matches('\n');
    assert!(
        body.starts_with("error: ") && !body.contains('\n'),
        "{stderr:?}"
    );
    assert!(body.contains("--arch"), "should ask for --arch: {body}");
    assert!(body.contains(s(ckpt)), "should name the file: {body}");
    for n in needles {
        assert!(body.contains(n), "should name {n}: {body}");
    }
}

#[test]
fn ambiguous_checkpoints_ask_for_arch() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    // A conv kernel among the matrices.
    let mut ws = lenet300();
    ws.push(W::new("conv.weight", &[6, 1, 5, 5], values(150, 0.0, 9)));
    std::fs::write(&ckpt, st_bytes(&ws, Dtype::F32)).unwrap();
    assert_needs_arch(&ckpt, &["'conv.weight'"]);
    // Matrices that do not chain.
    let ws = vec![
        W::new("fc1.weight", &[300, 784], values(300 * 784, 0.0, 1)),
        W::new("fc2.weight", &[100, 299], values(100 * 299, 0.0, 2)),
    ];
    std::fs::write(&ckpt, st_bytes(&ws, Dtype::F32)).unwrap();
    assert_needs_arch(&ckpt, &["'fc1.weight'", "'fc2.weight'"]);
    // Nothing but vectors.
    let ws = vec![W::new("bias", &[10], values(10, 0.0, 1))];
    std::fs::write(&ckpt, st_bytes(&ws, Dtype::F32)).unwrap();
    assert_needs_arch(&ckpt, &[]);
}

// ------------------------------------------------------------------ (f)

#[test]
fn half_precision_checkpoints_match_f32() {
    let dir = tempfile::tempdir().unwrap();
    let ws = lenet300();
    let mut reports = Vec::new();
    for dt in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
        let ckpt = dir.path().join(format!("ckpt-{dt:?}.safetensors"));
        std::fs::write(&ckpt, st_bytes(&ws, dt)).unwrap();
        let r = audit_json(&[s(&ckpt), "--arch", "zoo:lenet300"]);
        assert_eq!(
            num(&r["kept"]),
            weight(&ws, "fc1.weight").nnz() + weight(&ws, "fc2.weight").nnz() + 1000,
            "{dt:?}"
        );
        reports.push((dt, r));
    }
    for (dt, r) in &reports[1..] {
        assert_eq!(r, &reports[0].1, "{dt:?} report differs from F32");
    }
    // Inferred chain in half precision too.
    let ckpt = dir.path().join("ckpt-F16.safetensors");
    let r = audit_json(&[s(&ckpt)]);
    assert_eq!(layer_kept(&r), layer_kept(&reports[0].1));
}

/// An `nn.Sequential` LeNet-300-100 pruned with `torch.nn.utils.prune`:
/// keys `0.weight_orig`, `0.weight_mask`, `0.bias`, `2.*`, `4.*` (none
/// matches the zoo's names). Returns the bytes and each layer's mask ones.
fn pruned_sequential() -> (Vec<u8>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let mut ws = Vec::new();
    let mut ones = Vec::new();
    for (i, (o, n)) in [(300usize, 784usize), (100, 300), (10, 100)]
        .into_iter()
        .enumerate()
    {
        let p = 2 * i;
        let mask: Vec<f32> = (0..o * n)
            .map(|_| rng.random_bool(0.3) as u8 as f32)
            .collect();
        ones.push(mask.iter().filter(|&&m| m != 0.0).count());
        ws.push(W::new(
            &format!("{p}.weight_orig"),
            &[o, n],
            values(o * n, 0.0, 40 + i as u64),
        ));
        ws.push(W::new(&format!("{p}.weight_mask"), &[o, n], mask));
        ws.push(W::new(
            &format!("{p}.bias"),
            &[o],
            values(o, 0.0, 50 + i as u64),
        ));
    }
    (st_bytes(&ws, Dtype::F32), ones)
}

#[test]
fn pytorch_pruned_checkpoint_bound_by_order_uses_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, ones) = pruned_sequential();
    let ckpt = dir.path().join("seq.safetensors");
    std::fs::write(&ckpt, bytes).unwrap();
    let r = audit_json(&[s(&ckpt), "--arch", "zoo:lenet300"]);
    let kept: Vec<usize> = layer_kept(&r).into_iter().map(|(_, k)| k).collect();
    assert_eq!(kept, ones, "the stored masks must be the mask");
    assert_eq!(num(&r["total"]), LENET300_TOTAL);
}

#[test]
fn pytorch_pruned_chain_without_arch_uses_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, ones) = pruned_sequential();
    let ckpt = dir.path().join("seq.safetensors");
    std::fs::write(&ckpt, bytes).unwrap();
    let r = audit_json(&[s(&ckpt)]);
    let kept: Vec<usize> = layer_kept(&r).into_iter().map(|(_, k)| k).collect();
    assert_eq!(kept, ones, "the stored masks must be the mask");
}

#[test]
fn written_files_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("masks.safetensors");
    let onnx = dir.path().join("lenet300.onnx");
    for args in [
        vec!["audit", "zoo:lenet300", "-o", s(&masks)],
        vec!["zoo", "export", "lenet300", "-o", s(&onnx)],
    ] {
        let out = Command::new("sh")
            .arg("-c")
            .arg("umask 022; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_maskforge"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
    }
    for p in [&masks, &onnx] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode,
            0o644,
            "{} has mode {mode:o} under umask 022",
            p.display()
        );
    }
}

/// Masks of a sharded checkpoint are written as shards mirroring the input,
/// with their own index, and read back to the same masks as a single file.
#[test]
fn sharded_masks_mirror_the_input_sharding() {
    let dir = tempfile::tempdir().unwrap();
    let ws = lenet300();
    let (f1, f2) = (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    );
    let (first, second): (Vec<W>, Vec<W>) =
        ws.iter().cloned().partition(|w| w.name.starts_with("fc1"));
    std::fs::write(dir.path().join(f1), st_bytes(&first, Dtype::F32)).unwrap();
    std::fs::write(dir.path().join(f2), st_bytes(&second, Dtype::F32)).unwrap();
    let mut map = serde_json::Map::new();
    for w in &first {
        map.insert(w.name.clone(), f1.into());
    }
    for w in &second {
        map.insert(w.name.clone(), f2.into());
    }
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index, serde_json::json!({"weight_map": map}).to_string()).unwrap();

    let out_index = dir.path().join("masks.safetensors.index.json");
    let single = dir.path().join("single.safetensors");
    for out in [&out_index, &single] {
        let o = maskforge(&[
            "prune",
            s(&index),
            "--arch",
            "zoo:lenet300",
            "--method",
            "rpi",
            "--compression",
            "20",
            "--seed",
            "4",
            "-o",
            s(out),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let idx: Value = serde_json::from_str(&std::fs::read_to_string(&out_index).unwrap()).unwrap();
    let wm = idx["weight_map"].as_object().unwrap();
    assert_eq!(wm["fc1.weight"], "masks-00001-of-00002.safetensors");
    assert_eq!(wm["fc2.weight"], "masks-00002-of-00002.safetensors");
    assert_eq!(wm["fc3.weight"], "masks-00002-of-00002.safetensors");
    assert_eq!(idx["metadata"]["format"], "pt");
    // Each shard holds exactly its weights' masks.
    let shard1 = std::fs::read(dir.path().join("masks-00001-of-00002.safetensors")).unwrap();
    let st1 = safetensors::SafeTensors::deserialize(&shard1).unwrap();
    assert_eq!(st1.names().len(), 1);
    // Same masks, byte for byte, whether the input is sharded or not.
    let whole = dir.path().join("whole.safetensors");
    std::fs::write(&whole, st_bytes(&ws, Dtype::F32)).unwrap();
    let single_from_whole = dir.path().join("single-whole.safetensors");
    let o = maskforge(&[
        "prune",
        s(&whole),
        "--arch",
        "zoo:lenet300",
        "--method",
        "rpi",
        "--compression",
        "20",
        "--seed",
        "4",
        "-o",
        s(&single_from_whole),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&single).unwrap(),
        std::fs::read(&single_from_whole).unwrap()
    );
    // A different checkpoint hashes differently.
    let mut ws2 = ws.clone();
    ws2[0].vals[0] = if ws2[0].vals[0] == 0.0 { 1.0 } else { 0.0 };
    let other = dir.path().join("other.safetensors");
    std::fs::write(&other, st_bytes(&ws2, Dtype::F32)).unwrap();
    let other_out = dir.path().join("other-out.safetensors");
    let o = maskforge(&[
        "prune",
        s(&other),
        "--arch",
        "zoo:lenet300",
        "--method",
        "rpi",
        "--compression",
        "20",
        "--seed",
        "4",
        "-o",
        s(&other_out),
    ]);
    assert!(o.status.success());
    assert_ne!(
        std::fs::read(&single).unwrap(),
        std::fs::read(&other_out).unwrap()
    );
    // The sharded masks audit exactly like the single file.
    let a = audit_json(&[
        s(&index),
        "--arch",
        "zoo:lenet300",
        "--masks",
        s(&out_index),
    ]);
    let b = audit_json(&[s(&index), "--arch", "zoo:lenet300", "--masks", s(&single)]);
    assert_eq!(a, b);
    assert_eq!(num(&a["kept"]), num(&a["active"]));
}
