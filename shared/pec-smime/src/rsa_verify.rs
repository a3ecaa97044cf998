//! RSA PKCS#1 v1.5 signature verification (public key only) with the RustCrypto `rsa` crate.

use der::Decode;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use spki::SubjectPublicKeyInfoRef;

use crate::DigestAlgorithm;

/// Largest RSA modulus accepted (some roots in system bundles are 8192-bit).
const MAX_RSA_BITS: usize = 16384;

/// Why an RSA signature check failed.
#[derive(Debug, thiserror::Error)]
pub enum RsaVerifyError {
    /// The SubjectPublicKeyInfo could not be decoded.
    #[error("public key is not a valid SubjectPublicKeyInfo: {0}")]
    Spki(#[source] der::Error),
    /// The key is not RSA.
    #[error("public key algorithm {0} is not supported (only rsaEncryption)")]
    NotRsa(const_oid::ObjectIdentifier),
    /// The RSA key itself is invalid.
    #[error("invalid RSA public key: {0}")]
    BadKey(String),
    /// The signature does not verify.
    #[error("RSA PKCS#1 v1.5 signature does not verify")]
    Mismatch,
}

/// Decodes an RSA public key from a DER `SubjectPublicKeyInfo`.
pub(crate) fn rsa_public_key(spki_der: &[u8]) -> Result<RsaPublicKey, RsaVerifyError> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(RsaVerifyError::Spki)?;
    if spki.algorithm.oid != const_oid::db::rfc5912::RSA_ENCRYPTION {
        return Err(RsaVerifyError::NotRsa(spki.algorithm.oid));
    }
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| RsaVerifyError::BadKey("public key BIT STRING has unused bits".into()))?;
    let pk = rsa::pkcs1::RsaPublicKey::from_der(key_bytes).map_err(RsaVerifyError::Spki)?;
    RsaPublicKey::new_with_max_size(
        BigUint::from_bytes_be(pk.modulus.as_bytes()),
        BigUint::from_bytes_be(pk.public_exponent.as_bytes()),
        MAX_RSA_BITS,
    )
    .map_err(|e| RsaVerifyError::BadKey(e.to_string()))
}

/// Checks an RSASSA-PKCS1-v1_5 signature over an already computed digest.
pub fn verify_pkcs1v15(
    spki_der: &[u8],
    alg: DigestAlgorithm,
    digest: &[u8],
    signature: &[u8],
) -> Result<(), RsaVerifyError> {
    let key = rsa_public_key(spki_der)?;
    let scheme = match alg {
        DigestAlgorithm::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
        DigestAlgorithm::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
        DigestAlgorithm::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
        DigestAlgorithm::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
    };
    key.verify(scheme, digest, signature)
        .map_err(|_| RsaVerifyError::Mismatch)
}
