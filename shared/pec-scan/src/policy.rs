//! Per-tenant scan policy and the decision a verdict leads to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::verdict::Verdict;

/// The engines this crate provides adapters for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// ClamAV through clamd (INSTREAM on a unix socket): [`crate::clamd::ClamdEngine`].
    Clamav,
    /// YARA rules in process: [`crate::yara::YaraEngine`].
    Yara,
}

impl EngineKind {
    /// The engine's name in verdicts (`clamav`, `yara`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EngineKind::Clamav => "clamav",
            EngineKind::Yara => "yara",
        }
    }
}

/// What to do with a message that could not be fully scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnscannable {
    /// Let it through, with a logged warning.
    Accept,
    /// Treat it as infected: the virus outcome, with "contenuto non analizzabile" as the cause.
    TreatAsInfected,
}

/// One tenant's antivirus policy.
///
/// **Default:** engines `[clamav, yara]` (the service sheet's two engines in series),
/// unscannable messages treated as infected (a message that could not be scanned has not
/// passed the antivirus), the default [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanPolicy {
    /// Engines in chain order.
    pub engines: Vec<EngineKind>,
    /// Treatment of [`Verdict::Unscannable`].
    pub unscannable: OnUnscannable,
    /// Bounds of the walk.
    pub limits: Limits,
}

impl Default for ScanPolicy {
    fn default() -> Self {
        Self {
            engines: vec![EngineKind::Clamav, EngineKind::Yara],
            unscannable: OnUnscannable::TreatAsInfected,
            limits: Limits::default(),
        }
    }
}

/// The policies of every tenant: a default and per-tenant overrides (whole policies, not merged
/// field by field). JSON, e.g. `{"default": {...}, "tenants": {"acme": {"unscannable": "accept"}}}`
/// (fields a tenant omits take the built-in default, not the book's `default`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyBook {
    /// For tenants without their own entry.
    pub default: ScanPolicy,
    /// Tenant id → policy.
    pub tenants: BTreeMap<String, ScanPolicy>,
}

/// A policy that must not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not the JSON shape above.
    #[error("scan policy is not valid JSON for a policy book: {0}")]
    Json(String),
    /// An empty engine list would let mail through unscanned.
    #[error("scan policy {who}: the engine list is empty")]
    NoEngines {
        /// `default` or `tenant <id>`.
        who: String,
    },
    /// The same engine twice.
    #[error("scan policy {who}: engine {engine} is listed twice")]
    Duplicate {
        /// `default` or `tenant <id>`.
        who: String,
        /// The engine.
        engine: &'static str,
    },
    /// A zero limit would make every message unscannable.
    #[error("scan policy {who}: limits must be positive")]
    ZeroLimit {
        /// `default` or `tenant <id>`.
        who: String,
    },
}

impl ScanPolicy {
    fn validate(&self, who: &str) -> Result<(), PolicyError> {
        if self.engines.is_empty() {
            return Err(PolicyError::NoEngines { who: who.into() });
        }
        for (i, e) in self.engines.iter().enumerate() {
            if self.engines.get(..i).is_some_and(|seen| seen.contains(e)) {
                return Err(PolicyError::Duplicate {
                    who: who.into(),
                    engine: e.as_str(),
                });
            }
        }
        let l = &self.limits;
        if l.max_depth == 0
            || l.max_entries == 0
            || l.max_expanded_bytes == 0
            || l.time_limit_ms == 0
        {
            return Err(PolicyError::ZeroLimit { who: who.into() });
        }
        Ok(())
    }
}

impl PolicyBook {
    /// Parses and validates a policy book.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        let book: PolicyBook =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Json(e.to_string()))?;
        book.validate()?;
        Ok(book)
    }

    /// Checks every policy in the book.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.default.validate("default")?;
        for (tenant, policy) in &self.tenants {
            policy.validate(&format!("tenant {tenant}"))?;
        }
        Ok(())
    }

    /// The policy for `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> &ScanPolicy {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }
}

/// What the pipeline does with a message after the scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// Go on to the next step. `warning` is set when the message was not fully scanned and the
    /// policy accepts that.
    Pass {
        /// Why the pass is qualified, if it is.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        warning: Option<String>,
    },
    /// The virus outcome of the point (non-acceptance at the access point; detection notice and
    /// non-delivery at the receiving point) and quarantine.
    Virus {
        /// What was found, for the notices (`errore-esteso`: "virus rilevato: ...").
        description: String,
    },
    /// No verdict: the step fails, the message waits and is scanned again.
    Retry {
        /// The engine error.
        reason: String,
    },
}

/// The decision for a verdict under `on_unscannable`.
pub fn decide(verdict: &Verdict, on_unscannable: OnUnscannable) -> Decision {
    match verdict {
        Verdict::Clean => Decision::Pass { warning: None },
        Verdict::Infected {
            engine,
            signature,
            part,
            filename,
        } => {
            let place = match filename {
                Some(name) => format!("allegato {name}, parte {part}"),
                None => format!("parte {part}"),
            };
            Decision::Virus {
                description: format!("{signature} (motore {engine}, {place})"),
            }
        }
        Verdict::Unscannable(u) => {
            let what = match &u.part {
                Some(part) => format!("{} (parte {part})", u.reason),
                None => u.reason.clone(),
            };
            match on_unscannable {
                OnUnscannable::Accept => Decision::Pass {
                    warning: Some(format!("not fully scanned: {what}")),
                },
                OnUnscannable::TreatAsInfected => Decision::Virus {
                    description: format!("contenuto non analizzabile: {what}"),
                },
            }
        }
        Verdict::EngineError { engine, error } => Decision::Retry {
            reason: format!("{engine}: {error}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_two_engines_and_fails_closed() {
        let p = ScanPolicy::default();
        assert_eq!(p.engines, [EngineKind::Clamav, EngineKind::Yara]);
        assert_eq!(p.unscannable, OnUnscannable::TreatAsInfected);
    }

    #[test]
    fn book_parses_tenant_overrides_and_rejects_bad_policies() {
        let book = PolicyBook::from_json(
            br#"{"tenants": {"acme": {"engines": ["yara"], "unscannable": "accept"}}}"#,
        )
        .unwrap();
        assert_eq!(book.for_tenant("acme").engines, [EngineKind::Yara]);
        assert_eq!(book.for_tenant("acme").unscannable, OnUnscannable::Accept);
        assert_eq!(book.for_tenant("other"), &ScanPolicy::default());
        assert!(matches!(
            PolicyBook::from_json(br#"{"default": {"engines": []}}"#),
            Err(PolicyError::NoEngines { .. })
        ));
        assert!(matches!(
            PolicyBook::from_json(br#"{"tenants": {"x": {"engines": ["yara", "yara"]}}}"#),
            Err(PolicyError::Duplicate { .. })
        ));
        assert!(matches!(
            PolicyBook::from_json(br#"{"default": {"engines": ["mcafee"]}}"#),
            Err(PolicyError::Json(_))
        ));
        assert!(matches!(
            PolicyBook::from_json(br#"{"default": {"limits": {"max_depth": 0}}}"#),
            Err(PolicyError::ZeroLimit { .. })
        ));
    }

    #[test]
    fn decisions() {
        let infected = Verdict::Infected {
            engine: "clamav".into(),
            signature: "Eicar".into(),
            part: "2".into(),
            filename: Some("a.com".into()),
        };
        assert_eq!(
            decide(&infected, OnUnscannable::Accept),
            Decision::Virus {
                description: "Eicar (motore clamav, allegato a.com, parte 2)".into()
            }
        );
        let unscannable = Verdict::Unscannable(crate::Unscannable {
            bound: crate::Bound::Depth,
            reason: "too deep".into(),
            part: None,
        });
        assert!(matches!(
            decide(&unscannable, OnUnscannable::Accept),
            Decision::Pass { warning: Some(_) }
        ));
        assert!(matches!(
            decide(&unscannable, OnUnscannable::TreatAsInfected),
            Decision::Virus { .. }
        ));
        let down = Verdict::EngineError {
            engine: "clamav".into(),
            error: "down".into(),
        };
        assert!(matches!(
            decide(&down, OnUnscannable::Accept),
            Decision::Retry { .. }
        ));
        assert_eq!(
            decide(&Verdict::Clean, OnUnscannable::TreatAsInfected),
            Decision::Pass { warning: None }
        );
    }
}
