//! Lambda entry point of the scan step (`pec_pipeline::scan`): two antivirus engines in series, clamd started at cold start when `PEC_CLAMD_BINARY` names it.
//!
//! The environment it reads is listed on `pec_host::wiring::scan` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::scan).await
}
