//! Where the bench finds the workspace, the Python venv and the function binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A scratch directory for the bench's caches (`<target>/bench`).
pub fn bench_dir() -> PathBuf {
    let d = target_dir().join("bench");
    std::fs::create_dir_all(&d).expect("create target/bench");
    d
}

/// A program from the project's venv (`<root>/.venv/bin/<name>`), else from `PATH`.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = root().join(".venv/bin").join(name);
    if p.exists() { p } else { PathBuf::from(name) }
}

static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The path of a workspace binary, built (debug) on first use.
///
/// With `WIKIOPS_BIN_DIR` set (e.g. to `target/release`) the binary is taken from there as is.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("WIKIOPS_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        assert!(
            p.exists(),
            "{} does not exist (WIKIOPS_BIN_DIR)",
            p.display()
        );
        return p;
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root())
            .args(["build", "--quiet", "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.push(name.to_string());
    }
    target_dir().join("debug").join(name)
}
