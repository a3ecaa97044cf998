//! Engine 2: YARA rules, in process, with yara-x (built without YARA modules; see the README).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{BoxFuture, Detection, Engine, EngineError};
use crate::item::Item;

/// The rule set committed in the repository (`shared/pec-scan/rules/pec.yar`).
pub const BUILTIN_RULES: &str = include_str!("../rules/pec.yar");

const NAME: &str = "yara";

/// A rule set that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("YARA rules {origin} do not compile: {message}")]
pub struct RulesError {
    /// Where the rules came from (file name or S3 key).
    pub origin: String,
    /// The compiler's report.
    pub message: String,
}

/// YARA as an [`Engine`]: compiled rules shared by every scan.
#[derive(Clone)]
pub struct YaraEngine {
    rules: Arc<yara_x::Rules>,
}

impl std::fmt::Debug for YaraEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YaraEngine")
            .field("rules", &self.rules.iter().len())
            .finish()
    }
}

impl YaraEngine {
    /// The built-in rule set.
    pub fn builtin() -> Result<Self, RulesError> {
        Self::from_source("rules/pec.yar", BUILTIN_RULES)
    }

    /// Compiles `source` (e.g. a rule file fetched from S3), with the external variables the
    /// walker sets (`filename`, `content_type`, `in_archive`, `depth`) declared.
    pub fn from_source(origin: &str, source: &str) -> Result<Self, RulesError> {
        let error = |message: String| RulesError {
            origin: origin.to_string(),
            message,
        };
        let mut compiler = yara_x::Compiler::new();
        compiler
            .define_global("filename", "")
            .and_then(|c| c.define_global("content_type", ""))
            .and_then(|c| c.define_global("in_archive", false))
            .and_then(|c| c.define_global("depth", 0i64))
            .map_err(|e| error(e.to_string()))?;
        compiler
            .add_source(yara_x::SourceCode::from(source).with_origin(origin))
            .map_err(|e| error(e.to_string()))?;
        let rules = compiler.build();
        if rules.iter().len() == 0 {
            return Err(error("no rule in the source".into()));
        }
        Ok(Self {
            rules: Arc::new(rules),
        })
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.iter().len()
    }
}

fn failed(detail: String) -> EngineError {
    EngineError::Failed {
        engine: NAME.into(),
        detail,
    }
}

fn scan_items(
    rules: &yara_x::Rules,
    items: &[Arc<Item>],
    deadline: Instant,
) -> Result<Option<Detection>, EngineError> {
    let mut scanner = yara_x::Scanner::new(rules);
    for (index, item) in items.iter().enumerate() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(EngineError::DeadlineExceeded);
        }
        // yara-x counts its timeout in whole seconds.
        scanner.set_timeout(remaining.max(Duration::from_secs(1)));
        scanner
            .set_global("filename", item.filename.as_str())
            .and_then(|s| s.set_global("content_type", item.content_type.as_str()))
            .and_then(|s| s.set_global("in_archive", item.in_archive))
            .and_then(|s| s.set_global("depth", i64::from(item.depth)))
            .map_err(|e| failed(format!("setting the external variables: {e}")))?;
        match scanner.scan(&item.data) {
            Ok(results) => {
                if let Some(rule) = results.matching_rules().next() {
                    return Ok(Some(Detection {
                        index,
                        signature: rule.identifier().to_string(),
                    }));
                }
            }
            Err(yara_x::ScanError::Timeout) => return Err(EngineError::DeadlineExceeded),
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    Ok(None)
}

impl Engine for YaraEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn scan<'a>(
        &'a self,
        items: &'a [Arc<Item>],
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Option<Detection>, EngineError>> {
        let rules = Arc::clone(&self.rules);
        let items = items.to_vec();
        Box::pin(async move {
            // CPU-bound: off the async runtime's threads.
            tokio::task::spawn_blocking(move || scan_items(&rules, &items, deadline))
                .await
                .map_err(|e| failed(format!("the scanning task failed: {e}")))?
        })
    }
}
