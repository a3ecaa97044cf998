//! SMS (issue #18): the [`SmsSender`] port (Amazon SNS in `pec_aws::SnsSms`, [`MemorySms`]
//! here), a mailbox's opt-in ([`SmsSettings`]), what the delivery point hands the sms-notify
//! function ([`SmsRequest`]) and the per-mailbox rate window it keeps ([`SmsWindow`], in the
//! [`crate::StateStore`]).
//!
//! The rule (`pec_pipeline::sms`): the first new message after a quiet spell is notified at
//! once; whatever arrives within the window after an SMS waits, and one digest SMS covers it
//! when the window ends. A notice already covered by an SMS is never sent again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why an SMS was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    /// The number or the text is refused (not a valid number, opted out, a country not
    /// enabled): permanent, logged, never retried.
    #[error("SMS refused: {0}")]
    Refused(String),
    /// The service could not take it now (throttled, down, a timeout): retried.
    #[error("SMS service unavailable: {0}")]
    Unavailable(String),
}

/// Sends one SMS (transactional) to an E.164 number; the service's message id.
pub trait SmsSender: Send + Sync {
    fn send(
        &self,
        number: &str,
        text: &str,
    ) -> impl Future<Output = Result<String, SmsError>> + Send;
}

impl<T: SmsSender> SmsSender for &T {
    fn send(
        &self,
        number: &str,
        text: &str,
    ) -> impl Future<Output = Result<String, SmsError>> + Send {
        (**self).send(number, text)
    }
}

/// A mailbox's SMS notifications (plans with `sms_notification`). Not written when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsSettings {
    /// E.164.
    pub number: String,
    /// Also for ordinary (non-PEC) mail delivered to INBOX (never for what goes to Junk).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordinary: bool,
}

/// What the sms-notify function is asked (its queue's messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SmsRequest {
    /// A new message was delivered into a mailbox's INBOX (sent by the delivery point, at
    /// least once).
    Notice(SmsNotice),
    /// The end of a rate window: send the digest of what waited (sent by sms-notify itself,
    /// delayed; one per waiting notice, the first one due sends).
    Flush {
        version: u32,
        mailbox: String,
        /// The SMS that opened the window (`SmsWindow::last_sent_at`): a flush for a window
        /// that is over does nothing.
        window: DateTime<Utc>,
    },
}

/// One new message in a mailbox: the names an SMS may carry, nothing of the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsNotice {
    pub version: u32,
    pub mailbox: String,
    /// The mailbox item (unique within the mailbox: the idempotency key).
    pub item: String,
    /// The certified sender (daticert `mittente`), or the ordinary mail's sender.
    pub sender: String,
    /// The original subject.
    pub subject: String,
    /// Ordinary mail (an anomaly envelope), not a PEC.
    #[serde(default)]
    pub ordinary: bool,
    /// When it was delivered.
    pub at: DateTime<Utc>,
}

/// Most notices a window keeps waiting by id (a duplicate beyond them may be counted twice in
/// a digest, never sent twice on its own).
pub const WINDOW_IDS: usize = 200;

/// Most notified ids a window remembers (the oldest are forgotten first).
pub const NOTIFIED_IDS: usize = 1000;

/// A mailbox's SMS rate window (`SMSWIN#<mailbox>`): replaced whole, conditionally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsWindow {
    /// The last SMS (notice or digest) sent or claimed; the window runs from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent_at: Option<DateTime<Utc>>,
    /// The items an SMS covered, with when it went, for as long as a duplicate of their notice
    /// can still arrive (older ones are pruned): a duplicate finds its item here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notified: BTreeMap<String, DateTime<Utc>>,
    /// Items waiting for the digest.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub pending: BTreeSet<String>,
    /// Waiting notices beyond [`WINDOW_IDS`] (counted, not named).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overflow: u32,
    /// The first waiting notice's delivery time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<DateTime<Utc>>,
    /// The latest waiting notice (the digest names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<SmsNotice>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SmsWindow {
    /// How many notices wait.
    pub fn waiting(&self) -> usize {
        self.pending.len() + self.overflow as usize
    }
}

/// Records every SMS in memory (tests); numbers in `refuse` are refused, `down` makes every
/// send unavailable.
#[derive(Default)]
pub struct MemorySms {
    sent: Mutex<Vec<(String, String)>>,
    pub refuse: Mutex<Vec<String>>,
    pub down: std::sync::atomic::AtomicBool,
}

impl MemorySms {
    /// Every SMS sent: (number, text).
    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().expect("not poisoned").clone()
    }
}

impl SmsSender for MemorySms {
    async fn send(&self, number: &str, text: &str) -> Result<String, SmsError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SmsError::Unavailable("memory SMS is down".into()));
        }
        if self
            .refuse
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|n| n == number)
        {
            return Err(SmsError::Refused(format!("{number} is not a valid number")));
        }
        let mut sent = self.sent.lock().expect("not poisoned");
        sent.push((number.to_string(), text.to_string()));
        Ok(format!("sms-{}", sent.len()))
    }
}
