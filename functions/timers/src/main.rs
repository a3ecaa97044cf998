//! Lambda entry point of the timers sweep (`pec_pipeline::timers`), run on a schedule: the 12 h / 24 h notices.
//!
//! The environment it reads is listed on `pec_host::wiring::timers` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::timers).await
}
