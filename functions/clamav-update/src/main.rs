//! Lambda entry point of the ClamAV definition updater (`pec_pipeline::definitions`), run on a
//! schedule: freshclam from the ClamAV layer brings the databases under the evidence bucket's
//! definitions prefix up to date (signed patches, verified), then the marker the scan function
//! polls is written, and the definitions' age goes out as a metric.
//!
//! The environment it reads is listed on `pec_host::wiring::clamav_update` (template.yaml sets
//! it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::clamav_update).await
}
