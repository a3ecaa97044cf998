//! The object-store ports on S3: [`S3Store`] is both the [`ObjectStore`] (conditional writes)
//! and the [`RetainedStore`] (conditional writes under Object Lock, COMPLIANCE).

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime as S3DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use chrono::{DateTime, Utc};
use pec_ports::store::{
    ObjectStore, PutOutcome, ReplaceableStore, RetainedStore, SignedUrls, StoreError,
};

/// [`ObjectStore`] on S3 (or LocalStack).
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        Self { client }
    }
}

fn store_error(
    operation: &'static str,
    bucket: &str,
    key: &str,
    err: impl std::error::Error,
) -> StoreError {
    StoreError {
        operation,
        bucket: bucket.to_string(),
        key: key.to_string(),
        message: aws_error_chain(&err),
    }
}

/// A PutObject of `body` that only creates (`If-None-Match: *`), with a SHA-256 checksum.
fn conditional_put(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .if_none_match("*")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from(body))
}

/// Sends a [`conditional_put`]: an existing key is [`PutOutcome::AlreadyExists`], not an error.
async fn send_conditional(
    put: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    operation: &'static str,
    bucket: &str,
    key: &str,
) -> Result<PutOutcome, StoreError> {
    match put.send().await {
        Ok(_) => Ok(PutOutcome::Created),
        Err(e) if e.code() == Some("PreconditionFailed") => Ok(PutOutcome::AlreadyExists),
        Err(e) => Err(store_error(operation, bucket, key, e)),
    }
}

/// An error with its causes, one line (SDK errors hide the useful part in `source()`).
pub fn aws_error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Signatures valid for `valid_for` (at most 7 days, SigV4's limit).
fn presigning(
    valid_for: std::time::Duration,
    operation: &'static str,
    bucket: &str,
    key: &str,
) -> Result<aws_sdk_s3::presigning::PresigningConfig, StoreError> {
    aws_sdk_s3::presigning::PresigningConfig::expires_in(valid_for)
        .map_err(|e| store_error(operation, bucket, key, e))
}

/// Presigned `PutObject` and `GetObject` (SigV4 query parameters), signed with the function's
/// credentials: its role must allow the action on the key. An upload's `Content-Type` and
/// `Content-Length` are signed, so S3 refuses a PUT with another type or length.
impl SignedUrls for S3Store {
    async fn upload_url(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        length: u64,
        valid_for: std::time::Duration,
    ) -> Result<String, StoreError> {
        let config = presigning(valid_for, "PresignPutObject", bucket, key)?;
        let request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(length).unwrap_or(i64::MAX))
            .presigned(config)
            .await
            .map_err(|e| store_error("PresignPutObject", bucket, key, e))?;
        Ok(request.uri().to_string())
    }

    async fn download_url(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        disposition: Option<&str>,
        valid_for: std::time::Duration,
    ) -> Result<String, StoreError> {
        let config = presigning(valid_for, "PresignGetObject", bucket, key)?;
        let request = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .response_content_type(content_type)
            .set_response_content_disposition(disposition.map(str::to_string))
            .presigned(config)
            .await
            .map_err(|e| store_error("PresignGetObject", bucket, key, e))?;
        Ok(request.uri().to_string())
    }
}

impl ObjectStore for S3Store {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| store_error("GetObject", bucket, key, e))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(store_error("GetObject", bucket, key, e)),
        }
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(store_error("HeadObject", bucket, key, e)),
        }
    }

    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| store_error("ListObjectsV2", bucket, prefix, e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<PutOutcome, StoreError> {
        let put = conditional_put(&self.client, bucket, key, body).content_type(content_type);
        send_conditional(put, "PutObject", bucket, key).await
    }
}

/// Plain PutObject and DeleteObject, for configuration one writer replaces (the ClamAV
/// definitions). In a versioned bucket the replaced bytes stay as noncurrent versions until
/// the bucket's lifecycle expires them.
impl ReplaceableStore for S3Store {
    async fn replace(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| store_error("PutObject", bucket, key, e))?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| store_error("DeleteObject", bucket, key, e))?;
        Ok(())
    }
}

/// A conditional PutObject of a message locked in COMPLIANCE mode until `retain_until`, in a
/// bucket with Object Lock enabled (the conservation bucket: quarantine copies; the evidence
/// bucket: what the sign step signs and what other providers send us).
impl RetainedStore for S3Store {
    async fn put_retained(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        retain_until: DateTime<Utc>,
    ) -> Result<PutOutcome, StoreError> {
        let put = conditional_put(&self.client, bucket, key, body)
            .content_type("message/rfc822")
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(S3DateTime::from_secs(retain_until.timestamp()));
        send_conditional(put, "PutObject (Object Lock)", bucket, key).await
    }
}
