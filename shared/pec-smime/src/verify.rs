//! Verification of a received PEC `multipart/signed` object, on its bytes as received.
//!
//! Order of the checks, and the verdict each failure gives:
//!
//! 1. structure: the S/MIME parts, the CMS `SignedData`, its signed attributes, the signer
//!    certificate → [`Verdict::Malformed`] (or [`Verdict::UnsupportedAlgorithm`] for a digest or
//!    signature algorithm other than SHA-1/SHA-2 with RSA PKCS#1 v1.5);
//! 2. message digest over the canonical (CRLF) content, then the RSA signature over the signed
//!    attributes **as received** → [`Verdict::InvalidSignature`];
//! 3. a certification path from the signer to a configured trust anchor (signatures, CA flags,
//!    path length, unknown critical extensions, name constraints) → [`Verdict::UntrustedChain`];
//! 4. validity period of every certificate of the path at the evaluation time (by default the
//!    signingTime signed attribute) → [`Verdict::CertificateExpired`];
//! 5. signer key usage: keyUsage, when present, must allow digitalSignature or nonRepudiation;
//!    extendedKeyUsage, when present, must contain emailProtection (a certificate with no EKU
//!    extension is accepted, as RFC 8550 §4.4.4 allows; real PEC certificates carry
//!    emailProtection; anyExtendedKeyUsage alone is **not** accepted) → [`Verdict::WrongKeyUsage`];
//! 6. the signer certificate is a listed provider certificate in the index (IGPEC), matched by
//!    full certificate or by SHA-1/SHA-256 hash of its DER → [`Verdict::SignerNotListed`].
//!
//! Revocation (CRL/OCSP) is not checked: this library does no network IO.

use chrono::{DateTime, Utc};
use cms::{cert::IssuerAndSerialNumber, content_info::ContentInfo, signed_data::SignerIdentifier};
use const_oid::db::{rfc5280, rfc5911, rfc5912};
use der::{Decode, asn1::OctetStringRef};
use serde::Serialize;
use x509_cert::{
    attr::Attributes,
    ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier},
};

use crate::{
    DigestAlgorithm, canonicalize_crlf,
    chain::{self, ParsedCert, PathProblem},
    index::{IndexMatch, ProviderIndex},
    raw::{RawSignedData, RawSignerInfo},
    rsa_verify::{self, RsaVerifyError},
    time_to_chrono,
};

/// The outcome of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Signature, chain, validity, key usage and (when an index was given) listing all pass.
    Valid,
    /// The content does not match the message digest, or the signature does not verify.
    InvalidSignature,
    /// No acceptable certification path to a configured trust anchor.
    UntrustedChain,
    /// A certificate of the path is outside its validity period at the evaluation time.
    CertificateExpired,
    /// The signer certificate's keyUsage / extendedKeyUsage does not allow S/MIME signing.
    WrongKeyUsage,
    /// The signer certificate is not a listed provider certificate in the index.
    SignerNotListed,
    /// The message or its CMS structure cannot be parsed, or a required element is missing.
    Malformed,
    /// A digest, signature or key algorithm this verifier does not implement.
    UnsupportedAlgorithm,
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Valid`].
    pub fn is_valid(self) -> bool {
        self == Verdict::Valid
    }
}

/// What was learned about a certificate, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateSummary {
    /// Subject distinguished name (RFC 4514).
    pub subject: String,
    /// Issuer distinguished name (RFC 4514).
    pub issuer: String,
    /// Serial number, hexadecimal.
    pub serial: String,
    /// Start of validity.
    pub not_before: Option<DateTime<Utc>>,
    /// End of validity.
    pub not_after: Option<DateTime<Utc>>,
    /// SHA-1 of the DER certificate, hexadecimal (the IGPEC providerCertificateHash).
    pub sha1: String,
    /// SHA-256 of the DER certificate, hexadecimal.
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CertificateSummary {
    fn of(c: &ParsedCert) -> Self {
        Self {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            serial: hex(c.cert.tbs_certificate.serial_number.as_bytes()),
            not_before: c.not_before(),
            not_after: c.not_after(),
            sha1: hex(&c.sha1()),
            sha256: hex(&c.sha256()),
        }
    }
}

/// The index part of a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IndexCheck {
    /// Whether an index was consulted.
    pub checked: bool,
    /// The matching provider entry, when listed.
    pub matched: Option<IndexMatch>,
}

/// The full report of a verification; `verdict` is the decision.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// The decision.
    pub verdict: Verdict,
    /// Why, in words, when not valid.
    pub reason: Option<String>,
    /// `protocol` parameter of the multipart/signed (message-level verification only).
    pub protocol: Option<String>,
    /// `micalg` parameter of the multipart/signed (message-level verification only).
    pub micalg: Option<String>,
    /// The signer certificate.
    pub signer: Option<CertificateSummary>,
    /// The signingTime signed attribute.
    pub signing_time: Option<DateTime<Utc>>,
    /// The time certificate validity was evaluated at.
    pub evaluation_time: Option<DateTime<Utc>>,
    /// Digest algorithm of the signature.
    pub digest_algorithm: Option<DigestAlgorithm>,
    /// Signature algorithm OID of the SignerInfo.
    pub signature_algorithm: Option<String>,
    /// The certification path, signer first, trust anchor last (empty if none was found).
    pub chain: Vec<CertificateSummary>,
    /// The provider index check.
    pub index: IndexCheck,
}

impl Verification {
    fn new() -> Self {
        Self {
            verdict: Verdict::Malformed,
            reason: None,
            protocol: None,
            micalg: None,
            signer: None,
            signing_time: None,
            evaluation_time: None,
            digest_algorithm: None,
            signature_algorithm: None,
            chain: Vec::new(),
            index: IndexCheck {
                checked: false,
                matched: None,
            },
        }
    }

    fn fail(mut self, verdict: Verdict, reason: impl Into<String>) -> Self {
        self.verdict = verdict;
        self.reason = Some(reason.into());
        self
    }
}

/// The trust anchors (root CA certificates) chains must end at.
#[derive(Clone, Debug, Default)]
pub struct TrustAnchors {
    certs: Vec<ParsedCert>,
    skipped: usize,
}

/// Why trust anchors could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// A DER certificate does not decode.
    #[error("trust anchor is not a DER X.509 certificate: {0}")]
    Der(#[from] der::Error),
    /// A PEM bundle holds no usable certificate.
    #[error("no usable certificate in the PEM bundle ({skipped} undecodable)")]
    Empty {
        /// Blocks that did not decode.
        skipped: usize,
    },
}

impl TrustAnchors {
    /// No anchors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every `CERTIFICATE` of a PEM bundle (such as `/etc/ssl/certs/ca-certificates.crt`).
    /// Certificates that do not decode are skipped and counted ([`TrustAnchors::skipped`]).
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Self, AnchorError> {
        let mut anchors = Self::new();
        anchors.add_pem_bundle(pem)?;
        Ok(anchors)
    }

    /// Adds every certificate of a PEM bundle; fails only when none is usable.
    pub fn add_pem_bundle(&mut self, pem: &[u8]) -> Result<usize, AnchorError> {
        let (ders, mut skipped) = chain::pem_certificate_blocks(pem);
        let mut added = 0;
        for der in ders {
            match ParsedCert::from_der(&der) {
                Ok(c) => {
                    self.certs.push(c);
                    added += 1;
                }
                Err(_) => skipped += 1,
            }
        }
        self.skipped += skipped;
        if added == 0 {
            return Err(AnchorError::Empty { skipped });
        }
        Ok(added)
    }

    /// Adds one DER certificate.
    pub fn add_der(&mut self, der: &[u8]) -> Result<(), AnchorError> {
        self.certs.push(ParsedCert::from_der(der)?);
        Ok(())
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether there is no anchor.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Certificates of the bundles that could not be decoded and were left out.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// Options of a verification.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Evaluate certificate validity at this time instead of the signing time.
    pub evaluation_time: Option<DateTime<Utc>>,
}

/// Verifies a received `multipart/signed` message (the complete raw message as received).
///
/// The signed part is taken byte-exact by `pec_core::signed::split_signed`, canonicalised
/// (bare LF → CRLF) and verified with [`verify_detached`]. `protocol` must be
/// `application/pkcs7-signature` or `application/x-pkcs7-signature`. Never panics.
pub fn verify_message(
    raw: &[u8],
    anchors: &TrustAnchors,
    index: Option<&ProviderIndex>,
    options: &VerifyOptions,
) -> Verification {
    let parts = match pec_core::signed::split_signed(raw) {
        Ok(p) => p,
        Err(e) => {
            return Verification::new().fail(
                Verdict::Malformed,
                format!("not a usable multipart/signed message: {e}"),
            );
        }
    };
    let protocol = parts.protocol.clone();
    let micalg = parts.micalg.clone();
    let mut v = if matches!(
        protocol.as_str(),
        "application/pkcs7-signature" | "application/x-pkcs7-signature"
    ) {
        verify_detached(parts.content, &parts.signature, anchors, index, options)
    } else {
        Verification::new().fail(
            Verdict::Malformed,
            format!("multipart/signed protocol {protocol:?} is not an S/MIME signature"),
        )
    };
    v.protocol = Some(protocol);
    v.micalg = micalg;
    v
}

/// Verifies a detached CMS signature (`smime.p7s`, DER) over `content`, the exact bytes of the
/// signed MIME entity as received (bare LFs are canonicalised to CRLF before hashing).
pub fn verify_detached(
    content: &[u8],
    p7s: &[u8],
    anchors: &TrustAnchors,
    index: Option<&ProviderIndex>,
    options: &VerifyOptions,
) -> Verification {
    let mut v = Verification::new();
    v.index.checked = index.is_some();
    match verify_inner(&mut v, content, p7s, anchors, index, options) {
        Ok(()) => {
            v.verdict = Verdict::Valid;
            v.reason = None;
            v
        }
        Err((verdict, reason)) => v.fail(verdict, reason),
    }
}

type Failure = (Verdict, String);

/// Certificates of a SignedData that are looked at (the rest is ignored).
const MAX_EMBEDDED_CERTIFICATES: usize = 32;

fn malformed(reason: impl Into<String>) -> Failure {
    (Verdict::Malformed, reason.into())
}

fn verify_inner(
    v: &mut Verification,
    content: &[u8],
    p7s: &[u8],
    anchors: &TrustAnchors,
    index: Option<&ProviderIndex>,
    options: &VerifyOptions,
) -> Result<(), Failure> {
    // 1. Structure.
    let ci = ContentInfo::from_der(p7s)
        .map_err(|e| malformed(format!("smime.p7s is not a DER CMS ContentInfo: {e}")))?;
    if ci.content_type != rfc5911::ID_SIGNED_DATA {
        return Err(malformed(format!(
            "CMS content type is {}, not signedData",
            ci.content_type
        )));
    }
    let sd = ci
        .content
        .decode_as::<RawSignedData<'_>>()
        .map_err(|e| malformed(format!("CMS SignedData does not decode: {e}")))?;
    if sd.encap_content_info.econtent.is_some() {
        return Err(malformed(
            "the SignedData encapsulates its content: not a detached signature",
        ));
    }
    let infos = sd
        .signer_infos
        .elements()
        .map_err(|e| malformed(format!("signerInfos do not decode: {e}")))?;
    let Some(first) = infos.first() else {
        return Err(malformed("the SignedData has no SignerInfo"));
    };
    if infos.len() > 1 {
        return Err(malformed(format!(
            "the SignedData has {} SignerInfos; a PEC object has exactly one (the provider)",
            infos.len()
        )));
    }
    let si = RawSignerInfo::from_der(first)
        .map_err(|e| malformed(format!("SignerInfo does not decode: {e}")))?;

    let mut certs = Vec::new();
    if let Some(set) = &sd.certificates {
        let elems = set
            .elements()
            .map_err(|e| malformed(format!("certificate set does not decode: {e}")))?;
        // Other CertificateChoices (attribute certificates...) and undecodable ones are ignored.
        certs.extend(
            elems
                .into_iter()
                // Bounded: a PEC signature carries the signer and one or two CA certificates.
                .take(MAX_EMBEDDED_CERTIFICATES)
                .filter_map(|d| ParsedCert::from_der(d).ok()),
        );
    }

    let digest_alg = DigestAlgorithm::from_oid(&si.digest_alg.oid).ok_or_else(|| {
        (
            Verdict::UnsupportedAlgorithm,
            format!("digest algorithm {} is not supported", si.digest_alg.oid),
        )
    })?;
    v.digest_algorithm = Some(digest_alg);
    let sig_oid = si.signature_algorithm.oid;
    v.signature_algorithm = Some(sig_oid.to_string());
    let sig_digest = match sig_oid {
        rfc5912::RSA_ENCRYPTION => Some(digest_alg),
        rfc5912::SHA_1_WITH_RSA_ENCRYPTION => Some(DigestAlgorithm::Sha1),
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION => Some(DigestAlgorithm::Sha256),
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION => Some(DigestAlgorithm::Sha384),
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION => Some(DigestAlgorithm::Sha512),
        _ => None,
    };
    if sig_digest != Some(digest_alg) {
        return Err((
            Verdict::UnsupportedAlgorithm,
            format!(
                "signature algorithm {sig_oid} with digest {digest_alg} is not supported \
                 (only RSA PKCS#1 v1.5)"
            ),
        ));
    }

    // Signer certificate: in the SignedData, else in the provider index.
    let index_certs: Vec<ParsedCert> = index
        .map(|i| {
            i.entries()
                .iter()
                .flat_map(|e| e.certificates.iter())
                .filter_map(|d| ParsedCert::from_der(d).ok())
                .collect()
        })
        .unwrap_or_default();
    let signer = certs
        .iter()
        .chain(index_certs.iter())
        .find(|c| identifies(&si.sid, c))
        .ok_or_else(|| malformed("the signer certificate is not in the message"))?;
    v.signer = Some(CertificateSummary::of(signer));

    // Signed attributes, hashed as received.
    let signed_bytes;
    let mut content_type = None;
    let mut message_digest = None;
    let mut signing_time = None;
    match &si.signed_attrs {
        Some(raw) => {
            signed_bytes = raw
                .as_der_set()
                .map_err(|e| malformed(format!("signed attributes: {e}")))?;
            let attrs = Attributes::from_der(&signed_bytes)
                .map_err(|e| malformed(format!("signed attributes do not decode: {e}")))?;
            for attr in attrs.iter() {
                let single = || {
                    if attr.values.len() == 1 {
                        attr.values
                            .get(0)
                            .ok_or_else(|| malformed("empty attribute"))
                    } else {
                        Err(malformed(format!(
                            "signed attribute {} must have exactly one value",
                            attr.oid
                        )))
                    }
                };
                match attr.oid {
                    rfc5911::ID_CONTENT_TYPE => {
                        content_type = Some(
                            single()?
                                .decode_as::<const_oid::ObjectIdentifier>()
                                .map_err(|e| malformed(format!("content-type attribute: {e}")))?,
                        );
                    }
                    rfc5911::ID_MESSAGE_DIGEST => {
                        message_digest = Some(
                            single()?
                                .decode_as::<OctetStringRef<'_>>()
                                .map_err(|e| malformed(format!("message-digest attribute: {e}")))?
                                .as_bytes()
                                .to_vec(),
                        );
                    }
                    rfc5911::ID_SIGNING_TIME => {
                        let value = single()?;
                        let t = der::Encode::to_der(value)
                            .and_then(|d| x509_cert::time::Time::from_der(&d))
                            .map_err(|e| malformed(format!("signing-time attribute: {e}")))?;
                        signing_time = time_to_chrono(&t);
                    }
                    _ => {}
                }
            }
            // A PEC signature covers MIME data: both the attribute and eContentType must say
            // id-data, so a signature made for another kind of content cannot be reused here.
            if content_type != Some(rfc5911::ID_DATA)
                || sd.encap_content_info.econtent_type != rfc5911::ID_DATA
            {
                return Err(malformed(
                    "content type (signed attribute and eContentType) must be id-data",
                ));
            }
        }
        None => signed_bytes = Vec::new(),
    }
    v.signing_time = signing_time;

    // 2. Digest and signature.
    let canonical = canonicalize_crlf(content);
    let content_digest = digest_alg.digest(&canonical);
    let (signed_digest, what) = if si.signed_attrs.is_some() {
        let Some(md) = message_digest else {
            return Err(malformed("the message-digest signed attribute is missing"));
        };
        if md != content_digest {
            return Err((
                Verdict::InvalidSignature,
                "message digest mismatch: the signed content was modified".into(),
            ));
        }
        (digest_alg.digest(&signed_bytes), "signed attributes")
    } else {
        (content_digest, "content")
    };
    match rsa_verify::verify_pkcs1v15(
        &signer.spki,
        digest_alg,
        &signed_digest,
        si.signature.as_bytes(),
    ) {
        Ok(()) => {}
        Err(RsaVerifyError::NotRsa(oid)) => {
            return Err((
                Verdict::UnsupportedAlgorithm,
                format!("signer key algorithm {oid} is not supported (only RSA)"),
            ));
        }
        Err(RsaVerifyError::Mismatch) => {
            return Err((
                Verdict::InvalidSignature,
                format!("the RSA signature over the {what} does not verify"),
            ));
        }
        Err(e) => return Err(malformed(format!("signer public key: {e}"))),
    }

    // 3./4. Chain at the evaluation time.
    let at = options.evaluation_time.or(signing_time).ok_or_else(|| {
        malformed("no signing-time signed attribute: an evaluation time must be given")
    })?;
    v.evaluation_time = Some(at);
    let intermediates: Vec<ParsedCert> = certs
        .iter()
        .filter(|c| c.der != signer.der)
        .cloned()
        .collect();
    let paths = chain::build_paths(signer, &intermediates, &anchors.certs);
    if paths.is_empty() {
        return Err((
            Verdict::UntrustedChain,
            format!(
                "no certification path from {} to a trust anchor ({} anchors configured)",
                signer.subject(),
                anchors.len()
            ),
        ));
    }
    let mut first_problem = None;
    let mut chosen = None;
    for path in &paths {
        match chain::validate_path(path, at) {
            Ok(()) => {
                chosen = Some(path);
                break;
            }
            Err(p) => {
                // Prefer reporting a time problem (the path is otherwise good) over a
                // structural one found on another candidate path.
                match (&first_problem, &p) {
                    (None, _)
                    | (Some(PathProblem::Untrusted(_)), PathProblem::NotValidAtTime(_)) => {
                        first_problem = Some(p);
                        v.chain = path.iter().map(|c| CertificateSummary::of(c)).collect();
                    }
                    _ => {}
                }
            }
        }
    }
    let Some(path) = chosen else {
        return Err(match first_problem {
            Some(PathProblem::NotValidAtTime(r)) => (Verdict::CertificateExpired, r),
            Some(PathProblem::Untrusted(r)) => (Verdict::UntrustedChain, r),
            None => (Verdict::UntrustedChain, "no acceptable path".into()),
        });
    };
    v.chain = path.iter().map(|c| CertificateSummary::of(c)).collect();

    // 5. Key usage of the signer.
    if let Some((_, ku)) = signer
        .extension::<KeyUsage>()
        .map_err(|e| malformed(format!("signer certificate: {e}")))?
        && !ku.0.contains(KeyUsages::DigitalSignature)
        && !ku.0.contains(KeyUsages::NonRepudiation)
    {
        return Err((
            Verdict::WrongKeyUsage,
            "the signer certificate's keyUsage allows neither digitalSignature nor nonRepudiation"
                .into(),
        ));
    }
    if let Some((_, eku)) = signer
        .extension::<ExtendedKeyUsage>()
        .map_err(|e| malformed(format!("signer certificate: {e}")))?
        && !eku.0.contains(&rfc5280::ID_KP_EMAIL_PROTECTION)
    {
        let listed: Vec<String> = eku.0.iter().map(|o| o.to_string()).collect();
        return Err((
            Verdict::WrongKeyUsage,
            format!(
                "the signer certificate's extendedKeyUsage [{}] lacks emailProtection",
                listed.join(", ")
            ),
        ));
    }

    // 6. Provider index.
    if let Some(index) = index {
        match index.provider_for_certificate(&signer.der) {
            Some(m) => v.index.matched = Some(m),
            None => {
                return Err((
                    Verdict::SignerNotListed,
                    format!(
                        "signer {} (SHA-1 {}) is not a listed provider certificate",
                        signer.subject(),
                        hex(&signer.sha1())
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `cert` is the certificate a SignerIdentifier designates.
fn identifies(sid: &SignerIdentifier, cert: &ParsedCert) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer,
            serial_number,
        }) => {
            *serial_number == cert.cert.tbs_certificate.serial_number
                && chain::names_match(issuer, cert.issuer())
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => matches!(
            cert.extension::<SubjectKeyIdentifier>(),
            Ok(Some((_, own))) if own.0 == ski.0
        ),
    }
}
