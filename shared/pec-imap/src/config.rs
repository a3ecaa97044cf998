//! Server configuration.

use std::time::Duration;

use pec_submit::HashCost;

/// Everything the server needs besides the listener, TLS, credentials and store.
///
/// Memory: a session holds at most one command ([`Config::max_command_bytes`], an `APPEND`
/// literal included) and one response in memory.
#[derive(Debug, Clone)]
pub struct Config {
    /// Host name in the greeting.
    pub hostname: String,
    /// Largest literal accepted (an `APPEND`ed message); larger ones get `BAD` unread.
    pub max_literal_bytes: u32,
    /// Largest command, literals included; must exceed `max_literal_bytes`.
    pub max_command_bytes: u32,
    /// Failed logins after which the connection is closed.
    pub max_auth_failures: u32,
    /// `BAD` answers after which the connection is closed.
    pub max_errors: u32,
    /// How long an unauthenticated connection may stay silent.
    pub login_timeout: Duration,
    /// How long an authenticated connection (IDLE included) may stay silent; RFC 9051 §5.4
    /// asks for at least 30 minutes.
    pub idle_timeout: Duration,
    /// How long a write to the client may take.
    pub write_timeout: Duration,
    /// How often an IDLE session asks the store's change counter (changes made by other
    /// processes); `None`: only the [`crate::Notifier`] wakes it.
    pub idle_poll: Option<Duration>,
    /// Concurrent sessions; one more gets `BYE` at once.
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
            max_literal_bytes: 50 * 1024 * 1024,
            max_command_bytes: 50 * 1024 * 1024 + 64 * 1024,
            max_auth_failures: 3,
            max_errors: 10,
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(31 * 60),
            write_timeout: Duration::from_secs(60),
            idle_poll: Some(Duration::from_secs(1)),
            max_sessions: 256,
            shutdown_grace: Duration::from_secs(10),
            dummy_hash_cost: HashCost::Production,
        }
    }
}
