//! Antispam (issue #18): the [`SpamEngine`] port the scan step scores every message with, what
//! it records ([`SpamCheck`], carried to ingress in the scan hand-off), and the outbound
//! detection the spam lockout counts ([`SpamDetection`], kept by the [`crate::StateStore`]).
//!
//! Scoring never blocks PEC: an engine that is down or slow gives [`SpamCheck::Unscored`], the
//! message goes on, and the scan step's `EngineUnavailable{Engine=rspamd}` metric raises
//! `ScanSpamUnavailableAlarm`. The adapter for
//! rspamd's HTTP protocol is `pec_aws::RspamdEngine`; [`FakeSpam`] is the fake.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the engine is told besides the message (the SMTP envelope; rspamd's request headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpamEnvelope {
    /// SMTP MAIL FROM.
    pub reverse_path: String,
    /// SMTP RCPT TO.
    pub recipients: Vec<String>,
    /// The authenticated user for a submission (`None` for mail from outside).
    pub user: Option<String>,
    /// A name for the engine's log (the raw key).
    pub queue_id: String,
}

/// A score in the engine's points, finite (`NaN` and infinities are refused when read).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Points(f64);

impl Points {
    pub fn new(value: f64) -> Option<Points> {
        value.is_finite().then_some(Points(value))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl Eq for Points {}

impl TryFrom<f64> for Points {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Points::new(value).ok_or_else(|| format!("not a finite score: {value}"))
    }
}

impl From<Points> for f64 {
    fn from(p: Points) -> f64 {
        p.0
    }
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpamScore {
    pub score: Points,
    /// The score at which the engine would reject.
    pub required: Points,
    /// The engine's action (rspamd: `no action`, `greylist`, `add header`, `rewrite subject`,
    /// `soft reject`, `reject`).
    pub action: String,
    /// Whether the message counts as spam: the engine would mark (`add header`,
    /// `rewrite subject`) or reject it. Greylisting and soft rejects are not verdicts.
    pub spam: bool,
    /// The rules that fired (names only), sorted.
    #[serde(default)]
    pub symbols: Vec<String>,
}

impl SpamScore {
    /// Whether `action` (rspamd's vocabulary) means spam.
    pub fn action_is_spam(action: &str) -> bool {
        matches!(action, "reject" | "add header" | "rewrite subject")
    }
}

/// What the scan step recorded about spam for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SpamCheck {
    /// The engine answered.
    Scored(SpamScore),
    /// No answer (down, timed out, refused): the message went on unscored.
    Unscored { reason: String },
}

impl SpamCheck {
    /// Scored as spam.
    pub fn is_spam(&self) -> bool {
        matches!(self, SpamCheck::Scored(s) if s.spam)
    }
}

/// Why the engine gave no score.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the spam engine gave no score: {0}")]
pub struct SpamError(pub String);

/// Scores a message for spam.
pub trait SpamEngine: Send + Sync {
    fn score(
        &self,
        raw: &[u8],
        envelope: &SpamEnvelope,
    ) -> impl Future<Output = Result<SpamScore, SpamError>> + Send;
}

/// One outbound message scored as spam (DynamoDB: `SPAM#<mailbox>`; TTL). The lockout sweep
/// counts these per mailbox in a rolling window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpamDetection {
    /// The authenticated mailbox that submitted it.
    pub mailbox: String,
    /// When it was submitted (the message record's time: a duplicate records the same
    /// detection, and a backlog scanned at once after an engine outage is not a burst).
    pub at: DateTime<Utc>,
    /// The submission id.
    pub message: String,
    pub identificativo: String,
    pub score: Points,
}

/// The GTUBE test string: every spam engine's "this is spam" marker.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A fake engine: a message containing [`GTUBE`] scores 1000 and is rejected; anything else 0.
/// `down()` makes it fail every call (an engine that is down).
#[derive(Debug, Clone, Default)]
pub struct FakeSpam {
    down: bool,
}

impl FakeSpam {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn down() -> Self {
        Self { down: true }
    }
}

impl SpamEngine for FakeSpam {
    async fn score(&self, raw: &[u8], _: &SpamEnvelope) -> Result<SpamScore, SpamError> {
        if self.down {
            return Err(SpamError("connection refused (fake engine down)".into()));
        }
        let gtube = raw.windows(GTUBE.len()).any(|w| w == GTUBE.as_bytes());
        let (score, action) = if gtube {
            (1000.0, "reject")
        } else {
            (0.0, "no action")
        };
        Ok(SpamScore {
            score: Points(score),
            required: Points(15.0),
            action: action.into(),
            spam: SpamScore::action_is_spam(action),
            symbols: if gtube { vec!["GTUBE".into()] } else { vec![] },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_json_shape_and_bad_scores() {
        let check = SpamCheck::Scored(SpamScore {
            score: Points(7.5),
            required: Points(15.0),
            action: "add header".into(),
            spam: true,
            symbols: vec!["GTUBE".into()],
        });
        let json = serde_json::to_value(&check).unwrap();
        assert_eq!(json["status"], "scored");
        assert_eq!(json["score"], 7.5);
        assert_eq!(serde_json::from_value::<SpamCheck>(json).unwrap(), check);
        let down = SpamCheck::Unscored {
            reason: "timeout".into(),
        };
        assert_eq!(
            serde_json::to_value(&down).unwrap(),
            serde_json::json!({"status": "unscored", "reason": "timeout"})
        );
        assert!(!down.is_spam() && check.is_spam());
        assert!(Points::new(f64::NAN).is_none());
        assert!(serde_json::from_str::<Points>("1e999").is_err());
    }

    #[tokio::test]
    async fn fake_engine_knows_gtube() {
        let env = SpamEnvelope::default();
        let spam = FakeSpam::new()
            .score(format!("Subject: x\r\n\r\n{GTUBE}\r\n").as_bytes(), &env)
            .await
            .unwrap();
        assert!(spam.spam);
        let ham = FakeSpam::new()
            .score(b"Subject: x\r\n\r\nciao\r\n", &env)
            .await;
        assert!(!ham.unwrap().spam);
        assert!(FakeSpam::down().score(b"", &env).await.is_err());
    }
}
