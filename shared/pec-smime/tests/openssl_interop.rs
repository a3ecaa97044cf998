//! OpenSSL accepts what we sign and rejects what we reject. Requires the `openssl` command (the
//! tests fail, never skip, without it). Keys and certificates live in temporary directories.

mod common;

use std::path::Path;

use common::*;
use der::{Encode, EncodePem, pem::LineEnding};
use pec_smime::{TrustAnchors, Verdict, VerifyOptions, verify_message};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn attime() -> String {
    signing_time().timestamp().to_string()
}

/// `openssl smime -verify` and `openssl cms -verify` with the development CA as the only
/// trust anchor, purpose S/MIME signing, at the signing time.
fn openssl_verifies(dir: &Path, ca: &str, msg: &str) -> (bool, bool, String) {
    let out = dir.join("out.txt");
    let smime = openssl(&[
        "smime",
        "-verify",
        "-in",
        msg,
        "-CAfile",
        ca,
        "-purpose",
        "smimesign",
        "-attime",
        &attime(),
        "-out",
        out.to_str().unwrap(),
    ]);
    let cms = openssl(&[
        "cms",
        "-verify",
        "-in",
        msg,
        "-CAfile",
        ca,
        "-purpose",
        "smimesign",
        "-attime",
        &attime(),
        "-out",
        out.to_str().unwrap(),
    ]);
    let log = format!(
        "smime: {}{}\ncms: {}{}",
        String::from_utf8_lossy(&smime.stdout),
        String::from_utf8_lossy(&smime.stderr),
        String::from_utf8_lossy(&cms.stdout),
        String::from_utf8_lossy(&cms.stderr)
    );
    (smime.status.success(), cms.status.success(), log)
}

#[test]
fn openssl_accepts_every_kind_we_sign_and_rejects_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let ca = write(
        dir.path(),
        "ca.pem",
        pki.ca.certificate_pem().unwrap().as_bytes(),
    );
    let mut anchors = TrustAnchors::new();
    anchors
        .add_der(&pki.ca.certificate().to_der().unwrap())
        .unwrap();
    for (name, entity) in entities() {
        let signed = sign(&pki, &entity);
        let msg = write(dir.path(), &format!("{name}.eml"), &signed);
        let (smime_ok, cms_ok, log) = openssl_verifies(dir.path(), &ca, &msg);
        assert!(
            smime_ok && cms_ok,
            "{name}: OpenSSL rejected our signature:\n{log}"
        );
        assert_eq!(
            verify_message(&signed, &anchors, None, &VerifyOptions::default()).verdict,
            Verdict::Valid
        );

        let tampered = flip_signed_byte(&signed, &entity);
        let bad = write(dir.path(), &format!("{name}-tampered.eml"), &tampered);
        let (smime_ok, cms_ok, log) = openssl_verifies(dir.path(), &ca, &bad);
        assert!(
            !smime_ok && !cms_ok,
            "{name}: OpenSSL accepted a tampered message:\n{log}"
        );
        assert!(log.contains("digest failure"), "{name}: {log}");
        assert_eq!(
            verify_message(&tampered, &anchors, None, &VerifyOptions::default()).verdict,
            Verdict::InvalidSignature
        );
    }
}

#[test]
fn openssl_parses_the_cms_structure_we_emit() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let entity = &entities()[0].1;
    let p7s = block_on(pec_smime::sign_detached(
        &pki.key,
        &pki.identity,
        entity,
        signing_time(),
    ))
    .unwrap();
    let p7s_path = write(dir.path(), "smime.p7s", &p7s);
    let content = write(dir.path(), "content", entity);
    let ca = write(
        dir.path(),
        "ca.pem",
        pki.ca.certificate_pem().unwrap().as_bytes(),
    );
    let out = openssl(&[
        "cms", "-cmsout", "-print", "-inform", "DER", "-in", &p7s_path,
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "contentType: pkcs7-signedData",
        "algorithm: sha256",
        "object: contentType",
        "object: signingTime",
        "UTCTIME:Jan 15 12:00:00 2026 GMT",
        "object: messageDigest",
        "d.issuerAndSerialNumber",
        "algorithm: rsaEncryption",
        "eContent: <ABSENT>",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // Detached verification in binary mode over the exact content bytes.
    let out = openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &p7s_path,
        "-content",
        &content,
        "-CAfile",
        ca.as_str(),
        "-purpose",
        "smimesign",
        "-attime",
        &attime(),
        "-out",
        "/dev/null",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openssl_rejects_wrong_eku_like_we_do() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_with(|p| p.extended_key_usage = vec![const_oid::db::rfc5280::ID_KP_SERVER_AUTH]);
    let ca = write(
        dir.path(),
        "ca.pem",
        pki.ca.certificate_pem().unwrap().as_bytes(),
    );
    let msg = write(dir.path(), "m.eml", &sign(&pki, &entities()[0].1));
    let (smime_ok, cms_ok, log) = openssl_verifies(dir.path(), &ca, &msg);
    assert!(!smime_ok && !cms_ok, "{log}");
    assert!(log.contains("certificate purpose"), "{log}");
}

#[test]
fn provider_certificate_has_the_pec_profile() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let cert = write(
        dir.path(),
        "provider.pem",
        pki.cert.to_pem(LineEnding::LF).unwrap().as_bytes(),
    );
    let ca = write(
        dir.path(),
        "ca.pem",
        pki.ca.certificate_pem().unwrap().as_bytes(),
    );
    let out = openssl(&["x509", "-in", &cert, "-noout", "-text"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Subject: C = IT, O = Esempio PEC S.p.A., CN = Posta Certificata Esempio PEC S.p.A.",
        "X509v3 Key Usage: critical\n                Digital Signature\n",
        "X509v3 Extended Key Usage",
        "E-mail Protection",
        "email:posta-certificata@pec.esempio.it",
        "CA:FALSE",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "Signature Algorithm: sha256WithRSAEncryption",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let out = openssl(&[
        "verify",
        "-CAfile",
        &ca,
        "-purpose",
        "smimesign",
        "-attime",
        &attime(),
        &cert,
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = openssl(&["x509", "-in", &ca, "-noout", "-text"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
}

#[test]
fn csr_built_through_the_signer_trait_verifies_in_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let key = pec_smime::LocalSigner::generate_rsa(2048).unwrap();
    let csr = block_on(pec_smime::certs::build_provider_csr(
        &key,
        key.public_key_spki_der(),
        "Esempio PEC S.p.A.",
        "pec.esempio.it",
    ))
    .unwrap();
    let path = write(
        dir.path(),
        "req.pem",
        pec_smime::certs::csr_to_pem(&csr).unwrap().as_bytes(),
    );
    let out = openssl(&["req", "-verify", "-in", &path, "-noout", "-text"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    // OpenSSL 3.0 `req -verify` exits 0 even when the signature is bad: read its verdict.
    assert!(all.contains("verify OK"), "{all}");
    for needle in [
        "Subject: C = IT, O = Esempio PEC S.p.A., CN = Posta Certificata Esempio PEC S.p.A.",
        "email:posta-certificata@pec.esempio.it",
        "E-mail Protection",
        "Digital Signature",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    // A tampered request fails.
    let mut der = csr.to_der().unwrap();
    let i = der.len() / 3;
    der[i] ^= 0x01;
    let bad = write(dir.path(), "bad.der", &der);
    let out = openssl(&["req", "-verify", "-inform", "DER", "-in", &bad, "-noout"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("verify OK"), "{all}");
    assert!(
        all.contains("verify failure") || !out.status.success(),
        "{all}"
    );
}
