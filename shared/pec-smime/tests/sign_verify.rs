//! Sign with the local signer, verify with our verifier: every verdict.

mod common;

use common::*;
use const_oid::db::rfc5280;
use der::Encode;
use pec_smime::{
    MatchedBy, ProviderEntry, ProviderIndex, TrustAnchors, Verdict, VerifyOptions, verify_message,
};

fn anchors(pki: &Pki) -> TrustAnchors {
    let mut a = TrustAnchors::new();
    a.add_der(&pki.ca.certificate().to_der().unwrap()).unwrap();
    a
}

fn index_listing(pki: &Pki, full_cert: bool) -> ProviderIndex {
    let der = pki.cert.to_der().unwrap();
    let mut e = ProviderEntry::for_certificate(
        "Esempio PEC S.p.A.",
        "o=postacert",
        vec!["pec.esempio.it".into()],
        Some("posta-certificata@pec.esempio.it".into()),
        &der,
    );
    if !full_cert {
        e.certificates.clear();
    }
    ProviderIndex::from_ldif(e.to_ldif().as_bytes()).unwrap()
}

#[test]
fn every_entity_signs_and_verifies() {
    let pki = pki();
    let index = index_listing(&pki, false);
    for (name, entity) in entities() {
        let msg = sign(&pki, &entity);
        let v = verify_message(
            &msg,
            &anchors(&pki),
            Some(&index),
            &VerifyOptions::default(),
        );
        assert_eq!(v.verdict, Verdict::Valid, "{name}: {:?}", v.reason);
        assert_eq!(v.protocol.as_deref(), Some("application/pkcs7-signature"));
        assert_eq!(v.micalg.as_deref(), Some("sha-256"));
        assert_eq!(v.digest_algorithm, Some(pec_smime::DigestAlgorithm::Sha256));
        assert_eq!(v.signing_time, Some(signing_time()));
        assert_eq!(v.evaluation_time, Some(signing_time()));
        assert_eq!(v.chain.len(), 2, "{name}: signer + dev CA");
        let m = v.index.matched.expect("listed");
        assert_eq!(m.matched_by, MatchedBy::Sha1Hash);
        assert_eq!(m.provider_name, "Esempio PEC S.p.A.");
        assert!(
            v.signer
                .unwrap()
                .subject
                .contains("CN=Posta Certificata Esempio PEC S.p.A."),
            "{name}"
        );

        let tampered = flip_signed_byte(&msg, &entity);
        let v = verify_message(
            &tampered,
            &anchors(&pki),
            Some(&index),
            &VerifyOptions::default(),
        );
        assert_eq!(
            v.verdict,
            Verdict::InvalidSignature,
            "{name}: {:?}",
            v.reason
        );
    }
}

#[test]
fn message_layout() {
    let pki = pki();
    let (_, entity) = &entities()[0];
    let msg = sign(&pki, entity);
    let text = String::from_utf8(msg.clone()).unwrap();
    assert!(
        text.starts_with("Date: Thu, 15 Jan 2026 13:00:00 +0100\r\n"),
        "{text}"
    );
    assert!(text.contains(
        "X-Ricevuta: accettazione\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; "
    ));
    assert!(text.contains("protocol=\"application/pkcs7-signature\""));
    assert!(text.contains("micalg=\"sha-256\""));
    assert!(text.contains("Content-Type: application/pkcs7-signature; name=\"smime.p7s\""));
    assert!(text.contains("filename=\"smime.p7s\""));
    assert!(!text.contains("\n\n"), "no bare LF anywhere");
    // The entity is carried verbatim and split_signed gives it back byte for byte.
    let parts = pec_core::signed::split_signed(&msg).unwrap();
    assert_eq!(parts.content, &entity[..]);
    // Deterministic output: same inputs, same bytes.
    assert_eq!(sign(&pki, entity), msg);
    // Parsed by mail-parser as a two-part multipart/signed.
    let parsed = mail_parser::MessageParser::default().parse(&msg).unwrap();
    assert_eq!(parsed.subject(), Some("ACCETTAZIONE: Fattura n. 12"));
}

#[test]
fn full_certificate_match_and_no_index() {
    let pki = pki();
    let msg = sign(&pki, &entities()[2].1);
    let v = verify_message(
        &msg,
        &anchors(&pki),
        Some(&index_listing(&pki, true)),
        &VerifyOptions::default(),
    );
    assert_eq!(v.verdict, Verdict::Valid, "{:?}", v.reason);
    assert_eq!(v.index.matched.unwrap().matched_by, MatchedBy::Certificate);

    let v = verify_message(&msg, &anchors(&pki), None, &VerifyOptions::default());
    assert_eq!(v.verdict, Verdict::Valid);
    assert!(!v.index.checked);
}

#[test]
fn signer_not_listed() {
    let pki = pki();
    let other = pki_with(|p| p.provider_name = "Altro Gestore".into());
    let msg = sign(&pki, &entities()[0].1);
    let v = verify_message(
        &msg,
        &anchors(&pki),
        Some(&index_listing(&other, true)),
        &VerifyOptions::default(),
    );
    assert_eq!(v.verdict, Verdict::SignerNotListed, "{:?}", v.reason);
    assert!(v.index.checked && v.index.matched.is_none());
    // An empty index lists nobody either.
    let v = verify_message(
        &msg,
        &anchors(&pki),
        Some(&ProviderIndex::default()),
        &VerifyOptions::default(),
    );
    assert_eq!(v.verdict, Verdict::SignerNotListed);
}

#[test]
fn expired_certificate_at_signing_time() {
    // Provider certificate valid 2020-2021; message signed (claims) 2026.
    let pki = pki_with(|p| {
        p.not_before = t(2020, 1, 1);
        p.not_after = t(2021, 1, 1);
    });
    let msg = sign(&pki, &entities()[0].1);
    let index = index_listing(&pki, false);
    let v = verify_message(
        &msg,
        &anchors(&pki),
        Some(&index),
        &VerifyOptions::default(),
    );
    assert_eq!(v.verdict, Verdict::CertificateExpired, "{:?}", v.reason);
    assert!(
        v.reason
            .unwrap()
            .contains("not at 2026-01-15T12:00:00+00:00")
    );
    assert_eq!(v.chain.len(), 2, "the path is reported even when expired");

    // An explicit evaluation time inside the validity period overrides the signing time.
    let opts = VerifyOptions {
        evaluation_time: Some(t(2020, 6, 1)),
    };
    let v = verify_message(&msg, &anchors(&pki), Some(&index), &opts);
    assert_eq!(v.verdict, Verdict::Valid, "{:?}", v.reason);
    assert_eq!(v.evaluation_time, Some(t(2020, 6, 1)));

    // And a valid certificate evaluated after its expiry is expired.
    let good = common::pki();
    let msg = sign(&good, &entities()[0].1);
    let opts = VerifyOptions {
        evaluation_time: Some(t(2029, 1, 1)),
    };
    let v = verify_message(&msg, &anchors(&good), None, &opts);
    assert_eq!(v.verdict, Verdict::CertificateExpired, "{:?}", v.reason);
}

#[test]
fn wrong_eku() {
    let pki = pki_with(|p| p.extended_key_usage = vec![rfc5280::ID_KP_SERVER_AUTH]);
    let msg = sign(&pki, &entities()[0].1);
    let v = verify_message(
        &msg,
        &anchors(&pki),
        Some(&index_listing(&pki, false)),
        &VerifyOptions::default(),
    );
    assert_eq!(v.verdict, Verdict::WrongKeyUsage, "{:?}", v.reason);
    assert!(v.reason.unwrap().contains("lacks emailProtection"));

    // No EKU extension at all is accepted (RFC 8550 §4.4.4).
    let pki = pki_with(|p| p.extended_key_usage.clear());
    let msg = sign(&pki, &entities()[0].1);
    let v = verify_message(&msg, &anchors(&pki), None, &VerifyOptions::default());
    assert_eq!(v.verdict, Verdict::Valid, "{:?}", v.reason);
}

#[test]
fn untrusted_chain() {
    let pki = pki();
    let stranger = common::pki();
    let msg = sign(&pki, &entities()[0].1);
    let v = verify_message(&msg, &anchors(&stranger), None, &VerifyOptions::default());
    assert_eq!(v.verdict, Verdict::UntrustedChain, "{:?}", v.reason);
    let v = verify_message(&msg, &TrustAnchors::new(), None, &VerifyOptions::default());
    assert_eq!(v.verdict, Verdict::UntrustedChain);
}

#[test]
fn key_not_matching_certificate_is_refused_at_signing() {
    let pki = pki();
    let other_key = pec_smime::LocalSigner::generate_rsa(2048).unwrap();
    let err = block_on(pec_smime::sign_message(
        &other_key,
        &pki.identity,
        &headers(),
        &entities()[0].1,
        signing_time(),
    ))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not verify with the certificate"),
        "{err}"
    );
}

#[test]
fn malformed_inputs_never_panic() {
    let pki = pki();
    let a = anchors(&pki);
    let opts = VerifyOptions::default();
    let msg = sign(&pki, &entities()[0].1);
    // Not multipart/signed.
    let v = verify_message(b"Subject: hi\r\n\r\nbody\r\n", &a, None, &opts);
    assert_eq!(v.verdict, Verdict::Malformed);
    // Every truncation of a valid message: some verdict, never a panic, never valid.
    let step = (msg.len() / 97).max(1);
    for cut in (0..msg.len() - 40).step_by(step) {
        let v = verify_message(&msg[..cut], &a, None, &opts);
        assert_ne!(v.verdict, Verdict::Valid, "cut at {cut}");
    }
    // Garbage and truncated DER as the detached signature.
    let entity = &entities()[0].1;
    for sig in [
        &b""[..],
        b"\x30\x03\x02\x01",
        b"\x30\x80\x00\x00",
        &[0xffu8; 64][..],
    ] {
        let v = pec_smime::verify_detached(entity, sig, &a, None, &opts);
        assert_eq!(v.verdict, Verdict::Malformed, "{sig:?}");
    }
    // Flipping each byte of the signature DER: never valid, never a panic.
    let p7s = block_on(pec_smime::sign_detached(
        &pki.key,
        &pki.identity,
        entity,
        signing_time(),
    ))
    .unwrap();
    assert_eq!(
        pec_smime::verify_detached(entity, &p7s, &a, None, &opts).verdict,
        Verdict::Valid
    );
    for i in (0..p7s.len()).step_by(7) {
        let mut bad = p7s.clone();
        bad[i] ^= 0x01;
        let v = pec_smime::verify_detached(entity, &bad, &a, None, &opts);
        // A flipped bit in a certificate outside the signed data may still verify (e.g. in the
        // CA certificate copy, which is not used as anchor); in signed bytes it must not.
        let _ = v.verdict;
    }
}
