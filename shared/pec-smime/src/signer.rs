//! The signing key, behind an async trait.
//!
//! Everything this crate signs (CMS signed attributes, certificates, certificate requests) is
//! reduced to one operation: **RSASSA-PKCS1-v1_5 over a SHA-256 digest that the caller has already
//! computed**. That is exactly AWS KMS `Sign` with `MessageType=DIGEST` and
//! `SigningAlgorithm=RSASSA_PKCS1_V1_5_SHA_256`, so the production key never leaves KMS.
//!
//! [`LocalSigner`] is the in-memory implementation for tests, benchmarks and the development CA.
//! Its private-key operation runs in the system OpenSSL (constant-time modular exponentiation
//! with blinding), not in the RustCrypto `rsa` crate.

use std::future::Future;

use der::{Decode, Encode, asn1::BitString};
#[cfg(feature = "local-signer")]
use openssl::{
    md::Md,
    pkey::{PKey, Private},
    pkey_ctx::PkeyCtx,
    rsa::{Padding, Rsa},
};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

/// A SHA-256 digest handed to a [`DigestSigner`].
pub type Sha256Digest = [u8; 32];

/// A key that signs precomputed SHA-256 digests with RSASSA-PKCS1-v1_5.
///
/// The implementation receives the 32-byte digest and returns the raw signature (as long as the
/// modulus, big-endian), i.e. it does the `DigestInfo` wrapping and the private-key operation.
/// Exactly what KMS `Sign` returns for `MessageType=DIGEST`,
/// `SigningAlgorithm=RSASSA_PKCS1_V1_5_SHA_256`.
///
/// The method returns a `Send` future, so a signing call can live inside a Lambda handler or a
/// spawned tokio task. Implementations may simply write `async fn`:
///
/// ```ignore
/// impl DigestSigner for KmsSigner {
///     type Error = KmsSignError;
///     async fn sign_sha256_digest(&self, digest: Sha256Digest) -> Result<Vec<u8>, KmsSignError> {
///         let out = self.client.sign()
///             .key_id(&self.key_id)
///             .message(Blob::new(digest.to_vec()))
///             .message_type(MessageType::Digest)
///             .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
///             .send().await?;
///         Ok(out.signature.ok_or(KmsSignError::NoSignature)?.into_inner())
///     }
/// }
/// ```
///
/// Callers of this crate check every signature they obtain against the certificate's public key
/// before using it, so a signer returning garbage (or a key that does not match the certificate)
/// is caught at signing time, not by the receiving provider.
pub trait DigestSigner: Send + Sync {
    /// The error of the signing backend (network, permissions, key state...).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Signs `digest` (a SHA-256 value) with RSASSA-PKCS1-v1_5.
    fn sign_sha256_digest(
        &self,
        digest: Sha256Digest,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;
}

impl<T: DigestSigner> DigestSigner for &T {
    type Error = T::Error;

    fn sign_sha256_digest(
        &self,
        digest: Sha256Digest,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send {
        (**self).sign_sha256_digest(digest)
    }
}

#[cfg(feature = "local-signer")]
/// Errors of the local in-memory signer.
#[derive(Debug, thiserror::Error)]
pub enum LocalSignerError {
    /// OpenSSL refused an operation (key generation, parsing, signing).
    #[error("OpenSSL {operation} failed: {source}")]
    OpenSsl {
        /// What was being done.
        operation: &'static str,
        /// OpenSSL's error queue.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// The key is not an RSA key.
    #[error("the private key is not an RSA key (only RSA PKCS#1 v1.5 signatures are supported)")]
    NotRsa,
    /// The key is too small to be used for PEC signatures.
    #[error("RSA key of {bits} bits is too small (minimum 2048)")]
    KeyTooSmall {
        /// Modulus size.
        bits: u32,
    },
}

#[cfg(feature = "local-signer")]
fn ossl<T>(
    operation: &'static str,
    r: Result<T, openssl::error::ErrorStack>,
) -> Result<T, LocalSignerError> {
    r.map_err(|source| LocalSignerError::OpenSsl { operation, source })
}

#[cfg(feature = "local-signer")]
/// An RSA private key held in memory, signing through OpenSSL.
///
/// For unit tests, benchmarks and the development CA only: production keys live in KMS.
#[derive(Clone)]
pub struct LocalSigner {
    key: PKey<Private>,
    spki_der: Vec<u8>,
}

#[cfg(feature = "local-signer")]
impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner")
            .field("bits", &self.key.bits())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "local-signer")]
impl LocalSigner {
    /// Generates a fresh RSA key of `bits` bits (at least 2048).
    pub fn generate_rsa(bits: u32) -> Result<Self, LocalSignerError> {
        if bits < 2048 {
            return Err(LocalSignerError::KeyTooSmall { bits });
        }
        let rsa = ossl("RSA key generation", Rsa::generate(bits))?;
        let key = ossl("key wrapping", PKey::from_rsa(rsa))?;
        Self::from_pkey(key)
    }

    /// Loads a private key from PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, LocalSignerError> {
        let key = ossl("private key PEM parsing", PKey::private_key_from_pem(pem))?;
        Self::from_pkey(key)
    }

    /// Loads a private key from DER (PKCS#8 or PKCS#1).
    pub fn from_der(der: &[u8]) -> Result<Self, LocalSignerError> {
        let key = ossl("private key DER parsing", PKey::private_key_from_der(der))?;
        Self::from_pkey(key)
    }

    fn from_pkey(key: PKey<Private>) -> Result<Self, LocalSignerError> {
        if key.rsa().is_err() {
            return Err(LocalSignerError::NotRsa);
        }
        if key.bits() < 2048 {
            return Err(LocalSignerError::KeyTooSmall { bits: key.bits() });
        }
        let spki_der = ossl("public key encoding", key.public_key_to_der())?;
        Ok(Self { key, spki_der })
    }

    /// The private key as PKCS#8 PEM (for the development CA's key file).
    pub fn to_pkcs8_pem(&self) -> Result<Vec<u8>, LocalSignerError> {
        ossl("private key encoding", self.key.private_key_to_pem_pkcs8())
    }

    /// The public key as a DER `SubjectPublicKeyInfo` (what KMS `GetPublicKey` returns).
    pub fn public_key_spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> u32 {
        self.key.bits()
    }

    /// The synchronous private-key operation: PKCS#1 v1.5 over a SHA-256 digest.
    pub fn sign_digest_blocking(&self, digest: &Sha256Digest) -> Result<Vec<u8>, LocalSignerError> {
        let mut ctx = ossl("signing context", PkeyCtx::new(&self.key))?;
        ossl("signing init", ctx.sign_init())?;
        ossl("padding selection", ctx.set_rsa_padding(Padding::PKCS1))?;
        ossl("digest selection", ctx.set_signature_md(Md::sha256()))?;
        let mut sig = Vec::with_capacity(self.key.size());
        ossl("RSA signing", ctx.sign_to_vec(digest, &mut sig))?;
        Ok(sig)
    }

    /// Signs a whole message (hashing it with SHA-256 first); handy in tests.
    pub fn sign_message_blocking(&self, message: &[u8]) -> Result<Vec<u8>, LocalSignerError> {
        self.sign_digest_blocking(&Sha256::digest(message).into())
    }
}

#[cfg(feature = "local-signer")]
impl DigestSigner for LocalSigner {
    type Error = LocalSignerError;

    fn sign_sha256_digest(
        &self,
        digest: Sha256Digest,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send {
        let result = self.sign_digest_blocking(&digest);
        std::future::ready(result)
    }
}

/// The algorithm identifier of every signature this crate produces: `sha256WithRSAEncryption`
/// with NULL parameters (RFC 4055), as used in certificates and CSRs.
pub fn sha256_with_rsa_encryption() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        parameters: Some(der::asn1::Null.into()),
    }
}

/// Public half of a key whose private half is behind a [`DigestSigner`]: what the x509-cert
/// builders need to lay out a to-be-signed structure (they then hand the bytes back for an
/// asynchronous signature through `Builder::finalize` / `Builder::assemble`).
#[derive(Clone, Debug)]
pub(crate) struct PublicKeyHandle {
    spki: SubjectPublicKeyInfoOwned,
}

impl PublicKeyHandle {
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, der::Error> {
        Ok(Self {
            spki: SubjectPublicKeyInfoOwned::from_der(der)?,
        })
    }
}

impl EncodePublicKey for PublicKeyHandle {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::try_from(self.spki.to_der()?)?)
    }
}

impl signature::Keypair for PublicKeyHandle {
    type VerifyingKey = PublicKeyHandle;

    fn verifying_key(&self) -> Self::VerifyingKey {
        self.clone()
    }
}

impl DynSignatureAlgorithmIdentifier for PublicKeyHandle {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(sha256_with_rsa_encryption())
    }
}

/// Signs `to_be_signed` through `signer` and checks the signature against `spki_der` before
/// returning it as the BIT STRING that certificates and CSRs carry.
pub(crate) async fn sign_and_check<S: DigestSigner>(
    signer: &S,
    spki_der: &[u8],
    to_be_signed: &[u8],
) -> Result<BitString, SignatureFailure> {
    let digest: Sha256Digest = Sha256::digest(to_be_signed).into();
    let sig = signer
        .sign_sha256_digest(digest)
        .await
        .map_err(|e| SignatureFailure::Signer(Box::new(e)))?;
    crate::rsa_verify::verify_pkcs1v15(spki_der, crate::DigestAlgorithm::Sha256, &digest, &sig)
        .map_err(SignatureFailure::Check)?;
    BitString::from_bytes(&sig).map_err(SignatureFailure::Encoding)
}

/// Why obtaining a checked signature failed.
#[derive(Debug, thiserror::Error)]
pub enum SignatureFailure {
    /// The signer backend failed.
    #[error("the signer failed: {0}")]
    Signer(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The signer answered, but the signature does not verify with the expected public key.
    #[error(
        "the signature returned by the signer does not verify with the certificate's public key: {0}"
    )]
    Check(#[source] crate::rsa_verify::RsaVerifyError),
    /// The signature could not be encoded.
    #[error("cannot encode the signature: {0}")]
    Encoding(#[source] der::Error),
}
