//! An interrupted run (SIGINT or SIGTERM) leaves neither the output nor its
//! temporary file behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn temp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".maskforge-"))
        .collect()
}

#[test]
fn interrupted_writes_leave_no_partial_file() {
    for signal in ["INT", "TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("masks.safetensors");
        let mut child = Command::new(env!("CARGO_BIN_EXE_maskforge"))
            .args([
                "prune",
                "zoo:resnet20",
                "--method",
                "rpi",
                "--compression",
                "10",
                "-o",
            ])
            .arg(&out)
            .env("MASKFORGE_TEST_WRITE_DELAY_MS", "20000")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the temporary file exists: the run is mid-write.
        let start = Instant::now();
        while temp_files(dir.path()).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no temporary file appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let st = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "SIG{signal}");
        assert!(!out.exists(), "SIG{signal}: output written");
        assert!(
            temp_files(dir.path()).is_empty(),
            "SIG{signal}: temporary file left"
        );
    }
}

fn prune_cmd(out: &std::path::Path, seed: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_maskforge"));
    c.args([
        "prune",
        "zoo:resnet20",
        "--method",
        "rpi",
        "--compression",
        "10",
        "--seed",
        seed,
        "-o",
    ])
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

fn interrupt(child: &mut std::process::Child) {
    let st = Command::new("kill")
        .args(["-INT".to_string(), child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

/// Over an existing output, an interrupt either before or after the rename
/// leaves a complete file: the old one before, the new one after; a reader
/// polling the path meanwhile only ever sees one of the two, whole.
#[test]
fn interrupted_overwrites_leave_the_old_or_the_new_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("masks.safetensors");
    // The two complete files: seed 1 (old) and seed 2 (new).
    let reference = dir.path().join("new.safetensors");
    assert!(prune_cmd(&reference, "2").status().unwrap().success());
    let new = std::fs::read(&reference).unwrap();
    assert!(prune_cmd(&out, "1").status().unwrap().success());
    let old = std::fs::read(&out).unwrap();
    assert_ne!(old, new);

    // Before the rename: the old file stays.
    let mut child = prune_cmd(&out, "2")
        .env("MASKFORGE_TEST_WRITE_DELAY_MS", "20000")
        .spawn()
        .unwrap();
    let start = Instant::now();
    while temp_files(dir.path()).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temporary file"
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            old,
            "output changed before the rename"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(&mut child);
    assert_eq!(std::fs::read(&out).unwrap(), old, "old output damaged");
    assert!(temp_files(dir.path()).is_empty(), "temporary file left");

    // After the rename: the new file, complete, stays.
    let mut child = prune_cmd(&out, "2")
        .env("MASKFORGE_TEST_RENAMED_DELAY_MS", "20000")
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let now = std::fs::read(&out).expect("the output vanished mid-run");
        if now == new {
            break;
        }
        assert_eq!(now, old, "a partial output at the destination");
        assert!(start.elapsed() < Duration::from_secs(60), "never renamed");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the rename was seen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        temp_files(dir.path()).is_empty(),
        "temporary file after the rename"
    );
    interrupt(&mut child);
    assert_eq!(std::fs::read(&out).unwrap(), new, "new output damaged");
    assert!(temp_files(dir.path()).is_empty(), "temporary file left");
}
