//! The `maskforge` binary: parse, run, map errors to exit codes
//! (CONVENTIONS.md: 0 success, 1 usage or input error, 2 internal failure),
//! and own the process-wide concerns the library leaves to it: signals,
//! panics and the allocator's tunables.

use clap::Parser;
use maskforge::error::Error;

mod cli;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    install_interrupt_cleanup();
    install_panic_exit();
    keep_freed_memory();
    // Test builds only: a panic on demand, to check the hook's exit code.
    #[cfg(debug_assertions)]
    if std::env::var_os("MASKFORGE_TEST_PANIC").is_some() {
        panic!("MASKFORGE_TEST_PANIC is set");
    }
    if let Err(e) = cli::run(cli) {
        // One line: a cause, never a backtrace.
        let msg = e.to_string();
        eprintln!("error: {}", msg.lines().next().unwrap_or("unknown failure"));
        std::process::exit(exit_code(&e));
    }
}

/// 1 when the input is at fault, 2 for internal failures.
fn exit_code(e: &Error) -> i32 {
    if e.is_internal() {
        2
    } else {
        1
    }
}

/// On SIGINT/SIGTERM/SIGHUP, delete any temporary output being written and
/// exit with 130, so an interrupted run leaves no partial file behind.
fn install_interrupt_cleanup() {
    // A write past RLIMIT_FSIZE (a quota, a full volume of that kind) must be
    // an error we report and clean up after, not a SIGXFSZ that kills us.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" at start-up, before
    // any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let _ = ctrlc::set_handler(|| {
        maskforge::io::fs::remove_partial_outputs();
        eprintln!("error: interrupted; no partial output was left behind");
        std::process::exit(130);
    });
}

/// A panic is a bug of ours, whatever input reached it: one line and exit
/// code 2 (never Rust's 101 and a backtrace), and no partial output left.
/// The hook runs on the panicking thread before unwinding, so a panic on a
/// worker thread ends the whole run too.
fn install_panic_exit() {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let line = what.lines().next().unwrap_or_default().to_string();
        // A reader that stops early (`maskforge inspect m.onnx | head`) is
        // not our bug: stop quietly, as other Unix tools do.
        if line.starts_with("failed printing to stdout") && line.contains("Broken pipe") {
            maskforge::io::fs::remove_partial_outputs();
            std::process::exit(0);
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        maskforge::io::fs::remove_partial_outputs();
        eprintln!("error: internal error: {line}{at} (a bug in maskforge; please report it)");
        std::process::exit(2);
    }));
}

/// Keeps freed memory in the process instead of returning it to the kernel.
///
/// glibc serves blocks above 128 KiB (a threshold it raises to at most
/// 32 MiB as such blocks are freed) with fresh mappings, grows the heap in
/// small steps and trims its top past 128 KiB of free space, so such blocks
/// cost page faults when touched and TLB shootdowns when released. The
/// gradient scorers allocate and free activation- and weight-sized tensors
/// by the hundred per pass: ten SynFlow rounds on VGG-16 spent 12.7 s in the
/// kernel against 4.8 s of user time (3.5 s with a 512 MiB top pad alone).
/// Here blocks up to 32 MiB (glibc's ceiling for this setting) come from
/// the heap, which grows 512 MiB at a time (address space; pages are only
/// backed when touched) and keeps up to 1 GiB free. One arena for every
/// thread: weights drawn on rayon's threads would otherwise sit in
/// per-thread arenas whose freed blocks the main thread's later buffers
/// cannot reuse (measured on SNIP VGG-16: 10 k more page faults, and the
/// threshold pass twice as slow).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables, under the
    // allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 512 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
