//! Lambda entry point of the timers sweep (`pec_pipeline::timers`), run on a schedule
//! (EventBridge Scheduler / a schedule rule: the event's content is not used; the clock is).
//!
//! Environment (template.yaml): as ingress.

// The step's future is deep (SDK calls inside the PEC logic): the default limit is too low.
#![recursion_limit = "256"]

use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pec_aws::{AwsClients, ClientSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pec_aws::telemetry::init();
    let aws = AwsClients::load(&ClientSettings::from_env()).await;
    let step = pec_pipeline::wiring::timers(&aws, |name| std::env::var(name).ok())?;
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| {
        let step = &step;
        async move {
            let emitted = step.sweep(Utc::now()).await?;
            Ok::<_, Error>(serde_json::json!({ "notices": emitted.len() }))
        }
    }))
    .await
}
