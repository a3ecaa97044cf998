//! Latency of signing through the local KMS (LocalStack), the production signing path.
//!
//! Run: `cargo bench -p pec-integration --bench kms` (reuses or starts the emulators), or
//! `benches/signatures.sh` for every signing figure in one command.
//! Prints p50/p90/p99/max of (a) one KMS `Sign` of a SHA-256 digest and (b) one complete
//! `sign_message` of a receipt-sized entity through KMS, over sequential calls.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use pec_aws::KmsSigner;
use pec_integration::Stack;
use pec_pipeline::sign::testing::sample_message;
use pec_smime::{DevCa, DigestSigner, ProviderCertificateParams, SigningIdentity, sign_message};

const ROUNDS: usize = 200;

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label:<52} p50 {:>7.2?}  p90 {:>7.2?}  p99 {:>7.2?}  max {:>7.2?}  ({} calls, {:.0}/s sequential)",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        samples.len(),
        samples.len() as f64 / samples.iter().sum::<Duration>().as_secs_f64()
    );
}

fn main() -> anyhow::Result<()> {
    let stack = Stack::ensure()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        let aws = stack.clients().await;
        let key_id = stack.function_env("SignFunction", "PEC_SIGNING_KEY_ID")?;
        let kms = KmsSigner::new(aws.kms.clone(), key_id);
        let spki = kms.public_key_spki_der().await?;
        let y = |y| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
        let ca = DevCa::generate("bench CA", y(2025), y(2035)).await?;
        let cert = ca
            .issue_provider_certificate(
                &ProviderCertificateParams::new("Bench PEC", "pec.example.test", y(2025), y(2030)),
                &spki,
            )
            .await?;
        let identity = SigningIdentity::new(cert, vec![ca.certificate().clone()])?;

        kms.sign_sha256_digest([7; 32]).await?; // warm-up (connection, key cache)
        let mut digest_times = Vec::with_capacity(ROUNDS);
        for i in 0..ROUNDS {
            let start = Instant::now();
            kms.sign_sha256_digest([i as u8; 32]).await?;
            digest_times.push(start.elapsed());
        }
        let message = sample_message("bench");
        let mut message_times = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            sign_message(&kms, &identity, &message.headers, &message.entity, Utc::now()).await?;
            message_times.push(start.elapsed());
        }
        println!("LocalStack KMS on 127.0.0.1:{} (RSA_2048, RSASSA_PKCS1_V1_5_SHA_256, MessageType=DIGEST)", stack.localstack.port);
        report("KMS Sign of one digest", digest_times);
        report("sign_message of a receipt through KMS", message_times);
        anyhow::Ok(())
    });
    stack.finish();
    result
}
