//! The command line's contract beyond single bad inputs: a run that fails
//! writes none of its outputs, a panic exits 2 with one line, and `prune`
//! and `sweep` read one method vocabulary.

mod common;
use common::{maskforge, s};

use std::path::Path;
use std::process::{Command, Output};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `prune MODEL --method rpi --compression 10` with `outputs`: refused
/// with exit 1 and a message containing `why`.
fn assert_refused(model: &str, outputs: &[&str], why: &str) {
    let mut args = vec!["prune", model, "--method", "rpi", "--compression", "10"];
    args.extend_from_slice(outputs);
    let o = maskforge(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(why), "{}", stderr(&o));
}

/// `--apply` onto the model itself is refused, and the mask file, which
/// comes first in the run, is not written either.
#[test]
fn a_refused_output_leaves_every_other_output_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    let o = maskforge(&["zoo", "export", "lenet300", "-o", s(&model)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (masks, report) = (
        dir.path().join("masks.safetensors"),
        dir.path().join("report.json"),
    );
    // --apply onto the model itself: the mask file, written first in the
    // run, must not appear either.
    let outputs = [
        "-o",
        s(&masks),
        "--report",
        s(&report),
        "--apply",
        s(&model),
    ];
    assert_refused(s(&model), &outputs, "would overwrite an input");
    assert_eq!(files_in(dir.path()), vec!["m.onnx".to_string()]);
    // Two outputs on one path, and an output in a missing folder.
    let outputs = ["-o", s(&masks), "--report", s(&masks)];
    assert_refused("zoo:lenet300", &outputs, "two different outputs");
    let missing = dir.path().join("no/such/r.json");
    let outputs = ["-o", s(&masks), "--report", s(&missing)];
    assert_refused("zoo:lenet300", &outputs, "does not exist");
    assert_eq!(files_in(dir.path()), vec!["m.onnx".to_string()]);
}

#[test]
fn a_panic_exits_2_with_one_line() {
    let o = Command::new(env!("CARGO_BIN_EXE_maskforge"))
        .args(["zoo", "list"])
        .env("MASKFORGE_TEST_PANIC", "1")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: internal error: "), "{err}");
}

/// `prune zoo:lenet300 --compression C -o OUT` with `extra` arguments.
fn prune_lenet300(out: &Path, compression: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "prune",
        "zoo:lenet300",
        "--compression",
        compression,
        "-o",
        s(out),
    ];
    args.extend_from_slice(extra);
    maskforge(&args)
}

#[test]
fn prune_and_sweep_read_one_method_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("m.safetensors");
    // An unknown method names both vocabularies.
    let o = prune_lenet300(&masks, "10", &["--method", "mica-med"]);
    assert_eq!(o.status.code(), Some(1));
    for name in ["mica-min", "snip-it", "ossum"] {
        assert!(stderr(&o).contains(name), "{}", stderr(&o));
    }
    // mica-min, once sweep's own word, now prunes too, and equals
    // --method mica --mica-choice min.
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    for (out, extra) in [
        (&a, vec!["--method", "mica-min"]),
        (&b, vec!["--method", "mica", "--mica-choice", "min"]),
    ] {
        let o = prune_lenet300(out, "100", &extra);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // sweep takes the data-free methods prune takes (synflow, magnitude).
    let csv = dir.path().join("s.csv");
    let o = maskforge(&[
        "sweep",
        "zoo:lenet300",
        "--methods",
        "synflow,magnitude,mica-max",
        "--quotas",
        "igq",
        "--compressions",
        "10",
        "--csv",
        s(&csv),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    for m in ["synflow", "magnitude", "mica-max"] {
        let row = text
            .lines()
            .find(|l| l.split(',').nth(1) == Some(m))
            .unwrap();
        // No error column filled: every run produced figures.
        assert!(
            row.split(',').nth(5).is_some_and(|d| !d.is_empty()),
            "{row}"
        );
    }
}

/// A global cut uses no quota, and the report says so instead of naming
/// the (ignored) default quota.
#[test]
fn a_global_cut_reports_global_not_a_quota() {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("m.safetensors");
    let o = prune_lenet300(&masks, "10", &["--method", "magnitude", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["quota"], "global");
    let layer_erk = [
        "--method",
        "magnitude",
        "--scope",
        "layer",
        "--quota",
        "erk",
        "--json",
    ];
    let o = prune_lenet300(&masks, "10", &layer_erk);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["quota"], "erk");
}
