//! Lambda entry point of the sign step (see the library docs).
//!
//! Environment (from template.yaml): `PEC_EVIDENCE_BUCKET`, `PEC_SIGNING_KEY_ID`,
//! `PEC_SIGNING_CHAIN_KEY` (PEM chain, provider certificate first, in the evidence bucket).

use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pec_aws::{AwsClients, ClientSettings, KmsSigner, ObjectStore, S3Store};
use pec_sign::SignStep;
use pec_smime::SigningIdentity;

fn required(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    pec_aws::telemetry::init();
    let bucket = required("PEC_EVIDENCE_BUCKET")?;
    let key_id = required("PEC_SIGNING_KEY_ID")?;
    let chain_key = required("PEC_SIGNING_CHAIN_KEY")?;
    let aws = AwsClients::load(&ClientSettings::from_env()).await;
    let store = S3Store::new(aws.s3.clone());
    let chain = store.get(&bucket, &chain_key).await?.ok_or_else(|| {
        format!("the signing certificate chain s3://{bucket}/{chain_key} is missing")
    })?;
    let identity = SigningIdentity::from_pem_chain(&chain)?;
    let signer = KmsSigner::new(aws.kms.clone(), key_id);
    // Refuse to start with a certificate that is not for this key: every signature would fail.
    if signer.public_key_spki_der().await? != identity.public_key_spki_der() {
        return Err(format!(
            "the certificate in s3://{bucket}/{chain_key} is not for KMS key {}",
            signer.key_id()
        )
        .into());
    }
    let step = SignStep::new(store, signer, identity, bucket);
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        let step = &step;
        async move { Ok::<_, Error>(step.handle(event.payload, Utc::now()).await) }
    }))
    .await
}
