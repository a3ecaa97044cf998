//! Object storage behind small traits: S3 in AWS and on the emulators (`pec_aws::S3Store`, both
//! ports), memory in unit tests ([`MemoryStore`], both ports; [`MemoryRetained`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};

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

/// Signed URLs: a client writes or reads one object straight from the store, without passing its
/// bytes through our code (the integration API's large attachments and downloads: API Gateway
/// and Lambda carry at most about 6 MB per request or answer).
pub trait SignedUrls: Send + Sync {
    /// A URL at which whoever holds it may `PUT` one object at `bucket`/`key`, with this
    /// `Content-Type` and length, for `valid_for`. Signed with our credentials: no call is made.
    fn upload_url(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        length: u64,
        valid_for: std::time::Duration,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// A URL at which whoever holds it may `GET` the object at `bucket`/`key` for `valid_for`,
    /// answered with this `Content-Type` and, if given, `Content-Disposition`.
    fn download_url(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        disposition: Option<&str>,
        valid_for: std::time::Duration,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// [`ObjectStore`] in memory, for unit tests: counts writes so tests can assert idempotency.
/// Also a [`RetainedStore`] (the evidence bucket is both): it keeps each locked object's
/// retain-until date ([`MemoryStore::retained_until`]).
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<HashMap<(String, String), Vec<u8>>>,
    retention: Mutex<HashMap<(String, String), DateTime<Utc>>>,
    writes: AtomicUsize,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Objects written through [`ObjectStore::put_if_absent`] or [`ReplaceableStore::replace`]
    /// (not [`MemoryStore::insert`]).
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

    /// The retain-until date an object was locked with through [`RetainedStore::put_retained`].
    pub fn retained_until(&self, bucket: &str, key: &str) -> Option<DateTime<Utc>> {
        self.retention
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(bucket.to_string(), key.to_string()))
            .copied()
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

/// `memory://<bucket>/<key>`: tests put and read the bytes with [`MemoryStore::insert`] and
/// [`MemoryStore::object`].
impl SignedUrls for MemoryStore {
    async fn upload_url(
        &self,
        bucket: &str,
        key: &str,
        _content_type: &str,
        _length: u64,
        _valid_for: std::time::Duration,
    ) -> Result<String, StoreError> {
        Ok(format!("memory://{bucket}/{key}"))
    }

    async fn download_url(
        &self,
        bucket: &str,
        key: &str,
        _content_type: &str,
        _disposition: Option<&str>,
        _valid_for: std::time::Duration,
    ) -> Result<String, StoreError> {
        Ok(format!("memory://{bucket}/{key}"))
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

// ------------------------------------------------------------------------ replaceable objects

/// Unconditional writes and deletes, for the few configuration objects that one writer owns and
/// replaces (the ClamAV definitions the updater keeps current). Everything the PEC steps write
/// goes through [`ObjectStore::put_if_absent`] instead: evidence is never overwritten.
pub trait ReplaceableStore: Send + Sync {
    /// Writes `body` under `key`, replacing what is there (with a SHA-256 checksum).
    fn replace(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes `key` (no error if it is already gone).
    fn delete(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<T: ReplaceableStore> ReplaceableStore for &T {
    fn replace(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).replace(bucket, key, body, content_type)
    }
    fn delete(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).delete(bucket, key)
    }
}

impl ReplaceableStore for MemoryStore {
    async fn replace(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        _content_type: &str,
    ) -> Result<(), StoreError> {
        self.lock()
            .insert((bucket.to_string(), key.to_string()), body);
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.lock().remove(&(bucket.to_string(), key.to_string()));
        Ok(())
    }
}

// ------------------------------------------------------------------------ retained writes

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

impl RetainedStore for MemoryStore {
    async fn put_retained(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        retain_until: DateTime<Utc>,
    ) -> Result<PutOutcome, StoreError> {
        let outcome = self
            .put_if_absent(bucket, key, body, "message/rfc822")
            .await?;
        if outcome == PutOutcome::Created {
            self.retention
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((bucket.to_string(), key.to_string()), retain_until);
        }
        Ok(outcome)
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
