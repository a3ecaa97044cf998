//! The MailStore conformance suite (`pec_ports::mailstore::conformance`) against
//! [`MemoryMailStore`] (the DynamoDB + S3 store runs the same cases in `pec-integration`).

use chrono::Utc;
use pec_ports::MemoryMailStore;
use pec_ports::mailstore::conformance::{self, MailStoreHarness};
use pec_ports::mailstore::{Appended, Flags, INBOX, MailStore, Origin};

/// The memory store: a mailbox is `create_mailbox`, a delivery an append to INBOX.
#[derive(Default)]
struct Memory {
    store: MemoryMailStore,
}

impl MailStoreHarness for Memory {
    type Store = MemoryMailStore;

    fn store(&self) -> &MemoryMailStore {
        &self.store
    }

    async fn mailbox(&self, address: &str, quota_bytes: u64) -> Result<(), String> {
        self.store.create_mailbox(address, quota_bytes);
        Ok(())
    }

    async fn deliver(&self, address: &str, bytes: Vec<u8>) -> Result<Appended, String> {
        self.store
            .append(
                address,
                INBOX,
                bytes,
                Flags::new(),
                Utc::now(),
                Origin::Delivered,
            )
            .await
            .map_err(|e| e.to_string())
    }
}

/// Every case on one shared store (as on shared tables), each under its own namespace.
#[tokio::test]
async fn memory_mailstore_conforms() {
    let harness = Memory::default();
    let results = conformance::run_all(&harness, "mem").await;
    assert_eq!(results.len(), conformance::cases::<Memory>().len());
    let mut failures = Vec::new();
    for r in &results {
        match &r.outcome {
            Ok(()) => eprintln!("ok    {} ({:?})", r.name, r.elapsed),
            Err(e) => {
                eprintln!("FAIL  {} ({:?}): {e}", r.name, r.elapsed);
                failures.push(r.name);
            }
        }
    }
    assert!(failures.is_empty(), "failed cases: {failures:?}");
}

/// Each case alone on a fresh store: no case depends on another's data.
#[tokio::test]
async fn each_case_alone() {
    for case in conformance::cases::<Memory>() {
        let harness = Memory::default();
        if let Err(e) = case.run(&harness, "alone").await {
            panic!("{}: {e}", case.name);
        }
    }
}

/// A second run on the same store (another namespace) passes too: cases never assume an
/// empty store.
#[tokio::test]
async fn runs_twice_on_one_store() {
    let harness = Memory::default();
    for ns in ["first", "second"] {
        for r in conformance::run_all(&harness, ns).await {
            assert!(r.outcome.is_ok(), "{ns}/{}: {:?}", r.name, r.outcome);
        }
    }
}

/// The cases run at once on one store, on a multi-threaded runtime (as a harness running one
/// trial per case in parallel would): namespaces keep them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_in_parallel() {
    let harness = std::sync::Arc::new(Memory::default());
    let mut tasks = Vec::new();
    for case in conformance::cases::<Memory>() {
        let harness = harness.clone();
        tasks.push(tokio::spawn(async move {
            (case.name, case.run(&harness, "parallel").await)
        }));
    }
    for task in tasks {
        let (name, outcome) = task.await.expect("case task");
        assert!(outcome.is_ok(), "{name}: {outcome:?}");
    }
}
