//! Lambda entry point of the sign step (`pec_pipeline::sign`): `unsigned/` -> `signed/`, the only `kms:Sign` caller.
//!
//! The environment it reads is listed on `pec_host::wiring::sign` (template.yaml sets it).

#[tokio::main]
async fn main() -> Result<(), pec_host::Error> {
    pec_host::run_step(pec_host::wiring::sign).await
}
