//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The folder of real PEC messages beside the repository (`../shared/fixtures/real/`).
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/real");

/// Read a real fixture by file name. Panics (fails the test) with a clear message naming the
/// folder when it is missing: these tests must never pass silently without their data.
pub fn fixture(name: &str) -> Vec<u8> {
    let dir = Path::new(FIXTURES);
    assert!(
        dir.is_dir(),
        "the real-fixture folder {} is missing: these tests need ../shared/fixtures/real/ \
         beside the repository (see shared/pec-core/README.md)",
        dir.display()
    );
    let path: PathBuf = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read real fixture {} (in folder {}): {e}",
            path.display(),
            dir.display()
        )
    })
}

/// Convert bare LF line ends to CRLF.
pub fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}
