//! Lambda entry point of the scan step (see the library docs).
//!
//! Environment (from template.yaml): `PEC_RAW_BUCKET`, `PEC_EVIDENCE_BUCKET`,
//! `PEC_CONSERVATION_BUCKET`, `PEC_PROVIDER_NAME`, `PEC_PROVIDER_DOMAIN`, `PEC_CLAMD_SOCKET`,
//! `PEC_SCAN_POLICY_KEY`, `PEC_YARA_RULES_KEY`. clamd must listen on `PEC_CLAMD_SOCKET`; how it
//! gets there in Lambda is described in ARCHITECTURE.md ("Antivirus").

use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pec_aws::{AwsClients, ClientSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pec_aws::telemetry::init();
    let aws = AwsClients::load(&ClientSettings::from_env()).await;
    // clamd from the Lambda layer, when the template names it (see clamd_launch).
    let socket = std::env::var("PEC_CLAMD_SOCKET")
        .unwrap_or_else(|_| pec_scan_step::DEFAULT_CLAMD_SOCKET.to_string());
    let _clamd = match pec_scan_step::clamd_launch::ClamdLaunch::from_env(
        |name| std::env::var(name).ok(),
        &socket,
    ) {
        Some(launch) => {
            let bucket = std::env::var("PEC_EVIDENCE_BUCKET").unwrap_or_default();
            Some(
                launch
                    .launch(&pec_aws::S3Store::new(aws.s3.clone()), &bucket)
                    .await?,
            )
        }
        None => None,
    };
    let step = pec_scan_step::from_environment(&aws, |name| std::env::var(name).ok()).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        let step = &step;
        async move { Ok::<_, Error>(step.handle(event.payload, Utc::now()).await) }
    }))
    .await
}
