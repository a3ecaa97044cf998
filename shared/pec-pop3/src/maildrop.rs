//! The session's maildrop (RFC 1939 §5): INBOX as it was at login, numbered 1..n, with the
//! deletion marks; and the multi-line encoding of a message (byte-stuffing, CRLF).

use pec_ports::mailstore::{MessageMeta, SEEN};

/// One message of the maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub uid: u32,
    /// Octets as stored (RFC 1939 §5 allows the size to differ from what is sent when line
    /// endings are converted; stored messages have CRLF, so for them it is exact).
    pub size: u64,
    pub seen: bool,
    /// Marked by `DELE`; removed at `QUIT`.
    pub deleted: bool,
}

/// INBOX at login; message numbers never change during the session.
#[derive(Debug, Clone)]
pub(crate) struct Maildrop {
    pub uid_validity: u32,
    pub entries: Vec<Entry>,
}

/// Why a message number names nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoMessage {
    /// Outside 1..=n.
    NoSuch,
    /// Marked deleted in this session.
    Deleted,
}

impl NoMessage {
    pub(crate) fn text(self, n: u32) -> String {
        match self {
            NoMessage::NoSuch => format!("No such message: {n}"),
            NoMessage::Deleted => format!("Message {n} is already deleted"),
        }
    }
}

impl Maildrop {
    pub(crate) fn new(uid_validity: u32, messages: &[MessageMeta]) -> Self {
        Maildrop {
            uid_validity,
            entries: messages
                .iter()
                .map(|m| Entry {
                    uid: m.uid,
                    size: m.size,
                    seen: m.flags.contains(SEEN),
                    deleted: false,
                })
                .collect(),
        }
    }

    /// The message numbered `n` (1-based) unless it is out of range or marked deleted.
    pub(crate) fn get(&self, n: u32) -> Result<&Entry, NoMessage> {
        let i = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .ok_or(NoMessage::NoSuch)?;
        match self.entries.get(i) {
            None => Err(NoMessage::NoSuch),
            Some(e) if e.deleted => Err(NoMessage::Deleted),
            Some(e) => Ok(e),
        }
    }

    pub(crate) fn get_mut(&mut self, n: u32) -> Result<&mut Entry, NoMessage> {
        self.get(n)?;
        let i = n as usize - 1;
        self.entries.get_mut(i).ok_or(NoMessage::NoSuch)
    }

    /// Messages not marked deleted, and their octets (STAT).
    pub(crate) fn stat(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(n, size), (_, e)| {
            (n + 1, size.saturating_add(e.size))
        })
    }

    /// `(number, entry)` of every message not marked deleted.
    pub(crate) fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.deleted)
            .map(|(i, e)| (i + 1, e))
    }

    /// The UIDs marked deleted, increasing.
    pub(crate) fn marked(&self) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|e| e.deleted)
            .map(|e| e.uid)
            .collect()
    }

    /// RSET: every mark removed.
    pub(crate) fn reset(&mut self) {
        for e in &mut self.entries {
            e.deleted = false;
        }
    }

    /// The unique-id listing value of a message (RFC 1939 §7: 1 to 70 characters in
    /// 0x21..=0x7E): UIDVALIDITY and UID, 8 upper-case hex digits each. The pair never names
    /// another message of the mailbox, in this session or any later one.
    pub(crate) fn uidl(&self, entry: &Entry) -> String {
        uidl(self.uid_validity, entry.uid)
    }
}

/// See [`Maildrop::uidl`].
pub(crate) fn uidl(uid_validity: u32, uid: u32) -> String {
    format!("{uid_validity:08X}{uid:08X}")
}

/// Appends one line of a multi-line response: byte-stuffed (a leading `.` doubled, RFC 1939
/// §3) and ended with CRLF. `line` is without its line ending.
fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    if line.first() == Some(&b'.') {
        out.push(b'.');
    }
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// A message (all of it, or for `TOP` its headers and first body lines) encoded as the lines
/// of a multi-line response, without the terminating `.`, a chunk at a time.
///
/// Lines are split at LF with one CR before it removed, then sent with CRLF: a message stored
/// with CRLF goes out unchanged but for byte-stuffing; a bare LF becomes CRLF; a lone CR stays
/// as it is; a last line without a line ending gets CRLF.
pub(crate) struct Encoder<'a> {
    rest: &'a [u8],
    /// `Some(n)`: `TOP`, `n` body lines.
    body_lines: Option<u64>,
    in_body: bool,
    body_sent: u64,
}

impl<'a> Encoder<'a> {
    pub(crate) fn new(message: &'a [u8], body_lines: Option<u64>) -> Self {
        Encoder {
            rest: message,
            body_lines,
            in_body: false,
            body_sent: 0,
        }
    }

    fn next_line(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match self.rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &[][..]),
        };
        self.rest = rest;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// Appends lines to `out` until it holds at least `chunk` octets or the message is done;
    /// returns whether it is done.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, chunk: usize) -> bool {
        while out.len() < chunk {
            let Some(line) = self.next_line() else {
                return true;
            };
            if self.in_body
                && let Some(limit) = self.body_lines
            {
                if self.body_sent >= limit {
                    self.rest = &[];
                    return true;
                }
                self.body_sent += 1;
            }
            push_line(out, line);
            if !self.in_body && line.is_empty() {
                self.in_body = true;
            }
        }
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(message: &[u8], body_lines: Option<u64>) -> Vec<u8> {
        let mut encoder = Encoder::new(message, body_lines);
        let mut all = Vec::new();
        let mut out = Vec::new();
        loop {
            let done = encoder.fill(&mut out, 7);
            all.append(&mut out);
            if done {
                return all;
            }
        }
    }

    #[test]
    fn crlf_messages_are_sent_unchanged() {
        let m = b"Subject: x\r\n\r\nline 1\r\nline 2\r\n";
        assert_eq!(encoded(m, None), m);
    }

    #[test]
    fn dots_are_stuffed() {
        let m = b"Subject: x\r\n\r\n.\r\n..x\r\n.hidden\r\nnot.here\r\n";
        assert_eq!(
            encoded(m, None),
            b"Subject: x\r\n\r\n..\r\n...x\r\n..hidden\r\nnot.here\r\n"
        );
    }

    #[test]
    fn bare_lf_becomes_crlf_and_a_last_line_is_ended() {
        assert_eq!(encoded(b"a\nb\r\nc", None), b"a\r\nb\r\nc\r\n");
        assert_eq!(encoded(b"a\r\r\nb\rc\n", None), b"a\r\r\nb\rc\r\n");
        assert_eq!(encoded(b"", None), b"");
        assert_eq!(encoded(b"\n", None), b"\r\n");
        assert_eq!(encoded(b"\r\n\r\n", None), b"\r\n\r\n");
    }

    #[test]
    fn top_sends_headers_and_n_body_lines() {
        let m = b"A: 1\r\nB: 2\r\n\r\none\r\n.two\r\nthree\r\n";
        assert_eq!(encoded(m, Some(0)), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(encoded(m, Some(2)), b"A: 1\r\nB: 2\r\n\r\none\r\n..two\r\n");
        assert_eq!(encoded(m, Some(u64::MAX)), encoded(m, None));
        // No blank line: all headers.
        assert_eq!(encoded(b"A: 1\r\nB: 2", Some(0)), b"A: 1\r\nB: 2\r\n");
        // Body lines that are empty count as lines.
        assert_eq!(
            encoded(b"A: 1\n\n\n\nx\n", Some(2)),
            b"A: 1\r\n\r\n\r\n\r\n"
        );
    }

    #[test]
    fn uidl_is_16_hex_digits_from_validity_and_uid() {
        assert_eq!(uidl(1, 2), "0000000100000002");
        assert_eq!(uidl(0xDEADBEEF, u32::MAX), "DEADBEEFFFFFFFFF");
        assert_ne!(uidl(1, 0x10), uidl(0x10, 1));
    }

    #[test]
    fn numbers_and_marks() {
        let meta = |uid, size| MessageMeta {
            uid,
            flags: Default::default(),
            size,
            internal_date: chrono::DateTime::UNIX_EPOCH,
            origin: pec_ports::mailstore::Origin::Delivered,
        };
        let mut drop = Maildrop::new(7, &[meta(3, 10), meta(5, 20), meta(9, 30)]);
        assert_eq!(drop.stat(), (3, 60));
        assert_eq!(drop.get(0), Err(NoMessage::NoSuch));
        assert_eq!(drop.get(4), Err(NoMessage::NoSuch));
        assert_eq!(drop.get(u32::MAX), Err(NoMessage::NoSuch));
        assert_eq!(drop.get(2).map(|e| e.uid), Ok(5));
        drop.get_mut(2).unwrap().deleted = true;
        assert_eq!(drop.get(2), Err(NoMessage::Deleted));
        assert_eq!(drop.stat(), (2, 40));
        assert_eq!(
            drop.live().map(|(n, e)| (n, e.uid)).collect::<Vec<_>>(),
            [(1, 3), (3, 9)]
        );
        assert_eq!(drop.marked(), [5]);
        drop.reset();
        assert_eq!(drop.stat(), (3, 60));
        assert!(drop.marked().is_empty());
    }
}
