//! The ClamAV definition updater (function `clamav-update`, scheduled): keeps the databases under
//! the evidence bucket's definitions prefix current, so the scan function's clamd never runs on
//! stale signatures, and reports how old they are.
//!
//! One run:
//! 1. reads the managed databases under the prefix (`<db>.cvd`/`<db>.cld`; anything else there,
//!    such as an operator's `.ndb`, is not touched) and the updater's state object;
//! 2. hands them to the [`DefinitionsUpdater`] (freshclam: verified patches or databases);
//! 3. keeps the updater's state (a mirror's cool-down survives the Lambda environment);
//! 4. on success uploads the files whose bytes changed, **then** deletes the superseded ones
//!    (a scan function starting in between gets both, and libclamav loads the newer), and writes
//!    the [`Marker`] **last**: the scan function reloads only from a marker, so it never sees a
//!    half-written set;
//! 5. always emits the age metric (`PEC/Antivirus DefinitionsAgeSeconds`, from what is in the
//!    bucket after the run) and `DefinitionsUpdateFailed` (0 or 1); a failed run also fails the
//!    invocation (the Errors alarm).
//!
//! Idempotent: a second run with nothing newer rewrites only the marker's `checked_at`. One run
//! at a time (the template reserves a concurrency of 1).

use std::collections::BTreeMap;

use crate::ingress::sha256_hex;
use chrono::{DateTime, SecondsFormat, Utc};
use pec_ports::{ObjectStore, ReplaceableStore, StoreError};
use pec_scan::definitions::{
    CvdHeader, Databases, DefinitionsUpdater, HeaderError, MarkedDatabase, MarkedFile, Marker,
    UpdateStatus, UpdaterError, managed,
};

pub use pec_ports::keys::DEFAULT_CLAMAV_DEFINITIONS_PREFIX;

/// Where the updater writes its [`Marker`] (outside the prefix: the scan function copies every
/// object under the prefix into clamd's database directory).
pub const DEFAULT_MARKER_KEY: &str = "config/antivirus/clamav-version.json";
/// Where the updater keeps its state (freshclam.dat), also outside the prefix.
pub const DEFAULT_STATE_KEY: &str = "config/antivirus/clamav-state/freshclam.dat";

/// The updater's metrics.
pub trait DefinitionsMetrics: Send + Sync {
    /// After every run: the age of the newest database in the bucket (`None`: there is none)
    /// and whether the run failed.
    fn definitions(&self, age_seconds: Option<i64>, failed: bool);
}

/// Metric of the definitions' age (seconds since Talos built the newest database).
pub const DEFINITIONS_AGE: &str = "DefinitionsAgeSeconds";
/// 1 for a failed update run, 0 otherwise.
pub const UPDATE_FAILED: &str = "DefinitionsUpdateFailed";

/// The EMF document of one run's metrics (namespace `PEC/Antivirus`, no dimension).
pub fn emf_definitions(
    age_seconds: Option<i64>,
    failed: bool,
    timestamp_ms: i64,
) -> serde_json::Value {
    let mut metrics = vec![serde_json::json!({"Name": UPDATE_FAILED, "Unit": "Count"})];
    let mut doc = serde_json::json!({ UPDATE_FAILED: u8::from(failed) });
    if let Some(age) = age_seconds {
        metrics.push(serde_json::json!({"Name": DEFINITIONS_AGE, "Unit": "Seconds"}));
        doc[DEFINITIONS_AGE] = serde_json::json!(age);
    }
    doc["_aws"] = serde_json::json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{
            "Namespace": crate::scan::metrics::NAMESPACE,
            "Dimensions": [[]],
            "Metrics": metrics,
        }]
    });
    doc
}

impl DefinitionsMetrics for crate::scan::metrics::EmfStdout {
    fn definitions(&self, age_seconds: Option<i64>, failed: bool) {
        let line = emf_definitions(age_seconds, failed, Utc::now().timestamp_millis());
        println!("{line}");
    }
}

/// [`DefinitionsMetrics`] that remembers every run (tests).
#[derive(Debug, Default)]
pub struct RecordedDefinitions(std::sync::Mutex<Vec<(Option<i64>, bool)>>);

impl RecordedDefinitions {
    pub fn runs(&self) -> Vec<(Option<i64>, bool)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl DefinitionsMetrics for RecordedDefinitions {
    fn definitions(&self, age_seconds: Option<i64>, failed: bool) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((age_seconds, failed));
    }
}

/// Where the definitions live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionsPlace {
    pub bucket: String,
    pub prefix: String,
    pub marker_key: String,
    pub state_key: String,
}

impl DefinitionsPlace {
    /// The defaults in `bucket`.
    pub fn in_bucket(bucket: &str) -> Self {
        DefinitionsPlace {
            bucket: bucket.to_string(),
            prefix: DEFAULT_CLAMAV_DEFINITIONS_PREFIX.to_string(),
            marker_key: DEFAULT_MARKER_KEY.to_string(),
            state_key: DEFAULT_STATE_KEY.to_string(),
        }
    }
}

/// The updater step.
pub struct DefinitionsUpdate<St, U, M> {
    pub store: St,
    pub updater: U,
    pub metrics: M,
    pub place: DefinitionsPlace,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the updater could not run: {0}")]
    Updater(#[from] UpdaterError),
    #[error("the update failed, the definitions in the bucket are unchanged: {0}")]
    Failed(String),
    #[error("the updater left {name}, which is not a ClamAV database: {source}")]
    BadDatabase { name: String, source: HeaderError },
    #[error("the updater left no database")]
    NoDatabase,
}

/// What one run did (the invocation's answer, and the CLI's output).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpdateReport {
    /// `updated` or `up-to-date`.
    pub status: &'static str,
    pub uploaded: Vec<String>,
    pub deleted: Vec<String>,
    pub marker: Marker,
    pub age_seconds: Option<i64>,
}

/// The marker describing `files` (every one must be a database).
pub fn marker_for(
    files: &BTreeMap<String, Vec<u8>>,
    checked_at: DateTime<Utc>,
) -> Result<Marker, UpdateError> {
    let mut marker = Marker {
        files: BTreeMap::new(),
        databases: BTreeMap::new(),
        checked_at: checked_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    for (name, bytes) in files {
        let Some((db, _)) = managed(name) else {
            return Err(UpdateError::BadDatabase {
                name: name.clone(),
                source: HeaderError::NotADatabase,
            });
        };
        let header = CvdHeader::parse(bytes).map_err(|source| UpdateError::BadDatabase {
            name: name.clone(),
            source,
        })?;
        marker.files.insert(
            name.clone(),
            MarkedFile {
                size: bytes.len() as u64,
                sha256: sha256_hex(bytes),
            },
        );
        // Two files of one database (a run that left both): the newer version names it.
        let newer = marker
            .databases
            .get(db)
            .is_none_or(|d: &MarkedDatabase| d.version < header.version);
        if newer {
            marker.databases.insert(
                db.to_string(),
                MarkedDatabase {
                    file: name.clone(),
                    version: header.version,
                    signatures: header.signatures,
                    built_at: header.built_at,
                },
            );
        }
    }
    Ok(marker)
}

/// The newest build among readable database files (the age of what is in the bucket).
fn age_of(files: &BTreeMap<String, Vec<u8>>, now: DateTime<Utc>) -> Option<i64> {
    files
        .values()
        .filter_map(|b| CvdHeader::parse(b).ok()?.built_at)
        .max()
        .map(|t| (now.timestamp() - t).max(0))
}

impl<St: ObjectStore + ReplaceableStore, U: DefinitionsUpdater, M: DefinitionsMetrics>
    DefinitionsUpdate<St, U, M>
{
    /// The managed databases and the state now in the bucket.
    pub async fn current(&self) -> Result<Databases, StoreError> {
        let p = &self.place;
        let mut files = BTreeMap::new();
        for key in self.store.list_keys(&p.bucket, &p.prefix).await? {
            let name = &key[p.prefix.len()..];
            if managed(name).is_none() {
                continue;
            }
            if let Some(bytes) = self.store.get(&p.bucket, &key).await? {
                files.insert(name.to_string(), bytes);
            }
        }
        let state = self.store.get(&p.bucket, &p.state_key).await?;
        Ok(Databases { files, state })
    }

    /// One run at `now` (see the module doc).
    pub async fn run(&self, now: DateTime<Utc>) -> Result<UpdateReport, UpdateError> {
        let current = match self.current().await {
            Ok(current) => current,
            Err(e) => {
                self.metrics.definitions(None, true);
                return Err(e.into());
            }
        };
        let age_before = age_of(&current.files, now);
        let result = self.apply(current, now).await;
        match &result {
            Ok(report) => self.metrics.definitions(report.age_seconds, false),
            Err(e) => {
                tracing::error!(error = %e, "ClamAV definitions not updated");
                self.metrics.definitions(age_before, true);
            }
        }
        result
    }

    async fn apply(
        &self,
        current: Databases,
        now: DateTime<Utc>,
    ) -> Result<UpdateReport, UpdateError> {
        let p = &self.place;
        // Only the hashes stay here: the bytes go to the updater (hundreds of MB officially).
        let before: BTreeMap<String, String> = current
            .files
            .iter()
            .map(|(name, bytes)| (name.clone(), sha256_hex(bytes)))
            .collect();
        let state_before = current.state.clone();
        let run = self.updater.update(current).await?;
        tracing::info!(status = ?run.status, log = %run.log, "freshclam ran");
        if let Some(state) = &run.after.state
            && state_before.as_ref() != Some(state)
        {
            self.store
                .replace(
                    &p.bucket,
                    &p.state_key,
                    state.clone(),
                    "application/octet-stream",
                )
                .await?;
        }
        let status = match run.status {
            UpdateStatus::Failed { reason } => return Err(UpdateError::Failed(reason)),
            UpdateStatus::Updated => "updated",
            UpdateStatus::UpToDate => "up-to-date",
        };
        let after = run.after.files;
        if after.is_empty() {
            return Err(UpdateError::NoDatabase);
        }
        let marker = marker_for(&after, now)?;
        let mut uploaded = Vec::new();
        for (name, bytes) in after {
            if before.get(&name) != marker.files.get(&name).map(|f| &f.sha256) {
                self.store
                    .replace(
                        &p.bucket,
                        &format!("{}{name}", p.prefix),
                        bytes,
                        "application/octet-stream",
                    )
                    .await?;
                uploaded.push(name);
            }
        }
        let mut deleted = Vec::new();
        for name in before.keys() {
            if !marker.files.contains_key(name) {
                self.store
                    .delete(&p.bucket, &format!("{}{name}", p.prefix))
                    .await?;
                deleted.push(name.clone());
            }
        }
        let text = serde_json::to_vec_pretty(&marker).map_err(|e| StoreError {
            operation: "serialise",
            bucket: p.bucket.clone(),
            key: p.marker_key.clone(),
            message: e.to_string(),
        })?;
        self.store
            .replace(&p.bucket, &p.marker_key, text, "application/json")
            .await?;
        let age_seconds = marker.age_seconds(now.timestamp());
        tracing::info!(
            status,
            ?uploaded,
            ?deleted,
            age_seconds,
            "ClamAV definitions checked"
        );
        Ok(UpdateReport {
            status,
            uploaded,
            deleted,
            marker,
            age_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pec_ports::MemoryStore;
    use pec_scan::definitions::UpdateRun;

    const BUCKET: &str = "evidence";

    fn db(version: u32, stime: i64, signed: bool) -> Vec<u8> {
        let (md5, dsig) = if signed { ("abc", "sig") } else { ("X", "X") };
        let mut bytes = format!(
            "ClamAV-VDB:01 Dec 2026 10-00 +0000:{version}:10:90:{md5}:{dsig}:talos:{stime}"
        )
        .into_bytes();
        bytes.resize(512, b' ');
        bytes.extend_from_slice(b"body");
        bytes
    }

    /// Returns `after` (or fails), remembering what it was given.
    struct Fake {
        status: UpdateStatus,
        after: Option<BTreeMap<String, Vec<u8>>>,
        state: Option<Vec<u8>>,
        given: std::sync::Mutex<Vec<Databases>>,
    }

    impl DefinitionsUpdater for Fake {
        async fn update(&self, current: Databases) -> Result<UpdateRun, UpdaterError> {
            self.given.lock().unwrap().push(current.clone());
            Ok(UpdateRun {
                status: self.status.clone(),
                after: Databases {
                    files: self.after.clone().unwrap_or(current.files),
                    state: self.state.clone(),
                },
                log: String::new(),
            })
        }
    }

    fn step(
        store: &MemoryStore,
        fake: Fake,
    ) -> DefinitionsUpdate<&MemoryStore, Fake, RecordedDefinitions> {
        DefinitionsUpdate {
            store,
            updater: fake,
            metrics: RecordedDefinitions::default(),
            place: DefinitionsPlace::in_bucket(BUCKET),
        }
    }

    fn key(name: &str) -> String {
        format!("{DEFAULT_CLAMAV_DEFINITIONS_PREFIX}{name}")
    }

    /// The memory store, logging every write and delete in order.
    struct Ordered<'a> {
        inner: &'a MemoryStore,
        log: std::sync::Mutex<Vec<String>>,
    }

    impl ObjectStore for Ordered<'_> {
        async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(bucket, key).await
        }
        async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
            self.inner.exists(bucket, key).await
        }
        async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.inner.list_keys(bucket, prefix).await
        }
        async fn put_if_absent(
            &self,
            bucket: &str,
            key: &str,
            body: Vec<u8>,
            content_type: &str,
        ) -> Result<pec_ports::PutOutcome, StoreError> {
            self.inner
                .put_if_absent(bucket, key, body, content_type)
                .await
        }
    }

    impl ReplaceableStore for Ordered<'_> {
        async fn replace(
            &self,
            bucket: &str,
            key: &str,
            body: Vec<u8>,
            content_type: &str,
        ) -> Result<(), StoreError> {
            self.log.lock().unwrap().push(format!("put {key}"));
            self.inner.replace(bucket, key, body, content_type).await
        }
        async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
            self.log.lock().unwrap().push(format!("delete {key}"));
            self.inner.delete(bucket, key).await
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(2_000_000_000, 0).unwrap()
    }

    #[tokio::test]
    async fn an_update_uploads_then_deletes_then_marks_and_leaves_other_files_alone() {
        let store = MemoryStore::new();
        store.insert(BUCKET, &key("daily.cvd"), db(100, 1_999_000_000, true));
        store.insert(BUCKET, &key("main.cvd"), db(62, 1_900_000_000, true));
        store.insert(BUCKET, &key("pec-test.ndb"), b"PEC.Local:0:*:00".to_vec());
        let after = BTreeMap::from([
            ("daily.cld".to_string(), db(103, 1_999_990_000, false)),
            ("main.cvd".to_string(), db(62, 1_900_000_000, true)),
        ]);
        let s = DefinitionsUpdate {
            store: Ordered {
                inner: &store,
                log: Default::default(),
            },
            updater: Fake {
                status: UpdateStatus::Updated,
                after: Some(after.clone()),
                state: Some(b"uuid".to_vec()),
                given: Default::default(),
            },
            metrics: RecordedDefinitions::default(),
            place: DefinitionsPlace::in_bucket(BUCKET),
        };
        let report = s.run(now()).await.unwrap();
        assert_eq!(
            *s.store.log.lock().unwrap(),
            [
                format!("put {DEFAULT_STATE_KEY}"),
                format!("put {}", key("daily.cld")),
                format!("delete {}", key("daily.cvd")),
                format!("put {DEFAULT_MARKER_KEY}"),
            ],
            "the new file, then the superseded one removed, then the marker last"
        );
        let given = s.updater.given.lock().unwrap()[0].clone();
        assert_eq!(
            given.files.keys().collect::<Vec<_>>(),
            ["daily.cvd", "main.cvd"],
            "the operator's .ndb is not the updater's"
        );
        assert_eq!(report.status, "updated");
        assert_eq!(report.uploaded, ["daily.cld"], "main.cvd is unchanged");
        assert_eq!(report.deleted, ["daily.cvd"]);
        assert_eq!(report.age_seconds, Some(10_000));
        assert_eq!(
            store.object(BUCKET, &key("daily.cld")),
            Some(after["daily.cld"].clone())
        );
        assert_eq!(store.object(BUCKET, &key("daily.cvd")), None);
        assert!(store.object(BUCKET, &key("pec-test.ndb")).is_some());
        assert_eq!(
            store.object(BUCKET, DEFAULT_STATE_KEY),
            Some(b"uuid".to_vec())
        );
        let marker: Marker =
            serde_json::from_slice(&store.object(BUCKET, DEFAULT_MARKER_KEY).unwrap()).unwrap();
        assert_eq!(marker, report.marker);
        assert_eq!(marker.databases["daily"].version, 103);
        assert_eq!(marker.databases["daily"].file, "daily.cld");
        assert_eq!(
            marker.files["daily.cld"].sha256,
            sha256_hex(&after["daily.cld"])
        );
        assert_eq!(marker.checked_at, "2033-05-18T03:33:20Z");
        assert_eq!(s.metrics.runs(), [(Some(10_000), false)]);
    }

    #[tokio::test]
    async fn nothing_newer_rewrites_only_the_marker() {
        let store = MemoryStore::new();
        store.insert(BUCKET, &key("daily.cld"), db(103, 1_999_990_000, false));
        store.insert(BUCKET, DEFAULT_STATE_KEY, b"uuid".to_vec());
        let s = step(
            &store,
            Fake {
                status: UpdateStatus::UpToDate,
                after: None,
                state: Some(b"uuid".to_vec()),
                given: Default::default(),
            },
        );
        let report = s.run(now()).await.unwrap();
        assert_eq!(report.status, "up-to-date");
        assert!(report.uploaded.is_empty() && report.deleted.is_empty());
        assert_eq!(store.writes(), 1, "the marker only");
        assert_eq!(s.metrics.runs(), [(Some(10_000), false)]);
    }

    #[tokio::test]
    async fn a_failed_run_changes_no_database_keeps_the_state_and_reports_the_old_age() {
        let store = MemoryStore::new();
        store.insert(BUCKET, &key("daily.cvd"), db(100, 1_999_000_000, true));
        let s = step(
            &store,
            Fake {
                status: UpdateStatus::Failed {
                    reason: "rate limited".into(),
                },
                after: Some(BTreeMap::new()),
                state: Some(b"cool-down".to_vec()),
                given: Default::default(),
            },
        );
        let err = s.run(now()).await.unwrap_err();
        assert!(err.to_string().contains("rate limited"), "{err}");
        assert!(store.object(BUCKET, &key("daily.cvd")).is_some());
        assert_eq!(store.object(BUCKET, DEFAULT_MARKER_KEY), None);
        assert_eq!(
            store.object(BUCKET, DEFAULT_STATE_KEY),
            Some(b"cool-down".to_vec())
        );
        assert_eq!(s.metrics.runs(), [(Some(1_000_000), true)]);
    }

    #[tokio::test]
    async fn an_updater_that_leaves_garbage_or_nothing_changes_nothing() {
        for (after, expected) in [
            (
                BTreeMap::from([("daily.cld".to_string(), b"<html>oops".to_vec())]),
                "not a ClamAV database",
            ),
            (BTreeMap::new(), "no database"),
        ] {
            let store = MemoryStore::new();
            store.insert(BUCKET, &key("daily.cvd"), db(100, 1_999_000_000, true));
            let s = step(
                &store,
                Fake {
                    status: UpdateStatus::Updated,
                    after: Some(after),
                    state: None,
                    given: Default::default(),
                },
            );
            let err = s.run(now()).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert!(store.object(BUCKET, &key("daily.cvd")).is_some());
            assert_eq!(store.object(BUCKET, DEFAULT_MARKER_KEY), None);
            assert_eq!(s.metrics.runs(), [(Some(1_000_000), true)]);
        }
    }

    #[tokio::test]
    async fn a_first_run_on_an_empty_prefix_reports_no_age_until_it_succeeds() {
        let store = MemoryStore::new();
        let s = step(
            &store,
            Fake {
                status: UpdateStatus::Failed {
                    reason: "offline".into(),
                },
                after: None,
                state: None,
                given: Default::default(),
            },
        );
        assert!(s.run(now()).await.is_err());
        assert_eq!(s.metrics.runs(), [(None, true)]);
    }

    #[test]
    fn the_emf_document() {
        let doc = emf_definitions(Some(90_000), false, 1_700_000_000_000);
        assert_eq!(doc[DEFINITIONS_AGE], 90_000);
        assert_eq!(doc[UPDATE_FAILED], 0);
        let spec = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(spec["Namespace"], "PEC/Antivirus");
        assert_eq!(spec["Dimensions"], serde_json::json!([[]]));
        assert_eq!(spec["Metrics"].as_array().unwrap().len(), 2);
        let doc = emf_definitions(None, true, 0);
        assert!(doc.get(DEFINITIONS_AGE).is_none());
        assert_eq!(doc[UPDATE_FAILED], 1);
    }
}
