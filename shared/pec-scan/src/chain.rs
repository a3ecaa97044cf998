//! The chain: walk the message once, then run the engines in series over every item, stopping
//! at the first detection.

use std::sync::Arc;
use std::time::Instant;

use crate::engine::{Engine, EngineError};
use crate::limits::Limits;
use crate::verdict::{Bound, ScanReport, Unscannable, Verdict};
use crate::walk::{Walk, walk};

/// Stack for the walker thread: the MIME parser builds deep trees iteratively but drops them
/// recursively, and the walk itself recurses up to [`Limits::max_depth`] levels.
const WALKER_STACK: usize = 64 * 1024 * 1024;

/// Scans one message with `engines`, in order. Engine 1 scans every item; if it finds nothing,
/// engine 2 scans every item; and so on. The first detection ends the scan.
///
/// - An engine error (engine down, timeout, protocol error) gives [`Verdict::EngineError`]: no
///   verdict on the message, which must wait and be scanned again.
/// - A bound hit gives [`Verdict::Unscannable`], unless an engine finds something in the items
///   extracted before the bound (then [`Verdict::Infected`]).
/// - An empty engine list is an engine error: a message is never "clean" without a scan.
pub async fn scan(raw: Arc<[u8]>, engines: &[&dyn Engine], limits: &Limits) -> ScanReport {
    let started = Instant::now();
    let deadline = started + limits.time_limit();
    let names: Vec<String> = engines.iter().map(|e| e.name().to_string()).collect();
    let walk = walk_on_thread(raw, *limits, deadline).await;
    let items: Vec<Arc<crate::Item>> = walk.items.into_iter().map(Arc::new).collect();
    let verdict = run_engines(engines, &items, walk.stopped, deadline, limits).await;
    ScanReport {
        verdict,
        engines: names,
        parts: items.len(),
        expanded_bytes: walk.expanded_bytes,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

async fn run_engines(
    engines: &[&dyn Engine],
    items: &[Arc<crate::Item>],
    stopped: Option<Unscannable>,
    deadline: Instant,
    limits: &Limits,
) -> Verdict {
    if engines.is_empty() {
        return Verdict::EngineError {
            engine: "none".into(),
            error: "no antivirus engine is configured: refusing to call the message clean".into(),
        };
    }
    let out_of_time = |part: Option<String>| {
        Verdict::Unscannable(Unscannable {
            bound: Bound::Time,
            reason: format!(
                "time limit of {} ms reached while scanning",
                limits.time_limit_ms
            ),
            part,
        })
    };
    for engine in engines {
        if Instant::now() >= deadline {
            return out_of_time(None);
        }
        let outcome = tokio::time::timeout_at(deadline.into(), engine.scan(items, deadline)).await;
        match outcome {
            Err(_) | Ok(Err(EngineError::DeadlineExceeded)) => return out_of_time(None),
            Ok(Err(e)) => {
                return Verdict::EngineError {
                    engine: engine.name().to_string(),
                    error: e.to_string(),
                };
            }
            Ok(Ok(Some(hit))) => {
                let item = items.get(hit.index);
                return Verdict::Infected {
                    engine: engine.name().to_string(),
                    signature: hit.signature,
                    part: item.map(|i| i.path.to_string()).unwrap_or_default(),
                    filename: item
                        .map(|i| i.filename.clone())
                        .filter(|name| !name.is_empty()),
                };
            }
            Ok(Ok(None)) => {}
        }
    }
    match stopped {
        Some(u) => Verdict::Unscannable(u),
        None => Verdict::Clean,
    }
}

/// Runs the pure walker on its own thread (big stack, off the async runtime's threads).
async fn walk_on_thread(raw: Arc<[u8]>, limits: Limits, deadline: Instant) -> Walk {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("pec-scan-walk".into())
        .stack_size(WALKER_STACK)
        .spawn(move || {
            let _ = tx.send(walk(&raw, &limits, deadline));
        });
    let internal = |reason: String| Walk {
        items: Vec::new(),
        stopped: Some(Unscannable {
            bound: Bound::Internal,
            reason,
            part: None,
        }),
        expanded_bytes: 0,
    };
    if let Err(e) = spawned {
        return internal(format!("cannot start the walker thread: {e}"));
    }
    // The walker checks the clock between parts and chunks, but a single call into the MIME or
    // zip parser cannot be interrupted: past the deadline the verdict is given without waiting
    // (the detached thread finishes on its own).
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(walk)) => walk,
        Ok(Err(_)) => internal("the walker thread stopped without a result".into()),
        Err(_) => Walk {
            items: Vec::new(),
            stopped: Some(Unscannable {
                bound: Bound::Time,
                reason: format!(
                    "time limit of {} ms reached while extracting",
                    limits.time_limit_ms
                ),
                part: None,
            }),
            expanded_bytes: 0,
        },
    }
}
