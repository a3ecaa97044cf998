//! Server configuration.

use std::time::Duration;

use crate::auth::HashCost;

/// Default hard limit on one message: 100 MiB.
///
/// The PEC rules (RFC 6109 §3.1.1 as read in `pec-rules.md` §8.1/§8.4) set a 30 MB limit on
/// *size × number of recipients*; a message over it gets an *avviso di non accettazione* from the
/// access point's formal checks, which needs the message to be accepted at SMTP time. Only past a
/// further, provider-chosen hard limit is the rejection left to SMTP. The rules give no figure for
/// that hard limit, so this crate uses 100 MiB (the largest per-message figure providers
/// advertise, `pec-rules.md` §8.4): well above 30 MB so that the notice can be produced, and
/// small enough to bound the memory of a session.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;

/// Default bound on the message data all of a server's sessions hold together: 256 MiB.
///
/// Enough for one message of [`DEFAULT_MAX_MESSAGE_BYTES`] with its copy
/// ([`data_share`](crate::data_share)`(100 MiB)` ≈ 200 MiB), or about four of the 30 MB the PEC
/// rules allow, at once; a quarter of a 1 GiB task.
pub const DEFAULT_MAX_DATA_BYTES_IN_FLIGHT: usize = 256 * 1024 * 1024;

/// Everything the server needs besides the listener, the TLS configuration and the two traits.
///
/// Memory: a session holds at most one message (`max_message_bytes`) in memory, and all sessions
/// together hold at most `max_data_bytes_in_flight` of message data (the buffers and the copies
/// made to store them), whatever `max_sessions × max_message_bytes` is.
#[derive(Debug, Clone)]
pub struct Config {
    /// Host name in the greeting, the `EHLO` reply and the `421` replies.
    pub hostname: String,
    /// Hard limit on one message, after dot-unstuffing (advertised as `SIZE`).
    pub max_message_bytes: usize,
    /// Bound on the memory all sessions' message data hold together: each transaction counts
    /// twice the capacity of its receive buffer (the buffer and the copy the sink makes to
    /// store it) plus 8 KiB, [`data_share`](crate::data_share), from `MAIL FROM … SIZE=n`
    /// (reserved at once) or as the data arrives, until the transaction ends. When it cannot
    /// cover a transaction, `MAIL … SIZE=n` or the end of `DATA` (read to its end, nothing
    /// kept) gets `452 4.3.1 Insufficient system storage` and the client retries later. Make it
    /// at least `data_share(max_message_bytes)`, or the largest messages are never accepted.
    /// Default [`DEFAULT_MAX_DATA_BYTES_IN_FLIGHT`] (256 MiB).
    pub max_data_bytes_in_flight: usize,
    /// Most `RCPT TO` accepted in one transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Failed `AUTH` attempts after which the session is closed with `421 4.7.0`.
    pub max_auth_failures: u32,
    /// Longest command line (and `AUTH` continuation line), CRLF included. RFC 5321 allows 512
    /// octets for commands; RFC 4954 asks for more for `AUTH` initial responses.
    pub max_line_bytes: usize,
    /// Commands after which the session is closed with `421 4.7.0`.
    pub max_commands: usize,
    /// Erroneous commands (unknown, out of sequence, syntax) after which the session is closed
    /// with `421 4.7.0`.
    pub max_errors: u32,
    /// How long the server waits for a command line (and for any write to the client).
    pub command_timeout: Duration,
    /// How long the server waits for the next chunk of message data after `354`.
    pub data_timeout: Duration,
    /// Longest session, from accept to close.
    pub session_timeout: Duration,
    /// Concurrent sessions; one more gets `421 4.7.0` and is closed at once.
    pub max_sessions: usize,
    /// Concurrent sessions from one client IP address (IPv6: one /64, what a single host may
    /// hold); one more gets `421 4.7.0` and is closed at once, so one source cannot take every
    /// slot.
    pub max_sessions_per_ip: usize,
    /// MX role: messages (`MAIL` commands) one source (an IPv4 address, an IPv6 /64) may start
    /// per minute, refilled continuously, a burst of as many; one more gets `451 4.7.1`.
    /// `0` (the default): no limit.
    pub mx_messages_per_minute: u32,
    /// MX role: greylisting of ordinary senders (RFC 6647; never of senders whose domain the
    /// provider index lists, never of refused recipients): a new (source /24 or /64, sender,
    /// recipient) gets `451 4.7.1` at `RCPT` until [`Greylisting::delay`](crate::mx::Greylisting)
    /// has passed. `None` (the default): off.
    pub mx_greylisting: Option<crate::mx::Greylisting>,
    /// After the shutdown signal, how long sessions in flight may run before they are cut.
    pub shutdown_grace: Duration,
    /// Cost of the dummy hash checked for unknown users. Set it to the cost the mailboxes'
    /// hashes were made with (see [`HashCost`]) so an unknown user takes as long as a known one.
    pub dummy_hash_cost: HashCost,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_data_bytes_in_flight: DEFAULT_MAX_DATA_BYTES_IN_FLIGHT,
            max_recipients: 100,
            max_auth_failures: 3,
            max_line_bytes: 2048,
            max_commands: 1000,
            max_errors: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            session_timeout: Duration::from_secs(3600),
            max_sessions: 64,
            max_sessions_per_ip: 16,
            mx_messages_per_minute: 0,
            mx_greylisting: None,
            shutdown_grace: Duration::from_secs(30),
            dummy_hash_cost: HashCost::Production,
        }
    }
}
