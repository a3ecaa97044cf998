//! The accept loop: concurrent sessions, a bound on their number, graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, error, info, info_span, warn};

use crate::budget::DataBudget;
use crate::mx::{MxPolicy, MxSink};
use crate::session::{self, Receiving, Role, Shared, Submitting};
use crate::{Config, Credentials, Sink};

/// The SMTP server in one of its two roles ([`Server::new`]: submission; [`Server::mx`]: the
/// MX), ready to [`serve`].
///
/// [`serve`]: Server::serve
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with `tls` for `STARTTLS` (build it with the ring provider, e.g. with
    /// [`crate::tls_server_config`]), `credentials` for `AUTH` and `sink` for accepted messages.
    pub fn new(
        config: Config,
        tls: Arc<rustls::ServerConfig>,
        credentials: Arc<dyn Credentials>,
        sink: Arc<dyn Sink>,
    ) -> Self {
        let hash_slots = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            shared: Arc::new(Shared {
                data_budget: DataBudget::new(config.max_data_bytes_in_flight),
                config,
                tls: TlsAcceptor::from(tls),
                role: Role::Submission(Submitting {
                    credentials,
                    sink,
                    hash_slots: Semaphore::new(hash_slots),
                    throttle: Arc::new(pec_ports::MemoryThrottle::new(
                        pec_ports::ThrottlePolicy::default(),
                    )),
                }),
            }),
        }
    }

    /// The MX for our domains ([`crate::mx`]): no `AUTH`; `policy` decides senders and
    /// recipients, `sink` keeps accepted mail.
    pub fn mx(
        config: Config,
        tls: Arc<rustls::ServerConfig>,
        policy: Arc<dyn MxPolicy>,
        sink: Arc<dyn MxSink>,
    ) -> Self {
        let limits = crate::mx::limits::SourceLimits::new(
            config.mx_messages_per_minute,
            config.mx_greylisting,
        );
        Self {
            shared: Arc::new(Shared {
                data_budget: DataBudget::new(config.max_data_bytes_in_flight),
                config,
                tls: TlsAcceptor::from(tls),
                role: Role::Mx(Receiving {
                    policy,
                    sink,
                    limits,
                }),
            }),
        }
    }

    /// Uses `throttle` for the failed-login lockout (default: [`pec_ports::MemoryThrottle`] with
    /// [`pec_ports::ThrottlePolicy::default`]). The MX has no logins: nothing changes there.
    pub fn with_login_throttle(self, throttle: Arc<dyn pec_ports::LoginThrottle>) -> Self {
        // `serve` takes the server by value, so nothing else holds `shared` yet.
        let mut shared = Arc::try_unwrap(self.shared)
            .unwrap_or_else(|_| unreachable!("a Server's state is shared only once it serves"));
        if let Role::Submission(s) = &mut shared.role {
            s.throttle = throttle;
        }
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Accepts connections on `listener` (bound by the caller) and serves each session in its
    /// own task until `shutdown` completes. Then it stops accepting (the listener is dropped, so
    /// new connections are refused), tells every session to close at its next command boundary
    /// (an idle session gets `421 4.3.2` at once; one in `DATA` or in a sink call finishes that
    /// transaction first), waits up to [`Config::shutdown_grace`] for them, cuts the rest and
    /// returns.
    ///
    /// Every session's message data counts against one budget of
    /// [`Config::max_data_bytes_in_flight`] owned by this server (see [`crate::data_share`]).
    ///
    /// Over [`Config::max_sessions`], a new connection gets `421 4.7.0` and is closed. Errors of
    /// `accept` (e.g. out of file descriptors) are logged and retried after a short pause.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let config = &self.shared.config;
        let (stop_tx, stop_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(config.max_sessions));
        let sources: Sources = Arc::new(Mutex::new(HashMap::new()));
        let mut sessions = JoinSet::new();
        let mut next_id: u64 = 0;
        let shutdown = shutdown;
        tokio::pin!(shutdown);
        info!(addr = ?listener.local_addr().ok(), "SMTP server listening");
        if config.max_data_bytes_in_flight < crate::data_share(config.max_message_bytes) {
            warn!(
                max_data_bytes_in_flight = config.max_data_bytes_in_flight,
                max_message_bytes = config.max_message_bytes,
                "the data budget is below twice the message size limit: the largest messages will always get 452"
            );
        }
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = sessions.join_next(), if !sessions.is_empty() => log_end(done),
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let Some(per_source) = PerSource::take(&sources, peer.ip(), config.max_sessions_per_ip) else {
                            warn!(%peer, "too many sessions from one source, connection refused");
                            let text = format!(
                                "421 4.7.0 {} Too many connections from your address, try again later\r\n",
                                config.hostname
                            );
                            let _ = tcp.try_write(text.as_bytes());
                            continue;
                        };
                        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                            warn!(%peer, "too many sessions, connection refused");
                            let text = format!(
                                "421 4.7.0 {} Too many connections, try again later\r\n",
                                config.hostname
                            );
                            // A fresh socket's send buffer is empty: this never blocks.
                            let _ = tcp.try_write(text.as_bytes());
                            continue;
                        };
                        next_id += 1;
                        let span = info_span!("smtp", session = next_id, %peer);
                        let shared = Arc::clone(&self.shared);
                        let stop = stop_rx.clone();
                        sessions.spawn(
                            async move {
                                let _permit = (permit, per_source);
                                session::run(shared, tcp, peer, stop).await;
                            }
                            .instrument(span),
                        );
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        stop_tx.send_replace(true);
        info!(sessions = sessions.len(), "shutting down");
        let drain = async {
            while let Some(done) = sessions.join_next().await {
                log_end(done);
            }
        };
        if tokio::time::timeout(config.shutdown_grace, drain)
            .await
            .is_err()
        {
            warn!(
                sessions = sessions.len(),
                "grace period over, cutting sessions"
            );
            sessions.shutdown().await;
        }
        info!("SMTP server stopped");
    }
}

/// Sessions open per source (an IPv4 address, or an IPv6 /64).
type Sources = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One session's place in its source's count, given back when the session ends.
struct PerSource {
    sources: Sources,
    key: IpAddr,
}

impl PerSource {
    fn take(sources: &Sources, ip: IpAddr, max: usize) -> Option<Self> {
        let key = crate::mx::limits::host_key(ip);
        let mut open = sources.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            sources: Arc::clone(sources),
            key,
        })
    }
}

impl Drop for PerSource {
    fn drop(&mut self) {
        let mut open = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

fn log_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        error!(error = %e, "session panicked");
    }
}
