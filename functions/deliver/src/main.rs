//! Lambda entry point of the deliver step (`pec_pipeline::deliver`): delivery point, provider log, integration events, outbound relay.
//!
//! The environment it reads is listed on `pec_host::wiring::deliver` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::deliver).await
}
