//! The workspace root and the real PEC samples beside the repository.
//!
//! The samples live in `../shared/fixtures/real/` as seen from the repository root (see its
//! README for their sources and expected verdicts). They are read in place and **never copied
//! into the repository**. They are required everywhere: a missing folder or file is always a
//! loud failure naming the path, never a skip (this is not a [`crate::prereq`] matter).

use std::path::{Path, PathBuf};

/// The workspace root: the nearest ancestor of this crate holding a `Cargo.toml` with a
/// `[workspace]` table.
pub fn workspace_root() -> PathBuf {
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no workspace Cargo.toml above {} (pec-testkit must be built inside the workspace)",
                start.display()
            )
        })
        .to_path_buf()
}

/// `<workspace root>/../shared/fixtures/real`, checked to exist.
pub fn real_dir() -> PathBuf {
    let dir = workspace_root().join("../shared/fixtures/real");
    assert!(
        dir.is_dir(),
        "the real PEC fixtures folder {} is missing: it lives beside the repository \
         (../shared/fixtures/real as seen from the repository root) and these tests require it \
         everywhere, CI included",
        dir.display()
    );
    dir
}

/// The path of one real sample, by file name, checked to exist (for tests that hand the file to
/// a command).
pub fn real_path(name: &str) -> PathBuf {
    let path = real_dir().join(name);
    assert!(
        path.is_file(),
        "the real fixture {} is missing",
        path.display()
    );
    path
}

/// The bytes of one real sample, by file name (`"aruba-2018-accettazione.eml"`).
pub fn real(name: &str) -> Vec<u8> {
    let path = real_dir().join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read the real fixture {}: {e}", path.display()))
}

/// Every `*.eml` sample of [`real_dir`] as `(file name, bytes)`, sorted by file name. Fails if
/// there is none.
pub fn real_all() -> Vec<(String, Vec<u8>)> {
    let dir = real_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".eml"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no *.eml sample in {}", dir.display());
    names
        .into_iter()
        .map(|name| {
            let bytes = real(&name);
            (name, bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_workspace() {
        let root = workspace_root();
        assert!(root.join("shared/pec-testkit/Cargo.toml").is_file());
    }

    #[test]
    fn every_sample_is_listed_once_and_sorted() {
        let all = real_all();
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert!(names.contains(&"aruba-2018-accettazione.eml"), "{names:?}");
        assert_eq!(all[0].1, real(names[0]));
    }
}
