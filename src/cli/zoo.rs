//! `maskforge zoo list | export`.

use std::path::PathBuf;

use clap::Subcommand;

use super::init::InitArg;
use maskforge::error::Result;
use maskforge::init::Scheme;

#[derive(Subcommand, Debug)]
pub enum ZooCommand {
    /// List the built-in architectures.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Write a zoo model as ONNX.
    Export {
        /// Zoo name, e.g. vgg16 or mlp:784-300-10.
        name: String,
        #[arg(short = 'o', long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Initialisation of the weights.
        #[arg(long, value_enum, default_value = "kaiming")]
        init: InitArg,
    },
}

pub fn run(c: ZooCommand) -> Result<()> {
    match c {
        ZooCommand::List { json } => {
            if json {
                let v: Vec<_> = maskforge::zoo::MODELS
                    .iter()
                    .map(|(n, d)| serde_json::json!({"name": n, "description": d}))
                    .collect();
                return super::print_json(&v);
            }
            for (n, d) in maskforge::zoo::MODELS {
                println!("{n:<16} {d}");
            }
            Ok(())
        }
        ZooCommand::Export {
            name,
            output,
            seed,
            init,
        } => {
            let mut net = maskforge::zoo::build(&name, seed)?;
            // The zoo's own weights already are the seeded Kaiming ones.
            let scheme = init.scheme(seed);
            if matches!(scheme, Scheme::Zero(_)) {
                net = maskforge::init::reinitialise(&net, scheme)?.network;
            }
            let bytes =
                maskforge::io::onnx::writer::encode(&maskforge::io::onnx::writer::to_proto(&net)?);
            maskforge::io::fs::write_atomic(&output, &[], |w| {
                std::io::Write::write_all(w, &bytes)
            })?;
            eprintln!(
                "wrote {} ({} prunable weights)",
                output.display(),
                net.prunable_count()
            );
            Ok(())
        }
    }
}
