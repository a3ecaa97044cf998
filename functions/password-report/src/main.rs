//! Lambda entry point of the monthly password-protection report (`pec_pipeline::pwreport`),
//! run on a schedule: every mailbox that had a breached password refused in the month just ended
//! gets a PEC message from the provider listing what was found and what to do.
//!
//! The environment it reads is listed on `pec_host::wiring::password_report` (template.yaml
//! sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::password_report).await
}
