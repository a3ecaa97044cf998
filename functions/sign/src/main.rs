//! Lambda entry point of the sign step (see the library docs).
//!
//! Environment (from template.yaml): `PEC_EVIDENCE_BUCKET`, `PEC_SIGNING_KEY_ID`,
//! `PEC_SIGNING_CHAIN_KEY` (PEM chain, provider certificate first, in the evidence bucket).

use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pec_aws::{AwsClients, ClientSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pec_aws::telemetry::init();
    let aws = AwsClients::load(&ClientSettings::from_env()).await;
    let step = pec_sign::from_environment(&aws, |name| std::env::var(name).ok()).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        let step = &step;
        async move { Ok::<_, Error>(step.handle(event.payload, Utc::now()).await) }
    }))
    .await
}
