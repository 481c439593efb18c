//! A deterministic safetensors writer.
//!
//! The `safetensors` crate serialises `__metadata__` from a `HashMap`, whose
//! order changes from run to run; maskforge promises byte-identical files for
//! identical inputs (CONVENTIONS.md, "Determinism"), so it writes the format
//! itself: an 8-byte little-endian header length, a JSON header with sorted
//! keys padded with spaces to a multiple of 8, then the tensors' bytes in
//! name order. Reading stays with the `safetensors` crate.
//!
//! ```
//! use maskforge::stfile::{serialize, Entry};
//! use std::collections::BTreeMap;
//! let e = Entry { name: "w".into(), dtype: "BOOL", shape: vec![2], data: vec![1, 0] };
//! let bytes = serialize(vec![e], &BTreeMap::new());
//! let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
//! assert_eq!(st.tensor("w").unwrap().data(), &[1, 0]);
//! ```

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// One tensor to write.
pub struct Entry {
    pub name: String,
    /// safetensors dtype name: "BOOL", "U8", "F32", ...
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// The file's bytes; `metadata` becomes `__metadata__` when not empty.
pub fn serialize(mut tensors: Vec<Entry>, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for t in &tensors {
        let end = offset + t.data.len();
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}
