//! The outbound relay over SMTP (issue #21 item 1): what real PEC providers do between them,
//! instead of SES `SendRawEmail`, which replaces `Message-ID` and `Date`.
//!
//! [`SmtpRelay::deliver`] sends one message to the recipients of one domain:
//!
//! 1. **Route** ([`Routes`]): the domain's MX hosts by preference, equal preferences shuffled
//!    (RFC 5321 §5.1), each host's addresses, at most [`Config::max_targets`] in all
//!    ([`DnsRoutes`], hickory-resolver); no MX record means the domain's own address (the
//!    implicit MX); a null MX (RFC 7505) or NXDOMAIN is permanent; anything else (SERVFAIL,
//!    timeouts) transient. Addresses our own network could answer on (loopback, private,
//!    link-local such as the metadata service: [`pec_ports::net::is_internal`]) are never
//!    used; a domain with only such addresses is permanent. [`StaticRoutes`] (configured, not
//!    looked up, unfiltered) replaces DNS locally and in tests (`PEC_RELAY_ROUTES`).
//! 2. **Session** (lettre's low-level `AsyncSmtpConnection`, one command at a time): `EHLO`,
//!    `STARTTLS` with the peer certificate verified for the MX host name against
//!    [`Config::roots`] (TLS 1.2+, rustls), `EHLO` again, `MAIL FROM` (`BODY=8BITMIME` when the
//!    bytes are not ASCII), one `RCPT TO` per recipient with its own reply, `DATA`.
//!    [`TlsPolicy::Required`] (the default, and the only policy for PEC) never sends a byte of
//!    mail in clear: an MX without `STARTTLS` or with a certificate that does not verify is a
//!    transient failure, and the next MX is tried.
//! 3. **Bytes**: exactly as given (dot-stuffing on the wire only), so `Message-ID`, `Date`,
//!    `X-Trasporto` and the signature arrive as signed. A message with a bare CR or LF, or a line
//!    over 998 octets, is not sent (a peer may rewrite it): that is a local bug.
//!
//! The result ([`Outcome`]) names each recipient's fate: accepted, refused (5xx) or deferred
//! (4xx). Whole-message failures are [`RelayError::Permanent`] (5xx at `MAIL` or `DATA`, no
//! such domain, null MX) or [`RelayError::Transient`] (every MX unreachable, TLS not possible,
//! 4xx).
//!
//! As a [`pec_ports::MailTransport`], [`MailTransport::send_each`](pec_ports::MailTransport::send_each)
//! turns this into one reply per recipient for the deliver step: taken, deferred (send again),
//! or refused for good with the reply's code and enhanced code (a refusal of the whole message
//! by the MX, or a domain that takes no mail, refuses each of its recipients).
//!
//! **Connection reuse**: after a message is taken, its connection stays open
//! ([`Config::reuse_idle`], 30 s; at most [`Config::reuse_max_messages`] per connection and
//! two per MX) for the next message to the same MX host, address and TLS policy; a kept
//! connection that fails at `MAIL` (closed meanwhile) is replaced by a new one for that message.
//! In the deliver Lambda this spans a batch and warm invocations.
//!
//! **Bounded by what the MX sends**: at most [`MAX_READ_PER_CONNECTION`] bytes read per
//! connection, every step under [`Config::timeout`], and the SMTP client's EHLO parsing (which
//! can panic on a hostile reply) in a task of its own.
//!
//! Not covered (see `docs/design/smtp-relay-and-mx.md`): DANE and MTA-STS. Retries are the
//! deliver step's (`pec_pipeline::deliver::relay_retry_delay`: its own queue, up to 24 h).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use lettre::Address;
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tracing::{info, warn};

/// A boxed `Send` future (the [`Routes`] trait is used as an object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One place to try: the MX host name (what its certificate must name) and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
}

/// Why a domain has no usable route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The domain does not receive mail (NXDOMAIN, null MX): a 5.1.2/5.1.10 for its recipients.
    /// The text starts with that enhanced status code (default `5.1.2` when it does not).
    #[error("{0}")]
    Permanent(String),
    /// DNS did not answer usefully now; try later.
    #[error("{0}")]
    Transient(String),
}

/// Where a domain's mail goes.
pub trait Routes: Send + Sync {
    /// The targets for `domain`, best first.
    fn route<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<Target>, RouteError>>;
}

/// Fixed routes (`PEC_RELAY_ROUTES`, local runs and tests): a domain that is not listed does
/// not exist (a permanent failure, as NXDOMAIN).
#[derive(Debug, Clone, Default)]
pub struct StaticRoutes {
    routes: HashMap<String, Vec<Target>>,
}

impl StaticRoutes {
    /// Parses `domain=host@ip:port[,host@ip:port...][;domain=...]`, e.g.
    /// `pec.altro.test=mx.pec.altro.test@127.0.0.1:2525`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut routes = HashMap::new();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (domain, targets) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?}: expected domain=host@ip:port"))?;
            let mut list = Vec::new();
            for t in targets.split(',').map(str::trim) {
                let (host, addr) = t
                    .split_once('@')
                    .ok_or_else(|| format!("{t:?}: expected host@ip:port"))?;
                let addr = SocketAddr::from_str(addr)
                    .map_err(|e| format!("{addr:?} in {entry:?}: {e}"))?;
                list.push(Target {
                    host: host.to_ascii_lowercase(),
                    addr,
                });
            }
            routes.insert(domain.trim().to_ascii_lowercase(), list);
        }
        Ok(Self { routes })
    }
}

impl Routes for StaticRoutes {
    fn route<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<Target>, RouteError>> {
        Box::pin(async move {
            self.routes
                .get(&domain.to_ascii_lowercase())
                .cloned()
                .ok_or_else(|| RouteError::Permanent(format!("5.1.2 no route for {domain}")))
        })
    }
}

/// Routes from DNS (hickory-resolver with the system's resolver configuration).
pub struct DnsRoutes {
    resolver: TokioResolver,
    port: u16,
    max_targets: usize,
}

impl DnsRoutes {
    /// A resolver from `/etc/resolv.conf`; SMTP on `port` (25) of every MX; at most
    /// `max_targets` addresses per domain.
    pub fn from_system(port: u16, max_targets: usize) -> Result<Self, String> {
        let resolver = TokioResolver::builder_tokio()
            .map_err(|e| format!("DNS resolver configuration: {e}"))?
            .build()
            .map_err(|e| format!("DNS resolver: {e}"))?;
        Ok(Self {
            resolver,
            port,
            max_targets,
        })
    }

    /// A resolver asking only the name server at `server` (UDP, then TCP for truncated
    /// answers): the deployment's own (`PEC_RELAY_NAMESERVER`; DNSSEC validation, if any, is
    /// that server's), or a test's.
    pub fn with_nameserver(
        server: SocketAddr,
        port: u16,
        max_targets: usize,
    ) -> Result<Self, String> {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = server.port();
        let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            server.ip(),
            true,
            vec![udp, tcp],
        )]);
        let resolver = TokioResolver::builder_with_config(
            config,
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        )
        .build()
        .map_err(|e| format!("DNS resolver: {e}"))?;
        Ok(Self {
            resolver,
            port,
            max_targets,
        })
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, RouteError> {
        match self.resolver.lookup_ip(format!("{host}.")).await {
            Ok(ips) => Ok(ips.iter().collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(RouteError::Transient(format!("{host}: {e}"))),
        }
    }
}

impl Routes for DnsRoutes {
    fn route<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<Target>, RouteError>> {
        Box::pin(async move {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            let hosts: Vec<(u16, String)> =
                match self.resolver.mx_lookup(format!("{domain}.")).await {
                    Ok(lookup) => {
                        let mut mx: Vec<(u16, String)> = lookup
                            .answers()
                            .iter()
                            .filter_map(|r| match &r.data {
                                RData::MX(mx) => Some((
                                    mx.preference,
                                    mx.exchange.to_ascii().trim_end_matches('.').to_string(),
                                )),
                                _ => None,
                            })
                            .collect();
                        if mx.len() == 1 && mx[0].1.is_empty() {
                            return Err(RouteError::Permanent(format!(
                                "5.1.10 {domain} does not accept mail (null MX, RFC 7505)"
                            )));
                        }
                        // RFC 5321 §5.1: by preference, equal ones in random order.
                        fastrand::shuffle(&mut mx);
                        mx.sort_by_key(|(p, _)| *p);
                        mx
                    }
                    Err(e) if e.is_nx_domain() => {
                        return Err(RouteError::Permanent(format!(
                            "5.1.2 {domain} does not exist"
                        )));
                    }
                    // No MX record: the domain's own address is its MX (RFC 5321 §5.1).
                    Err(e) if e.is_no_records_found() => vec![(0, domain.clone())],
                    Err(e) => {
                        return Err(RouteError::Transient(format!("MX of {domain}: {e}")));
                    }
                };
            let mut targets = Vec::new();
            let mut failures = Vec::new();
            let mut reserved = Vec::new();
            for (_, host) in &hosts {
                if host.is_empty() || host.eq_ignore_ascii_case("localhost") {
                    continue;
                }
                match self.addresses(host).await {
                    Ok(ips) => {
                        for ip in ips {
                            if !pec_ports::net::is_internal(ip) {
                                targets.push(Target {
                                    host: host.clone(),
                                    addr: SocketAddr::new(ip, self.port),
                                });
                            } else {
                                warn!(domain, host, %ip, "MX address is private or reserved: not used");
                                reserved.push(format!("{host}={ip}"));
                            }
                        }
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                if targets.len() >= self.max_targets {
                    targets.truncate(self.max_targets);
                    break;
                }
            }
            if targets.is_empty() {
                let implicit = hosts.len() == 1 && hosts[0].1 == domain;
                return Err(if failures.is_empty() && !reserved.is_empty() {
                    // Someone's DNS must not point our relay into our own network (the VPC, the
                    // instance metadata service, loopback).
                    RouteError::Permanent(format!(
                        "5.4.4 every MX address of {domain} is private or reserved: {}",
                        reserved.join(", ")
                    ))
                } else if failures.is_empty() && implicit {
                    RouteError::Permanent(format!(
                        "5.1.2 {domain} has neither an MX record nor an address"
                    ))
                } else if failures.is_empty() {
                    RouteError::Permanent(format!("5.4.4 no MX host of {domain} has an address"))
                } else {
                    RouteError::Transient(failures.join("; "))
                });
            }
            Ok(targets)
        })
    }
}

/// Whether mail may travel in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// STARTTLS with a verified certificate, or nothing is sent (PEC between providers).
    Required,
    /// STARTTLS with a verified certificate when offered; in clear when not offered.
    Opportunistic,
}

/// What the relay trusts and how it introduces itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `EHLO` name (a name whose PTR points back at the sending address).
    pub helo: String,
    /// Trust anchors for the MX certificates.
    pub roots: Roots,
    pub tls: TlsPolicy,
    /// Bound on each network step.
    pub timeout: Duration,
    /// Most addresses tried per message.
    pub max_targets: usize,
    /// How long a connection stays open after a message for the next one to the same MX
    /// (same host, address and TLS policy); zero: one connection per message.
    pub reuse_idle: Duration,
    /// Most messages sent over one connection.
    pub reuse_max_messages: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            helo: "localhost".into(),
            roots: Roots::Mozilla,
            tls: TlsPolicy::Required,
            timeout: Duration::from_secs(120),
            max_targets: 5,
            reuse_idle: Duration::from_secs(30),
            reuse_max_messages: 100,
        }
    }
}

/// A recipient the MX did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub recipient: String,
    pub code: u16,
    /// The MX's reply text (enhanced code first when it gave one).
    pub text: String,
    /// Given to `RCPT` (else to `DATA` or to the final dot, for every recipient taken at `RCPT`).
    pub at_rcpt: bool,
}

/// A whole-message failure as [`SmtpRelay::send_each`](pec_ports::MailTransport::send_each)
/// needs it: the [`RelayError`] and, when the receiving side refused for good (DNS or the MX),
/// the refusal each recipient gets. Without one, a permanent error is a local problem.
#[derive(Debug)]
struct Failure {
    error: RelayError,
    refusal: Option<pec_ports::Refusal>,
}

impl From<RelayError> for Failure {
    fn from(error: RelayError) -> Self {
        Failure {
            error,
            refusal: None,
        }
    }
}

impl Failure {
    /// The receiving side refused the whole message: `code` and the text (its enhanced code
    /// first when it has one; else `default_enhanced`).
    fn refused(error: RelayError, code: u16, text: String, default_enhanced: Option<&str>) -> Self {
        let enhanced = pec_ports::publish::enhanced_status(&text)
            .or(default_enhanced)
            .map(str::to_owned);
        Failure {
            error,
            refusal: Some(pec_ports::Refusal {
                code,
                enhanced,
                text,
                at_rcpt: false,
            }),
        }
    }
}

/// Which certificate authorities the relay trusts for MX certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The Mozilla roots (webpki-roots), as public MX hosts are certified.
    Mozilla,
    /// These certificates (DER).
    Der(Vec<Vec<u8>>),
    /// The certificates in this PEM file, read at each message (so a renewed file needs no
    /// restart).
    PemFile(std::path::PathBuf),
}

impl Roots {
    fn certificates(&self) -> Result<Option<Vec<Vec<u8>>>, String> {
        match self {
            Roots::Mozilla => Ok(None),
            Roots::Der(certs) => Ok(Some(certs.clone())),
            Roots::PemFile(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                pem_certificates(&pem)
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }
}

/// The certificates in PEM text (at least one).
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{e:?}"))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The MX that took it (`host[ip]:port`).
    pub server: String,
    /// The MX's queue id from its `250` reply (empty when it gave none).
    pub remote_id: String,
    pub accepted: Vec<String>,
    /// Refused for good (5xx to `RCPT`).
    pub refused: Vec<Refusal>,
    /// Refused for now (4xx to `RCPT`): send again later.
    pub deferred: Vec<Refusal>,
}

/// The whole message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Will not work later either (5xx at `MAIL`/`DATA`, no such domain, unsendable bytes).
    #[error("permanent failure for {domain}: {reason}")]
    Permanent { domain: String, reason: String },
    /// Try later (no MX reachable, TLS not possible, 4xx).
    #[error("temporary failure for {domain}: {reason}")]
    Transient { domain: String, reason: String },
}

/// The relay: routes plus configuration, and the connections kept open for the next message
/// to the same MX.
pub struct SmtpRelay {
    routes: Box<dyn Routes>,
    config: Config,
    idle: std::sync::Mutex<HashMap<PoolKey, Vec<Idle>>>,
}

/// Connections are reused only for the same MX host, address and TLS policy.
type PoolKey = (String, SocketAddr, TlsPolicy);

/// Most idle connections kept per [`PoolKey`], and in all.
const IDLE_PER_MX: usize = 2;
const IDLE_MAX: usize = 64;

/// The bound on `MAIL` over a kept connection: one whose network path died silently would
/// otherwise hold the message for the whole [`Config::timeout`] before a new one is opened.
const REUSED_MAIL_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection between messages: the last one was taken (250 to the final dot).
struct Idle {
    conn: AsyncSmtpConnection,
    since: std::time::Instant,
    messages: u32,
}

/// How one attempt against one target ended.
enum Attempt {
    Done(Outcome),
    /// Try the next target.
    Next(String),
    /// Stop: the answer holds for every target.
    Stop(Failure),
}

impl SmtpRelay {
    pub fn new(routes: Box<dyn Routes>, config: Config) -> Self {
        Self {
            routes,
            config,
            idle: Default::default(),
        }
    }

    /// An open connection to `key` left by an earlier message, if one is fresh enough (stale
    /// ones are dropped: the server may have closed them already).
    fn take_idle(&self, key: &PoolKey) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        self.prune(&mut idle);
        idle.get_mut(key)?.pop()
    }

    /// Drops every kept connection older than [`Config::reuse_idle`] (to any MX: one never
    /// contacted again would otherwise hold its socket for the life of the process), and the
    /// emptied entries.
    fn prune(&self, idle: &mut HashMap<PoolKey, Vec<Idle>>) {
        let fresh = self.config.reuse_idle;
        idle.retain(|_, list| {
            list.retain(|i| i.since.elapsed() < fresh);
            !list.is_empty()
        });
    }

    /// Keeps `conn` for the next message to `key`, or ends it (`QUIT`) when reuse is off, the
    /// connection has carried enough messages or enough are kept already.
    async fn keep_or_quit(&self, key: PoolKey, mut conn: AsyncSmtpConnection, messages: u32) {
        if !self.config.reuse_idle.is_zero() && messages < self.config.reuse_max_messages {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            self.prune(&mut idle);
            let total: usize = idle.values().map(Vec::len).sum();
            let list = idle.entry(key).or_default();
            if list.len() < IDLE_PER_MX && total < IDLE_MAX {
                list.push(Idle {
                    conn,
                    since: std::time::Instant::now(),
                    messages,
                });
                return;
            }
        }
        let _ = within(self.config.timeout, conn.quit()).await;
    }

    /// Connections kept open right now (for tests and the log).
    pub fn idle_connections(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(Vec::len).sum()
    }

    /// Sends `raw` from `source` to `recipients` (all in one domain) of another PEC provider:
    /// TLS with a verified certificate, or nothing is sent ([`TlsPolicy::Required`]).
    pub async fn deliver(
        &self,
        source: &str,
        recipients: &[String],
        raw: &[u8],
    ) -> Result<Outcome, RelayError> {
        self.deliver_to(source, recipients, raw, pec_ports::Peer::Provider)
            .await
    }

    /// [`Self::deliver`] to a peer of either kind ([`Self::policy_for`]).
    pub async fn deliver_to(
        &self,
        source: &str,
        recipients: &[String],
        raw: &[u8],
        peer: pec_ports::Peer,
    ) -> Result<Outcome, RelayError> {
        self.deliver_detailed(source, recipients, raw, peer)
            .await
            .map_err(|f| f.error)
    }

    /// The TLS policy for a peer: [`TlsPolicy::Required`] for a provider whatever
    /// [`Config::tls`] says (which is the policy for ordinary domains only).
    pub fn policy_for(&self, peer: pec_ports::Peer) -> TlsPolicy {
        match peer {
            pec_ports::Peer::Provider => TlsPolicy::Required,
            pec_ports::Peer::Ordinary => self.config.tls,
        }
    }

    /// [`Self::deliver`], with the refusal of a whole-message failure.
    async fn deliver_detailed(
        &self,
        source: &str,
        recipients: &[String],
        raw: &[u8],
        peer: pec_ports::Peer,
    ) -> Result<Outcome, Failure> {
        let tls = self.policy_for(peer);
        let domain = recipients
            .first()
            .and_then(|r| r.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let permanent = |reason: String| RelayError::Permanent {
            domain: domain.clone(),
            reason,
        };
        if recipients.iter().any(|r| {
            r.rsplit_once('@')
                .is_none_or(|(_, d)| !d.eq_ignore_ascii_case(&domain))
        }) {
            return Err(permanent("recipients of more than one domain".into()).into());
        }
        if let Some(problem) = unsendable(raw) {
            return Err(permanent(problem.into()).into());
        }
        let targets = match self.routes.route(&domain).await {
            Ok(t) => t,
            // No such domain, or it takes no mail: each recipient is refused for good.
            Err(RouteError::Permanent(reason)) => {
                let enhanced = pec_ports::publish::enhanced_status(&reason).unwrap_or("5.1.2");
                // RFC 7505 §4.2: 556 for a null MX; 550 for the rest.
                let code = if enhanced == "5.1.10" { 556 } else { 550 };
                return Err(Failure::refused(
                    permanent(reason.clone()),
                    code,
                    reason,
                    Some("5.1.2"),
                ));
            }
            Err(RouteError::Transient(reason)) => {
                return Err(RelayError::Transient {
                    domain: domain.clone(),
                    reason,
                }
                .into());
            }
        };
        let mut tried = Vec::new();
        for target in targets.iter().take(self.config.max_targets) {
            match self
                .attempt(target, &domain, source, recipients, raw, tls)
                .await
            {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Stop(e) => return Err(e),
                Attempt::Next(why) => {
                    warn!(domain, host = %target.host, addr = %target.addr, reason = %why, "MX attempt failed");
                    tried.push(format!("{}[{}]: {why}", target.host, target.addr));
                }
            }
        }
        Err(RelayError::Transient {
            domain: domain.clone(),
            reason: if tried.is_empty() {
                "no MX to try".into()
            } else {
                tried.join("; ")
            },
        }
        .into())
    }

    fn tls_for(&self, host: &str) -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(host.to_owned());
        match self.config.roots.certificates()? {
            None => builder = builder.certificate_store(CertificateStore::WebpkiRoots),
            Some(certs) => {
                builder = builder.certificate_store(CertificateStore::None);
                for der in certs {
                    let cert = Certificate::from_der(der).map_err(|e| e.to_string())?;
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
        builder.build_rustls().map_err(|e| e.to_string())
    }

    /// A new connection to `target`: greeting, EHLO, and STARTTLS as `policy` wants it.
    async fn open(
        &self,
        target: &Target,
        domain: &str,
        policy: TlsPolicy,
    ) -> Result<AsyncSmtpConnection, Attempt> {
        let hello = ClientId::Domain(self.config.helo.clone());
        let t = self.config.timeout;
        let tcp = match tokio::time::timeout(t, tokio::net::TcpStream::connect(target.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Attempt::Next(format!("connect: {e}"))),
            Err(_) => {
                return Err(Attempt::Next(format!(
                    "connect: no answer within {} s",
                    t.as_secs()
                )));
            }
        };
        let stream: Box<dyn lettre::transport::smtp::client::AsyncTokioStream> =
            Box::new(Capped::new(tcp));
        let h = hello.clone();
        let connect = async move { AsyncSmtpConnection::connect_with_transport(stream, &h).await };
        let mut conn = match guarded(t, connect).await {
            Ok(c) => c,
            Err(e) => return Err(Attempt::Next(format!("greeting and EHLO: {e}"))),
        };
        if conn.can_starttls() {
            let tls = match self.tls_for(&target.host) {
                Ok(t) => t,
                Err(e) => {
                    return Err(Attempt::Stop(
                        RelayError::Transient {
                            domain: domain.into(),
                            reason: format!("TLS configuration: {e}"),
                        }
                        .into(),
                    ));
                }
            };
            let (mut c, h) = (conn, hello.clone());
            let upgrade = async move { c.starttls(tls, &h).await.map(|()| c) };
            conn = match guarded(t, upgrade).await {
                Ok(c) => c,
                Err(e) => return Err(Attempt::Next(format!("STARTTLS: {e}"))),
            };
        } else if policy == TlsPolicy::Required {
            let _ = within(t, conn.quit()).await;
            return Err(Attempt::Next(
                "no STARTTLS offered: PEC is never sent in clear".into(),
            ));
        }
        Ok(conn)
    }

    async fn attempt(
        &self,
        target: &Target,
        domain: &str,
        source: &str,
        recipients: &[String],
        raw: &[u8],
        policy: TlsPolicy,
    ) -> Attempt {
        let t = self.config.timeout;
        let key: PoolKey = (target.host.clone(), target.addr, policy);
        // A connection left open by the previous message to this MX, else a new one.
        let (mut conn, mut messages, mut reused) = match self.take_idle(&key) {
            Some(i) => (i.conn, i.messages, true),
            None => match self.open(target, domain, policy).await {
                Ok(c) => (c, 0, false),
                Err(a) => return a,
            },
        };
        let server = format!("{}[{}]", target.host, target.addr);
        let from = if source.is_empty() {
            None
        } else {
            match Address::from_str(source) {
                Ok(a) => Some(a),
                Err(e) => {
                    let _ = tokio::time::timeout(t, conn.abort()).await;
                    return Attempt::Stop(
                        RelayError::Permanent {
                            domain: domain.into(),
                            reason: format!("bad sender {source:?}: {e}"),
                        }
                        .into(),
                    );
                }
            }
        };
        loop {
            let mut params = Vec::new();
            if !raw.is_ascii() {
                if !conn.server_info().supports_feature(Extension::EightBitMime) {
                    let _ = tokio::time::timeout(t, conn.abort()).await;
                    // A signed entity is never re-encoded.
                    let text = "5.6.3 the message is 8-bit and the MX does not offer 8BITMIME";
                    return Attempt::Stop(Failure::refused(
                        RelayError::Permanent {
                            domain: domain.into(),
                            reason: format!("{server}: {text}"),
                        },
                        554,
                        text.into(),
                        None,
                    ));
                }
                params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
            }
            let limit = if reused {
                t.min(REUSED_MAIL_TIMEOUT)
            } else {
                t
            };
            let Err(e) = within(limit, conn.command(Mail::new(from.clone(), params))).await else {
                break;
            };
            let _ = tokio::time::timeout(t, conn.abort()).await;
            if reused {
                // The kept connection was closed meanwhile (or the server timed it out with a
                // 421): nothing of this message was sent, so a new connection takes it.
                info!(domain, server = %server, error = %e, "kept connection no longer usable: reconnecting");
                conn = match self.open(target, domain, policy).await {
                    Ok(c) => c,
                    Err(a) => return a,
                };
                (messages, reused) = (0, false);
                continue;
            }
            return match e.code() {
                Some(code) if code >= 500 => Attempt::Stop(Failure::refused(
                    RelayError::Permanent {
                        domain: domain.into(),
                        reason: format!("{server} refused the sender: {e}"),
                    },
                    code,
                    e.reply(),
                    None,
                )),
                _ => Attempt::Next(format!("MAIL FROM: {e}")),
            };
        }
        let mut outcome = Outcome {
            server: server.clone(),
            ..Outcome::default()
        };
        for r in recipients {
            let Ok(address) = Address::from_str(r) else {
                outcome.refused.push(Refusal {
                    recipient: r.clone(),
                    code: 501,
                    text: "5.1.3 not a valid address".into(),
                    at_rcpt: true,
                });
                continue;
            };
            match within(t, conn.command(Rcpt::new(address, Vec::new()))).await {
                Ok(_) => outcome.accepted.push(r.clone()),
                Err(e) => match e.code() {
                    Some(code) => {
                        let refusal = Refusal {
                            recipient: r.clone(),
                            code,
                            text: e.reply(),
                            at_rcpt: true,
                        };
                        if code >= 500 {
                            outcome.refused.push(refusal);
                        } else {
                            outcome.deferred.push(refusal);
                        }
                    }
                    None => return Attempt::Next(format!("RCPT TO: {e}")),
                },
            }
        }
        if outcome.accepted.is_empty() {
            let _ = within(t, conn.quit()).await;
            return Attempt::Done(outcome);
        }
        if let Err(e) = within(t, conn.command(Data)).await {
            let _ = tokio::time::timeout(t, conn.abort()).await;
            return match e.code() {
                Some(_) => Attempt::Done(whole_message_reply(outcome, &e)),
                // No reply (the connection failed or went quiet) before any byte of the message
                // was sent: the next MX may have it.
                None => Attempt::Next(format!("DATA: {e}")),
            };
        }
        // lettre ends DATA with CRLF "." CRLF: the message's own final CRLF is that first one.
        let body = raw.strip_suffix(b"\r\n").unwrap_or(raw);
        // RFC 5321 §4.5.3.2.6: up to 10 minutes for the reply to the final dot.
        let last = t.max(Duration::from_secs(600));
        match within(last, conn.message(body)).await {
            Ok(reply) => {
                outcome.remote_id = reply
                    .message()
                    .find_map(|l| {
                        l.split_once("queued as ")
                            .map(|(_, id)| id.trim().to_owned())
                    })
                    .unwrap_or_default();
                info!(domain, server = %server, remote_id = %outcome.remote_id, accepted = ?outcome.accepted, refused = outcome.refused.len(), deferred = outcome.deferred.len(), reused, "relayed over SMTP");
                self.keep_or_quit(key, conn, messages + 1).await;
                Attempt::Done(outcome)
            }
            Err(e) => {
                let _ = tokio::time::timeout(t, conn.abort()).await;
                match e.code() {
                    Some(_) => Attempt::Done(whole_message_reply(outcome, &e)),
                    // The message may have been taken: another MX must not get it too (a
                    // second copy). The deliver step retries it later, with the same risk
                    // once, rather than at once on every MX.
                    None => Attempt::Stop(
                        RelayError::Transient {
                            domain: domain.into(),
                            reason: format!(
                                "{server}: no reply to the end of DATA ({e}): the outcome is unknown"
                            ),
                        }
                        .into(),
                    ),
                }
            }
        }
    }
}

/// A step of the session that failed: the server's error reply, a network or protocol error,
/// or no answer within the step's bound.
#[derive(Debug)]
enum StepError {
    Smtp(lettre::transport::smtp::Error),
    Timeout(Duration),
    /// The SMTP client panicked on what the server sent (lettre 0.11 unwraps the first word of
    /// each EHLO line, so a line of spaces panics): that server is skipped, nothing else fails.
    Panicked,
}

impl StepError {
    fn code(&self) -> Option<u16> {
        match self {
            StepError::Smtp(e) => e.status().map(u16::from),
            StepError::Timeout(_) | StepError::Panicked => None,
        }
    }

    /// The server's reply text (its enhanced code first when it gave one), or what went wrong.
    fn reply(&self) -> String {
        match self {
            StepError::Smtp(e) if e.status().is_some() => std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Smtp(e) => e.fmt(f),
            StepError::Timeout(t) => write!(f, "no answer within {} s", t.as_secs()),
            StepError::Panicked => f.write_str("a reply the SMTP client could not read"),
        }
    }
}

/// `step` bounded by `limit`: lettre bounds only the TCP connect, so a server that stops
/// answering would otherwise hold the deliver step until its own timeout.
async fn within<T>(
    limit: Duration,
    step: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, StepError> {
    match tokio::time::timeout(limit, step).await {
        Ok(r) => r.map_err(StepError::Smtp),
        Err(_) => Err(StepError::Timeout(limit)),
    }
}

/// [`within`] for the steps that parse the server's EHLO reply (greeting + EHLO, STARTTLS +
/// EHLO), run as their own task so a panic in the SMTP client on a hostile reply ends that
/// attempt only.
async fn guarded<T: Send + 'static>(
    limit: Duration,
    step: impl Future<Output = Result<T, lettre::transport::smtp::Error>> + Send + 'static,
) -> Result<T, StepError> {
    /// Aborts the task when the caller stops waiting for it, for whatever reason.
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(step);
    let _abort = AbortOnDrop(task.abort_handle());
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(r)) => r.map_err(StepError::Smtp),
        Ok(Err(_)) => Err(StepError::Panicked),
        Err(_) => Err(StepError::Timeout(limit)),
    }
}

/// Most bytes read from one MX connection, TLS records included: replies are a few hundred
/// bytes and a certificate chain a few kilobytes. lettre reads a reply line to its end before
/// it checks the line's length, so a server that never ends a line would otherwise grow the
/// relay's memory until the step's time limit.
pub const MAX_READ_PER_CONNECTION: usize = 1 << 20;

/// A TCP stream that fails reads past [`MAX_READ_PER_CONNECTION`] bytes.
#[derive(Debug)]
struct Capped {
    inner: tokio::net::TcpStream,
    left: usize,
}

impl Capped {
    fn new(inner: tokio::net::TcpStream) -> Self {
        Self {
            inner,
            left: MAX_READ_PER_CONNECTION,
        }
    }
}

impl tokio::io::AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the server sent more than {MAX_READ_PER_CONNECTION} bytes"
            ))));
        }
        let mut chunk = [0u8; 8192];
        let n = chunk.len().min(buf.remaining()).min(self.left);
        let mut part = tokio::io::ReadBuf::new(&mut chunk[..n]);
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut part))?;
        let got = part.filled().len();
        self.left -= got;
        buf.put_slice(part.filled());
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for Capped {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

/// The reply to `DATA` or to the final dot concerns only the recipients taken at `RCPT`: a 5xx
/// refuses them for good, a 4xx defers them; the answers given at `RCPT` to the others stand.
fn whole_message_reply(mut outcome: Outcome, e: &StepError) -> Outcome {
    let code = e.code().unwrap_or(451);
    let text = e.reply();
    for recipient in std::mem::take(&mut outcome.accepted) {
        let refusal = Refusal {
            recipient,
            code,
            text: text.clone(),
            at_rcpt: false,
        };
        if code >= 500 {
            outcome.refused.push(refusal);
        } else {
            outcome.deferred.push(refusal);
        }
    }
    warn!(server = %outcome.server, code, reply = %text, "the MX answered the message itself: every recipient it took at RCPT gets that answer");
    outcome
}

/// Why `raw` cannot travel unchanged over SMTP, if it cannot.
fn unsendable(raw: &[u8]) -> Option<&'static str> {
    let mut line = 0usize;
    for (i, &b) in raw.iter().enumerate() {
        match b {
            b'\r' if raw.get(i + 1) != Some(&b'\n') => return Some("a bare CR in the message"),
            b'\n' if i == 0 || raw[i - 1] != b'\r' => return Some("a bare LF in the message"),
            b'\n' => line = 0,
            b'\r' => {}
            _ => {
                line += 1;
                if line > 998 {
                    return Some("a line over 998 octets in the message");
                }
            }
        }
    }
    None
}

/// One reply per recipient from what one attempt reported (in the order given).
fn report(o: &Outcome, destinations: &[String]) -> pec_ports::SendReport {
    use pec_ports::RecipientReply;
    let recipients = destinations
        .iter()
        .map(|d| {
            let reply = if o.accepted.contains(d) {
                RecipientReply::Accepted
            } else if let Some(r) = o.refused.iter().find(|r| &r.recipient == d) {
                RecipientReply::Refused(pec_ports::Refusal {
                    code: r.code,
                    enhanced: pec_ports::publish::enhanced_status(&r.text).map(str::to_owned),
                    text: r.text.clone(),
                    at_rcpt: r.at_rcpt,
                })
            } else if let Some(r) = o.deferred.iter().find(|r| &r.recipient == d) {
                RecipientReply::Deferred {
                    text: format!("{} {}", r.code, r.text),
                }
            } else {
                RecipientReply::Deferred {
                    text: "no reply for this recipient".into(),
                }
            };
            (d.clone(), reply)
        })
        .collect();
    pec_ports::SendReport {
        id: format!("{} {}", o.server, o.remote_id).trim().to_owned(),
        recipients,
    }
}

/// [`pec_ports::MailTransport`] over SMTP, as the deliver step sees it.
///
/// [`send_each`](pec_ports::MailTransport::send_each): each recipient taken, deferred (4xx at
/// `RCPT`) or refused for good (5xx at `RCPT`; every recipient when the domain takes no mail or
/// the MX refuses the sender at `MAIL`); a reply to `DATA` or to the final dot applies to the
/// recipients taken at `RCPT` only. `Err` when nothing was decided: every MX unreachable, TLS
/// not possible, a 4xx to `MAIL` (send it all again later),
/// or a message that cannot be sent at all (a local problem: bytes with a bare CR or LF, a bad
/// sender, recipients of several domains), which fails the deliver event until its DLQ.
///
/// [`send_raw`](pec_ports::MailTransport::send_raw): `Ok` once the MX took at least one
/// recipient, or refused every one for good; `Err` when none was taken and some were deferred.
impl pec_ports::MailTransport for SmtpRelay {
    async fn send_raw(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
    ) -> Result<String, pec_ports::SendError> {
        use pec_ports::RecipientReply;
        let report = self
            .send_each(source, destinations, raw, pec_ports::Peer::Provider)
            .await?;
        let mut taken = false;
        let mut deferred = Vec::new();
        for (recipient, reply) in &report.recipients {
            match reply {
                RecipientReply::Accepted => taken = true,
                RecipientReply::Deferred { text } => {
                    tracing::error!(%recipient, reply = %text, "recipient deferred by the MX");
                    deferred.push(format!("{recipient}: {text}"));
                }
                RecipientReply::Refused(r) => {
                    tracing::error!(%recipient, code = r.code, reply = %r.text, "recipient refused by the MX");
                }
            }
        }
        if !taken && !deferred.is_empty() {
            return Err(pec_ports::SendError {
                operation: "SMTP relay",
                target: destinations.join(","),
                message: format!("every recipient deferred or refused: {deferred:?}"),
                permanent: false,
            });
        }
        Ok(if report.id.is_empty() {
            "refused".to_owned()
        } else {
            report.id
        })
    }

    async fn send_each(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
        peer: pec_ports::Peer,
    ) -> Result<pec_ports::SendReport, pec_ports::SendError> {
        let error = |target: String, message: String, permanent: bool| pec_ports::SendError {
            operation: "SMTP relay",
            target,
            message,
            permanent,
        };
        match self.deliver_detailed(source, destinations, raw, peer).await {
            Ok(o) => Ok(report(&o, destinations)),
            Err(Failure {
                error,
                refusal: Some(refusal),
            }) => {
                warn!(%error, "refused for good: every recipient of the message");
                Ok(pec_ports::SendReport {
                    id: String::new(),
                    recipients: destinations
                        .iter()
                        .map(|d| {
                            (
                                d.clone(),
                                pec_ports::RecipientReply::Refused(refusal.clone()),
                            )
                        })
                        .collect(),
                })
            }
            Err(Failure {
                error: RelayError::Transient { domain, reason },
                ..
            }) => Err(error(domain, reason, false)),
            Err(Failure {
                error: RelayError::Permanent { domain, reason },
                refusal: None,
            }) => {
                tracing::error!(
                    domain,
                    reason,
                    "the message cannot be relayed (a local problem): nothing sent"
                );
                Err(error(domain, format!("cannot be sent: {reason}"), true))
            }
        }
    }
}

/// The relay a deployment configures (`PEC_RELAY=smtp`):
///
/// - `PEC_RELAY_ROUTES` (optional): fixed routes ([`StaticRoutes::parse`]) instead of DNS;
/// - `PEC_RELAY_NAMESERVER` (optional, `ip` or `ip:port`): the one name server asked for MX and
///   addresses (e.g. a validating resolver of the deployment's); default `/etc/resolv.conf`'s;
/// - `PEC_RELAY_TLS_ROOTS` (optional): the trust anchors for MX certificates, PEM text or the path
///   of a PEM file (read at each message); default the Mozilla roots;
/// - `PEC_RELAY_TLS`: `required` (default) or `opportunistic`, for ordinary (non-PEC) domains
///   only: another provider always gets [`TlsPolicy::Required`] ([`SmtpRelay::policy_for`]);
/// - `PEC_RELAY_HELO`: the `EHLO` name (default `provider_domain`).
pub fn from_env(
    env: &pec_ports::Env<'_>,
    provider_domain: &str,
) -> Result<SmtpRelay, pec_ports::ConfigError> {
    use pec_ports::ConfigError;
    let malformed = |name: &str, value: &str, reason: String| ConfigError::Malformed {
        name: name.into(),
        value: value.chars().take(80).collect(),
        reason,
    };
    let routes: Box<dyn Routes> = match env.optional("PEC_RELAY_ROUTES") {
        Some(spec) => Box::new(
            StaticRoutes::parse(&spec).map_err(|e| malformed("PEC_RELAY_ROUTES", &spec, e))?,
        ),
        None => match env.optional("PEC_RELAY_NAMESERVER") {
            None => Box::new(
                DnsRoutes::from_system(25, Config::default().max_targets)
                    .map_err(|e| malformed("PEC_RELAY_ROUTES", "", e))?,
            ),
            Some(server) => {
                let addr = SocketAddr::from_str(&server)
                    .or_else(|_| IpAddr::from_str(&server).map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|e| malformed("PEC_RELAY_NAMESERVER", &server, e.to_string()))?;
                Box::new(
                    DnsRoutes::with_nameserver(addr, 25, Config::default().max_targets)
                        .map_err(|e| malformed("PEC_RELAY_NAMESERVER", &server, e))?,
                )
            }
        },
    };
    let roots = match env.optional("PEC_RELAY_TLS_ROOTS") {
        None => Roots::Mozilla,
        Some(pem) if pem.trim_start().starts_with("-----BEGIN") => Roots::Der(
            pem_certificates(pem.as_bytes())
                .map_err(|e| malformed("PEC_RELAY_TLS_ROOTS", &pem, e))?,
        ),
        Some(path) => Roots::PemFile(path.into()),
    };
    let tls = match env.or("PEC_RELAY_TLS", "required").as_str() {
        "required" => TlsPolicy::Required,
        "opportunistic" => TlsPolicy::Opportunistic,
        other => {
            return Err(malformed(
                "PEC_RELAY_TLS",
                other,
                "expected required or opportunistic".into(),
            ));
        }
    };
    Ok(SmtpRelay::new(
        routes,
        Config {
            helo: env.or("PEC_RELAY_HELO", provider_domain),
            roots,
            tls,
            ..Config::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_routes_parse() {
        let r = StaticRoutes::parse(
            "pec.altro.test=mx.pec.altro.test@127.0.0.1:2525, mx2.pec.altro.test@127.0.0.1:2526; PEC.b.test=mx.b@[::1]:25",
        )
        .unwrap();
        assert_eq!(r.routes["pec.altro.test"].len(), 2);
        assert_eq!(r.routes["pec.b.test"][0].addr.port(), 25);
        assert!(StaticRoutes::parse("x=y").is_err());
        assert!(StaticRoutes::parse("x=h@notanaddr").is_err());
        assert!(StaticRoutes::parse("").unwrap().routes.is_empty());
    }

    #[test]
    fn each_recipient_gets_its_reply() {
        use pec_ports::RecipientReply;
        let refusal = |recipient: &str, code, text: &str| Refusal {
            recipient: recipient.into(),
            code,
            text: text.into(),
            at_rcpt: true,
        };
        let o = Outcome {
            server: "mx.b.test[127.0.0.1:25]".into(),
            remote_id: "Q1".into(),
            accepted: vec!["a@b.test".into()],
            refused: vec![
                refusal("u@b.test", 550, "5.1.1 <u@b.test>: no such user"),
                refusal("p@b.test", 554, "transaction failed"),
            ],
            deferred: vec![refusal("d@b.test", 451, "4.7.1 try later")],
        };
        let to: Vec<String> = ["u@b.test", "a@b.test", "d@b.test", "p@b.test", "x@b.test"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = report(&o, &to);
        assert_eq!(r.id, "mx.b.test[127.0.0.1:25] Q1");
        let replies: Vec<&RecipientReply> = r.recipients.iter().map(|(_, r)| r).collect();
        assert_eq!(
            replies[0],
            &RecipientReply::Refused(pec_ports::Refusal {
                code: 550,
                enhanced: Some("5.1.1".into()),
                text: "5.1.1 <u@b.test>: no such user".into(),
                at_rcpt: true,
            })
        );
        assert_eq!(replies[1], &RecipientReply::Accepted);
        assert_eq!(
            replies[2],
            &RecipientReply::Deferred {
                text: "451 4.7.1 try later".into()
            }
        );
        assert!(
            matches!(replies[3], RecipientReply::Refused(r) if r.code == 554 && r.enhanced.is_none())
        );
        // Not named by the MX: never lost, sent again.
        assert!(matches!(replies[4], RecipientReply::Deferred { .. }));
    }

    #[tokio::test]
    async fn a_domain_without_mail_refuses_each_recipient_and_local_problems_are_errors() {
        use pec_ports::{MailTransport, RecipientReply};
        let relay = SmtpRelay::new(
            Box::new(StaticRoutes::parse("").unwrap()),
            Config::default(),
        );
        let to = vec!["x@unknown.test".to_string(), "y@unknown.test".to_string()];
        let r = relay
            .send_each(
                "s@pec.example.test",
                &to,
                b"Subject: x\r\n\r\nx\r\n",
                pec_ports::Peer::Ordinary,
            )
            .await
            .unwrap();
        assert_eq!(r.recipients.len(), 2);
        for (_, reply) in &r.recipients {
            let RecipientReply::Refused(refusal) = reply else {
                panic!("{reply:?}");
            };
            assert_eq!(refusal.code, 550);
            assert_eq!(refusal.enhanced.as_deref(), Some("5.1.2"));
            assert!(!refusal.at_rcpt);
        }
        // Bytes that cannot travel unchanged: nothing decided, the event fails.
        let e = relay
            .send_each(
                "s@pec.example.test",
                &to,
                b"Subject: x\n\nbare LF\n",
                pec_ports::Peer::Provider,
            )
            .await
            .unwrap_err();
        assert!(e.message.contains("bare LF"), "{e}");
        assert!(e.permanent, "a local problem: retrying cannot help");
    }

    #[test]
    fn unsendable_bytes() {
        assert_eq!(unsendable(b"a\r\nb\r\n"), None);
        assert!(unsendable(b"a\nb").is_some());
        assert!(unsendable(b"a\rb").is_some());
        assert!(unsendable(b"\n").is_some());
        let mut long = vec![b'x'; 998];
        assert_eq!(unsendable(&long), None);
        long.push(b'x');
        assert!(unsendable(&long).is_some());
    }
}
