//! Mailbox access for people: a POP3 server over the [`MailStore`] port's `INBOX`.
//!
//! The caller binds a [`tokio::net::TcpListener`], builds a [`Server`] from a [`Config`], a
//! rustls [`ServerConfig`](rustls::ServerConfig) (ring provider, e.g.
//! [`pec_submit::tls_server_config`]), the same [`Credentials`] store and
//! [`pec_ports::LoginThrottle`] as the SMTP gateway and the IMAP server, and a [`MailStore`],
//! and runs [`Server::serve`] with [`Security::ImplicitTls`] (port 995) or
//! [`Security::StartTls`] (port 110) until its shutdown future completes.
//!
//! # Protocol
//!
//! POP3 (RFC 1939: `USER`, `PASS`, `STAT`, `LIST`, `RETR`, `DELE`, `NOOP`, `RSET`, `QUIT`,
//! `TOP`, `UIDL`), `CAPA` with `TOP`, `UIDL`, `RESP-CODES`, `AUTH-RESP-CODE`, `PIPELINING`,
//! `USER` and `SASL PLAIN` (RFC 2449), `STLS` (RFC 2595) and `AUTH PLAIN` with or without an
//! initial response (RFC 5034, RFC 4616). `APOP` is refused (it needs clear-text passwords on
//! the server). The command grammar is a small hand-written parser (`command.rs`): no
//! maintained sans-IO POP3 server crate exists to build on (the IMAP server uses
//! `imap-codec`); SASL's base64 is the `base64` crate.
//!
//! # The maildrop
//!
//! At login the session takes `INBOX` as it is ([`MailStore::messages`], by UID) and numbers
//! it 1..n; messages that arrive later are seen by the next session. Other folders are not
//! reachable over POP3.
//!
//! - `LIST` and `STAT` give the sizes as stored (messages are stored with CRLF, so they are
//!   the octets `RETR` sends, byte-stuffing aside).
//! - `UIDL` is `{uidvalidity:08X}{uid:08X}`: stable across sessions (UIDs never change and are
//!   never reused within a UIDVALIDITY), unique in the mailbox.
//! - `RETR` sends the stored bytes exactly (lines starting with `.` are byte-stuffed; a bare LF,
//!   should a message hold one, goes out as CRLF) and **sets `\Seen`** on the message, as an
//!   IMAP client would see it; `TOP` does not.
//! - `DELE` only marks. `QUIT` (the UPDATE state) flags the marked messages `\Deleted` and
//!   expunges those UIDs and no others (a `\Deleted` flag set over IMAP is left alone); their
//!   octets leave the quota. A connection that ends any other way (dropped, timed out, cut at
//!   shutdown) deletes nothing.
//! - A message expunged over IMAP during the session answers `-ERR` to `RETR`/`TOP`.
//!
//! **Maildrop lock.** One POP3 session per mailbox at a time: a second login to a mailbox that
//! is open gets `-ERR [IN-USE]` (after its password is checked). The lock is in process, keyed
//! by the normalised address and shared by the clones of a [`Server`]: with several edge
//! instances it holds per instance only. IMAP sessions do not take it.
//!
//! # Security
//!
//! | Situation | Answer |
//! |---|---|
//! | `USER`/`PASS`/`AUTH` before TLS | `-ERR` naming `STLS`; `CAPA` lists `STLS` and neither `USER` nor `SASL` |
//! | unknown user, wrong password, locked mailbox | the same `-ERR [AUTH] Authentication failed`; unknown users cost an Argon2 check too; `USER` always answers `+OK` |
//! | failed logins over the [`pec_ports::LoginThrottle`] limits | `-ERR [SYS/TEMP]` |
//! | [`Config::max_auth_failures`] failures on one connection | `-ERR`, closed |
//! | a command before login, an unknown or malformed one, non-UTF-8 bytes, bad base64 in `AUTH` | `-ERR`, the session goes on |
//! | a line over [`Config::max_line_bytes`] | `-ERR`, the bytes dropped unkept, the session goes on |
//! | [`Config::max_errors`] such `-ERR`s | the last `-ERR`, closed |
//! | bytes pipelined after `STLS` in clear text | dropped (no command injection into the TLS session) |
//! | silent past [`Config::login_timeout`] (before login) or [`Config::idle_timeout`] | `-ERR`, closed, nothing deleted |
//! | over [`Config::max_sessions`] | `-ERR [SYS/TEMP]`, closed |
//!
//! The mailbox used is always the one the credential store returned for the login
//! ([`pec_submit::Account::address`]).

#![warn(missing_docs)]

mod command;
mod config;
mod maildrop;
mod server;
mod session;

pub use config::Config;
pub use pec_ports::mailstore::MailStore;
pub use pec_submit::Credentials;
pub use server::{Security, Server};
