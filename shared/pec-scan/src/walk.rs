//! The walker: every MIME part of a message after transfer decoding, recursing into
//! `message/*` parts and zip archives, under the hard bounds of [`Limits`]. Pure: bytes in,
//! items out, no IO (the clock is read only to enforce the time bound).

use std::io::{Cursor, Read};
use std::time::Instant;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

use crate::item::{Item, PartPath, Segment};
use crate::limits::Limits;
use crate::verdict::{Bound, Unscannable};

/// What the walk produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Every leaf and archive entry (entries before their container), in message order.
    pub items: Vec<Item>,
    /// The bound that ended the walk early, if one did. The items before it are complete.
    pub stopped: Option<Unscannable>,
    /// Bytes produced by decoding and decompressing.
    pub expanded_bytes: u64,
}

/// Walks `raw` (an RFC 5322 message) under `limits`, stopping at `deadline`.
///
/// Never panics on input: a panic inside the MIME or zip parsers is caught and reported as
/// [`Bound::Internal`]. Deep structures recurse at most [`Limits::max_depth`] levels here, but
/// the MIME parser builds its own tree first: run this on a thread with a generous stack (the
/// chain uses 64 MiB) when the input is untrusted.
pub fn walk(raw: &[u8], limits: &Limits, deadline: Instant) -> Walk {
    let mut w = Walker {
        limits,
        deadline,
        items: Vec::new(),
        expanded: 0,
        entries: 0,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.message(raw, &PartPath::root(), 0)
    }));
    let stopped = match result {
        Ok(Ok(())) => None,
        Ok(Err(stop)) => Some(stop),
        Err(_) => Some(Unscannable {
            bound: Bound::Internal,
            reason: "the MIME or archive parser failed on this input".into(),
            part: None,
        }),
    };
    Walk {
        items: w.items,
        stopped,
        expanded_bytes: w.expanded,
    }
}

struct Walker<'l> {
    limits: &'l Limits,
    deadline: Instant,
    items: Vec<Item>,
    expanded: u64,
    entries: u32,
}

type Step = Result<(), Unscannable>;

fn stop(bound: Bound, reason: String, part: &PartPath) -> Unscannable {
    Unscannable {
        bound,
        reason,
        part: Some(part.to_string()),
    }
}

/// What a leaf is, besides its bytes.
struct Meta {
    content_type: String,
    filename: String,
    in_archive: bool,
}

const CHUNK: usize = 64 * 1024;

impl Walker<'_> {
    fn check_time(&self, at: &PartPath) -> Step {
        if Instant::now() >= self.deadline {
            return Err(stop(
                Bound::Time,
                format!(
                    "time limit of {} ms reached while extracting",
                    self.limits.time_limit_ms
                ),
                at,
            ));
        }
        Ok(())
    }

    fn check_depth(&self, depth: u32, at: &PartPath) -> Step {
        if depth > self.limits.max_depth {
            return Err(stop(
                Bound::Depth,
                format!("more than {} nested containers", self.limits.max_depth),
                at,
            ));
        }
        Ok(())
    }

    fn count_entries(&mut self, n: u64, at: &PartPath) -> Step {
        let total = u64::from(self.entries).saturating_add(n);
        if total > u64::from(self.limits.max_entries) {
            return Err(stop(
                Bound::Entries,
                format!(
                    "more than {} parts and archive entries",
                    self.limits.max_entries
                ),
                at,
            ));
        }
        self.entries = u32::try_from(total).unwrap_or(u32::MAX);
        Ok(())
    }

    fn reserve(&mut self, n: u64, at: &PartPath) -> Step {
        let total = self.expanded.saturating_add(n);
        if total > self.limits.max_expanded_bytes {
            return Err(stop(
                Bound::ExpandedSize,
                format!(
                    "more than {} bytes once decoded and decompressed",
                    self.limits.max_expanded_bytes
                ),
                at,
            ));
        }
        self.expanded = total;
        Ok(())
    }

    /// A whole message at `path` (the root, or the content of a `message/*` part).
    fn message(&mut self, raw: &[u8], path: &PartPath, depth: u32) -> Step {
        self.check_depth(depth, path)?;
        self.check_time(path)?;
        // The MIME parser builds its whole tree before we see it: bound the number of parts it
        // can create (every multipart or message/* part needs a Content-Type header) first.
        let declared = count_ignore_case(raw, b"content-type");
        let room = u64::from(self.limits.max_entries.saturating_sub(self.entries));
        if declared > room {
            return Err(stop(
                Bound::Entries,
                format!(
                    "{declared} Content-Type headers: more than {} parts",
                    self.limits.max_entries
                ),
                path,
            ));
        }
        let parsed = if looks_like_message(raw) {
            parse(raw)
        } else {
            None
        };
        match parsed {
            Some(message) if !message.parts.is_empty() => self.node(&message, 0, path, depth, true),
            // Not a message at all: scan the bytes as they are.
            _ => {
                let at = if path.segments().is_empty() {
                    PartPath::root()
                } else {
                    path.child(Segment::Mime(1))
                };
                self.count_entries(1, &at)?;
                self.leaf(
                    raw.to_vec(),
                    at,
                    depth,
                    Meta {
                        content_type: String::new(),
                        filename: String::new(),
                        in_archive: false,
                    },
                )
            }
        }
    }

    /// Part `id` of `message`. `root` says whether it is the message's top part (a single-part
    /// message's body is numbered `1` below the message's own path, as in IMAP).
    fn node(
        &mut self,
        message: &Message<'_>,
        id: usize,
        path: &PartPath,
        depth: u32,
        root: bool,
    ) -> Step {
        self.check_time(path)?;
        self.count_entries(1, path)?;
        let Some(part) = message.parts.get(id) else {
            return Ok(());
        };
        match &part.body {
            PartType::Multipart(children) => {
                self.check_depth(depth + 1, path)?;
                for (n, child) in children.iter().enumerate() {
                    let at = path.child(Segment::Mime(u32::try_from(n + 1).unwrap_or(u32::MAX)));
                    self.node(message, *child as usize, &at, depth + 1, false)?;
                }
                Ok(())
            }
            PartType::Message(nested) if !nested.parts.is_empty() => {
                let at = if root {
                    path.child(Segment::Mime(1))
                } else {
                    path.clone()
                };
                self.check_depth(depth + 1, &at)?;
                self.node(nested, 0, &at, depth + 1, true)
            }
            _ => {
                let at = if root {
                    path.child(Segment::Mime(1))
                } else {
                    path.clone()
                };
                let content_type = mime_type(part);
                let data = leaf_bytes(message, part);
                // A message/* part the MIME parser left undecoded (nested encodings beyond its
                // own depth, or parsed as text): parse it here, under our depth bound.
                if content_type.starts_with("message/") && is_embedded_message(&content_type) {
                    self.reserve(data.len() as u64, &at)?;
                    return self.message(&data, &at, depth + 1);
                }
                let filename = part.attachment_name().unwrap_or_default().to_string();
                self.reserve(data.len() as u64, &at)?;
                self.leaf(
                    data,
                    at,
                    depth,
                    Meta {
                        content_type,
                        filename,
                        in_archive: false,
                    },
                )
            }
        }
    }

    /// Records a leaf; archives are expanded first, so their entries come before them.
    fn leaf(&mut self, data: Vec<u8>, path: PartPath, depth: u32, meta: Meta) -> Step {
        match zip_kind(&data) {
            ZipKind::Zip => self.archive(&data, &path, depth + 1, true)?,
            ZipKind::Trailing => self.archive(&data, &path, depth + 1, false)?,
            ZipKind::No => {}
        }
        self.items.push(Item {
            path,
            content_type: meta.content_type,
            filename: meta.filename,
            in_archive: meta.in_archive,
            depth,
            data,
        });
        Ok(())
    }

    /// The entries of a zip archive at `path`. `strict`: the data starts like a zip, so a zip
    /// that cannot be opened is unscannable; otherwise (a zip directory found only at the end,
    /// e.g. appended to another file) a failure just means "not an archive".
    fn archive(&mut self, data: &[u8], path: &PartPath, depth: u32, strict: bool) -> Step {
        self.check_depth(depth, path)?;
        self.check_time(path)?;
        // Bound the entry count from the end-of-central-directory record before the zip reader
        // loads the whole central directory.
        if let Some(declared) = eocd_entries(data) {
            let room = u64::from(self.limits.max_entries.saturating_sub(self.entries));
            if declared > room {
                return Err(stop(
                    Bound::Entries,
                    format!(
                        "archive declares {declared} entries: more than {} parts and entries",
                        self.limits.max_entries
                    ),
                    path,
                ));
            }
        }
        let mut zip = match zip::ZipArchive::new(Cursor::new(data)) {
            Ok(zip) => zip,
            Err(e) if strict => {
                return Err(stop(
                    Bound::CorruptArchive,
                    format!("not a readable zip: {e}"),
                    path,
                ));
            }
            Err(_) => return Ok(()),
        };
        for index in 0..zip.len() {
            self.check_time(path)?;
            let entry = match zip.by_index(index) {
                Ok(entry) => entry,
                Err(e) => {
                    let at = path.child(Segment::Entry(format!("#{index}")));
                    return Err(zip_error(e, &at));
                }
            };
            let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
            let at = path.child(Segment::Entry(name.clone()));
            self.count_entries(1, &at)?;
            if entry.is_dir() {
                continue;
            }
            if entry.encrypted() {
                return Err(stop(
                    Bound::Encrypted,
                    "encrypted archive entry".into(),
                    &at,
                ));
            }
            let out = self.read_entry(entry, &at)?;
            self.leaf(
                out,
                at,
                depth,
                Meta {
                    content_type: String::new(),
                    filename: name,
                    in_archive: true,
                },
            )?;
        }
        Ok(())
    }

    /// Decompresses one entry, chunk by chunk, charging every chunk to the expanded-size bound
    /// and checking the clock: declared sizes are not trusted.
    fn read_entry(&mut self, mut entry: impl Read, at: &PartPath) -> Result<Vec<u8>, Unscannable> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            self.check_time(at)?;
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    return Err(stop(
                        Bound::UnsupportedCompression,
                        format!("archive entry cannot be decompressed: {e}"),
                        at,
                    ));
                }
                Err(e) => {
                    return Err(stop(
                        Bound::CorruptArchive,
                        format!("archive entry cannot be decompressed: {e}"),
                        at,
                    ));
                }
            };
            self.reserve(n as u64, at)?;
            out.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        Ok(out)
    }
}

fn zip_error(e: zip::result::ZipError, at: &PartPath) -> Unscannable {
    use zip::result::ZipError;
    match e {
        ZipError::UnsupportedArchive(msg) if msg == ZipError::PASSWORD_REQUIRED => {
            stop(Bound::Encrypted, "encrypted archive entry".into(), at)
        }
        ZipError::UnsupportedArchive(msg) => stop(
            Bound::UnsupportedCompression,
            format!("unsupported archive feature: {msg}"),
            at,
        ),
        ZipError::CompressionMethodNotSupported(method) => stop(
            Bound::UnsupportedCompression,
            format!("compression method {method} is not supported"),
            at,
        ),
        other => stop(
            Bound::CorruptArchive,
            format!("archive entry cannot be read: {other}"),
            at,
        ),
    }
}

/// The MIME parser, with its debug assertions (reachable from hostile input, see pec-core's
/// `mime.rs`) turned into "unreadable" instead of a panic.
fn parse(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        MessageParser::default().parse(raw)
    }))
    .ok()
    .flatten()
}

/// Whether `raw` starts like an RFC 5322 message: a header field (`Name:`, printable ASCII
/// without spaces in the name) or an mbox `From ` line. Anything else (a bare zip, a PDF) is
/// scanned as bytes instead of being read as a headerless message by the lenient MIME parser.
fn looks_like_message(raw: &[u8]) -> bool {
    if raw.starts_with(b"From ") {
        return true;
    }
    let name_len = raw
        .iter()
        .take_while(|b| b.is_ascii_graphic() && **b != b':')
        .count();
    name_len > 0 && raw.get(name_len) == Some(&b':')
}

/// `type/subtype`, lower case; `""` when there is no Content-Type.
fn mime_type(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => String::new(),
    }
}

fn is_embedded_message(content_type: &str) -> bool {
    matches!(
        content_type,
        "message/rfc822" | "message/global" | "message/news"
    )
}

/// The part's body after transfer decoding only. Binary parts come decoded from the parser;
/// text parts are decoded again from the raw bytes, because the parser also converts their
/// charset to UTF-8 (replacing invalid sequences), which would alter a binary disguised as text.
fn leaf_bytes(message: &Message<'_>, part: &MessagePart<'_>) -> Vec<u8> {
    if let PartType::Binary(bytes) | PartType::InlineBinary(bytes) = &part.body
        && !part.is_encoding_problem
    {
        return bytes.to_vec();
    }
    let raw = message
        .raw_message()
        .get(part.raw_body_offset() as usize..part.raw_end_offset() as usize);
    let Some(raw) = raw else {
        return part.contents().to_vec();
    };
    let encoding = part
        .content_transfer_encoding()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "base64" => lenient_base64(raw),
        "quoted-printable" => quoted_printable_decode(raw).unwrap_or_else(|| raw.to_vec()),
        _ => raw.to_vec(),
    }
}

/// Base64 as lenient mail clients decode it: everything outside the alphabet is skipped, and
/// decoding stops at the first padding character.
fn lenient_base64(raw: &[u8]) -> Vec<u8> {
    let clean: Vec<u8> = raw
        .iter()
        .copied()
        .take_while(|b| *b != b'=')
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .collect();
    // A dangling sixth bit group (length % 4 == 1) carries no whole byte.
    let usable = clean.len() - usize::from(clean.len() % 4 == 1);
    base64_decode(clean.get(..usable).unwrap_or_default()).unwrap_or_default()
}

enum ZipKind {
    /// Starts with a local file header (or is an empty zip).
    Zip,
    /// Ends with a zip directory (self-extractors, polyglots, files with a zip appended).
    Trailing,
    No,
}

fn zip_kind(data: &[u8]) -> ZipKind {
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        ZipKind::Zip
    } else if eocd_offset(data).is_some() {
        ZipKind::Trailing
    } else {
        ZipKind::No
    }
}

/// Offset of the end-of-central-directory record (searched in the last 64 KiB + 22 bytes).
fn eocd_offset(data: &[u8]) -> Option<usize> {
    const EOCD_LEN: usize = 22;
    if data.len() < EOCD_LEN {
        return None;
    }
    let earliest = data.len().saturating_sub(EOCD_LEN + 0xFFFF);
    (earliest..=data.len() - EOCD_LEN)
        .rev()
        .find(|&i| data.get(i..i + 4) == Some(b"PK\x05\x06"))
}

/// The total entry count an end-of-central-directory record declares (0xFFFF means zip64:
/// then the zip reader's own count is bounded by the data size and checked entry by entry).
fn eocd_entries(data: &[u8]) -> Option<u64> {
    let at = eocd_offset(data)?;
    let bytes = data.get(at + 10..at + 12)?;
    let n = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]);
    (n != 0xFFFF).then_some(u64::from(n))
}

/// Occurrences of `needle` (ASCII, lower case) in `haystack`, ignoring ASCII case.
fn count_ignore_case(haystack: &[u8], needle: &[u8]) -> u64 {
    let Some((&first, rest)) = needle.split_first() else {
        return 0;
    };
    let mut count = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if haystack
            .get(i)
            .is_some_and(|b| b.to_ascii_lowercase() == first)
            && haystack
                .get(i + 1..i + needle.len())
                .is_some_and(|tail| tail.eq_ignore_ascii_case(rest))
        {
            count += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_base64_skips_noise_and_stops_at_padding() {
        assert_eq!(lenient_base64(b"aGVs\r\nbG8=\r\n"), b"hello");
        assert_eq!(lenient_base64(b"aGVs bG8*"), b"hello");
        assert_eq!(lenient_base64(b"aGVsbG8=garbage"), b"hello");
        assert_eq!(lenient_base64(b"a"), b"");
    }

    #[test]
    fn recognises_messages() {
        assert!(looks_like_message(b"Subject: x\r\n\r\n"));
        assert!(looks_like_message(b"From a@b Mon Nov 23 10:00:00 2026\n"));
        assert!(!looks_like_message(b"PK\x03\x04\x14\x00"));
        assert!(!looks_like_message(b"%PDF-1.7\n"));
        assert!(!looks_like_message(b": no name\r\n"));
        assert!(!looks_like_message(b""));
    }

    #[test]
    fn counts_headers_ignoring_case() {
        assert_eq!(
            count_ignore_case(
                b"Content-Type: a\r\nCONTENT-TYPE: b\r\ncontent-typ",
                b"content-type"
            ),
            2
        );
        assert_eq!(count_ignore_case(b"", b"content-type"), 0);
    }

    #[test]
    fn finds_the_zip_directory() {
        let mut data = b"MZ not a zip".to_vec();
        assert!(matches!(zip_kind(&data), ZipKind::No));
        data.extend_from_slice(b"PK\x05\x06");
        data.extend_from_slice(&[0; 6]);
        data.extend_from_slice(&3u16.to_le_bytes());
        data.extend_from_slice(&[0; 10]);
        assert!(matches!(zip_kind(&data), ZipKind::Trailing));
        assert_eq!(eocd_entries(&data), Some(3));
    }
}
