//! Failed-login throttling, shared by every way a person logs in (SMTP submission today; IMAP,
//! POP3 and the HTTP API will use the same port).
//!
//! Two counters, each over a sliding window: per account (the login name, normalised) and per
//! source address. When either reaches its limit, logins for that account (or from that source)
//! are refused — **the right password included** — until the lockout ends. Unknown accounts are
//! counted exactly like known ones, so a lockout says nothing about whether a mailbox exists.
//!
//! [`MemoryThrottle`] keeps the counters in the process (one edge task); a deployment with
//! several tasks can put a shared store behind the same trait.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// How many failures, over what window, lock for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// The sliding window failures are counted over.
    pub window: Duration,
    /// Failures for one account within the window that lock it.
    pub account_failures: u32,
    /// Failures from one source address within the window that lock it.
    pub source_failures: u32,
    /// How long a lock lasts.
    pub lockout: Duration,
}

impl Default for ThrottlePolicy {
    /// 10 failures per account or 30 per source address within 15 minutes lock for 15 minutes.
    fn default() -> Self {
        ThrottlePolicy {
            window: Duration::minutes(15),
            account_failures: 10,
            source_failures: 30,
            lockout: Duration::minutes(15),
        }
    }
}

/// Whether a login may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginVerdict {
    Allowed,
    /// Locked (the account or the source) until then.
    Locked {
        until: DateTime<Utc>,
    },
}

/// The throttling port.
pub trait LoginThrottle: Send + Sync {
    /// Whether `account` may try to log in from `source` at `now` (before checking the password).
    fn allowed(&self, account: &str, source: &str, now: DateTime<Utc>) -> LoginVerdict;
    /// A failed login (wrong password, unknown account, locked mailbox).
    fn failed(&self, account: &str, source: &str, now: DateTime<Utc>);
    /// A successful login: the account's failures are forgotten (the source's are not).
    fn succeeded(&self, account: &str, source: &str, now: DateTime<Utc>);
}

#[derive(Debug, Default)]
struct Counter {
    failures: VecDeque<DateTime<Utc>>,
    locked_until: Option<DateTime<Utc>>,
}

impl Counter {
    fn forget_before(&mut self, start: DateTime<Utc>) {
        while self.failures.front().is_some_and(|t| *t < start) {
            self.failures.pop_front();
        }
    }
}

/// Entries kept before idle ones are pruned (bounds memory under a spray of login names).
const PRUNE_ABOVE: usize = 50_000;

/// [`LoginThrottle`] in memory.
#[derive(Debug, Default)]
pub struct MemoryThrottle {
    policy: ThrottlePolicy,
    counters: Mutex<HashMap<String, Counter>>,
}

impl MemoryThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        MemoryThrottle {
            policy,
            counters: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, source: &str) -> [(String, bool); 2] {
        [
            (format!("account:{}", crate::state::norm(account)), true),
            (format!("source:{}", source.trim()), false),
        ]
    }
}

impl LoginThrottle for MemoryThrottle {
    fn allowed(&self, account: &str, source: &str, now: DateTime<Utc>) -> LoginVerdict {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(account, source)
            .iter()
            .filter_map(|(k, _)| counters.get(k)?.locked_until)
            .filter(|until| *until > now)
            .max()
            .map_or(LoginVerdict::Allowed, |until| LoginVerdict::Locked {
                until,
            })
    }

    fn failed(&self, account: &str, source: &str, now: DateTime<Utc>) {
        let p = self.policy;
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters.len() > PRUNE_ABOVE {
            counters.retain(|_, c| {
                c.locked_until.is_some_and(|u| u > now)
                    || c.failures.back().is_some_and(|t| *t >= now - p.window)
            });
        }
        for (key, is_account) in Self::keys(account, source) {
            let limit = if is_account {
                p.account_failures
            } else {
                p.source_failures
            };
            let c = counters.entry(key).or_default();
            c.forget_before(now - p.window);
            c.failures.push_back(now);
            if c.failures.len() >= limit.max(1) as usize {
                c.locked_until = Some(now + p.lockout);
                c.failures.clear();
            }
        }
    }

    fn succeeded(&self, account: &str, source: &str, _now: DateTime<Utc>) {
        let [(account_key, _), _] = Self::keys(account, source);
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters
            .get(&account_key)
            .is_some_and(|c| c.locked_until.is_none())
        {
            counters.remove(&account_key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap() + Duration::seconds(s)
    }

    #[test]
    fn an_account_locks_after_its_failures_for_every_source_then_unlocks() {
        let th = MemoryThrottle::new(ThrottlePolicy::default());
        for i in 0..9 {
            th.failed("Mario@PEC.example.test", &format!("10.0.0.{i}"), t(i));
            assert_eq!(
                th.allowed("mario@pec.example.test", "10.9.9.9", t(i)),
                LoginVerdict::Allowed
            );
        }
        th.failed("mario@pec.example.test", "10.0.0.9", t(9));
        let locked = th.allowed("mario@pec.example.test", "10.9.9.9", t(10));
        assert_eq!(
            locked,
            LoginVerdict::Locked {
                until: t(9) + Duration::minutes(15)
            }
        );
        assert_eq!(
            th.allowed("anna@pec.example.test", "10.9.9.9", t(10)),
            LoginVerdict::Allowed
        );
        assert_eq!(
            th.allowed(
                "mario@pec.example.test",
                "10.9.9.9",
                t(9) + Duration::minutes(15)
            ),
            LoginVerdict::Allowed
        );
    }

    #[test]
    fn a_source_locks_after_its_failures_for_every_account() {
        let th = MemoryThrottle::new(ThrottlePolicy::default());
        for i in 0..30 {
            th.failed(&format!("user{i}@pec.example.test"), "192.0.2.7", t(i));
        }
        assert!(matches!(
            th.allowed("anyone@pec.example.test", "192.0.2.7", t(31)),
            LoginVerdict::Locked { .. }
        ));
        assert_eq!(
            th.allowed("anyone@pec.example.test", "192.0.2.8", t(31)),
            LoginVerdict::Allowed
        );
    }

    #[test]
    fn failures_outside_the_window_and_a_success_are_forgotten() {
        let th = MemoryThrottle::new(ThrottlePolicy::default());
        for i in 0..9 {
            th.failed("m@x.test", "s", t(i));
        }
        th.failed("m@x.test", "s", t(9) + Duration::minutes(16));
        assert_eq!(
            th.allowed("m@x.test", "s", t(9) + Duration::minutes(16)),
            LoginVerdict::Allowed
        );
        for i in 0..8 {
            th.failed("m@x.test", "s", t(2000 + i));
        }
        th.succeeded("m@x.test", "s", t(2010));
        th.failed("m@x.test", "s", t(2011));
        assert_eq!(th.allowed("m@x.test", "s", t(2012)), LoginVerdict::Allowed);
    }
}
