//! Golden corpus: every message kind, built from fixed inputs (fixed clock, fixed ids, fixed
//! boundaries), compared byte for byte with `tests/golden/<kind>.eml` through the workspace's
//! one golden harness (`pec_testkit::golden`: missing and stale files fail too).
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

use pec_testkit::golden::Corpus;

#[test]
fn golden_corpus() {
    let built = common::build_all();
    assert!(built.len() >= 16, "every kind is in the corpus");
    Corpus::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"), "eml")
        .check(built.iter().map(|b| (b.name, b.message.render())));
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
