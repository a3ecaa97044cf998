//! Verdicts: what a scan concluded about one message.

use serde::{Deserialize, Serialize};

/// Which bound (or which unreadable content) made a message unscannable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bound {
    /// More container levels than [`crate::Limits::max_depth`].
    Depth,
    /// More decoded/decompressed bytes than [`crate::Limits::max_expanded_bytes`].
    ExpandedSize,
    /// More parts and entries than [`crate::Limits::max_entries`].
    Entries,
    /// The time budget [`crate::Limits::time_limit_ms`] ran out.
    Time,
    /// An encrypted archive entry: its content cannot be read.
    Encrypted,
    /// An archive entry compressed with a method this scanner does not decode.
    UnsupportedCompression,
    /// Something announced as an archive could not be read as one.
    CorruptArchive,
    /// The walker itself failed (a bug, reported instead of crashing).
    Internal,
}

/// Why a message could not be fully scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unscannable {
    /// The bound hit.
    pub bound: Bound,
    /// Human-readable detail (the limit, the archive error...).
    pub reason: String,
    /// Where it happened, when known ([`crate::PartPath`] display form).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub part: Option<String>,
}

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Every engine scanned every part and found nothing.
    Clean,
    /// An engine found something; the chain stopped there.
    Infected {
        /// The engine that found it (`clamav`, `yara`).
        engine: String,
        /// The engine's name for what it found.
        signature: String,
        /// Where ([`crate::PartPath`] display form).
        part: String,
        /// The part's filename or archive entry name, when it has one.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        filename: Option<String>,
    },
    /// A bound was hit and nothing was found in what could be read.
    Unscannable(Unscannable),
    /// An engine could not scan (down, timed out, protocol error): no verdict was reached and
    /// the message must not pass. The scan step fails and the message is retried.
    EngineError {
        /// The engine.
        engine: String,
        /// What went wrong.
        error: String,
    },
}

impl Verdict {
    /// `clean`, `infected`, `unscannable` or `engine-error`.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Infected { .. } => "infected",
            Verdict::Unscannable(_) => "unscannable",
            Verdict::EngineError { .. } => "engine-error",
        }
    }

    /// The CLI's exit code for this verdict: 0 clean, 1 infected, 2 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Clean => 0,
            Verdict::Infected { .. } => 1,
            Verdict::Unscannable(_) | Verdict::EngineError { .. } => 2,
        }
    }
}

/// A verdict with what it took to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// The verdict (its fields are flattened into the JSON object).
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The engines of the chain, in the order they ran (or were to run).
    pub engines: Vec<String>,
    /// Parts and entries handed to the engines.
    pub parts: usize,
    /// Bytes produced by decoding and decompressing.
    pub expanded_bytes: u64,
    /// Wall-clock time of the whole scan.
    pub elapsed_ms: u64,
}
