//! The definition updater's freshclam adapter with Debian's real freshclam 1.4.6 against a mirror
//! on 127.0.0.1 serving Talos-signed test databases: an incremental update by signed patches, a
//! second run that finds nothing newer, a tampered patch that falls back to the signed database,
//! a tampered patch and database that change nothing, and a 429 whose cool-down is kept.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pec_scan::definitions::{CvdHeader, Databases, DefinitionsUpdater, UpdateStatus};
use pec_scan::freshclam::{Freshclam, STATE_FILE};
use pec_testkit::clamav::{Mirror, test_databases};

fn freshclam_binary() -> Option<PathBuf> {
    let found = ["/usr/bin/freshclam", "/usr/sbin/freshclam"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("not installed (infra/local/install.sh clamav installs Debian's clamav-freshclam)");
    pec_testkit::prereq::require("freshclam", found)
}

struct Setup {
    dbs: PathBuf,
    work: tempfile::TempDir,
}

fn setup() -> Option<(PathBuf, Setup)> {
    let binary = freshclam_binary()?;
    let dbs = test_databases()?;
    Some((
        binary,
        Setup {
            dbs,
            work: tempfile::tempdir().unwrap(),
        },
    ))
}

impl Setup {
    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dbs.join(name)).unwrap()
    }

    /// The mirror's files: test.cvd v6 and the patches 2..6.
    fn mirror_files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::from([("test.cvd".to_string(), self.file("test-6.cvd"))]);
        for n in 2..=6 {
            files.insert(
                format!("test-{n}.cdiff"),
                self.file(&format!("test-{n}.cdiff")),
            );
        }
        files
    }

    /// What the bucket holds before: test.cvd v2.
    fn v2(&self) -> Databases {
        Databases {
            files: BTreeMap::from([("test.cvd".to_string(), self.file("test-2.cvd"))]),
            state: None,
        }
    }

    fn updater(&self, binary: &std::path::Path, mirror: &Mirror) -> Freshclam {
        Freshclam {
            binary: binary.to_path_buf(),
            work_dir: self.work.path().to_path_buf(),
            mirror: mirror.url(),
            dns: false,
            databases: vec!["test".into()],
            ca_bundle: None,
            timeout: Duration::from_secs(120),
        }
    }
}

fn version(bytes: &[u8]) -> u32 {
    CvdHeader::parse(bytes).unwrap().version
}

fn flip(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
    let i = at.min(bytes.len() - 1);
    bytes[i] ^= 0x01;
    bytes
}

#[tokio::test]
async fn signed_patches_bring_the_database_up_to_date_then_nothing_is_newer() {
    let Some((binary, s)) = setup() else { return };
    let mirror = Mirror::start(s.mirror_files()).await.unwrap();
    let fc = s.updater(&binary, &mirror);

    let run = fc.update(s.v2()).await.unwrap();
    assert_eq!(run.status, UpdateStatus::Updated, "{}", run.log);
    let names: Vec<&String> = run.after.files.keys().collect();
    assert_eq!(names, ["test.cld"], "{}", run.log);
    let header = CvdHeader::parse(&run.after.files["test.cld"]).unwrap();
    assert_eq!((header.version, header.signatures), (6, 14));
    assert_eq!(header.built_at, Some(1_624_412_045));
    assert!(!header.header_signed, "a .cld carries X for md5 and dsig");
    assert!(run.after.state.is_some(), "freshclam.dat comes back");
    let paths: Vec<String> = mirror.requests().into_iter().map(|r| r.path).collect();
    for n in 3..=6 {
        assert!(paths.contains(&format!("/test-{n}.cdiff")), "{paths:?}");
    }
    assert!(
        !mirror
            .requests()
            .iter()
            .any(|r| r.path == "/test.cvd" && r.range.is_none()),
        "no whole database was downloaded: {paths:?}"
    );

    let again = fc.update(run.after.clone()).await.unwrap();
    assert_eq!(again.status, UpdateStatus::UpToDate, "{}", again.log);
    assert_eq!(again.after.files, run.after.files);
}

#[tokio::test]
async fn a_tampered_patch_falls_back_to_the_signed_database() {
    let Some((binary, s)) = setup() else { return };
    let mut files = s.mirror_files();
    let cdiff = files.remove("test-3.cdiff").unwrap();
    let len = cdiff.len();
    files.insert("test-3.cdiff".into(), flip(cdiff, len / 2));
    let mirror = Mirror::start(files).await.unwrap();
    let run = s.updater(&binary, &mirror).update(s.v2()).await.unwrap();
    assert_eq!(run.status, UpdateStatus::Updated, "{}", run.log);
    let (name, bytes) = run.after.files.iter().next().unwrap();
    assert_eq!(run.after.files.len(), 1);
    assert_eq!(version(bytes), 6, "{name}");
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.path == "/test.cvd" && r.range.is_none()),
        "the whole signed database was fetched after the patch failed"
    );
}

#[tokio::test]
async fn a_tampered_patch_and_database_change_nothing() {
    let Some((binary, s)) = setup() else { return };
    let mut files = s.mirror_files();
    for name in ["test-3.cdiff", "test.cvd"] {
        let bytes = files.remove(name).unwrap();
        let len = bytes.len();
        files.insert(name.into(), flip(bytes, len - 100));
    }
    let mirror = Mirror::start(files).await.unwrap();
    let run = s.updater(&binary, &mirror).update(s.v2()).await.unwrap();
    match &run.status {
        UpdateStatus::Failed { reason } => assert!(reason.contains("freshclam (test)"), "{reason}"),
        other => panic!("expected a failure, got {other:?}: {}", run.log),
    }
    assert!(
        run.after.files.is_empty(),
        "a failed run hands back no database"
    );
    let left = std::fs::read(s.work.path().join("db/test.cvd")).unwrap();
    assert_eq!(left, s.file("test-2.cvd"), "freshclam left v2 untouched");
    assert!(!s.work.path().join("db/test.cld").exists());
}

#[tokio::test]
async fn a_rate_limited_mirror_is_left_alone_until_its_cool_down_ends() {
    let Some((binary, s)) = setup() else { return };
    let mirror = Mirror::start(s.mirror_files()).await.unwrap();
    mirror.answer("test.cvd", 429);
    let fc = s.updater(&binary, &mirror);
    let run = fc.update(s.v2()).await.unwrap();
    assert!(
        matches!(run.status, UpdateStatus::Failed { .. }),
        "{:?}: {}",
        run.status,
        run.log
    );
    let state = run
        .after
        .state
        .clone()
        .expect("freshclam.dat records the cool-down");
    let asked = mirror.requests().len();
    assert!(asked >= 1);

    // The next run starts from the state kept in the bucket: freshclam does not ask again.
    let next = fc
        .update(Databases {
            files: s.v2().files,
            state: Some(state),
        })
        .await
        .unwrap();
    assert!(
        matches!(next.status, UpdateStatus::Failed { .. }),
        "{}",
        next.log
    );
    assert_eq!(mirror.requests().len(), asked, "{}", next.log);
    assert!(
        next.after.state.is_some(),
        "the cool-down stays in {STATE_FILE}"
    );
}
