//! The alarm metric: an antivirus engine that cannot scan.
//!
//! In Lambda the metric is a CloudWatch Embedded Metric Format line on stdout (CloudWatch Logs
//! turns it into the metric `PEC/Antivirus EngineUnavailable`, dimension `Engine`; the template's
//! `ScanEngineUnavailableAlarm` watches it). No SDK call, no extra permission.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// CloudWatch namespace of the scan step's metrics.
pub const NAMESPACE: &str = "PEC/Antivirus";
/// Metric emitted once per message that could not be scanned because an engine failed.
pub const ENGINE_UNAVAILABLE: &str = "EngineUnavailable";

/// Where the step reports metrics.
pub trait Metrics: Send + Sync {
    /// `engine` could not scan a message (down, timed out, failed): the message waits.
    fn engine_unavailable(&self, engine: &str);
}

/// The EMF document for one [`ENGINE_UNAVAILABLE`] data point.
pub fn emf_engine_unavailable(engine: &str, timestamp_ms: i64) -> serde_json::Value {
    serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Engine"]],
                "Metrics": [{"Name": ENGINE_UNAVAILABLE, "Unit": "Count"}]
            }]
        },
        "Engine": engine,
        ENGINE_UNAVAILABLE: 1
    })
}

/// [`Metrics`] as EMF lines on stdout (Lambda).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmfStdout;

impl Metrics for EmfStdout {
    fn engine_unavailable(&self, engine: &str) {
        let line = emf_engine_unavailable(engine, chrono::Utc::now().timestamp_millis());
        println!("{line}");
    }
}

/// [`Metrics`] that remembers what was emitted (tests).
#[derive(Debug, Default)]
pub struct RecordedMetrics {
    engines: Mutex<Vec<String>>,
    count: AtomicUsize,
}

impl RecordedMetrics {
    /// Engines reported so far, in order.
    pub fn engines(&self) -> Vec<String> {
        self.engines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Data points so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Metrics for RecordedMetrics {
    fn engine_unavailable(&self, engine: &str) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.engines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(engine.to_string());
    }
}

impl<T: Metrics> Metrics for &T {
    fn engine_unavailable(&self, engine: &str) {
        (**self).engine_unavailable(engine)
    }
}
