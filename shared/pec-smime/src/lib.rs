//! S/MIME for PEC (Posta Elettronica Certificata).
//!
//! A pure library: it takes bytes and parsed structures, never reads files, the network or the
//! clock (every time — signing time, evaluation time, certificate validity — is passed in).
//!
//! * [`signer`]: the async [`DigestSigner`] trait (KMS in production) and the in-memory
//!   [`LocalSigner`] (OpenSSL) for tests, benchmarks and the development CA.
//! * [`sign`]: detached CMS `SignedData` over a MIME entity and the complete
//!   `multipart/signed` message ([`sign_message`]).
//! * [`verify`]: verification of a received `multipart/signed` object on its bytes as received,
//!   with a typed [`Verdict`].
//! * [`index`]: the provider index (IGPEC, RFC 6109 `provider` entries) loaded from LDIF.
//! * [`certs`]: development CA, provider certificates and certificate requests, all signed
//!   through a [`DigestSigner`].

#![forbid(unsafe_code)]

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use const_oid::ObjectIdentifier;
use sha2::Digest;

pub mod certs;
mod chain;
pub mod index;
mod raw;
pub mod rsa_verify;
pub mod sign;
pub mod signer;
pub mod verify;

#[cfg(feature = "local-signer")]
pub use certs::DevCa;
pub use certs::{CertError, ProviderCertificateParams};
pub use index::{IndexError, IndexMatch, MatchedBy, ProviderEntry, ProviderIndex};
pub use sign::{SignError, SigningIdentity, sign_detached, sign_message};
pub use signer::{DigestSigner, Sha256Digest};
#[cfg(feature = "local-signer")]
pub use signer::{LocalSigner, LocalSignerError};
pub use verify::{
    CertificateSummary, IndexCheck, TrustAnchors, Verdict, Verification, VerifyOptions,
    verify_detached, verify_message,
};

/// A digest algorithm seen in (or used for) a CMS signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum DigestAlgorithm {
    /// SHA-1: still used by real providers in 2024; accepted on input, never emitted.
    #[serde(rename = "sha-1")]
    Sha1,
    /// SHA-256: what this crate emits.
    #[serde(rename = "sha-256")]
    Sha256,
    /// SHA-384.
    #[serde(rename = "sha-384")]
    Sha384,
    /// SHA-512.
    #[serde(rename = "sha-512")]
    Sha512,
}

impl DigestAlgorithm {
    /// The algorithm for an OID (`id-sha1`, `id-sha256`, ...), if supported.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        use const_oid::db::rfc5912;
        match *oid {
            rfc5912::ID_SHA_1 => Some(Self::Sha1),
            rfc5912::ID_SHA_256 => Some(Self::Sha256),
            rfc5912::ID_SHA_384 => Some(Self::Sha384),
            rfc5912::ID_SHA_512 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The algorithm's OID.
    pub fn oid(self) -> ObjectIdentifier {
        use const_oid::db::rfc5912;
        match self {
            Self::Sha1 => rfc5912::ID_SHA_1,
            Self::Sha256 => rfc5912::ID_SHA_256,
            Self::Sha384 => rfc5912::ID_SHA_384,
            Self::Sha512 => rfc5912::ID_SHA_512,
        }
    }

    /// The `micalg` parameter name (RFC 8551 §3.5.3.2): `sha-1`, `sha-256`, ...
    pub fn micalg(self) -> &'static str {
        match self {
            Self::Sha1 => "sha-1",
            Self::Sha256 => "sha-256",
            Self::Sha384 => "sha-384",
            Self::Sha512 => "sha-512",
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

impl std::fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.micalg())
    }
}

/// The canonical form S/MIME signs (RFC 8551 §3.1.1): every bare LF becomes CRLF.
///
/// Input already in canonical form is returned borrowed, unchanged.
pub fn canonicalize_crlf(input: &[u8]) -> Cow<'_, [u8]> {
    let bare_lf = input
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || input.get(i - 1) != Some(&b'\r')));
    if !bare_lf {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut prev = 0u8;
    for &b in input {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    Cow::Owned(out)
}

/// Converts an X.509/CMS time to chrono.
pub(crate) fn time_to_chrono(t: &x509_cert::time::Time) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(t.to_unix_duration().as_secs()).ok()?;
    DateTime::<Utc>::from_timestamp(secs, 0)
}

/// Converts chrono to a `der` date-time (whole seconds; times before 1970 are rejected).
pub(crate) fn chrono_to_der(t: DateTime<Utc>) -> Result<der::DateTime, der::Error> {
    let secs = u64::try_from(t.timestamp()).map_err(|_| der::ErrorKind::DateTime)?;
    der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_only_bare_lf() {
        assert_eq!(&*canonicalize_crlf(b"a\r\nb"), b"a\r\nb");
        assert!(matches!(canonicalize_crlf(b"a\r\nb"), Cow::Borrowed(_)));
        assert_eq!(&*canonicalize_crlf(b"\na\nb\r\n\n"), b"\r\na\r\nb\r\n\r\n");
        assert_eq!(&*canonicalize_crlf(b""), b"");
    }
}
