//! Lambda entry point of the receipts step (`pec_pipeline::receipts`): delivery receipts and non-delivery notices.
//!
//! The environment it reads is listed on `pec_host::wiring::receipts` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::receipts).await
}
