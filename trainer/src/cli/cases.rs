//! The reference-case runner: reads case files (format: `cases/FORMAT.md` at the repository's root), runs each
//! case through the [`crate::registry`], and compares values and gradients.
//!
//! A case passes when the loss returns the expected shape and values within
//! `|got − want| <= atol + rtol·|want|` (NaN matches NaN, ±inf matches itself), every listed
//! gradient (d sum(output) / d input) matches the same way, or, with `expect_error`, when the
//! call returns an error. A case whose loss no crate implements is skipped; a panic fails it.

use crate::registry::{self, make_tensor, number, Inputs};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A tensor as written in a case file.
#[derive(Debug, Clone, Deserialize)]
pub struct TensorSpec {
    /// Dimensions, row-major.
    pub shape: Vec<usize>,
    /// `"f32"` (default), `"f64"`, `"u32"` or `"i64"`.
    #[serde(default)]
    pub dtype: Option<String>,
    /// Flat values; non-finite ones as `"nan"`, `"inf"`, `"-inf"`.
    pub data: Vec<Value>,
}

/// Tolerances of a case.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Tol {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Default for Tol {
    fn default() -> Self {
        Self { rtol: 1e-4, atol: 1e-5 }
    }
}

/// One reference case.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// Unique name.
    pub id: String,
    /// Loss name (the registry's).
    pub loss: String,
    /// Parameters; `null` means the default.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Named inputs.
    pub inputs: BTreeMap<String, TensorSpec>,
    /// The expected output.
    #[serde(default)]
    pub expected: Option<TensorSpec>,
    /// Expected gradients of the summed output w.r.t. named inputs.
    #[serde(default)]
    pub grad: Option<BTreeMap<String, TensorSpec>>,
    /// The call must fail with an error.
    #[serde(default)]
    pub expect_error: bool,
    /// Tolerances.
    #[serde(default)]
    pub tol: Option<Tol>,
    /// Where the case comes from.
    #[serde(default)]
    pub source: Option<String>,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Values and gradients matched (or the expected error came).
    Pass,
    /// What differed.
    Fail(String),
    /// No crate implements the loss yet.
    Skip,
}

/// Counts and failures of a run.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Cases that passed.
    pub passed: usize,
    /// `(id, what differed)` of each failed case.
    pub failed: Vec<(String, String)>,
    /// `(id, loss)` of each skipped case.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    /// The closing line: `cases: N passed, N failed, N skipped`.
    pub fn summary(&self) -> String {
        format!(
            "cases: {} passed, {} failed, {} skipped",
            self.passed,
            self.failed.len(),
            self.skipped.len()
        )
    }
}

/// Reads every `*.json` case file of `dir` (sorted by name).
///
/// # Errors
/// An unreadable folder, or a malformed file (the error names the file).
pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, Vec<Case>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read case folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    if files.is_empty() {
        bail!("case folder {} holds no case file (*.json)", dir.display());
    }
    files.sort();
    files.into_iter().map(|f| load_file(&f).map(|c| (f, c))).collect()
}

/// Reads one case file: a JSON array of cases.
///
/// # Errors
/// An unreadable or malformed file; the error names the file.
pub fn load_file(path: &Path) -> Result<Vec<Case>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read case file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("malformed case file {}", path.display()))
}

fn values(spec: &TensorSpec) -> Result<Vec<f64>> {
    spec.data.iter().map(number).collect()
}

fn build_inputs(case: &Case, device: &Device) -> Result<(Inputs, BTreeMap<String, Var>)> {
    let mut inputs = Inputs::new();
    let mut vars = BTreeMap::new();
    let wants_grad = case.grad.as_ref();
    for (name, spec) in &case.inputs {
        let dtype = spec.dtype.as_deref().unwrap_or("f32");
        let t = make_tensor(
            &values(spec).with_context(|| format!("input `{name}`"))?,
            &spec.shape,
            dtype,
            device,
        )
        .with_context(|| format!("input `{name}`"))?;
        if wants_grad.is_some_and(|g| g.contains_key(name)) && t.dtype().is_float() {
            let v = Var::from_tensor(&t)?;
            inputs.insert(name.clone(), v.as_tensor().clone());
            vars.insert(name.clone(), v);
        } else {
            inputs.insert(name.clone(), t);
        }
    }
    Ok((inputs, vars))
}

fn close(got: f64, want: f64, tol: Tol) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= tol.atol + tol.rtol * want.abs()
}

fn compare(what: &str, got: &Tensor, want: &TensorSpec, tol: Tol) -> Result<()> {
    if got.dims() != want.shape.as_slice() {
        bail!("{what}: shape {:?}, expected {:?}", got.dims(), want.shape);
    }
    let g = got.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let w = values(want)?;
    if g.len() != w.len() {
        bail!("{what}: {} values, expected {}", g.len(), w.len());
    }
    let bad: Vec<usize> = (0..g.len()).filter(|&i| !close(g[i], w[i], tol)).collect();
    if let Some(&i) = bad.first() {
        bail!(
            "{what}: {} of {} values differ, first at flat index {i}: got {}, expected {}",
            bad.len(),
            g.len(),
            g[i],
            w[i]
        );
    }
    Ok(())
}

/// Runs one case on `device`.
pub fn run_case(case: &Case, device: &Device) -> Outcome {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case_inner(case, device)));
    match result {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::Fail(format!("{e:#}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Outcome::Fail(format!("panicked: {}", msg.unwrap_or_default()))
        }
    }
}

fn run_case_inner(case: &Case, device: &Device) -> Result<Outcome> {
    let tol = case.tol.unwrap_or_default();
    let (inputs, vars) = build_inputs(case, device)?;
    let Some(result) = registry::call(&case.loss, &case.params, &inputs) else {
        return Ok(Outcome::Skip);
    };
    if case.expect_error {
        return Ok(match result {
            Err(_) => Outcome::Pass,
            Ok(t) => Outcome::Fail(format!("expected an error, got a value of shape {:?}", t.dims())),
        });
    }
    let out = result.map_err(|e| anyhow!("unexpected error: {e:#}"))?;
    if let Some(want) = &case.expected {
        compare("value", &out, want, tol)?;
    }
    if let Some(grads) = &case.grad {
        let store = out.sum_all()?.backward()?;
        for (name, want) in grads {
            let var = vars
                .get(name)
                .ok_or_else(|| anyhow!("gradient asked for non-float input `{name}`"))?;
            let g = match store.get(var.as_tensor()) {
                Some(g) => g.clone(),
                None => var.as_tensor().zeros_like()?,
            };
            compare(&format!("grad `{name}`"), &g, want, tol)?;
        }
    }
    Ok(Outcome::Pass)
}

/// Runs every case file in `dirs` on `device`.
///
/// # Errors
/// An unreadable folder, a folder without case files, or a malformed case file.
pub fn run_dirs(dirs: &[PathBuf], device: &Device) -> Result<Report> {
    let mut report = Report::default();
    for dir in dirs {
        for (_file, cases) in load_dir(dir)? {
            for case in &cases {
                match run_case(case, device) {
                    Outcome::Pass => report.passed += 1,
                    Outcome::Fail(msg) => report.failed.push((case.id.clone(), msg)),
                    Outcome::Skip => report.skipped.push((case.id.clone(), case.loss.clone())),
                }
            }
        }
    }
    Ok(report)
}

/// The repository's own reference cases: `cases/` at the root of the workspace this crate was
/// built in (a path fixed at compile time, so it exists in a clone of the repository, not in a
/// crate downloaded from a registry).
pub fn repository_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases")
}

/// The folders `trainer cases` and the test suite read when none is named: [`repository_dir`],
/// then every folder of the `LOSS_CASES_DIR` environment variable (a path list, `:`-separated on
/// Unix).
pub fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![repository_dir()];
    if let Some(extra) = std::env::var_os("LOSS_CASES_DIR") {
        dirs.extend(std::env::split_paths(&extra).filter(|p| !p.as_os_str().is_empty()));
    }
    dirs
}
