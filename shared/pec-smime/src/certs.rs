//! Development CA, provider certificates and certificate requests.
//!
//! Everything is laid out with the x509-cert builders and signed through a [`DigestSigner`]:
//! `Builder::finalize` gives the to-be-signed DER, its SHA-256 goes to the signer (KMS in
//! production), the signature is checked against the public key and `Builder::assemble` makes
//! the result. So a CSR for a KMS key, or a CA whose key is in KMS, works the same way as the
//! in-memory [`LocalSigner`] used by the development CA.
//!
//! A provider certificate looks like the ones AgID CA1 issues (pec-rules §7.2):
//! subject `C=IT, O=<provider>, CN=Posta Certificata <provider>`, SAN
//! `email:posta-certificata@<domain>`, keyUsage digitalSignature (critical), extendedKeyUsage
//! emailProtection, basicConstraints CA:FALSE, subject and authority key identifiers.

use chrono::{DateTime, Utc};
use const_oid::{
    ObjectIdentifier,
    db::{rfc4519, rfc5280},
};
use der::{
    Any, Decode, Encode, EncodePem,
    asn1::{GeneralizedTime, Ia5String, PrintableStringRef, SetOfVec, Utf8StringRef},
    pem::LineEnding,
};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::{
    Certificate,
    attr::AttributeTypeAndValue,
    builder::{Builder, CertificateBuilder, Profile, RequestBuilder},
    ext::pkix::{
        AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
        SubjectAltName, SubjectKeyIdentifier, name::GeneralName,
    },
    name::{Name, RdnSequence, RelativeDistinguishedName},
    request::CertReq,
    serial_number::SerialNumber,
    time::{Time, Validity},
};

use crate::{
    chrono_to_der,
    signer::{DigestSigner, PublicKeyHandle, SignatureFailure},
};

/// Why a certificate or request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The signer failed or its signature does not match the key.
    #[error(transparent)]
    Signature(#[from] SignatureFailure),
    /// The in-memory key failed.
    #[cfg(feature = "local-signer")]
    #[error(transparent)]
    Key(#[from] LocalSignerError),
    /// The x509-cert builder refused the input.
    #[error("certificate builder: {0}")]
    Builder(String),
    /// DER encoding or decoding failed.
    #[error("DER: {0}")]
    Der(#[from] der::Error),
    /// A public key that is not a DER/PEM SubjectPublicKeyInfo.
    #[error("not a public key (expected a DER or PEM SubjectPublicKeyInfo): {0}")]
    PublicKey(String),
    /// A certificate input that is not usable.
    #[error("certificate: {0}")]
    Certificate(String),
    /// An invalid parameter.
    #[error("{0}")]
    Invalid(String),
}

fn builder_err(e: x509_cert::builder::Error) -> CertError {
    CertError::Builder(e.to_string())
}

/// What goes into a provider certificate.
#[derive(Clone, Debug)]
pub struct ProviderCertificateParams {
    /// Provider name: `O=<name>`, `CN=Posta Certificata <name>`.
    pub provider_name: String,
    /// The provider's PEC signing domain: SAN `posta-certificata@<domain>`.
    pub domain: String,
    /// Country (`C=`), `IT` by default; `None` leaves it out.
    pub country: Option<String>,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Serial number (positive, big-endian); random when `None`.
    pub serial: Option<Vec<u8>>,
    /// extendedKeyUsage purposes; `[emailProtection]` by default; empty leaves the extension
    /// out.
    pub extended_key_usage: Vec<ObjectIdentifier>,
}

impl ProviderCertificateParams {
    /// The usual parameters: country IT, random serial, EKU emailProtection.
    pub fn new(
        provider_name: impl Into<String>,
        domain: impl Into<String>,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Self {
        Self {
            provider_name: provider_name.into(),
            domain: domain.into(),
            country: Some("IT".into()),
            not_before,
            not_after,
            serial: None,
            extended_key_usage: vec![rfc5280::ID_KP_EMAIL_PROTECTION],
        }
    }

    /// The SAN address `posta-certificata@<domain>`.
    pub fn mailbox(&self) -> String {
        format!(
            "posta-certificata@{}",
            self.domain.trim().to_ascii_lowercase()
        )
    }
}

fn atv_printable(oid: ObjectIdentifier, v: &str) -> Result<AttributeTypeAndValue, CertError> {
    Ok(AttributeTypeAndValue {
        oid,
        value: Any::encode_from(&PrintableStringRef::new(v)?)?,
    })
}

fn atv_utf8(oid: ObjectIdentifier, v: &str) -> Result<AttributeTypeAndValue, CertError> {
    Ok(AttributeTypeAndValue {
        oid,
        value: Any::encode_from(&Utf8StringRef::new(v)?)?,
    })
}

fn rdn(atv: AttributeTypeAndValue) -> Result<RelativeDistinguishedName, CertError> {
    Ok(RelativeDistinguishedName(SetOfVec::try_from(vec![atv])?))
}

/// A name from (most significant first) country, organisation and common name; any
/// characters are allowed in O and CN (UTF8String, no string parsing, no escaping issues).
pub fn make_name(
    country: Option<&str>,
    organization: Option<&str>,
    common_name: &str,
) -> Result<Name, CertError> {
    let mut rdns = Vec::new();
    if let Some(c) = country {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CertError::Invalid(format!(
                "country {c:?} is not a two-letter upper-case code"
            )));
        }
        rdns.push(rdn(atv_printable(rfc4519::C, c)?)?);
    }
    if let Some(o) = organization {
        rdns.push(rdn(atv_utf8(rfc4519::O, o)?)?);
    }
    rdns.push(rdn(atv_utf8(rfc4519::CN, common_name)?)?);
    Ok(RdnSequence(rdns))
}

/// The subject of a provider certificate: `C=IT, O=<provider>, CN=Posta Certificata <provider>`.
pub fn provider_subject(provider_name: &str, country: Option<&str>) -> Result<Name, CertError> {
    let name = provider_name.trim();
    if name.is_empty() {
        return Err(CertError::Invalid("the provider name is empty".into()));
    }
    make_name(country, Some(name), &format!("Posta Certificata {name}"))
}

fn validity(not_before: DateTime<Utc>, not_after: DateTime<Utc>) -> Result<Validity, CertError> {
    if not_after <= not_before {
        return Err(CertError::Invalid(format!(
            "validity ends ({not_after}) before it starts ({not_before})"
        )));
    }
    let t = |d: DateTime<Utc>| -> Result<Time, CertError> {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(
            chrono_to_der(d)?,
        )))
    };
    Ok(Validity {
        not_before: t(not_before)?,
        not_after: t(not_after)?,
    })
}

fn serial(given: Option<&[u8]>) -> Result<SerialNumber, CertError> {
    let bytes = match given {
        Some(b) => b.to_vec(),
        None => {
            let mut b = [0u8; 16];
            getrandom::getrandom(&mut b).map_err(|e| {
                CertError::Builder(format!("no randomness for a serial number: {e}"))
            })?;
            // Positive, no leading zero byte.
            if let Some(first) = b.first_mut() {
                *first = (*first & 0x7f) | 0x01;
            }
            b.to_vec()
        }
    };
    SerialNumber::new(&bytes).map_err(CertError::Der)
}

fn san_email(mailbox: &str) -> Result<SubjectAltName, CertError> {
    Ok(SubjectAltName(vec![GeneralName::Rfc822Name(
        Ia5String::new(mailbox)?,
    )]))
}

fn check_domain(domain: &str) -> Result<(), CertError> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && domain.contains('.');
    if ok {
        Ok(())
    } else {
        Err(CertError::Invalid(format!(
            "{domain:?} is not a domain name (ASCII labels, at least two)"
        )))
    }
}

/// Signs a builder's to-be-signed bytes through `signer` and assembles the result.
async fn sign_builder<B: Builder, S: DigestSigner>(
    mut builder: B,
    signer: &S,
    signer_spki_der: &[u8],
) -> Result<B::Output, CertError> {
    let tbs = builder.finalize()?;
    let signature = crate::signer::sign_and_check(signer, signer_spki_der, &tbs).await?;
    builder.assemble(signature).map_err(builder_err)
}

/// A self-signed CA certificate for the key behind `signer` (whose public key is
/// `spki_der`): basicConstraints CA:TRUE, keyUsage keyCertSign+cRLSign, subject key id.
pub async fn self_signed_ca<S: DigestSigner>(
    signer: &S,
    spki_der: &[u8],
    subject: Name,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<Certificate, CertError> {
    let handle = PublicKeyHandle::from_spki_der(spki_der)
        .map_err(|e| CertError::PublicKey(e.to_string()))?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    let builder = CertificateBuilder::new(
        Profile::Root,
        serial(None)?,
        validity(not_before, not_after)?,
        subject,
        spki,
        &handle,
    )
    .map_err(builder_err)?;
    sign_builder(builder, signer, spki_der).await
}

/// A provider certificate for the public key `subject_spki_der` (for instance the output of
/// KMS `GetPublicKey`), issued by `issuer` whose key is behind `issuer_signer`.
pub async fn issue_provider_certificate<S: DigestSigner>(
    issuer: &Certificate,
    issuer_signer: &S,
    params: &ProviderCertificateParams,
    subject_spki_der: &[u8],
) -> Result<Certificate, CertError> {
    check_domain(params.domain.trim())?;
    let issuer_spki_der = issuer.tbs_certificate.subject_public_key_info.to_der()?;
    let issuer_handle = PublicKeyHandle::from_spki_der(&issuer_spki_der)
        .map_err(|e| CertError::Certificate(e.to_string()))?;
    let subject_spki = SubjectPublicKeyInfoOwned::from_der(subject_spki_der)
        .map_err(|e| CertError::PublicKey(e.to_string()))?;
    crate::rsa_verify::rsa_public_key(subject_spki_der)
        .map_err(|e| CertError::PublicKey(e.to_string()))?;
    let subject = provider_subject(&params.provider_name, params.country.as_deref())?;

    let mut builder = CertificateBuilder::new(
        Profile::Manual {
            issuer: Some(issuer.tbs_certificate.subject.clone()),
        },
        serial(params.serial.as_deref())?,
        validity(params.not_before, params.not_after)?,
        subject,
        subject_spki.clone(),
        &issuer_handle,
    )
    .map_err(builder_err)?;
    builder
        .add_extension(&BasicConstraints {
            ca: false,
            path_len_constraint: None,
        })
        .map_err(builder_err)?;
    builder
        .add_extension(&KeyUsage(KeyUsages::DigitalSignature.into()))
        .map_err(builder_err)?;
    if !params.extended_key_usage.is_empty() {
        builder
            .add_extension(&ExtendedKeyUsage(params.extended_key_usage.clone()))
            .map_err(builder_err)?;
    }
    builder
        .add_extension(&san_email(&params.mailbox())?)
        .map_err(builder_err)?;
    let ski = SubjectKeyIdentifier::try_from(subject_spki.owned_to_ref_spki())
        .map_err(|e| CertError::PublicKey(e.to_string()))?;
    builder.add_extension(&ski).map_err(builder_err)?;
    let aki = AuthorityKeyIdentifier::try_from(
        issuer
            .tbs_certificate
            .subject_public_key_info
            .owned_to_ref_spki(),
    )
    .map_err(|e| CertError::Certificate(e.to_string()))?;
    builder.add_extension(&aki).map_err(builder_err)?;
    sign_builder(builder, issuer_signer, &issuer_spki_der).await
}

/// Borrowing conversion of an owned SPKI (x509-cert's key-identifier constructors take refs).
trait OwnedToRefSpki {
    fn owned_to_ref_spki(&self) -> spki::SubjectPublicKeyInfoRef<'_>;
}

impl OwnedToRefSpki for SubjectPublicKeyInfoOwned {
    fn owned_to_ref_spki(&self) -> spki::SubjectPublicKeyInfoRef<'_> {
        use der::referenced::OwnedToRef;
        self.owned_to_ref()
    }
}

/// A PKCS#10 certificate request for a provider key whose private half is behind `signer`
/// (KMS in production) and whose public key is `spki_der`: subject
/// `C=IT, O=<provider>, CN=Posta Certificata <provider>`, requested extensions SAN
/// `posta-certificata@<domain>`, keyUsage digitalSignature, extendedKeyUsage emailProtection.
pub async fn build_provider_csr<S: DigestSigner>(
    signer: &S,
    spki_der: &[u8],
    provider_name: &str,
    domain: &str,
) -> Result<CertReq, CertError> {
    let domain = domain.trim().to_ascii_lowercase();
    check_domain(&domain)?;
    crate::rsa_verify::rsa_public_key(spki_der).map_err(|e| CertError::PublicKey(e.to_string()))?;
    let handle = PublicKeyHandle::from_spki_der(spki_der)
        .map_err(|e| CertError::PublicKey(e.to_string()))?;
    let subject = provider_subject(provider_name, Some("IT"))?;
    let mut builder = RequestBuilder::new(subject, &handle).map_err(builder_err)?;
    builder
        .add_extension(&san_email(&format!("posta-certificata@{domain}"))?)
        .map_err(builder_err)?;
    builder
        .add_extension(&KeyUsage(KeyUsages::DigitalSignature.into()))
        .map_err(builder_err)?;
    builder
        .add_extension(&ExtendedKeyUsage(vec![rfc5280::ID_KP_EMAIL_PROTECTION]))
        .map_err(builder_err)?;
    sign_builder(builder, signer, spki_der).await
}

#[cfg(feature = "local-signer")]
use crate::signer::{LocalSigner, LocalSignerError};

/// A development CA: an in-memory RSA key and its self-signed certificate. For tests and
/// local development only; never for production traffic.
#[cfg(feature = "local-signer")]
#[derive(Clone, Debug)]
pub struct DevCa {
    signer: LocalSigner,
    certificate: Certificate,
}

#[cfg(feature = "local-signer")]
impl DevCa {
    /// Generates a CA key (RSA 2048) and a self-signed certificate `CN=<common_name>`.
    pub async fn generate(
        common_name: &str,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<Self, CertError> {
        let signer = LocalSigner::generate_rsa(2048)?;
        let subject = make_name(Some("IT"), Some("PEC development"), common_name)?;
        let spki = signer.public_key_spki_der().to_vec();
        let certificate = self_signed_ca(&signer, &spki, subject, not_before, not_after).await?;
        Ok(Self {
            signer,
            certificate,
        })
    }

    /// Loads a CA from its certificate (PEM) and private key (PEM), checking they match.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertError> {
        let certificate = certificates_from_pem(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::Certificate("no certificate in the CA PEM".into()))?;
        let signer = LocalSigner::from_pem(key_pem)?;
        let cert_spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()?;
        if cert_spki != signer.public_key_spki_der() {
            return Err(CertError::Certificate(
                "the CA private key does not match the CA certificate".into(),
            ));
        }
        Ok(Self {
            signer,
            certificate,
        })
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The CA certificate as PEM.
    pub fn certificate_pem(&self) -> Result<String, CertError> {
        certificate_to_pem(&self.certificate)
    }

    /// The CA private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> Result<Vec<u8>, CertError> {
        Ok(self.signer.to_pkcs8_pem()?)
    }

    /// The CA's signer.
    pub fn signer(&self) -> &LocalSigner {
        &self.signer
    }

    /// Issues a provider certificate for `subject_spki_der`.
    pub async fn issue_provider_certificate(
        &self,
        params: &ProviderCertificateParams,
        subject_spki_der: &[u8],
    ) -> Result<Certificate, CertError> {
        issue_provider_certificate(&self.certificate, &self.signer, params, subject_spki_der).await
    }
}

/// A certificate as PEM (`CERTIFICATE`, LF line ends).
pub fn certificate_to_pem(cert: &Certificate) -> Result<String, CertError> {
    Ok(cert.to_pem(LineEnding::LF)?)
}

/// A certificate request as PEM (`CERTIFICATE REQUEST`, LF line ends).
pub fn csr_to_pem(csr: &CertReq) -> Result<String, CertError> {
    Ok(csr.to_pem(LineEnding::LF)?)
}

/// Every certificate of a PEM text (fails if one does not decode or there is none).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Certificate>, CertError> {
    let (ders, bad) = crate::chain::pem_certificate_blocks(pem);
    if bad > 0 {
        return Err(CertError::Certificate(format!(
            "{bad} PEM certificate block(s) do not decode"
        )));
    }
    if ders.is_empty() {
        return Err(CertError::Certificate("no PEM certificate found".into()));
    }
    ders.iter()
        .map(|d| Certificate::from_der(d).map_err(CertError::Der))
        .collect()
}

/// A public key given as DER SubjectPublicKeyInfo (KMS `GetPublicKey`) or PEM `PUBLIC KEY`;
/// returns the DER. Only RSA keys are accepted.
pub fn public_key_spki_der(input: &[u8]) -> Result<Vec<u8>, CertError> {
    let der = if input.first() == Some(&0x30) {
        input.to_vec()
    } else {
        let (label, der) = der::pem::decode_vec(trim_ascii(input))
            .map_err(|e| CertError::PublicKey(format!("not DER and not PEM: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(CertError::PublicKey(format!(
                "PEM label is {label:?}, expected \"PUBLIC KEY\""
            )));
        }
        der
    };
    SubjectPublicKeyInfoOwned::from_der(&der).map_err(|e| CertError::PublicKey(e.to_string()))?;
    crate::rsa_verify::rsa_public_key(&der).map_err(|e| CertError::PublicKey(e.to_string()))?;
    Ok(der)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// A DER encoding helper for callers holding x509-cert types.
pub fn to_der<T: Encode>(value: &T) -> Result<Vec<u8>, CertError> {
    Ok(value.to_der()?)
}
