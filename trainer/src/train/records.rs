//! Records on disk: every file is written atomically (a temporary file in the same folder,
//! flushed and synced, then renamed over the target), so a crash never leaves a half-written
//! record and an earlier version stays intact until the new one is complete.

use anyhow::Context;
use candle_core::Tensor;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (temporary file `.<name>.tmp-<pid>` beside it, synced,
/// then renamed over `path`, then the folder synced).
///
/// # Errors
/// The folder cannot be written, the disk is full, the rename fails; the message names the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.flush()
    })
    .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `path` atomically with `write`, which creates the temporary file it is given: the
/// temporary file is then synced to disk and renamed over `path`, and the folder is synced so
/// that the rename survives a power cut. On any error the temporary file is removed and `path`
/// is left as it was.
///
/// # Errors
/// The error of `write`, of the sync or of the rename.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        write(&tmp)?;
        std::fs::File::options().read(true).write(true).open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Syncs the folder holding `path` (best effort: some file systems refuse to sync folders).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
}

/// True for the names of temporary files [`write_atomic`] and [`ensure_writable_dir`] leave
/// behind when a process is killed (`.<name>.tmp-<pid>`, `.write-probe-<pid>`) whose process is
/// not this one.
fn stale_temp_pid(name: &str) -> Option<u32> {
    let pid = if let Some(rest) = name.strip_prefix(".write-probe-") {
        rest
    } else if name.starts_with('.') {
        name.rsplit_once(".tmp-")?.1
    } else {
        return None;
    };
    let pid: u32 = pid.parse().ok()?;
    (pid != std::process::id()).then_some(pid)
}

/// Removes, under `dir` (three levels deep), the temporary files of writes interrupted by a
/// killed process (see [`write_atomic`]): the finished records are never touched. A temporary
/// file of a process that is still running (checked through `/proc` where there is one) is left
/// alone. Returns the number of files removed.
pub fn remove_stale_temps(dir: &Path) -> usize {
    fn walk(dir: &Path, depth: usize, removed: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth > 0 {
                walk(&p, depth - 1, removed);
            } else if ft.is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = stale_temp_pid(&name) {
                    let proc = Path::new("/proc");
                    let alive = proc.is_dir() && proc.join(pid.to_string()).exists();
                    if !alive && std::fs::remove_file(&p).is_ok() {
                        *removed += 1;
                    }
                }
            }
        }
    }
    let mut removed = 0;
    walk(dir, 3, &mut removed);
    removed
}

/// The temporary path used while writing `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `value` as pretty JSON (with a final newline), atomically.
///
/// # Errors
/// As [`write_atomic`], or a value that does not serialise.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(value).context("serialising JSON")?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// Writes named tensors as safetensors, atomically (see [`write_atomic_with`]).
///
/// # Errors
/// As [`write_atomic`], or a tensor that cannot be serialised.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> anyhow::Result<()> {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    write_atomic_with(path, |tmp| {
        candle_core::safetensors::save(&map, tmp).map_err(std::io::Error::other)
    })
    .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates `dir` (and its parents) and checks that a file can be written in it.
///
/// # Errors
/// `dir` is a file, cannot be created, or is not writable.
pub fn ensure_writable_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("--out {} is not a folder", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe").with_context(|| format!("folder {} is not writable", dir.display()))?;
    std::fs::remove_file(&probe).with_context(|| format!("folder {} is not writable", dir.display()))?;
    Ok(())
}

/// A CSV table built in memory (RFC 4180 quoting where needed), floats in Rust's shortest
/// round-trip form, so the text is the same on every run with the same numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Csv {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// One CSV cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// Text.
    Str(&'a str),
    /// An integer.
    Int(usize),
    /// A float (NaN written as an empty cell).
    Num(f64),
}

impl Csv {
    /// An empty table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (as many cells as columns).
    pub fn push(&mut self, cells: &[Cell<'_>]) {
        self.rows.push(
            cells
                .iter()
                .map(|c| match c {
                    Cell::Str(s) => (*s).to_string(),
                    Cell::Int(i) => i.to_string(),
                    Cell::Num(x) if x.is_nan() => String::new(),
                    Cell::Num(x) => format!("{x}"),
                })
                .collect(),
        );
    }

    /// Appends all rows of `other` (same columns).
    pub fn extend(&mut self, other: Csv) {
        self.rows.extend(other.rows);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The CSV text, with a header line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> = row.iter().map(|c| quote(c)).collect();
            let _ = writeln!(s, "{}", line.join(","));
        }
        s
    }
}

fn quote(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}
