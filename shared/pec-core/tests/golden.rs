//! Golden corpus: every message kind, built from fixed inputs (fixed clock, fixed ids, fixed
//! boundaries), compared byte for byte with `tests/golden/<kind>.eml`.
//!
//! File format: [`pec_core::UnsignedMessage::render`] — the top-level headers, then
//! `MIME-Version: 1.0`, then the entity to be signed, CRLF line ends.
//!
//! Regenerate after an intended change (then review the diff):
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p pec-core --test golden
//! ```
mod common;

use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_corpus() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = golden_dir();
    let built = common::build_all();
    assert!(built.len() >= 16, "every kind is in the corpus");
    let mut failures = Vec::new();
    for b in &built {
        let path = dir.join(format!("{}.eml", b.name));
        let actual = b.message.render();
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        match std::fs::read(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => {
                let line = expected
                    .split(|b| *b == b'\n')
                    .zip(actual.split(|b| *b == b'\n'))
                    .position(|(a, b)| a != b)
                    .map_or(0, |p| p + 1);
                failures.push(format!(
                    "{}: differs from the golden file (first different line: {line})",
                    path.display()
                ));
            }
            Err(e) => failures.push(format!("{}: cannot read ({e})", path.display())),
        }
    }
    // No stale golden files.
    if !update {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".eml")
                && !built.iter().any(|b| b.name == stem)
            {
                failures.push(format!("stale golden file {name}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nIf the change is intended: UPDATE_GOLDEN=1 cargo test -p pec-core --test golden",
        failures.join("\n")
    );
}

#[test]
fn building_twice_gives_the_same_bytes() {
    let a = common::build_all();
    let b = common::build_all();
    for (x, y) in a.iter().zip(b.iter()) {
        assert_eq!(x.message, y.message, "{}", x.name);
    }
}

#[test]
fn rendered_form_reads_back() {
    for b in common::build_all() {
        let back = pec_core::UnsignedMessage::from_rendered(&b.message.render());
        assert_eq!(back.as_ref(), Ok(&b.message), "{}", b.name);
    }
}
