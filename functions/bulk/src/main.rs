//! Lambda entry point of the bulk step (`pec_pipeline::bulk`), fed by the bulk queue: each
//! chunk request submits its rows of a mass-sending job, each exactly once.
//!
//! The environment it reads is listed on `pec_host::wiring::bulk` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::bulk).await
}
