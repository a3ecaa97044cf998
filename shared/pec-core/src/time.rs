//! The provider's time reference as PEC writes it: Italian civil time (Europe/Rome, with DST),
//! `dd/mm/yyyy`, `hh:mm:ss` and the offset `+0100` / `+0200`.
//!
//! The library never reads the clock: the caller passes the instant (`DateTime<Utc>`).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Europe::Rome;

/// An instant expressed the way PEC messages show it (daticert `<data>`, the text bodies and the
/// `Date` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PecTime {
    /// The instant, in Italian civil time.
    pub local: DateTime<FixedOffset>,
}

impl PecTime {
    /// The Italian civil time of `instant` (Europe/Rome: CET `+0100`, CEST `+0200`).
    pub fn new(instant: DateTime<Utc>) -> Self {
        let local = instant.with_timezone(&Rome).fixed_offset();
        Self { local }
    }

    /// `dd/mm/yyyy`, as in `<giorno>`.
    pub fn giorno(&self) -> String {
        self.local.format("%d/%m/%Y").to_string()
    }

    /// `hh:mm:ss` (24 h), as in `<ora>`.
    pub fn ora(&self) -> String {
        self.local.format("%H:%M:%S").to_string()
    }

    /// `+hhmm`, as in `<data zona="...">`.
    pub fn zona(&self) -> String {
        self.local.format("%z").to_string()
    }

    /// `dd/mm/yyyy hh:mm:ss (+hhmm)`: the form used in the text bodies.
    pub fn human(&self) -> String {
        format!("{} {} ({})", self.giorno(), self.ora(), self.zona())
    }

    /// RFC 5322 `Date` header value in Italian civil time, e.g.
    /// `Tue, 13 Nov 2018 16:39:26 +0100`.
    pub fn rfc5322(&self) -> String {
        self.local.format("%a, %-d %b %Y %H:%M:%S %z").to_string()
    }
}

/// Read back a daticert `<data>` (`giorno`, `ora`, `zona`). Tolerant of surrounding
/// whitespace; `None` when any part does not parse.
pub fn parse_daticert_time(giorno: &str, ora: &str, zona: &str) -> Option<DateTime<FixedOffset>> {
    let date = NaiveDate::parse_from_str(giorno.trim(), "%d/%m/%Y").ok()?;
    let time = NaiveTime::parse_from_str(ora.trim(), "%H:%M:%S").ok()?;
    let zona = zona.trim();
    let (sign, digits) = match zona.as_bytes().first()? {
        b'+' => (1, zona.get(1..)?),
        b'-' => (-1, zona.get(1..)?),
        _ => (1, zona),
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hh: i32 = digits.get(..2)?.parse().ok()?;
    let mm: i32 = digits.get(2..)?.parse().ok()?;
    let offset = FixedOffset::east_opt(sign * (hh * 3600 + mm * 60))?;
    offset.from_local_datetime(&date.and_time(time)).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn winter_and_summer_offsets() {
        let w = PecTime::new(utc("2018-11-13T15:39:26Z"));
        assert_eq!(w.giorno(), "13/11/2018");
        assert_eq!(w.ora(), "16:39:26");
        assert_eq!(w.zona(), "+0100");
        assert_eq!(w.rfc5322(), "Tue, 13 Nov 2018 16:39:26 +0100");
        let s = PecTime::new(utc("2026-07-01T10:00:00Z"));
        assert_eq!(s.ora(), "12:00:00");
        assert_eq!(s.zona(), "+0200");
    }

    #[test]
    fn dst_transitions() {
        // 2026-03-29: 01:59:59 UTC is 03:59:59 CEST; one second earlier 01:59:59 CET.
        assert_eq!(
            PecTime::new(utc("2026-03-29T00:59:59Z")).human(),
            "29/03/2026 01:59:59 (+0100)"
        );
        assert_eq!(
            PecTime::new(utc("2026-03-29T01:00:00Z")).human(),
            "29/03/2026 03:00:00 (+0200)"
        );
        // 2026-10-25: 02:30 local happens twice.
        assert_eq!(
            PecTime::new(utc("2026-10-25T00:30:00Z")).human(),
            "25/10/2026 02:30:00 (+0200)"
        );
        assert_eq!(
            PecTime::new(utc("2026-10-25T01:30:00Z")).human(),
            "25/10/2026 02:30:00 (+0100)"
        );
    }

    #[test]
    fn parse_back() {
        let t = PecTime::new(utc("2026-10-25T01:30:00Z"));
        let back = parse_daticert_time(&t.giorno(), &t.ora(), &t.zona()).unwrap();
        assert_eq!(back, t.local);
        assert_eq!(back.with_timezone(&Utc), utc("2026-10-25T01:30:00Z"));
        assert!(parse_daticert_time("32/01/2020", "00:00:00", "+0100").is_none());
        assert!(parse_daticert_time("01/01/2020", "00:00:00", "+01").is_none());
        assert!(parse_daticert_time("", "", "").is_none());
    }
}
