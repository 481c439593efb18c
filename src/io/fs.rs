//! File plumbing shared by readers and writers: memory maps and atomic writes.
//!
//! Every output goes to a temporary file in the destination folder and is
//! renamed into place only when complete, so a failed or interrupted run
//! leaves no partial file, and a write never replaces one of its inputs.
//! The file is not forced to disk (no `fsync`), like `torch.save` and
//! safetensors' `save_file`: the operating system writes it back. Forcing
//! it cost a third of a small prune and seconds for a billion-weight mask
//! file, for a file any run can write again; a power cut moments after a
//! run can therefore lose it.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let p = dir.path().join("out.txt");
//! maskforge::io::fs::write_atomic(&p, &[], |w| { use std::io::Write; w.write_all(b"hi") }).unwrap();
//! assert_eq!(std::fs::read(&p).unwrap(), b"hi");
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::graph::tensor::SharedBytes;

struct Mapped(memmap2::Mmap);

impl crate::graph::tensor::ByteSource for Mapped {
    fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn release(&self, range: std::ops::Range<usize>) {
        // Whole pages inside the range only.
        const PAGE: usize = 4096;
        let start = range.start.div_ceil(PAGE) * PAGE;
        let end = (range.end / PAGE) * PAGE;
        if end > start {
            // SAFETY: a read-only private file mapping; dropped pages are
            // read back from the file if touched again.
            let _ = unsafe {
                self.0.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

/// Temporary files being written right now: removed if the run is interrupted.
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Delete every temporary output being written right now.
///
/// For a binary's signal or panic handler: the run is being abandoned, and
/// the outputs it was writing must not survive it as partial files (their
/// final names are only ever created by a complete rename).
pub fn remove_partial_outputs() {
    if let Ok(list) = IN_FLIGHT.lock() {
        for p in list.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn track(p: &Path, on: bool) {
    if let Ok(mut list) = IN_FLIGHT.lock() {
        if on {
            list.push(p.to_path_buf());
        } else {
            list.retain(|x| x != p);
        }
    }
}

/// Memory-map a file read-only.
pub fn mmap(path: &Path) -> Result<SharedBytes> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::input(format!("{}: cannot open: {e}", path.display())))?;
    if f.metadata().map(|m| m.len() == 0).unwrap_or(false) {
        return Ok(Arc::new(Vec::<u8>::new()));
    }
    // SAFETY: the map is read-only; a file truncated under us while mapped is
    // outside what a command-line run can guard against.
    let m = unsafe { memmap2::Mmap::map(&f) }
        .map_err(|e| Error::input(format!("{}: cannot map: {e}", path.display())))?;
    Ok(Arc::new(Mapped(m)))
}

fn canonical(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

/// Refuse, before anything is written, a run whose outputs collide with
/// its inputs or with each other, or cannot be created (a missing folder,
/// a folder in the way): a run that writes several files must not leave the
/// first behind when a later one is refused.
///
/// ```
/// use maskforge::io::fs::check_outputs;
/// let dir = tempfile::tempdir().unwrap();
/// let masks = dir.path().join("m.safetensors");
/// let input = dir.path().join("model.onnx");
/// std::fs::write(&input, b"x").unwrap();
/// assert!(check_outputs(&[&masks], &[&input]).is_ok());
/// assert!(check_outputs(&[&masks, &input], &[&input]).is_err());
/// assert!(check_outputs(&[&masks, &masks], &[]).is_err());
/// assert!(check_outputs(&[&dir.path().join("no/such/dir/m.safetensors")], &[]).is_err());
/// ```
pub fn check_outputs(outputs: &[&Path], inputs: &[&Path]) -> Result<()> {
    let mut seen: Vec<PathBuf> = Vec::new();
    for &out in outputs {
        refuse_input(out, inputs)?;
        let dir = parent_dir(out);
        let Some(dir_abs) = canonical(&dir).filter(|d| d.is_dir()) else {
            return Err(Error::input(format!(
                "{}: cannot write: folder {} does not exist",
                out.display(),
                dir.display()
            )));
        };
        if out.is_dir() {
            return Err(Error::input(format!(
                "{}: cannot write: it is a folder",
                out.display()
            )));
        }
        let full = dir_abs.join(out.file_name().unwrap_or_default());
        if seen.contains(&full) {
            return Err(Error::input(format!(
                "{}: given as two different outputs",
                out.display()
            )));
        }
        seen.push(full);
    }
    Ok(())
}

fn refuse_input(path: &Path, inputs: &[&Path]) -> Result<()> {
    if let Some(out) = canonical(path) {
        if inputs.iter().any(|i| canonical(i).as_ref() == Some(&out)) {
            return Err(Error::input(format!(
                "{}: output would overwrite an input",
                path.display()
            )));
        }
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Write `path` atomically through `fill`; refuse to overwrite any of `inputs`.
pub fn write_atomic(
    path: &Path,
    inputs: &[&Path],
    fill: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    refuse_input(path, inputs)?;
    let dir = parent_dir(path);
    let io_err = |e: std::io::Error| Error::input(format!("{}: cannot write: {e}", path.display()));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".maskforge-").suffix(".tmp");
    // The name is tracked before the file exists: an interrupt landing
    // between the creation and the tracking would otherwise leave it behind.
    let mut tmp = builder
        .make_in(&dir, |p| {
            track(p, true);
            let created = create_new(p);
            if created.is_err() {
                track(p, false);
            }
            created
        })
        .map_err(io_err)?;
    let tmp_path = tmp.path().to_path_buf();
    let result = (|| {
        {
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            fill(&mut w).map_err(io_err)?;
            w.flush().map_err(io_err)?;
        }
        test_delay("MASKFORGE_TEST_WRITE_DELAY_MS");
        tmp.persist(path).map_err(|e| io_err(e.error))?;
        test_delay("MASKFORGE_TEST_RENAMED_DELAY_MS");
        Ok(())
    })();
    track(&tmp_path, false);
    result
}

/// A new file at `p` (an error if one exists). Outputs follow the umask
/// like any other file (tempfile's own files are 0600).
fn create_new(p: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o666);
    }
    o.open(p)
}

/// Tests of interruption set `MASKFORGE_TEST_WRITE_DELAY_MS` to hold a
/// finished temporary file before its rename, or
/// `MASKFORGE_TEST_RENAMED_DELAY_MS` to hold the run just after it, so a
/// signal can land there.
fn test_delay(var: &str) {
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
