//! A deterministic, streaming safetensors writer.
//!
//! The `safetensors` crate serialises `__metadata__` from a `HashMap`, whose
//! order changes from run to run; maskforge promises byte-identical files for
//! identical inputs (CONVENTIONS.md, "Determinism"), so it writes the format
//! itself: an 8-byte little-endian header length, a JSON header with sorted
//! keys padded with spaces to a multiple of 8, then the tensors' bytes in
//! name order. Tensors are streamed one at a time, so a billion-weight mask
//! never sits in memory as one buffer. Reading stays with the `safetensors`
//! crate.
//!
//! ```
//! use maskforge::io::stfile::{serialize, Entry};
//! use std::collections::BTreeMap;
//! let e = Entry { name: "w".into(), dtype: "BOOL", shape: vec![2], data: vec![1, 0] };
//! let bytes = serialize(vec![e], &BTreeMap::new());
//! let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
//! assert_eq!(st.tensor("w").unwrap().data(), &[1, 0]);
//! ```

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Map, Value};

/// One tensor to write, data in hand.
pub struct Entry {
    pub name: String,
    /// safetensors dtype name: "BOOL", "U8", "F32", ...
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// One tensor to write, data produced on demand.
pub struct Spec {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    /// Bytes the data will take.
    pub len: usize,
}

/// Header bytes (length prefix included) and the order tensors must follow.
pub fn header(specs: &[Spec], metadata: &BTreeMap<String, String>) -> (Vec<u8>, Vec<usize>) {
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by(|&a, &b| specs[a].name.cmp(&specs[b].name));
    let mut map = Map::new();
    if !metadata.is_empty() {
        map.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for &i in &order {
        let s = &specs[i];
        map.insert(
            s.name.clone(),
            json!({"dtype": s.dtype, "shape": s.shape, "data_offsets": [offset, offset + s.len]}),
        );
        offset += s.len;
    }
    let mut text = Value::Object(map).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    (out, order)
}

/// Stream a file: the header, then `data(i, w)` for each tensor in order;
/// each call must write exactly `specs[i].len` bytes.
pub fn write_streamed<W: Write>(
    w: &mut W,
    specs: &[Spec],
    metadata: &BTreeMap<String, String>,
    mut data: impl FnMut(usize, &mut W) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let (head, order) = header(specs, metadata);
    w.write_all(&head)?;
    for i in order {
        data(i, w)?;
    }
    Ok(())
}

/// The file's bytes; `metadata` becomes `__metadata__` when not empty.
pub fn serialize(tensors: Vec<Entry>, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let specs: Vec<Spec> = tensors
        .iter()
        .map(|t| Spec {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            len: t.data.len(),
        })
        .collect();
    let mut out = Vec::new();
    write_streamed(&mut out, &specs, metadata, |i, w| {
        w.write_all(&tensors[i].data)
    })
    .expect("writing to memory");
    out
}
