//! maskforge: pruning masks at initialization and effective-sparsity audits.
//!
//! A model enters through a reader at the edge ([`io`]: ONNX, safetensors
//! checkpoints; or the built-in [`zoo`]) and becomes one [`graph::Network`];
//! every algorithm works on that. Masks are bit-packed ([`mask`]) and leave
//! as safetensors files ([`io::maskfile`]).
//!
//! ```
//! use maskforge::{zoo, analysis::effective, mask::MaskSet};
//! let net = zoo::build("lenet300", 0).unwrap();
//! let dense = MaskSet::dense(&net);
//! let eff = effective::effective_masks(&net, &dense);
//! assert_eq!(eff.count_ones(), net.prunable_count());
//! ```

pub mod analysis;
pub mod autodiff;
pub mod error;
pub mod graph;
pub mod init;
pub mod io;
pub mod mask;
pub mod methods;
pub mod report;
pub mod rng;
pub mod vocab;
pub mod zoo;
