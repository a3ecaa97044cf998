//! Lambda entry point of the ingress step (`pec_pipeline::ingress`).
//!
//! Two triggers: the ingress queue (SQS: submissions, inbound envelopes, clean scans) and SES
//! receiving's Lambda action (after its S3 action stored `inbound/<message id>`), which records
//! each message's SMTP envelope as `inbound/<id>.json` — that object then arrives on the queue.
//!
//! Environment (template.yaml): `PEC_PROVIDER_NAME`, `PEC_PROVIDER_DOMAIN`, `PEC_RAW_BUCKET`,
//! `PEC_EVIDENCE_BUCKET`, `PEC_MAILBOX_BUCKET`, `PEC_SCAN_QUEUE_URL`, `PEC_RECEIPTS_QUEUE_URL`,
//! `PEC_STATE_TABLE`, `PEC_LOG_TABLE`, `PEC_PROVIDER_INDEX_KEY`, `PEC_TRUST_ANCHORS_KEY`.

// The step's future is deep (SDK calls inside the PEC logic): the default limit is too low.
#![recursion_limit = "256"]

use aws_lambda_events::event::ses::SimpleEmailEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pec_aws::{AwsClients, ClientSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pec_aws::telemetry::init();
    let aws = AwsClients::load(&ClientSettings::from_env()).await;
    let step = pec_pipeline::wiring::ingress(&aws, |name| std::env::var(name).ok())?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let step = &step;
        async move {
            let from_ses = event.payload["Records"][0]["eventSource"] == "aws:ses";
            if from_ses {
                let ses: SimpleEmailEvent = serde_json::from_value(event.payload)?;
                let n = step.handle_ses(&ses).await?;
                return Ok::<_, Error>(serde_json::json!({ "recorded": n }));
            }
            let sqs: SqsEvent = serde_json::from_value(event.payload)?;
            Ok(serde_json::to_value(step.handle(sqs).await)?)
        }
    }))
    .await
}
