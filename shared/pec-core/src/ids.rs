//! Identifiers: the PEC `identificativo`, Message-IDs and MIME boundaries.
//!
//! Nothing here is random or reads the clock: the caller injects an [`IdSource`] (production:
//! random or ULID tokens; tests: [`SequentialIds`]) and the instant.
//!
//! # The identificativo
//!
//! `YYYYMMDDhhmmssmmm.<token>@<provider domain>`, the timestamp in **UTC** with milliseconds.
//! Real providers use forms like `opec288.20181113163926.01838.310.1.63@pec.aruba.it`; ours puts
//! the timestamp first so that byte order is chronological order, and uses UTC so that the order
//! survives the autumn DST change (local time repeats an hour). The token makes it unique: the
//! caller guarantees that tokens never repeat within a millisecond for the same domain.

use chrono::{DateTime, Utc};

/// A source of fresh unique tokens (`[A-Za-z0-9-]`, 1 to 64 characters).
pub trait IdSource {
    /// The next token. Implementations must never return the same token twice for a provider.
    fn next_token(&mut self) -> String;
}

/// A deterministic [`IdSource`] for tests and golden files: `<prefix>0001`, `<prefix>0002`, ...
#[derive(Debug, Clone)]
pub struct SequentialIds {
    prefix: String,
    next: u64,
}

impl SequentialIds {
    /// Tokens `<prefix>0001`, `<prefix>0002`, ... (`prefix` must be `[A-Za-z0-9-]*`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            next: 1,
        }
    }
}

impl IdSource for SequentialIds {
    fn next_token(&mut self) -> String {
        let t = format!("{}{:04}", self.prefix, self.next);
        self.next += 1;
        t
    }
}

/// Why an identifier could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The token is empty, too long or has characters outside `[A-Za-z0-9-]`.
    #[error("invalid id token {0:?}: use 1 to 64 characters from [A-Za-z0-9-]")]
    BadToken(String),
    /// The domain is not a plausible DNS name.
    #[error("invalid provider domain {0:?}")]
    BadDomain(String),
}

/// Check a token from an [`IdSource`].
pub fn check_token(token: &str) -> Result<(), IdError> {
    if token.is_empty()
        || token.len() > 64
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(IdError::BadToken(token.to_string()));
    }
    Ok(())
}

/// Whether `domain` is a plausible DNS name (LDH labels, 1..=63 each, at most 253 total).
pub fn is_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The identificativo `YYYYMMDDhhmmssmmm.<token>@<domain>` (UTC; see the module documentation).
pub fn identificativo(now: DateTime<Utc>, token: &str, domain: &str) -> Result<String, IdError> {
    check_token(token)?;
    if !is_domain(domain) {
        return Err(IdError::BadDomain(domain.to_string()));
    }
    Ok(format!(
        "{}.{token}@{domain}",
        now.format("%Y%m%d%H%M%S%3f")
    ))
}

/// A `Message-ID` value (angle brackets included) for a message we generate.
pub fn message_id(now: DateTime<Utc>, token: &str, domain: &str) -> Result<String, IdError> {
    identificativo(now, token, domain).map(|id| format!("<{id}>"))
}

/// A MIME boundary made from a token. The `=_` makes it impossible in base64 and
/// quoted-printable text, and builders check that it does not occur in embedded content.
pub fn boundary(token: &str) -> String {
    format!("----=_PEC_{token}")
}

/// A boundary from `ids` that occurs nowhere in `contents` (tries up to 16 tokens; a repeated
/// collision can only come from a broken [`IdSource`], reported as [`IdError::BadToken`]).
pub fn fresh_boundary(ids: &mut dyn IdSource, contents: &[&[u8]]) -> Result<String, IdError> {
    let mut last = String::new();
    for _ in 0..16 {
        let token = ids.next_token();
        check_token(&token)?;
        let b = boundary(&token);
        if !contents.iter().any(|c| contains(c, b.as_bytes())) {
            return Ok(b);
        }
        last = token;
    }
    Err(IdError::BadToken(last))
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut i = 0;
    while let Some(pos) = haystack
        .get(i..)
        .and_then(|h| h.iter().position(|&b| b == first))
    {
        let start = i + pos;
        if haystack
            .get(start + 1..start + 1 + rest.len())
            .is_some_and(|w| w == rest)
        {
            return true;
        }
        i = start + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identificativo_is_sortable_utc() {
        let t = DateTime::parse_from_rfc3339("2026-10-25T01:30:00.042Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            identificativo(t, "a1", "pec.example.it").unwrap(),
            "20261025013000042.a1@pec.example.it"
        );
        let later = t + chrono::Duration::milliseconds(1);
        assert!(
            identificativo(later, "a0", "x.it").unwrap() > identificativo(t, "zz", "x.it").unwrap()
        );
        assert!(identificativo(t, "a.b", "x.it").is_err());
        assert!(identificativo(t, "", "x.it").is_err());
        assert!(identificativo(t, "a", "x..it").is_err());
    }

    #[test]
    fn boundaries_avoid_content() {
        let mut ids = SequentialIds::new("t");
        let content = b"xx ----=_PEC_t0001 yy".to_vec();
        assert_eq!(
            fresh_boundary(&mut ids, &[&content]).unwrap(),
            "----=_PEC_t0002"
        );
        assert!(contains(b"abcabd", b"abd"));
        assert!(!contains(b"abcab", b"abd"));
        assert!(contains(b"", b""));
    }
}

/// A deterministic [`IdSource`] seeded by a stable name (an S3 key, a submission id and a
/// purpose): the same seed always yields the same tokens, so a step that rebuilds a message after
/// a retry produces it byte for byte again. Tokens: `<tag>-<16 hex of SHA-256(seed)>-<n>`.
#[derive(Debug, Clone)]
pub struct SeededIds {
    prefix: String,
    next: u32,
}

impl SeededIds {
    /// Tokens for `seed`; `tag` (`[A-Za-z0-9]`, short) makes them readable.
    pub fn new(tag: &str, seed: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(seed.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect();
        Self {
            prefix: format!("{tag}-{hex}-"),
            next: 1,
        }
    }
}

impl IdSource for SeededIds {
    fn next_token(&mut self) -> String {
        let token = format!("{}{}", self.prefix, self.next);
        self.next += 1;
        token
    }
}
