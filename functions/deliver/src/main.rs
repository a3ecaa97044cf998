//! Lambda entry point of the deliver step (`pec_pipeline::deliver`).
//!
//! Environment (template.yaml): as ingress, plus `PEC_EVENT_BUS`.

// The step's future is deep (SDK calls inside the PEC logic): the default limit is too low.
#![recursion_limit = "256"]

use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pec_aws::{AwsClients, ClientSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pec_aws::telemetry::init();
    let aws = AwsClients::load(&ClientSettings::from_env()).await;
    let step = pec_pipeline::wiring::deliver(&aws, |name| std::env::var(name).ok())?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        let step = &step;
        async move { Ok::<_, Error>(step.handle(event.payload, Utc::now()).await) }
    }))
    .await
}
