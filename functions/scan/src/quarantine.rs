//! Writes under Object Lock: the quarantine copy of an infected message.
//!
//! (This belongs in `pec-aws` beside `ObjectStore` once another function needs retained writes;
//! it lives here so the scan step does not change a shared crate.)

use std::future::Future;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime as S3DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use chrono::{DateTime, Utc};
use pec_aws::{PutOutcome, StoreError, store::aws_error_chain};

/// Conditional writes with a COMPLIANCE retention.
pub trait RetainedStore: Send + Sync {
    /// Writes `body` under `key` only if nothing is there yet, locked in COMPLIANCE mode until
    /// `retain_until`, with a SHA-256 checksum.
    fn put_retained(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        retain_until: DateTime<Utc>,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send;
}

/// [`RetainedStore`] on S3 (the conservation bucket has Object Lock enabled).
#[derive(Debug, Clone)]
pub struct S3Retained {
    client: aws_sdk_s3::Client,
}

impl S3Retained {
    /// Over this client.
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        Self { client }
    }
}

impl RetainedStore for S3Retained {
    async fn put_retained(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        retain_until: DateTime<Utc>,
    ) -> Result<PutOutcome, StoreError> {
        let result = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .if_none_match("*")
            .content_type("message/rfc822")
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(S3DateTime::from_secs(retain_until.timestamp()))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if e.code() == Some("PreconditionFailed") => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(StoreError {
                operation: "PutObject (Object Lock)",
                bucket: bucket.to_string(),
                key: key.to_string(),
                message: aws_error_chain(&e),
            }),
        }
    }
}

impl<T: RetainedStore> RetainedStore for &T {
    fn put_retained(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        retain_until: DateTime<Utc>,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send {
        (**self).put_retained(bucket, key, body, retain_until)
    }
}

/// (bucket, key) → (bytes, retain-until).
type Retained = std::collections::BTreeMap<(String, String), (Vec<u8>, DateTime<Utc>)>;

/// [`RetainedStore`] in memory, for tests: keeps the retention date with each object.
#[derive(Debug, Default)]
pub struct MemoryRetained {
    objects: std::sync::Mutex<Retained>,
}

impl MemoryRetained {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// The object and its retain-until date.
    pub fn object(&self, bucket: &str, key: &str) -> Option<(Vec<u8>, DateTime<Utc>)> {
        self.objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RetainedStore for MemoryRetained {
    async fn put_retained(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        retain_until: DateTime<Utc>,
    ) -> Result<PutOutcome, StoreError> {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (bucket.to_string(), key.to_string());
        if objects.contains_key(&slot) {
            return Ok(PutOutcome::AlreadyExists);
        }
        objects.insert(slot, (body, retain_until));
        Ok(PutOutcome::Created)
    }
}
