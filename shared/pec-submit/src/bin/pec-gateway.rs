//! `pec-gateway`: the submission gateway as a long-running service (container host in AWS):
//! accounts from the state table, submissions into the raw bucket.
//!
//!   pec-gateway --listen 0.0.0.0:587 --cert fullchain.pem --key key.pem
//!
//! Environment: `PEC_STATE_TABLE`, `PEC_LOG_TABLE`, `PEC_RAW_BUCKET`, `PEC_PROVIDER_DOMAIN`
//! (greeting name), and the SDK's usual region/credential variables. Stops on SIGTERM/SIGINT,
//! finishing the messages in flight.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Parser, Debug)]
#[command(about = "The PEC SMTP submission gateway (STARTTLS + AUTH) in front of the raw bucket")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2587")]
    listen: SocketAddr,
    /// Certificate chain (PEM), leaf first.
    #[arg(long)]
    cert: PathBuf,
    /// Private key (PEM, PKCS#8 or RSA or SEC1).
    #[arg(long)]
    key: PathBuf,
}

fn env(name: &str) -> Result<String, pec_ports::ConfigError> {
    pec_ports::Env::process().required(name)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    pec_aws::telemetry::init();
    let args = Args::parse();
    let chain = CertificateDer::pem_file_iter(&args.cert)
        .map_err(|e| format!("{}: {e:?}", args.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e:?}", args.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&args.key)
        .map_err(|e| format!("{}: {e:?}", args.key.display()))?;
    let tls = pec_submit::tls_server_config(chain, key)?;
    let aws = pec_aws::AwsClients::load(&pec_aws::ClientSettings::from_env()?).await;
    let state = pec_aws::DynamoState::new(
        aws.dynamodb.clone(),
        &env("PEC_STATE_TABLE")?,
        &env("PEC_LOG_TABLE")?,
    );
    let sink = pec_submit::aws::RawBucketSink::new(
        pec_aws::S3Store::new(aws.s3.clone()),
        &env("PEC_RAW_BUCKET")?,
    );
    let config = pec_submit::Config {
        hostname: env("PEC_PROVIDER_DOMAIN")?,
        ..pec_submit::Config::default()
    };
    let server = pec_submit::Server::new(
        config,
        tls,
        Arc::new(pec_submit::aws::StateCredentials::new(state)),
        Arc::new(sink),
    );
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "pec-gateway listening");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    server
        .serve(listener, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await;
    Ok(())
}
