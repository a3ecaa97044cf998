//! The accept loop: implicit TLS or STARTTLS, a bound on sessions, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pec_ports::mailstore::MailStore;
use pec_submit::Credentials;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, error, info, info_span, warn};

use crate::session::{self, Shared};
use crate::{Config, Notifier};

/// How a listener's connections get TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (IMAPS, port 993).
    ImplicitTls,
    /// Clear text until `STARTTLS` (port 143); no login before it.
    StartTls,
}

/// The IMAP server: configuration, TLS, credentials, store and notifier, ready to
/// [`serve`](Server::serve) one or more listeners.
pub struct Server<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Server<S> {
    fn clone(&self) -> Self {
        Server {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S: MailStore + 'static> Server<S> {
    /// A server over `store`, logging people in with `credentials` (the SMTP gateway's store)
    /// and `throttle` (shared with every login path), waking IDLE sessions with `notifier`.
    pub fn new(
        config: Config,
        tls: Arc<rustls::ServerConfig>,
        credentials: Arc<dyn Credentials>,
        throttle: Arc<dyn pec_ports::LoginThrottle>,
        store: Arc<S>,
        notifier: Notifier,
    ) -> Self {
        let hash_slots = std::thread::available_parallelism().map_or(1, |n| n.get());
        let sessions = Arc::new(Semaphore::new(config.max_sessions));
        Server {
            shared: Arc::new(Shared {
                config,
                tls: TlsAcceptor::from(tls),
                credentials,
                throttle,
                store,
                notifier,
                hash_slots: Semaphore::new(hash_slots),
                sessions,
            }),
        }
    }

    /// Accepts connections on `listener` until `shutdown` completes, then stops accepting,
    /// tells sessions to end (`BYE` at their next wait), waits up to
    /// [`Config::shutdown_grace`] and cuts the rest.
    pub async fn serve(
        self,
        listener: TcpListener,
        security: Security,
        shutdown: impl Future<Output = ()>,
    ) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sessions = JoinSet::new();
        let mut next_id: u64 = 0;
        tokio::pin!(shutdown);
        info!(addr = ?listener.local_addr().ok(), ?security, "IMAP server listening");
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = sessions.join_next(), if !sessions.is_empty() => log_end(done),
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let permit = Arc::clone(&self.shared.sessions).try_acquire_owned();
                        next_id += 1;
                        let span = info_span!("imap", session = next_id, %peer);
                        let shared = Arc::clone(&self.shared);
                        let stop = stop_rx.clone();
                        sessions.spawn(
                            async move {
                                match permit {
                                    Ok(_permit) => session::run(shared, tcp, peer, security, stop).await,
                                    Err(_) => session::refuse(shared, tcp, security).await,
                                }
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
        let grace = self.shared.config.shutdown_grace;
        let drain = async {
            while let Some(done) = sessions.join_next().await {
                log_end(done);
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            warn!(
                sessions = sessions.len(),
                "grace period over, cutting sessions"
            );
            sessions.shutdown().await;
        }
        info!("IMAP server stopped");
    }
}

/// Test-only seam for the fuzz targets (`fuzz/fuzz_targets/imap_session.rs`).
#[cfg(feature = "fuzzing")]
impl<S: MailStore + 'static> Server<S> {
    /// **Fuzzing only; never enable feature `fuzzing` in a server people use.** Runs one
    /// session over `io` exactly as [`Server::serve`] runs one over a connection, except that
    /// the TLS handshake is the identity: with [`Security::ImplicitTls`] the stream counts as
    /// TLS from the first byte, with [`Security::StartTls`] it is clear text until `STARTTLS`
    /// and counts as TLS after it (the bytes the client wrote after the command and the server
    /// had already read are dropped, as over TCP). The peer is `192.0.2.1` (for the login
    /// throttle); the server is never told to shut down. Returns when the session ends.
    #[doc(hidden)]
    pub async fn run_plain_for_fuzzing<IO>(&self, io: IO, security: Security)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let peer = std::net::SocketAddr::from(([192, 0, 2, 1], 143));
        // Kept until the session ends: a dropped sender reads as the shutdown signal.
        let (_stop_tx, stop) = watch::channel(false);
        session::run_plain(Arc::clone(&self.shared), io, peer, security, stop).await;
    }
}

fn log_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        error!(error = %e, "session panicked");
    }
}
