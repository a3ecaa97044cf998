//! One IMAP session: the I/O driver around `imap-next`'s server flow, login, and the commands.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{AString, Atom, QuotedChar, Tag, Text, Vec1};
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_next::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
use imap_next::imap_types::flag::{Flag, FlagNameAttribute, FlagPerm, StoreResponse, StoreType};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::response::{
    Capability, Code, CodeOther, CommandContinuationRequest, Data, Greeting, Status, StatusKind,
};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::SequenceSet;
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};
use imap_next::server::{Error as FlowError, Event, Options, Server as Flow};
use imap_next::{Interrupt, Io, State};
use pec_ports::LoginVerdict;
use pec_ports::mailstore::{
    FlagChange, Flags, FolderInfo, INBOX, MailStore, MailStoreError, MessageMeta, Origin, SEEN,
    is_inbox,
};
use pec_submit::{Account, Credentials, PasswordCheck, check_password, dummy_hash};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::time::{timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use crate::fetch::{self, from_imap_flag, istring};
use crate::search::{self, Candidate};
use crate::selected::Selected;
use crate::{Config, Notifier, Security};

/// What every session shares.
pub(crate) struct Shared<S> {
    pub config: Config,
    pub tls: TlsAcceptor,
    pub credentials: Arc<dyn Credentials>,
    pub throttle: Arc<dyn pec_ports::LoginThrottle>,
    pub store: Arc<S>,
    pub notifier: Notifier,
    /// Bounds concurrent Argon2 checks.
    pub hash_slots: Semaphore,
    pub sessions: Arc<Semaphore>,
}

/// The session ends now (connection lost or closed).
struct Stop;

/// A tagged answer, with its code and text.
type Answer = Status<'static>;

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
/// [`Security::ImplicitTls`], after `STARTTLS` for [`Security::StartTls`]); `None` ends it.
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
                    info!("STARTTLS handshake failed or timed out");
                    return;
                };
                session.tls = true;
                let _ = session.drive(tls, false).await;
            }
        }
    }
    info!("session closed");
}

/// Over the session limit: `BYE` and close.
pub(crate) async fn refuse<S>(shared: Arc<Shared<S>>, tcp: TcpStream, security: Security) {
    warn!("too many sessions, connection refused");
    let bye = b"* BYE Too many connections, try again later\r\n";
    let wait = std::time::Duration::from_secs(5);
    match security {
        Security::StartTls => {
            let mut tcp = tcp;
            let _ = timeout(wait, tcp.write_all(bye)).await;
        }
        Security::ImplicitTls => {
            if let Ok(Ok(mut tls)) = timeout(wait, shared.tls.accept(tcp)).await {
                let _ = timeout(wait, async {
                    tls.write_all(bye).await?;
                    tls.shutdown().await
                })
                .await;
            }
        }
    }
}

fn text(s: &str) -> Text<'static> {
    Text::try_from(s.to_owned()).unwrap_or_else(|_| Text::unvalidated("error"))
}

fn status(
    kind: StatusKind,
    tag: Option<Tag<'static>>,
    code: Option<Code<'static>>,
    t: &str,
) -> Answer {
    match Status::new(tag, kind, code, text(t)) {
        Ok(s) => s,
        Err(never) => match never {},
    }
}

fn ok(tag: &Tag<'static>, code: Option<Code<'static>>, t: &str) -> Answer {
    status(StatusKind::Ok, Some(tag.clone()), code, t)
}

fn no(tag: &Tag<'static>, code: Option<Code<'static>>, t: &str) -> Answer {
    status(StatusKind::No, Some(tag.clone()), code, t)
}

fn bad(tag: &Tag<'static>, t: &str) -> Answer {
    status(StatusKind::Bad, Some(tag.clone()), None, t)
}

fn other(code: &'static str) -> Option<Code<'static>> {
    Some(Code::Other(CodeOther::unvalidated(code.as_bytes())))
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The tag at the start of a line that could not be parsed, if it is a valid tag.
fn guess_tag(bytes: &[u8]) -> Option<Tag<'static>> {
    let end = bytes.iter().position(|b| *b == b' ')?;
    let tag = std::str::from_utf8(&bytes[..end]).ok()?;
    Tag::try_from(tag.to_owned()).ok()
}

/// The stored folder name a client's mailbox name stands for (before checking it exists).
fn folder_name(mailbox: &Mailbox<'_>) -> Option<String> {
    match mailbox {
        Mailbox::Inbox => Some(INBOX.to_owned()),
        Mailbox::Other(other) => {
            let name = std::str::from_utf8(other.as_ref()).ok()?;
            Some(if is_inbox(name) {
                INBOX.to_owned()
            } else {
                name.to_owned()
            })
        }
    }
}

fn mailbox_of(name: &str) -> Mailbox<'static> {
    Mailbox::try_from(name.to_owned()).unwrap_or(Mailbox::Inbox)
}

/// `*` and `%` wildcard match (one level of folders: both match anything).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*' | b'%', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some((p, rest)) => name
            .split_first()
            .is_some_and(|(n, tail)| n == p && wildcard(rest, tail)),
    }
}

fn uid_set(uids: &[u32]) -> Option<UidSet> {
    let elements: Vec<UidElement> = uids.iter().map(|u| UidElement::Single(nz(*u))).collect();
    Vec1::try_from(elements).ok().map(UidSet)
}

fn kib(octets: u64) -> u64 {
    octets.div_ceil(1024)
}

struct Session<S> {
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    changes: broadcast::Receiver<String>,
    tls: bool,
    user: Option<Account>,
    selected: Option<Selected>,
    /// The tag of an AUTHENTICATE waiting for the client's response.
    auth_tag: Option<Tag<'static>>,
    /// The tag of the IDLE in progress.
    idle_tag: Option<Tag<'static>>,
    auth_failures: u32,
    errors: u32,
    closing: bool,
}

impl<S: MailStore + 'static> Session<S> {
    fn new(shared: Arc<Shared<S>>, peer: SocketAddr, stop: watch::Receiver<bool>) -> Self {
        Session {
            changes: shared.notifier.subscribe(),
            shared,
            peer,
            stop,
            tls: false,
            user: None,
            selected: None,
            auth_tag: None,
            idle_tag: None,
            auth_failures: 0,
            errors: 0,
            closing: false,
        }
    }

    fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        if self.tls {
            caps.push(Capability::Auth(AuthMechanism::Plain));
            caps.push(Capability::SaslIr);
        } else {
            caps.push(Capability::StartTls);
            caps.push(Capability::LoginDisabled);
        }
        caps.extend([
            Capability::LiteralPlus,
            Capability::Id,
            Capability::Enable,
            Capability::Idle,
            Capability::Namespace,
            Capability::UidPlus,
            Capability::Move,
            Capability::Unselect,
            Capability::Quota,
            Capability::QuotaRes(Resource::Storage),
        ]);
        if let Ok(atom) = Atom::try_from("SPECIAL-USE") {
            caps.push(Capability::from(atom));
        }
        Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
    }

    fn address(&self) -> Option<&str> {
        self.user.as_ref().map(|a| a.address.as_str())
    }

    /// Runs the protocol over `io` until the session ends (`Ok(None)`) or STARTTLS asks for
    /// the TLS handshake (`Ok(Some(io))`, nothing read past the command).
    async fn drive<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut io: IO,
        greet: bool,
    ) -> Result<Option<IO>, Stop> {
        let config = &self.shared.config;
        let mut options = Options::default();
        options.max_literal_size = config.max_literal_bytes;
        options.max_command_size = config
            .max_command_bytes
            .max(config.max_literal_bytes + 1024);
        let _ = options.set_literal_reject_text("Literal too large".to_owned());
        let _ = options.set_literal_accept_text("Ready for literal data".to_owned());
        let greeting = Greeting::ok(
            Some(Code::Capability(self.capabilities())),
            "PEC IMAP server ready",
        )
        .unwrap_or_else(|_| Greeting::ok(None, "ready").unwrap_or_else(|_| unreachable!()));
        let mut flow = Flow::new(options, greeting.into_static_greeting());
        let mut discard_greeting = !greet;
        let mut starttls = None;
        let mut buf = vec![0u8; 16 * 1024];
        let mut poll = tokio::time::interval(
            config
                .idle_poll
                .unwrap_or(std::time::Duration::from_secs(3600)),
        );
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_counter = None;
        // When the server began waiting for the client (`None` while it has input to work
        // on): the login and idle timeouts count from here, so that IDLE's wake-ups (a poll
        // tick, any mailbox's change notification) do not restart them.
        let mut silent_since: Option<tokio::time::Instant> = None;
        loop {
            match flow.next() {
                Ok(Event::GreetingSent { .. }) => discard_greeting = false,
                Ok(Event::ResponseSent { handle, .. }) => {
                    if starttls == Some(handle) {
                        return Ok(Some(io));
                    }
                    if self.closing {
                        let _ = io.shutdown().await;
                        return Ok(None);
                    }
                }
                Ok(Event::CommandReceived { command }) => {
                    self.command(&mut flow, command, &mut starttls).await
                }
                Ok(Event::CommandAuthenticateReceived {
                    command_authenticate,
                }) => {
                    let c = command_authenticate;
                    self.authenticate(
                        &mut flow,
                        c.tag,
                        c.mechanism,
                        c.initial_response.map(|s| s.declassify().to_vec()),
                    )
                    .await;
                }
                Ok(Event::AuthenticateDataReceived { authenticate_data }) => {
                    let tag = self
                        .auth_tag
                        .take()
                        .unwrap_or_else(|| Tag::unvalidated("*"));
                    match authenticate_data {
                        AuthenticateData::Continue(data) => {
                            let data = data.declassify().to_vec();
                            self.finish_plain(&mut flow, tag, &data).await;
                        }
                        AuthenticateData::Cancel => {
                            let _ = flow.authenticate_finish(bad(&tag, "AUTHENTICATE cancelled"));
                        }
                    }
                }
                Ok(Event::IdleCommandReceived { tag }) => {
                    if self.user.is_none() {
                        let _ = flow.idle_reject(bad(&tag, "Log in first"));
                    } else if let Ok(cont) = CommandContinuationRequest::basic(None, "idling") {
                        let _ = flow.idle_accept(cont);
                        self.idle_tag = Some(tag);
                        last_counter = None;
                    }
                }
                Ok(Event::IdleDoneReceived) => {
                    if let Some(tag) = self.idle_tag.take() {
                        self.sync(&mut flow, true).await;
                        flow.enqueue_status(ok(&tag, None, "IDLE terminated"));
                    }
                }
                Err(Interrupt::Io(Io::Output(bytes))) => {
                    if discard_greeting {
                        continue;
                    }
                    let write = async {
                        io.write_all(&bytes).await?;
                        io.flush().await
                    };
                    match timeout(self.shared.config.write_timeout, write).await {
                        Ok(Ok(())) => {}
                        _ => return Err(Stop),
                    }
                }
                Err(Interrupt::Io(Io::NeedMoreInput)) => {
                    let wait = if self.user.is_some() {
                        self.shared.config.idle_timeout
                    } else {
                        self.shared.config.login_timeout
                    };
                    let idling = self.idle_tag.is_some();
                    let polling = idling && self.shared.config.idle_poll.is_some();
                    let since = *silent_since.get_or_insert_with(tokio::time::Instant::now);
                    tokio::select! {
                        read = timeout_at(since + wait, io.read(&mut buf)) => match read {
                            Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop),
                            Ok(Ok(n)) => {
                                silent_since = None;
                                flow.enqueue_input(&buf[..n]);
                            }
                            Err(_) => {
                                info!("idle timeout");
                                self.bye(&mut flow, "Autologout: idle for too long");
                            }
                        },
                        changed = self.changes.recv(), if idling => {
                            let mine = match changed {
                                Ok(address) => Some(address.as_str()) == self.address(),
                                Err(broadcast::error::RecvError::Lagged(_)) => true,
                                Err(broadcast::error::RecvError::Closed) => false,
                            };
                            if mine {
                                self.sync(&mut flow, true).await;
                            }
                        }
                        _ = poll.tick(), if polling => {
                            if let Some(address) = self.address().map(str::to_owned)
                                && let Ok(counter) = self.shared.store.change_counter(&address).await
                            {
                                if last_counter.is_some_and(|c| c != counter) {
                                    self.sync(&mut flow, true).await;
                                }
                                last_counter = Some(counter);
                            }
                        }
                        _ = self.stop.changed() => {
                            self.bye(&mut flow, "Server shutting down");
                        }
                    }
                }
                Err(Interrupt::Error(e)) => {
                    self.errors += 1;
                    let (text, bytes) = match &e {
                        FlowError::LiteralTooLong { .. } => ("", None),
                        FlowError::CommandTooLong { discarded_bytes } => {
                            ("Command too long", Some(discarded_bytes))
                        }
                        FlowError::ExpectedCrlfGotLf { discarded_bytes } => {
                            ("Lines must end with CRLF", Some(discarded_bytes))
                        }
                        FlowError::MalformedMessage { discarded_bytes } => {
                            ("Syntax error", Some(discarded_bytes))
                        }
                    };
                    info!(error = %e, "bad input");
                    if let Some(bytes) = bytes {
                        let tag = guess_tag(bytes.declassify());
                        flow.enqueue_status(status(StatusKind::Bad, tag, None, text));
                    }
                    if self.errors >= self.shared.config.max_errors {
                        self.bye(&mut flow, "Too many errors");
                    }
                }
            }
        }
    }

    fn bye(&mut self, flow: &mut Flow, t: &str) {
        let Ok(bye) = Status::bye(None, text(t));
        flow.enqueue_status(bye);
        self.closing = true;
    }

    /// Tells the client what changed in the selected folder (`expunges`: EXPUNGE allowed now).
    async fn sync(&mut self, flow: &mut Flow, expunges: bool) {
        let (Some(address), Some(selected)) = (
            self.user.as_ref().map(|a| a.address.clone()),
            self.selected.as_mut(),
        ) else {
            return;
        };
        match self.shared.store.messages(&address, &selected.folder).await {
            Ok(messages) => {
                for data in selected.sync(&messages, expunges) {
                    flow.enqueue_data(data);
                }
            }
            Err(e) => warn!(error = %e, "mailbox sync failed"),
        }
    }

    async fn command(
        &mut self,
        flow: &mut Flow,
        command: Command<'static>,
        starttls: &mut Option<imap_next::server::ResponseHandle>,
    ) {
        let tag = command.tag;
        let body = command.body;
        let name = body.name();
        // Commands valid in every state.
        let answer = match body {
            CommandBody::Capability => {
                flow.enqueue_data(Data::Capability(self.capabilities()));
                ok(&tag, None, "CAPABILITY completed")
            }
            CommandBody::Noop | CommandBody::Check => {
                self.sync(flow, true).await;
                ok(&tag, None, "NOOP completed")
            }
            CommandBody::Logout => {
                self.bye(flow, "Logging out");
                ok(&tag, None, "LOGOUT completed")
            }
            CommandBody::Id { .. } => {
                let params = vec![(
                    istring(b"name"),
                    imap_next::imap_types::core::NString(Some(istring(b"pec-imap"))),
                )];
                flow.enqueue_data(Data::Id {
                    parameters: Some(params),
                });
                ok(&tag, None, "ID completed")
            }
            CommandBody::StartTLS => {
                if self.tls {
                    bad(&tag, "TLS is already active")
                } else {
                    *starttls =
                        Some(flow.enqueue_status(ok(&tag, None, "Begin TLS negotiation now")));
                    return;
                }
            }
            CommandBody::Login { username, password } => {
                self.login(flow, tag, username, password.declassify().clone())
                    .await;
                return;
            }
            body if self.user.is_none() => {
                info!(command = body.name(), "command before authentication");
                bad(&tag, "Log in first")
            }
            body => self.authenticated(flow, &tag, body).await,
        };
        // Expunges may not be sent during FETCH, STORE and SEARCH (RFC 9051 §7.5.1).
        let expunges = !matches!(
            name,
            "FETCH" | "STORE" | "SEARCH" | "UID FETCH" | "UID STORE" | "UID SEARCH"
        );
        if self.user.is_some()
            && self.selected.is_some()
            && !self.closing
            && kind_of(&answer) == Some(StatusKind::Ok)
        {
            self.sync(flow, expunges).await;
        }
        if kind_of(&answer) == Some(StatusKind::Bad) {
            self.errors += 1;
            if self.errors >= self.shared.config.max_errors {
                flow.enqueue_status(answer);
                self.bye(flow, "Too many errors");
                return;
            }
        }
        flow.enqueue_status(answer);
    }

    async fn login(
        &mut self,
        flow: &mut Flow,
        tag: Tag<'static>,
        username: AString<'static>,
        password: AString<'static>,
    ) {
        if !self.tls {
            flow.enqueue_status(no(
                &tag,
                other("PRIVACYREQUIRED"),
                "LOGIN is only allowed over TLS",
            ));
            return;
        }
        if self.user.is_some() {
            flow.enqueue_status(bad(&tag, "Already authenticated"));
            return;
        }
        let user = String::from_utf8_lossy(username.as_ref()).into_owned();
        let answer = self.verify(user, password.as_ref().to_vec(), &tag).await;
        flow.enqueue_status(answer);
        self.after_auth_failure(flow);
    }

    async fn authenticate(
        &mut self,
        flow: &mut Flow,
        tag: Tag<'static>,
        mechanism: AuthMechanism<'static>,
        initial: Option<Vec<u8>>,
    ) {
        let refusal = if !self.tls {
            Some(no(
                &tag,
                other("PRIVACYREQUIRED"),
                "AUTHENTICATE is only allowed over TLS",
            ))
        } else if self.user.is_some() {
            Some(bad(&tag, "Already authenticated"))
        } else if mechanism != AuthMechanism::Plain {
            Some(no(
                &tag,
                other("CANNOT"),
                "Only AUTHENTICATE PLAIN is supported",
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let _ = flow.authenticate_finish(refusal);
            return;
        }
        match initial {
            Some(data) => self.finish_plain(flow, tag, &data).await,
            None => {
                self.auth_tag = Some(tag);
                let _ = flow.authenticate_continue(CommandContinuationRequest::base64(
                    Cow::Borrowed(&b""[..]),
                ));
            }
        }
    }

    async fn finish_plain(&mut self, flow: &mut Flow, tag: Tag<'static>, data: &[u8]) {
        let mut parts = data.split(|b| *b == 0);
        let answer = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(authz), Some(user), Some(password), None)
                if authz.is_empty() || authz == user =>
            {
                let user = String::from_utf8_lossy(user).into_owned();
                self.verify(user, password.to_vec(), &tag).await
            }
            _ => bad(&tag, "Malformed PLAIN response"),
        };
        let _ = flow.authenticate_finish(answer);
        self.after_auth_failure(flow);
    }

    fn after_auth_failure(&mut self, flow: &mut Flow) {
        if self.user.is_none()
            && self.auth_failures >= self.shared.config.max_auth_failures
            && !self.closing
        {
            self.bye(flow, "Too many authentication failures");
        }
    }

    /// Checks a login against the throttle and the credential store (as the SMTP gateway does).
    async fn verify(&mut self, user: String, password: Vec<u8>, tag: &Tag<'static>) -> Answer {
        let source = self.peer.ip().to_canonical().to_string();
        let throttle = Arc::clone(&self.shared.throttle);
        let failed = || no(tag, other("AUTHENTICATIONFAILED"), "Authentication failed");
        if user.is_empty() || password.is_empty() {
            self.auth_failures += 1;
            return failed();
        }
        match throttle.allowed(&user, &source, chrono::Utc::now()) {
            LoginVerdict::Locked { until } => {
                info!(user = ?user, %source, %until, "login locked out");
                self.auth_failures += 1;
                return no(
                    tag,
                    other("UNAVAILABLE"),
                    "Too many failed logins for this account or from this address; try again later",
                );
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
                    return no(
                        tag,
                        other("UNAVAILABLE"),
                        "Temporary authentication failure",
                    );
                }
                Err(_) => {
                    warn!(user = ?user, "credential lookup timed out");
                    return no(
                        tag,
                        other("UNAVAILABLE"),
                        "Temporary authentication failure",
                    );
                }
            };
        let Ok(_permit) = self.shared.hash_slots.acquire().await else {
            return no(
                tag,
                other("UNAVAILABLE"),
                "Temporary authentication failure",
            );
        };
        let hash = account.as_ref().map(|a| a.password_hash.clone());
        let cost = config.dummy_hash_cost;
        let check = tokio::task::spawn_blocking(move || {
            let hash = hash.as_deref().unwrap_or_else(|| dummy_hash(cost));
            check_password(&password, hash)
        })
        .await;
        // What a locked mailbox's user is told instead of the generic failure.
        let mut refusal = None;
        let outcome = match (account, check) {
            (_, Err(e)) => {
                error!(error = %e, "password check failed to run");
                return no(
                    tag,
                    other("UNAVAILABLE"),
                    "Temporary authentication failure",
                );
            }
            (None, _) => {
                info!(user = ?user, "authentication failed: unknown user");
                None
            }
            (Some(a), Ok(PasswordCheck::BadHash(e))) => {
                error!(user = %a.address, error = %e, "stored password hash is unusable");
                return no(
                    tag,
                    other("UNAVAILABLE"),
                    "Temporary authentication failure",
                );
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
                self.user = Some(account);
                let caps = self.capabilities();
                ok(tag, Some(Code::Capability(caps)), "Logged in")
            }
            None => {
                throttle.failed(&user, &source, chrono::Utc::now());
                self.auth_failures += 1;
                match refusal {
                    // RFC 5530: the user should contact the administrator; the text says
                    // what happened and what to do.
                    Some(text) => no(tag, other("CONTACTADMIN"), &text),
                    None => failed(),
                }
            }
        }
    }

    /// The user's folder named `mailbox`, or the `NO [NONEXISTENT]` every other name gets.
    async fn find_folder(
        &self,
        tag: &Tag<'static>,
        mailbox: &Mailbox<'_>,
    ) -> Result<FolderInfo, Answer> {
        let address = self.address().unwrap_or_default();
        let nonexistent = || no(tag, other("NONEXISTENT"), "No such mailbox");
        let Some(name) = folder_name(mailbox) else {
            return Err(nonexistent());
        };
        match self.shared.store.folder(address, &name).await {
            Ok(Some(info)) => Ok(info),
            Ok(None) | Err(MailStoreError::NoFolder(_)) => Err(nonexistent()),
            Err(e) => Err(self.store_error(tag, &e)),
        }
    }

    fn store_error(&self, tag: &Tag<'static>, e: &MailStoreError) -> Answer {
        match e {
            MailStoreError::NoFolder(_) => no(tag, other("NONEXISTENT"), "No such mailbox"),
            MailStoreError::OverQuota { .. } => no(tag, Some(Code::OverQuota), "Quota exceeded"),
            MailStoreError::BadKey(m) | MailStoreError::Unavailable(m) => {
                warn!(error = %m, "mail store unavailable");
                no(tag, other("UNAVAILABLE"), "Mailbox temporarily unavailable")
            }
        }
    }

    async fn authenticated(
        &mut self,
        flow: &mut Flow,
        tag: &Tag<'static>,
        body: CommandBody<'static>,
    ) -> Answer {
        let address = self.address().unwrap_or_default().to_owned();
        let store = Arc::clone(&self.shared.store);
        match body {
            CommandBody::Enable { .. } => {
                flow.enqueue_data(Data::Enabled {
                    capabilities: vec![],
                });
                ok(tag, None, "ENABLE completed")
            }
            CommandBody::Namespace => {
                let personal = vec![imap_next::imap_types::extensions::namespace::Namespace {
                    prefix: istring(b""),
                    delimiter: QuotedChar::try_from('/').ok(),
                    extensions: vec![],
                }];
                flow.enqueue_data(Data::Namespace {
                    personal,
                    other: vec![],
                    shared: vec![],
                });
                ok(tag, None, "NAMESPACE completed")
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            }
            | CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                let mut pattern: Vec<u8> = match &reference {
                    Mailbox::Inbox => b"INBOX".to_vec(),
                    Mailbox::Other(o) => o.as_ref().to_vec(),
                };
                pattern.extend_from_slice(match &mailbox_wildcard {
                    ListMailbox::Token(t) => t.as_ref(),
                    ListMailbox::String(s) => s.as_ref(),
                });
                let delimiter = QuotedChar::try_from('/').ok();
                if pattern.is_empty() {
                    flow.enqueue_data(Data::List {
                        items: vec![FlagNameAttribute::Noselect],
                        delimiter,
                        mailbox: mailbox_of(""),
                    });
                    return ok(tag, None, "LIST completed");
                }
                let folders = match store.folders(&address).await {
                    Ok(f) => f,
                    Err(e) => return self.store_error(tag, &e),
                };
                for f in folders {
                    let matched = if f.name == INBOX {
                        wildcard(&pattern.to_ascii_uppercase(), b"INBOX")
                    } else {
                        wildcard(&pattern, f.name.as_bytes())
                    };
                    if !matched {
                        continue;
                    }
                    let mut items = vec![];
                    if let Ok(a) = Atom::try_from("HasNoChildren") {
                        items.push(FlagNameAttribute::from(a));
                    }
                    if let Some(use_) = f.special_use
                        && let Ok(a) =
                            Atom::try_from(use_.attribute().trim_start_matches('\\').to_owned())
                    {
                        items.push(FlagNameAttribute::from(a));
                    }
                    flow.enqueue_data(Data::List {
                        items,
                        delimiter,
                        mailbox: mailbox_of(&f.name),
                    });
                }
                ok(tag, None, "LIST completed")
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => {
                let info = match self.find_folder(tag, &mailbox).await {
                    Ok(i) => i,
                    Err(a) => return a,
                };
                let items: Vec<StatusDataItem> = item_names
                    .iter()
                    .filter_map(|n| match n {
                        StatusDataItemName::Messages => {
                            Some(StatusDataItem::Messages(info.messages))
                        }
                        StatusDataItemName::Recent => Some(StatusDataItem::Recent(0)),
                        StatusDataItemName::UidNext => {
                            Some(StatusDataItem::UidNext(nz(info.uid_next)))
                        }
                        StatusDataItemName::UidValidity => {
                            Some(StatusDataItem::UidValidity(nz(info.uid_validity)))
                        }
                        StatusDataItemName::Unseen => Some(StatusDataItem::Unseen(info.unseen)),
                        _ => None,
                    })
                    .collect();
                flow.enqueue_data(Data::Status {
                    mailbox: mailbox_of(&info.name),
                    items: items.into(),
                });
                ok(tag, None, "STATUS completed")
            }
            CommandBody::Select { mailbox, .. } => self.select(flow, tag, &mailbox, false).await,
            CommandBody::Examine { mailbox, .. } => self.select(flow, tag, &mailbox, true).await,
            CommandBody::Create { .. }
            | CommandBody::Delete { .. }
            | CommandBody::Rename { .. } => no(
                tag,
                other("CANNOT"),
                "Folders are fixed: INBOX, Sent, Drafts, Junk, Trash",
            ),
            CommandBody::Subscribe { .. } | CommandBody::Unsubscribe { .. } => {
                ok(tag, None, "Every folder is subscribed")
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(tag, &mailbox, flags, date, message).await,
            CommandBody::GetQuotaRoot { mailbox } => {
                let info = match self.find_folder(tag, &mailbox).await {
                    Ok(i) => i,
                    Err(a) => return a,
                };
                let root = AString::try_from("")
                    .unwrap_or_else(|_| AString::from(Atom::unvalidated("ROOT")));
                flow.enqueue_data(Data::QuotaRoot {
                    mailbox: mailbox_of(&info.name),
                    roots: vec![root.clone()],
                });
                match self.quota_data(root).await {
                    Ok(d) => flow.enqueue_data(d),
                    Err(e) => return self.store_error(tag, &e),
                };
                ok(tag, None, "GETQUOTAROOT completed")
            }
            CommandBody::GetQuota { root } => {
                if !root.as_ref().is_empty() {
                    return no(tag, other("NONEXISTENT"), "No such quota root");
                }
                match self.quota_data(root).await {
                    Ok(d) => flow.enqueue_data(d),
                    Err(e) => return self.store_error(tag, &e),
                };
                ok(tag, None, "GETQUOTA completed")
            }
            CommandBody::SetQuota { .. } => {
                no(tag, other("NOPERM"), "Quotas are set by the provider")
            }
            body if self.selected.is_none() => {
                info!(command = body.name(), "command needs a selected folder");
                bad(tag, "No folder selected")
            }
            body => self.in_folder(flow, tag, body).await,
        }
    }

    async fn quota_data(&self, root: AString<'static>) -> Result<Data<'static>, MailStoreError> {
        let q = self
            .shared
            .store
            .quota(self.address().unwrap_or_default())
            .await?;
        let get = QuotaGet {
            resource: Resource::Storage,
            usage: kib(q.used),
            limit: kib(q.limit),
        };
        Ok(Data::Quota {
            root,
            quotas: Vec1::from(get),
        })
    }

    async fn select(
        &mut self,
        flow: &mut Flow,
        tag: &Tag<'static>,
        mailbox: &Mailbox<'_>,
        read_only: bool,
    ) -> Answer {
        self.selected = None;
        let info = match self.find_folder(tag, mailbox).await {
            Ok(i) => i,
            Err(a) => return a,
        };
        let address = self.address().unwrap_or_default().to_owned();
        let messages = match self.shared.store.messages(&address, &info.name).await {
            Ok(m) => m,
            Err(e) => return self.store_error(tag, &e),
        };
        let system = [
            Flag::Answered,
            Flag::Flagged,
            Flag::Deleted,
            Flag::Seen,
            Flag::Draft,
        ];
        flow.enqueue_data(Data::Flags(system.to_vec()));
        let mut perm: Vec<FlagPerm> = system.into_iter().map(FlagPerm::Flag).collect();
        perm.push(FlagPerm::Asterisk);
        let untagged = |code, t: &str| status(StatusKind::Ok, None, Some(code), t);
        flow.enqueue_status(untagged(
            Code::PermanentFlags(if read_only { vec![] } else { perm }),
            "Flags permitted",
        ));
        flow.enqueue_data(Data::Exists(messages.len() as u32));
        flow.enqueue_data(Data::Recent(0));
        flow.enqueue_status(untagged(
            Code::UidValidity(nz(info.uid_validity)),
            "UIDs valid",
        ));
        flow.enqueue_status(untagged(
            Code::UidNext(nz(info.uid_next)),
            "Predicted next UID",
        ));
        self.selected = Some(Selected::new(info.name, read_only, &messages));
        if read_only {
            ok(tag, Some(Code::ReadOnly), "EXAMINE completed")
        } else {
            ok(tag, Some(Code::ReadWrite), "SELECT completed")
        }
    }

    async fn append(
        &mut self,
        tag: &Tag<'static>,
        mailbox: &Mailbox<'_>,
        flags: Vec<Flag<'static>>,
        date: Option<imap_next::imap_types::datetime::DateTime>,
        message: LiteralOrLiteral8<'static>,
    ) -> Answer {
        let Some(name) = folder_name(mailbox) else {
            return no(tag, other("TRYCREATE"), "No such mailbox");
        };
        if is_inbox(&name) {
            // Nobody may plant a message that looks received by the provider.
            return no(
                tag,
                other("CANNOT"),
                "APPEND to INBOX is not allowed: only the provider delivers there",
            );
        }
        let info = match self.find_folder(tag, mailbox).await {
            Ok(i) => i,
            Err(_) => return no(tag, other("TRYCREATE"), "No such mailbox"),
        };
        let bytes = match message {
            LiteralOrLiteral8::Literal(l) => l.into_inner().into_owned(),
            LiteralOrLiteral8::Literal8(l) => l.data.into_owned(),
        };
        let flags: Flags = flags.iter().map(from_imap_flag).collect();
        let when = date.map_or_else(chrono::Utc::now, |d| d.as_ref().with_timezone(&chrono::Utc));
        let address = self.address().unwrap_or_default().to_owned();
        match self
            .shared
            .store
            .append(&address, &info.name, bytes, flags, when, Origin::Appended)
            .await
        {
            Ok(a) => ok(
                tag,
                Some(Code::AppendUid {
                    uid_validity: nz(a.uid_validity),
                    uid: nz(a.uid),
                }),
                "APPEND completed",
            ),
            Err(e) => self.store_error(tag, &e),
        }
    }

    async fn in_folder(
        &mut self,
        flow: &mut Flow,
        tag: &Tag<'static>,
        body: CommandBody<'static>,
    ) -> Answer {
        let address = self.address().unwrap_or_default().to_owned();
        let store = Arc::clone(&self.shared.store);
        let Some(sel) = self.selected.as_ref() else {
            return bad(tag, "No folder selected");
        };
        let folder = sel.folder.clone();
        let read_only = sel.read_only;
        match body {
            CommandBody::Close | CommandBody::Unselect => {
                if matches!(body, CommandBody::Close)
                    && !read_only
                    && let Err(e) = store.expunge(&address, &folder, None).await
                {
                    return self.store_error(tag, &e);
                }
                self.selected = None;
                ok(tag, None, "Folder closed")
            }
            CommandBody::Expunge | CommandBody::ExpungeUid { .. } => {
                if read_only {
                    return no(tag, other("CANNOT"), "Folder is read-only");
                }
                let only = match &body {
                    CommandBody::ExpungeUid { sequence_set } => {
                        Some(sel.resolve(sequence_set, true))
                    }
                    _ => None,
                };
                match store.expunge(&address, &folder, only.as_deref()).await {
                    Ok(_) => ok(tag, None, "EXPUNGE completed"),
                    Err(e) => self.store_error(tag, &e),
                }
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                let names = match macro_or_item_names {
                    MacroOrMessageDataItemNames::Macro(m) => m
                        .expand()
                        .into_iter()
                        .map(|n| imap_next::imap_types::ToStatic::to_static(&n))
                        .collect(),
                    MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
                };
                self.fetch(flow, tag, &sequence_set, uid, &names).await
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                if read_only {
                    return no(tag, other("CANNOT"), "Folder is read-only");
                }
                let uids = sel.resolve(&sequence_set, uid);
                let change = match kind {
                    StoreType::Add => FlagChange::Add,
                    StoreType::Remove => FlagChange::Remove,
                    StoreType::Replace => FlagChange::Replace,
                };
                let flags: Flags = flags.iter().map(from_imap_flag).collect();
                match store
                    .store_flags(&address, &folder, &uids, change, &flags)
                    .await
                {
                    Ok(changed) => {
                        let Some(sel) = self.selected.as_mut() else {
                            return bad(tag, "No folder selected");
                        };
                        for (u, f) in changed {
                            sel.flags.insert(u, f.clone());
                            if matches!(response, StoreResponse::Answer)
                                && let Some(seq) = sel.seq(u)
                            {
                                let mut items = vec![fetch::flags_item(&f)];
                                if uid {
                                    items.push(crate::selected::uid_item(u));
                                }
                                if let Ok(items) = Vec1::try_from(items) {
                                    flow.enqueue_data(Data::Fetch { seq, items });
                                }
                            }
                        }
                        ok(tag, None, "STORE completed")
                    }
                    Err(e) => self.store_error(tag, &e),
                }
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy(flow, tag, &sequence_set, &mailbox, uid, false)
                    .await
            }
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                if read_only {
                    return no(tag, other("CANNOT"), "Folder is read-only");
                }
                self.copy(flow, tag, &sequence_set, &mailbox, uid, true)
                    .await
            }
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                if let Some(c) = charset
                    && !matches!(
                        c.as_ref().to_ascii_uppercase().as_str(),
                        "US-ASCII" | "UTF-8"
                    )
                {
                    return no(
                        tag,
                        Some(Code::BadCharset { allowed: vec![] }),
                        "Only US-ASCII and UTF-8 searches",
                    );
                }
                self.search(flow, tag, criteria.as_ref(), uid).await
            }
            other_body => {
                info!(command = other_body.name(), "command not supported");
                bad(tag, "Command not supported")
            }
        }
    }

    async fn metas(&self) -> Result<Vec<MessageMeta>, MailStoreError> {
        let sel = self
            .selected
            .as_ref()
            .ok_or_else(|| MailStoreError::NoFolder(String::new()))?;
        self.shared
            .store
            .messages(self.address().unwrap_or_default(), &sel.folder)
            .await
    }

    async fn fetch(
        &mut self,
        flow: &mut Flow,
        tag: &Tag<'static>,
        set: &SequenceSet,
        uid: bool,
        names: &[MessageDataItemName<'static>],
    ) -> Answer {
        let address = self.address().unwrap_or_default().to_owned();
        let store = Arc::clone(&self.shared.store);
        let metas = match self.metas().await {
            Ok(m) => m,
            Err(e) => return self.store_error(tag, &e),
        };
        let Some(sel) = self.selected.as_mut() else {
            return bad(tag, "No folder selected");
        };
        let folder = sel.folder.clone();
        let wanted = sel.resolve(set, uid);
        let set_seen = fetch::sets_seen(names) && !sel.read_only;
        let needs_bytes = fetch::needs_bytes(names);
        for meta in metas
            .iter()
            .filter(|m| wanted.binary_search(&m.uid).is_ok())
        {
            let Some(seq) = sel.seq(meta.uid) else {
                continue;
            };
            let raw = if needs_bytes {
                match store.read(&address, &folder, meta.uid).await {
                    Ok(Some(b)) => Some(b),
                    Ok(None) => continue,
                    Err(e) => return self.store_error(tag, &e),
                }
            } else {
                None
            };
            let mut meta = meta.clone();
            let mut names = names.to_vec();
            if set_seen && !meta.flags.contains(SEEN) {
                let seen: Flags = [SEEN.to_owned()].into();
                if let Ok(changed) = store
                    .store_flags(&address, &folder, &[meta.uid], FlagChange::Add, &seen)
                    .await
                    && let Some((_, f)) = changed.into_iter().next()
                {
                    meta.flags = f.clone();
                    sel.flags.insert(meta.uid, f);
                    if !names.contains(&MessageDataItemName::Flags) {
                        names.push(MessageDataItemName::Flags);
                    }
                }
            }
            let items = fetch::items(&names, &meta, raw.as_deref(), uid);
            if let Ok(items) = Vec1::try_from(items) {
                flow.enqueue_data(Data::Fetch { seq, items });
            }
        }
        ok(tag, None, "FETCH completed")
    }

    async fn copy(
        &mut self,
        flow: &mut Flow,
        tag: &Tag<'static>,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        remove: bool,
    ) -> Answer {
        let address = self.address().unwrap_or_default().to_owned();
        let store = Arc::clone(&self.shared.store);
        let target = match self.find_folder(tag, mailbox).await {
            Ok(i) => i,
            Err(_) => return no(tag, other("TRYCREATE"), "No such mailbox"),
        };
        let metas = match self.metas().await {
            Ok(m) => m,
            Err(e) => return self.store_error(tag, &e),
        };
        let Some(sel) = self.selected.as_ref() else {
            return bad(tag, "No folder selected");
        };
        let uids = sel.resolve(set, uid);
        if target.name == INBOX
            && metas
                .iter()
                .any(|m| uids.binary_search(&m.uid).is_ok() && m.origin != Origin::Delivered)
        {
            return no(
                tag,
                other("CANNOT"),
                "Only messages the provider delivered may go to INBOX",
            );
        }
        let result = if remove {
            store
                .move_messages(&address, &sel.folder, &uids, &target.name)
                .await
        } else {
            store.copy(&address, &sel.folder, &uids, &target.name).await
        };
        match result {
            Ok(copied) => {
                let (src, dst): (Vec<u32>, Vec<u32>) = copied.pairs.iter().copied().unzip();
                let code = match (uid_set(&src), uid_set(&dst)) {
                    (Some(source), Some(destination)) => Some(Code::CopyUid {
                        uid_validity: nz(copied.uid_validity),
                        source,
                        destination,
                    }),
                    _ => None,
                };
                if remove {
                    if let Some(code) = code {
                        flow.enqueue_status(status(StatusKind::Ok, None, Some(code), "Moved"));
                    }
                    ok(tag, None, "MOVE completed")
                } else {
                    ok(tag, code, "COPY completed")
                }
            }
            Err(e) => self.store_error(tag, &e),
        }
    }

    async fn search(
        &mut self,
        flow: &mut Flow,
        tag: &Tag<'static>,
        keys: &[SearchKey<'static>],
        uid: bool,
    ) -> Answer {
        let address = self.address().unwrap_or_default().to_owned();
        let store = Arc::clone(&self.shared.store);
        let metas = match self.metas().await {
            Ok(m) => m,
            Err(e) => return self.store_error(tag, &e),
        };
        let Some(sel) = self.selected.as_ref() else {
            return bad(tag, "No folder selected");
        };
        let bytes = search::needs_bytes(keys);
        let mut found = Vec::new();
        for meta in &metas {
            let Some(seq) = sel.seq(meta.uid) else {
                continue;
            };
            let raw = if bytes {
                match store.read(&address, &sel.folder, meta.uid).await {
                    Ok(b) => b,
                    Err(e) => return self.store_error(tag, &e),
                }
            } else {
                None
            };
            let c = Candidate {
                meta,
                raw: raw.as_deref(),
            };
            if search::matches(keys, &c, seq.get(), sel) {
                found.push(if uid { nz(meta.uid) } else { seq });
            }
        }
        flow.enqueue_data(Data::Search(found));
        ok(tag, None, "SEARCH completed")
    }
}

fn kind_of(s: &Status<'_>) -> Option<StatusKind> {
    match s {
        Status::Tagged(t) => Some(t.body.kind),
        Status::Untagged(b) => Some(b.kind),
        Status::Bye(_) => None,
    }
}

/// Turns a greeting into its `'static` form.
trait IntoStaticGreeting {
    fn into_static_greeting(self) -> Greeting<'static>;
}

impl IntoStaticGreeting for Greeting<'_> {
    fn into_static_greeting(self) -> Greeting<'static> {
        imap_next::imap_types::IntoStatic::into_static(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use pec_ports::mailstore::MemoryMailStore;
    use pec_ports::{MemoryThrottle, ThrottlePolicy};
    use pec_submit::{BoxFuture, CredentialError, HashCost, hash_password_with};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::time::Instant;

    use super::*;

    const MARIO: &str = "mario.rossi@pec.example.it";
    const ANNA: &str = "anna.bianchi@pec.example.it";
    const PASSWORD: &str = "correct horse battery staple";

    struct Accounts(HashMap<String, Account>);

    impl Credentials for Accounts {
        fn lookup<'a>(
            &'a self,
            username: &'a str,
        ) -> BoxFuture<'a, Result<Option<Account>, CredentialError>> {
            Box::pin(async move { Ok(self.0.get(username).cloned()) })
        }
    }

    fn shared(
        config: Config,
        store: Arc<MemoryMailStore>,
        notifier: Notifier,
    ) -> Arc<Shared<MemoryMailStore>> {
        let tls = pec_submit::dev_tls::localhost().expect("dev certificate");
        let account = Account {
            address: MARIO.to_owned(),
            tenant: "t1".to_owned(),
            password_hash: hash_password_with(PASSWORD, HashCost::Fast).expect("hash"),
            locked: false,
            refusal: None,
        };
        Arc::new(Shared {
            config,
            tls: TlsAcceptor::from(tls.server_config),
            credentials: Arc::new(Accounts(HashMap::from([(MARIO.to_owned(), account)]))),
            throttle: Arc::new(MemoryThrottle::new(ThrottlePolicy::default())),
            store,
            notifier,
            hash_slots: Semaphore::new(1),
            sessions: Arc::new(Semaphore::new(1)),
        })
    }

    /// Found by the `imap_session` fuzz target: IDLE's wake-ups (the store poll every
    /// `idle_poll`, any mailbox's change notification) restarted the idle timeout, so an
    /// IDLE session that never said anything again was never logged out.
    #[tokio::test(start_paused = true)]
    async fn a_silent_idle_session_ends_at_the_idle_timeout() {
        let notifier = Notifier::new();
        let store = Arc::new(MemoryMailStore::new());
        store.set_listener(Arc::new(notifier.clone()));
        store.create_mailbox(MARIO, 1024 * 1024);
        store.create_mailbox(ANNA, 1024 * 1024);
        let config = Config {
            dummy_hash_cost: HashCost::Fast,
            idle_timeout: Duration::from_secs(60),
            idle_poll: Some(Duration::from_secs(1)),
            ..Config::default()
        };
        let shared = shared(config, Arc::clone(&store), notifier);
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([192, 0, 2, 1], 993));
        let (_stop_tx, stop) = watch::channel(false);
        let session = Session::new(shared, peer, stop);
        let identity = |io| async move { Some(io) };
        let server = tokio::spawn(course(session, server_io, Security::ImplicitTls, identity));
        // Another mailbox changes every 5 s (notifications that are not this session's).
        let other = Arc::clone(&store);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = other
                    .append(
                        ANNA,
                        INBOX,
                        b"Subject: x\r\n\r\nx\r\n".to_vec(),
                        Flags::new(),
                        chrono::Utc::now(),
                        Origin::Delivered,
                    )
                    .await;
            }
        });

        let mut client = BufReader::new(client_io);
        let mut line = String::new();
        let mut until = async |client: &mut BufReader<tokio::io::DuplexStream>, prefix: &str| {
            loop {
                line.clear();
                let n = client.read_line(&mut line).await.expect("read");
                assert!(n > 0, "closed while waiting for {prefix:?}");
                if line.starts_with(prefix) {
                    return line.clone();
                }
            }
        };
        until(&mut client, "* OK").await;
        let login = format!("a LOGIN {MARIO} \"{PASSWORD}\"\r\nb SELECT INBOX\r\nc IDLE\r\n");
        client
            .get_mut()
            .write_all(login.as_bytes())
            .await
            .expect("write");
        until(&mut client, "+ ").await;
        let idling = Instant::now();
        let bye = tokio::time::timeout(Duration::from_secs(600), until(&mut client, "* BYE"))
            .await
            .expect("logged out within 10 minutes of silence");
        let silent = idling.elapsed();
        assert!(bye.contains("idle"), "{bye}");
        assert!(
            silent >= Duration::from_secs(60) && silent < Duration::from_secs(62),
            "logged out after {silent:?} of silence"
        );
        server.await.expect("session ends");
    }
}
