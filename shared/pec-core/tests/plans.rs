//! The service sheet (`pec_core::plan`) rendered as Markdown, compared with
//! `tests/plans/entitlements.md`: a change to what a plan includes is a reviewed diff.
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p pec-core --test plans
//! ```

use pec_testkit::golden::Corpus;

#[test]
fn the_sheet_is_the_golden_table() {
    Corpus::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/plans"), "md")
        .check([("entitlements", pec_core::plan::sheet_markdown())]);
}
