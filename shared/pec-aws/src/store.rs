//! Object storage behind a small trait: S3 in AWS and on the emulators, memory in unit tests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now holds the bytes given.
    Created,
    /// An object already had that key; nothing was written.
    AlreadyExists,
}

/// A storage operation failed (network, permissions, missing bucket...).
#[derive(Debug, thiserror::Error)]
#[error("{operation} s3://{bucket}/{key}: {message}")]
pub struct StoreError {
    pub operation: &'static str,
    pub bucket: String,
    pub key: String,
    pub message: String,
}

/// The storage operations the steps need. Writes are conditional: an existing key is never
/// overwritten, which is what makes a duplicated event harmless.
pub trait ObjectStore: Send + Sync {
    /// The object's bytes, or `None` if there is no such key.
    fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Whether the key exists.
    fn exists(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every key under `prefix`, sorted.
    fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Writes `body` under `key` only if nothing is there yet (`If-None-Match: *`).
    fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send;
}

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
        let result = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .if_none_match("*")
            .content_type(content_type)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if e.code() == Some("PreconditionFailed") => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(store_error("PutObject", bucket, key, e)),
        }
    }
}

/// [`ObjectStore`] in memory, for unit tests: counts writes so tests can assert idempotency.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<HashMap<(String, String), Vec<u8>>>,
    writes: AtomicUsize,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Objects written through [`ObjectStore::put_if_absent`] (not [`MemoryStore::insert`]).
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// Puts an object unconditionally (test set-up).
    pub fn insert(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        self.lock()
            .insert((bucket.to_string(), key.to_string()), body.into());
    }

    /// The object's bytes, if any.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.lock()
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
    }

    /// Every key of `bucket`, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock()
            .keys()
            .filter(|(b, _)| b == bucket)
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<u8>>> {
        // A panic elsewhere while holding the lock cannot leave the map half-written.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ObjectStore for MemoryStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.object(bucket, key))
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.object(bucket, key).is_some())
    }

    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .keys(bucket)
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect())
    }

    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        _content_type: &str,
    ) -> Result<PutOutcome, StoreError> {
        let mut objects = self.lock();
        let slot = (bucket.to_string(), key.to_string());
        if objects.contains_key(&slot) {
            return Ok(PutOutcome::AlreadyExists);
        }
        objects.insert(slot, body);
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(PutOutcome::Created)
    }
}

impl<T: ObjectStore> ObjectStore for &T {
    fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        (**self).get(bucket, key)
    }

    fn exists(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).exists(bucket, key)
    }

    fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        (**self).list_keys(bucket, prefix)
    }

    fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send {
        (**self).put_if_absent(bucket, key, body, content_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_never_overwrites() {
        let store = MemoryStore::new();
        assert_eq!(
            store
                .put_if_absent("b", "k", b"one".to_vec(), "text/plain")
                .await
                .unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store
                .put_if_absent("b", "k", b"two".to_vec(), "text/plain")
                .await
                .unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(store.object("b", "k").as_deref(), Some(&b"one"[..]));
        assert_eq!(store.writes(), 1);
        assert!(store.exists("b", "k").await.unwrap());
        assert_eq!(store.get("b", "missing").await.unwrap(), None);
    }
}
