//! One SMTP session: the command loop, STARTTLS, AUTH and the mail transaction.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::Config;
use crate::address::{PathError, is_helo_name, parse_path_arg};
use crate::auth::{Account, Check, Credentials, check_password, dummy_hash};
use crate::budget::{DataBudget, Share};
use crate::mx::limits::Grey;
use crate::mx::{Arrival, MxPolicy, MxSink, Recipient, Sender};
use crate::sink::{Sink, Submission, new_id};
use crate::wire::{DataDecoder, Line, read_line};

/// What every session shares.
pub(crate) struct Shared {
    pub config: Config,
    pub tls: TlsAcceptor,
    pub role: Role,
    /// What every transaction's message data holds ([`Config::max_data_bytes_in_flight`]).
    pub data_budget: Arc<DataBudget>,
}

/// What the server is for: the differences between the two roles are confined to the greeting,
/// `EHLO`, `AUTH`, the checks at `MAIL`/`RCPT` and where an accepted message goes.
pub(crate) enum Role {
    /// Submission by authenticated mailbox owners.
    Submission(Submitting),
    /// The MX: mail for our domains from other providers and the outside world ([`crate::mx`]).
    Mx(Receiving),
}

pub(crate) struct Submitting {
    pub credentials: Arc<dyn Credentials>,
    pub sink: Arc<dyn Sink>,
    /// Bounds concurrent Argon2 checks (each costs CPU and `m_cost` memory).
    pub hash_slots: Semaphore,
    /// Failed-login lockout per account and per source address (shared by every session).
    pub throttle: Arc<dyn pec_ports::LoginThrottle>,
}

pub(crate) struct Receiving {
    pub policy: Arc<dyn MxPolicy>,
    pub sink: Arc<dyn MxSink>,
    /// The message rate per source and greylisting ([`crate::mx::limits`]).
    pub limits: crate::mx::limits::SourceLimits,
}

impl Shared {
    fn submitting(&self) -> Option<&Submitting> {
        match &self.role {
            Role::Submission(s) => Some(s),
            Role::Mx(_) => None,
        }
    }

    fn receiving(&self) -> Option<&Receiving> {
        match &self.role {
            Role::Mx(r) => Some(r),
            Role::Submission(_) => None,
        }
    }
}

/// The session must end now (connection lost, or a closing reply was already sent).
struct Stop;

/// What the command loop asks for next.
enum Next {
    Continue,
    Close,
    StartTls,
}

/// What reading a client line gave.
/// The answer to a command line that ends with a lone LF (never executed: a client and a relay
/// that disagree on line ends can be made to run smuggled commands).
const BARE_LF: &str = "500 5.5.2 Syntax error: command lines must end with CRLF (bare LF refused, RFC 5321 section 2.3.8)";

enum Read {
    Line,
    TooLong,
    BareLf,
}

struct Transaction {
    reverse_path: String,
    recipients: Vec<String>,
    /// MX only: who the reverse path says is sending (submission: always `Ordinary`, unused).
    sender: Sender,
    /// The `SIZE=` declared at `MAIL` (0: none).
    declared_size: usize,
    /// This transaction's part of the data budget: what `SIZE=` reserved at `MAIL`, then what
    /// the message buffer and its copy hold; given back when the transaction ends (dropped with
    /// it on `RSET`, `EHLO`, `STARTTLS`, a closed connection).
    share: Share,
}

struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    deadline: Instant,
    helo: Option<String>,
    tls: bool,
    user: Option<Account>,
    auth_failures: u32,
    errors: u32,
    commands: usize,
    tx: Option<Transaction>,
    line: Vec<u8>,
}

/// Runs one session to its end. Never panics on client input; every error ends the session.
pub(crate) async fn run(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + shared.config.session_timeout;
    let mut s = Session {
        shared,
        peer,
        shutdown,
        deadline,
        helo: None,
        tls: false,
        user: None,
        auth_failures: 0,
        errors: 0,
        commands: 0,
        tx: None,
        line: Vec::new(),
    };
    let mut io = BufReader::new(tcp);
    let service = match s.shared.role {
        Role::Submission(_) => "PEC submission service",
        Role::Mx(_) => "PEC MX",
    };
    let greeting = format!("220 {} ESMTP {service} ready", s.shared.config.hostname);
    if s.send(&mut io, &greeting).await.is_err() {
        return;
    }
    match s.command_loop(&mut io).await {
        Next::StartTls => {}
        Next::Close | Next::Continue => {
            close(io.get_mut(), &s.shared.config).await;
            return;
        }
    }
    if !io.buffer().is_empty() {
        // RFC 3207 §5: anything pipelined after STARTTLS came in clear text; it must not be
        // taken as if it had come over TLS (CVE-2011-0411).
        warn!(
            bytes = io.buffer().len(),
            "discarding data sent after STARTTLS"
        );
    }
    let tcp = io.into_inner();
    let handshake = timeout(s.shared.config.command_timeout, s.shared.tls.accept(tcp)).await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            info!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            info!("TLS handshake timed out");
            return;
        }
    };
    // RFC 3207 §4.2: forget everything learnt from the client before TLS.
    s.tls = true;
    s.helo = None;
    s.tx = None;
    let mut io = BufReader::new(tls);
    s.command_loop(&mut io).await;
    close(io.get_mut(), &s.shared.config).await;
}

/// Shuts the write side (a TLS close_notify first), without waiting long for the peer.
async fn close<S: AsyncWrite + Unpin>(io: &mut S, config: &Config) {
    let bound = config
        .command_timeout
        .min(std::time::Duration::from_secs(5));
    let _ = timeout(bound, io.shutdown()).await;
}

fn reply_code_is_client_error(reply: &str) -> bool {
    // 550: the MX's refusals of recipients count, so probing for addresses ends with 421.
    ["500", "501", "502", "503", "504", "530", "550", "555"]
        .iter()
        .any(|c| reply.starts_with(c))
}

impl Session {
    fn host(&self) -> &str {
        &self.shared.config.hostname
    }

    /// Writes one reply (lines separated by `\r\n` inside `text`).
    async fn send<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        text: &str,
    ) -> Result<(), Stop> {
        let mut out = Vec::with_capacity(text.len() + 2);
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
        let w = io.get_mut();
        let write = async {
            w.write_all(&out).await?;
            w.flush().await
        };
        match timeout(self.shared.config.command_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                debug!(error = %e, "write failed");
                Err(Stop)
            }
            Err(_) => {
                info!("write timed out");
                Err(Stop)
            }
        }
    }

    /// Sends a reply to a command; a client error counts towards `max_errors`, and reaching it
    /// closes the session with `421`.
    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        text: &str,
    ) -> Result<Next, Stop> {
        self.send(io, text).await?;
        if reply_code_is_client_error(text) {
            self.errors += 1;
            if self.errors >= self.shared.config.max_errors {
                info!(errors = self.errors, "too many errors");
                let bye = format!(
                    "421 4.7.0 {} Too many errors, closing connection",
                    self.host()
                );
                self.send(io, &bye).await?;
                return Ok(Next::Close);
            }
        }
        Ok(Next::Continue)
    }

    /// Reads one client line into `self.line`, bounded in size and time. Timeouts and the
    /// shutdown signal are answered with `421` here.
    async fn read<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        watch_shutdown: bool,
    ) -> Result<Read, Stop> {
        if watch_shutdown && *self.shutdown.borrow() {
            return self.shutting_down(io).await;
        }
        let limit = (Instant::now() + self.shared.config.command_timeout).min(self.deadline);
        let max = self.shared.config.max_line_bytes;
        let shutdown = &mut self.shutdown;
        let line = &mut self.line;
        let result = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop), if watch_shutdown => None,
            r = timeout_at(limit, read_line(io, line, max)) => Some(r),
        };
        match result {
            None => self.shutting_down(io).await,
            Some(Err(_)) => {
                info!("timeout waiting for the client");
                let text = format!(
                    "421 4.4.2 {} Timeout exceeded, closing connection",
                    self.host()
                );
                let _ = self.send(io, &text).await;
                Err(Stop)
            }
            Some(Ok(Ok(Line::Complete))) => Ok(Read::Line),
            Some(Ok(Ok(Line::TooLong))) => Ok(Read::TooLong),
            Some(Ok(Ok(Line::BareLf))) => Ok(Read::BareLf),
            Some(Ok(Ok(Line::Eof))) => {
                debug!("client closed the connection");
                Err(Stop)
            }
            Some(Ok(Err(e))) => {
                debug!(error = %e, "read failed");
                Err(Stop)
            }
        }
    }

    async fn shutting_down<S: AsyncRead + AsyncWrite + Unpin, T>(
        &mut self,
        io: &mut BufReader<S>,
    ) -> Result<T, Stop> {
        let text = format!(
            "421 4.3.2 {} Service shutting down, closing connection",
            self.host()
        );
        let _ = self.send(io, &text).await;
        Err(Stop)
    }

    async fn command_loop<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
    ) -> Next {
        loop {
            match self.command(io).await {
                Ok(Next::Continue) => {}
                Ok(next) => return next,
                Err(Stop) => return Next::Close,
            }
        }
    }

    /// Reads and answers one command.
    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
    ) -> Result<Next, Stop> {
        let read = self.read(io, true).await?;
        self.commands += 1;
        if self.commands > self.shared.config.max_commands {
            info!(commands = self.commands, "too many commands");
            let text = format!(
                "421 4.7.0 {} Too many commands, closing connection",
                self.host()
            );
            self.send(io, &text).await?;
            return Ok(Next::Close);
        }
        match read {
            Read::TooLong => return self.answer(io, "500 5.5.2 Line too long").await,
            Read::BareLf => return self.answer(io, BARE_LF).await,
            Read::Line => {}
        }
        let line = std::mem::take(&mut self.line);
        let next = match std::str::from_utf8(&line) {
            Ok(text) if !text.bytes().any(|b| b.is_ascii_control() && b != b'\t') => {
                self.dispatch(io, text).await
            }
            _ => {
                self.answer(io, "500 5.5.2 Syntax error, command unrecognized")
                    .await
            }
        };
        self.line = line;
        next
    }

    async fn dispatch<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        text: &str,
    ) -> Result<Next, Stop> {
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v, a.trim()),
            None => (text, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => self.ehlo(io, arg, true).await,
            "HELO" => self.ehlo(io, arg, false).await,
            "STARTTLS" => {
                if self.tls {
                    self.answer(io, "503 5.5.1 TLS already active").await
                } else if !arg.is_empty() {
                    self.answer(io, "501 5.5.4 Syntax: STARTTLS").await
                } else {
                    self.send(io, "220 2.0.0 Ready to start TLS").await?;
                    Ok(Next::StartTls)
                }
            }
            "AUTH" if self.shared.submitting().is_some() => self.auth(io, arg).await,
            "AUTH" => self.answer(io, "502 5.5.1 Command not implemented").await,
            "MAIL" => self.mail(io, arg).await,
            "RCPT" => self.rcpt(io, arg).await,
            "DATA" => self.data(io, arg).await,
            "RSET" => {
                if arg.is_empty() {
                    self.tx = None;
                    self.answer(io, "250 2.0.0 Ok").await
                } else {
                    self.answer(io, "501 5.5.4 Syntax: RSET").await
                }
            }
            "NOOP" => self.answer(io, "250 2.0.0 Ok").await,
            "QUIT" => {
                let text = format!("221 2.0.0 {} Bye", self.host());
                self.send(io, &text).await?;
                Ok(Next::Close)
            }
            "VRFY" => {
                if arg.is_empty() {
                    self.answer(io, "501 5.5.4 Syntax: VRFY address").await
                } else {
                    self.answer(
                        io,
                        "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
                    )
                    .await
                }
            }
            "HELP" => {
                // The MX has no AUTH (senders are other MTAs): HELP lists what this role answers.
                let commands = match self.shared.role {
                    Role::Submission(_) => {
                        "214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY QUIT"
                    }
                    Role::Mx(_) => {
                        "214 2.0.0 Commands: EHLO HELO STARTTLS MAIL RCPT DATA RSET NOOP VRFY QUIT"
                    }
                };
                self.answer(io, commands).await
            }
            "EXPN" | "TURN" | "ETRN" | "ATRN" | "BDAT" | "SEND" | "SOML" | "SAML" => {
                self.answer(io, "502 5.5.1 Command not implemented").await
            }
            _ => {
                self.answer(io, "500 5.5.2 Syntax error, command unrecognized")
                    .await
            }
        }
    }

    async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        arg: &str,
        extended: bool,
    ) -> Result<Next, Stop> {
        let name = arg.split(' ').next().unwrap_or_default();
        if !is_helo_name(name) {
            let text = if extended {
                "501 5.5.4 Syntax: EHLO hostname"
            } else {
                "501 5.5.4 Syntax: HELO hostname"
            };
            return self.answer(io, text).await;
        }
        // RFC 5321 §4.1.4: a new EHLO/HELO resets the transaction (not the authentication).
        self.tx = None;
        self.helo = Some(name.to_owned());
        if !extended {
            let text = format!("250 {}", self.host());
            return self.answer(io, &text).await;
        }
        let mut lines = vec![format!("{} greets {name}", self.host())];
        let mx = self.shared.receiving().is_some();
        if mx {
            // RFC 2920: replies to commands sent ahead are already written in order.
            lines.push("PIPELINING".to_owned());
        }
        lines.extend([
            format!("SIZE {}", self.shared.config.max_message_bytes),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ]);
        if !self.tls {
            lines.push("STARTTLS".to_owned());
        } else if !mx {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        let text = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
            .collect::<Vec<_>>()
            .join("\r\n");
        self.answer(io, &text).await
    }

    /// Reads one `AUTH` continuation line (after a `334`) and decodes it. `Ok(None)`: the
    /// exchange failed and was answered.
    async fn auth_response<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        challenge: &str,
    ) -> Result<Option<Vec<u8>>, Stop> {
        self.send(io, challenge).await?;
        match self.read(io, false).await? {
            Read::TooLong => {
                self.answer(io, "500 5.5.6 Authentication exchange line is too long")
                    .await?;
                return Ok(None);
            }
            Read::BareLf => {
                self.answer(io, BARE_LF).await?;
                return Ok(None);
            }
            Read::Line => {}
        }
        let line = std::mem::take(&mut self.line);
        let out = self.decode_b64(io, &line).await;
        self.line = line;
        out
    }

    async fn decode_b64<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        text: &[u8],
    ) -> Result<Option<Vec<u8>>, Stop> {
        let text = text.trim_ascii();
        if text == b"*" {
            self.answer(io, "501 5.0.0 Authentication cancelled")
                .await?;
            return Ok(None);
        }
        if text == b"=" {
            return Ok(Some(Vec::new()));
        }
        let b64 = &base64::engine::general_purpose::STANDARD;
        let lenient = &base64::engine::general_purpose::STANDARD_NO_PAD;
        match b64.decode(text).or_else(|_| lenient.decode(text)) {
            Ok(v) => Ok(Some(v)),
            Err(_) => {
                self.answer(io, "501 5.5.2 Cannot decode Base64 response")
                    .await?;
                Ok(None)
            }
        }
    }

    async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        arg: &str,
    ) -> Result<Next, Stop> {
        if !self.tls {
            // RFC 4954 §6; AUTH is not advertised before STARTTLS.
            return self
                .answer(
                    io,
                    "538 5.7.11 Encryption required for requested authentication mechanism",
                )
                .await;
        }
        if self.helo.is_none() {
            return self.answer(io, "503 5.5.1 Send EHLO first").await;
        }
        if self.user.is_some() {
            return self.answer(io, "503 5.5.1 Already authenticated").await;
        }
        if self.tx.is_some() {
            return self
                .answer(io, "503 5.5.1 AUTH not allowed during a mail transaction")
                .await;
        }
        let (mechanism, initial) = match arg.split_once(' ') {
            Some((m, i)) => (m, Some(i.trim())),
            None => (arg, None),
        };
        let credentials = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(i) => self.decode_b64(io, i.as_bytes()).await?,
                    None => self.auth_response(io, "334 ").await?,
                };
                let Some(response) = response else {
                    return Ok(Next::Continue);
                };
                parse_plain(&response)
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => self.decode_b64(io, i.as_bytes()).await?,
                    // "Username:"
                    None => self.auth_response(io, "334 VXNlcm5hbWU6").await?,
                };
                let Some(user) = user else {
                    return Ok(Next::Continue);
                };
                // "Password:"
                let Some(password) = self.auth_response(io, "334 UGFzc3dvcmQ6").await? else {
                    return Ok(Next::Continue);
                };
                String::from_utf8(user).ok().map(|u| (u, password))
            }
            "" => return self.answer(io, "501 5.5.4 Syntax: AUTH mechanism").await,
            _ => {
                return self
                    .answer(io, "504 5.5.4 Unrecognized authentication type")
                    .await;
            }
        };
        let source = self.peer.ip().to_canonical().to_string();
        let outcome = match credentials {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                let Some(submitting) = self.shared.submitting() else {
                    return Err(Stop);
                };
                let throttle = &submitting.throttle;
                match throttle.allowed(&user, &source, chrono::Utc::now()) {
                    pec_ports::LoginVerdict::Locked { until } => {
                        // Not even the right password: counted per login name and source and
                        // per source, for unknown names too, so this says nothing about
                        // whether a mailbox exists.
                        info!(user = ?user, source = %source, until = %until, "login locked out");
                        return self
                            .answer(
                                io,
                                "454 4.7.0 Too many failed logins for this account or from this address; try again later",
                            )
                            .await;
                    }
                    pec_ports::LoginVerdict::Slowed { delay } => {
                        info!(user = ?user, source = %source, "login slowed: failures from several sources");
                        tokio::time::sleep(delay.to_std().unwrap_or_default()).await;
                    }
                    pec_ports::LoginVerdict::Allowed => {}
                }
                let outcome = self.verify(user.clone(), password).await;
                match &outcome {
                    Verified::Ok(_) => throttle.succeeded(&user, &source, chrono::Utc::now()),
                    Verified::Invalid(_) => throttle.failed(&user, &source, chrono::Utc::now()),
                    Verified::Temporary => {}
                }
                outcome
            }
            _ => {
                info!("malformed or empty credentials");
                Verified::Invalid(None)
            }
        };
        match outcome {
            Verified::Ok(account) => {
                info!(user = %account.address, tenant = %account.tenant, "authenticated");
                self.user = Some(account);
                self.answer(io, "235 2.7.0 Authentication successful").await
            }
            Verified::Temporary => {
                self.answer(io, "454 4.7.0 Temporary authentication failure")
                    .await
            }
            Verified::Invalid(refusal) => {
                self.auth_failures += 1;
                match refusal {
                    // RFC 5248 X.7.13 "User Account Disabled", with what happened and what
                    // to do.
                    Some(text) => self.send(io, &format!("525 5.7.13 {text}")).await?,
                    None => {
                        self.send(io, "535 5.7.8 Authentication credentials invalid")
                            .await?
                    }
                }
                if self.auth_failures >= self.shared.config.max_auth_failures {
                    warn!(
                        failures = self.auth_failures,
                        "too many authentication failures"
                    );
                    let text = format!(
                        "421 4.7.0 {} Too many authentication failures, closing connection",
                        self.host()
                    );
                    self.send(io, &text).await?;
                    return Ok(Next::Close);
                }
                Ok(Next::Continue)
            }
        }
    }

    /// Looks the user up and checks the password (Argon2 in a blocking thread). Unknown users
    /// are checked against a dummy hash, so they take as long as known ones.
    async fn verify(&self, user: String, password: Vec<u8>) -> Verified {
        let config = &self.shared.config;
        let Some(submitting) = self.shared.submitting() else {
            return Verified::Temporary;
        };
        let lookup = timeout(config.command_timeout, submitting.credentials.lookup(&user)).await;
        let account = match lookup {
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
        let Ok(_permit) = submitting.hash_slots.acquire().await else {
            return Verified::Temporary;
        };
        let hash = account.as_ref().map(|a| a.password_hash.clone());
        let cost = config.dummy_hash_cost;
        let check = tokio::task::spawn_blocking(move || {
            let hash = hash.as_deref().unwrap_or_else(|| dummy_hash(cost));
            check_password(&password, hash)
        })
        .await;
        let check = match check {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "password check failed to run");
                return Verified::Temporary;
            }
        };
        match (account, check) {
            (None, _) => {
                info!(user = ?user, "authentication failed: unknown user");
                Verified::Invalid(None)
            }
            (Some(a), Check::BadHash(e)) => {
                error!(user = %a.address, error = %e, "stored password hash is unusable");
                Verified::Temporary
            }
            (Some(a), Check::Mismatch) => {
                info!(user = %a.address, locked = a.locked, "authentication failed: wrong password");
                Verified::Invalid(crate::auth::refusal_for(&a, false))
            }
            (Some(a), Check::Match) if a.locked => {
                warn!(user = %a.address, "authentication refused: mailbox locked");
                Verified::Invalid(crate::auth::refusal_for(&a, true))
            }
            (Some(a), Check::Match) => Verified::Ok(a),
        }
    }

    /// Common preconditions of MAIL, RCPT and DATA; `Some(reply)` when one fails.
    fn transaction_refusal(&self) -> Option<&'static str> {
        if self.helo.is_none() {
            Some("503 5.5.1 Send EHLO first")
        } else if self.user.is_none() && self.shared.submitting().is_some() {
            Some("530 5.7.0 Authentication required")
        } else {
            None
        }
    }

    async fn mail<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        arg: &str,
    ) -> Result<Next, Stop> {
        if let Some(refusal) = self.transaction_refusal() {
            return self.answer(io, refusal).await;
        }
        if self.tx.is_some() {
            return self.answer(io, "503 5.5.1 Sender already specified").await;
        }
        let Some(rest) = strip_prefix_ci(arg, "FROM:") else {
            return self
                .answer(io, "501 5.5.4 Syntax: MAIL FROM:<address>")
                .await;
        };
        let parsed = match parse_path_arg(rest) {
            Ok(p) => p,
            Err(PathError::Syntax) => {
                return self.answer(io, "501 5.1.7 Bad sender address syntax").await;
            }
            Err(PathError::Param) => {
                return self
                    .answer(io, "501 5.5.4 Syntax error in parameters")
                    .await;
            }
        };
        let mx = self.shared.receiving().is_some();
        if parsed.path.is_empty() && !mx {
            return self
                .answer(
                    io,
                    "553 5.1.7 Null reverse-path not accepted: a PEC message needs the sender's mailbox",
                )
                .await;
        }
        let mut seen: Vec<String> = Vec::new();
        let mut declared_size = 0;
        for (key, value) in &parsed.params {
            let key = key.to_ascii_uppercase();
            if seen.contains(&key) {
                return self.answer(io, "501 5.5.4 Duplicate parameter").await;
            }
            match (key.as_str(), value) {
                ("SIZE", Some(v)) => {
                    let size = (v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| v.parse::<u128>().ok())
                        .flatten();
                    let Some(size) = size else {
                        return self.answer(io, "501 5.5.4 Invalid SIZE parameter").await;
                    };
                    if size > self.shared.config.max_message_bytes as u128 {
                        return self
                            .answer(
                                io,
                                "552 5.3.4 Message size exceeds fixed maximum message size",
                            )
                            .await;
                    }
                    // At most max_message_bytes: a usize.
                    declared_size = usize::try_from(size).unwrap_or(usize::MAX);
                }
                ("BODY", Some(v))
                    if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                ("BODY", _) => {
                    return self.answer(io, "501 5.5.4 Invalid BODY parameter").await;
                }
                // RFC 4954 §5: allowed once AUTH is advertised; the value is not used.
                ("AUTH", Some(_)) if !mx => {}
                _ => {
                    return self.answer(io, "555 5.5.4 Unsupported parameter").await;
                }
            }
            seen.push(key);
        }
        if let Some(mx) = self.shared.receiving()
            && !mx
                .limits
                .take_message(self.peer.ip(), std::time::Instant::now())
        {
            warn!(sender = %parsed.path, "message rate of this source exceeded");
            return self
                .answer(
                    io,
                    "451 4.7.1 Too many messages from your address, try again later",
                )
                .await;
        }
        // RFC 1870 §6.1: a declared size the server cannot take now is refused at once (before
        // the policy's lookups: the cheapest checks first when the server is loaded).
        let mut share = self.shared.data_budget.share();
        if declared_size > 0 && !share.cover_buffer(declared_size) {
            let budget = &self.shared.data_budget;
            warn!(
                declared = declared_size,
                in_use = budget.in_use(),
                limit = budget.limit(),
                "data budget exhausted: MAIL with SIZE refused"
            );
            return self.answer(io, INSUFFICIENT_STORAGE).await;
        }
        let reverse_path = parsed.path.to_owned();
        let sender = match self.shared.receiving() {
            Some(mx) if !reverse_path.is_empty() => {
                let asked = timeout(
                    self.shared.config.command_timeout,
                    mx.policy.sender(&reverse_path),
                )
                .await;
                match asked {
                    Ok(Ok(sender)) => sender,
                    Ok(Err(e)) => {
                        warn!(sender = %reverse_path, error = %e, "MX policy: sender lookup failed");
                        return self.answer(io, TEMPORARY_POLICY).await;
                    }
                    Err(_) => {
                        warn!(sender = %reverse_path, "MX policy: sender lookup timed out");
                        return self.answer(io, TEMPORARY_POLICY).await;
                    }
                }
            }
            _ => Sender::Ordinary,
        };
        if sender == Sender::Provider && !self.tls {
            info!(sender = %reverse_path, "a PEC provider without TLS refused");
            return self
                .answer(io, "530 5.7.0 Must issue a STARTTLS command first")
                .await;
        }
        self.tx = Some(Transaction {
            reverse_path,
            recipients: Vec::new(),
            sender,
            declared_size,
            share,
        });
        self.answer(io, "250 2.1.0 Ok").await
    }

    async fn rcpt<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        arg: &str,
    ) -> Result<Next, Stop> {
        if let Some(refusal) = self.transaction_refusal() {
            return self.answer(io, refusal).await;
        }
        let Some(count) = self.tx.as_ref().map(|t| t.recipients.len()) else {
            return self.answer(io, "503 5.5.1 Need MAIL command").await;
        };
        let Some(rest) = strip_prefix_ci(arg, "TO:") else {
            return self.answer(io, "501 5.5.4 Syntax: RCPT TO:<address>").await;
        };
        let parsed = match parse_path_arg(rest) {
            Ok(p) if !p.path.is_empty() => p,
            Ok(_) | Err(PathError::Syntax) => {
                return self
                    .answer(io, "501 5.1.3 Bad recipient address syntax")
                    .await;
            }
            Err(PathError::Param) => {
                return self
                    .answer(io, "501 5.5.4 Syntax error in parameters")
                    .await;
            }
        };
        if !parsed.params.is_empty() {
            return self.answer(io, "555 5.5.4 Unsupported parameter").await;
        }
        if count >= self.shared.config.max_recipients {
            return self.answer(io, "452 4.5.3 Too many recipients").await;
        }
        let path = parsed.path.to_owned();
        if let Some(mx) = self.shared.receiving() {
            let asked = timeout(
                self.shared.config.command_timeout,
                mx.policy.recipient(&path),
            )
            .await;
            let recipient = match asked {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    warn!(recipient = %path, error = %e, "MX policy: recipient lookup failed");
                    return self.answer(io, TEMPORARY_POLICY).await;
                }
                Err(_) => {
                    warn!(recipient = %path, "MX policy: recipient lookup timed out");
                    return self.answer(io, TEMPORARY_POLICY).await;
                }
            };
            let sender = self.tx.as_ref().map_or(Sender::Ordinary, |t| t.sender);
            match (recipient, sender) {
                (Recipient::NotOurs, _) => {
                    info!(recipient = %path, "relaying denied");
                    return self
                        .answer(
                            io,
                            "550 5.7.1 Relaying denied: we do not receive mail for that domain",
                        )
                        .await;
                }
                (Recipient::Unknown, Sender::Ordinary) => {
                    info!(recipient = %path, "unknown mailbox refused");
                    return self
                        .answer(io, "550 5.1.1 Recipient address rejected: no such mailbox")
                        .await;
                }
                (Recipient::Disabled, Sender::Ordinary) => {
                    info!(recipient = %path, "mailbox not in service refused");
                    return self
                        .answer(io, "550 5.2.1 Recipient mailbox is disabled")
                        .await;
                }
                (Recipient::Known, Sender::Ordinary) => {
                    let reverse_path = self.tx.as_ref().map_or("", |t| t.reverse_path.as_str());
                    if let Grey::Wait(wait) = mx.limits.greylist(
                        self.peer.ip(),
                        reverse_path,
                        &path,
                        std::time::Instant::now(),
                    ) {
                        info!(recipient = %path, sender = %reverse_path, "greylisted");
                        let text = format!(
                            "451 4.7.1 Greylisted: please try again in {} seconds",
                            wait.as_secs().max(1)
                        );
                        return self.answer(io, &text).await;
                    }
                }
                // A provider's envelope to an unknown or disabled mailbox is taken: the
                // receiving point answers it with a signed notice of non-delivery. Providers
                // are never greylisted.
                (Recipient::Unknown | Recipient::Disabled, Sender::Provider)
                | (Recipient::Known, Sender::Provider) => {}
            }
        }
        if let Some(tx) = self.tx.as_mut() {
            // The same mailbox twice (in any case) is one recipient: one copy, one receipt.
            if !tx.recipients.iter().any(|r| r.eq_ignore_ascii_case(&path)) {
                tx.recipients.push(path);
            }
        }
        self.answer(io, "250 2.1.5 Ok").await
    }

    async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        arg: &str,
    ) -> Result<Next, Stop> {
        if !arg.is_empty() {
            return self.answer(io, "501 5.5.4 Syntax: DATA").await;
        }
        if let Some(refusal) = self.transaction_refusal() {
            return self.answer(io, refusal).await;
        }
        match &self.tx {
            None => return self.answer(io, "503 5.5.1 Need MAIL command").await,
            Some(tx) if tx.recipients.is_empty() => {
                return self.answer(io, "503 5.5.1 Need RCPT command").await;
            }
            Some(_) => {}
        }
        self.send(io, "354 End data with <CR><LF>.<CR><LF>").await?;
        // The transaction ends with this DATA whatever happens: a lost connection or a timeout
        // below ends the session too.
        let Some(tx) = self.tx.take() else {
            return Err(Stop);
        };
        let Transaction {
            reverse_path,
            recipients,
            sender,
            declared_size,
            share,
        } = tx;
        let mut decoder =
            DataDecoder::new(self.shared.config.max_message_bytes, share, declared_size);
        loop {
            let limit = (Instant::now() + self.shared.config.data_timeout).min(self.deadline);
            let chunk = match timeout_at(limit, io.fill_buf()).await {
                Ok(Ok([])) => {
                    debug!("client closed the connection during DATA");
                    return Err(Stop);
                }
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => {
                    debug!(error = %e, "read failed during DATA");
                    return Err(Stop);
                }
                Err(_) => {
                    info!("timeout during DATA");
                    let text = format!(
                        "421 4.4.2 {} Timeout exceeded, closing connection",
                        self.host()
                    );
                    let _ = self.send(io, &text).await;
                    return Err(Stop);
                }
            };
            let len = chunk.len();
            match decoder.feed(chunk) {
                Some(n) => {
                    io.consume(n);
                    break;
                }
                None => io.consume(len),
            }
        }
        if let Some(text) = self.data_refusal(&decoder) {
            // The transaction is over: its memory and its share go before the client hears.
            drop(decoder);
            return self.answer(io, &text).await;
        }
        let (raw, mut share) = decoder.into_parts();
        if self.shared.receiving().is_some() {
            return self
                .arrive(io, reverse_path, sender, recipients, raw, share)
                .await;
        }
        let (Some(account), Some(helo)) = (self.user.as_ref(), self.helo.as_ref()) else {
            return Err(Stop);
        };
        let received_at = chrono::Utc::now();
        let id = new_id(received_at);
        let client_ip = self.peer.ip().to_canonical().to_string();
        let trace =
            crate::trace::received_field(helo, &client_ip, self.host(), self.tls, &id, received_at);
        let submission = Submission {
            id,
            received_at,
            reverse_path,
            recipients,
            user: account.address.clone(),
            tenant: account.tenant.clone(),
            client_ip,
            helo: helo.clone(),
            tls: self.tls,
            raw,
            trace,
        };
        // The buffer and the copy the sink makes (`Submission::stored`), held until both are
        // gone (`share` outlives `submission`).
        let copy = submission.trace.len().saturating_add(submission.raw.len());
        if !share.hold_at_least(submission.raw.capacity().saturating_add(copy)) {
            self.log_no_room_to_store(submission.raw.len());
            drop((submission, share));
            return self.answer(io, INSUFFICIENT_STORAGE).await;
        }
        let Some(submitting) = self.shared.submitting() else {
            return Err(Stop);
        };
        let stored = timeout(
            self.shared.config.command_timeout,
            submitting.sink.store(&submission),
        )
        .await;
        let text = match stored {
            Ok(Ok(())) => {
                info!(
                    id = %submission.id,
                    user = %submission.user,
                    recipients = submission.recipients.len(),
                    bytes = submission.raw.len(),
                    "message accepted"
                );
                format!("250 2.0.0 Ok: queued as {}", submission.id)
            }
            Ok(Err(e)) => {
                warn!(id = %submission.id, error = %e, "sink failed, message not accepted");
                TEMPORARY_STORE.to_owned()
            }
            Err(_) => {
                warn!(id = %submission.id, "sink timed out, message not accepted");
                TEMPORARY_STORE.to_owned()
            }
        };
        // The transaction is over: its memory and its share go before the client hears, so a
        // transaction the client starts next finds them free.
        drop((submission, share));
        self.answer(io, &text).await
    }

    /// Why a message read to its end is refused, logged; `None`: nothing against it yet.
    fn data_refusal(&self, decoder: &DataDecoder) -> Option<String> {
        if decoder.oversized {
            info!(bytes = decoder.total, "message over the size limit refused");
            return Some("552 5.3.4 Message size exceeds fixed maximum message size".to_owned());
        }
        if decoder.long_line {
            info!("message with a line over 998 octets refused");
            return Some("554 5.6.0 Message refused: a line is longer than 998 characters (RFC 5322 section 2.1.1); fold long headers and encode long body lines".to_owned());
        }
        if decoder.bare_line_end {
            info!("message with bare CR or LF refused");
            return Some("554 5.6.0 Message refused: bare CR or LF (lines must end with CRLF, RFC 5321 section 2.3.8)".to_owned());
        }
        if decoder.over_budget {
            let budget = &self.shared.data_budget;
            warn!(
                bytes = decoder.total,
                in_use = budget.in_use(),
                limit = budget.limit(),
                "data budget exhausted: message refused"
            );
            return Some(INSUFFICIENT_STORAGE.to_owned());
        }
        let domain = crate::trace::trace_domain(self.host());
        if let Some(line) = crate::trace::forged_received(&decoder.raw, &domain) {
            info!(line = %line, "message with a trace field naming our servers refused");
            return Some(format!(
                "554 5.7.1 Message refused: a Received field names our servers ({domain}) but was not written by them; remove it"
            ));
        }
        None
    }
}

impl Session {
    /// Logs that the data budget cannot cover the copy made to store a message (its `bytes`).
    fn log_no_room_to_store(&self, bytes: usize) {
        let budget = &self.shared.data_budget;
        warn!(
            bytes,
            in_use = budget.in_use(),
            limit = budget.limit(),
            "data budget exhausted: no room for the copy to store, message refused"
        );
    }

    /// The MX's end of `DATA`: the loop check, our trace field, the sink. `share` covers `raw`
    /// and the copy the sink makes; it is held until both are gone.
    async fn arrive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        reverse_path: String,
        sender: Sender,
        recipients: Vec<String>,
        raw: Vec<u8>,
        mut share: Share,
    ) -> Result<Next, Stop> {
        let received = crate::mx::received_count(&raw);
        if received > crate::mx::MAX_RECEIVED {
            info!(received, "looping message refused");
            drop((raw, share));
            return self
                .answer(
                    io,
                    "554 5.4.6 Message refused: too many Received fields, a mail loop",
                )
                .await;
        }
        let Some(helo) = self.helo.as_ref() else {
            return Err(Stop);
        };
        let received_at = chrono::Utc::now();
        let id = new_id(received_at);
        let client_ip = self.peer.ip().to_canonical().to_string();
        let protocol = if self.tls { "ESMTPS" } else { "ESMTP" };
        let trace = crate::trace::received_field_with(
            helo,
            &client_ip,
            self.host(),
            protocol,
            &id,
            received_at,
        );
        let arrival = Arrival {
            id,
            received_at,
            reverse_path,
            sender,
            recipients,
            client_ip,
            helo: helo.clone(),
            tls: self.tls,
            raw,
            trace,
        };
        // `Arrival::stored`: "Return-Path: <" + path + ">\r\n", the trace field, the message.
        let copy = (arrival.reverse_path.len() + 17)
            .saturating_add(arrival.trace.len())
            .saturating_add(arrival.raw.len());
        if !share.hold_at_least(arrival.raw.capacity().saturating_add(copy)) {
            self.log_no_room_to_store(arrival.raw.len());
            drop((arrival, share));
            return self.answer(io, INSUFFICIENT_STORAGE).await;
        }
        let Some(mx) = self.shared.receiving() else {
            return Err(Stop);
        };
        let stored = timeout(self.shared.config.command_timeout, mx.sink.store(&arrival)).await;
        let text = match stored {
            Ok(Ok(())) => {
                info!(
                    id = %arrival.id,
                    sender = %arrival.reverse_path,
                    provider = arrival.sender == Sender::Provider,
                    recipients = arrival.recipients.len(),
                    bytes = arrival.raw.len(),
                    tls = arrival.tls,
                    "mail received"
                );
                format!("250 2.0.0 Ok: queued as {}", arrival.id)
            }
            Ok(Err(e)) => {
                warn!(id = %arrival.id, error = %e, "MX sink failed, message not accepted");
                TEMPORARY_STORE.to_owned()
            }
            Err(_) => {
                warn!(id = %arrival.id, "MX sink timed out, message not accepted");
                TEMPORARY_STORE.to_owned()
            }
        };
        // As for submissions: the memory and the share go before the client hears.
        drop((arrival, share));
        self.answer(io, &text).await
    }
}

/// The policy (state table, provider index) could not answer.
const TEMPORARY_POLICY: &str =
    "451 4.3.0 Temporary failure looking up the address: try again later";
const TEMPORARY_STORE: &str = "451 4.3.0 Temporary failure, message not stored: try again later";
/// The data budget ([`Config::max_data_bytes_in_flight`]) cannot cover the message now (RFC 3463
/// 4.3.1: mail system full; transient, the client retries later).
const INSUFFICIENT_STORAGE: &str = "452 4.3.1 Insufficient system storage, try again later";

enum Verified {
    Ok(Account),
    /// Refused; with what a locked mailbox's user is told (`auth::refusal_for`).
    Invalid(Option<String>),
    Temporary,
}

/// `[authzid] NUL authcid NUL passwd` (RFC 4616). An authorization identity other than the
/// login name is not supported: such a response is invalid.
fn parse_plain(response: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut parts = response.split(|&b| b == 0);
    let authzid = parts.next()?;
    let authcid = parts.next()?;
    let passwd = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    if !authzid.is_empty() && authzid != authcid {
        return None;
    }
    let user = String::from_utf8(authcid.to_vec()).ok()?;
    Some((user, passwd.to_vec()))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        assert_eq!(
            parse_plain(b"\0u@x.it\0pw"),
            Some(("u@x.it".to_owned(), b"pw".to_vec()))
        );
        assert_eq!(
            parse_plain(b"u@x.it\0u@x.it\0pw"),
            Some(("u@x.it".to_owned(), b"pw".to_vec()))
        );
        assert_eq!(parse_plain(b"other\0u@x.it\0pw"), None);
        assert_eq!(parse_plain(b"\0u@x.it"), None);
        assert_eq!(parse_plain(b"\0u\0p\0q"), None);
        assert_eq!(parse_plain(b"\0\xff\0p"), None);
    }

    #[test]
    fn prefix() {
        assert_eq!(strip_prefix_ci("from:<a@b>", "FROM:"), Some("<a@b>"));
        assert_eq!(strip_prefix_ci("FRO", "FROM:"), None);
        assert_eq!(strip_prefix_ci("FRÖM:", "FROM:"), None);
    }
}
