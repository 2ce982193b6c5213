//! Helpers of the command-line tests: run the binary, a fresh temporary folder, the files a
//! run wrote, check a one-line error.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `trainer` binary with `args`.
pub fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer")
}

/// An empty folder `<tmp>/trainer-<test>-<pid>-<name>`.
pub fn tmp(test: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trainer-{test}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every file under `dir` (all depths), sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Exit status 2 and one line on stderr holding every needle; returns the line.
pub fn assert_one_line_error(o: &Output, what: &str, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: not one line: {err:?}");
    for n in needles {
        assert!(err.contains(n), "{what}: {err:?} lacks {n:?}");
    }
    err
}
