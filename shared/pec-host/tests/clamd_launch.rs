//! The scan function's cold-start clamd (AWS: from a Lambda layer) run here with Debian's
//! clamd and the project's signatures served from an in-memory "evidence bucket": the
//! definitions are synced, clamd starts on its socket, answers PING and finds EICAR; a bad
//! definitions name or an empty prefix is refused; new definitions from the updater reach the
//! running clamd through the marker and a RELOAD.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pec_host::clamd_launch::{ClamdLaunch, DEFAULT_DEFINITIONS_PREFIX, LaunchError};
use pec_ports::MemoryStore;
use pec_scan::{ClamdEngine, Engine, walk};

const EVIDENCE: &str = "evidence";

fn clamd_binary() -> Option<std::path::PathBuf> {
    let found = ["/usr/sbin/clamd", "/usr/bin/clamd"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("not installed (infra/local/install.sh clamav installs Debian's clamav-daemon)");
    pec_testkit::prereq::require("clamd", found)
}

fn signatures() -> MemoryStore {
    let store = MemoryStore::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/antivirus/clamav");
    for name in ["pec-test.ndb", "pec-test.hdb"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        store.insert(
            EVIDENCE,
            &format!("{DEFAULT_DEFINITIONS_PREFIX}{name}"),
            bytes,
        );
    }
    store
}

fn launch(work: &std::path::Path) -> ClamdLaunch {
    ClamdLaunch {
        binary: clamd_binary().unwrap_or_default(),
        work_dir: work.to_path_buf(),
        socket: work.join("clamd.sock"),
        definitions_prefix: DEFAULT_DEFINITIONS_PREFIX.into(),
        marker_key: pec_pipeline::definitions::DEFAULT_MARKER_KEY.into(),
        check_every: Duration::ZERO,
        reload_wait: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn clamd_starts_from_the_bucket_definitions_and_finds_eicar() {
    if clamd_binary().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let l = launch(work.path());
    let (mut child, loaded) = l.launch(&signatures(), EVIDENCE).await.unwrap();
    assert_eq!(
        loaded.keys().collect::<Vec<_>>(),
        ["pec-test.hdb", "pec-test.ndb"]
    );
    let engine = ClamdEngine::new(&l.socket);
    wait_for_pong(&engine, &mut child).await;
    let message = pec_scan::testing::message(
        "virus",
        "fattura",
        &[
            pec_scan::testing::Part::text("vedi allegato"),
            pec_scan::testing::Part::attachment(
                "application/octet-stream",
                "eicar.com",
                pec_scan::testing::Encoding::Base64,
                pec_scan::testing::eicar(),
            ),
        ],
    );
    let items: Vec<Arc<pec_scan::Item>> = walk(
        &message,
        &pec_scan::Limits::default(),
        Instant::now() + Duration::from_secs(30),
    )
    .items
    .into_iter()
    .map(Arc::new)
    .collect();
    let found = engine
        .scan(&items, Instant::now() + Duration::from_secs(30))
        .await
        .unwrap();
    let d = found.expect("EICAR not found");
    assert!(d.signature.contains("EICAR"), "{d:?}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn bad_or_missing_definitions_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let l = launch(work.path());
    match l.sync_definitions(&MemoryStore::new(), EVIDENCE).await {
        Err(LaunchError::NoDefinitions { .. }) => {}
        other => panic!("{other:?}"),
    }
    let store = signatures();
    store.insert(
        EVIDENCE,
        &format!("{DEFAULT_DEFINITIONS_PREFIX}../evil.ndb"),
        b"x".to_vec(),
    );
    match l.sync_definitions(&store, EVIDENCE).await {
        Err(LaunchError::BadName(k)) => assert!(k.ends_with("../evil.ndb")),
        other => panic!("{other:?}"),
    }
    let env = pec_ports::Env::from_fn(|name| match name {
        "PEC_CLAMD_BINARY" => Some("/opt/bin/clamd".to_string()),
        "PEC_CLAMD_WORK_DIR" => Some(String::new()),
        _ => None,
    });
    let from_env = ClamdLaunch::from_env(&env, "/tmp/clamd.sock")
        .unwrap()
        .unwrap();
    assert_eq!(from_env.work_dir, std::path::PathBuf::from("/tmp/clamav"));
    assert_eq!(from_env.check_every, Duration::from_secs(900));
    assert_eq!(from_env.marker_key, "config/antivirus/clamav-version.json");
    let unset = pec_ports::Env::from_fn(|name| (name == "PEC_CLAMD_BINARY").then(String::new));
    assert!(
        ClamdLaunch::from_env(&unset, "/tmp/clamd.sock")
            .unwrap()
            .is_none()
    );
    let bad = pec_ports::Env::from_fn(|name| match name {
        "PEC_CLAMD_BINARY" => Some("/opt/bin/clamd".to_string()),
        "PEC_CLAMD_DEFINITIONS_CHECK_SECONDS" => Some("soon".to_string()),
        _ => None,
    });
    assert!(ClamdLaunch::from_env(&bad, "/tmp/clamd.sock").is_err());
}

async fn wait_for_pong(engine: &ClamdEngine, child: &mut tokio::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.ping().await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("clamd exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "clamd did not answer PING within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn eicar_verdict(engine: &ClamdEngine) -> Option<String> {
    let item = Arc::new(pec_scan::Item {
        path: pec_scan::PartPath::root(),
        content_type: "application/octet-stream".into(),
        filename: "eicar.com".into(),
        in_archive: false,
        depth: 0,
        data: pec_scan::testing::eicar(),
    });
    engine
        .scan(&[item], Instant::now() + Duration::from_secs(30))
        .await
        .unwrap()
        .map(|d| d.signature)
}

/// Issue #20 item 5 end to end on this machine: the bucket holds Talos's signed `test` database
/// v2 (no signatures), clamd starts from it and lets EICAR through; the updater runs Debian's
/// freshclam against a loopback mirror (signed patches to v6), uploads `test.cld`, removes
/// `test.cvd` and writes the marker; the scan function's refresh sees the marker, swaps the
/// files and reloads clamd, which now finds EICAR — without a restart.
#[tokio::test]
async fn new_definitions_reach_a_running_clamd_without_a_restart() {
    use pec_host::clamd_launch::{Refresh, reload};
    use pec_pipeline::definitions::{DefinitionsPlace, DefinitionsUpdate, RecordedDefinitions};

    let Some(binary) = clamd_binary() else { return };
    let freshclam = ["/usr/bin/freshclam", "/usr/sbin/freshclam"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("not installed (infra/local/install.sh clamav installs Debian's clamav-freshclam)");
    let Some(freshclam) = pec_testkit::prereq::require("freshclam", freshclam) else {
        return;
    };
    let Some(dbs) = pec_testkit::clamav::test_databases() else {
        return;
    };
    let read = |name: &str| std::fs::read(dbs.join(name)).unwrap();
    let store = MemoryStore::new();
    store.insert(
        EVIDENCE,
        &format!("{DEFAULT_DEFINITIONS_PREFIX}test.cvd"),
        read("test-2.cvd"),
    );
    let work = tempfile::tempdir().unwrap();
    let mut l = launch(work.path());
    l.binary = binary;
    let (mut child, mut loaded) = l.launch(&store, EVIDENCE).await.unwrap();
    let engine = ClamdEngine::new(&l.socket);
    wait_for_pong(&engine, &mut child).await;
    assert_eq!(eicar_verdict(&engine).await, None, "v2 has no signature");
    assert_eq!(
        l.refresh(&store, EVIDENCE, &mut loaded).await.unwrap(),
        Refresh::NoMarker
    );

    let mut mirrored =
        std::collections::BTreeMap::from([("test.cvd".to_string(), read("test-6.cvd"))]);
    for n in 2..=6 {
        mirrored.insert(format!("test-{n}.cdiff"), read(&format!("test-{n}.cdiff")));
    }
    let mirror = pec_testkit::clamav::Mirror::start(mirrored).await.unwrap();
    let updater_dir = tempfile::tempdir().unwrap();
    let update = DefinitionsUpdate {
        store: &store,
        updater: pec_scan::freshclam::Freshclam {
            binary: freshclam,
            work_dir: updater_dir.path().to_path_buf(),
            mirror: mirror.url(),
            dns: false,
            databases: vec!["test".into()],
            ca_bundle: None,
            timeout: Duration::from_secs(120),
        },
        metrics: RecordedDefinitions::default(),
        place: DefinitionsPlace::in_bucket(EVIDENCE),
    };
    let report = update.run(chrono::Utc::now()).await.unwrap();
    assert_eq!(report.status, "updated");
    assert_eq!(report.uploaded, ["test.cld"]);
    assert_eq!(report.deleted, ["test.cvd"]);
    assert_eq!(report.marker.databases["test"].version, 6);
    let (age, failed) = update.metrics.runs()[0];
    assert!(!failed);
    assert!(
        age.unwrap() > 86_400,
        "built in June 2021: the stale alarm's case"
    );

    match l.refresh(&store, EVIDENCE, &mut loaded).await.unwrap() {
        Refresh::Changed(files) => assert_eq!(files, ["test.cld", "test.cvd"]),
        other => panic!("{other:?}"),
    }
    assert!(work.path().join("db/test.cld").is_file());
    assert!(!work.path().join("db/test.cvd").exists());
    assert!(
        reload(&l.socket, Duration::from_secs(60)).await,
        "clamd reloaded"
    );
    let found = eicar_verdict(&engine).await;
    assert!(
        found.as_deref().is_some_and(|s| s.contains("Eicar")),
        "after the reload v6 finds EICAR: {found:?}"
    );
    assert_eq!(
        l.refresh(&store, EVIDENCE, &mut loaded).await.unwrap(),
        Refresh::Unchanged,
        "the same marker changes nothing"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_marker_ahead_of_its_files_changes_nothing_until_they_match_then_swaps_them_in() {
    use pec_host::clamd_launch::Refresh;
    let store = signatures();
    let work = tempfile::tempdir().unwrap();
    let l = launch(work.path());
    let mut loaded = l.sync_definitions(&store, EVIDENCE).await.unwrap();
    let before = loaded.clone();
    let mut header =
        b"ClamAV-VDB:07 Dec 2026 05-00 +0000:27000:10:90:X:X:talos:1796619600".to_vec();
    header.resize(600, b' ');
    let marker = serde_json::json!({
        "files": {"daily.cld": {"size": 600, "sha256": "00"}},
        "databases": {},
        "checked_at": "2026-12-07T05:00:00Z"
    });
    store.insert(
        EVIDENCE,
        pec_pipeline::definitions::DEFAULT_MARKER_KEY,
        serde_json::to_vec(&marker).unwrap(),
    );
    store.insert(
        EVIDENCE,
        &format!("{DEFAULT_DEFINITIONS_PREFIX}daily.cld"),
        header,
    );
    match l.refresh(&store, EVIDENCE, &mut loaded).await {
        Err(LaunchError::InFlux { name }) => assert_eq!(name, "daily.cld"),
        other => panic!("{other:?}"),
    }
    assert_eq!(loaded, before);
    assert!(!work.path().join("db/daily.cld").exists());

    // The updater writes the marker for the file it uploaded: now they match.
    let bytes = store
        .object(EVIDENCE, &format!("{DEFAULT_DEFINITIONS_PREFIX}daily.cld"))
        .unwrap();
    let sha: String = <sha2::Sha256 as sha2::Digest>::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let marker = serde_json::json!({
        "files": {
            "daily.cld": {"size": 600, "sha256": sha},
        },
        "databases": {},
        "checked_at": "2026-12-07T05:00:00Z"
    });
    store.insert(
        EVIDENCE,
        pec_pipeline::definitions::DEFAULT_MARKER_KEY,
        serde_json::to_vec(&marker).unwrap(),
    );
    assert_eq!(
        l.refresh(&store, EVIDENCE, &mut loaded).await.unwrap(),
        Refresh::Changed(vec!["daily.cld".into()])
    );
    assert_eq!(
        std::fs::read(work.path().join("db/daily.cld")).unwrap(),
        bytes
    );
    assert!(!work.path().join("db/daily.cld.part").exists());
    assert_eq!(loaded["daily.cld"], sha);
    assert!(
        loaded.contains_key("pec-test.ndb"),
        "files the updater does not own stay"
    );
    assert_eq!(
        l.refresh(&store, EVIDENCE, &mut loaded).await.unwrap(),
        Refresh::Unchanged
    );
    store.insert(
        EVIDENCE,
        pec_pipeline::definitions::DEFAULT_MARKER_KEY,
        b"{not json".to_vec(),
    );
    assert!(matches!(
        l.refresh(&store, EVIDENCE, &mut loaded).await,
        Err(LaunchError::BadMarker { .. })
    ));
}
