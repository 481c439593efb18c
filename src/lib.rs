//! maskforge: pruning masks at initialization and effective-sparsity audits.
//!
//! A model enters through a reader at the edge ([`io`]: ONNX, safetensors
//! checkpoints; or the built-in [`zoo`]) and becomes one [`graph::Network`];
//! every algorithm works on that. Masks are bit-packed ([`mask`]) and leave
//! as safetensors files ([`io::maskfile`]).
//!
//! ```
//! use maskforge::{effective_masks, prune, zoo, Method, PruneSpec, Quota};
//! let net = zoo::build("lenet300", 0).unwrap();
//! let spec = PruneSpec {
//!     method: "mica".parse::<Method>().unwrap(),
//!     quota: Quota::Igq,
//!     target_kept: net.prunable_count() / 100,
//!     seed: 0,
//!     effective: false,
//! };
//! let out = prune(&net, &spec).unwrap();
//! assert_eq!(out.raw.count_ones(), net.prunable_count() / 100);
//! // The active weights are a subset of the kept ones.
//! assert!(effective_masks(&net, &out.raw).is_subset_of(&out.raw));
//! ```

pub mod analysis;
pub mod autodiff;
pub mod bitset;
pub mod error;
pub mod graph;
pub mod init;
pub mod io;
pub mod mask;
pub mod methods;
pub mod report;
pub mod rng;
pub mod train;
pub mod vocab;
pub mod zoo;

// The types a library user starts from; everything else is reached through
// the modules above.
pub use analysis::audit::{audit, AuditReport};
pub use analysis::effective::effective_masks;
pub use error::{Error, Result};
pub use graph::Network;
pub use io::model::{load, Loaded};
pub use mask::MaskSet;
pub use methods::prune::{prune, prune_with, Method, PruneOutcome, PruneSpec};
pub use methods::quota::Quota;
