//! maskforge: pruning masks at initialization and effective-sparsity audits.
//!
//! A model enters through a reader at the edge (`onnx`, `checkpoint`,
//! [`zoo`]) and becomes one [`network::Network`]; every algorithm works on that.
//! Masks are bit-packed ([`bitset`]) and leave as safetensors files
//! (`maskfile`).
//!
//! ```
//! use maskforge::{zoo, effective, mask::MaskSet};
//! let net = zoo::build("lenet300", 0).unwrap();
//! let dense = MaskSet::dense(&net);
//! let eff = effective::effective_masks(&net, &dense);
//! assert_eq!(eff.count_ones(), net.prunable_count());
//! ```

pub mod apply;
pub mod audit;
pub mod backward;
pub mod bitset;
pub mod checkpoint;
pub mod cli;
pub mod conv;
pub mod data;
pub mod effective;
pub mod error;
pub mod eval;
pub mod executor;
pub mod grasp;
pub mod init;
pub mod io;
pub mod liveness;
pub mod magnitude;
pub mod mask;
pub mod masked;
pub mod maskfile;
pub mod maxpool;
pub mod mica;
pub mod model;
pub mod network;
pub mod neuron;
pub mod onnx;
pub mod ossum;
pub mod pathnorm;
pub mod paths;
pub mod plot;
pub mod prune;
pub mod quota;
pub mod rng;
pub mod rpi;
pub mod scored;
pub mod snip;
pub mod stfile;
pub mod sweep;
pub mod synflow;
pub mod tensor;
pub mod zero;
pub mod zoo;
