//! The `pec verify` and `pec cert` commands, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{TimeZone, Utc};

const PEC: &str = env!("CARGO_BIN_EXE_pec");

fn pec(args: &[&str]) -> Output {
    Command::new(PEC).args(args).output().expect("run pec")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn fixture(name: &str) -> String {
    pec_testkit::fixtures::real_path(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`openssl` could not be run ({e}): this test requires it"))
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

const ARUBA_LDIF: &str = "dn: providerName=ARUBA PEC,o=postacert\n\
objectClass: provider\n\
providerName: ARUBA PEC\n\
managedDomains: pec.aruba.it\n\
mailReceipt: posta-certificata@pec.aruba.it\n\
providerCertificateHash: b9444ba4d52880fbbe4c3c0c55bf81e323addf8b\n";

#[test]
fn verify_real_aruba_receipt_with_system_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let idx = path(dir.path(), "igpec.ldif");
    std::fs::write(&idx, ARUBA_LDIF).unwrap();
    let out = pec(&[
        "verify",
        &fixture("aruba-2018-accettazione.eml"),
        "--index",
        &idx,
    ]);
    let j = json(&out);
    assert_eq!(out.status.code(), Some(0), "{j:#}");
    assert_eq!(j["verdict"], "valid");
    assert_eq!(j["digest_algorithm"], "sha-1");
    assert_eq!(j["signing_time"], "2018-11-13T15:39:26Z");
    assert_eq!(j["chain"].as_array().unwrap().len(), 3);
    assert_eq!(j["index"]["matched"]["provider_name"], "ARUBA PEC");
    assert_eq!(j["index"]["matched"]["matched_by"], "sha1_hash");
    assert!(
        j["signer"]["subject"]
            .as_str()
            .unwrap()
            .contains("Posta Certificata ARUBA PEC")
    );

    // Evaluated today the certificate has expired.
    let out = pec(&[
        "verify",
        &fixture("aruba-2018-accettazione.eml"),
        "--index",
        &idx,
        "--at",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["verdict"], "certificate_expired");
}

#[test]
fn verify_rejects_modified_and_truncated_messages() {
    let out = pec(&[
        "verify",
        &fixture("aruba-2018-busta-trasporto-modified.eml"),
        "--no-index",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["verdict"], "invalid_signature");
    let out = pec(&["verify", &fixture("anon-accettazione.eml"), "--no-index"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["verdict"], "malformed");
}

#[test]
fn verify_usage_errors() {
    // The index must be given, or explicitly skipped.
    let out = pec(&["verify", &fixture("aruba-2018-accettazione.eml")]);
    assert_eq!(out.status.code(), Some(2));
    let out = pec(&["verify", "/nonexistent.eml", "--no-index"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.eml"));
    let out = pec(&[
        "verify",
        &fixture("aruba-2018-accettazione.eml"),
        "--no-index",
        "--at",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dev_ca_issue_index_entry_sign_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let nb = "2025-01-01T00:00:00Z";
    ok(pec(&[
        "cert",
        "gen-key",
        "--out",
        &path(d, "key.pem"),
        "--public-out",
        &path(d, "key.spki.der"),
    ]));
    ok(pec(&[
        "cert",
        "dev-ca",
        "--out-dir",
        &path(d, "ca"),
        "--not-before",
        nb,
    ]));
    ok(pec(&[
        "cert",
        "issue",
        "--ca-cert",
        &path(d, "ca/ca.pem"),
        "--ca-key",
        &path(d, "ca/ca.key.pem"),
        "--public-key",
        &path(d, "key.spki.der"),
        "--provider",
        "Esempio PEC S.p.A.",
        "--domain",
        "pec.esempio.it",
        "--not-before",
        nb,
        "--out",
        &path(d, "provider.pem"),
    ]));
    // The CA key file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("ca/ca.key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "CA key must not be group/world readable");
    // Refuses to overwrite without --force.
    assert!(
        !pec(&["cert", "dev-ca", "--out-dir", &path(d, "ca")])
            .status
            .success()
    );

    let out = openssl(&[
        "verify",
        "-CAfile",
        &path(d, "ca/ca.pem"),
        "-purpose",
        "smimesign",
        &path(d, "provider.pem"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let entry = ok(pec(&[
        "cert",
        "index-entry",
        "--cert",
        &path(d, "provider.pem"),
        "--provider",
        "Esempio PEC S.p.A.",
        "--domain",
        "pec.esempio.it",
        "--domain",
        "esempio-pec.it",
    ]));
    let ldif = String::from_utf8(entry.stdout).unwrap();
    assert!(
        ldif.starts_with("dn: providerName=Esempio PEC S.p.A.,o=postacert\n"),
        "{ldif}"
    );
    assert!(ldif.contains("managedDomains: esempio-pec.it\n"));
    assert!(ldif.contains("mailReceipt: posta-certificata@pec.esempio.it\n"));
    assert!(ldif.contains("providerCertificateHash: "));
    assert!(ldif.contains("providerCertificate;binary:: "));
    std::fs::write(d.join("igpec.ldif"), &ldif).unwrap();

    // Sign a message with the issued certificate and the key file, then `pec verify` it.
    let key = pec_smime::LocalSigner::from_pem(&std::fs::read(d.join("key.pem")).unwrap()).unwrap();
    let mut chain = std::fs::read(d.join("provider.pem")).unwrap();
    chain.extend(std::fs::read(d.join("ca/ca.pem")).unwrap());
    let identity = pec_smime::SigningIdentity::from_pem_chain(&chain).unwrap();
    let when = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
    let msg = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(pec_smime::sign_message(
            &key,
            &identity,
            &[("Subject".into(), "ACCETTAZIONE: prova".into())],
            b"Content-Type: text/plain\r\n\r\nprova\r\n",
            when,
        ))
        .unwrap();
    std::fs::write(d.join("msg.eml"), &msg).unwrap();
    let out = pec(&[
        "verify",
        &path(d, "msg.eml"),
        "--anchors",
        &path(d, "ca/ca.pem"),
        "--index",
        &path(d, "igpec.ldif"),
    ]);
    let j = json(&out);
    assert_eq!(out.status.code(), Some(0), "{j:#}");
    assert_eq!(j["index"]["matched"]["matched_by"], "certificate");
    assert_eq!(j["digest_algorithm"], "sha-256");
    assert_eq!(j["protocol"], "application/pkcs7-signature");

    // The same message against the system bundle: untrusted.
    let out = pec(&[
        "verify",
        &path(d, "msg.eml"),
        "--index",
        &path(d, "igpec.ldif"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["verdict"], "untrusted_chain");

    // A CSR for the same key verifies in OpenSSL.
    ok(pec(&[
        "cert",
        "csr",
        "--key",
        &path(d, "key.pem"),
        "--provider",
        "Esempio PEC S.p.A.",
        "--domain",
        "pec.esempio.it",
        "--out",
        &path(d, "req.pem"),
    ]));
    let out = openssl(&["req", "-verify", "-in", &path(d, "req.pem"), "-noout"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("verify OK"), "{all}");

    // PEM public key input works too (what `openssl pkey -pubout` gives).
    let out = openssl(&[
        "pkey",
        "-in",
        &path(d, "key.pem"),
        "-pubout",
        "-out",
        &path(d, "pub.pem"),
    ]);
    assert!(out.status.success());
    ok(pec(&[
        "cert",
        "issue",
        "--ca-cert",
        &path(d, "ca/ca.pem"),
        "--ca-key",
        &path(d, "ca/ca.key.pem"),
        "--public-key",
        &path(d, "pub.pem"),
        "--provider",
        "Esempio PEC S.p.A.",
        "--domain",
        "pec.esempio.it",
    ]));
}
