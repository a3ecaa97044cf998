//! `pec-edge`: the edge service (SMTP submission, IMAP, POP3) as a container's process.
//!
//!   pec-edge --submission 0.0.0.0:587 --imaps 0.0.0.0:993 --imap 0.0.0.0:143 --pop3s 0.0.0.0:995 \
//!            --mx 0.0.0.0:25
//!
//! The TLS certificate chain (leaf first) and key come as PEM either in files (`--cert`,
//! `--key`) or in the variables `PEC_EDGE_TLS_CERT` and `PEC_EDGE_TLS_KEY` (how ECS passes a
//! Secrets Manager secret to a container). Environment: `PEC_PROVIDER_DOMAIN`,
//! `PEC_STATE_TABLE`, `PEC_LOG_TABLE`, `PEC_RAW_BUCKET`, `PEC_MAILBOX_BUCKET`, optionally
//! `PEC_EDGE_IMAP_MAX_SESSIONS` (default 256) and `PEC_EDGE_DATA_BUDGET_BYTES` (the memory the
//! message data of each SMTP role may hold across its sessions, default 256 MiB; over it,
//! `452 4.3.1`); for the MX `PEC_EVIDENCE_BUCKET`,
//! `PEC_PROVIDER_INDEX_KEY` and `PEC_PROVIDER_INDEX_REFRESH_SECONDS`; for the relay worker
//! `PEC_RELAY_QUEUE_URL` (it runs only with it) and what `pec_edge::relay` lists; and the SDK's
//! region/credential variables. Stops on SIGTERM or SIGINT, draining every session.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Parser, Debug)]
#[command(about = "The PEC edge service: SMTP submission, IMAP, POP3, the MX and the relay")]
struct Args {
    /// SMTP submission (STARTTLS) address.
    #[arg(long, env = "PEC_EDGE_SUBMISSION")]
    submission: Option<SocketAddr>,
    /// IMAP over implicit TLS address.
    #[arg(long, env = "PEC_EDGE_IMAPS")]
    imaps: Option<SocketAddr>,
    /// IMAP with STARTTLS address.
    #[arg(long, env = "PEC_EDGE_IMAP")]
    imap: Option<SocketAddr>,
    /// POP3 over implicit TLS address.
    #[arg(long, env = "PEC_EDGE_POP3S")]
    pop3s: Option<SocketAddr>,
    /// POP3 with STLS address.
    #[arg(long, env = "PEC_EDGE_POP3")]
    pop3: Option<SocketAddr>,
    /// SMTP MX address (mail for our domains from other providers and the outside world).
    #[arg(long, env = "PEC_EDGE_MX")]
    mx: Option<SocketAddr>,
    /// Certificate chain file (PEM, leaf first); else `PEC_EDGE_TLS_CERT` holds the PEM.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key file (PEM); else `PEC_EDGE_TLS_KEY` holds the PEM.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

type Error = Box<dyn std::error::Error>;

fn tls(args: &Args) -> Result<std::sync::Arc<rustls::ServerConfig>, Error> {
    let env = pec_ports::Env::process();
    let (chain, key) = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => (
            CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e:?}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e:?}", cert.display()))?,
            PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e:?}", key.display()))?,
        ),
        _ => {
            let cert = env.required("PEC_EDGE_TLS_CERT")?;
            let key = env.required("PEC_EDGE_TLS_KEY")?;
            (
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("PEC_EDGE_TLS_CERT: {e:?}"))?,
                PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|e| format!("PEC_EDGE_TLS_KEY: {e:?}"))?,
            )
        }
    };
    if chain.is_empty() {
        return Err("the TLS certificate chain is empty".into());
    }
    Ok(pec_submit::tls_server_config(chain, key)?)
}

async fn bind(
    addr: Option<SocketAddr>,
    what: &str,
) -> Result<Option<tokio::net::TcpListener>, Error> {
    match addr {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| format!("binding {a} for {what}: {e}"))?;
            tracing::info!(%what, listen = %l.local_addr()?, "listening");
            Ok(Some(l))
        }
        None => Ok(None),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    pec_aws::telemetry::init();
    let args = Args::parse();
    let tls = tls(&args)?;
    let settings = pec_edge::Settings::from_env(&pec_ports::Env::process())?;
    if args.mx.is_some() && settings.evidence_bucket.is_none() {
        return Err(
            "--mx needs PEC_EVIDENCE_BUCKET: the provider index tells providers apart".into(),
        );
    }
    let listeners = pec_edge::Listeners {
        submission: bind(args.submission, "smtp submission").await?,
        imaps: bind(args.imaps, "imaps").await?,
        imap: bind(args.imap, "imap").await?,
        pop3s: bind(args.pop3s, "pop3s").await?,
        pop3: bind(args.pop3, "pop3").await?,
        mx: bind(args.mx, "smtp mx").await?,
    };
    let aws = pec_aws::AwsClients::load(&pec_aws::ClientSettings::from_env()?)
        .await
        .for_function(pec_edge::TEMPLATE_ID);
    let relay =
        pec_edge::relay::RelayWorker::from_env(&aws, &pec_ports::Env::process(), &settings)?;
    if listeners.submission.is_none()
        && listeners.imaps.is_none()
        && listeners.imap.is_none()
        && listeners.pop3s.is_none()
        && listeners.pop3.is_none()
        && listeners.mx.is_none()
        && relay.is_none()
    {
        return Err(
            "nothing to serve: give --submission, --imaps, --imap, --pop3s, --pop3 or --mx, or PEC_RELAY_QUEUE_URL".into(),
        );
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relay = relay.map(|r| tokio::spawn(r.run(stop_rx)));
    pec_edge::serve(&aws, &settings, tls, listeners, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        stop_tx.send_replace(true);
    })
    .await;
    if let Some(r) = relay {
        let _ = r.await;
    }
    Ok(())
}
