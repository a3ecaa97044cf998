//! What the MX remembers about sources between sessions: a message rate per source and
//! greylisting of ordinary senders (RFC 6647). Both are in the process's memory, bounded in
//! size; with several processes behind a load balancer each keeps its own (a greylisted sender
//! that retries on another process waits once more there; its MTA retries anyway).
//!
//! A *source* is an IPv4 address or an IPv6 /64 for the rate (what one host holds), and an
//! IPv4 /24 or an IPv6 /64 for greylisting (large senders retry from a neighbouring address of
//! the same pool).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Greylisting of ordinary senders (never of senders the provider index lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greylisting {
    /// How long a new (source, sender, recipient) triple must wait before a retry is taken.
    pub delay: Duration,
    /// How long after the first attempt a retry still counts; later, the wait starts again.
    pub retry_window: Duration,
    /// How long a triple that passed is taken without waiting.
    pub pass_for: Duration,
}

impl Greylisting {
    /// RFC 6647's usual figures: 5 minutes, a day to come back, 36 days remembered.
    pub const fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            retry_window: Duration::from_secs(24 * 3600),
            pass_for: Duration::from_secs(36 * 24 * 3600),
        }
    }
}

/// Entries kept at most per table; beyond it the stalest are forgotten (a forgotten
/// greylisted triple waits again, a forgotten rate starts full).
const MAX_ENTRIES: usize = 100_000;

/// The rate and greylisting state of one MX server.
#[derive(Debug)]
pub(crate) struct SourceLimits {
    per_minute: u32,
    greylisting: Option<Greylisting>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    triples: Mutex<HashMap<Triple, Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Triple {
    net: IpAddr,
    sender: String,
    recipient: String,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    first: Instant,
    passed: Option<Instant>,
}

/// What greylisting says about one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grey {
    Pass,
    /// Come back in this long.
    Wait(Duration),
}

impl SourceLimits {
    pub fn new(per_minute: u32, greylisting: Option<Greylisting>) -> Self {
        Self {
            per_minute,
            greylisting,
            buckets: Mutex::new(HashMap::new()),
            triples: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one message from `ip`'s allowance (`per_minute`, refilled continuously, a burst of
    /// at most `per_minute`); false when it has none left. Always true with no limit set.
    pub fn take_message(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let cap = f64::from(self.per_minute);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_ENTRIES && !buckets.contains_key(&host_key(ip)) {
            // Full buckets carry no information: forget them first, then the oldest half.
            buckets.retain(|_, b| refill(b, cap, now) < cap);
            if buckets.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                buckets.retain(|_, b| b.at > cut);
            }
        }
        let b = buckets.entry(host_key(ip)).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens = refill(b, cap, now);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Greylisting's answer for mail from `sender` (`<>` as empty) to `recipient` coming from
    /// `ip`; always `Pass` when greylisting is off.
    pub fn greylist(&self, ip: IpAddr, sender: &str, recipient: &str, now: Instant) -> Grey {
        let Some(g) = self.greylisting else {
            return Grey::Pass;
        };
        let key = Triple {
            net: net_key(ip),
            sender: sender.to_ascii_lowercase(),
            recipient: recipient.to_ascii_lowercase(),
        };
        let mut triples = self.triples.lock().unwrap_or_else(|p| p.into_inner());
        if triples.len() >= MAX_ENTRIES && !triples.contains_key(&key) {
            triples.retain(|_, s| !expired(s, &g, now));
            // A flood of new triples must not push out the senders that already passed: the
            // waiting ones go first.
            if triples.len() >= MAX_ENTRIES {
                triples.retain(|_, s| s.passed.is_some());
            }
            if triples.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = triples
                    .values()
                    .map(|s| s.passed.unwrap_or(s.first))
                    .collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                triples.retain(|_, s| s.passed.unwrap_or(s.first) > cut);
            }
        }
        let seen = triples.entry(key).or_insert(Seen {
            first: now,
            passed: None,
        });
        if expired(seen, &g, now) {
            *seen = Seen {
                first: now,
                passed: None,
            };
        }
        if seen.passed.is_some() {
            seen.passed = Some(now);
            return Grey::Pass;
        }
        let waited = now.saturating_duration_since(seen.first);
        if waited >= g.delay {
            seen.passed = Some(now);
            Grey::Pass
        } else {
            Grey::Wait(g.delay - waited)
        }
    }
}

fn refill(b: &Bucket, cap: f64, now: Instant) -> f64 {
    let minutes = now.saturating_duration_since(b.at).as_secs_f64() / 60.0;
    (b.tokens + minutes * cap).min(cap)
}

fn expired(s: &Seen, g: &Greylisting, now: Instant) -> bool {
    match s.passed {
        Some(p) => now.saturating_duration_since(p) > g.pass_for,
        None => now.saturating_duration_since(s.first) > g.retry_window,
    }
}

/// One host: an IPv4 address, an IPv6 /64.
pub(crate) fn host_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        v4 => v4,
    }
}

/// One sender's pool: an IPv4 /24, an IPv6 /64.
fn net_key(ip: IpAddr) -> IpAddr {
    match host_key(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
        }
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_rate_allows_a_burst_then_refills_per_source() {
        let l = SourceLimits::new(3, None);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.take_message(ip("192.0.2.1"), t));
        }
        assert!(!l.take_message(ip("192.0.2.1"), t));
        // Another host has its own allowance; an IPv6 host is its /64.
        assert!(l.take_message(ip("192.0.2.2"), t));
        for _ in 0..3 {
            assert!(l.take_message(ip("2001:db8::1"), t));
        }
        assert!(!l.take_message(ip("2001:db8::ffff"), t));
        // One message back every 20 s.
        assert!(!l.take_message(ip("192.0.2.1"), t + Duration::from_secs(10)));
        assert!(l.take_message(ip("192.0.2.1"), t + Duration::from_secs(31)));
        // No limit set: always.
        let off = SourceLimits::new(0, None);
        assert!((0..1000).all(|_| off.take_message(ip("192.0.2.1"), t)));
    }

    #[test]
    fn a_new_triple_waits_then_passes_and_is_remembered() {
        let g = Greylisting::with_delay(Duration::from_secs(300));
        let l = SourceLimits::new(0, Some(g));
        let t = Instant::now();
        let (a, s, r) = (ip("198.51.100.7"), "x@esempio.test", "mario@pec.test");
        assert_eq!(l.greylist(a, s, r, t), Grey::Wait(Duration::from_secs(300)));
        assert_eq!(
            l.greylist(a, s, r, t + Duration::from_secs(100)),
            Grey::Wait(Duration::from_secs(200))
        );
        // The retry may come from a neighbour of the same /24, in another case.
        assert_eq!(
            l.greylist(
                ip("198.51.100.9"),
                "X@Esempio.test",
                r,
                t + Duration::from_secs(300)
            ),
            Grey::Pass
        );
        assert_eq!(
            l.greylist(a, s, r, t + Duration::from_secs(301)),
            Grey::Pass
        );
        // Another recipient, or another network, waits.
        assert!(matches!(
            l.greylist(a, s, "anna@pec.test", t),
            Grey::Wait(_)
        ));
        assert!(matches!(
            l.greylist(ip("203.0.113.7"), s, r, t),
            Grey::Wait(_)
        ));
        // Too late a retry starts again; a passed triple is forgotten after pass_for.
        let late = t + g.retry_window + Duration::from_secs(1);
        assert!(matches!(
            l.greylist(a, s, "anna@pec.test", late),
            Grey::Wait(_)
        ));
        let much_later = t + Duration::from_secs(301) + g.pass_for + Duration::from_secs(1);
        assert!(matches!(l.greylist(a, s, r, much_later), Grey::Wait(_)));
        // Off: always.
        assert_eq!(SourceLimits::new(0, None).greylist(a, s, r, t), Grey::Pass);
    }

    #[test]
    fn the_tables_stay_bounded() {
        let l = SourceLimits::new(1, Some(Greylisting::with_delay(Duration::from_secs(60))));
        let t = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            l.take_message(a, t + Duration::from_micros(u64::from(i)));
            l.greylist(
                a,
                "s@x.test",
                "r@y.test",
                t + Duration::from_micros(u64::from(i)),
            );
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_ENTRIES);
        assert!(l.triples.lock().unwrap().len() <= MAX_ENTRIES);
    }

    #[test]
    fn a_flood_of_new_triples_does_not_push_out_the_ones_that_passed() {
        let g = Greylisting::with_delay(Duration::from_secs(60));
        let l = SourceLimits::new(0, Some(g));
        let t = Instant::now();
        let friend = ip("192.0.2.10");
        assert!(matches!(
            l.greylist(friend, "a@x.test", "r@y.test", t),
            Grey::Wait(_)
        ));
        let later = t + Duration::from_secs(61);
        assert_eq!(
            l.greylist(friend, "a@x.test", "r@y.test", later),
            Grey::Pass
        );
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            l.greylist(
                ip("203.0.113.1"),
                &format!("s{i}@spam.test"),
                "r@y.test",
                later,
            );
        }
        assert!(l.triples.lock().unwrap().len() <= MAX_ENTRIES);
        assert_eq!(
            l.greylist(friend, "a@x.test", "r@y.test", later),
            Grey::Pass
        );
    }
}
