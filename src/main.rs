//! The `maskforge` binary: parse, run, map errors to exit codes.

use clap::Parser;

fn main() {
    let cli = match maskforge::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    maskforge::io::fs::install_interrupt_cleanup();
    keep_freed_memory();
    if let Err(e) = maskforge::cli::run(cli) {
        // One line: a cause, never a backtrace.
        let msg = e.to_string();
        eprintln!("error: {}", msg.lines().next().unwrap_or("unknown failure"));
        std::process::exit(e.exit_code());
    }
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
