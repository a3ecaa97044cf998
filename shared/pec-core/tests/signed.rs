//! `split_signed` on the real fixtures.
mod common;

use common::{crlf, fixture};
use pec_core::signed::{SignedError, split_signed};

#[test]
fn aruba_acceptance_splits() {
    let raw = fixture("aruba-2018-accettazione.eml");
    let parts = split_signed(&raw).expect("aruba acceptance is multipart/signed");
    assert_eq!(parts.protocol, "application/x-pkcs7-signature");
    assert_eq!(parts.micalg.as_deref(), Some("sha1"));
    // Exact bytes of the first child: from its first header to the end of its closing boundary
    // line (the LF that precedes the outer boundary is not part of it).
    assert!(parts.content.starts_with(
        b"Content-Type: multipart/mixed; boundary=\"----------=_1542123566-1838-1410\"\n"
    ));
    assert!(
        parts
            .content
            .ends_with(b"------------=_1542123566-1838-1410--\n")
    );
    let start = raw
        .windows(parts.content.len())
        .position(|w| w == parts.content)
        .expect("content is a slice of the input");
    assert_eq!(&raw[start - 1..start], b"\n");
    // The signature is DER (SEQUENCE, long form length).
    assert_eq!(parts.signature[0], 0x30);
    assert!(parts.signature.len() > 6000);
}

#[test]
fn aruba_acceptance_crlf_splits_the_same() {
    let raw = crlf(&fixture("aruba-2018-accettazione.eml"));
    let lf = fixture("aruba-2018-accettazione.eml");
    let a = split_signed(&raw).unwrap();
    let b = split_signed(&lf).unwrap();
    assert_eq!(a.content, crlf(b.content).as_slice());
    assert_eq!(a.signature, b.signature);
}

#[test]
fn sogei_envelope_splits() {
    let raw = fixture("aruba-2018-busta-trasporto-modified.eml");
    let parts = split_signed(&raw).expect("envelope is multipart/signed");
    assert_eq!(parts.protocol, "application/x-pkcs7-signature");
    assert_eq!(parts.micalg.as_deref(), Some("sha1"));
    assert!(parts.content.starts_with(b"Content-Type: multipart/mixed;"));
    assert!(
        parts
            .content
            .ends_with(b"------------=_1544268378-17535-8512--\n")
    );
    assert_eq!(parts.signature[0], 0x30);
}

#[test]
fn anonymised_fixtures_have_no_signature() {
    for name in ["anon-accettazione.eml", "anon-errore-consegna.eml"] {
        let raw = fixture(name);
        match split_signed(&raw) {
            Err(SignedError::MissingParts { found: 1 }) => {}
            other => panic!("{name}: expected MissingParts {{ found: 1 }}, got {other:?}"),
        }
    }
}

#[test]
fn ordinary_mail_is_not_signed() {
    for (name, found) in [
        ("plain-mail.eml", "multipart/related"),
        ("dsn-failure.eml", "multipart/report"),
    ] {
        let raw = fixture(name);
        match split_signed(&raw) {
            Err(SignedError::NotSigned { found: f }) => assert_eq!(f, found, "{name}"),
            other => panic!("{name}: expected NotSigned, got {other:?}"),
        }
    }
}

#[test]
fn truncated_signature_is_an_error_not_a_panic() {
    let raw = fixture("aruba-2018-accettazione.eml");
    let text = String::from_utf8(raw).unwrap();
    // Cut the base64 of smime.p7s in half, keeping the closing boundary.
    let sig_start = text.find("filename=\"smime.p7s\"\n\n").unwrap() + 22;
    let end = text
        .rfind("\n------08FC388CE5F459426EC143CACAD35ED7--")
        .unwrap();
    let mid = sig_start + (end - sig_start) / 2;
    let mid = mid - (mid - sig_start) % 65; // on a line boundary (64 chars + LF)
    let cut = format!("{}{}", &text[..mid], &text[end..]);
    match split_signed(cut.as_bytes()) {
        Err(SignedError::MalformedSignature(_)) => {}
        other => panic!("expected MalformedSignature, got {other:?}"),
    }
    // Every prefix of the message: never a panic.
    for n in (0..text.len()).step_by(97) {
        let _ = split_signed(&text.as_bytes()[..n]);
    }
}

/// A framed message (real structure, dummy signature) to mutate.
fn framed() -> Vec<u8> {
    let m = pec_core::message::UnsignedMessage {
        headers: vec![
            ("From".into(), "posta-certificata@pec.example.test".into()),
            ("X-Ricevuta".into(), "accettazione".into()),
        ],
        entity: b"Content-Type: text/plain\r\n\r\nsigned text\r\n".to_vec(),
    };
    pec_core::signed::assemble_signed(&m, common::DUMMY_SIGNATURE, "SIG")
}

#[test]
fn framed_message_splits() {
    let raw = framed();
    let parts = split_signed(&raw).expect("well-formed");
    assert_eq!(
        parts.content,
        b"Content-Type: text/plain\r\n\r\nsigned text\r\n"
    );
}

// Review finding: mail-parser reads the last Content-Type, other parsers the first, so an
// attacker could add a header (and a preamble) that another tool would display instead of the
// signed content, while the signature still verified.
#[test]
fn repeated_structural_headers_are_refused() {
    let raw = framed();
    let text = String::from_utf8(raw).unwrap();
    let forged = format!(
        "Content-Type: multipart/mixed; boundary=\"EVIL\"\r\n{}",
        text.replacen(
            "\r\n\r\n--SIG",
            "\r\n\r\n--EVIL\r\nContent-Type: text/plain\r\n\r\nATTACKER TEXT\r\n--EVIL--\r\n--SIG",
            1
        )
    );
    assert_eq!(
        split_signed(forged.as_bytes()).unwrap_err(),
        SignedError::RepeatedHeader {
            name: "Content-Type",
            count: 2
        }
    );
    let twice_mime = format!("MIME-Version: 1.0\r\n{text}");
    assert!(matches!(
        split_signed(twice_mime.as_bytes()),
        Err(SignedError::RepeatedHeader {
            name: "MIME-Version",
            ..
        })
    ));
}

// Review finding: a third part after smime.p7s travelled unsigned beside a valid signature.
#[test]
fn a_third_part_is_refused() {
    let text = String::from_utf8(framed()).unwrap();
    let forged = text.replacen(
        "\r\n--SIG--",
        "\r\n--SIG\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\n\r\n<postacert/>\r\n--SIG--",
        1,
    );
    assert_eq!(
        split_signed(forged.as_bytes()).unwrap_err(),
        SignedError::MissingParts { found: 3 }
    );
}
