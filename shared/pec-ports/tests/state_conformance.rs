//! The StateStore conformance suite against [`MemoryState`] (DynamoDB Local runs the same
//! cases in `pec-integration`'s `state_conformance`).

use pec_ports::MemoryState;
use pec_ports::state::conformance;

/// Every case on one shared store (as on a shared table), each under its own namespace.
#[tokio::test]
async fn memory_state_conforms() {
    let store = MemoryState::new();
    let results = conformance::run_all(&store, "mem").await;
    assert_eq!(results.len(), conformance::cases::<MemoryState>().len());
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
    for case in conformance::cases::<MemoryState>() {
        let store = MemoryState::new();
        if let Err(e) = case.run(&store, "alone").await {
            panic!("{}: {e}", case.name);
        }
    }
}

/// A second run on the same store (another namespace) passes too: cases never assume an
/// empty table.
#[tokio::test]
async fn runs_twice_on_one_store() {
    let store = MemoryState::new();
    for ns in ["first", "second"] {
        for r in conformance::run_all(&store, ns).await {
            assert!(r.outcome.is_ok(), "{ns}/{}: {:?}", r.name, r.outcome);
        }
    }
}
