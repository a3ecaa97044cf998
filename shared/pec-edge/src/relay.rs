//! The relay worker: what deliver hands over with `PEC_RELAY=smtp` (a
//! [`pec_ports::contract::RelayRequest`] on the relay queue, naming a signed object and its
//! recipients outside our domains) sent over SMTP to each recipient's MX, byte for byte
//! ([`pec_pipeline::relay::Relay`] over [`pec_relay::SmtpRelay`]). Lambda cannot open port 25,
//! and this long-lived process keeps connections to busy MXs open between messages.
//!
//! It polls the queue as Lambda's event source mapping would: [`Settings::relay_workers`]
//! loops, each receiving up to 10 messages and handling them side by side; what succeeded is
//! deleted, a failed message is offered again after [`RETRY_AFTER_SECONDS`], and after the
//! queue's `maxReceiveCount` it waits in the relay DLQ under its alarm. On shutdown the loops
//! finish the batch in hand and stop.
//!
//! Environment (besides the edge's): `PEC_RELAY_QUEUE_URL` (no worker without it),
//! `PEC_PROVIDER_NAME`, `PEC_EVIDENCE_BUCKET`, `PEC_RECEIPTS_QUEUE_URL`, `PEC_RELAY_*` as
//! [`pec_relay::from_env`] reads them, `PEC_EDGE_RELAY_WORKERS` (default 4).

use std::sync::Arc;
use std::time::Duration;

use pec_aws::{AwsClients, DynamoState, S3Store, SqsSender, queue};
use pec_pipeline::relay::{Relay, RelaySettings};
use pec_ports::Env;
use tokio::sync::watch;
use tracing::{error, info};

/// Seconds before a failed relay message is offered again (its retries for deferred
/// recipients do not count: those go back on the queue as new, delayed messages).
pub const RETRY_AFTER_SECONDS: i32 = 60;

/// How long one receive waits for messages: the loops notice the shutdown within it.
const WAIT_SECONDS: i32 = 5;

/// The relay step as the edge runs it.
pub type EdgeRelay = Relay<S3Store, DynamoState, SqsSender, pec_relay::SmtpRelay>;

/// The relay worker, ready to run.
pub struct RelayWorker {
    relay: Arc<EdgeRelay>,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    workers: usize,
}

/// The worker's configuration is missing or wrong.
#[derive(Debug, thiserror::Error)]
pub enum RelayConfigError {
    #[error(transparent)]
    Settings(#[from] pec_pipeline::SettingsError),
    #[error(transparent)]
    Config(#[from] pec_ports::ConfigError),
}

impl RelayWorker {
    /// The worker `env` asks for: `None` without `PEC_RELAY_QUEUE_URL`.
    pub fn from_env(
        aws: &AwsClients,
        env: &Env<'_>,
        settings: &crate::Settings,
    ) -> Result<Option<Self>, RelayConfigError> {
        if env.optional("PEC_RELAY_QUEUE_URL").is_none() {
            return Ok(None);
        }
        let relay_settings = RelaySettings::from_env(env)?;
        let transport = pec_relay::from_env(env, &relay_settings.provider.domain)?;
        let queue_url = relay_settings.relay_queue_url.clone();
        let relay = Relay::new(
            relay_settings,
            S3Store::new(aws.s3.clone()),
            DynamoState::new(
                aws.dynamodb.clone(),
                &settings.state_table,
                &settings.log_table,
            ),
            SqsSender::new(aws.sqs.clone()),
            transport,
        );
        Ok(Some(RelayWorker {
            relay: Arc::new(relay),
            sqs: aws.sqs.clone(),
            queue_url,
            workers: settings.relay_workers,
        }))
    }

    /// Polls the relay queue until `stop` turns true.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        info!(queue = %self.queue_url, workers = self.workers, "relay worker: polling");
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..self.workers.max(1) {
            let relay = Arc::clone(&self.relay);
            let sqs = self.sqs.clone();
            let url = self.queue_url.clone();
            let stop = stop.clone();
            loops.spawn(async move { poll(relay, sqs, url, stop).await });
        }
        while loops.join_next().await.is_some() {}
        info!("relay worker: stopped");
    }
}

async fn poll(
    relay: Arc<EdgeRelay>,
    sqs: aws_sdk_sqs::Client,
    url: String,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        // A receive in flight is finished and its batch handled: abandoning it would hide its
        // messages for the queue's whole visibility timeout.
        let event = match queue::receive_event(&sqs, &url, 10, WAIT_SECONDS).await {
            Ok(event) => event,
            Err(e) => {
                error!(error = %e, "relay worker: cannot poll; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if event.records.is_empty() {
            continue;
        }
        let response = relay.handle(event.clone(), chrono::Utc::now()).await;
        let failed: Vec<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        info!(
            received = event.records.len(),
            failed = failed.len(),
            "relay worker: batch handled"
        );
        if let Err(e) = queue::settle(&sqs, &url, &event, &failed, RETRY_AFTER_SECONDS).await {
            error!(error = %e, "relay worker: cannot settle the batch; SQS will offer it again");
        }
    }
}
