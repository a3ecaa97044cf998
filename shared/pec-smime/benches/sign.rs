//! Signing throughput of the local (OpenSSL) signer, next to `openssl speed rsa2048`.
//!
//! Run: `cargo bench -p pec-smime --bench sign` (plain std::time, one thread).
//! Prints signatures per second for
//! * the raw RSA-2048 PKCS#1 v1.5 operation over a SHA-256 digest (what KMS `Sign` does),
//! * a complete PEC sign operation (`sign_message`: canonicalise, hash the entity, signed
//!   attributes, RSA, self-check of the signature, CMS encoding, multipart/signed assembly) for
//!   a receipt-sized (~8 KiB) and an envelope-sized (~100 KiB) entity,
//! * `openssl speed -seconds 3 rsa2048` (sign/s), the reference for the raw rate.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use pec_smime::{DevCa, LocalSigner, ProviderCertificateParams, SigningIdentity, sign_message};

const RUN_FOR: Duration = Duration::from_secs(3);

fn rate(label: &str, mut op: impl FnMut()) -> f64 {
    op(); // warm-up
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN_FOR {
        op();
        n += 1;
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "{label:<58} {per_sec:>10.1} /s  ({n} in {:.2?})",
        start.elapsed()
    );
    per_sec
}

fn entity(size: usize) -> Vec<u8> {
    let mut e = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\nRicevuta di accettazione\r\n\r\n--b\r\n\
Content-Type: application/octet-stream; name=\"postacert.eml\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    while e.len() < size {
        e.extend_from_slice(line);
    }
    e.extend_from_slice(b"\r\n--b--\r\n");
    e
}

fn openssl_speed_sign_per_sec() -> Option<f64> {
    println!("running `openssl speed -seconds 3 rsa2048` ...");
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()
        .map_err(|e| eprintln!("cannot run openssl: {e}"))
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000687s 0.000020s   1455.3  49024.5" → sign/s is the 6th field.
    text.lines()
        .find(|l| l.trim_start().starts_with("rsa 2048 bits"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let t = |y| {
        Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0)
            .single()
            .expect("date")
    };
    let ca = rt
        .block_on(DevCa::generate("Bench CA", t(2020), t(2045)))
        .expect("dev CA");
    let key = LocalSigner::generate_rsa(2048).expect("key");
    let params = ProviderCertificateParams::new("Bench PEC", "pec.bench.it", t(2025), t(2030));
    let cert = rt
        .block_on(ca.issue_provider_certificate(&params, key.public_key_spki_der()))
        .expect("certificate");
    let identity = SigningIdentity::new(cert, vec![ca.certificate().clone()]).expect("identity");
    let headers = vec![
        (
            "From".to_string(),
            "posta-certificata@pec.bench.it".to_string(),
        ),
        ("Subject".to_string(), "ACCETTAZIONE: bench".to_string()),
    ];
    let when = t(2026);

    println!(
        "pec-smime signing benchmark (1 thread, {} s per line)",
        RUN_FOR.as_secs()
    );
    let digest = [7u8; 32];
    let raw = rate(
        "local signer: raw RSA-2048 PKCS#1 v1.5 sign of a digest",
        || {
            key.sign_digest_blocking(&digest).expect("sign");
        },
    );
    for (label, size) in [
        (
            "local signer: full PEC sign_message, 8 KiB entity",
            8 * 1024,
        ),
        (
            "local signer: full PEC sign_message, 100 KiB entity",
            100 * 1024,
        ),
    ] {
        let e = entity(size);
        rate(label, || {
            rt.block_on(sign_message(&key, &identity, &headers, &e, when))
                .expect("sign_message");
        });
    }
    match openssl_speed_sign_per_sec() {
        Some(s) => {
            println!(
                "{:<58} {s:>10.1} /s",
                "openssl speed -seconds 3 rsa2048: sign"
            );
            println!(
                "raw local signer / openssl speed = {:.2}",
                if s > 0.0 { raw / s } else { 0.0 }
            );
        }
        None => {
            eprintln!("could not read `openssl speed` output (is openssl installed?)");
            std::process::exit(1);
        }
    }
}
