//! Failed-login throttling, shared by every way a person logs in (SMTP submission today; IMAP,
//! POP3 and the HTTP API will use the same port).
//!
//! Three counters, each over a sliding window:
//! - per **login name and source** (the pair): reaching its limit locks that name *from that
//!   source* — the right password included — until the lockout ends;
//! - per **source** (an IPv4 address, or an IPv6 /64): reaching its limit locks every login
//!   from it (password spraying);
//! - per **login name**, from any source: past its limit every login for the name is *slowed*,
//!   not locked, so guessing from many addresses is throttled while nobody can lock a
//!   professional out of their mailbox just by knowing the (public) address.
//!
//! Unknown names are counted exactly like mailboxes, so the answers say nothing about whether a
//! mailbox exists. [`MemoryThrottle`] keeps the counters in the process (one edge task); several
//! tasks can share a store behind the same trait.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// How many failures, over what window, lock or slow for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// The sliding window failures are counted over.
    pub window: Duration,
    /// Failures for one login name from one source within the window that lock the pair.
    pub pair_failures: u32,
    /// Failures from one source within the window that lock the source.
    pub source_failures: u32,
    /// Failures for one login name (any source) within the window past which its logins are
    /// slowed by [`ThrottlePolicy::slowdown`].
    pub account_failures: u32,
    /// How long a lock lasts.
    pub lockout: Duration,
    /// The delay before answering a slowed login.
    pub slowdown: Duration,
}

impl Default for ThrottlePolicy {
    /// Within 15 minutes: 10 failures for a name from one source, or 30 from one source, lock for
    /// 15 minutes; past 10 failures for a name from anywhere, its logins wait 2 s.
    fn default() -> Self {
        ThrottlePolicy {
            window: Duration::minutes(15),
            pair_failures: 10,
            source_failures: 30,
            account_failures: 10,
            lockout: Duration::minutes(15),
            slowdown: Duration::seconds(2),
        }
    }
}

/// Whether a login may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginVerdict {
    Allowed,
    /// Allowed after waiting this long (the name is under attack from several sources).
    Slowed {
        delay: Duration,
    },
    /// Locked (the name from this source, or the source) until then.
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
    /// A successful login: the pair's failures are forgotten (the source's and the name's are
    /// not: they may come from an attack on others).
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

/// The source as counted: an IPv4 address, or the /64 of an IPv6 one (a host owns a /64).
pub fn source_key(source: &str) -> String {
    let source = source.trim();
    match source.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_canonical().to_string(),
        Ok(ip) => ip.to_string(),
        Err(_) => source.to_string(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Pair,
    Source,
    Account,
}

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

    fn keys(account: &str, source: &str) -> [(String, Scope); 3] {
        let (account, source) = (crate::state::norm(account), source_key(source));
        [
            (format!("pair:{account}|{source}"), Scope::Pair),
            (format!("source:{source}"), Scope::Source),
            (format!("account:{account}"), Scope::Account),
        ]
    }
}

impl LoginThrottle for MemoryThrottle {
    fn allowed(&self, account: &str, source: &str, now: DateTime<Utc>) -> LoginVerdict {
        let p = self.policy;
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let keys = Self::keys(account, source);
        let locked = keys
            .iter()
            .filter_map(|(k, _)| counters.get(k)?.locked_until)
            .filter(|until| *until > now)
            .max();
        if let Some(until) = locked {
            return LoginVerdict::Locked { until };
        }
        let (account_key, _) = &keys[2];
        match counters.get_mut(account_key) {
            Some(c) => {
                c.forget_before(now - p.window);
                if c.failures.len() >= p.account_failures.max(1) as usize {
                    LoginVerdict::Slowed { delay: p.slowdown }
                } else {
                    LoginVerdict::Allowed
                }
            }
            None => LoginVerdict::Allowed,
        }
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
        for (key, scope) in Self::keys(account, source) {
            let c = counters.entry(key).or_default();
            c.forget_before(now - p.window);
            c.failures.push_back(now);
            let lock_at = match scope {
                Scope::Pair => p.pair_failures,
                Scope::Source => p.source_failures,
                Scope::Account => continue,
            };
            if c.failures.len() >= lock_at.max(1) as usize {
                c.locked_until = Some(now + p.lockout);
                c.failures.clear();
            }
        }
    }

    fn succeeded(&self, account: &str, source: &str, _now: DateTime<Utc>) {
        let [(pair, _), _, _] = Self::keys(account, source);
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters
            .get(&pair)
            .is_some_and(|c| c.locked_until.is_none())
        {
            counters.remove(&pair);
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
    fn a_name_locks_from_the_guessing_source_only() {
        let th = MemoryThrottle::new(ThrottlePolicy::default());
        for i in 0..10 {
            assert_ne!(
                th.allowed("mario@pec.example.test", "192.0.2.1", t(i)),
                LoginVerdict::Locked { until: t(0) }
            );
            th.failed("Mario@PEC.example.test", "192.0.2.1", t(i));
        }
        assert_eq!(
            th.allowed("mario@pec.example.test", "192.0.2.1", t(10)),
            LoginVerdict::Locked {
                until: t(9) + Duration::minutes(15)
            }
        );
        // The owner, from their own address, is not locked out (only slowed: 10 failures).
        assert_eq!(
            th.allowed("mario@pec.example.test", "198.51.100.7", t(10)),
            LoginVerdict::Slowed {
                delay: Duration::seconds(2)
            }
        );
        assert_eq!(
            th.allowed("anna@pec.example.test", "192.0.2.1", t(10)),
            LoginVerdict::Allowed
        );
        assert_eq!(
            th.allowed(
                "mario@pec.example.test",
                "192.0.2.1",
                t(9) + Duration::minutes(15)
            ),
            LoginVerdict::Allowed,
            "the lock ends, and the name's failures have left the window"
        );
    }

    #[test]
    fn a_source_locks_for_every_name_and_ipv6_counts_by_64() {
        let th = MemoryThrottle::new(ThrottlePolicy::default());
        for i in 0..30 {
            // Rotating addresses inside one /64 is one source.
            th.failed(
                &format!("user{i}@pec.example.test"),
                &format!("2001:db8:1:2::{i:x}"),
                t(i),
            );
        }
        assert!(matches!(
            th.allowed("anyone@pec.example.test", "2001:db8:1:2:ffff::1", t(31)),
            LoginVerdict::Locked { .. }
        ));
        assert_eq!(
            th.allowed("anyone@pec.example.test", "2001:db8:1:3::1", t(31)),
            LoginVerdict::Allowed
        );
        assert_eq!(source_key("::ffff:192.0.2.9"), "192.0.2.9");
        assert_eq!(source_key(" 192.0.2.9 "), "192.0.2.9");
    }

    #[test]
    fn failures_outside_the_window_and_a_success_are_forgotten() {
        let th = MemoryThrottle::new(ThrottlePolicy::default());
        for i in 0..9 {
            th.failed("m@x.test", "192.0.2.1", t(i));
        }
        th.failed("m@x.test", "192.0.2.1", t(9) + Duration::minutes(16));
        assert_eq!(
            th.allowed("m@x.test", "192.0.2.1", t(9) + Duration::minutes(16)),
            LoginVerdict::Allowed
        );
        for i in 0..8 {
            th.failed("m@x.test", "192.0.2.1", t(2000 + i));
        }
        th.succeeded("m@x.test", "192.0.2.1", t(2010));
        th.failed("m@x.test", "192.0.2.1", t(2011));
        assert!(!matches!(
            th.allowed("m@x.test", "192.0.2.1", t(2012)),
            LoginVerdict::Locked { .. }
        ));
    }
}
