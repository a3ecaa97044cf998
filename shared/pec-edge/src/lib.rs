//! The edge service: what people and their mail programs connect to, in one process.
//!
//! | Protocol | Port (AWS) | TLS | Crate |
//! |---|---|---|---|
//! | SMTP submission | 587 | `STARTTLS`, AUTH only after it | `pec-submit` |
//! | IMAP | 993 / 143 | implicit / `STARTTLS`, login only after TLS | `pec-imap` |
//! | POP3 | 995 / 110 | implicit / `STLS`, login only after TLS | `pec-pop3` |
//! | SMTP MX (mail for our domains) | 25 | `STARTTLS`, required of PEC providers | `pec-submit` ([`pec_submit::mx`]) |
//! | SMTP relay (out, to other MXs) | 25 out | `STARTTLS`, verified, required for providers | `pec-relay` ([`relay`]) |
//!
//! **MX.** Other providers (and the outside world) deliver to the MX, which writes what SES
//! receiving leads to (`inbound/<id>.eml`, then `inbound/<id>.json` with `via: mx`), so the
//! receiving point is the same for both doors and both can run at once. Its policy
//! ([`mx::EdgeMxPolicy`]): senders whose domain the provider index lists must use TLS; only
//! recipients in our domains are accepted (no open relay); an unknown mailbox is refused to
//! ordinary senders and taken from providers (the receiving point answers with a signed notice).
//! Its greeting name is `mx.<provider domain>`. The message data its sessions hold in memory is
//! bounded ([`Settings::data_budget_bytes`]; over it, `452 4.3.1`), apart from submission's, so
//! unauthenticated senders can neither exhaust the process nor refuse people's submissions.
//!
//! Every protocol logs people in through the same [`StateCredentials`] (the mailbox item's
//! Argon2id hash, its `locked` flag) and one [`LoginThrottle`], so failed logins over SMTP and
//! IMAP count together. Mailboxes are [`DynamoMailStore`]: the folders and UIDs the delivery
//! step writes in the same transaction as the message, bodies from the mailbox bucket.
//!
//! **Sent.** Every message a user submits over SMTP is filed in their `Sent` folder (`\Seen`),
//! as it was stored for the access point (our `Received:` field first), once the raw bucket
//! holds it: people expect their program's Sent folder to show what they sent, and most mail
//! programs do not file a copy themselves when the server says it does. Filing never fails a
//! submission: a full mailbox or an unavailable store is logged and the message goes on.
//!
//! **IDLE.** Deliveries happen in another process (the deliver Lambda), so IDLE sessions poll
//! their mailbox's change counter (`changes` on the mailbox item, bumped by every write) each
//! [`pec_imap::Config::idle_poll`] (1 s): a delivery reaches an idle client within about 1 s.
//!
//! **Relay.** With `PEC_RELAY_QUEUE_URL`, the process also runs the relay worker
//! ([`relay::RelayWorker`]): what deliver hands over with `PEC_RELAY=smtp` goes out over SMTP to
//! the recipients' MX, byte for byte (Lambda cannot open port 25).
//!
//! **Shutdown.** On the shutdown signal every listener stops accepting, sessions are told to end
//! at their next command boundary (SMTP finishes a `DATA` in progress) and are cut after their
//! grace period: ECS's SIGTERM then a stop timeout, an NLB target deregistration delay.

use std::future::Future;
use std::sync::Arc;

use pec_aws::{AwsClients, DynamoMailStore, DynamoState, S3Store};
use pec_ports::mailstore::{Flags, MailStore, Origin, SEEN};
use pec_ports::{ConfigError, Env, LoginThrottle, MemoryThrottle, ThrottlePolicy};
use pec_submit::aws::{RawBucketSink, RawInboundSink, StateCredentials};
use pec_submit::{BoxFuture, Sink, SinkError, Submission};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

pub use pec_imap::Security;

pub mod mx;
pub mod relay;

/// The folder submitted messages are filed in.
pub const SENT: &str = "Sent";

/// The edge service's logical id in `template.yaml` (its `AWS::ECS::Service`): its AWS clients
/// are built with [`AwsClients::for_function`] under this name, so with `PEC_AWS_CALL_LOG` their
/// calls are recorded and `infra/local/iam_check.py` checks them against the service's task
/// role (`EdgeTaskRole`).
pub const TEMPLATE_ID: &str = "EdgeService";

/// What the edge service reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PEC_PROVIDER_DOMAIN`: the greeting name of every protocol.
    pub hostname: String,
    /// `PEC_STATE_TABLE`.
    pub state_table: String,
    /// `PEC_LOG_TABLE`.
    pub log_table: String,
    /// `PEC_RAW_BUCKET`: where submissions go.
    pub raw_bucket: String,
    /// `PEC_MAILBOX_BUCKET`: where delivered and appended messages are.
    pub mailbox_bucket: String,
    /// `PEC_EDGE_IMAP_MAX_SESSIONS` (optional): concurrent IMAP sessions of this process, both
    /// listeners together; one more gets `BYE` at once. Default [`pec_imap::Config`]'s (256).
    /// What a session costs in memory: `benches/imap.sh`.
    pub imap_max_sessions: usize,
    /// `PEC_EDGE_DATA_BUDGET_BYTES` (optional): the bound on the message data each SMTP server
    /// (submission, and the MX apart) holds in memory across all its sessions, in bytes; what it
    /// cannot cover gets `452 4.3.1` ([`pec_submit::Config::max_data_bytes_in_flight`]). Each
    /// role has its own, so a flood on the MX cannot refuse people's submissions: the process
    /// holds at most twice this. Default [`pec_submit::DEFAULT_MAX_DATA_BYTES_IN_FLIGHT`]
    /// (256 MiB); at least [`pec_submit::data_share`]`(100 MiB)` for the largest messages to
    /// get through.
    pub data_budget_bytes: usize,
    /// `PEC_EDGE_MX_MESSAGES_PER_MINUTE` (default 120; `0` = no limit): messages one source
    /// (an IPv4 address, an IPv6 /64) may start per minute at the MX; beyond, `451 4.7.1`.
    pub mx_messages_per_minute: u32,
    /// `PEC_EDGE_MX_GREYLIST_SECONDS` (default 300; `0` = off): how long the MX greylists a new
    /// (source network, sender, recipient) of an ordinary sender (never of a provider the index
    /// lists). Kept in this process's memory: with several tasks, a retry that lands on another
    /// waits once more there.
    pub mx_greylisting: Option<pec_submit::mx::Greylisting>,
    /// `PEC_EVIDENCE_BUCKET` (needed by the MX: the provider index lives there).
    pub evidence_bucket: Option<String>,
    /// `PEC_PROVIDER_INDEX_KEY` (default `config/provider-index.ldif`).
    pub provider_index_key: String,
    /// `PEC_PROVIDER_INDEX_REFRESH_SECONDS` (default 600): how long the MX uses the index it
    /// read before it looks for a new version.
    pub provider_index_refresh: chrono::Duration,
    /// `PEC_EDGE_RELAY_WORKERS` (default 4): loops polling the relay queue, each handling up to
    /// 10 messages side by side ([`relay::RelayWorker`]; only with `PEC_RELAY_QUEUE_URL`).
    pub relay_workers: usize,
}

impl Settings {
    /// From `env`; errors name the missing variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            hostname: env.required("PEC_PROVIDER_DOMAIN")?,
            state_table: env.required("PEC_STATE_TABLE")?,
            log_table: env.required("PEC_LOG_TABLE")?,
            raw_bucket: env.required("PEC_RAW_BUCKET")?,
            mailbox_bucket: env.required("PEC_MAILBOX_BUCKET")?,
            imap_max_sessions: match env.parse::<usize>("PEC_EDGE_IMAP_MAX_SESSIONS")? {
                Some(0) => {
                    return Err(ConfigError::Malformed {
                        name: "PEC_EDGE_IMAP_MAX_SESSIONS".into(),
                        value: "0".into(),
                        reason: "must be at least 1".into(),
                    });
                }
                Some(n) => n,
                None => pec_imap::Config::default().max_sessions,
            },
            data_budget_bytes: match env.parse::<usize>("PEC_EDGE_DATA_BUDGET_BYTES")? {
                Some(0) => {
                    return Err(ConfigError::Malformed {
                        name: "PEC_EDGE_DATA_BUDGET_BYTES".into(),
                        value: "0".into(),
                        reason: "must be at least 1 (no message could be accepted)".into(),
                    });
                }
                Some(n) => n,
                None => pec_submit::DEFAULT_MAX_DATA_BYTES_IN_FLIGHT,
            },
            mx_messages_per_minute: env
                .parse::<u32>("PEC_EDGE_MX_MESSAGES_PER_MINUTE")?
                .unwrap_or(120),
            mx_greylisting: match env
                .parse::<u64>("PEC_EDGE_MX_GREYLIST_SECONDS")?
                .unwrap_or(300)
            {
                0 => None,
                s => Some(pec_submit::mx::Greylisting::with_delay(
                    std::time::Duration::from_secs(s),
                )),
            },
            evidence_bucket: env.optional("PEC_EVIDENCE_BUCKET"),
            provider_index_key: env.or(
                "PEC_PROVIDER_INDEX_KEY",
                pec_ports::keys::DEFAULT_PROVIDER_INDEX_KEY,
            ),
            provider_index_refresh: chrono::Duration::seconds(
                env.parse::<i64>("PEC_PROVIDER_INDEX_REFRESH_SECONDS")?
                    .unwrap_or(600)
                    .max(0),
            ),
            relay_workers: match env.parse::<usize>("PEC_EDGE_RELAY_WORKERS")? {
                Some(0) => {
                    return Err(ConfigError::Malformed {
                        name: "PEC_EDGE_RELAY_WORKERS".into(),
                        value: "0".into(),
                        reason: "must be at least 1 (nothing would be relayed)".into(),
                    });
                }
                Some(n) => n,
                None => 4,
            },
        })
    }
}

/// The bound listeners; a protocol without one is not served.
#[derive(Debug, Default)]
pub struct Listeners {
    /// SMTP submission with `STARTTLS` (587).
    pub submission: Option<TcpListener>,
    /// IMAP over implicit TLS (993).
    pub imaps: Option<TcpListener>,
    /// IMAP with `STARTTLS` (143).
    pub imap: Option<TcpListener>,
    /// POP3 over implicit TLS (995).
    pub pop3s: Option<TcpListener>,
    /// POP3 with `STLS` (110).
    pub pop3: Option<TcpListener>,
    /// The MX (25); needs [`Settings::evidence_bucket`].
    pub mx: Option<TcpListener>,
}

/// The mail store the edge serves.
pub type EdgeMailStore = DynamoMailStore<S3Store>;

/// A [`Sink`] that keeps the submission with `inner` (the raw bucket), then files it in the
/// user's [`SENT`] folder.
pub struct FileInSent<S, M> {
    inner: S,
    mail: Arc<M>,
}

impl<S: Sink, M: MailStore> FileInSent<S, M> {
    /// Files into `mail` what `inner` kept.
    pub fn new(inner: S, mail: Arc<M>) -> Self {
        FileInSent { inner, mail }
    }
}

impl<S: Sink, M: MailStore + 'static> Sink for FileInSent<S, M> {
    fn store<'a>(&'a self, submission: &'a Submission) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.inner.store(submission).await?;
            let flags: Flags = [SEEN.to_owned()].into_iter().collect();
            match self
                .mail
                .append(
                    &submission.user,
                    SENT,
                    submission.stored(),
                    flags,
                    submission.received_at,
                    Origin::Appended,
                )
                .await
            {
                Ok(a) => info!(id = %submission.id, uid = a.uid, "filed in Sent"),
                Err(e) => warn!(id = %submission.id, error = %e, "not filed in Sent"),
            }
            Ok(())
        })
    }
}

/// Serves every listener in `listeners` until `shutdown` completes, then drains them all.
pub async fn serve(
    aws: &AwsClients,
    settings: &Settings,
    tls: Arc<rustls::ServerConfig>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) {
    let state = DynamoState::new(
        aws.dynamodb.clone(),
        &settings.state_table,
        &settings.log_table,
    );
    let mail: Arc<EdgeMailStore> = Arc::new(DynamoMailStore::new(
        aws.dynamodb.clone(),
        &settings.state_table,
        S3Store::new(aws.s3.clone()),
        &settings.mailbox_bucket,
    ));
    let credentials = Arc::new(StateCredentials::new(state));
    let throttle: Arc<dyn LoginThrottle> = Arc::new(MemoryThrottle::new(ThrottlePolicy::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.submission {
        let sink = FileInSent::new(
            RawBucketSink::new(S3Store::new(aws.s3.clone()), &settings.raw_bucket),
            Arc::clone(&mail),
        );
        let config = pec_submit::Config {
            hostname: settings.hostname.clone(),
            max_data_bytes_in_flight: settings.data_budget_bytes,
            ..pec_submit::Config::default()
        };
        let server = pec_submit::Server::new(
            config,
            Arc::clone(&tls),
            credentials.clone(),
            Arc::new(sink),
        )
        .with_login_throttle(Arc::clone(&throttle));
        tasks.spawn(server.serve(listener, stopped()));
    }
    let imap = pec_imap::Server::new(
        pec_imap::Config {
            hostname: settings.hostname.clone(),
            max_sessions: settings.imap_max_sessions,
            ..pec_imap::Config::default()
        },
        Arc::clone(&tls),
        credentials.clone(),
        Arc::clone(&throttle),
        Arc::clone(&mail),
        pec_imap::Notifier::new(),
    );
    if let Some(listener) = listeners.imaps {
        tasks.spawn(
            imap.clone()
                .serve(listener, Security::ImplicitTls, stopped()),
        );
    }
    if let Some(listener) = listeners.imap {
        tasks.spawn(imap.clone().serve(listener, Security::StartTls, stopped()));
    }
    // One POP3 server for both listeners: its maildrop lock is shared between them.
    let pop3 = pec_pop3::Server::new(
        pec_pop3::Config {
            hostname: settings.hostname.clone(),
            ..pec_pop3::Config::default()
        },
        Arc::clone(&tls),
        credentials.clone(),
        Arc::clone(&throttle),
        Arc::clone(&mail),
    );
    if let Some(listener) = listeners.pop3s {
        tasks.spawn(
            pop3.clone()
                .serve(listener, pec_pop3::Security::ImplicitTls, stopped()),
        );
    }
    if let Some(listener) = listeners.pop3 {
        tasks.spawn(
            pop3.clone()
                .serve(listener, pec_pop3::Security::StartTls, stopped()),
        );
    }
    if let Some(listener) = listeners.mx {
        match &settings.evidence_bucket {
            Some(evidence) => {
                let index = pec_aws::ProviderIndexSource::new(
                    S3Store::new(aws.s3.clone()),
                    evidence.clone(),
                    settings.provider_index_key.clone(),
                    settings.provider_index_refresh,
                );
                let policy = mx::EdgeMxPolicy::new(
                    &settings.hostname,
                    DynamoState::new(
                        aws.dynamodb.clone(),
                        &settings.state_table,
                        &settings.log_table,
                    ),
                    index,
                );
                let sink = RawInboundSink::new(S3Store::new(aws.s3.clone()), &settings.raw_bucket);
                let config = pec_submit::Config {
                    hostname: format!("mx.{}", settings.hostname),
                    max_data_bytes_in_flight: settings.data_budget_bytes,
                    mx_messages_per_minute: settings.mx_messages_per_minute,
                    mx_greylisting: settings.mx_greylisting,
                    ..pec_submit::Config::default()
                };
                let server = pec_submit::Server::mx(
                    config,
                    Arc::clone(&tls),
                    Arc::new(policy),
                    Arc::new(sink),
                );
                tasks.spawn(server.serve(listener, stopped()));
            }
            None => {
                error!("edge: the MX needs PEC_EVIDENCE_BUCKET (the provider index): not served")
            }
        }
    }
    shutdown.await;
    info!("edge: shutting down");
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    info!("edge: stopped");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn settings(extra: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut map: BTreeMap<String, String> = [
            "PEC_PROVIDER_DOMAIN",
            "PEC_STATE_TABLE",
            "PEC_LOG_TABLE",
            "PEC_RAW_BUCKET",
            "PEC_MAILBOX_BUCKET",
        ]
        .into_iter()
        .map(|k| (k.to_owned(), "x".to_owned()))
        .collect();
        map.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Settings::from_env(&Env::from_map(&map))
    }

    #[test]
    fn imap_session_cap_defaults_to_the_imap_servers_and_is_configurable() {
        assert_eq!(settings(&[]).unwrap().imap_max_sessions, 256);
        let s = settings(&[("PEC_EDGE_IMAP_MAX_SESSIONS", "2000")]).unwrap();
        assert_eq!(s.imap_max_sessions, 2000);
        for bad in ["0", "-1", "many"] {
            let e = settings(&[("PEC_EDGE_IMAP_MAX_SESSIONS", bad)]).unwrap_err();
            assert!(e.to_string().contains("PEC_EDGE_IMAP_MAX_SESSIONS"), "{e}");
        }
    }

    #[test]
    fn smtp_data_budget_defaults_to_the_servers_and_is_configurable() {
        assert_eq!(
            settings(&[]).unwrap().data_budget_bytes,
            pec_submit::Config::default().max_data_bytes_in_flight
        );
        assert_eq!(settings(&[]).unwrap().data_budget_bytes, 256 * 1024 * 1024);
        let s = settings(&[("PEC_EDGE_DATA_BUDGET_BYTES", "536870912")]).unwrap();
        assert_eq!(s.data_budget_bytes, 512 * 1024 * 1024);
        for bad in ["0", "-1", "256MiB"] {
            let e = settings(&[("PEC_EDGE_DATA_BUDGET_BYTES", bad)]).unwrap_err();
            assert!(e.to_string().contains("PEC_EDGE_DATA_BUDGET_BYTES"), "{e}");
        }
    }

    #[test]
    fn mx_rate_and_greylisting_default_on_and_can_be_turned_off() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.mx_messages_per_minute, 120);
        assert_eq!(
            s.mx_greylisting.map(|g| g.delay),
            Some(std::time::Duration::from_secs(300))
        );
        let s = settings(&[
            ("PEC_EDGE_MX_MESSAGES_PER_MINUTE", "0"),
            ("PEC_EDGE_MX_GREYLIST_SECONDS", "0"),
        ])
        .unwrap();
        assert_eq!(s.mx_messages_per_minute, 0);
        assert_eq!(s.mx_greylisting, None);
        let e = settings(&[("PEC_EDGE_MX_GREYLIST_SECONDS", "5m")]).unwrap_err();
        assert!(
            e.to_string().contains("PEC_EDGE_MX_GREYLIST_SECONDS"),
            "{e}"
        );
    }
}
