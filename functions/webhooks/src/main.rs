//! Lambda entry point of the webhooks step (`pec_pipeline::webhooks`): the webhook queue's
//! events and attempt requests become signed POSTs.
//!
//! The environment it reads is listed on `pec_host::wiring::webhooks` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::webhooks).await
}
