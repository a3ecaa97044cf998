//! The provider index (IGPEC) as the functions see it: an LDIF object in S3, re-read at a fixed
//! interval so that an operator's (or a sync job's) update reaches every warm Lambda.
//!
//! A new version is used only once it parses; until then, and while S3 cannot be read, the
//! last good index stays in use (and the problem is logged). With no good index at all the
//! caller gets an error: a step that must verify signatures then fails and retries, rather than
//! accept or refuse mail on no evidence.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use pec_smime::ProviderIndex;
use sha2::{Digest, Sha256};

use pec_ports::store::{ObjectStore, StoreError};

/// Why no index is available.
#[derive(Debug, thiserror::Error)]
pub enum IndexSourceError {
    #[error("the provider index s3://{bucket}/{key} does not exist")]
    Missing { bucket: String, key: String },
    #[error("the provider index s3://{bucket}/{key} is not valid LDIF: {reason}")]
    Invalid {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Loaded {
    index: Arc<ProviderIndex>,
    digest: [u8; 32],
    checked_at: DateTime<Utc>,
}

/// Where the index lives and how often to look for a new version.
pub struct ProviderIndexSource<St> {
    store: St,
    bucket: String,
    key: String,
    refresh: Duration,
    loaded: Mutex<Option<Loaded>>,
}

impl<St: ObjectStore> ProviderIndexSource<St> {
    pub fn new(
        store: St,
        bucket: impl Into<String>,
        key: impl Into<String>,
        refresh: Duration,
    ) -> Self {
        Self {
            store,
            bucket: bucket.into(),
            key: key.into(),
            refresh,
            loaded: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index to use at `now`: the cached one while it is younger than the refresh interval,
    /// otherwise the object in S3 if it changed and parses, otherwise the last good one.
    pub async fn current(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Arc<ProviderIndex>, IndexSourceError> {
        let last_good = {
            let loaded = self.lock();
            match loaded.as_ref() {
                Some(l) if now - l.checked_at < self.refresh => return Ok(l.index.clone()),
                Some(l) => Some((l.index.clone(), l.digest)),
                None => None,
            }
        };
        // The version to use from now on: the stored one if it is new and parses, the last
        // good one if the stored one is unchanged (same bytes).
        let fresh: Result<(Arc<ProviderIndex>, [u8; 32]), IndexSourceError> = match self
            .store
            .get(&self.bucket, &self.key)
            .await
        {
            Ok(Some(bytes)) => {
                let digest: [u8; 32] = Sha256::digest(&bytes).into();
                match &last_good {
                        Some((index, d)) if *d == digest => Ok((index.clone(), digest)),
                        _ => ProviderIndex::from_ldif(&bytes)
                            .map(|index| {
                                tracing::info!(bucket = %self.bucket, key = %self.key, providers = index.entries().len(), "provider index loaded");
                                (Arc::new(index), digest)
                            })
                            .map_err(|e| IndexSourceError::Invalid {
                                bucket: self.bucket.clone(),
                                key: self.key.clone(),
                                reason: e.to_string(),
                            }),
                    }
            }
            Ok(None) => Err(IndexSourceError::Missing {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
            }),
            Err(e) => Err(IndexSourceError::Store(e)),
        };
        let (index, digest) = match (fresh, last_good) {
            (Ok(current), _) => current,
            (Err(error), Some(last_good)) => {
                tracing::error!(error = %error, "provider index not refreshed; keeping the last good version");
                last_good
            }
            (Err(error), None) => return Err(error),
        };
        *self.lock() = Some(Loaded {
            index: index.clone(),
            digest,
            checked_at: now,
        });
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use pec_ports::MemoryStore;

    fn ldif(provider: &str, domain: &str) -> Vec<u8> {
        format!(
            "dn: providerName={provider},o=postacert\nobjectClass: provider\nproviderName: {provider}\n\
             managedDomains: {domain}\nmailReceipt: posta-certificata@{domain}\n\
             providerCertificateHash: 00112233445566778899AABBCCDDEEFF00112233\n\
             providerCertificate;binary:: MAA=\n\n"
        )
        .into_bytes()
    }

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, minute, 0).unwrap()
    }

    #[tokio::test]
    async fn reloads_after_the_interval_and_keeps_the_last_good_version() {
        let store = MemoryStore::new();
        let source =
            ProviderIndexSource::new(&store, "b", "config/index.ldif", Duration::minutes(10));
        assert!(matches!(
            source.current(at(0)).await,
            Err(IndexSourceError::Missing { .. })
        ));

        store.insert("b", "config/index.ldif", ldif("Gestore A", "pec.a.test"));
        let index = source.current(at(1)).await.unwrap();
        assert!(index.is_pec_domain("pec.a.test"));

        // A new version is not looked at before the interval has passed...
        store.insert("b", "config/index.ldif", ldif("Gestore B", "pec.b.test"));
        assert!(
            source
                .current(at(5))
                .await
                .unwrap()
                .is_pec_domain("pec.a.test")
        );
        // ...and is used after it.
        let index = source.current(at(12)).await.unwrap();
        assert!(index.is_pec_domain("pec.b.test"));
        assert!(!index.is_pec_domain("pec.a.test"));

        // A broken upload does not replace the good index.
        store.insert(
            "b",
            "config/index.ldif",
            b"dn: broken\nno colon here\n".to_vec(),
        );
        assert!(
            source
                .current(at(30))
                .await
                .unwrap()
                .is_pec_domain("pec.b.test")
        );
        // A fixed one does.
        store.insert("b", "config/index.ldif", ldif("Gestore C", "pec.c.test"));
        assert!(
            source
                .current(at(41))
                .await
                .unwrap()
                .is_pec_domain("pec.c.test")
        );
    }

    #[tokio::test]
    async fn an_invalid_index_with_nothing_to_fall_back_on_is_an_error() {
        let store = MemoryStore::new();
        store.insert("b", "k", b"dn: x\nbroken line\n".to_vec());
        let source = ProviderIndexSource::new(&store, "b", "k", Duration::minutes(10));
        assert!(matches!(
            source.current(at(0)).await,
            Err(IndexSourceError::Invalid { .. })
        ));
    }
}
