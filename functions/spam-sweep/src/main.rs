//! Lambda entry point of the spam-lockout sweep (`pec_pipeline::lockout`), run on a schedule:
//! mailboxes that sent too much spam in a rolling window are locked and get a reset link.
//!
//! The environment it reads is listed on `pec_host::wiring::spam_sweep` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::spam_sweep).await
}
