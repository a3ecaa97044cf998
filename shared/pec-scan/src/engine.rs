//! The engine interface: the chain talks to every engine (clamd, yara-x, test fakes) through it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::Item;

/// A boxed future, so that [`Engine`] can be used as a trait object (the engine list is
/// configuration).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An engine's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Index, in the slice given to [`Engine::scan`], of the item it was found in.
    pub index: usize,
    /// The engine's name for it (ClamAV signature, YARA rule identifier).
    pub signature: String,
}

/// Why an engine could not give an answer. None of these is a verdict on the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot be reached (clamd stopped, socket missing, connection refused).
    #[error("{engine} is unavailable: {detail}")]
    Unavailable {
        /// The engine.
        engine: String,
        /// What the connection said.
        detail: String,
    },
    /// One call took longer than the engine's own timeout.
    #[error("{engine} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The engine.
        engine: String,
        /// Its per-call timeout.
        timeout_ms: u64,
    },
    /// The engine answered with an error or something unreadable.
    #[error("{engine} failed: {detail}")]
    Failed {
        /// The engine.
        engine: String,
        /// The engine's answer or the local failure.
        detail: String,
    },
    /// The scan's deadline ([`crate::Limits::time_limit_ms`]) passed while the engine worked:
    /// the chain reports the message as unscannable (bound `time`), not as an engine error.
    #[error("the scan deadline passed")]
    DeadlineExceeded,
}

/// An antivirus engine. Implementations must never return `Ok(None)` for items they did not
/// actually scan: an engine that cannot scan returns an [`EngineError`], and the chain then
/// refuses to reach a verdict.
pub trait Engine: Send + Sync {
    /// Short stable name, used in verdicts and configuration (`clamav`, `yara`).
    fn name(&self) -> &str;

    /// Scans `items` in order and returns the first detection, or `None` when every item is
    /// clean. Must stop with [`EngineError::DeadlineExceeded`] once `deadline` has passed.
    fn scan<'a>(
        &'a self,
        items: &'a [Arc<Item>],
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Option<Detection>, EngineError>>;
}

impl<E: Engine + ?Sized> Engine for Arc<E> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn scan<'a>(
        &'a self,
        items: &'a [Arc<Item>],
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Option<Detection>, EngineError>> {
        (**self).scan(items, deadline)
    }
}
