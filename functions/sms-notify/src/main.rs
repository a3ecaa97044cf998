//! Lambda entry point of SMS notifications (`pec_pipeline::sms`), fed by the SMS queue: the
//! delivery point's notices of new PEC and this function's own delayed digest flushes.
//!
//! The environment it reads is listed on `pec_host::wiring::sms_notify` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::sms_notify).await
}
