//! Mailbox plans and quotas (pure arithmetic; the state table stores the numbers).
//!
//! The plans are the ones our commercial offer inherits: a 1 GB inbox for Base, Standard, Pro
//! and Plus, 2 GB for Bronze and Silver, 5 GB for Gold, each extensible by whole-GB expansions.
//! **1 GB here is 1 GiB (1 073 741 824 bytes)**: the larger reading, so a mailbox never holds less
//! than what was sold.
//!
//! What counts: the stored size of every message in the mailbox (transport envelopes, anomaly
//! envelopes, receipts and notices), in bytes as stored. A transport envelope that does not fit
//! is refused with the "casella piena" non-delivery notice (NOTA 12 group 3). Receipts and
//! notices addressed to the mailbox owner are **always** stored, even beyond the quota (they are
//! the sender's legal evidence and the rules give no notice for a sender whose own mailbox is
//! full); they count, so the next envelope to a full mailbox is refused.

use serde::{Deserialize, Serialize};

/// One GiB.
pub const GIB: u64 = 1024 * 1024 * 1024;

/// Largest number of expansions a mailbox may carry (sanity bound for input).
pub const MAX_EXPANSIONS_GB: u32 = 1024;

/// A mailbox plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Base,
    Standard,
    Pro,
    Plus,
    Bronze,
    Silver,
    Gold,
}

impl Plan {
    /// Every plan, for listings and tests.
    pub const ALL: [Plan; 7] = [
        Plan::Base,
        Plan::Standard,
        Plan::Pro,
        Plan::Plus,
        Plan::Bronze,
        Plan::Silver,
        Plan::Gold,
    ];

    /// The inbox size of the plan without expansions.
    pub fn inbox_bytes(self) -> u64 {
        match self {
            Plan::Base | Plan::Standard | Plan::Pro | Plan::Plus => GIB,
            Plan::Bronze | Plan::Silver => 2 * GIB,
            Plan::Gold => 5 * GIB,
        }
    }

    /// The lower-case name (as stored and as accepted on the command line).
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Base => "base",
            Plan::Standard => "standard",
            Plan::Pro => "pro",
            Plan::Plus => "plus",
            Plan::Bronze => "bronze",
            Plan::Silver => "silver",
            Plan::Gold => "gold",
        }
    }

    /// Parses a plan name, case-insensitively.
    pub fn parse(name: &str) -> Option<Plan> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

/// Why a quota could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("{0} GB of expansions is more than the maximum of {MAX_EXPANSIONS_GB}")]
    TooManyExpansions(u32),
}

/// The quota of a mailbox: plan inbox plus `expansions_gb` whole GiB.
pub fn quota_bytes(plan: Plan, expansions_gb: u32) -> Result<u64, QuotaError> {
    if expansions_gb > MAX_EXPANSIONS_GB {
        return Err(QuotaError::TooManyExpansions(expansions_gb));
    }
    Ok(plan.inbox_bytes() + u64::from(expansions_gb) * GIB)
}

/// Whether a transport envelope of `size` bytes fits a mailbox using `used` of `quota` bytes.
pub fn envelope_fits(used: u64, size: u64, quota: u64) -> bool {
    used.checked_add(size).is_some_and(|total| total <= quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sizes_are_the_offer() {
        for p in [Plan::Base, Plan::Standard, Plan::Pro, Plan::Plus] {
            assert_eq!(p.inbox_bytes(), 1_073_741_824);
        }
        assert_eq!(Plan::Bronze.inbox_bytes(), 2 * GIB);
        assert_eq!(Plan::Silver.inbox_bytes(), 2 * GIB);
        assert_eq!(Plan::Gold.inbox_bytes(), 5 * GIB);
        assert_eq!(quota_bytes(Plan::Standard, 1), Ok(2 * GIB));
        assert_eq!(quota_bytes(Plan::Gold, 3), Ok(8 * GIB));
        assert_eq!(
            quota_bytes(Plan::Gold, MAX_EXPANSIONS_GB + 1),
            Err(QuotaError::TooManyExpansions(MAX_EXPANSIONS_GB + 1))
        );
    }

    #[test]
    fn names_round_trip() {
        for p in Plan::ALL {
            assert_eq!(Plan::parse(p.as_str()), Some(p));
            assert_eq!(Plan::parse(&p.as_str().to_uppercase()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(Plan::parse("platinum"), None);
    }

    #[test]
    fn the_limit_is_inclusive_and_never_overflows() {
        assert!(envelope_fits(0, GIB, GIB));
        assert!(envelope_fits(GIB - 10, 10, GIB));
        assert!(!envelope_fits(GIB - 10, 11, GIB));
        assert!(!envelope_fits(u64::MAX, 1, u64::MAX));
    }
}
