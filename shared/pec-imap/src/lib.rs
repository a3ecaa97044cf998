//! Mailbox access for people: an IMAP server over the [`MailStore`] port (issue #15, first
//! slice).
//!
//! The caller binds a [`tokio::net::TcpListener`], builds a [`Server`] from a [`Config`], a
//! rustls [`ServerConfig`](rustls::ServerConfig) (ring provider, e.g.
//! [`pec_submit::tls_server_config`]), the same [`Credentials`] store as the SMTP gateway, a
//! [`MailStore`] and a [`Notifier`], and runs [`Server::serve`] with [`Security::ImplicitTls`]
//! (port 993) or [`Security::StartTls`] (port 143) until its shutdown future completes.
//!
//! # Protocol
//!
//! IMAP4rev1 (RFC 3501) commands, with the extensions `IDLE`, `UIDPLUS`, `MOVE`, `UNSELECT`,
//! `SPECIAL-USE`, `QUOTA`, `ENABLE`, `NAMESPACE`, `ID`, `LITERAL+`, `SASL-IR`. Every command is
//! parsed and every response encoded by `imap-codec`, driven by `imap-next`'s server flow
//! (literals, continuation requests, AUTHENTICATE and IDLE exchanges): this crate holds no IMAP
//! grammar. `IMAP4rev2` is not announced yet (it needs ESEARCH and LIST-STATUS semantics).
//!
//! # Security
//!
//! | Situation | Answer |
//! |---|---|
//! | `LOGIN`/`AUTHENTICATE` before TLS | `NO [PRIVACYREQUIRED]`; `LOGINDISABLED` is announced |
//! | unknown user, wrong password, locked mailbox | the same `NO [AUTHENTICATIONFAILED]`; unknown users cost an Argon2 check too |
//! | failed logins over the [`pec_ports::LoginThrottle`] limits | `NO [UNAVAILABLE]` |
//! | [`Config::max_auth_failures`] failures on one connection | `BYE`, closed |
//! | a command before authentication | `BAD` |
//! | a folder that is not the user's (another mailbox, a bad name) | `NO [NONEXISTENT]`: no way to tell which |
//! | `APPEND` (or `COPY`/`MOVE` of an appended message) into `INBOX` | `NO [CANNOT]`: nobody can plant a received PEC message |
//! | a literal over [`Config::max_literal_bytes`] | `BAD` before any byte of it is read (a `LITERAL+` one is read and dropped, bounded by [`Config::max_command_bytes`]) |
//! | a command over [`Config::max_command_bytes`], a malformed one | `BAD`, the bytes dropped |
//! | [`Config::max_errors`] `BAD`s | `BYE`, closed |
//! | idle past [`Config::login_timeout`] (before login) or [`Config::idle_timeout`] | `BYE`, closed |
//! | over [`Config::max_sessions`] | `BYE`, closed |
//!
//! The mailbox used is always the one the credential store returned for the login
//! ([`pec_submit::Account::address`]); client-given names only ever name folders inside it.

#![warn(missing_docs)]

mod config;
mod fetch;
mod notify;
mod search;
mod selected;
mod server;
mod session;

pub use config::Config;
pub use notify::Notifier;
pub use pec_ports::mailstore::MailStore;
pub use pec_submit::Credentials;
pub use server::{Security, Server};
