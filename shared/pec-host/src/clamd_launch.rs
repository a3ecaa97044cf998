//! clamd inside the scan function (AWS): the ClamAV daemon from a Lambda layer, started at cold
//! start with the definitions kept in the evidence bucket.
//!
//! When `PEC_CLAMD_BINARY` is set (e.g. `/opt/bin/clamd`, from the layer), the function:
//! 1. copies every object under `PEC_CLAMD_DEFINITIONS_PREFIX` (default
//!    `config/antivirus/clamav/`) into a database directory under `/tmp` — the official
//!    `.cvd`/`.cld` files or the project's own `.ndb`/`.hdb` signatures; names must be plain
//!    file names and at least one must be there;
//! 2. writes a clamd configuration (the same limits as `infra/local/clamd.sh`) with
//!    `LocalSocket = PEC_CLAMD_SOCKET`;
//! 3. spawns clamd in the foreground and **does not wait** for it: loading the full official
//!    database takes longer than Lambda's init phase. Until clamd answers, every scan is an
//!    engine error, so messages wait in the queue and are retried — never passed unscanned.
//!
//! New definitions without a redeploy: the scheduled updater (`pec_pipeline::definitions`)
//! writes the databases, then a marker listing them with their SHA-256. At most every
//! `PEC_CLAMD_DEFINITIONS_CHECK_SECONDS` (default 900), **before** handling an invocation, the
//! scan function reads the marker ([`ClamdLaunch::refresh`]); when its files differ from what
//! clamd loaded, the changed files are downloaded and checked against the marker, written under
//! a name clamd ignores and renamed into place, removed ones are deleted, and clamd is told to
//! `RELOAD`; the function waits (up to `PEC_CLAMD_RELOAD_WAIT_SECONDS`, default 45) until it
//! answers `PING` again, then scans: download, reload and the scan's own 60 s bound fit the
//! function's 120 s. A failed reload is retried at the next invocation; a clamd that died is
//! started again. At cold start the copied files are first brought to the marker (a cold start
//! during an update may have listed a file the updater then replaced). clamd is configured with `ConcurrentDatabaseReload no`: the
//! old engine is freed before the new one loads, so a reload never needs two engines' memory
//! (about 2.4 GB with the official databases) inside the function's 3008 MB. A timer in the
//! function would not do: Lambda freezes the environment between invocations.
//!
//! The daemon is a child of the function process (killed with it). Locally the same code runs
//! against Debian's clamd in this crate's tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pec_pipeline::definitions::DEFAULT_MARKER_KEY;
use pec_pipeline::ingress::sha256_hex;
use pec_ports::keys::DEFAULT_CLAMAV_DEFINITIONS_PREFIX;
use pec_ports::{ConfigError, Env, ObjectStore, StoreError};
use pec_scan::definitions::{Marker, managed};
use tokio::process::{Child, Command};

/// Where the definitions are by default (evidence bucket).
pub const DEFAULT_DEFINITIONS_PREFIX: &str = DEFAULT_CLAMAV_DEFINITIONS_PREFIX;

/// How to start clamd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClamdLaunch {
    /// The clamd executable.
    pub binary: PathBuf,
    /// A writable directory for the database, configuration and temporary files.
    pub work_dir: PathBuf,
    /// The unix socket clamd listens on (the scan step's `PEC_CLAMD_SOCKET`).
    pub socket: PathBuf,
    /// Evidence-bucket prefix of the definitions.
    pub definitions_prefix: String,
    /// The updater's marker (evidence bucket).
    pub marker_key: String,
    /// How often, at most, the marker is read.
    pub check_every: Duration,
    /// How long an invocation waits for clamd after a `RELOAD`.
    pub reload_wait: Duration,
}

/// What clamd has loaded: each definitions file's name and SHA-256 (hex).
pub type Loaded = BTreeMap<String, String>;

/// What a [`ClamdLaunch::refresh`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// No marker yet (definitions uploaded by hand, no updater run so far).
    NoMarker,
    /// The marker lists what clamd has.
    Unchanged,
    /// These files were replaced, added or removed in the database directory: reload clamd.
    Changed(Vec<String>),
}

/// Why clamd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no ClamAV definitions under s3://{bucket}/{prefix}")]
    NoDefinitions { bucket: String, prefix: String },
    #[error("refusing the definitions object {0:?}: not a plain file name under the prefix")]
    BadName(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the definitions marker s3://{bucket}/{key} is not valid: {reason}")]
    BadMarker {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error(
        "{name} does not match the marker (size or SHA-256): the updater is writing; next check"
    )]
    InFlux { name: String },
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError + '_ {
    move |source| LaunchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ClamdLaunch {
    /// From the environment: `PEC_CLAMD_BINARY` (unset or empty: `None`, clamd is someone
    /// else's job), `PEC_CLAMD_SOCKET`, `PEC_CLAMD_DEFINITIONS_PREFIX`, `PEC_CLAMD_WORK_DIR`
    /// (default `/tmp/clamav`), `PEC_CLAMD_MARKER_KEY`, `PEC_CLAMD_DEFINITIONS_CHECK_SECONDS`
    /// (default 900), `PEC_CLAMD_RELOAD_WAIT_SECONDS` (default 45).
    pub fn from_env(env: &Env<'_>, socket: &str) -> Result<Option<Self>, ConfigError> {
        let Some(binary) = env.optional("PEC_CLAMD_BINARY") else {
            return Ok(None);
        };
        let seconds = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(
                env.parse::<u64>(name)?.unwrap_or(default),
            ))
        };
        Ok(Some(ClamdLaunch {
            binary: binary.into(),
            work_dir: env.or("PEC_CLAMD_WORK_DIR", "/tmp/clamav").into(),
            socket: socket.into(),
            definitions_prefix: env.or("PEC_CLAMD_DEFINITIONS_PREFIX", DEFAULT_DEFINITIONS_PREFIX),
            marker_key: env.or("PEC_CLAMD_MARKER_KEY", DEFAULT_MARKER_KEY),
            check_every: seconds("PEC_CLAMD_DEFINITIONS_CHECK_SECONDS", 900)?,
            reload_wait: seconds("PEC_CLAMD_RELOAD_WAIT_SECONDS", 45)?,
        }))
    }

    fn db_dir(&self) -> PathBuf {
        self.work_dir.join("db")
    }

    /// Copies the definitions from `bucket` into the database directory; what was copied.
    pub async fn sync_definitions<St: ObjectStore>(
        &self,
        store: &St,
        bucket: &str,
    ) -> Result<Loaded, LaunchError> {
        let db = self.db_dir();
        tokio::fs::create_dir_all(&db).await.map_err(io(&db))?;
        let keys = store.list_keys(bucket, &self.definitions_prefix).await?;
        let mut copied = Loaded::new();
        for key in keys {
            let name = &key[self.definitions_prefix.len()..];
            if name.is_empty() || name.ends_with('/') {
                continue;
            }
            let plain = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
                && !name.starts_with('.');
            if !plain {
                return Err(LaunchError::BadName(key));
            }
            let Some(bytes) = store.get(bucket, &key).await? else {
                continue;
            };
            let path = db.join(name);
            copied.insert(name.to_string(), sha256_hex(&bytes));
            tokio::fs::write(&path, bytes).await.map_err(io(&path))?;
        }
        if copied.is_empty() {
            return Err(LaunchError::NoDefinitions {
                bucket: bucket.to_string(),
                prefix: self.definitions_prefix.clone(),
            });
        }
        Ok(copied)
    }

    /// The configuration file (written into the work directory); its path.
    pub async fn write_config(&self) -> Result<PathBuf, LaunchError> {
        let tmp = self.work_dir.join("tmp");
        tokio::fs::create_dir_all(&tmp).await.map_err(io(&tmp))?;
        let conf = self.work_dir.join("clamd.conf");
        let text = format!(
            "# Written by the scan function at cold start.\n\
             Foreground yes\n\
             LocalSocket {socket}\n\
             LocalSocketMode 600\n\
             FixStaleSocket yes\n\
             DatabaseDirectory {db}\n\
             TemporaryDirectory {tmp}\n\
             LogTime yes\n\
             ExtendedDetectionInfo yes\n\
             Bytecode no\n\
             SelfCheck 3600\n\
             ConcurrentDatabaseReload no\n\
             MaxThreads 4\n\
             ReadTimeout 120\n\
             CommandReadTimeout 30\n\
             StreamMaxLength 300M\n\
             MaxScanSize 400M\n\
             MaxFileSize 300M\n\
             MaxRecursion 32\n\
             MaxFiles 10000\n",
            socket = self.socket.display(),
            db = self.db_dir().display(),
            tmp = tmp.display(),
        );
        tokio::fs::write(&conf, text).await.map_err(io(&conf))?;
        Ok(conf)
    }

    /// Syncs the definitions (then brings them to the updater's marker, when there is one: a
    /// cold start during an update may have listed a file the updater then replaced), writes
    /// the configuration and spawns clamd (not waiting for it to load); the child and what it
    /// loads. Keep the child alive: dropping it kills clamd.
    pub async fn launch<St: ObjectStore>(
        &self,
        store: &St,
        bucket: &str,
    ) -> Result<(Child, Loaded), LaunchError> {
        let mut loaded = self.sync_definitions(store, bucket).await?;
        match self.refresh(store, bucket, &mut loaded).await {
            Ok(Refresh::Changed(files)) => {
                tracing::info!(
                    ?files,
                    "definitions brought to the updater's marker at cold start"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "definitions as listed; the marker is checked again soon")
            }
        }
        let child = self.spawn().await?;
        tracing::info!(binary = %self.binary.display(), socket = %self.socket.display(), files = loaded.len(), "clamd started; scans wait until it answers");
        Ok((child, loaded))
    }

    /// Writes the configuration and starts clamd over the database directory as it is (also
    /// to restart a clamd that died).
    pub async fn spawn(&self) -> Result<Child, LaunchError> {
        let conf = self.write_config().await?;
        Command::new(&self.binary)
            .arg(format!("--config-file={}", conf.display()))
            // The layer's glibc is Debian's: it must not read the Lambda image's locale files.
            .env("LC_ALL", "C")
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                binary: self.binary.clone(),
                source,
            })
    }

    /// Reads the updater's marker and brings the database directory to what it lists (managed
    /// files only: anything else under the prefix stays as loaded at cold start). `loaded` is
    /// updated; on [`Refresh::Changed`] the caller reloads clamd ([`reload`]).
    pub async fn refresh<St: ObjectStore>(
        &self,
        store: &St,
        bucket: &str,
        loaded: &mut Loaded,
    ) -> Result<Refresh, LaunchError> {
        let Some(bytes) = store.get(bucket, &self.marker_key).await? else {
            return Ok(Refresh::NoMarker);
        };
        let marker: Marker =
            serde_json::from_slice(&bytes).map_err(|e| LaunchError::BadMarker {
                bucket: bucket.to_string(),
                key: self.marker_key.clone(),
                reason: e.to_string(),
            })?;
        if let Some(bad) = marker.files.keys().find(|n| managed(n).is_none()) {
            return Err(LaunchError::BadMarker {
                bucket: bucket.to_string(),
                key: self.marker_key.clone(),
                reason: format!("{bad:?} is not a database file name"),
            });
        }
        let db = self.db_dir();
        let mut changed = Vec::new();
        // Download and check everything first: a file that does not match the marker means the
        // updater is between writes; nothing is touched and the next check tries again.
        let mut fresh = Vec::new();
        for (name, file) in &marker.files {
            if loaded.get(name) == Some(&file.sha256) {
                continue;
            }
            let key = format!("{}{name}", self.definitions_prefix);
            let bytes = store.get(bucket, &key).await?.unwrap_or_default();
            let sha = sha256_hex(&bytes);
            if bytes.len() as u64 != file.size || sha != file.sha256 {
                return Err(LaunchError::InFlux { name: name.clone() });
            }
            fresh.push((name.clone(), sha, bytes));
        }
        for (name, sha, bytes) in fresh {
            // clamd reads only known extensions: `.part` is invisible until the rename.
            let part = db.join(format!("{name}.part"));
            tokio::fs::write(&part, bytes).await.map_err(io(&part))?;
            let path = db.join(&name);
            tokio::fs::rename(&part, &path).await.map_err(io(&path))?;
            loaded.insert(name.clone(), sha);
            changed.push(name);
        }
        let gone: Vec<String> = loaded
            .keys()
            .filter(|n| managed(n).is_some() && !marker.files.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let path = db.join(&name);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
            loaded.remove(&name);
            changed.push(name);
        }
        Ok(if changed.is_empty() {
            Refresh::Unchanged
        } else {
            Refresh::Changed(changed)
        })
    }
}

/// Tells clamd on `socket` to reload its databases and waits until it answers `PING` again
/// (at most `wait`, each PING at most 2 s); whether it did.
pub async fn reload(socket: &Path, wait: Duration) -> bool {
    let engine = pec_scan::ClamdEngine::new(socket).with_call_timeout(Duration::from_secs(2));
    if let Err(e) = engine.reload().await {
        tracing::warn!(error = %e, "clamd did not accept RELOAD");
        return false;
    }
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if engine.ping().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
