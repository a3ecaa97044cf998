//! Hand-built CMS signatures that bend the rules (adopted from the security review): the
//! verifier must judge each exactly. Built with the crate's own test PKI.
mod common;

use common::*;
use der::{Decode, Encode};
use pec_smime::{TrustAnchors, Verdict, VerifyOptions, verify_detached};

fn anchors(pki: &Pki) -> TrustAnchors {
    let mut a = TrustAnchors::new();
    a.add_der(&pki.ca.certificate().to_der().unwrap()).unwrap();
    a
}

fn replace_once(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let i = hay
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle");
    let mut out = hay[..i].to_vec();
    out.extend_from_slice(with);
    out.extend_from_slice(&hay[i + needle.len()..]);
    out
}

// ---- hand-built CMS ----------------------------------------------------------------------

use cms::{
    builder::{create_content_type_attribute, create_message_digest_attribute},
    cert::{CertificateChoices, IssuerAndSerialNumber},
    content_info::{CmsVersion, ContentInfo},
    signed_data::{
        CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
        SignerInfo, SignerInfos,
    },
};
use const_oid::{ObjectIdentifier, db::rfc5911, db::rfc5912};
use der::asn1::{OctetString, SetOfVec, UtcTime};
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;

fn signing_time_attr() -> Attribute {
    let dt = der::DateTime::from_unix_duration(std::time::Duration::from_secs(
        signing_time().timestamp() as u64,
    ))
    .unwrap();
    Attribute {
        oid: rfc5911::ID_SIGNING_TIME,
        values: SetOfVec::try_from(vec![
            der::Any::encode_from(&UtcTime::from_date_time(dt).unwrap()).unwrap(),
        ])
        .unwrap(),
    }
}

/// Signed attributes (if any), the bytes to sign, and the (sorted, as-emitted) attribute bytes
/// when the emitted order differs from DER order.
type Prepared = (
    Option<SignedAttributes>,
    Vec<u8>,
    Option<(Vec<u8>, Vec<u8>)>,
);

/// Builds a detached p7s. `attrs`: None = no signed attributes.
/// `reorder`: emit the signed attributes in reverse (non-DER) order and sign them as emitted.
fn build_p7s(
    pki: &Pki,
    content: &[u8],
    attrs: Option<Vec<Attribute>>,
    econtent_type: ObjectIdentifier,
    reorder: bool,
) -> Vec<u8> {
    let tbs = &pki.cert.tbs_certificate;
    let sha256 = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    };
    let (signed_attrs, to_sign, reordered): Prepared = match attrs {
        Some(a) => {
            let set: SignedAttributes = SetOfVec::try_from(a).unwrap();
            let der_sorted = set.to_der().unwrap();
            if reorder {
                // value bytes, elements reversed
                let mut hr = der::SliceReader::new(&der_sorted).unwrap();
                let _hdr = <der::Header as der::Decode>::decode(&mut hr).unwrap();
                let hl = usize::try_from(der::Reader::position(&hr)).unwrap();
                let value = &der_sorted[hl..];
                let mut r = der::SliceReader::new(value).unwrap();
                let mut elems = Vec::new();
                while !der::Reader::is_finished(&r) {
                    elems.push(der::Reader::tlv_bytes(&mut r).unwrap().to_vec());
                }
                elems.reverse();
                let rev: Vec<u8> = elems.concat();
                let mut signed = der_sorted[..hl].to_vec();
                signed.extend_from_slice(&rev);
                (Some(set), signed, Some((value.to_vec(), rev)))
            } else {
                (Some(set), der_sorted, None)
            }
        }
        None => (None, content.to_vec(), None),
    };
    let sig = pki
        .key
        .sign_digest_blocking(&sha2::Sha256::digest(&to_sign).into())
        .unwrap();
    let si = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        }),
        digest_alg: sha256.clone(),
        signed_attrs,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: rfc5912::RSA_ENCRYPTION,
            parameters: Some(der::asn1::Null.into()),
        },
        signature: OctetString::new(sig).unwrap(),
        unsigned_attrs: None,
    };
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256]).unwrap(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type,
            econtent: None,
        },
        certificates: Some(
            CertificateSet::try_from(vec![
                CertificateChoices::Certificate(pki.cert.clone()),
                CertificateChoices::Certificate(pki.ca.certificate().clone()),
            ])
            .unwrap(),
        ),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![si]).unwrap(),
    };
    let ci = ContentInfo {
        content_type: rfc5911::ID_SIGNED_DATA,
        content: der::Any::from_der(&sd.to_der().unwrap()).unwrap(),
    };
    let mut out = ci.to_der().unwrap();
    if let Some((sorted, rev)) = reordered {
        out = replace_once(&out, &sorted, &rev);
    }
    out
}

fn std_attrs(content: &[u8], ct: ObjectIdentifier) -> Vec<Attribute> {
    let d = sha2::Sha256::digest(content);
    vec![
        create_content_type_attribute(ct).unwrap(),
        signing_time_attr(),
        create_message_digest_attribute(&d).unwrap(),
    ]
}

const CONTENT: &[u8] = b"Content-Type: text/plain\r\n\r\nhello\r\n";

fn verdict(pki: &Pki, p7s: &[u8], content: &[u8]) -> Verdict {
    verify_detached(content, p7s, &anchors(pki), None, &VerifyOptions::default()).verdict
}

#[test]
fn standard_signed_attributes_verify() {
    let pki = pki();
    let p7s = build_p7s(
        &pki,
        CONTENT,
        Some(std_attrs(CONTENT, rfc5911::ID_DATA)),
        rfc5911::ID_DATA,
        false,
    );
    assert_eq!(verdict(&pki, &p7s, CONTENT), Verdict::Valid);
}

// Review finding: any content type (e.g. a timestamp token's TSTInfo) was accepted as long as the
// attribute matched eContentType; a PEC signature covers MIME data only.
#[test]
fn content_type_other_than_id_data_is_malformed() {
    let pki = pki();
    let tst = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
    let p7s = build_p7s(&pki, CONTENT, Some(std_attrs(CONTENT, tst)), tst, false);
    assert_eq!(verdict(&pki, &p7s, CONTENT), Verdict::Malformed);
}

#[test]
fn unsorted_signed_attributes_are_verified_as_received() {
    let pki = pki();
    let p7s = build_p7s(
        &pki,
        CONTENT,
        Some(std_attrs(CONTENT, rfc5911::ID_DATA)),
        rfc5911::ID_DATA,
        true,
    );
    assert_eq!(verdict(&pki, &p7s, CONTENT), Verdict::Valid);
}

#[test]
fn message_digest_must_match_and_be_present() {
    let pki = pki();
    let p7s = build_p7s(
        &pki,
        CONTENT,
        Some(std_attrs(b"other", rfc5911::ID_DATA)),
        rfc5911::ID_DATA,
        false,
    );
    assert_eq!(verdict(&pki, &p7s, CONTENT), Verdict::InvalidSignature);
    let attrs = std_attrs(CONTENT, rfc5911::ID_DATA)[..2].to_vec();
    let p7s = build_p7s(&pki, CONTENT, Some(attrs), rfc5911::ID_DATA, false);
    assert_eq!(verdict(&pki, &p7s, CONTENT), Verdict::Malformed);
}
