//! The spam lockout's rule (the service sheet: a mailbox that sends more than 10 spam messages
//! in an hour is locked). Pure: the detection times, the threshold and the window come from the
//! caller; the sweep that applies the rule is `pec_pipeline::lockout`.
//!
//! "In an hour" is a **rolling** window, not a clock hour and not "the hour before the sweep":
//! the sweep runs every few minutes and looks back further than the window, so a burst that
//! straddles two sweeps is still seen whole. A window is half-open, `[t, t + window)`: 11
//! detections within 59 minutes lock, 11 spread over 61 minutes do not, and neither do 10.

use chrono::{DateTime, Duration, Utc};

/// The lockout's parameters (template parameters `SpamLockThreshold`, `SpamLockWindowMinutes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutRule {
    /// Locked when a window holds **more** than this many detections (the sheet: 10).
    pub threshold: usize,
    /// The rolling window (the sheet: one hour).
    pub window: Duration,
}

impl Default for LockoutRule {
    fn default() -> Self {
        Self {
            threshold: 10,
            window: Duration::hours(1),
        }
    }
}

/// A burst that breaks the rule: the first and the last detection of the earliest window that
/// holds more than the threshold, and how many it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub count: usize,
}

impl LockoutRule {
    /// How far back a sweep must read so that no window ending after its previous run is cut:
    /// the window plus the interval between sweeps.
    pub fn lookback(&self, sweep_every: Duration) -> Duration {
        self.window + sweep_every
    }

    /// The earliest burst among `times` (detections of one mailbox, any order), if any.
    pub fn burst(&self, times: &[DateTime<Utc>]) -> Option<Burst> {
        let mut sorted = times.to_vec();
        sorted.sort();
        let need = self.threshold.checked_add(1)?;
        if sorted.len() < need {
            return None;
        }
        (0..=sorted.len() - need).find_map(|i| {
            let first = sorted[i];
            // Every detection in [first, first + window).
            let count = sorted[i..]
                .iter()
                .take_while(|t| **t - first < self.window)
                .count();
            (count >= need).then(|| Burst {
                first,
                last: sorted[i + count - 1],
                count,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minutes: &[i64]) -> Vec<DateTime<Utc>> {
        let base = Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap();
        minutes
            .iter()
            .map(|m| base + Duration::minutes(*m))
            .collect()
    }

    fn spread(n: i64, over_minutes: i64) -> Vec<DateTime<Utc>> {
        at(&(0..n)
            .map(|i| i * over_minutes / (n - 1))
            .collect::<Vec<_>>())
    }

    #[test]
    fn eleven_in_fifty_nine_minutes_lock() {
        let b = LockoutRule::default().burst(&spread(11, 59)).unwrap();
        assert_eq!(b.count, 11);
        assert_eq!(b.last - b.first, Duration::minutes(59));
    }

    #[test]
    fn ten_in_a_minute_do_not() {
        assert_eq!(LockoutRule::default().burst(&spread(10, 1)), None);
    }

    #[test]
    fn eleven_over_sixty_one_minutes_do_not() {
        assert_eq!(LockoutRule::default().burst(&spread(11, 61)), None);
    }

    #[test]
    fn the_window_is_half_open() {
        // 11 with the last exactly one hour after the first: not within the hour.
        assert_eq!(LockoutRule::default().burst(&spread(11, 60)), None);
        let mut times = spread(11, 60);
        times[10] -= Duration::seconds(1);
        assert!(LockoutRule::default().burst(&times).is_some());
    }

    #[test]
    fn a_burst_inside_a_longer_trickle_is_found_in_any_order() {
        // One every 30 minutes all day, and 11 within 20 minutes in the afternoon.
        let mut minutes: Vec<i64> = (0..48).map(|i| i * 30).collect();
        minutes.extend((0..11).map(|i| 600 + i * 2));
        minutes.reverse();
        let b = LockoutRule::default().burst(&at(&minutes)).unwrap();
        assert!(b.count >= 11);
        // The earliest window that breaks the rule starts with the trickle's 9:30.
        assert_eq!(b.first, at(&[570])[0]);
    }

    #[test]
    fn threshold_and_window_are_parameters() {
        let rule = LockoutRule {
            threshold: 2,
            window: Duration::minutes(5),
        };
        assert!(rule.burst(&at(&[0, 1, 4])).is_some());
        assert!(rule.burst(&at(&[0, 1, 5])).is_none());
        assert_eq!(rule.lookback(Duration::minutes(5)), Duration::minutes(10));
        assert_eq!(LockoutRule::default().burst(&[]), None);
    }
}
