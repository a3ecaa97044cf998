//! RSA PKCS#1 v1.5 signature verification (public key only) with the RustCrypto `rsa` crate.

use der::Decode;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use spki::SubjectPublicKeyInfoRef;

use crate::DigestAlgorithm;

/// Largest RSA modulus accepted (some roots in system bundles are 8192-bit).
const MAX_RSA_BITS: usize = 8192;
/// Smallest RSA modulus accepted for any key that signs (signer, CA): weaker keys are breakable.
const MIN_RSA_BITS: usize = 2048;
/// Largest public exponent accepted (65537 in practice); a huge one only makes checks slow.
const MAX_EXPONENT_BITS: usize = 32;

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
    let modulus = BigUint::from_bytes_be(pk.modulus.as_bytes());
    let exponent = BigUint::from_bytes_be(pk.public_exponent.as_bytes());
    let bits = modulus.bits();
    if bits < MIN_RSA_BITS {
        return Err(RsaVerifyError::BadKey(format!(
            "RSA key of {bits} bits is below the {MIN_RSA_BITS}-bit minimum"
        )));
    }
    if exponent.bits() > MAX_EXPONENT_BITS {
        return Err(RsaVerifyError::BadKey(format!(
            "RSA public exponent of {} bits is larger than {MAX_EXPONENT_BITS} bits",
            exponent.bits()
        )));
    }
    RsaPublicKey::new_with_max_size(modulus, exponent, MAX_RSA_BITS)
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

#[cfg(all(test, feature = "local-signer"))]
mod tests {
    use super::*;

    #[test]
    fn weak_keys_are_refused() {
        let small = openssl::rsa::Rsa::generate(1024).unwrap();
        let spki = openssl::pkey::PKey::from_rsa(small)
            .unwrap()
            .public_key_to_der()
            .unwrap();
        let err = rsa_public_key(&spki).unwrap_err().to_string();
        assert!(err.contains("below the 2048-bit minimum"), "{err}");

        let ok = openssl::rsa::Rsa::generate(2048).unwrap();
        let spki = openssl::pkey::PKey::from_rsa(ok)
            .unwrap()
            .public_key_to_der()
            .unwrap();
        assert!(rsa_public_key(&spki).is_ok());
    }
}
