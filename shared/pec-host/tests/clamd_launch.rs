//! The scan function's cold-start clamd (AWS: from a Lambda layer) run here with Debian's
//! clamd and the project's signatures served from an in-memory "evidence bucket": the
//! definitions are synced, clamd starts on its socket, answers PING and finds EICAR; a bad
//! definitions name or an empty prefix is refused.

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
    }
}

#[tokio::test]
async fn clamd_starts_from_the_bucket_definitions_and_finds_eicar() {
    if clamd_binary().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let l = launch(work.path());
    let mut child = l.launch(&signatures(), EVIDENCE).await.unwrap();
    let engine = ClamdEngine::new(&l.socket);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if engine.ping().await.is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("clamd exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "clamd did not answer PING within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let from_env = ClamdLaunch::from_env(&env, "/tmp/clamd.sock").unwrap();
    assert_eq!(from_env.work_dir, std::path::PathBuf::from("/tmp/clamav"));
    let unset = pec_ports::Env::from_fn(|name| (name == "PEC_CLAMD_BINARY").then(String::new));
    assert!(ClamdLaunch::from_env(&unset, "/tmp/clamd.sock").is_none());
}
