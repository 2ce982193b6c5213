//! A table from a CSV file of the user's (`trainer run tabular --data FILE`): a header row,
//! one target column and numeric feature columns.
//!
//! Rules (each broken one is a one-line error naming the file, and the row and column where
//! there is one; rows are numbered from 1 after the header, and the file's line is given too):
//! - the file has a header row and at least one data row, every row as many cells as the
//!   header, no column name twice;
//! - `--target` and every `--features` name a column; the features default to every other
//!   column whose cells are all numbers (or missing), and the other columns are listed as
//!   ignored;
//! - a feature cell is a finite number within the f32 range; a cell that is empty, `NA`, `N/A` or `NaN` (any case)
//!   is missing: an error, or with `drop_missing` its row is dropped (and counted);
//! - the target of a regression is a finite number; of a binary task, exactly two distinct
//!   values (the larger one, numerically when both are numbers, is the positive class 1); of a
//!   multi-class task, at least two distinct values, the classes sorted (numerically when every
//!   label is a number) and numbered from 0.

use super::Table;
use anyhow::{anyhow, bail, Result};
use std::path::Path;

/// The kind of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A numeric target.
    Regression,
    /// A two-valued target (the positive class is 1).
    Binary,
    /// A column of labels.
    Multiclass,
}

impl Task {
    /// The task's name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Regression => "regression",
            Self::Binary => "binary",
            Self::Multiclass => "multiclass",
        }
    }
}

/// A table read from a CSV file.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Features and target (for classification, the class index as f64).
    pub table: Table,
    /// The class of each row (empty for regression).
    pub labels: Vec<usize>,
    /// The class names in index order (empty for regression).
    pub classes: Vec<String>,
    /// The feature columns, in table order.
    pub features: Vec<String>,
    /// Columns neither target nor feature (not numeric, when the features were not given).
    pub ignored: Vec<String>,
    /// Rows dropped for a missing cell (with `drop_missing`).
    pub dropped: usize,
    /// Whether the features were chosen by default (every numeric column): then `ignored`
    /// lists the columns with a cell that is not a number.
    pub default_features: bool,
}

/// Reads `path` (see the module's rules).
///
/// # Errors
/// A file that cannot be read, or any rule broken; the message is one line naming the file
/// (and the row, line and column where there is one).
pub fn load(path: &Path, target: &str, features: Option<&[String]>, task: Task, drop_missing: bool) -> Result<Loaded> {
    let file = path.display().to_string();
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| anyhow!("{file}: cannot read: {e}"))?;
    let mut records = Vec::new();
    // bytes, then text with U+FFFD for bytes that are not UTF-8: a Latin-1 accent in a text
    // column the run does not use must not stop it (in a feature it is "not a number")
    for r in reader.byte_records() {
        let r = r.map_err(|e| anyhow!("{file}: {}", one_line(&e.to_string())))?;
        records.push(::csv::StringRecord::from_byte_record_lossy(r));
    }
    let Some(header) = records.first() else {
        bail!("{file}: empty file (expected a header row and data rows)");
    };
    let header: Vec<String> = header.iter().map(|s| s.trim().to_string()).collect();
    // The file's line of each record: the reader skips blank lines, and a quoted cell may span
    // several, so a row's line is not its index + 2.
    let lines: Vec<u64> = records
        .iter()
        .enumerate()
        .map(|(i, r)| r.position().map_or(i as u64 + 1, |p| p.line()))
        .collect();
    let line = |r: usize| lines[r + 1];
    let rows = &records[1..];
    if rows.is_empty() {
        bail!("{file}: no data rows after the header");
    }
    for (i, name) in header.iter().enumerate() {
        if let Some(j) = header[..i].iter().position(|h| h == name) {
            bail!(
                "{file}: row 0 (line {}, the header): column \"{name}\" appears twice (columns {} and {})",
                lines[0],
                j + 1,
                i + 1
            );
        }
    }
    for (r, rec) in rows.iter().enumerate() {
        if rec.len() != header.len() {
            bail!(
                "{file}: row {} (line {}): {} cells, the header has {} columns",
                r + 1,
                line(r),
                rec.len(),
                header.len()
            );
        }
    }
    let column = |name: &str, what: &str| -> Result<usize> {
        header.iter().position(|h| h == name).ok_or_else(|| {
            anyhow!(
                "{file}: no column \"{name}\" ({what}; the columns are {})",
                header.join(", ")
            )
        })
    };
    let t_col = column(target, "--target")?;
    let (f_cols, ignored): (Vec<usize>, Vec<String>) = match features {
        Some(names) => {
            let mut cols = Vec::new();
            for n in names {
                let c = column(n, "--features")?;
                if c == t_col {
                    bail!("{file}: column \"{n}\" is the target and cannot be a feature");
                }
                if cols.contains(&c) {
                    bail!("{file}: column \"{n}\" is named twice in --features");
                }
                cols.push(c);
            }
            let ignored = (0..header.len())
                .filter(|c| *c != t_col && !cols.contains(c))
                .map(|c| header[c].clone())
                .collect();
            (cols, ignored)
        }
        None => {
            // a number out of range (1e300, inf) still makes the column a feature: its cell
            // is then named as an error rather than the column silently left out
            let (numeric, other): (Vec<usize>, Vec<usize>) =
                (0..header.len()).filter(|&c| c != t_col).partition(|&c| {
                    rows.iter()
                        .all(|r| is_missing(&r[c]) || r[c].trim().parse::<f64>().is_ok())
                });
            (numeric, other.into_iter().map(|c| header[c].clone()).collect())
        }
    };
    if f_cols.is_empty() {
        bail!("{file}: no numeric feature column besides the target \"{target}\"");
    }
    let mut x = Vec::with_capacity(rows.len() * f_cols.len());
    let mut y_raw: Vec<&str> = Vec::with_capacity(rows.len());
    let mut dropped = 0;
    for (r, rec) in rows.iter().enumerate() {
        let at = |c: usize| format!("{file}: row {} (line {}), column \"{}\"", r + 1, line(r), header[c]);
        let mut values = Vec::with_capacity(f_cols.len());
        let mut missing = None;
        for &c in &f_cols {
            match number(&rec[c]) {
                Ok(Some(v)) => values.push(v),
                Ok(None) => {
                    missing.get_or_insert(c);
                }
                Err(e) => bail!("{}: {e}", at(c)),
            }
        }
        let t = rec[t_col].trim();
        if is_missing(t) {
            missing.get_or_insert(t_col);
        }
        if let Some(c) = missing {
            if drop_missing {
                dropped += 1;
                continue;
            }
            bail!(
                "{}: missing value {:?} (use --drop-missing to drop such rows)",
                at(c),
                rec[c].trim()
            );
        }
        if task == Task::Regression {
            number(t).map_err(|e| anyhow!("{}: target {e}", at(t_col)))?;
        }
        x.extend(values);
        y_raw.push(t);
    }
    if y_raw.is_empty() {
        bail!("{file}: every one of the {} rows has a missing cell", rows.len());
    }
    let (y, labels, classes) = match task {
        Task::Regression => (
            y_raw
                .iter()
                .map(|t| number(t).ok().flatten().unwrap_or(f64::NAN))
                .collect(),
            Vec::new(),
            Vec::new(),
        ),
        Task::Binary | Task::Multiclass => {
            let classes = sorted_classes(&y_raw);
            let col = &header[t_col];
            if classes.len() < 2 {
                bail!(
                    "{file}: column \"{col}\" (the target) has one class ({:?}); a classification needs two",
                    classes[0]
                );
            }
            if task == Task::Binary && classes.len() > 2 {
                bail!(
                    "{file}: column \"{col}\" (the target) has {} values ({}...), a binary task needs two (use --task multiclass)",
                    classes.len(),
                    classes.iter().take(4).cloned().collect::<Vec<_>>().join(", ")
                );
            }
            let labels: Vec<usize> = y_raw
                .iter()
                .map(|t| classes.iter().position(|c| c == t).unwrap_or(0))
                .collect();
            (labels.iter().map(|&c| c as f64).collect(), labels, classes)
        }
    };
    let n = y_raw.len();
    Ok(Loaded {
        table: Table {
            n,
            d: f_cols.len(),
            x,
            y,
        },
        labels,
        classes,
        features: f_cols.iter().map(|&c| header[c].clone()).collect(),
        ignored,
        dropped,
        default_features: features.is_none(),
    })
}

/// A class with fewer rows than `folds`, as the error of [`load`]'s rules.
///
/// # Errors
/// The first such class, naming the file and the target column.
pub fn check_class_sizes(path: &Path, target: &str, loaded: &Loaded, folds: usize) -> Result<()> {
    for (k, name) in loaded.classes.iter().enumerate() {
        let count = loaded.labels.iter().filter(|&&c| c == k).count();
        if count < folds {
            bail!(
                "{}: column \"{target}\" (the target): class {name:?} has {count} row(s), fewer than the {folds} folds",
                path.display()
            );
        }
    }
    Ok(())
}

fn is_missing(s: &str) -> bool {
    let s = s.trim();
    s.is_empty() || ["na", "n/a", "nan"].contains(&s.to_ascii_lowercase().as_str())
}

/// A cell as a number: `Ok(None)` when missing, an error when not a finite number.
fn number(cell: &str) -> std::result::Result<Option<f64>, String> {
    if is_missing(cell) {
        return Ok(None);
    }
    match cell.trim().parse::<f64>() {
        // the model computes in f32: a larger magnitude would be infinite there
        Ok(v) if v.is_finite() && v.abs() > f64::from(f32::MAX) => {
            Err(format!("{v} is beyond the f32 range (±3.4e38) the model computes in"))
        }
        Ok(v) if v.is_finite() => Ok(Some(v)),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(_) => Err(format!("{:?} is not a number", cell.trim())),
    }
}

/// The distinct labels, sorted numerically when every one is a number, else as text.
fn sorted_classes(labels: &[&str]) -> Vec<String> {
    let mut classes: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    classes.sort();
    classes.dedup();
    if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
        classes.sort_by(|a, b| {
            a.parse::<f64>()
                .unwrap_or(0.0)
                .total_cmp(&b.parse::<f64>().unwrap_or(0.0))
        });
    }
    classes
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}
