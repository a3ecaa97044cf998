//! Server configuration.

use std::time::Duration;

use pec_submit::HashCost;

/// Everything the server needs besides the listener, TLS, credentials and store.
///
/// Memory: a session holds at most one command line ([`Config::max_line_bytes`]), the maildrop
/// listing (UID, size and flags per INBOX message) and, while answering `RETR`/`TOP`, one
/// message as the store returns it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Host name in the greeting.
    pub hostname: String,
    /// Longest command line, CRLF excluded. RFC 2449 allows 255 octets; longer lines get `-ERR`
    /// (the bytes are dropped, unkept) and the session goes on.
    pub max_line_bytes: usize,
    /// Longest SASL response line (the answer to `+ ` after `AUTH PLAIN` without an initial
    /// response, which RFC 5034 does not bound to 255 octets).
    pub max_sasl_line_bytes: usize,
    /// Failed logins after which the connection is closed.
    pub max_auth_failures: u32,
    /// `-ERR` answers to unknown, malformed or misplaced commands after which the connection
    /// is closed.
    pub max_errors: u32,
    /// How long an unauthenticated connection may stay silent (the TLS handshake included).
    pub login_timeout: Duration,
    /// How long an authenticated connection may stay silent: RFC 1939 §3 asks for an
    /// autologout timer of at least 10 minutes. Expiry closes without deleting anything.
    pub idle_timeout: Duration,
    /// How long a write to the client may take.
    pub write_timeout: Duration,
    /// Concurrent sessions; one more gets `-ERR [SYS/TEMP]` at once and is closed.
    pub max_sessions: usize,
    /// After the shutdown signal, how long sessions may run before they are cut.
    pub shutdown_grace: Duration,
    /// Cost of the dummy hash checked for unknown users (as in `pec_submit::Config`).
    pub dummy_hash_cost: HashCost,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".to_owned(),
            max_line_bytes: 512,
            max_sasl_line_bytes: 4096,
            max_auth_failures: 3,
            max_errors: 10,
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(10 * 60),
            write_timeout: Duration::from_secs(60),
            max_sessions: 256,
            shutdown_grace: Duration::from_secs(10),
            dummy_hash_cost: HashCost::Production,
        }
    }
}
