//! Detached CMS `SignedData` and the `multipart/signed` message (RFC 5652, RFC 8551 §3.5).
//!
//! The signature is obtained through a [`DigestSigner`]: the signed attributes (content-type,
//! signing-time, message-digest) are DER-encoded as a SET, hashed with SHA-256, and only that
//! digest goes to the signer (KMS `Sign`, `MessageType=DIGEST`). Every signature is checked
//! against the signer certificate's public key before it is used.

use chrono::{DateTime, Utc};
use cms::{
    builder::{create_content_type_attribute, create_message_digest_attribute},
    cert::{CertificateChoices, IssuerAndSerialNumber},
    content_info::{CmsVersion, ContentInfo},
    signed_data::{
        CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
        SignerInfo, SignerInfos,
    },
};
use const_oid::db::{rfc5911, rfc5912};
use der::{
    Any, Decode, Encode,
    asn1::{GeneralizedTime, OctetString, SetOfVec, UtcTime},
};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::{Certificate, attr::Attribute};

use crate::{DigestAlgorithm, canonicalize_crlf, chrono_to_der, signer::DigestSigner};

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signer certificate cannot be used (not RSA, undecodable...).
    #[error("unusable signer certificate: {0}")]
    Certificate(String),
    /// The signer failed or returned a signature that does not match the certificate.
    #[error(transparent)]
    Signature(#[from] crate::signer::SignatureFailure),
    /// DER encoding of a CMS structure failed.
    #[error("CMS encoding failed: {0}")]
    Encoding(#[from] der::Error),
    /// `cms::builder::Error` (which does not implement `std::error::Error`).
    #[error("CMS attribute construction failed: {0}")]
    Cms(String),
    /// The signing time cannot be encoded (before 1970 or out of range).
    #[error("signing time {0} cannot be encoded")]
    SigningTime(DateTime<Utc>),
    /// A header handed to [`sign_message`] cannot be written as is.
    #[error("header {name:?}: {reason}")]
    InvalidHeader {
        /// Header name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The signer certificate and the chain sent along with every signature.
#[derive(Clone, Debug)]
pub struct SigningIdentity {
    certificate: Certificate,
    spki_der: Vec<u8>,
    chain: Vec<Certificate>,
}

impl SigningIdentity {
    /// The provider certificate and the intermediate certificates to include (leaf first;
    /// including the root is harmless but useless).
    pub fn new(certificate: Certificate, chain: Vec<Certificate>) -> Result<Self, SignError> {
        let spki_der = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()?;
        crate::rsa_verify::rsa_public_key(&spki_der)
            .map_err(|e| SignError::Certificate(e.to_string()))?;
        Ok(Self {
            certificate,
            spki_der,
            chain,
        })
    }

    /// A PEM bundle whose first certificate is the signer's, followed by its chain.
    pub fn from_pem_chain(pem: &[u8]) -> Result<Self, SignError> {
        let mut certs = Certificate::load_pem_chain(pem)
            .map_err(|e| SignError::Certificate(format!("cannot read the PEM chain: {e}")))?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| SignError::Certificate("the PEM chain holds no certificate".into()))?;
        Self::new(leaf, certs.collect())
    }

    /// The signer certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The DER SubjectPublicKeyInfo of the signer certificate.
    pub fn public_key_spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

fn cms_err(e: cms::builder::Error) -> SignError {
    SignError::Cms(format!("{e:?}"))
}

/// The signing-time attribute (RFC 5652 §11.3: UTCTime for 1950–2049, GeneralizedTime outside).
fn signing_time_attribute(t: DateTime<Utc>) -> Result<Attribute, SignError> {
    let dt = chrono_to_der(t).map_err(|_| SignError::SigningTime(t))?;
    let value = if dt.year() < 2050 {
        Any::encode_from(&UtcTime::from_date_time(dt).map_err(|_| SignError::SigningTime(t))?)?
    } else {
        Any::encode_from(&GeneralizedTime::from_date_time(dt))?
    };
    Ok(Attribute {
        oid: rfc5911::ID_SIGNING_TIME,
        values: SetOfVec::try_from(vec![value])?,
    })
}

/// Signs `content` (the exact bytes of the MIME entity; bare LFs are canonicalised to CRLF
/// before hashing) and returns the DER of a detached CMS `ContentInfo`/`SignedData`: SHA-256,
/// signed attributes content-type (id-data), signing-time and message-digest, signer
/// identified by issuer and serial number, the certificate and `chain` included.
pub async fn sign_detached<S: DigestSigner>(
    signer: &S,
    identity: &SigningIdentity,
    content: &[u8],
    signing_time: DateTime<Utc>,
) -> Result<Vec<u8>, SignError> {
    let canonical = canonicalize_crlf(content);
    let content_digest = Sha256::digest(&*canonical);

    let signed_attrs: SignedAttributes = SetOfVec::try_from(vec![
        create_content_type_attribute(rfc5911::ID_DATA).map_err(cms_err)?,
        signing_time_attribute(signing_time)?,
        create_message_digest_attribute(&content_digest).map_err(cms_err)?,
    ])?;
    // The signature covers the attributes DER-encoded with the SET tag (RFC 5652 §5.4), not the
    // [0] IMPLICIT tag they carry inside SignerInfo.
    let attrs_der = signed_attrs.to_der()?;
    let signature = crate::signer::sign_and_check(signer, &identity.spki_der, &attrs_der).await?;
    let signature = signature.raw_bytes().to_vec();

    let tbs = &identity.certificate.tbs_certificate;
    let sha256 = AlgorithmIdentifierOwned {
        oid: DigestAlgorithm::Sha256.oid(),
        parameters: None,
    };
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        }),
        digest_alg: sha256.clone(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: rfc5912::RSA_ENCRYPTION,
            parameters: Some(der::asn1::Null.into()),
        },
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };

    let mut certs = vec![CertificateChoices::Certificate(
        identity.certificate.clone(),
    )];
    for c in &identity.chain {
        if *c != identity.certificate {
            certs.push(CertificateChoices::Certificate(c.clone()));
        }
    }
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: rfc5911::ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet::try_from(certs)?),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer_info])?,
    };
    let content_info = ContentInfo {
        content_type: rfc5911::ID_SIGNED_DATA,
        content: Any::from_der(&signed_data.to_der()?)?,
    };
    Ok(content_info.to_der()?)
}

/// Checks that a header can be written verbatim: a token name, an ASCII value whose only line
/// breaks are folds (CRLF followed by a space or tab).
fn check_header(name: &str, value: &str) -> Result<(), SignError> {
    let bad = |reason| {
        Err(SignError::InvalidHeader {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return bad("the name must be printable ASCII without ':' or spaces");
    }
    let lower = name.to_ascii_lowercase();
    if lower == "content-type" || lower == "content-transfer-encoding" {
        return bad("the top-level Content-Type/Content-Transfer-Encoding are set by the signer");
    }
    if !value.is_ascii() {
        return bad("the value must be ASCII (encode it with RFC 2047 first)");
    }
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\r' => {
                let folded = bytes.get(i + 1) == Some(&b'\n')
                    && matches!(bytes.get(i + 2), Some(b' ' | b'\t'));
                if !folded {
                    return bad("a line break in the value must be a fold (CRLF + space or tab)");
                }
            }
            b'\n' if i == 0 || bytes.get(i - 1) != Some(&b'\r') => {
                return bad("bare LF in the value");
            }
            0 => return bad("NUL in the value"),
            _ => {}
        }
    }
    // Every folded line must carry text: a whitespace-only line reads as a header/body
    // separator to some parsers (RFC 5322 §3.2.2 forbids it).
    if value
        .split("\r\n")
        .skip(1)
        .any(|line| line.trim_matches([' ', '\t']).is_empty())
    {
        return bad("a folded line must not be whitespace only");
    }
    Ok(())
}

/// A boundary derived from `seed` (the signature, itself a function of the content: the output
/// is reproducible) and absent from `entity`.
fn boundary_for(entity: &[u8], seed: &[u8]) -> String {
    let mut counter = 0u32;
    loop {
        let mut h = Sha256::new();
        h.update(seed);
        h.update(counter.to_be_bytes());
        let d = h.finalize();
        let hex: String = d.iter().take(12).map(|b| format!("{b:02X}")).collect();
        let boundary = format!("----PEC-SMIME-{hex}");
        let needle = format!("--{boundary}");
        if !entity.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            return boundary;
        }
        counter = counter.wrapping_add(1);
    }
}

/// Signs a MIME entity and returns the complete message:
///
/// ```text
/// <headers>
/// MIME-Version: 1.0
/// Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg="sha-256"; boundary="..."
///
/// --boundary
/// <entity, verbatim in CRLF form>
/// --boundary
/// Content-Type: application/pkcs7-signature; name="smime.p7s"
/// Content-Disposition: attachment; filename="smime.p7s"
/// Content-Transfer-Encoding: base64
///
/// <detached CMS SignedData>
/// --boundary--
/// ```
///
/// `headers` are the top-level headers (From, To, Subject, Date, Message-ID, X-Ricevuta...),
/// written in order with their values verbatim, so they must already be RFC 5322/2047 encoded
/// ASCII; `MIME-Version: 1.0` is added when absent. `entity` is the MIME entity to sign with
/// its own Content-Type header (pec-core's `UnsignedMessage::entity`); bare LFs in it are
/// converted to CRLF and the canonical bytes are both signed and emitted.
pub async fn sign_message<S: DigestSigner>(
    signer: &S,
    identity: &SigningIdentity,
    headers: &[(String, String)],
    entity: &[u8],
    signing_time: DateTime<Utc>,
) -> Result<Vec<u8>, SignError> {
    for (name, value) in headers {
        check_header(name, value)?;
    }
    let canonical = canonicalize_crlf(entity).into_owned();
    let p7s = sign_detached(signer, identity, &canonical, signing_time).await?;
    let boundary = boundary_for(&canonical, &p7s);

    // One framing for every multipart/signed we emit: pec-core writes the headers verbatim
    // (folds included), MIME-Version, the multipart/signed content type, the entity byte for
    // byte and smime.p7s.
    let message = pec_core::message::UnsignedMessage {
        headers: headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("MIME-Version"))
            .cloned()
            .collect(),
        entity: canonical,
    };
    Ok(pec_core::signed::assemble_signed(&message, &p7s, &boundary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        assert!(check_header("Subject", "ACCETTAZIONE: x").is_ok());
        assert!(check_header("Subject", "long\r\n folded").is_ok());
        assert!(check_header("Subject", "x\r\n ").is_err());
        assert!(check_header("Subject", "x\r\n \t\r\n y").is_err());
        assert!(check_header("Subject", "inject\r\nBcc: x").is_err());
        assert!(check_header("Subject", "bare\nlf").is_err());
        assert!(check_header("Subject", "è").is_err());
        assert!(check_header("Bad Name", "x").is_err());
        assert!(check_header("Content-Type", "text/plain").is_err());
    }

    #[test]
    fn boundary_not_in_entity() {
        let b = boundary_for(b"hello", b"seed");
        assert!(b.starts_with("----PEC-SMIME-"));
        assert_eq!(b, boundary_for(b"hello", b"seed"));
        // An entity that contains the first candidate gets another one.
        let clash = format!("x\r\n--{b}\r\n");
        let other = boundary_for(clash.as_bytes(), b"seed");
        assert_ne!(other, b);
    }
}
