//! The single rule for optional test prerequisites (a `clamd` binary, a reachable server, ...).
//!
//! No test passes by skipping under CI: when a prerequisite is missing and the `CI` environment
//! variable says we are in CI, the test **fails** with the reason; elsewhere it prints
//! `SKIPPED (not CI): <what>: <reason>` to stderr and the caller returns early.
//!
//! ```no_run
//! use pec_testkit::prereq;
//!
//! // in a #[test] function:
//! fn scans_with_real_clamd() {
//!     let Some(clamd) = prereq::require("clamd binary", which_clamd()) else {
//!         return;
//!     };
//!     // ... use `clamd`
//! }
//! # fn which_clamd() -> Result<std::path::PathBuf, String> { Err("not on PATH".into()) }
//! ```
//!
//! Required data (such as `../shared/fixtures/real/`) is not optional: see
//! [`crate::fixtures`], which always fails when it is missing.

use std::fmt::Display;

/// Whether the tests run under CI: `CI` is set to a non-empty value other than `false` / `0`
/// (GitHub Actions, GitLab and most others set `CI=true`).
pub fn on_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

fn ci_value_means_ci(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") => false,
        Some(v) => !v.eq_ignore_ascii_case("false") && v != "0",
    }
}

/// Checks an optional prerequisite: `Ok(value)` is returned as `Some(value)`; on `Err(reason)`,
/// panics under CI (`prerequisite missing under CI=true: <what>: <reason>`), otherwise prints
/// `SKIPPED (not CI): <what>: <reason>` to stderr and returns `None` so the test can return.
#[track_caller]
pub fn require<T, E: Display>(what: &str, found: Result<T, E>) -> Option<T> {
    require_in(on_ci(), what, found)
}

/// [`require`] for a yes/no check: `reason` says what is missing (used only when `available` is
/// false). Returns whether the test should go on.
#[track_caller]
pub fn require_that(what: &str, available: bool, reason: impl Display) -> bool {
    let found = if available { Ok(()) } else { Err(reason) };
    require(what, found).is_some()
}

/// The rule itself, with the CI decision passed in (so it is testable without touching the
/// process environment).
#[track_caller]
fn require_in<T, E: Display>(ci: bool, what: &str, found: Result<T, E>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(reason) if ci => panic!("prerequisite missing under CI=true: {what}: {reason}"),
        Err(reason) => {
            eprintln!("SKIPPED (not CI): {what}: {reason}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_prerequisite_is_returned_on_and_off_ci() {
        assert_eq!(require_in(true, "x", Ok::<_, String>(7)), Some(7));
        assert_eq!(require_in(false, "x", Ok::<_, String>(7)), Some(7));
    }

    #[test]
    fn missing_prerequisite_off_ci_skips() {
        assert_eq!(
            require_in(false, "clamd", Err::<(), _>("not on PATH")),
            None
        );
    }

    #[test]
    #[should_panic(expected = "prerequisite missing under CI=true: clamd: not on PATH")]
    fn missing_prerequisite_under_ci_fails_with_the_reason() {
        require_in(true, "clamd", Err::<(), _>("not on PATH"));
    }

    #[test]
    fn ci_values() {
        for v in ["true", "1", "yes", "TRUE"] {
            assert!(ci_value_means_ci(Some(v)), "{v}");
        }
        for v in [None, Some(""), Some("false"), Some("0"), Some(" ")] {
            assert!(!ci_value_means_ci(v), "{v:?}");
        }
    }
}
