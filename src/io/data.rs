//! Calibration data for the data-driven scorers (`--data`).
//!
//! Sources: a safetensors file with `x` (inputs, `[N, ...]`, float or u8)
//! and `y` (integer labels); MNIST-style IDX files (`*-images-idx3-ubyte`
//! with the `*-labels-idx1-ubyte` beside it, gzip or not, or both given as
//! `IMAGES,LABELS`); CSV (`.csv`/`.csv.gz`, each row the pixels then the
//! label); and `synthetic:N`, N seeded random inputs with random labels, an
//! explicit choice, never a default. Integer pixels (u8 data, or CSV values
//! that are all whole numbers up to 255) are scaled to [0, 1]. A file's
//! format is read from its content (the safetensors header, the IDX and gzip
//! magic numbers), from its name only where the content says nothing, and is
//! CSV otherwise.
//!
//! ```
//! use maskforge::io::data::Dataset;
//! let mut d = Dataset::load("synthetic:20", &[1, 28, 28], 10, 0).unwrap();
//! let first = d.x[0];
//! d.normalize(&[0.5], &[0.25]).unwrap();
//! assert!((d.x[0] - (first - 0.5) / 0.25).abs() < 1e-6);
//! assert_eq!(d.len(), 20);
//! let s = d.per_class(1, 0);
//! assert!(s.len() <= 10);
//! ```

use std::io::Read;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::Rng;

use crate::error::{Error, Result};
use crate::rng::{stream, stream_key};

/// Inputs (flattened per sample) and labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Per-sample input shape (the model's).
    pub shape: Vec<usize>,
    pub x: Vec<f32>,
    pub y: Vec<u32>,
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path)
        .map_err(|e| Error::input(format!("{}: cannot read: {e}", path.display())))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::input(format!("{}: bad gzip data: {e}", path.display())))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Read `spec` for a model with per-sample input `shape` and `classes`
    /// outputs; inputs must have the model's number of elements per sample
    /// and labels must be below `classes`.
    pub fn load(spec: &str, shape: &[usize], classes: usize, seed: u64) -> Result<Self> {
        let per: usize = shape.iter().product();
        let (x, y) = if let Some(n) = spec.strip_prefix("synthetic:") {
            let n: usize =
                n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    Error::input(format!("{spec}: expected synthetic:N with N > 0"))
                })?;
            let mut rng = stream(stream_key(seed, "synthetic-data", ""));
            let total = n
                .checked_mul(per)
                .ok_or_else(|| Error::input(format!("{spec}: too many samples")))?;
            let x = (0..total).map(|_| rng.random::<f32>()).collect();
            let y = (0..n)
                .map(|_| rng.random_range(0..classes as u32))
                .collect();
            (x, y)
        } else if let Some((a, b)) = spec.split_once(',') {
            read_idx_pair(Path::new(a), Path::new(b))?
        } else {
            let p = Path::new(spec);
            match sniff(p)? {
                Format::Safetensors => read_safetensors(p)?,
                Format::Csv => read_csv(p)?,
                Format::Idx => {
                    let labels = spec
                        .replacen("images", "labels", 1)
                        .replacen("idx3", "idx1", 1);
                    if labels == spec {
                        return Err(Error::input(format!(
                            "{spec}: an IDX file; give the images and labels files as IMAGES,LABELS"
                        )));
                    }
                    read_idx_pair(p, Path::new(&labels))?
                }
            }
        };
        if y.is_empty() || x.len() != y.len() * per {
            return Err(Error::input(format!(
                "{spec}: {} inputs of {} values each do not fit the model's input {shape:?} ({per} values)",
                y.len(),
                if y.is_empty() { 0 } else { x.len() / y.len() }
            )));
        }
        if let Some(bad) = y.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::input(format!(
                "{spec}: label {bad} is out of range for a model with {classes} outputs"
            )));
        }
        Ok(Self {
            shape: shape.to_vec(),
            x,
            y,
        })
    }

    /// Standardise the inputs, `x = (x - mean) / std`, after any pixel
    /// scaling: one value for every input, or one per channel (the first
    /// dimension of the per-sample shape), as the model's training did.
    pub fn normalize(&mut self, mean: &[f32], std: &[f32]) -> Result<()> {
        let channels = self.shape.first().copied().unwrap_or(1);
        let fits = |v: &[f32]| v.len() == 1 || v.len() == channels;
        if !fits(mean) || !fits(std) || std.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
            return Err(Error::input(format!(
                "give one value or one per channel ({channels}), with std > 0"
            )));
        }
        let per: usize = self.shape.iter().product();
        let plane = per / channels.max(1);
        for (i, v) in self.x.iter_mut().enumerate() {
            let c = (i % per) / plane.max(1);
            let (m, s) = (mean[c.min(mean.len() - 1)], std[c.min(std.len() - 1)]);
            *v = (*v - m) / s;
        }
        Ok(())
    }

    /// A seeded sample of up to `k` examples per class (indices).
    pub fn per_class(&self, k: usize, seed: u64) -> Vec<usize> {
        let mut rng = stream(stream_key(seed, "calibration-sample", ""));
        let classes = self.y.iter().max().map_or(0, |&m| m as usize + 1);
        let mut out = Vec::new();
        for c in 0..classes {
            let mut idx: Vec<usize> = (0..self.len())
                .filter(|&i| self.y[i] as usize == c)
                .collect();
            idx.shuffle(&mut rng);
            idx.truncate(k);
            out.extend(idx);
        }
        out.sort_unstable();
        out
    }

    /// Inputs of the samples `idx` as one `[n, ...shape]` buffer.
    pub fn batch(&self, idx: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let per: usize = self.shape.iter().product();
        let mut x = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            x.extend_from_slice(&self.x[i * per..(i + 1) * per]);
        }
        (x, idx.iter().map(|&i| self.y[i]).collect())
    }
}

/// The kinds of data file `--data` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Safetensors,
    Idx,
    Csv,
}

/// What the first bytes of a file (`len` bytes in all) say it is, if they
/// say anything: safetensors (8-byte little-endian header length that fits
/// the file, then `{`), IDX (0x00 0x00, an IDX element type, at least one
/// dimension). Gzip data is looked into by the caller.
fn sniff_bytes(head: &[u8], len: u64) -> Option<Format> {
    if head.len() >= 9 && head[8] == b'{' {
        let n = u64::from_le_bytes(head[..8].try_into().ok()?);
        if n.checked_add(8).is_some_and(|end| end <= len) {
            return Some(Format::Safetensors);
        }
    }
    if head.len() >= 4
        && head[0] == 0
        && head[1] == 0
        && matches!(head[2], 0x08 | 0x09 | 0x0b | 0x0c | 0x0d | 0x0e)
        && head[3] >= 1
    {
        return Some(Format::Idx);
    }
    None
}

/// The format of the `--data` file `p`, from its content; where the content
/// is ambiguous, from its name (`.safetensors`, IDX names); else CSV.
fn sniff(p: &Path) -> Result<Format> {
    let err = |e: std::io::Error| Error::input(format!("{}: cannot read: {e}", p.display()));
    let mut f = std::fs::File::open(p).map_err(err)?;
    let len = f.metadata().map_err(err)?.len();
    let mut head = Vec::with_capacity(16);
    (&mut f).take(16).read_to_end(&mut head).map_err(err)?;
    let by_content = if head.starts_with(&[0x1f, 0x8b]) {
        // Gzip: IDX or CSV inside (never safetensors, which is memory-mapped).
        let f = std::fs::File::open(p).map_err(err)?;
        let mut inner = Vec::with_capacity(4);
        // A corrupt stream is reported by the reader that decompresses it.
        let _ = flate2::read::GzDecoder::new(f)
            .take(4)
            .read_to_end(&mut inner);
        Some(match sniff_bytes(&inner, u64::MAX) {
            Some(Format::Idx) => Format::Idx,
            _ => Format::Csv,
        })
    } else {
        sniff_bytes(&head, len)
    };
    let lower = p.to_string_lossy().to_ascii_lowercase();
    Ok(by_content.unwrap_or(if lower.ends_with(".safetensors") {
        Format::Safetensors
    } else if lower.ends_with(".csv") || lower.ends_with(".csv.gz") {
        Format::Csv
    } else if lower.contains("idx3") || lower.contains("images") {
        Format::Idx
    } else {
        Format::Csv
    }))
}

fn scale_if_pixels(x: &mut [f32]) {
    if x.iter()
        .all(|v| v.fract() == 0.0 && (0.0..=255.0).contains(v))
        && x.iter().any(|&v| v > 1.0)
    {
        x.iter_mut().for_each(|v| *v /= 255.0);
    }
}

fn read_csv(p: &Path) -> Result<(Vec<f32>, Vec<u32>)> {
    let text = String::from_utf8(read_maybe_gz(p)?)
        .map_err(|_| Error::input(format!("{}: not UTF-8 text", p.display())))?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut width = None;
    for (ln, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let vals: Vec<&str> = line.split(',').map(str::trim).collect();
        if *width.get_or_insert(vals.len()) != vals.len() || vals.len() < 2 {
            return Err(Error::input(format!(
                "{}:{}: rows have different lengths",
                p.display(),
                ln + 1
            )));
        }
        let parse = |s: &str| {
            s.parse::<f32>().map_err(|_| {
                Error::input(format!("{}:{}: '{s}' is not a number", p.display(), ln + 1))
            })
        };
        for v in &vals[..vals.len() - 1] {
            x.push(parse(v)?);
        }
        let label = parse(vals[vals.len() - 1])?;
        if label < 0.0 || label.fract() != 0.0 {
            return Err(Error::input(format!(
                "{}:{}: label '{label}' is not a class index",
                p.display(),
                ln + 1
            )));
        }
        y.push(label as u32);
    }
    scale_if_pixels(&mut x);
    Ok((x, y))
}

fn idx(p: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let b = read_maybe_gz(p)?;
    let what = p.display();
    if b.len() < 4 || b[0] != 0 || b[1] != 0 || b[2] != 0x08 {
        return Err(Error::input(format!(
            "{what}: not an unsigned-byte IDX file"
        )));
    }
    let nd = b[3] as usize;
    if nd != want_dims || b.len() < 4 + 4 * nd {
        return Err(Error::input(format!(
            "{what}: expected {want_dims} IDX dimensions, found {nd}"
        )));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            Error::input(format!(
                "{what}: header dimensions {dims:?} overflow when multiplied"
            ))
        })?;
    let data = b[4 + 4 * nd..].to_vec();
    if data.len() != n {
        return Err(Error::input(format!(
            "{what}: header says {n} bytes of data, file has {}",
            data.len()
        )));
    }
    Ok((dims, data))
}

fn read_idx_pair(images: &Path, labels: &Path) -> Result<(Vec<f32>, Vec<u32>)> {
    let (dims, px) = idx(images, 3)?;
    let (ldims, lb) = idx(labels, 1)?;
    if dims[0] != ldims[0] {
        return Err(Error::input(format!(
            "{} has {} images but {} has {} labels",
            images.display(),
            dims[0],
            labels.display(),
            ldims[0]
        )));
    }
    Ok((
        px.iter().map(|&v| v as f32 / 255.0).collect(),
        lb.iter().map(|&v| v as u32).collect(),
    ))
}

fn read_safetensors(p: &Path) -> Result<(Vec<f32>, Vec<u32>)> {
    let ck = crate::io::checkpoint::Checkpoint::open(p)?;
    let get = |k: &str| {
        ck.tensors.get(k).map(|e| e.tensor.clone()).ok_or_else(|| {
            Error::input(format!(
                "{}: no tensor '{k}' (inputs 'x' and labels 'y' are expected)",
                p.display()
            ))
        })
    };
    let (xt, yt) = (get("x")?, get("y")?);
    let mut x = xt.to_f32()?;
    if xt.dtype() == crate::graph::tensor::DType::U8 {
        x.iter_mut().for_each(|v| *v /= 255.0);
    }
    let y = yt
        .to_i64()
        .into_iter()
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| Error::input(format!("{}: label {v} is negative", p.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((x, y))
}

#[cfg(test)]
mod normalize_tests {
    use super::*;

    #[test]
    fn per_channel_statistics_apply_to_their_planes() {
        let mut d = Dataset {
            shape: vec![2, 1, 2],
            x: vec![1.0, 3.0, 10.0, 20.0, /* sample 2 */ 5.0, 5.0, 0.0, 0.0],
            y: vec![0, 1],
        };
        d.normalize(&[1.0, 10.0], &[2.0, 5.0]).unwrap();
        assert_eq!(d.x, vec![0.0, 1.0, 0.0, 2.0, 2.0, 2.0, -2.0, -2.0]);
        assert!(d.normalize(&[0.0, 0.0, 0.0], &[1.0]).is_err());
        assert!(d.normalize(&[0.0], &[0.0]).is_err());
    }
}

#[cfg(test)]
mod sniff_tests {
    use super::*;
    use std::io::Write;

    fn safetensors_xy() -> Vec<u8> {
        let x: Vec<u8> = (0..8u8).collect();
        let y: Vec<u8> = [1i64, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        crate::io::stfile::serialize(
            vec![
                crate::io::stfile::Entry {
                    name: "x".into(),
                    dtype: "U8",
                    shape: vec![2, 4],
                    data: x,
                },
                crate::io::stfile::Entry {
                    name: "y".into(),
                    dtype: "I64",
                    shape: vec![2],
                    data: y,
                },
            ],
            &Default::default(),
        )
    }

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn data_files_are_read_by_content_whatever_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let load = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            Dataset::load(p.to_str().unwrap(), &[4], 2, 0)
        };
        // safetensors under a short or misleading name.
        for name in ["calib.st", "calib.csv", "calib"] {
            let d = load(name, &safetensors_xy()).unwrap();
            assert_eq!(d.y, vec![1, 0], "{name}");
            assert_eq!(d.x[1], 1.0 / 255.0, "{name}");
        }
        // CSV, plain and gzipped, under any name.
        let csv = b"0,1,2,3,1\n4,5,6,7,0\n";
        for (name, bytes) in [("digits.txt", csv.to_vec()), ("digits.dat", gz(csv))] {
            let d = load(name, &bytes).unwrap();
            assert_eq!(d.y, vec![1, 0], "{name}");
        }
        // IDX images (gzipped) whose name does not say so: the labels are
        // found beside them by the usual name.
        let images = idx(&[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
        std::fs::write(dir.path().join("t-labels-idx1.bin"), idx(&[2], &[1, 0])).unwrap();
        let d = load("t-images-idx3.bin", &gz(&images)).unwrap();
        assert_eq!(d.y, vec![1, 0]);
        // An IDX file whose labels cannot be found from its name is named.
        let e = load("mystery.bin", &images).unwrap_err().to_string();
        assert!(
            e.contains("mystery.bin") && e.contains("IMAGES,LABELS"),
            "{e}"
        );
        // Content that says nothing falls back to the name: a broken
        // .safetensors is reported as one.
        let e = load("broken.safetensors", b"hello")
            .unwrap_err()
            .to_string();
        assert!(e.contains("safetensors"), "{e}");
    }
}
