//! Sparse checkpoints written by compressed-tensors (Neural Magic / vLLM's
//! `llm-compressor`), read without decompressing them.
//!
//! # The formats, as compressed-tensors 0.14 writes them
//!
//! `config.json` names the format under `quantization_config` (older files:
//! `compression_config`), key `sparsity_config`:
//!
//! ```json
//! "quantization_config": {
//!   "quant_method": "compressed-tensors", "version": "0.14.0.1",
//!   "sparsity_config": {"format": "sparse-bitmask", "targets": ["Linear"],
//!                       "ignore": ["lm_head"], "global_sparsity": 0.5,
//!                       "sparsity_structure": "unstructured"},
//!   "transform_config": {}, ...quantization fields...
//! }
//! ```
//!
//! `format` is `sparse-bitmask`, `sparse-24-bitmask` or `dense` (nothing
//! compressed); an empty `sparsity_config` means none. `targets` are module
//! names, `re:`-prefixed regular expressions or module class names
//! (`Linear`); `ignore` removes modules from them. Only the weight
//! (`<module>.weight`) of a targeted module is compressed; every other
//! tensor (biases, ignored layers) stays a dense tensor under its own name.
//! Which weights are compressed is therefore read from the tensors
//! themselves: a module `<p>` whose weight is compressed has no
//! `<p>.weight` but these tensors instead:
//!
//! * `sparse-bitmask` (any rank, any sparsity):
//!   - `<p>.shape`: int64 `[rank]`, the dense shape;
//!   - `<p>.compressed`: 1-D, the weight's dtype, the nonzero values in
//!     row-major order;
//!   - `<p>.bitmask`: uint8, shape `shape[..-1] + [ceil(shape[-1] / 8)]`:
//!     `numpy.packbits(w != 0, axis=-1, bitorder="little")`, so bit `j`
//!     (value `1 << j`) of byte `k` in a row is column `8k + j`, and each row
//!     is padded to a whole byte (padding bits are ignored on reading, as
//!     `unpackbits(count=shape[-1])` does);
//!   - `<p>.row_offsets`: int64, shape `shape[..-1]`: `cumsum(c, 0) - c` for
//!     the per-row counts `c = (w != 0).sum(-1)`, i.e. for a matrix the
//!     index in `compressed` where each row starts (for higher ranks the
//!     running sum runs along the first axis only).
//! * `sparse-24-bitmask` (matrices only):
//!   - `<p>.shape`: int64 `[2, 1]`;
//!   - `<p>.compressed`: `[rows, cols / 2]`, the kept values, row-major;
//!   - `<p>.bitmask`: as above, `[rows, ceil(cols / 8)]`, with exactly 2 bits
//!     set in every 4 consecutive weights of the flattened tensor (the two of
//!     largest magnitude: a group holding fewer than two nonzero weights
//!     still stores two, some of them zeros); no `row_offsets`.
//!
//! Values keep the weight's dtype (f32, f16, bf16; int8 when stacked on
//! quantization). Reconstruction of either: the dense tensor is zero
//! everywhere except the set bits, which take the values in order.
//!
//! # What maskforge reads
//!
//! The mask of a compressed weight comes from its bitmask: a weight is kept
//! where its bit is set and its stored value is not zero (so a stored zero of
//! a 2:4 group counts as pruned, exactly as in the decompressed weights,
//! whose zeros are the mask of a dense checkpoint). That reads the bitmask
//! and the stored values, never a dense tensor. The dense weight is
//! reconstructed only when a command reads its values, one weight at a time
//! ([`CompressedWeight::dense`]; large ones into an unnamed temporary file
//! whose pages are let go once read, so streaming commands stay bounded).
//! Every size is checked when the checkpoint is opened: a bitmask whose
//! shape does not match `shape`, a value count other than the bitmask's,
//! row offsets that disagree with it, a missing part or an unknown format
//! name is an input error naming the tensor.
//!
//! For a Hugging Face folder reader: [`sparse_config`] reads the format from
//! the parsed `config.json`, and
//! [`crate::io::checkpoint::Checkpoint::open_with_config`] opens the shards
//! with it; the checkpoint's [`Compressed::weights`] then give, per weight,
//! [`CompressedWeight::mask`] and [`CompressedWeight::dense`], and
//! [`crate::io::checkpoint::Checkpoint::bind`] uses them for every layer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::tensor::{ByteSource, ConstTensor, DType, Data};
use crate::io::checkpoint::Entry;

/// A sparse compression format of compressed-tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `sparse-bitmask`: values, bitmask, row offsets.
    SparseBitmask,
    /// `sparse-24-bitmask`: 2:4 values `[rows, cols / 2]` and bitmask.
    Sparse24Bitmask,
}

impl Format {
    /// The name config.json uses.
    pub fn name(self) -> &'static str {
        match self {
            Format::SparseBitmask => "sparse-bitmask",
            Format::Sparse24Bitmask => "sparse-24-bitmask",
        }
    }

    fn parts(self) -> &'static [&'static str] {
        match self {
            Format::SparseBitmask => &["shape", "compressed", "bitmask", "row_offsets"],
            Format::Sparse24Bitmask => &["shape", "compressed", "bitmask"],
        }
    }
}

/// The `sparsity_config` of a config.json.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseConfig {
    /// `None` for `dense`: nothing is compressed.
    pub format: Option<Format>,
    pub targets: Vec<String>,
    pub ignore: Vec<String>,
    /// `unstructured`, `2:4`, ...
    pub structure: Option<String>,
}

/// The sparse format a parsed config.json declares (`quantization_config` or
/// `compression_config`, key `sparsity_config`); `None` when it declares
/// none. An unknown format name is an input error (`what` names the file).
pub fn sparse_config(config: &serde_json::Value, what: &str) -> Result<Option<SparseConfig>> {
    let Some((outer, sc)) = ["quantization_config", "compression_config"]
        .iter()
        .find_map(|k| {
            config
                .get(*k)
                .and_then(|q| q.get("sparsity_config"))
                .map(|s| (*k, s))
        })
    else {
        return Ok(None);
    };
    let Some(obj) = sc.as_object().filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    let at = format!("{what}: {outer}.sparsity_config");
    let name = obj
        .get("format")
        .and_then(|f| f.as_str())
        .ok_or_else(|| Error::input(format!("{at} has no \"format\" string")))?;
    let format = match name {
        "sparse-bitmask" => Some(Format::SparseBitmask),
        "sparse-24-bitmask" => Some(Format::Sparse24Bitmask),
        "dense" => None,
        other => {
            return Err(Error::input(format!(
                "{at}: format '{other}' is not supported (maskforge reads sparse-bitmask, sparse-24-bitmask and dense)"
            )))
        }
    };
    let strings = |k: &str| -> Vec<String> {
        obj.get(k)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Some(SparseConfig {
        format,
        targets: strings("targets"),
        ignore: strings("ignore"),
        structure: obj
            .get("sparsity_structure")
            .and_then(|s| s.as_str())
            .map(String::from),
    }))
}

/// One compressed weight, checked.
#[derive(Clone)]
pub struct CompressedWeight {
    pub format: Format,
    /// The dense shape.
    pub shape: Vec<usize>,
    /// The values' dtype (the dense weight's).
    pub dtype: DType,
    /// The dense weight as a checkpoint entry: its data is reconstructed on
    /// first read (storage order is that of `<p>.compressed`).
    pub entry: Entry,
    values: ConstTensor,
    bitmask: ConstTensor,
    source: Arc<Dense>,
}

impl std::fmt::Debug for CompressedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CompressedWeight({}, {:?}, {:?})",
            self.format.name(),
            self.shape,
            self.dtype
        )
    }
}

/// The byte view of a memory-mapped (or in-memory) stored tensor.
fn raw(t: &ConstTensor) -> &[u8] {
    match &t.data {
        Data::Bytes { buf, range, .. } => &buf.bytes()[range.clone()],
        _ => &[],
    }
}

/// `(row length, bytes per packed row)` of a bitmask for `shape`.
fn row_layout(shape: &[usize]) -> (usize, usize) {
    let cols = shape.last().copied().unwrap_or(1);
    (cols, cols.div_ceil(8))
}

/// Visit the set bits of a packed bitmask in row-major order, padding
/// bits skipped: `f(dense index)`.
fn for_each_bit(bits: &[u8], shape: &[usize], mut f: impl FnMut(usize)) {
    let (cols, packed) = row_layout(shape);
    if cols == 0 {
        return;
    }
    for (r, row) in bits.chunks_exact(packed).enumerate() {
        let base = r * cols;
        for (k, &byte) in row.iter().enumerate() {
            let mut b = byte;
            while b != 0 {
                let j = b.trailing_zeros() as usize;
                b &= b - 1;
                let c = 8 * k + j;
                if c < cols {
                    f(base + c);
                }
            }
        }
    }
}

/// Set bits per packed row (padding bits skipped).
fn row_counts(bits: &[u8], shape: &[usize]) -> Vec<usize> {
    let (cols, packed) = row_layout(shape);
    if cols == 0 || packed == 0 {
        return vec![0; shape[..shape.len().saturating_sub(1)].iter().product()];
    }
    let tail = if cols % 8 == 0 {
        0xff
    } else {
        (1u16 << (cols % 8)) as u8 - 1
    };
    bits.chunks_exact(packed)
        .map(|row| {
            let (last, body) = row.split_last().expect("packed rows are not empty");
            body.iter().map(|b| b.count_ones() as usize).sum::<usize>()
                + (last & tail).count_ones() as usize
        })
        .collect()
}

/// Whether stored element `i` of `dtype` in `b` is zero (+0.0 or -0.0).
fn is_zero(b: &[u8], dtype: DType, i: usize) -> bool {
    let sz = dtype.size();
    let e = &b[i * sz..(i + 1) * sz];
    match dtype {
        DType::F32 => u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & 0x7fff_ffff == 0,
        DType::F16 | DType::BF16 => u16::from_le_bytes([e[0], e[1]]) & 0x7fff == 0,
        DType::F64 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(e);
            u64::from_le_bytes(a) & 0x7fff_ffff_ffff_ffff == 0
        }
        _ => e.iter().all(|&x| x == 0),
    }
}

/// The dense bytes of a compressed weight, reconstructed on first read.
struct Dense {
    values: ConstTensor,
    bitmask: ConstTensor,
    shape: Vec<usize>,
    dtype: DType,
    bytes: OnceLock<Rebuilt>,
}

/// Reconstructed bytes: in memory when small, else in an unnamed temporary
/// file mapped read-only, whose pages [`ByteSource::release`] hands back
/// (re-read from the file if touched again), so a command streaming over a
/// large checkpoint's weights keeps its memory bounded as with a dense one.
enum Rebuilt {
    Mem(Vec<u8>),
    File(memmap2::Mmap),
}

/// Weights of at least this many bytes are rebuilt into a temporary file.
const FILE_BACKED_BYTES: usize = 1 << 24;

impl Dense {
    fn len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }

    /// Scatter the values to their set bits in `out` (zeroed, dense size).
    fn fill(&self, out: &mut [u8]) {
        let sz = self.dtype.size();
        let vals = raw(&self.values);
        let mut k = 0;
        for_each_bit(raw(&self.bitmask), &self.shape, |i| {
            out[i * sz..(i + 1) * sz].copy_from_slice(&vals[k * sz..(k + 1) * sz]);
            k += 1;
        });
        self.values.release();
        self.bitmask.release();
    }

    fn in_memory(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        self.fill(&mut out);
        out
    }

    fn in_file(&self) -> std::io::Result<memmap2::Mmap> {
        let f = tempfile::tempfile()?;
        f.set_len(self.len() as u64)?;
        // SAFETY: an unnamed temporary file nobody else can open.
        let mut m = unsafe { memmap2::MmapMut::map_mut(&f)? };
        self.fill(&mut m);
        m.make_read_only()
    }

    fn rebuild(&self) -> Rebuilt {
        if self.len() >= FILE_BACKED_BYTES {
            if let Ok(m) = self.in_file() {
                return Rebuilt::File(m);
            }
        }
        Rebuilt::Mem(self.in_memory())
    }
}

impl ByteSource for Dense {
    fn bytes(&self) -> &[u8] {
        match self.bytes.get_or_init(|| self.rebuild()) {
            Rebuilt::Mem(v) => v,
            Rebuilt::File(m) => m,
        }
    }

    fn release(&self, range: std::ops::Range<usize>) {
        let Some(Rebuilt::File(m)) = self.bytes.get() else {
            return;
        };
        const PAGE: usize = 4096;
        let start = range.start.div_ceil(PAGE) * PAGE;
        let end = (range.end / PAGE) * PAGE;
        if end > start {
            // SAFETY: a read-only shared file mapping; dropped pages are read
            // back from the file if touched again.
            let _ = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

impl CompressedWeight {
    /// The stored mask (in the weight's stored layout): bit set where the
    /// bitmask stores a value and that value is not zero. Reads the bitmask
    /// and the values only.
    pub fn mask(&self) -> BitSet {
        let n: usize = self.shape.iter().product();
        let mut m = BitSet::new(n);
        let vals = raw(&self.values);
        let mut k = 0;
        for_each_bit(raw(&self.bitmask), &self.shape, |i| {
            if !is_zero(vals, self.dtype, k) {
                m.set(i, true);
            }
            k += 1;
        });
        self.values.release();
        self.bitmask.release();
        m
    }

    /// The positions the bitmask stores (zeros included), stored layout.
    pub fn stored_positions(&self) -> BitSet {
        let mut m = BitSet::new(self.shape.iter().product());
        for_each_bit(raw(&self.bitmask), &self.shape, |i| m.set(i, true));
        self.bitmask.release();
        m
    }

    /// The dense weight: a tensor whose data is reconstructed from the
    /// values and bitmask when first read, and kept from then on.
    pub fn dense(&self) -> ConstTensor {
        self.entry.tensor.clone()
    }

    /// Whether the dense weight has been reconstructed (read) yet.
    pub fn is_materialized(&self) -> bool {
        self.source.bytes.get().is_some()
    }
}

/// The compressed weights of a checkpoint, keyed by the dense weight's
/// name (`<p>.weight`).
#[derive(Clone, Debug, Default)]
pub struct Compressed {
    /// The format in use (`None`: nothing compressed).
    pub format: Option<Format>,
    pub weights: BTreeMap<String, CompressedWeight>,
    /// The stored tensors that are parts of compressed weights.
    pub parts: BTreeSet<String>,
}

impl Compressed {
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Whether stored tensor `key` is a part (`.shape`, `.bitmask`, ...)
    /// of a compressed weight rather than a tensor of the model.
    pub fn is_part(&self, key: &str) -> bool {
        self.parts.contains(key)
    }

    /// The compressed weights among `tensors`, in the format `config`
    /// declares; without a declared format, the one the tensors show
    /// (`row_offsets` present: sparse-bitmask, else sparse-24-bitmask).
    /// `what` names the checkpoint in errors.
    pub fn find(
        tensors: &BTreeMap<String, Entry>,
        config: Option<&SparseConfig>,
        what: &str,
    ) -> Result<Self> {
        let prefixes: Vec<&str> = tensors
            .keys()
            .filter_map(|k| k.strip_suffix(".bitmask"))
            .collect();
        let declared = config.and_then(|c| c.format);
        if prefixes.is_empty() {
            return Ok(Self {
                format: declared,
                ..Self::default()
            });
        }
        if config.is_some() && declared.is_none() {
            return Err(Error::input(format!(
                "{what}: '{}.bitmask' is a compressed weight but config.json declares no sparse format",
                prefixes[0]
            )));
        }
        let format = declared.unwrap_or_else(|| {
            if tensors.contains_key(&format!("{}.row_offsets", prefixes[0])) {
                Format::SparseBitmask
            } else {
                Format::Sparse24Bitmask
            }
        });
        let mut out = Self {
            format: Some(format),
            ..Self::default()
        };
        for p in prefixes {
            let weight = format!("{p}.weight");
            if tensors.contains_key(&weight) {
                return Err(Error::input(format!(
                    "{what}: '{weight}' is stored both dense and compressed ('{p}.bitmask')"
                )));
            }
            let part = |name: &str| {
                let key = format!("{p}.{name}");
                tensors.get(&key).ok_or_else(|| {
                    Error::input(format!(
                        "{what}: '{key}' is missing: a {} weight needs {}",
                        format.name(),
                        format
                            .parts()
                            .iter()
                            .map(|s| format!("'{p}.{s}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            };
            let w = read_weight(format, p, &part, what)?;
            out.parts
                .extend(format.parts().iter().map(|s| format!("{p}.{s}")));
            out.weights.insert(weight, w);
        }
        Ok(out)
    }
}

fn read_weight<'a>(
    format: Format,
    p: &str,
    part: &dyn Fn(&str) -> Result<&'a Entry>,
    what: &str,
) -> Result<CompressedWeight> {
    let bad = |name: &str, why: String| Error::input(format!("{what}: '{p}.{name}' {why}"));
    // The dense shape.
    let shape_t = &part("shape")?.tensor;
    if !matches!(shape_t.dtype(), DType::I64 | DType::I32) {
        return Err(bad(
            "shape",
            format!("has dtype {:?}, not an integer", shape_t.dtype()),
        ));
    }
    let dims = shape_t.to_i64();
    if dims.is_empty() || dims.iter().any(|&d| d < 0) {
        return Err(bad("shape", format!("holds {dims:?}, not a shape")));
    }
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("shape", format!("{shape:?} overflows")))?;
    if format == Format::Sparse24Bitmask && shape.len() != 2 {
        return Err(bad(
            "shape",
            format!("is {shape:?}: sparse-24-bitmask stores matrices only"),
        ));
    }
    // The bitmask.
    let bitmask = part("bitmask")?.tensor.clone();
    if !matches!(bitmask.dtype(), DType::U8 | DType::I8) {
        return Err(bad(
            "bitmask",
            format!("has dtype {:?}, not uint8", bitmask.dtype()),
        ));
    }
    let (_, packed) = row_layout(&shape);
    let mut want = shape[..shape.len() - 1].to_vec();
    want.push(packed);
    if bitmask.shape != want {
        return Err(bad(
            "bitmask",
            format!(
                "has shape {:?} but a {:?} weight needs {want:?} (its rows packed 8 to a byte)",
                bitmask.shape, shape
            ),
        ));
    }
    let counts = row_counts(raw(&bitmask), &shape);
    let kept: usize = counts.iter().sum();
    // The values.
    let ventry = part("compressed")?;
    let values = ventry.tensor.clone();
    let dtype = values.dtype();
    if dtype == DType::Bool {
        return Err(bad("compressed", "has dtype BOOL, not values".into()));
    }
    if values.numel() != kept {
        return Err(bad(
            "compressed",
            format!(
                "holds {} values but '{p}.bitmask' marks {kept} (corrupt or mismatched parts)",
                values.numel()
            ),
        ));
    }
    match format {
        Format::Sparse24Bitmask => {
            let want = vec![shape[0], shape[1] / 2];
            if 2 * kept != n || values.shape != want {
                return Err(bad(
                    "compressed",
                    format!(
                        "has shape {:?} with {kept} bits set in '{p}.bitmask'; a 2:4 {shape:?} weight keeps half: {want:?}",
                        values.shape
                    ),
                ));
            }
        }
        Format::SparseBitmask => {
            let offs = &part("row_offsets")?.tensor;
            let lead = &shape[..shape.len() - 1];
            if offs.numel() != lead.iter().product::<usize>()
                || !matches!(offs.dtype(), DType::I64 | DType::I32)
            {
                return Err(bad(
                    "row_offsets",
                    format!(
                        "is {:?} {:?}; the weight's rows need integers of shape {lead:?}",
                        offs.dtype(),
                        offs.shape
                    ),
                ));
            }
            // cumsum(counts, 0) - counts: a running sum along the first axis.
            let stride = lead.iter().skip(1).product::<usize>().max(1);
            let got = offs.to_i64();
            let mut run = vec![0usize; stride];
            for (i, (&c, &g)) in counts.iter().zip(&got).enumerate() {
                let s = &mut run[i % stride];
                if g != *s as i64 {
                    return Err(bad(
                        "row_offsets",
                        format!(
                            "disagrees with '{p}.bitmask' at row {i}: {g}, the bitmask gives {s}"
                        ),
                    ));
                }
                *s += c;
            }
            offs.release();
        }
    }
    bitmask.release();
    let source = Arc::new(Dense {
        values: values.clone(),
        bitmask: bitmask.clone(),
        shape: shape.clone(),
        dtype,
        bytes: OnceLock::new(),
    });
    let bytes = n
        .checked_mul(dtype.size())
        .ok_or_else(|| bad("shape", format!("{shape:?} overflows")))?;
    let buf: Arc<dyn ByteSource> = source.clone();
    let tensor = ConstTensor {
        shape: shape.clone(),
        data: Data::Bytes {
            buf,
            range: 0..bytes,
            dtype,
        },
    };
    Ok(CompressedWeight {
        format,
        shape,
        dtype,
        entry: Entry {
            tensor,
            order: ventry.order,
        },
        values,
        bitmask,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_little_endian_and_rows_padded() {
        // 2 rows of 10: row 0 keeps columns 0 and 9, row 1 columns 3, 8, 9.
        let bits = [0b0000_0001u8, 0b10, 0b1000, 0xff];
        let mut seen = Vec::new();
        for_each_bit(&bits, &[2, 10], |i| seen.push(i));
        // Row 1's second byte has padding bits set above column 9: skipped.
        assert_eq!(seen, vec![0, 9, 13, 18, 19]);
        assert_eq!(row_counts(&bits, &[2, 10]), vec![2, 3]);
    }

    #[test]
    fn file_backed_rebuild_equals_in_memory() {
        // 3 x 12 f32, keeping columns 0, 5 and 11 of each row.
        let bits: Vec<u8> = [0b0010_0001u8, 0b1000].repeat(3);
        let vals: Vec<u8> = (0..9u32)
            .flat_map(|v| (v as f32 + 1.0).to_le_bytes())
            .collect();
        let t = |shape: Vec<usize>, dtype, data: Vec<u8>| {
            ConstTensor::from_bytes(shape, dtype, Arc::new(data), 0, "t").unwrap()
        };
        let d = Dense {
            values: t(vec![9], DType::F32, vals),
            bitmask: t(vec![3, 2], DType::U8, bits),
            shape: vec![3, 12],
            dtype: DType::F32,
            bytes: OnceLock::new(),
        };
        let mem = d.in_memory();
        let file = d.in_file().unwrap();
        assert_eq!(&mem[..], &file[..]);
        let f = |i: usize| f32::from_le_bytes(mem[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(
            (f(0), f(5), f(11), f(12), f(35), f(1)),
            (1.0, 2.0, 3.0, 4.0, 9.0, 0.0)
        );
    }

    #[test]
    fn config_names_the_format() {
        let v: serde_json::Value = serde_json::json!({"quantization_config": {
            "sparsity_config": {"format": "sparse-24-bitmask", "targets": ["Linear"], "ignore": null}}});
        let c = sparse_config(&v, "config.json").unwrap().unwrap();
        assert_eq!(c.format, Some(Format::Sparse24Bitmask));
        assert_eq!(c.targets, vec!["Linear".to_string()]);
        let v = serde_json::json!({"quantization_config": {"sparsity_config": {}}});
        assert_eq!(sparse_config(&v, "c").unwrap(), None);
        let v =
            serde_json::json!({"compression_config": {"sparsity_config": {"format": "marlin-24"}}});
        let e = sparse_config(&v, "c").unwrap_err().to_string();
        assert!(e.contains("marlin-24"), "{e}");
    }
}
