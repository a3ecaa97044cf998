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
//! The daemon is a child of the function process (killed with it). Locally the same code runs
//! against Debian's clamd in this crate's tests.

use std::path::{Path, PathBuf};

use pec_ports::keys::DEFAULT_CLAMAV_DEFINITIONS_PREFIX;
use pec_ports::{Env, ObjectStore, StoreError};
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
    /// (default `/tmp/clamav`).
    pub fn from_env(env: &Env<'_>, socket: &str) -> Option<Self> {
        let binary = env.optional("PEC_CLAMD_BINARY")?;
        Some(ClamdLaunch {
            binary: binary.into(),
            work_dir: env.or("PEC_CLAMD_WORK_DIR", "/tmp/clamav").into(),
            socket: socket.into(),
            definitions_prefix: env.or("PEC_CLAMD_DEFINITIONS_PREFIX", DEFAULT_DEFINITIONS_PREFIX),
        })
    }

    /// Copies the definitions from `bucket` into the database directory; how many files.
    pub async fn sync_definitions<St: ObjectStore>(
        &self,
        store: &St,
        bucket: &str,
    ) -> Result<usize, LaunchError> {
        let db = self.work_dir.join("db");
        tokio::fs::create_dir_all(&db).await.map_err(io(&db))?;
        let keys = store.list_keys(bucket, &self.definitions_prefix).await?;
        let mut copied = 0;
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
            tokio::fs::write(&path, bytes).await.map_err(io(&path))?;
            copied += 1;
        }
        if copied == 0 {
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
             MaxThreads 4\n\
             ReadTimeout 120\n\
             CommandReadTimeout 30\n\
             StreamMaxLength 300M\n\
             MaxScanSize 400M\n\
             MaxFileSize 300M\n\
             MaxRecursion 32\n\
             MaxFiles 10000\n",
            socket = self.socket.display(),
            db = self.work_dir.join("db").display(),
            tmp = tmp.display(),
        );
        tokio::fs::write(&conf, text).await.map_err(io(&conf))?;
        Ok(conf)
    }

    /// Syncs the definitions, writes the configuration and spawns clamd (not waiting for it to
    /// load). Keep the returned child alive: dropping it kills clamd.
    pub async fn launch<St: ObjectStore>(
        &self,
        store: &St,
        bucket: &str,
    ) -> Result<Child, LaunchError> {
        let files = self.sync_definitions(store, bucket).await?;
        let conf = self.write_config().await?;
        let child = Command::new(&self.binary)
            .arg(format!("--config-file={}", conf.display()))
            // The layer's glibc is Debian's: it must not read the Lambda image's locale files.
            .env("LC_ALL", "C")
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        tracing::info!(binary = %self.binary.display(), socket = %self.socket.display(), files, "clamd started; scans wait until it answers");
        Ok(child)
    }
}
