//! The real and anonymised PEC messages in ../shared/fixtures/real (read in place, never copied).
//! Missing folder = failing test with a message naming it.

mod common;

use common::*;
use pec_smime::{
    DigestAlgorithm, ProviderEntry, ProviderIndex, TrustAnchors, Verdict, VerifyOptions,
    verify_message,
};

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn system_anchors() -> TrustAnchors {
    let pem = std::fs::read(SYSTEM_BUNDLE).unwrap_or_else(|e| {
        panic!("{SYSTEM_BUNDLE} is needed (Debian ca-certificates, holds Actalis Authentication Root CA): {e}")
    });
    TrustAnchors::from_pem_bundle(&pem).expect("system bundle")
}

/// An index listing Aruba by the SHA-1 of its 2017 provider certificate (as IGPEC would).
fn aruba_index() -> ProviderIndex {
    let ldif = "dn: providerName=ARUBA PEC,o=postacert\n\
objectClass: provider\n\
providerName: ARUBA PEC\n\
managedDomains: pec.aruba.it\n\
managedDomains: pec.it\n\
mailReceipt: posta-certificata@pec.aruba.it\n\
providerCertificateHash: B9:44:4B:A4:D5:28:80:FB:BE:4C:3C:0C:55:BF:81:E3:23:AD:DF:8B\n";
    ProviderIndex::from_ldif(ldif.as_bytes()).unwrap()
}

#[test]
fn aruba_acceptance_receipt_is_valid_at_signing_time() {
    let raw = fixture("aruba-2018-accettazione.eml");
    let v = verify_message(
        &raw,
        &system_anchors(),
        Some(&aruba_index()),
        &VerifyOptions::default(),
    );
    assert_eq!(v.verdict, Verdict::Valid, "{:?}", v.reason);
    assert_eq!(v.digest_algorithm, Some(DigestAlgorithm::Sha1));
    assert_eq!(v.protocol.as_deref(), Some("application/x-pkcs7-signature"));
    assert_eq!(v.micalg.as_deref(), Some("sha1"));
    assert_eq!(
        v.signing_time.unwrap().to_rfc3339(),
        "2018-11-13T15:39:26+00:00"
    );
    let subjects: Vec<&str> = v.chain.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert!(subjects[0].contains("CN=Posta Certificata ARUBA PEC"));
    assert!(subjects[1].contains("CN=AgID CA1"));
    assert!(subjects[2].contains("CN=Actalis Authentication Root CA"));
    let m = v.index.matched.unwrap();
    assert_eq!(m.provider_name, "ARUBA PEC");
    assert_eq!(m.matched_by, pec_smime::MatchedBy::Sha1Hash);
}

#[test]
fn aruba_receipt_today_is_expired_and_unlisted_without_index_entry() {
    let raw = fixture("aruba-2018-accettazione.eml");
    let opts = VerifyOptions {
        evaluation_time: Some(t(2026, 1, 1)),
    };
    let v = verify_message(&raw, &system_anchors(), Some(&aruba_index()), &opts);
    assert_eq!(v.verdict, Verdict::CertificateExpired, "{:?}", v.reason);

    let other = ProviderIndex::from_entries(vec![ProviderEntry::for_certificate(
        "Altro",
        "o=postacert",
        vec!["pec.altro.it".into()],
        None,
        b"\x30\x00",
    )]);
    let v = verify_message(
        &raw,
        &system_anchors(),
        Some(&other),
        &VerifyOptions::default(),
    );
    assert_eq!(v.verdict, Verdict::SignerNotListed, "{:?}", v.reason);
}

#[test]
fn aruba_receipt_without_the_root_is_untrusted() {
    let raw = fixture("aruba-2018-accettazione.eml");
    let v = verify_message(&raw, &TrustAnchors::new(), None, &VerifyOptions::default());
    assert_eq!(v.verdict, Verdict::UntrustedChain, "{:?}", v.reason);
}

#[test]
fn modified_transport_envelope_is_an_invalid_signature() {
    let raw = fixture("aruba-2018-busta-trasporto-modified.eml");
    let v = verify_message(&raw, &system_anchors(), None, &VerifyOptions::default());
    assert_eq!(v.verdict, Verdict::InvalidSignature, "{:?}", v.reason);
    assert!(v.reason.unwrap().contains("message digest mismatch"));
    assert_eq!(v.digest_algorithm, Some(DigestAlgorithm::Sha1));
}

#[test]
fn anonymised_samples_with_truncated_signatures_are_malformed() {
    for name in ["anon-accettazione.eml", "anon-errore-consegna.eml"] {
        let raw = fixture(name);
        let v = verify_message(&raw, &system_anchors(), None, &VerifyOptions::default());
        assert_eq!(v.verdict, Verdict::Malformed, "{name}: {:?}", v.reason);
    }
}

#[test]
fn ordinary_mail_is_malformed_not_a_panic() {
    for name in ["plain-mail.eml", "dsn-failure.eml"] {
        let raw = fixture(name);
        let v = verify_message(&raw, &system_anchors(), None, &VerifyOptions::default());
        assert_eq!(v.verdict, Verdict::Malformed, "{name}: {:?}", v.reason);
    }
}
