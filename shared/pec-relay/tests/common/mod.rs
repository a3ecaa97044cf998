//! Our MX (pec-submit's MX role) on 127.0.0.1 for the relay's tests: it receives for
//! `pec.altro.test` (mailboxes mario and anna), and the provider index lists `pec.example.test`.

use std::sync::Arc;
use std::time::Duration;

use pec_relay::{Config, Roots, SmtpRelay, StaticRoutes, TlsPolicy};

use pec_submit::dev_tls::{self, DevTls};
use pec_submit::mx::memory::{MemoryInbound, TablePolicy};
use pec_submit::{Config as MxConfig, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Another provider's sender (its domain is in the provider index).
pub const SENDER: &str = "posta-certificata@pec.example.test";

/// A running MX; stopped on drop.
pub struct Mx {
    pub port: u16,
    pub tls: DevTls,
    pub inbound: Arc<MemoryInbound>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Mx {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The MX with its defaults.
pub async fn mx() -> Mx {
    mx_with(|_| {}).await
}

/// The MX with `tweak` applied to its configuration.
pub async fn mx_with(tweak: impl FnOnce(&mut MxConfig)) -> Mx {
    let tls = dev_tls::localhost().unwrap();
    let inbound = Arc::new(MemoryInbound::default());
    let policy = Arc::new(TablePolicy::new(
        &["pec.altro.test"],
        &["mario@pec.altro.test", "anna@pec.altro.test"],
        &["pec.example.test"],
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = MxConfig {
        hostname: "mx.pec.altro.test".into(),
        ..MxConfig::default()
    };
    tweak(&mut config);
    let server = Server::mx(config, tls.server_config.clone(), policy, inbound.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Mx {
        port,
        tls,
        inbound,
        stop: Some(stop),
    }
}

/// A relay over fixed routes (`pec.altro.test=localhost@127.0.0.1:port`), trusting `roots`
/// (DER; none = the Mozilla roots), replies awaited 10 s.
pub fn relay(routes: &str, roots: Vec<Vec<u8>>, tls: TlsPolicy) -> SmtpRelay {
    relay_within(routes, roots, tls, Duration::from_secs(10))
}

/// [`relay`] with another time limit per step.
pub fn relay_within(
    routes: &str,
    roots: Vec<Vec<u8>>,
    tls: TlsPolicy,
    timeout: Duration,
) -> SmtpRelay {
    let roots = if roots.is_empty() {
        Roots::Mozilla
    } else {
        Roots::Der(roots)
    };
    SmtpRelay::new(
        Box::new(StaticRoutes::parse(routes).unwrap()),
        Config {
            helo: "relay.pec.example.test".into(),
            roots,
            tls,
            timeout,
            max_targets: 5,
            ..Config::default()
        },
    )
}
