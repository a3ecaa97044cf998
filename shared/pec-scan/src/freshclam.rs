//! [`DefinitionsUpdater`] by ClamAV's own freshclam (in AWS from the ClamAV layer,
//! `/opt/bin/freshclam`; locally Debian's `/usr/bin/freshclam`).
//!
//! Why freshclam and not a downloader of our own: ClamAV's mirrors admit only freshclam and
//! cvdupdate, and freshclam fetches the small signed daily patches (`.cdiff`) instead of whole
//! databases, verifies every file against the keys compiled into libclamav, test-loads the result
//! and falls back to the whole signed `.cvd` when a patch fails. See
//! `docs/design/clamav-definition-updates.md`.
//!
//! One run: the given databases and `freshclam.dat` are written into a fresh directory, a
//! configuration is written next to it, freshclam runs once (no daemon) with
//! `--on-update-execute=EXIT_1` (exit 1: updated; exit 0: up to date; anything else: failed), and
//! the managed files and `freshclam.dat` are read back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::definitions::{
    Databases, DefinitionsUpdater, UpdateRun, UpdateStatus, UpdaterError, managed,
};

/// freshclam's state file (client id, cool-down), kept by the caller between runs.
pub const STATE_FILE: &str = "freshclam.dat";
/// The official mirror (a CDN).
pub const OFFICIAL_MIRROR: &str = "https://database.clamav.net";

/// How to run freshclam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshclam {
    pub binary: PathBuf,
    /// A writable directory; its `db/` is recreated by every run.
    pub work_dir: PathBuf,
    /// `DatabaseMirror` (URL).
    pub mirror: String,
    /// Ask DNS (`current.cvd.clamav.net` TXT) for the current versions, as the official mirror
    /// expects; off: an HTTP Range request for each database's header (private mirrors, tests).
    pub dns: bool,
    /// Only these databases (`--update-db`, one run each); empty: freshclam's default set
    /// (`main`, `daily`, `bytecode`).
    pub databases: Vec<String>,
    /// `CURL_CA_BUNDLE` (the layer ships Debian's bundle at /opt/etc/ssl/certs).
    pub ca_bundle: Option<PathBuf>,
    /// A run longer than this is killed and failed.
    pub timeout: Duration,
}

impl Freshclam {
    /// The configuration freshclam reads (also what the layer test uses).
    pub fn config(&self, db: &Path, as_root: bool) -> String {
        let mut text = format!(
            "# Written by the definition updater for one run.\n\
             DatabaseDirectory {db}\n\
             DatabaseMirror {mirror}\n\
             ScriptedUpdates yes\n\
             TestDatabases yes\n\
             Bytecode yes\n\
             LogTime yes\n\
             ConnectTimeout 30\n\
             ReceiveTimeout 600\n",
            db = db.display(),
            mirror = self.mirror,
        );
        if !self.dns {
            text.push_str("DNSDatabaseInfo no\n");
        }
        if as_root {
            // As root freshclam drops to DatabaseOwner (default `clamav`), who could not write
            // our directory; Lambda never runs as root, tests and containers may.
            text.push_str("DatabaseOwner root\n");
        }
        text
    }

    async fn run_once(
        &self,
        conf: &Path,
        database: Option<&str>,
    ) -> Result<(Option<i32>, String), UpdaterError> {
        let mut command = Command::new(&self.binary);
        command
            .arg(format!("--config-file={}", conf.display()))
            .arg("--stdout")
            .arg("--on-update-execute=EXIT_1")
            // The layer's glibc is Debian's: it must not read the Lambda image's locale files.
            .env("LC_ALL", "C")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        if !self.dns {
            command.arg("--no-dns");
        }
        if let Some(db) = database {
            command.arg(format!("--update-db={db}"));
        }
        if let Some(bundle) = &self.ca_bundle {
            command.env("CURL_CA_BUNDLE", bundle);
        }
        let child = command.output();
        let output = match tokio::time::timeout(self.timeout, child).await {
            Err(_) => {
                return Ok((
                    None,
                    format!(
                        "freshclam did not finish within {} s",
                        self.timeout.as_secs()
                    ),
                ));
            }
            Ok(Err(e)) => {
                return Err(UpdaterError(format!(
                    "cannot run {}: {e}",
                    self.binary.display()
                )));
            }
            Ok(Ok(output)) => output,
        };
        let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
        log.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok((output.status.code(), log))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UpdaterError + '_ {
    move |e| UpdaterError(format!("{}: {e}", path.display()))
}

/// The last lines of a log (for an error message).
fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

async fn read_back(db: &Path) -> Result<Databases, UpdaterError> {
    let mut files = BTreeMap::new();
    let mut entries = tokio::fs::read_dir(db).await.map_err(io(db))?;
    while let Some(entry) = entries.next_entry().await.map_err(io(db))? {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_file = entry
            .file_type()
            .await
            .map(|t| t.is_file())
            .unwrap_or(false);
        if is_file && managed(&name).is_some() {
            let path = entry.path();
            files.insert(name, tokio::fs::read(&path).await.map_err(io(&path))?);
        }
    }
    let state = read_state(db).await?;
    Ok(Databases { files, state })
}

async fn read_state(db: &Path) -> Result<Option<Vec<u8>>, UpdaterError> {
    let path = db.join(STATE_FILE);
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

impl DefinitionsUpdater for Freshclam {
    async fn update(&self, current: Databases) -> Result<UpdateRun, UpdaterError> {
        let db = self.work_dir.join("db");
        match tokio::fs::remove_dir_all(&db).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&db)(e)),
        }
        tokio::fs::create_dir_all(&db).await.map_err(io(&db))?;
        // Written and dropped one by one: the official set is hundreds of MB.
        let Databases { files, state } = current;
        for (name, bytes) in files {
            if managed(&name).is_none() {
                return Err(UpdaterError(format!(
                    "{name:?} is not a database file name"
                )));
            }
            let path = db.join(&name);
            tokio::fs::write(&path, bytes).await.map_err(io(&path))?;
        }
        if let Some(state) = state {
            let path = db.join(STATE_FILE);
            tokio::fs::write(&path, state).await.map_err(io(&path))?;
        }
        let as_root = {
            use std::os::unix::fs::MetadataExt;
            tokio::fs::metadata(&db).await.map_err(io(&db))?.uid() == 0
        };
        let conf = self.work_dir.join("freshclam.conf");
        tokio::fs::write(&conf, self.config(&db, as_root))
            .await
            .map_err(io(&conf))?;

        let runs: Vec<Option<&str>> = if self.databases.is_empty() {
            vec![None]
        } else {
            self.databases.iter().map(|d| Some(d.as_str())).collect()
        };
        let mut log = String::new();
        let mut status = UpdateStatus::UpToDate;
        for database in runs {
            let (code, out) = self.run_once(&conf, database).await?;
            log.push_str(&out);
            // Within a mirror's cool-down (a 403 or 429 recorded in freshclam.dat) freshclam
            // asks nothing and exits as if up to date: that is a failure to check.
            let cooling = out
                .lines()
                .find(|l| l.contains("still on cool-down"))
                .map(|l| l.rsplit("-> ").next().unwrap_or(l).trim().to_string());
            let code = if cooling.is_some() { Some(-1) } else { code };
            match code {
                Some(0) => {}
                Some(1) => status = UpdateStatus::Updated,
                other => {
                    let what = database.map(|d| format!(" ({d})")).unwrap_or_default();
                    let code = match (&cooling, other) {
                        (Some(line), _) => format!("rate limited by the mirror ({line})"),
                        (None, Some(c)) => format!("exit {c}"),
                        (None, None) => "killed".to_string(),
                    };
                    return Ok(UpdateRun {
                        status: UpdateStatus::Failed {
                            reason: format!("freshclam{what}: {code}: {}", tail(&out, 4)),
                        },
                        // A failed run changes no database; only the state counts.
                        after: Databases {
                            files: BTreeMap::new(),
                            state: read_state(&db).await?,
                        },
                        log,
                    });
                }
            }
        }
        let after = read_back(&db).await?;
        Ok(UpdateRun { status, after, log })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freshclam(dns: bool) -> Freshclam {
        Freshclam {
            binary: "/opt/bin/freshclam".into(),
            work_dir: "/tmp/fc".into(),
            mirror: "http://127.0.0.1:9/".into(),
            dns,
            databases: vec![],
            ca_bundle: None,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_configuration() {
        let text = freshclam(false).config(Path::new("/tmp/fc/db"), false);
        assert!(text.contains("DatabaseDirectory /tmp/fc/db\n"));
        assert!(text.contains("DatabaseMirror http://127.0.0.1:9/\n"));
        assert!(text.contains("DNSDatabaseInfo no\n"));
        assert!(!text.contains("DatabaseOwner"));
        let text = freshclam(true).config(Path::new("/tmp/fc/db"), true);
        assert!(!text.contains("DNSDatabaseInfo"));
        assert!(text.contains("DatabaseOwner root\n"));
    }

    #[tokio::test]
    async fn a_missing_binary_is_an_error_not_a_failed_update() {
        let dir = std::env::temp_dir().join(format!("pec-fc-missing-{}", std::process::id()));
        let mut fc = freshclam(false);
        fc.binary = dir.join("no-such-freshclam");
        fc.work_dir = dir.clone();
        let result = fc.update(Databases::default()).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(result.unwrap_err().0.contains("cannot run"));
    }

    #[test]
    fn log_tails() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("", 3), "");
    }
}
