//! Antivirus for PEC messages: two engines in series over every part of a message.
//!
//! - [`walk()`] (pure): every MIME part after transfer decoding, recursing into `message/*`
//!   parts (PEC envelopes nest the original) and zip archives, under the hard bounds of
//!   [`Limits`] (depth, expanded bytes, entry count, time). A bound hit is a verdict
//!   ([`Verdict::Unscannable`]), never a crash or a silent pass.
//! - [`Engine`]: the small async trait every engine implements. Adapters here:
//!   [`ClamdEngine`] (ClamAV's clamd over a unix socket, INSTREAM; libclamav is not linked) and
//!   [`YaraEngine`] (yara-x in process, rules committed in `rules/pec.yar`). Tests use fakes.
//! - [`scan`]: walk once, then the engines in order, stopping at the first detection.
//! - [`definitions`] (pure): ClamAV database headers, the files the definition updater owns and
//!   the marker it writes for the scan function to reload from.
//! - [`freshclam::Freshclam`]: the [`definitions::DefinitionsUpdater`] that runs ClamAV's
//!   freshclam once over a directory (the scheduled definition updater).
//! - [`policy`]: per-tenant engine list and treatment of unscannable messages, and the
//!   [`Decision`] (pass / virus outcome / retry) a verdict leads to.
//!
//! No AWS here; the scan function (`functions/scan`) reads messages from S3, records verdicts
//! and routes the PEC outcomes.

mod chain;
pub mod clamd;
pub mod definitions;
mod engine;
pub mod freshclam;
mod item;
mod limits;
pub mod policy;
#[cfg(feature = "testing")]
pub mod testing;
mod verdict;
mod walk;
pub mod yara;

pub use chain::scan;
pub use clamd::ClamdEngine;
pub use engine::{BoxFuture, Detection, Engine, EngineError};
pub use item::{Item, PartPath, Segment};
pub use limits::Limits;
pub use policy::{
    Decision, EngineKind, OnUnscannable, PolicyBook, PolicyError, ScanPolicy, decide,
};
pub use verdict::{Bound, ScanReport, Unscannable, Verdict};
pub use walk::{Walk, walk};
pub use yara::YaraEngine;
