//! Lambda entry point of the ingress step (`pec_pipeline::ingress`): access point and receiving point; triggered by its SQS queue and by SES receiving's Lambda action.
//!
//! The environment it reads is listed on `pec_host::wiring::ingress` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::ingress).await
}
