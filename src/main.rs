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
    maskforge::io::install_interrupt_cleanup();
    if let Err(e) = maskforge::cli::run(cli) {
        // One line: a cause, never a backtrace.
        let msg = e.to_string();
        eprintln!("error: {}", msg.lines().next().unwrap_or("unknown failure"));
        std::process::exit(e.exit_code());
    }
}
