//! Running the `diffuse` binary in a directory, shared by the end-to-end tests (each test file
//! uses what it needs).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs the binary in `cwd`; returns (success, stdout + stderr).
pub fn diffuse(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// [`diffuse`] that must succeed; returns its output.
pub fn ok(args: &[&str], cwd: &Path) -> String {
    let (success, text) = diffuse(args, cwd);
    assert!(success, "diffuse {args:?} failed:\n{text}");
    text
}

/// [`diffuse`] that must fail; returns its output.
pub fn fails(args: &[&str], cwd: &Path) -> String {
    let (success, text) = diffuse(args, cwd);
    assert!(!success, "diffuse {args:?} should have failed:\n{text}");
    text
}
