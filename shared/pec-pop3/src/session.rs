//! One POP3 session: line IO, the AUTHORIZATION, TRANSACTION and UPDATE states (RFC 1939 §3).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use pec_ports::LoginVerdict;
use pec_ports::mailstore::{DELETED, FlagChange, Flags, INBOX, MailStore, MailStoreError, SEEN};
use pec_submit::{Account, Credentials, PasswordCheck, check_password, dummy_hash};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use crate::command::{self, Command};
use crate::maildrop::{Encoder, Maildrop};
use crate::{Config, Security};

/// Octets of response collected before they are written (and the size of `RETR` chunks).
const WRITE_CHUNK: usize = 64 * 1024;
/// Octets of consumed input kept at the front of the line buffer before it is compacted.
const COMPACT_AFTER: usize = 64 * 1024;

/// What every session shares.
pub(crate) struct Shared<S> {
    pub config: Config,
    pub tls: TlsAcceptor,
    pub credentials: Arc<dyn Credentials>,
    pub throttle: Arc<dyn pec_ports::LoginThrottle>,
    pub store: Arc<S>,
    /// Bounds concurrent Argon2 checks.
    pub hash_slots: Semaphore,
    pub sessions: Arc<Semaphore>,
    /// The maildrops open in this server (normalised addresses).
    pub locks: Arc<Mutex<HashSet<String>>>,
}

/// A maildrop held open by a session; dropping it (QUIT, a lost connection, a cut session)
/// frees it.
struct MaildropLock {
    locks: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl MaildropLock {
    fn take(locks: &Arc<Mutex<HashSet<String>>>, address: &str) -> Option<MaildropLock> {
        let key = pec_ports::state::norm(address);
        let mut held = locks.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(key.clone()).then(|| MaildropLock {
            locks: Arc::clone(locks),
            key,
        })
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// The session ends now (connection lost, or a write timed out).
struct Stop;

/// What the connection does after a command.
enum After {
    Continue,
    /// Write what is pending and close.
    Close,
    /// Write what is pending, drop every byte read after the command, start TLS.
    StartTls,
}

/// The outcome of checking a login.
enum Verified {
    Account(Account),
    /// Unknown user, wrong password: one answer for all; a locked mailbox's user is told what
    /// happened and what to do (`pec_submit::refusal_for`).
    Failed(Option<String>),
    /// Over the throttle's limits.
    Throttled,
    /// The credential store or the check could not answer.
    Temporary,
}

/// Runs one session to its end. Never panics on client input.
pub(crate) async fn run<S: MailStore + 'static>(
    shared: Arc<Shared<S>>,
    tcp: TcpStream,
    peer: SocketAddr,
    security: Security,
    stop: watch::Receiver<bool>,
) {
    // Every answer is written as soon as it is complete: without this, Nagle's algorithm holds a
    // small write (the greeting after TLS 1.3's session tickets, the lines of a response written
    // one by one) until the client's delayed ACK, about 40 ms each time.
    let _ = tcp.set_nodelay(true);
    let acceptor = shared.tls.clone();
    let handshake = shared.config.login_timeout;
    let tls = |tcp| async move { timeout(handshake, acceptor.accept(tcp)).await.ok()?.ok() };
    course(Session::new(shared, peer, stop), tcp, security, tls).await;
}

/// The fuzz targets' session (feature `fuzzing`): [`run`] with the identity for the TLS
/// handshake, so that every byte the client writes reaches the protocol as sent.
#[cfg(feature = "fuzzing")]
pub(crate) async fn run_plain<S: MailStore + 'static, IO: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared<S>>,
    io: IO,
    peer: SocketAddr,
    security: Security,
    stop: watch::Receiver<bool>,
) {
    let identity = |io| async move { Some(io) };
    course(Session::new(shared, peer, stop), io, security, identity).await;
}

/// A session's course over `io`: `upgrade` is the TLS handshake (at once for
/// [`Security::ImplicitTls`], after `STLS` for [`Security::StartTls`]); `None` ends it.
async fn course<S, IO, T, F, Fut>(mut session: Session<S>, io: IO, security: Security, upgrade: F)
where
    S: MailStore + 'static,
    IO: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(IO) -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match security {
        Security::ImplicitTls => {
            let Some(tls) = upgrade(io).await else {
                info!("TLS handshake failed or timed out");
                return;
            };
            session.tls = true;
            let _ = session.drive(tls, true).await;
        }
        Security::StartTls => {
            if let Ok(Some(io)) = session.drive(io, true).await {
                let Some(tls) = upgrade(io).await else {
                    info!("STLS handshake failed or timed out");
                    return;
                };
                session.tls = true;
                let _ = session.drive(tls, false).await;
            }
        }
    }
    info!("session closed");
}

/// Over the session limit: `-ERR [SYS/TEMP]` and close.
pub(crate) async fn refuse<S>(shared: Arc<Shared<S>>, tcp: TcpStream, security: Security) {
    warn!("too many sessions, connection refused");
    let answer = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n";
    let wait = std::time::Duration::from_secs(5);
    match security {
        Security::StartTls => {
            let mut tcp = tcp;
            let _ = timeout(wait, async {
                tcp.write_all(answer).await?;
                tcp.shutdown().await
            })
            .await;
        }
        Security::ImplicitTls => {
            if let Ok(Ok(mut tls)) = timeout(wait, shared.tls.accept(tcp)).await {
                let _ = timeout(wait, async {
                    tls.write_all(answer).await?;
                    tls.shutdown().await
                })
                .await;
            }
        }
    }
}

/// Command lines as they arrive: split at LF (a CR before it dropped), bounded in length.
#[derive(Default)]
struct LineReader {
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    /// Dropping the rest of a line that was too long.
    discarding: bool,
}

enum Next {
    Line(Vec<u8>),
    /// A line over the limit, dropped.
    TooLong,
    NeedMore,
}

impl LineReader {
    fn next(&mut self, max: usize) -> Next {
        let pending = &self.buf[self.start..];
        match pending.iter().position(|b| *b == b'\n') {
            Some(i) => {
                let line = &pending[..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let too_long = self.discarding || line.len() > max;
                let next = if too_long {
                    Next::TooLong
                } else {
                    Next::Line(line.to_vec())
                };
                self.discarding = false;
                self.start += i + 1;
                next
            }
            None => {
                // Without its line ending the line is already longer than allowed: drop what
                // is here and the rest of it as it comes.
                if pending.len() > max + 1 {
                    self.discarding = true;
                    self.clear();
                }
                Next::NeedMore
            }
        }
    }

    /// Whether a whole line is waiting (then answers are held back: pipelining).
    fn has_line(&self) -> bool {
        self.buf[self.start..].contains(&b'\n')
    }

    fn feed(&mut self, data: &[u8]) {
        if self.start == self.buf.len() || self.start > COMPACT_AFTER {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

/// The connection: the stream, its input lines and the answers not yet written.
struct Conn<IO> {
    io: IO,
    input: LineReader,
    out: Vec<u8>,
    write_timeout: std::time::Duration,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    fn line(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    async fn write(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        match timeout(self.write_timeout, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            _ => Err(Stop),
        }
    }

    /// Writes what is pending, then closes (TLS close_notify included).
    async fn close(&mut self) {
        if self.write().await.is_ok() {
            let _ = timeout(self.write_timeout, self.io.shutdown()).await;
        }
    }
}

struct Session<S> {
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    tls: bool,
    /// The name given by `USER`, waiting for `PASS`.
    pending_user: Option<String>,
    /// `AUTH PLAIN` sent `+ `: the next line is the client's response.
    sasl: bool,
    /// Set with `maildrop` and `lock`: the session is in the TRANSACTION state.
    user: Option<Account>,
    maildrop: Option<Maildrop>,
    lock: Option<MaildropLock>,
    auth_failures: u32,
    errors: u32,
}

impl<S: MailStore + 'static> Session<S> {
    fn new(shared: Arc<Shared<S>>, peer: SocketAddr, stop: watch::Receiver<bool>) -> Self {
        Session {
            shared,
            peer,
            stop,
            tls: false,
            pending_user: None,
            sasl: false,
            user: None,
            maildrop: None,
            lock: None,
            auth_failures: 0,
            errors: 0,
        }
    }

    /// Runs the protocol over `io` until the session ends (`Ok(None)`) or STLS asks for the
    /// TLS handshake (`Ok(Some(io))`; nothing read past the STLS line is kept).
    async fn drive<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: IO,
        greet: bool,
    ) -> Result<Option<IO>, Stop> {
        let config = &self.shared.config;
        let mut conn = Conn {
            io,
            input: LineReader::default(),
            out: Vec::new(),
            write_timeout: config.write_timeout,
        };
        if greet {
            conn.line(&format!("+OK {} PEC POP3 server ready", config.hostname));
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let max = if self.sasl {
                self.shared.config.max_sasl_line_bytes
            } else {
                self.shared.config.max_line_bytes
            };
            let after = match conn.input.next(max) {
                Next::Line(line) => self.line(&mut conn, &line).await?,
                Next::TooLong => {
                    info!("line too long");
                    self.sasl = false;
                    self.error(&mut conn, "Line too long")
                }
                Next::NeedMore => {
                    conn.write().await?;
                    let wait = if self.user.is_some() {
                        self.shared.config.idle_timeout
                    } else {
                        self.shared.config.login_timeout
                    };
                    tokio::select! {
                        read = timeout(wait, conn.io.read(&mut buf)) => match read {
                            Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop),
                            Ok(Ok(n)) => {
                                conn.input.feed(&buf[..n]);
                                After::Continue
                            }
                            Err(_) => {
                                info!("idle timeout");
                                conn.line("-ERR Autologout: idle for too long");
                                After::Close
                            }
                        },
                        _ = self.stop.changed() => {
                            conn.line("-ERR [SYS/TEMP] Server shutting down");
                            After::Close
                        }
                    }
                }
            };
            match after {
                After::Continue => {
                    if conn.out.len() >= WRITE_CHUNK || !conn.input.has_line() {
                        conn.write().await?;
                    }
                }
                After::Close => {
                    conn.close().await;
                    return Ok(None);
                }
                After::StartTls => {
                    if conn.input.start < conn.input.buf.len() {
                        info!("bytes after STLS dropped");
                    }
                    conn.write().await?;
                    return Ok(Some(conn.io));
                }
            }
        }
    }

    /// `-ERR text` for a command that should not have been sent; too many close the session.
    fn error<IO: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Conn<IO>, t: &str) -> After {
        self.errors += 1;
        conn.line(&format!("-ERR {t}"));
        if self.errors >= self.shared.config.max_errors {
            info!(errors = self.errors, "too many errors, closing");
            After::Close
        } else {
            After::Continue
        }
    }

    fn capabilities(&self) -> Vec<&'static str> {
        let mut caps = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if !self.tls {
            caps.push("STLS");
        } else if self.user.is_none() {
            caps.push("USER");
            caps.push("SASL PLAIN");
        }
        caps
    }

    async fn line<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<IO>,
        line: &[u8],
    ) -> Result<After, Stop> {
        if self.sasl {
            self.sasl = false;
            return Ok(self.sasl_response(conn, line).await);
        }
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(e) => {
                info!(error = ?e, "bad command");
                return Ok(self.error(conn, &e.text()));
            }
        };
        if self.user.is_some() {
            self.transaction(conn, command).await
        } else {
            Ok(self.authorization(conn, command).await)
        }
    }

    async fn authorization<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<IO>,
        command: Command,
    ) -> After {
        let clear_text = "Log in only after STLS: TLS is required";
        match command {
            Command::Capa => {
                self.capa(conn);
                After::Continue
            }
            Command::Quit => {
                conn.line(&format!(
                    "+OK {} POP3 server signing off",
                    self.shared.config.hostname
                ));
                After::Close
            }
            Command::Stls if self.tls => self.error(conn, "TLS is already active"),
            Command::Stls => {
                conn.line("+OK Begin TLS negotiation");
                After::StartTls
            }
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if !self.tls => {
                info!("login attempt before TLS");
                self.error(conn, clear_text)
            }
            Command::User(name) => {
                // The same answer whether or not the name exists.
                self.pending_user = Some(name);
                conn.line("+OK Send PASS");
                After::Continue
            }
            Command::Pass(password) => match self.pending_user.take() {
                None => self.error(conn, "Send USER first"),
                Some(user) => self.login(conn, user, password.into_bytes()).await,
            },
            Command::Auth {
                mechanism: None, ..
            } => {
                conn.line("+OK SASL mechanisms follow");
                conn.line("PLAIN");
                conn.line(".");
                After::Continue
            }
            Command::Auth {
                mechanism: Some(mechanism),
                initial,
            } => {
                self.pending_user = None;
                if mechanism != "PLAIN" {
                    return self.error(conn, "Unsupported SASL mechanism; use PLAIN");
                }
                match initial {
                    // RFC 5034 §4: `=` is an empty initial response.
                    Some(initial) => self.sasl_response(conn, initial.as_bytes()).await,
                    None => {
                        conn.line("+ ");
                        self.sasl = true;
                        After::Continue
                    }
                }
            }
            Command::Apop => self.error(
                conn,
                "APOP is not supported; use USER/PASS or AUTH PLAIN over TLS",
            ),
            other => {
                info!(command = other.name(), "command before authentication");
                self.error(conn, "Log in first")
            }
        }
    }

    fn capa<IO: AsyncRead + AsyncWrite + Unpin>(&self, conn: &mut Conn<IO>) {
        conn.line("+OK Capability list follows");
        for cap in self.capabilities() {
            conn.line(cap);
        }
        conn.line(".");
    }

    /// The client's SASL PLAIN message, base64 (an initial response or the answer to `+ `).
    async fn sasl_response<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<IO>,
        line: &[u8],
    ) -> After {
        if line == b"*" {
            conn.line("-ERR Authentication cancelled");
            return After::Continue;
        }
        let decoded = if line == b"=" {
            Ok(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(line)
        };
        let Ok(message) = decoded else {
            info!("SASL response is not base64");
            return self.error(conn, "Malformed base64 in the SASL response");
        };
        let mut parts = message.split(|b| *b == 0);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(authz), Some(user), Some(password), None)
                if authz.is_empty() || authz == user =>
            {
                match std::str::from_utf8(user) {
                    Ok(user) => self.login(conn, user.to_owned(), password.to_vec()).await,
                    Err(_) => self.error(conn, "Malformed PLAIN response"),
                }
            }
            _ => self.error(conn, "Malformed PLAIN response"),
        }
    }

    /// Checks the login, then opens the maildrop.
    async fn login<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<IO>,
        user: String,
        password: Vec<u8>,
    ) -> After {
        let account = match self.verify(user, password).await {
            Verified::Account(account) => account,
            Verified::Failed(refusal) => {
                self.auth_failures += 1;
                match refusal {
                    Some(text) => conn.line(&format!("-ERR [AUTH] {text}")),
                    None => conn.line("-ERR [AUTH] Authentication failed"),
                }
                return self.after_auth_failure();
            }
            Verified::Throttled => {
                self.auth_failures += 1;
                conn.line(
                    "-ERR [SYS/TEMP] Too many failed logins for this account or from this address; try again later",
                );
                return self.after_auth_failure();
            }
            Verified::Temporary => {
                conn.line("-ERR [SYS/TEMP] Temporary authentication failure");
                return After::Continue;
            }
        };
        let Some(lock) = MaildropLock::take(&self.shared.locks, &account.address) else {
            info!(user = %account.address, "maildrop in use");
            conn.line("-ERR [IN-USE] Mailbox already in use by another POP3 session");
            return After::Continue;
        };
        let store = &self.shared.store;
        let address = account.address.as_str();
        let opened = async {
            let Some(folder) = store.folder(address, INBOX).await? else {
                return Err(MailStoreError::NoFolder(INBOX.to_owned()));
            };
            let messages = store.messages(address, INBOX).await?;
            Ok(Maildrop::new(folder.uid_validity, &messages))
        };
        match opened.await {
            Ok(maildrop) => {
                let (n, octets) = maildrop.stat();
                info!(user = %account.address, messages = n, "maildrop opened");
                conn.line(&format!(
                    "+OK Logged in, maildrop has {n} messages ({octets} octets)"
                ));
                self.user = Some(account);
                self.maildrop = Some(maildrop);
                self.lock = Some(lock);
            }
            Err(MailStoreError::NoFolder(_)) => {
                warn!(user = %account.address, "the account has no INBOX in the mail store");
                conn.line("-ERR [SYS/PERM] No mailbox for this account");
            }
            Err(e) => {
                warn!(user = %account.address, error = %e, "maildrop could not be opened");
                conn.line("-ERR [SYS/TEMP] Mailbox temporarily unavailable");
            }
        }
        After::Continue
    }

    fn after_auth_failure(&self) -> After {
        if self.auth_failures >= self.shared.config.max_auth_failures {
            info!("too many authentication failures, closing");
            After::Close
        } else {
            After::Continue
        }
    }

    /// Checks a login against the throttle and the credential store (as the SMTP gateway and
    /// the IMAP server do): unknown users cost the same Argon2 check as known ones.
    async fn verify(&mut self, user: String, password: Vec<u8>) -> Verified {
        let source = self.peer.ip().to_canonical().to_string();
        let throttle = Arc::clone(&self.shared.throttle);
        if user.is_empty() || password.is_empty() {
            return Verified::Failed(None);
        }
        match throttle.allowed(&user, &source, chrono::Utc::now()) {
            LoginVerdict::Locked { until } => {
                info!(user = ?user, %source, %until, "login locked out");
                return Verified::Throttled;
            }
            LoginVerdict::Slowed { delay } => {
                tokio::time::sleep(delay.to_std().unwrap_or_default()).await;
            }
            LoginVerdict::Allowed => {}
        }
        let config = &self.shared.config;
        let account =
            match timeout(config.login_timeout, self.shared.credentials.lookup(&user)).await {
                Ok(Ok(account)) => account,
                Ok(Err(e)) => {
                    warn!(user = ?user, error = %e, "credential lookup failed");
                    return Verified::Temporary;
                }
                Err(_) => {
                    warn!(user = ?user, "credential lookup timed out");
                    return Verified::Temporary;
                }
            };
        let Ok(_permit) = self.shared.hash_slots.acquire().await else {
            return Verified::Temporary;
        };
        let hash = account.as_ref().map(|a| a.password_hash.clone());
        let cost = config.dummy_hash_cost;
        let check = tokio::task::spawn_blocking(move || {
            let hash = hash.as_deref().unwrap_or_else(|| dummy_hash(cost));
            check_password(&password, hash)
        })
        .await;
        let mut refusal = None;
        let outcome = match (account, check) {
            (_, Err(e)) => {
                error!(error = %e, "password check failed to run");
                return Verified::Temporary;
            }
            (None, _) => {
                info!(user = ?user, "authentication failed: unknown user");
                None
            }
            (Some(a), Ok(PasswordCheck::BadHash(e))) => {
                error!(user = %a.address, error = %e, "stored password hash is unusable");
                return Verified::Temporary;
            }
            (Some(a), Ok(PasswordCheck::Mismatch)) => {
                info!(user = %a.address, "authentication failed: wrong password");
                refusal = pec_submit::refusal_for(&a, false);
                None
            }
            (Some(a), Ok(PasswordCheck::Match)) if a.locked => {
                warn!(user = %a.address, "authentication refused: mailbox locked");
                refusal = pec_submit::refusal_for(&a, true);
                None
            }
            (Some(a), Ok(PasswordCheck::Match)) => Some(a),
        };
        match outcome {
            Some(account) => {
                throttle.succeeded(&user, &source, chrono::Utc::now());
                info!(user = %account.address, "authenticated");
                Verified::Account(account)
            }
            None => {
                throttle.failed(&user, &source, chrono::Utc::now());
                Verified::Failed(refusal)
            }
        }
    }

    async fn transaction<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<IO>,
        command: Command,
    ) -> Result<After, Stop> {
        let after = match command {
            Command::Capa => {
                self.capa(conn);
                After::Continue
            }
            Command::Retr(n) => {
                self.send_message(conn, n, None).await?;
                After::Continue
            }
            Command::Top(n, lines) => {
                self.send_message(conn, n, Some(lines)).await?;
                After::Continue
            }
            Command::Quit => {
                self.update(conn).await;
                After::Close
            }
            Command::Stls => self.error(conn, "STLS is only allowed before login"),
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } | Command::Apop => {
                self.error(conn, "Already logged in")
            }
            other => match self.maildrop.as_mut() {
                Some(maildrop) => {
                    Self::listing(conn, maildrop, other).await?;
                    After::Continue
                }
                None => After::Close,
            },
        };
        Ok(after)
    }

    /// The TRANSACTION commands that only read or mark the maildrop.
    async fn listing<IO: AsyncRead + AsyncWrite + Unpin>(
        conn: &mut Conn<IO>,
        maildrop: &mut Maildrop,
        command: Command,
    ) -> Result<(), Stop> {
        match command {
            Command::Stat => {
                let (n, octets) = maildrop.stat();
                conn.line(&format!("+OK {n} {octets}"));
            }
            Command::List(None) | Command::Uidl(None) => {
                let uidl = matches!(command, Command::Uidl(_));
                let (n, octets) = maildrop.stat();
                conn.line(&if uidl {
                    "+OK Unique-ID listing follows".to_owned()
                } else {
                    format!("+OK {n} messages ({octets} octets)")
                });
                for (i, entry) in maildrop.live() {
                    if uidl {
                        conn.line(&format!("{i} {}", maildrop.uidl(entry)));
                    } else {
                        conn.line(&format!("{i} {}", entry.size));
                    }
                    if conn.out.len() >= WRITE_CHUNK {
                        conn.write().await?;
                    }
                }
                conn.line(".");
            }
            Command::List(Some(n)) => match maildrop.get(n) {
                Ok(entry) => conn.line(&format!("+OK {n} {}", entry.size)),
                Err(e) => conn.line(&format!("-ERR {}", e.text(n))),
            },
            Command::Uidl(Some(n)) => match maildrop.get(n) {
                Ok(entry) => conn.line(&format!("+OK {n} {}", maildrop.uidl(entry))),
                Err(e) => conn.line(&format!("-ERR {}", e.text(n))),
            },
            Command::Dele(n) => match maildrop.get_mut(n) {
                Ok(entry) => {
                    entry.deleted = true;
                    conn.line(&format!("+OK Message {n} deleted"));
                }
                Err(e) => conn.line(&format!("-ERR {}", e.text(n))),
            },
            Command::Rset => {
                maildrop.reset();
                let (n, octets) = maildrop.stat();
                conn.line(&format!("+OK Maildrop has {n} messages ({octets} octets)"));
            }
            Command::Noop => conn.line("+OK"),
            // Handled by the caller.
            other => conn.line(&format!("-ERR {} is not allowed here", other.name())),
        }
        Ok(())
    }

    /// `RETR n` (`body_lines: None`, sets `\Seen`) or `TOP n k`.
    async fn send_message<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<IO>,
        n: u32,
        body_lines: Option<u64>,
    ) -> Result<(), Stop> {
        let (Some(account), Some(maildrop)) = (self.user.as_ref(), self.maildrop.as_mut()) else {
            return Ok(());
        };
        let (uid, seen) = match maildrop.get(n) {
            Ok(entry) => (entry.uid, entry.seen),
            Err(e) => {
                conn.line(&format!("-ERR {}", e.text(n)));
                return Ok(());
            }
        };
        let store = &self.shared.store;
        let address = account.address.as_str();
        let bytes = match store.read(address, INBOX, uid).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                // Expunged since login (by an IMAP session).
                conn.line(&format!("-ERR Message {n} no longer exists"));
                return Ok(());
            }
            Err(e) => {
                warn!(error = %e, uid, "message read failed");
                conn.line("-ERR [SYS/TEMP] Mailbox temporarily unavailable");
                return Ok(());
            }
        };
        if body_lines.is_some() {
            conn.line("+OK Top of message follows");
        } else {
            conn.line(&format!("+OK {} octets", bytes.len()));
        }
        let mut encoder = Encoder::new(&bytes, body_lines);
        while !encoder.fill(&mut conn.out, WRITE_CHUNK) {
            conn.write().await?;
        }
        conn.line(".");
        if body_lines.is_none() && !seen {
            let flags = Flags::from([SEEN.to_owned()]);
            match store
                .store_flags(address, INBOX, &[uid], FlagChange::Add, &flags)
                .await
            {
                Ok(_) => {
                    if let Ok(entry) = maildrop.get_mut(n) {
                        entry.seen = true;
                    }
                }
                Err(e) => warn!(error = %e, uid, "setting \\Seen failed"),
            }
        }
        Ok(())
    }

    /// QUIT in the TRANSACTION state (RFC 1939 §6): the marked messages, and only those, are
    /// flagged `\Deleted` and expunged.
    async fn update<IO: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Conn<IO>) {
        let hostname = &self.shared.config.hostname;
        let (Some(account), Some(maildrop)) = (self.user.as_ref(), self.maildrop.as_ref()) else {
            return;
        };
        let marked = maildrop.marked();
        // The maildrop is free again once the update is done, before the client hears so.
        let _lock = self.lock.take();
        if marked.is_empty() {
            conn.line(&format!("+OK {hostname} POP3 server signing off"));
            return;
        }
        let store = &self.shared.store;
        let address = account.address.as_str();
        let deleted = Flags::from([DELETED.to_owned()]);
        let removed = async {
            store
                .store_flags(address, INBOX, &marked, FlagChange::Add, &deleted)
                .await?;
            store.expunge(address, INBOX, Some(&marked)).await
        };
        match removed.await {
            Ok(removed) => {
                info!(user = %address, marked = marked.len(), removed = removed.len(), "messages deleted");
                conn.line(&format!(
                    "+OK {hostname} POP3 server signing off ({} messages deleted)",
                    marked.len()
                ));
            }
            Err(e) => {
                warn!(user = %address, error = %e, "deleting marked messages failed");
                conn.line("-ERR [SYS/TEMP] Some deleted messages not removed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut LineReader, max: usize) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        loop {
            match reader.next(max) {
                Next::Line(l) => out.push(Some(l)),
                Next::TooLong => out.push(None),
                Next::NeedMore => return out,
            }
        }
    }

    #[test]
    fn lines_split_at_lf_and_drop_one_cr() {
        let mut r = LineReader::default();
        r.feed(b"NOOP\r\nSTAT\nLIST\r\r\nRE");
        assert_eq!(
            lines(&mut r, 10),
            [
                Some(b"NOOP".to_vec()),
                Some(b"STAT".to_vec()),
                Some(b"LIST\r".to_vec())
            ]
        );
        r.feed(b"TR 1\r\n");
        assert_eq!(lines(&mut r, 10), [Some(b"RETR 1".to_vec())]);
        assert!(!r.has_line());
    }

    #[test]
    fn long_lines_are_dropped_without_being_kept() {
        let mut r = LineReader::default();
        r.feed(&[b'x'; 100]);
        assert!(lines(&mut r, 10).is_empty());
        assert!(r.buf.len() <= 11, "not kept");
        r.feed(&[b'y'; 100]);
        r.feed(b"\r\nNOOP\r\n");
        assert_eq!(lines(&mut r, 10), [None, Some(b"NOOP".to_vec())]);
        // Exactly at the limit, with its CR arriving separately.
        r.feed(b"0123456789\r");
        assert!(lines(&mut r, 10).is_empty());
        r.feed(b"\n0123456789A\r\n");
        assert_eq!(lines(&mut r, 10), [Some(b"0123456789".to_vec()), None]);
    }

    #[test]
    fn maildrop_locks_are_exclusive_and_freed_on_drop() {
        let locks = Arc::new(Mutex::new(HashSet::new()));
        let a = MaildropLock::take(&locks, "Mario.Rossi@pec.example.it").expect("free");
        assert!(MaildropLock::take(&locks, " mario.rossi@PEC.example.it").is_none());
        assert!(MaildropLock::take(&locks, "anna@pec.example.it").is_some());
        drop(a);
        assert!(MaildropLock::take(&locks, "mario.rossi@pec.example.it").is_some());
    }
}
