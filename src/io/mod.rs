//! The edges of maskforge: everything that reads or writes a file.
//!
//! Models come in through [`model`] (which picks [`onnx`], [`checkpoint`] or
//! the zoo; [`compressed_tensors`] reads sparse compressed weights inside a
//! checkpoint), calibration data through [`data`]; masks leave through
//! [`maskfile`] and masked weights through [`apply`]. Every write goes
//! through [`fs::write_atomic`], so a failed run leaves no partial file.

pub mod apply;
pub mod checkpoint;
pub mod compressed_tensors;
pub mod data;
pub mod fs;
pub mod hf;
pub mod maskfile;
pub mod model;
pub mod onnx;
pub mod stfile;
pub mod token_data;
