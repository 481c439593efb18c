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
