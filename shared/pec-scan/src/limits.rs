//! The hard bounds of one scan.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Hard bounds on the work one message may cause. Hitting any of them ends the walk and makes
/// the verdict [`crate::Verdict::Unscannable`] (unless an engine finds something in what was
/// already extracted): never a crash, never a silent pass.
///
/// The defaults are sized for PEC traffic: the access point refuses messages above 30 MB ×
/// recipients, real PEC nesting (signed envelope → postacert.eml → forwarded message → zip) is
/// well under ten levels, and the scan step has minutes, not hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Container levels: every multipart, `message/rfc822` and archive entered adds one.
    pub max_depth: u32,
    /// Bytes produced by decoding (transfer encodings) and decompressing, over the whole message.
    pub max_expanded_bytes: u64,
    /// MIME parts plus archive entries, over the whole message.
    pub max_entries: u32,
    /// Wall-clock budget for extracting and scanning, in milliseconds.
    pub time_limit_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_expanded_bytes: 256 * 1024 * 1024,
            max_entries: 10_000,
            time_limit_ms: 60_000,
        }
    }
}

impl Limits {
    /// The time budget as a [`Duration`].
    pub fn time_limit(&self) -> Duration {
        Duration::from_millis(self.time_limit_ms)
    }
}
