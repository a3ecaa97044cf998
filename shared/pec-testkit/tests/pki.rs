//! The committed test PKI loads, chains, verifies and signs deterministically.

use chrono::{TimeZone, Utc};
use pec_smime::{Verdict, VerifyOptions, verify_message};
use pec_testkit::pki::{self, TestPki};

fn headers(domain: &str) -> Vec<(String, String)> {
    [
        ("Date", "Mon, 23 Nov 2026 10:30:00 +0100"),
        ("From", &format!("posta-certificata@{domain}")),
        ("To", &format!("mario.rossi@{domain}")),
        ("Subject", "ACCETTAZIONE: prova"),
        (
            "Message-ID",
            &format!("<opec1.20261123103000.1.1.1@{domain}>"),
        ),
        ("X-Ricevuta", "accettazione"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

const ENTITY: &[u8] =
    b"Content-Type: text/plain; charset=us-ascii\r\n\r\nRicevuta di accettazione\r\n";

#[test]
fn both_providers_chain_to_the_ca_and_are_listed() {
    let pki = TestPki::load();
    assert_eq!(pki.anchors.len(), 1);
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap();
    for p in [&pki.example, &pki.altro] {
        let signed = p.sign(&headers(p.domain), ENTITY, at);
        let v = verify_message(
            &signed,
            &pki.anchors,
            Some(&pki.index()),
            &VerifyOptions::default(),
        );
        assert_eq!(v.verdict, Verdict::Valid, "{}: {:?}", p.domain, v.reason);
        let m = v.index.matched.expect("listed");
        assert_eq!(m.provider_name, p.name);
        let signer = v.signer.expect("signer");
        assert!(signer.issuer.contains(pki::CA_NAME), "{}", signer.issuer);
        assert_eq!(
            (signer.not_before, signer.not_after),
            (
                Some(pki::provider_validity().0),
                Some(pki::provider_validity().1)
            )
        );
    }
    let ldif = pki.index_ldif();
    assert!(ldif.contains("managedDomains: pec.example.test"), "{ldif}");
    assert!(
        ldif.contains("mailReceipt: posta-certificata@pec.altro.test"),
        "{ldif}"
    );
}

#[test]
fn signing_twice_gives_identical_bytes() {
    let pki = TestPki::load();
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap();
    let h = headers(pki::EXAMPLE_DOMAIN);
    let a = pki.example.sign(&h, ENTITY, at);
    let b = TestPki::load().example.sign(&h, ENTITY, at);
    assert_eq!(
        a, b,
        "RSA PKCS#1 v1.5 with a fixed key and time is deterministic"
    );
    let later = pki
        .example
        .sign(&h, ENTITY, at + chrono::Duration::seconds(1));
    assert_ne!(a, later, "the signing time is signed");
}

#[test]
fn outside_the_provider_validity_the_certificate_is_expired() {
    let pki = TestPki::load();
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let signed = pki.altro.sign(&headers(pki::ALTRO_DOMAIN), ENTITY, at);
    let opts = VerifyOptions {
        evaluation_time: Some(pki::provider_validity().1 + chrono::Duration::days(1)),
    };
    let v = verify_message(&signed, &pki.anchors, None, &opts);
    assert_eq!(v.verdict, Verdict::CertificateExpired, "{:?}", v.reason);
}

#[test]
fn the_committed_files_are_marked_test_only() {
    let dir = pec_testkit::fixtures::workspace_root().join("shared/pec-testkit/pki");
    for name in [
        pki::files::CA_CERT,
        pki::files::CA_KEY,
        pki::files::EXAMPLE_CERT,
        pki::files::EXAMPLE_KEY,
        pki::files::ALTRO_CERT,
        pki::files::ALTRO_KEY,
    ] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(text.starts_with("# TEST ONLY"), "{name}");
    }
}
