//! Password protection (issue #18): the [`BreachSource`] port a password is checked through
//! when it is set or changed, the [`PasswordFinding`] a refusal leaves for the monthly report,
//! and [`screen`], the one check every place that sets a password calls.
//!
//! Only the first five hex digits of the password's SHA-1 are given to the source
//! ([`pec_core::breach`]). The adapters are `pec_aws::breach_source` (Pwned Passwords over
//! HTTPS, `PEC_BREACH_URL`, or a local range file); [`MemoryBreach`] is the fake.
//!
//! **Fail closed.** For a plan with password protection, a source that cannot answer makes
//! the setting fail with [`BreachError`] (the API answers 503 and the caller retries): a paid
//! check never lapses silently, and nothing is lost (a refused create writes nothing, an
//! activation link is put back).

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use pec_core::breach::{Band, RangeError, RangeKey, Setting, range_key};
use pec_core::plan::Plan;
use serde::{Deserialize, Serialize};

use crate::{StateError, StateStore};

/// Days a finding is kept (TTL): past the month it is reported in, and the next.
pub const FINDING_DAYS: i64 = 90;

/// Why a password could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum BreachError {
    #[error("the breach data source did not answer: {0}")]
    Unavailable(String),
    #[error("the breach data source answered something else than a range: {0}")]
    BadRange(#[from] RangeError),
    #[error("the password finding was not recorded: {0}")]
    State(#[from] StateError),
}

/// A range fetch.
pub type RangeFuture<'a> = Pin<Box<dyn Future<Output = Result<String, BreachError>> + Send + 'a>>;

/// Breach data by range: the answer for a 5-hex-digit prefix, as Pwned Passwords gives it
/// (`SUFFIX:COUNT` lines). Object safe: hosts hold an `Arc<dyn BreachSource>`.
pub trait BreachSource: Send + Sync {
    fn range<'a>(&'a self, prefix: &'a str) -> RangeFuture<'a>;
}

/// How often `password` was seen in the source's data (0: never).
pub async fn breach_count(source: &dyn BreachSource, password: &str) -> Result<u64, BreachError> {
    let key: RangeKey = range_key(password);
    let body = source.range(&key.prefix).await?;
    Ok(pec_core::breach::count_in(&body, &key)?)
}

/// A password refused because it is in breach data: what the monthly report lists. Never the
/// password, its hash, its prefix or its exact count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordFinding {
    pub mailbox: String,
    pub tenant: String,
    pub at: DateTime<Utc>,
    pub setting: Setting,
    pub band: Band,
}

/// What [`screen`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    /// The plan has no password protection: not checked.
    NotInPlan,
    /// Checked: not in the breach data.
    Clean,
    /// In the breach data (recorded as a finding): refuse it.
    Breached(Band),
}

/// Where and for what a password is being set.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub mailbox: &'a str,
    pub tenant: &'a str,
    pub plan: Plan,
    pub setting: Setting,
}

/// Checks `password`, about to be set for `candidate`, if its plan includes password
/// protection; a breached one is recorded as a [`PasswordFinding`] (one per mailbox, time and
/// setting) and answered [`Screened::Breached`].
pub async fn screen<Db: StateStore>(
    source: &dyn BreachSource,
    state: &Db,
    candidate: Candidate<'_>,
    password: &str,
    now: DateTime<Utc>,
) -> Result<Screened, BreachError> {
    if !candidate.plan.entitlements().password_protection {
        return Ok(Screened::NotInPlan);
    }
    let Some(band) = Band::of(breach_count(source, password).await?) else {
        return Ok(Screened::Clean);
    };
    state
        .record_password_finding(&PasswordFinding {
            mailbox: crate::state::norm(candidate.mailbox),
            tenant: candidate.tenant.to_string(),
            at: now,
            setting: candidate.setting,
            band,
        })
        .await?;
    Ok(Screened::Breached(band))
}

/// A fake source: the passwords it was given, with their counts; `down()` fails every call.
#[derive(Debug, Clone, Default)]
pub struct MemoryBreach {
    /// (prefix, suffix, count)
    entries: Vec<(String, String, u64)>,
    down: bool,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl MemoryBreach {
    pub fn new() -> Self {
        Self::default()
    }

    /// `password` seen `count` times.
    pub fn with(mut self, password: &str, count: u64) -> Self {
        let k = range_key(password);
        self.entries.push((k.prefix, k.suffix, count));
        self
    }

    /// A source that never answers.
    pub fn down() -> Self {
        MemoryBreach {
            down: true,
            ..Self::default()
        }
    }

    /// Every prefix asked for, in order (what left the provider).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl BreachSource for MemoryBreach {
    fn range<'a>(&'a self, prefix: &'a str) -> RangeFuture<'a> {
        Box::pin(async move {
            self.asked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(prefix.to_string());
            if self.down {
                return Err(BreachError::Unavailable("the fake source is down".into()));
            }
            // Like the real API: padding first, so a range is never empty.
            let mut body = String::from("00000000000000000000000000000000000:0\r\n");
            for (p, s, c) in &self.entries {
                if p.eq_ignore_ascii_case(prefix) {
                    body.push_str(&format!("{s}:{c}\r\n"));
                }
            }
            Ok(body)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryState;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn candidate(plan: Plan) -> Candidate<'static> {
        Candidate {
            mailbox: "Mario.Rossi@pec.example.it",
            tenant: "t1",
            plan,
            setting: Setting::Activation,
        }
    }

    #[tokio::test]
    async fn only_the_prefix_leaves_and_a_breached_password_is_recorded_by_band() {
        let src = MemoryBreach::new().with("Password2024!", 1234);
        let state = MemoryState::new();
        let now = at("2026-10-05T08:30:00Z");
        let got = screen(&src, &state, candidate(Plan::Gold), "Password2024!", now)
            .await
            .unwrap();
        assert_eq!(got, Screened::Breached(Band::Common));
        assert_eq!(src.asked(), vec![range_key("Password2024!").prefix]);
        let found = state
            .password_findings(at("2026-10-01T00:00:00Z"), at("2026-11-01T00:00:00Z"))
            .await
            .unwrap();
        assert_eq!(
            found,
            vec![PasswordFinding {
                mailbox: "mario.rossi@pec.example.it".into(),
                tenant: "t1".into(),
                at: now,
                setting: Setting::Activation,
                band: Band::Common,
            }]
        );
        let clean = screen(
            &src,
            &state,
            candidate(Plan::Gold),
            "a long unused passphrase",
            now,
        )
        .await
        .unwrap();
        assert_eq!(clean, Screened::Clean);
    }

    #[tokio::test]
    async fn a_plan_without_protection_is_not_checked_and_a_down_source_fails_closed() {
        let state = MemoryState::new();
        let now = at("2026-10-05T08:30:00Z");
        let down = MemoryBreach::down();
        assert_eq!(
            screen(&down, &state, candidate(Plan::Base), "password", now)
                .await
                .unwrap(),
            Screened::NotInPlan
        );
        assert!(down.asked().is_empty());
        assert!(matches!(
            screen(&down, &state, candidate(Plan::Gold), "password", now).await,
            Err(BreachError::Unavailable(_))
        ));
    }
}
