//! The PEC submission gateway: an async ESMTP submission server for authenticated mailbox
//! owners (the *punto di accesso*'s SMTP front), and the same engine as the provider's MX
//! ([`mx`], [`Server::mx`]: mail for our domains from other providers and the outside world).
//!
//! The caller binds a [`tokio::net::TcpListener`], builds a [`Server`] from a [`Config`], a
//! rustls [`ServerConfig`](rustls::ServerConfig) (ring provider; [`tls_server_config`]), a
//! [`Credentials`] store and a [`Sink`], and runs [`Server::serve`] until its shutdown future
//! completes. Each message accepted at the end of `DATA` becomes a [`Submission`] (the bytes
//! exactly as received after dot-unstuffing, plus the SMTP envelope and who sent it) handed to
//! the sink; the client hears `250` only after the sink said the message is kept. The access
//! point's formal checks (sender = `From:`, recipients in `To:`/`Cc:`, size × recipients …)
//! happen later in the pipeline, which answers them with PEC notices: this crate only enforces
//! what must be refused at SMTP time.
//!
//! # Protocol
//!
//! RFC 5321 with `EHLO`/`HELO`, `STARTTLS` (RFC 3207), `AUTH PLAIN` and `AUTH LOGIN`
//! (RFC 4954, RFC 4616) **only after `STARTTLS`**, `SIZE` (RFC 1870), `8BITMIME` (RFC 6152),
//! `ENHANCEDSTATUSCODES` (RFC 2034/3463), and `MAIL`, `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`,
//! `VRFY`, `HELP`. `EHLO` before TLS offers `SIZE 8BITMIME ENHANCEDSTATUSCODES STARTTLS`; after
//! TLS, `SIZE 8BITMIME ENHANCEDSTATUSCODES AUTH PLAIN LOGIN`. `PIPELINING` is not offered
//! (commands sent ahead are still read in order); `SMTPUTF8`, `CHUNKING`, `DSN` are not offered.
//!
//! # Replies and why
//!
//! | Situation | Reply | Why |
//! |---|---|---|
//! | connect | `220 <host> ESMTP …` | RFC 5321 §4.2 |
//! | `AUTH` before `STARTTLS` | `538 5.7.11 Encryption required …` | RFC 4954 §6: passwords never travel in clear; `AUTH` is not even advertised before TLS |
//! | `AUTH` ok | `235 2.7.0` | RFC 4954 |
//! | unknown user, wrong password, locked mailbox | `535 5.7.8 Authentication credentials invalid` | RFC 4954 §6. One text for all three: no user enumeration; unknown users are checked against a dummy hash so they take as long; the reason is logged |
//! | N-th failed `AUTH` ([`Config::max_auth_failures`]) | `535 5.7.8`, then `421 4.7.0 … closing` | stops password guessing on one connection |
//! | credential store down, bad stored hash | `454 4.7.0 Temporary authentication failure` | RFC 4954 §6: the client may retry |
//! | unknown `AUTH` mechanism | `504 5.5.4` | RFC 4954 |
//! | `AUTH` exchange cancelled (`*`) / bad Base64 | `501 5.0.0` / `501 5.5.2` | RFC 4954 §4 |
//! | `MAIL`/`RCPT`/`DATA` before `AUTH` | `530 5.7.0 Authentication required` | RFC 4954 §6: submission is for authenticated users only |
//! | `MAIL FROM:<>` | `553 5.1.7 Null reverse-path not accepted …` | a PEC message always has a sender mailbox; the null path is for notices, which only the provider emits |
//! | malformed reverse path / recipient | `501 5.1.7` / `501 5.1.3` | RFC 3463: bad sender / destination mailbox address syntax |
//! | `SIZE=` over the limit | `552 5.3.4 Message size exceeds fixed maximum message size` | RFC 1870 §6 |
//! | `DATA` over the limit | read to the end marker without keeping it, then `552 5.3.4` | RFC 1870: the session stays usable, memory stays bounded |
//! | `SIZE=` the data budget ([`Config::max_data_bytes_in_flight`]) cannot cover now | `452 4.3.1 Insufficient system storage, try again later` | RFC 1870 §6.1, RFC 3463: transient, the client retries |
//! | `DATA` the data budget cannot cover | read to the end marker without keeping it, then `452 4.3.1` | the sessions together cannot exhaust the process; nothing stored, the session stays usable |
//! | more than [`Config::max_recipients`] `RCPT` | `452 4.5.3 Too many recipients` | RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction |
//! | unknown `MAIL`/`RCPT` parameter | `555 5.5.4` | RFC 5321 §4.1.1.11 |
//! | message with bare CR or LF | `554 5.6.0` | RFC 5321 §2.3.8; only `CRLF.CRLF` ends `DATA`, so `LF.LF` tricks (SMTP smuggling) cannot split a message, and the stored bytes are CRLF throughout |
//! | message accepted | `250 2.0.0 Ok: queued as <id>` | the id is [`Submission::id`] |
//! | sink failure or timeout | `451 4.3.0 Temporary failure …` | the client keeps the message and retries: nothing is lost |
//! | `VRFY` | `252 2.0.0` | RFC 5321 §3.5.3: answers without disclosing mailboxes |
//! | `EXPN`, `TURN`, `ETRN`, `BDAT`, … | `502 5.5.1` | known, not implemented |
//! | unknown command, non-UTF-8 or control characters | `500 5.5.2` | RFC 5321 §4.2.4 |
//! | command line over [`Config::max_line_bytes`] | `500 5.5.2 Line too long` (`500 5.5.6` inside `AUTH`) | RFC 5321 §4.5.3.1.4; the line is discarded unbuffered |
//! | out of sequence | `503 5.5.1` | RFC 5321 §4.3.2 |
//! | [`Config::max_errors`] client errors, [`Config::max_commands`] commands | `421 4.7.0 … closing` | bounds a session's work |
//! | idle ([`Config::command_timeout`], [`Config::data_timeout`]) or session over [`Config::session_timeout`] | `421 4.4.2 … Timeout exceeded` | RFC 5321 §4.5.3.2 |
//! | server shutting down | `421 4.3.2 … Service shutting down` | RFC 5321 §3.8 |
//! | over [`Config::max_sessions`] | `421 4.7.0 … Too many connections` | |
//! | over [`Config::max_sessions_per_ip`] from one address (IPv6: one /64) | `421 4.7.0 … Too many connections from your address` | one source cannot take every slot |
//!
//! The reverse path is **not** compared with the authenticated mailbox here: a mismatch is a
//! formal-check failure that the access point answers with a PEC *avviso di non accettazione*.
//!
//! # Limits
//!
//! The message size limit defaults to [`DEFAULT_MAX_MESSAGE_BYTES`] (100 MiB): the PEC rules
//! fix 30 MB for *size × recipients*, enforced with a notice by the pipeline, and leave the hard
//! SMTP limit above it to the provider without a figure (see [`config`](Config)). No line,
//! message or session is ever buffered beyond its bound; every read and write has a timeout.
//! The message data of all sessions together is bounded by [`Config::max_data_bytes_in_flight`]
//! (default [`DEFAULT_MAX_DATA_BYTES_IN_FLIGHT`], 256 MiB; each transaction counts its buffer's
//! capacity and the copy made to store it, [`data_share`]), so many sessions each sending the
//! largest message cannot exhaust the process.
//!
//! # Features
//!
//! - `dev-tls` (default, for now): [`dev_tls`], self-signed certificates with rcgen (ring).
//! - `client` (default): [`client`], a lettre-based submission client for the demo and tests.
//!
//! Both can be turned off (`default-features = false`) for the production gateway build.

#![warn(missing_docs)]

mod address;
mod auth;
#[cfg(feature = "aws")]
pub mod aws;
mod budget;
#[cfg(feature = "client")]
pub mod client;
mod config;
#[cfg(feature = "dev-tls")]
pub mod dev_tls;
pub mod mx;
mod server;
mod session;
mod sink;
mod tls;
pub mod trace;
mod wire;

use std::future::Future;
use std::pin::Pin;

pub use auth::{
    Account, Check as PasswordCheck, CredentialError, Credentials, HashCost, PasswordError,
    Refusal, check_password, dummy_hash, hash_password, hash_password_with, refusal_for,
};
pub use budget::{STORE_SLACK, data_share};
pub use config::{Config, DEFAULT_MAX_DATA_BYTES_IN_FLIGHT, DEFAULT_MAX_MESSAGE_BYTES};
pub use server::Server;
pub use sink::{Sink, SinkError, Submission, new_id};
pub use tls::tls_server_config;

/// A boxed `Send` future, so that [`Credentials`] and [`Sink`] can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
