//! Test-only helpers shared by the workspace's tests. Never a dependency of shipped code: use it
//! under `[dev-dependencies]` only.
//!
//! * [`golden`]: the one golden-file harness (expected file beside each case, `UPDATE_GOLDEN=1`
//!   to regenerate, stale and missing files fail).
//! * [`fixtures`]: the workspace root and the real PEC samples in `../shared/fixtures/real/`
//!   (read in place, never copied; a missing folder always fails).
//! * [`prereq`]: the single rule for optional prerequisites (a `clamd` binary, a real server):
//!   skipped with a notice locally, a failure under `CI=true`.
//! * [`pki`]: a committed, deterministic TEST-ONLY PKI (CA + two providers) so signed outputs can
//!   be compared byte for byte.
//! * [`clamav`] (feature `clamav`): the Talos-signed ClamAV test databases and a loopback
//!   mirror, for the definition updater's tests.

#![forbid(unsafe_code)]

#[cfg(feature = "clamav")]
pub mod clamav;
pub mod fixtures;
pub mod golden;
pub mod pki;
pub mod prereq;
