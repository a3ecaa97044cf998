//! SEARCH: the criteria of RFC 9051 §6.4.4 evaluated over the store's metadata and bytes.

use imap_next::imap_types::search::SearchKey;
use mail_parser::MessageParser;
use pec_ports::mailstore::MessageMeta;

use crate::selected::Selected;

/// One message as SEARCH sees it.
pub(crate) struct Candidate<'a> {
    pub meta: &'a MessageMeta,
    /// Its bytes, when the criteria need them ([`needs_bytes`]).
    pub raw: Option<&'a [u8]>,
}

/// Whether any criterion needs the message bytes.
pub(crate) fn needs_bytes(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().any(|k| match k {
        SearchKey::And(keys) => needs_bytes(keys.as_ref()),
        SearchKey::Not(k) => needs_bytes(std::slice::from_ref(k)),
        SearchKey::Or(a, b) => needs_bytes(&[(**a).clone(), (**b).clone()]),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => true,
        _ => false,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    let needle = needle.to_ascii_lowercase();
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(&needle))
}

fn header_contains(raw: &[u8], name: &str, needle: &[u8]) -> bool {
    let Some(m) = MessageParser::default().parse_headers(raw) else {
        return false;
    };
    m.headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .any(|h| {
            let start = h.offset_start() as usize;
            let end = (h.offset_end() as usize).min(raw.len());
            raw.get(start..end).is_some_and(|v| contains(v, needle))
                || h.value()
                    .as_text()
                    .is_some_and(|t| contains(t.as_bytes(), needle))
        })
}

fn sent_date(raw: &[u8]) -> Option<chrono::NaiveDate> {
    let m = MessageParser::default().parse_headers(raw)?;
    let d = m.date()?;
    chrono::NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
}

/// Whether `c` (sequence number `seq`) matches every key in `keys`.
pub(crate) fn matches(keys: &[SearchKey<'_>], c: &Candidate<'_>, seq: u32, sel: &Selected) -> bool {
    keys.iter().all(|k| matches_one(k, c, seq, sel))
}

fn matches_one(key: &SearchKey<'_>, c: &Candidate<'_>, seq: u32, sel: &Selected) -> bool {
    let flag = |f: &str| c.meta.flags.contains(f);
    let raw = c.raw.unwrap_or_default();
    let date = c.meta.internal_date.date_naive();
    match key {
        SearchKey::All => true,
        SearchKey::And(keys) => matches(keys.as_ref(), c, seq, sel),
        SearchKey::Not(k) => !matches_one(k, c, seq, sel),
        SearchKey::Or(a, b) => matches_one(a, c, seq, sel) || matches_one(b, c, seq, sel),
        SearchKey::SequenceSet(set) => sel.resolve(set, false).contains(&c.meta.uid),
        SearchKey::Uid(set) => sel.resolve(set, true).contains(&c.meta.uid),
        SearchKey::Answered => flag("\\Answered"),
        SearchKey::Unanswered => !flag("\\Answered"),
        SearchKey::Deleted => flag("\\Deleted"),
        SearchKey::Undeleted => !flag("\\Deleted"),
        SearchKey::Draft => flag("\\Draft"),
        SearchKey::Undraft => !flag("\\Draft"),
        SearchKey::Flagged => flag("\\Flagged"),
        SearchKey::Unflagged => !flag("\\Flagged"),
        SearchKey::Seen | SearchKey::Old => flag("\\Seen") || matches!(key, SearchKey::Old),
        SearchKey::Unseen => !flag("\\Seen"),
        // No \Recent in this server (it is gone from IMAP4rev2).
        SearchKey::Recent => false,
        SearchKey::New => false,
        SearchKey::Keyword(k) => flag(k.inner()),
        SearchKey::Unkeyword(k) => !flag(k.inner()),
        SearchKey::Larger(n) => c.meta.size > u64::from(*n),
        SearchKey::Smaller(n) => c.meta.size < u64::from(*n),
        SearchKey::Before(d) => date < *d.as_ref(),
        SearchKey::On(d) => date == *d.as_ref(),
        SearchKey::Since(d) => date >= *d.as_ref(),
        SearchKey::SentBefore(d) => sent_date(raw).is_some_and(|s| s < *d.as_ref()),
        SearchKey::SentOn(d) => sent_date(raw).is_some_and(|s| s == *d.as_ref()),
        SearchKey::SentSince(d) => sent_date(raw).is_some_and(|s| s >= *d.as_ref()),
        SearchKey::From(s) => header_contains(raw, "From", s.as_ref()),
        SearchKey::To(s) => header_contains(raw, "To", s.as_ref()),
        SearchKey::Cc(s) => header_contains(raw, "Cc", s.as_ref()),
        SearchKey::Bcc(s) => header_contains(raw, "Bcc", s.as_ref()),
        SearchKey::Subject(s) => header_contains(raw, "Subject", s.as_ref()),
        SearchKey::Header(name, s) => {
            std::str::from_utf8(name.as_ref()).is_ok_and(|n| header_contains(raw, n, s.as_ref()))
        }
        SearchKey::Body(s) => {
            let body = MessageParser::default()
                .parse(raw)
                .map(|m| m.root_part().raw_body_offset() as usize)
                .unwrap_or(0);
            contains(raw.get(body..).unwrap_or_default(), s.as_ref())
        }
        SearchKey::Text(s) => contains(raw, s.as_ref()),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
