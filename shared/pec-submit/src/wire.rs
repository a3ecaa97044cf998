//! Bounded reading from the client: command lines and the `DATA` stream.

/// The longest line RFC 5322 §2.1.1 allows, CRLF excluded.
pub(crate) const MAX_TEXT_LINE: usize = 998;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::budget::Share;

/// The receive buffer's first capacity; it then doubles (up to the size limit, or to the
/// `SIZE` the client declared) as the message grows, each step covered by the budget first.
const FIRST_CAPACITY: usize = 8 * 1024;

/// One command line read (a `Complete` line ended with CRLF).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A complete line, without its CRLF.
    Complete,
    /// The line was longer than the bound: it was read to its end and thrown away.
    TooLong,
    /// The line ended with a lone LF (RFC 5321 §2.3.8: commands end with CRLF); it was read to
    /// its end and is refused, never executed.
    BareLf,
    /// The client closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one line into `out` (cleared first), keeping at most `max` bytes (line end included).
/// Never buffers more than `max` bytes, whatever the client sends.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    out.clear();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if out.len() + take > max {
                too_long = true;
                out.clear();
            } else {
                out.extend_from_slice(&buf[..take]);
            }
        }
        r.consume(take);
        if done {
            if too_long {
                return Ok(Line::TooLong);
            }
            out.pop(); // LF
            if out.pop() != Some(b'\r') {
                out.clear();
                return Ok(Line::BareLf);
            }
            return Ok(Line::Complete);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// A `.` began the line (not yet emitted: it is either stuffing or the end marker).
    Dot,
    /// `.` CR at the start of a line: LF ends the data.
    DotCr,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
}

/// The `DATA` decoder (RFC 5321 §4.1.1.4, §4.5.2): finds the end marker `CRLF.CRLF`, removes
/// dot-stuffing, keeps at most `max` bytes and notes bare CR / bare LF (RFC 5321 §2.3.8).
///
/// Only the exact sequence CR LF `.` CR LF ends the data: `LF.LF` or `CR.CR` are message text
/// (and make the message invalid), so there is no end-of-data ambiguity to smuggle with.
///
/// The buffer grows only once `share` covers it (twice its capacity: the buffer and the copy
/// made to store it, [`crate::budget::data_share`]); when the budget cannot, the decoder drops
/// what it kept, gives the share back and reads on to the end marker keeping nothing
/// (`over_budget`).
#[derive(Debug)]
pub(crate) struct DataDecoder {
    state: State,
    max: usize,
    /// The size the client declared at `MAIL` (`SIZE=`, at most `max`), 0 if none: the buffer
    /// grows straight to it rather than beyond.
    hint: usize,
    /// This transaction's part of the server's data budget.
    share: Share,
    /// The unstuffed message, empty once `oversized` or `over_budget`.
    pub raw: Vec<u8>,
    /// Unstuffed bytes seen, including the ones not kept.
    pub total: usize,
    /// More than `max` bytes: `raw` was dropped and nothing more is kept.
    pub oversized: bool,
    /// The data budget could not cover the message: `raw` was dropped, the share given back,
    /// and nothing more is kept.
    pub over_budget: bool,
    /// A CR not followed by LF, or an LF not preceded by CR, was seen.
    pub bare_line_end: bool,
    /// A line longer than [`MAX_TEXT_LINE`] octets (CRLF excluded) was seen.
    pub long_line: bool,
    /// Octets of the current line so far (CR excluded).
    line_len: usize,
}

impl DataDecoder {
    /// A decoder keeping at most `max` bytes, growing its buffer within `share`; `hint` is the
    /// declared `SIZE` (0: none).
    pub fn new(max: usize, share: Share, hint: usize) -> Self {
        Self {
            state: State::LineStart,
            max,
            hint: hint.min(max),
            share,
            raw: Vec::new(),
            total: 0,
            oversized: false,
            over_budget: false,
            bare_line_end: false,
            long_line: false,
            line_len: 0,
        }
    }

    /// The message kept and the share that covers it (hold it until the copy made to store the
    /// message is gone).
    pub fn into_parts(self) -> (Vec<u8>, Share) {
        (self.raw, self.share)
    }

    /// Drops what was kept and gives its share back.
    fn discard(&mut self) {
        self.raw = Vec::new();
        self.share.release();
    }

    /// Makes room for `more` bytes in `raw`, the budget covering the new capacity first.
    /// `false`: the budget cannot cover it.
    fn make_room(&mut self, more: usize) -> bool {
        let needed = self.raw.len().saturating_add(more);
        let capacity = self.raw.capacity();
        if needed <= capacity {
            return true;
        }
        let mut target = capacity.saturating_mul(2).max(FIRST_CAPACITY);
        if needed <= self.hint {
            target = target.min(self.hint);
        }
        // `needed` is at most `max` here (checked by the caller).
        let target = target.min(self.max).max(needed);
        if !self.share.cover_buffer(target) {
            return false;
        }
        self.raw.reserve_exact(target - self.raw.len());
        // The allocator may hand out more than asked: count what is actually held.
        self.share.cover_buffer(self.raw.capacity())
    }

    fn emit(&mut self, bytes: &[u8]) {
        match bytes.iter().rposition(|&b| b == b'\n') {
            Some(last) => self.line_len = bytes.len() - last - 1,
            None if bytes == b"\r" => {}
            None => self.line_len = self.line_len.saturating_add(bytes.len()),
        }
        if self.line_len > MAX_TEXT_LINE {
            self.long_line = true;
        }
        self.total = self.total.saturating_add(bytes.len());
        if self.oversized {
            return;
        }
        if self.total > self.max {
            self.oversized = true;
            self.discard();
        } else if self.over_budget {
            // Read on to the end marker, keeping nothing.
        } else if self.make_room(bytes.len()) {
            self.raw.extend_from_slice(bytes);
        } else {
            self.over_budget = true;
            self.discard();
        }
    }

    /// Feeds bytes; returns `Some(n)` when the end marker's last byte is `input[n - 1]` (the
    /// rest of `input` belongs to the next command), `None` if more data is needed.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Mid => {
                    // Fast path: copy up to the next CR or LF at once.
                    let run = input[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(input.len() - i);
                    if run > 0 {
                        self.emit(&input[i..i + run]);
                        i += run;
                        continue;
                    }
                    self.emit(&[b]);
                    if b == b'\r' {
                        self.state = State::Cr;
                    } else {
                        // A bare LF does not start a line: a "." after it is text, never
                        // the end marker.
                        self.bare_line_end = true;
                    }
                }
                State::LineStart => match b {
                    b'.' => self.state = State::Dot,
                    b'\r' => {
                        self.emit(&[b]);
                        self.state = State::Cr;
                    }
                    b'\n' => {
                        self.emit(&[b]);
                        self.bare_line_end = true;
                        self.state = State::Mid;
                    }
                    _ => {
                        self.emit(&[b]);
                        self.state = State::Mid;
                    }
                },
                State::Dot => match b {
                    b'\r' => self.state = State::DotCr,
                    // The leading dot is dropped ("..x" → ".x", ".x" → "x").
                    b'\n' => {
                        self.emit(&[b]);
                        self.bare_line_end = true;
                        self.state = State::Mid;
                    }
                    _ => {
                        self.emit(&[b]);
                        self.state = State::Mid;
                    }
                },
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                        return Some(i + 1);
                    }
                    // "." CR x: the dot was stuffing, the CR is bare.
                    self.emit(b"\r");
                    self.bare_line_end = true;
                    self.state = State::Mid;
                    continue; // x again, in Mid
                }
                State::Cr => {
                    if b == b'\n' {
                        self.emit(&[b]);
                        self.state = State::LineStart;
                    } else {
                        self.bare_line_end = true;
                        self.state = State::Mid;
                        continue; // b again, in Mid
                    }
                }
            }
            i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]], max: usize) -> (DataDecoder, Option<Vec<u8>>) {
        decode_within(chunks, max, usize::MAX, 0)
    }

    fn decode_within(
        chunks: &[&[u8]],
        max: usize,
        budget: usize,
        hint: usize,
    ) -> (DataDecoder, Option<Vec<u8>>) {
        let share = crate::budget::DataBudget::new(budget).share();
        let mut d = DataDecoder::new(max, share, hint);
        for (k, c) in chunks.iter().enumerate() {
            if let Some(n) = d.feed(c) {
                let mut rest = c[n..].to_vec();
                for later in &chunks[k + 1..] {
                    rest.extend_from_slice(later);
                }
                return (d, Some(rest));
            }
        }
        (d, None)
    }

    #[test]
    fn unstuffing_and_end() {
        let (d, rest) = decode(&[b"a\r\n..b\r\n.c\r\n\r\n.\r\nQUIT\r\n"], 1000);
        assert_eq!(d.raw, b"a\r\n.b\r\nc\r\n\r\n");
        assert_eq!(rest.unwrap(), b"QUIT\r\n");
        assert!(!d.bare_line_end && !d.oversized);
    }

    #[test]
    fn empty_message_and_split_marker() {
        let (d, rest) = decode(&[b".\r\n"], 10);
        assert_eq!(d.raw, b"");
        assert_eq!(rest.unwrap(), b"");
        // The marker split over every possible chunk boundary.
        let whole: &[u8] = b"x\r\n..\r\n.\r\n";
        for cut in 0..whole.len() {
            let (d, rest) = decode(&[&whole[..cut], &whole[cut..]], 100);
            assert_eq!(d.raw, b"x\r\n.\r\n", "cut {cut}");
            assert_eq!(rest.unwrap(), b"", "cut {cut}");
        }
    }

    #[test]
    fn no_smuggling() {
        // LF.LF and CR.CR and LF.CRLF are not the end.
        let (d, rest) = decode(&[b"a\n.\nb\r.\rc\n.\r\nd\r\n.\r\n"], 1000);
        assert_eq!(rest.unwrap(), b"");
        assert!(d.bare_line_end);
        assert_eq!(d.raw, b"a\n.\nb\r.\rc\n.\r\nd\r\n");
        let (d, rest) = decode(&[b"a\r\n.\rx\r\n.\r\n"], 1000);
        assert!(rest.is_some());
        assert!(d.bare_line_end);
        assert_eq!(d.raw, b"a\r\n\rx\r\n");
    }

    #[test]
    fn size_bound() {
        let (d, rest) = decode(&[b"12345\r\n", b"67890\r\n.\r\n"], 8);
        assert!(rest.is_some());
        assert!(d.oversized);
        assert!(d.raw.is_empty());
        assert_eq!(d.total, 14);
        let (d, _) = decode(&[b"123456\r\n.\r\n"], 8);
        assert!(!d.oversized);
        assert_eq!(d.raw, b"123456\r\n");
    }

    #[test]
    fn the_buffer_grows_within_its_share_and_over_budget_data_is_read_to_the_end() {
        use crate::budget::{DataBudget, data_share};
        let line = [b"x".repeat(98), b"\r\n".to_vec()].concat();
        let body = line.repeat(300); // 30 000 bytes
        let wire = [body.clone(), b".\r\nNOOP\r\n".to_vec()].concat();
        // Enough for the buffer (doubling: 8 KiB, 16 KiB, 32 KiB) and its copy.
        let (d, rest) = decode_within(&[&wire[..]], 1 << 20, data_share(32 * 1024), 0);
        assert_eq!(rest.unwrap(), b"NOOP\r\n");
        assert!(!d.over_budget);
        assert_eq!(d.raw, body);
        assert_eq!(d.raw.capacity(), 32 * 1024);
        assert_eq!(d.share.held(), data_share(32 * 1024));
        // With the declared SIZE, the buffer stops at it.
        let (d, _) = decode_within(&[&wire[..]], 1 << 20, data_share(30_000), 30_000);
        assert!(!d.over_budget);
        assert_eq!(d.raw.capacity(), 30_000);
        // The size limit bounds growth too.
        let (d, _) = decode_within(&[&wire[..]], 30_000, data_share(30_000), 0);
        assert!(!d.oversized && !d.over_budget);
        assert_eq!(d.raw.capacity(), 30_000);
        // Over the budget: nothing kept, the share given back at once, the end still found.
        let budget = DataBudget::new(data_share(16 * 1024));
        let mut d = DataDecoder::new(1 << 20, budget.share(), 0);
        let n = wire
            .chunks(1000)
            .scan(0, |at, c| {
                let r = d.feed(c).map(|n| *at + n);
                *at += c.len();
                Some(r)
            })
            .find_map(|r| r);
        assert_eq!(n, Some(body.len() + 3));
        assert!(d.over_budget && !d.oversized);
        assert!(d.raw.is_empty());
        assert_eq!(d.total, body.len());
        assert_eq!(budget.in_use(), 0);
        // Over the size limit after running out of budget: the size limit is what is reported.
        let (d, rest) = decode_within(&[&wire[..]], 20_000, data_share(8 * 1024), 0);
        assert!(rest.is_some());
        assert!(d.over_budget && d.oversized);
    }

    #[tokio::test]
    async fn lines() {
        let input: &[u8] = b"EHLO x\r\nNOOP\n";
        let mut r = tokio::io::BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut out, 64).await.unwrap(),
            Line::Complete
        );
        assert_eq!(out, b"EHLO x");
        // Issue 11: a lone LF no longer ends a command (it used to be tolerated).
        assert_eq!(read_line(&mut r, &mut out, 64).await.unwrap(), Line::BareLf);
        assert!(out.is_empty());
        assert_eq!(read_line(&mut r, &mut out, 64).await.unwrap(), Line::Eof);

        let long = [b"x".repeat(100), b"\r\nQUIT\r\n".to_vec()].concat();
        let mut r = tokio::io::BufReader::with_capacity(7, &long[..]);
        assert_eq!(
            read_line(&mut r, &mut out, 50).await.unwrap(),
            Line::TooLong
        );
        assert!(out.is_empty());
        assert_eq!(
            read_line(&mut r, &mut out, 50).await.unwrap(),
            Line::Complete
        );
        assert_eq!(out, b"QUIT");
    }

    #[test]
    fn lines_over_998_octets_are_noted() {
        let ok = format!("{}\r\n{}\r\n.\r\n", "a".repeat(998), "b".repeat(10));
        let (d, _) = decode(&[ok.as_bytes()], 1 << 20);
        assert!(!d.long_line);
        let long = format!("x\r\n{}\r\n.\r\n", "a".repeat(999));
        for cut in [1, 500, 1003] {
            let (a, b) = long.as_bytes().split_at(cut);
            let (d, _) = decode(&[a, b], 1 << 20);
            assert!(d.long_line, "cut {cut}");
        }
        // Dot-stuffing is not counted: "." + 998 octets is a 998-octet line.
        let stuffed = format!(".{}\r\n.\r\n", ".".repeat(998));
        assert!(!decode(&[stuffed.as_bytes()], 1 << 20).0.long_line);
    }
}
