//! The provider's signing key in AWS KMS, as a [`pec_smime::signer::DigestSigner`].
//!
//! KMS signs a SHA-256 digest computed here (`MessageType=DIGEST`,
//! `RSASSA_PKCS1_V1_5_SHA_256`): the MIME never leaves the function and the key never leaves KMS.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use pec_smime::signer::{DigestSigner, Sha256Digest};

use crate::store::aws_error_chain;

/// A KMS call failed or answered something unusable.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("KMS {operation} with key {key_id}: {message}")]
    Call {
        operation: &'static str,
        key_id: String,
        message: String,
    },
    #[error("KMS {operation} with key {key_id} returned no {what}")]
    Empty {
        operation: &'static str,
        key_id: String,
        what: &'static str,
    },
}

/// Signs digests with one KMS key (an RSA `SIGN_VERIFY` key).
#[derive(Clone, Debug)]
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsSigner {
    /// `key_id`: a key id, key ARN, alias name or alias ARN.
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key's public half as DER SubjectPublicKeyInfo (what a certificate must carry).
    pub async fn public_key_spki_der(&self) -> Result<Vec<u8>, KmsError> {
        let out = self
            .client
            .get_public_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| KmsError::Call {
                operation: "GetPublicKey",
                key_id: self.key_id.clone(),
                message: aws_error_chain(&e),
            })?;
        out.public_key
            .map(Blob::into_inner)
            .ok_or_else(|| KmsError::Empty {
                operation: "GetPublicKey",
                key_id: self.key_id.clone(),
                what: "public key",
            })
    }
}

impl DigestSigner for KmsSigner {
    type Error = KmsError;

    async fn sign_sha256_digest(&self, digest: Sha256Digest) -> Result<Vec<u8>, KmsError> {
        let out = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(digest.to_vec()))
            .message_type(MessageType::Digest)
            .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
            .send()
            .await
            .map_err(|e| KmsError::Call {
                operation: "Sign",
                key_id: self.key_id.clone(),
                message: aws_error_chain(&e),
            })?;
        out.signature
            .map(Blob::into_inner)
            .ok_or_else(|| KmsError::Empty {
                operation: "Sign",
                key_id: self.key_id.clone(),
                what: "signature",
            })
    }
}
