//! Lambda entry point of the ingress step (`pec_pipeline::ingress`).
//!
//! Environment (template.yaml): `PEC_PROVIDER_NAME`, `PEC_PROVIDER_DOMAIN`, `PEC_RAW_BUCKET`,
//! `PEC_EVIDENCE_BUCKET`, `PEC_MAILBOX_BUCKET`, `PEC_SCAN_QUEUE_URL`, `PEC_RECEIPTS_QUEUE_URL`,
//! `PEC_STATE_TABLE`, `PEC_LOG_TABLE`.

// The step's future is deep (SDK calls inside the PEC logic): the default limit is too low.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use pec_aws::{AwsClients, ClientSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pec_aws::telemetry::init();
    let aws = AwsClients::load(&ClientSettings::from_env()).await;
    let step = pec_pipeline::wiring::ingress(&aws, |name| std::env::var(name).ok())?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        let step = &step;
        async move { Ok::<_, Error>(step.handle(event.payload).await) }
    }))
    .await
}
