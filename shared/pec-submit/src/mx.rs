//! The MX role: the same SMTP engine receiving mail for our domains from other providers and
//! the outside world (issue #21, `docs/design/smtp-relay-and-mx.md` §7).
//!
//! Differences from submission, and only these:
//!
//! | Situation | Reply | Why |
//! |---|---|---|
//! | connect | `220 <host> ESMTP PEC MX ready` | |
//! | `EHLO` | `PIPELINING SIZE 8BITMIME ENHANCEDSTATUSCODES` (+ `STARTTLS` before TLS), never `AUTH` or `CHUNKING` | RFC 2920; an MX authenticates nobody |
//! | `AUTH` | `502 5.5.1` | not offered |
//! | `MAIL FROM:<>` | `250` | bounces are ordinary mail (RFC 5321 §4.5.5) |
//! | `MAIL` from a domain in the provider index, no TLS | `530 5.7.0 Must issue a STARTTLS command first` | PEC between providers travels over TLS (TLS 1.2+: rustls offers nothing older) |
//! | the policy cannot answer (state table, provider index) | `451 4.3.0` | the sender retries; never guess |
//! | `RCPT` outside our domains | `550 5.7.1 Relaying denied` | no open relay: the only sink is `inbound/` |
//! | `RCPT` to an unknown mailbox of ours, ordinary sender | `550 5.1.1` | no backscatter |
//! | `RCPT` to a mailbox of ours not in service, ordinary sender | `550 5.2.1` | |
//! | a repeated `RCPT` (any case) | `250`, kept once | one copy, one receipt |
//! | `RCPT` to an unknown mailbox of ours, listed provider | `250` | the receiving point answers with a signed *avviso di mancata consegna*, as providers do |
//! | a message with over [`MAX_RECEIVED`] `Received` fields | `554 5.4.6` | RFC 5321 §6.3: a mail loop |
//! | accepted | `250 2.0.0 Ok: queued as <id>` after the sink kept it | |
//!
//! Everything else (line and `DATA` bounds, bare LF refusals that stop SMTP smuggling, a
//! `Received` field naming our servers, timeouts, shutdown) is the submission engine's, answered
//! the same way. What is stored is `Return-Path`, our `Received` field (`with ESMTPS`/`ESMTP`,
//! RFC 3848), then the message exactly as received ([`Arrival::stored`]).

use chrono::{DateTime, Utc};

use crate::BoxFuture;

pub mod limits;
pub use limits::Greylisting;

/// More `Received` fields than this in a message means it is looping (RFC 5321 §6.3 leaves the
/// figure to the server; Postfix's `hopcount_limit` is 50, sendmail's `MaxHopCount` 25: 100 is
/// the loosest of the common figures).
pub const MAX_RECEIVED: usize = 100;

/// Who is sending, as the MX tells from the reverse path's domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A domain the provider index lists: another PEC provider's (TLS required; every
    /// recipient of ours is accepted, the receiving point answers unknown ones with a notice).
    Provider,
    /// Anyone else, including the null reverse path.
    Ordinary,
}

/// What the MX may do with a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// A mailbox of ours.
    Known,
    /// In one of our domains, but no such mailbox.
    Unknown,
    /// A mailbox of ours that is not in service (locked, suspended, not yet activated).
    Disabled,
    /// Not a domain we receive for.
    NotOurs,
}

/// The policy could not answer (the state table or the provider index is unreachable or
/// unusable); the client hears `451 4.3.0`.
#[derive(Debug, thiserror::Error)]
#[error("MX policy lookup failed: {0}")]
pub struct PolicyError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl PolicyError {
    /// Wraps any error or message.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(e.into())
    }
}

/// What the MX asks about a transaction (the state table and the provider index in production,
/// a table in tests).
pub trait MxPolicy: Send + Sync {
    /// Who sends from `reverse_path` (a mailbox; never called for the null path).
    fn sender<'a>(&'a self, reverse_path: &'a str) -> BoxFuture<'a, Result<Sender, PolicyError>>;
    /// Whether `address` is ours.
    fn recipient<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Recipient, PolicyError>>;
}

/// One message the MX accepted at the end of `DATA`.
#[derive(Clone, PartialEq, Eq)]
pub struct Arrival {
    /// As [`crate::Submission::id`]: unique, sortable, a valid object name.
    pub id: String,
    /// When the end of `DATA` was received.
    pub received_at: DateTime<Utc>,
    /// `MAIL FROM` without the angle brackets (empty for the null path).
    pub reverse_path: String,
    /// Whether the sender's domain is a listed PEC provider's.
    pub sender: Sender,
    /// The accepted `RCPT TO`s, in order.
    pub recipients: Vec<String>,
    /// The client's IP address.
    pub client_ip: String,
    /// The `EHLO`/`HELO` argument.
    pub helo: String,
    /// Whether the message came over TLS.
    pub tls: bool,
    /// The message exactly as received after dot-unstuffing (CRLF line ends).
    pub raw: Vec<u8>,
    /// Our `Received:` field, CRLF-terminated.
    pub trace: String,
}

impl Arrival {
    /// The bytes kept for the receiving point: `Return-Path`, our trace field, the message.
    pub fn stored(&self) -> Vec<u8> {
        let return_path = format!("Return-Path: <{}>\r\n", self.reverse_path);
        let mut bytes = Vec::with_capacity(return_path.len() + self.trace.len() + self.raw.len());
        bytes.extend_from_slice(return_path.as_bytes());
        bytes.extend_from_slice(self.trace.as_bytes());
        bytes.extend_from_slice(&self.raw);
        bytes
    }
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrival")
            .field("id", &self.id)
            .field("received_at", &self.received_at)
            .field("reverse_path", &self.reverse_path)
            .field("sender", &self.sender)
            .field("recipients", &self.recipients)
            .field("client_ip", &self.client_ip)
            .field("helo", &self.helo)
            .field("tls", &self.tls)
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

/// Where accepted mail goes (`inbound/` in the raw bucket in production). `Ok` must mean the
/// message is durably kept: the sender is then told `250` and will not send it again.
pub trait MxSink: Send + Sync {
    /// Keeps one arrival.
    fn store<'a>(&'a self, arrival: &'a Arrival) -> BoxFuture<'a, Result<(), crate::SinkError>>;
}

/// How many `Received:` fields the message's header section has.
pub(crate) fn received_count(raw: &[u8]) -> usize {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 2);
    let head = &raw[..end];
    let mut count = 0;
    let mut at_line_start = true;
    for (i, &b) in head.iter().enumerate() {
        if at_line_start
            && head
                .get(i..i + 9)
                .is_some_and(|n| n.eq_ignore_ascii_case(b"received:"))
        {
            count += 1;
        }
        at_line_start = b == b'\n';
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_fields_are_counted_in_the_header_only() {
        let raw = b"Received: a\r\nreceived: b\r\n\tReceived: folded\r\nSubject: x\r\n\r\nReceived: body\r\n";
        assert_eq!(received_count(raw), 2);
        assert_eq!(received_count(b"Subject: x\r\n\r\n"), 0);
        assert_eq!(received_count(b""), 0);
    }

    #[test]
    fn stored_bytes_are_return_path_trace_then_the_message() {
        let a = Arrival {
            id: "I".into(),
            received_at: Utc::now(),
            reverse_path: String::new(),
            sender: Sender::Ordinary,
            recipients: vec!["a@b".into()],
            client_ip: "192.0.2.1".into(),
            helo: "h".into(),
            tls: false,
            raw: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
            trace: "Received: t\r\n".into(),
        };
        assert_eq!(
            a.stored(),
            b"Return-Path: <>\r\nReceived: t\r\nSubject: x\r\n\r\nbody\r\n"
        );
    }
}

/// An [`MxPolicy`] from fixed tables and an [`MxSink`] in memory, for tests and local tools
/// (feature `dev-tls`, the crate's test-and-local feature).
#[cfg(feature = "dev-tls")]
pub mod memory {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{Arrival, MxPolicy, MxSink, PolicyError, Recipient, Sender};
    use crate::{BoxFuture, SinkError};

    fn domain(a: &str) -> String {
        a.rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// Our domains, our mailboxes, the providers' domains; `down` makes every lookup fail.
    #[derive(Debug, Default)]
    pub struct TablePolicy {
        /// Domains we receive for.
        pub ours: HashSet<String>,
        /// Mailboxes that exist.
        pub mailboxes: HashSet<String>,
        /// Domains the provider index lists.
        pub listed: HashSet<String>,
        /// Mailboxes of ours that are not in service.
        pub disabled: HashSet<String>,
        /// Every lookup fails while set.
        pub down: AtomicBool,
    }

    impl TablePolicy {
        /// From lists (lower case).
        pub fn new(ours: &[&str], mailboxes: &[&str], listed: &[&str]) -> Self {
            let set = |l: &[&str]| l.iter().map(|s| s.to_ascii_lowercase()).collect();
            Self {
                ours: set(ours),
                mailboxes: set(mailboxes),
                listed: set(listed),
                disabled: HashSet::new(),
                down: AtomicBool::new(false),
            }
        }
    }

    impl MxPolicy for TablePolicy {
        fn sender<'a>(
            &'a self,
            reverse_path: &'a str,
        ) -> BoxFuture<'a, Result<Sender, PolicyError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(PolicyError::new("provider index unreadable"));
                }
                Ok(if self.listed.contains(&domain(reverse_path)) {
                    Sender::Provider
                } else {
                    Sender::Ordinary
                })
            })
        }

        fn recipient<'a>(
            &'a self,
            address: &'a str,
        ) -> BoxFuture<'a, Result<Recipient, PolicyError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(PolicyError::new("state table unreachable"));
                }
                Ok(if !self.ours.contains(&domain(address)) {
                    Recipient::NotOurs
                } else if self.disabled.contains(&address.to_ascii_lowercase()) {
                    Recipient::Disabled
                } else if self.mailboxes.contains(&address.to_ascii_lowercase()) {
                    Recipient::Known
                } else {
                    Recipient::Unknown
                })
            })
        }
    }

    /// Arrivals kept in memory; `fail` makes storing fail.
    #[derive(Debug, Default)]
    pub struct MemoryInbound {
        stored: Mutex<Vec<Arrival>>,
        /// Storing fails while set.
        pub fail: AtomicBool,
    }

    impl MemoryInbound {
        /// What was stored so far.
        pub fn stored(&self) -> Vec<Arrival> {
            self.stored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        }
    }

    impl MxSink for MemoryInbound {
        fn store<'a>(&'a self, arrival: &'a Arrival) -> BoxFuture<'a, Result<(), SinkError>> {
            Box::pin(async move {
                if self.fail.load(Ordering::SeqCst) {
                    return Err(SinkError::new("bucket unavailable"));
                }
                self.stored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(arrival.clone());
                Ok(())
            })
        }
    }
}
