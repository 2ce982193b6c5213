//! Records the versions of the main dependencies for `config.json`, from the workspace's
//! Cargo.lock in a clone of the repository, or from the package's own Cargo.lock when built from
//! a published crate (none found: no versions recorded).

fn main() {
    // read at run time: `env!` would bake in the folder the build script was compiled in
    let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let lock = [dir.join("../Cargo.lock"), dir.join("Cargo.lock")]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join("../Cargo.lock"));
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let wanted = [
        "candle-core",
        "candle-nn",
        "plotters",
        "linfa-datasets",
        "rand_chacha",
        "safetensors",
    ];
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("version = ") {
            if let Some(n) = name.take() {
                if wanted.contains(&n.as_str()) && !out.iter().any(|(k, _): &(String, String)| *k == n) {
                    out.push((n, v.trim_matches('"').to_string()));
                }
            }
        }
    }
    let s: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("cargo:rustc-env=TRAINER_DEP_VERSIONS={}", s.join(";"));
}
