//! SMS notification of new PEC (issue #18): the sms-notify function.
//!
//! The delivery point puts an [`SmsNotice`] on the SMS queue for every message it files in the
//! INBOX of a mailbox that opted in ([`notice_for`]: a PEC envelope; ordinary mail only when
//! the mailbox asked; never what goes to Junk, never receipts). This step sends them:
//!
//! - **At once** after a quiet spell: one SMS, `PEC per <mailbox> da <sender>: <subject>`
//!   (`pec_core::sms`: one GSM-7 SMS, nothing of the content).
//! - **A burst becomes one digest.** For the window after an SMS (`PEC_SMS_DIGEST_SECONDS`,
//!   10 to 900, default 600) new notices wait in the mailbox's [`SmsWindow`]; each waiting
//!   notice puts a delayed [`SmsRequest::Flush`] on the queue for the window's end, and the
//!   first one due sends one SMS for all of them (`4 nuovi messaggi per … dalle 10:05.
//!   L'ultimo da …`). The others find the window over and do nothing.
//! - **Idempotent.** The window is replaced whole with a condition on the one read ([`decide`]
//!   and [`decide_flush`] are pure): a notice already covered by the last SMS or already
//!   waiting sends nothing (its flush is scheduled again, harmlessly), and of two sweeps of the
//!   same window only the one whose write wins sends. A notice more than [`STALE`] old (a
//!   delivery replayed from a dead-letter queue) is dropped: an SMS about an old message is
//!   noise.
//! - **Faults.** A number the service refuses (invalid, opted out) is logged and never retried;
//!   the window stays claimed, so a burst to a bad number is still one log line per window. A
//!   service that is unavailable: the window is put back as it was and the message fails, so
//!   SQS retries it (then its dead-letter queue and alarm).
//!
//! The number and the opt-in are read when sending: a mailbox that opted out, changed plan
//! (`sms_notification`) or was locked in between gets nothing.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

use pec_ports::sms::{
    NOTIFIED_IDS, SmsError, SmsNotice, SmsRequest, SmsSender, SmsWindow, WINDOW_IDS,
};
use pec_ports::{ConfigError, Env, Mailbox, QueueSender, StateStore};

use crate::StepError;

/// A notice older than this is dropped (see the module docs).
pub const STALE: Duration = Duration::hours(1);

/// The default rate window.
pub const DEFAULT_WINDOW_SECONDS: u32 = 600;

/// The step's configuration.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    /// The SMS queue (this step's flushes go back on it).
    pub queue_url: String,
    /// After an SMS, what arrives within this waits for one digest (10 s to 15 min: SQS's
    /// longest delay).
    pub window: Duration,
}

impl SmsConfig {
    /// `PEC_SMS_QUEUE_URL`, `PEC_SMS_DIGEST_SECONDS` (optional).
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let seconds = match env.optional("PEC_SMS_DIGEST_SECONDS") {
            None => DEFAULT_WINDOW_SECONDS,
            Some(value) => match value.parse::<u32>() {
                Ok(n) if (10..=900).contains(&n) => n,
                _ => {
                    return Err(ConfigError::Malformed {
                        name: "PEC_SMS_DIGEST_SECONDS".into(),
                        value,
                        reason: "seconds, 10 to 900".into(),
                    });
                }
            },
        };
        Ok(SmsConfig {
            queue_url: env.required("PEC_SMS_QUEUE_URL")?,
            window: Duration::seconds(seconds.into()),
        })
    }
}

/// The notice the delivery point sends for a message filed in `mailbox`'s INBOX, if the
/// mailbox wants one: opted in, its plan includes SMS notification, in service, and for
/// ordinary mail only if it asked.
pub fn notice_for(mailbox: &Mailbox, notice: SmsNotice) -> Option<SmsNotice> {
    wanted(mailbox, notice.ordinary).map(|_| notice)
}

/// The SMS settings of `mailbox` if it wants an SMS for this kind of mail now: opted in, its
/// plan includes SMS notification, in service, and for ordinary mail only if it asked.
fn wanted(mailbox: &Mailbox, ordinary: bool) -> Option<&pec_ports::sms::SmsSettings> {
    let settings = mailbox.sms.as_ref()?;
    let wanted = mailbox.plan.entitlements().sms_notification
        && mailbox.in_service()
        && (!ordinary || settings.ordinary);
    wanted.then_some(settings)
}

/// What to do with a notice, given the mailbox's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write `window` (over the one read), then send the notice on its own.
    SendNow(SmsWindow),
    /// Write `window` (over the one read; `None`: nothing to write, the notice already waits),
    /// then schedule the flush of the window opened at `opened` in `flush_in`.
    Wait {
        window: Option<SmsWindow>,
        opened: DateTime<Utc>,
        flush_in: Duration,
    },
    /// The last SMS covered it: nothing.
    Covered,
}

/// The rule for one notice (pure).
pub fn decide(
    current: Option<&SmsWindow>,
    notice: &SmsNotice,
    now: DateTime<Utc>,
    length: Duration,
) -> Decision {
    let w = current.cloned().unwrap_or_default();
    if w.notified.contains_key(&notice.item) {
        return Decision::Covered;
    }
    let Some(opened) = w.last_sent_at else {
        return Decision::SendNow(opened_by(&w, notice, now));
    };
    let flush_in = (opened + length - now).max(Duration::zero());
    if w.pending.contains(&notice.item) {
        return Decision::Wait {
            window: None,
            opened,
            flush_in,
        };
    }
    if flush_in.is_zero() && w.waiting() == 0 {
        return Decision::SendNow(opened_by(&w, notice, now));
    }
    let mut next = w;
    if next.pending.len() < WINDOW_IDS {
        next.pending.insert(notice.item.clone());
    } else {
        next.overflow = next.overflow.saturating_add(1);
    }
    next.pending_since = Some(next.pending_since.map_or(notice.at, |t| t.min(notice.at)));
    if next.latest.as_ref().is_none_or(|l| notice.at >= l.at) {
        next.latest = Some(notice.clone());
    }
    Decision::Wait {
        window: Some(next),
        opened,
        flush_in,
    }
}

/// A new window opened at `now` by the SMS of `notice`.
fn opened_by(w: &SmsWindow, notice: &SmsNotice, now: DateTime<Utc>) -> SmsWindow {
    SmsWindow {
        last_sent_at: Some(now),
        notified: remembered(&w.notified, [notice.item.clone()], now),
        ..Default::default()
    }
}

/// `old` plus `new` (sent at `now`), without what no duplicate can still come for: older than
/// [`STALE`] plus the longest window (such a notice is dropped as stale anyway), and beyond the
/// newest [`NOTIFIED_IDS`].
fn remembered(
    old: &BTreeMap<String, DateTime<Utc>>,
    new: impl IntoIterator<Item = String>,
    now: DateTime<Utc>,
) -> BTreeMap<String, DateTime<Utc>> {
    let horizon = now - STALE - Duration::seconds(900);
    let mut all: Vec<(String, DateTime<Utc>)> = old
        .iter()
        .filter(|(_, at)| **at >= horizon)
        .map(|(k, v)| (k.clone(), *v))
        .chain(new.into_iter().map(|k| (k, now)))
        .collect();
    all.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
    all.truncate(NOTIFIED_IDS);
    all.into_iter().collect()
}

/// What to do with a flush of the window opened at `opened` (a short-lived value: its size
/// does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushDecision {
    /// That window was flushed already, or nothing waits.
    Nothing,
    /// Too early (a flush that came back before its time): again in this long.
    Later(Duration),
    /// Write `window` (over the one read), then send the digest of `count` notices since
    /// `since`, naming `latest`.
    Send {
        window: SmsWindow,
        count: usize,
        since: DateTime<Utc>,
        latest: SmsNotice,
    },
}

/// The rule for one flush (pure).
pub fn decide_flush(
    current: Option<&SmsWindow>,
    opened: DateTime<Utc>,
    now: DateTime<Utc>,
    length: Duration,
) -> FlushDecision {
    let Some(w) = current else {
        return FlushDecision::Nothing;
    };
    let (Some(latest), true) = (w.latest.clone(), w.last_sent_at == Some(opened)) else {
        return FlushDecision::Nothing;
    };
    if w.waiting() == 0 {
        return FlushDecision::Nothing;
    }
    if now < opened + length {
        return FlushDecision::Later(opened + length - now);
    }
    FlushDecision::Send {
        window: SmsWindow {
            last_sent_at: Some(now),
            notified: remembered(&w.notified, w.pending.iter().cloned(), now),
            ..Default::default()
        },
        count: w.waiting(),
        since: w.pending_since.unwrap_or(latest.at),
        latest,
    }
}

/// The sms-notify step.
pub struct SmsNotify<Db, Sm, Q> {
    pub config: SmsConfig,
    pub state: Db,
    pub sms: Sm,
    pub queue: Q,
}

/// How many times a request re-reads a window that changed under it.
const ATTEMPTS: usize = 8;

impl<Db: StateStore, Sm: SmsSender, Q: QueueSender> SmsNotify<Db, Sm, Q> {
    /// One SQS batch (partial batch failures).
    pub async fn handle(&self, event: SqsEvent, now: DateTime<Utc>) -> SqsBatchResponse {
        crate::batch::partial_batch("sms-notify", &event, |record| async move {
            let id = record.message_id.clone().unwrap_or_default();
            let request: SmsRequest = serde_json::from_str(record.body.as_deref().unwrap_or(""))
                .map_err(|e| StepError::BadRequest {
                    message_id: id,
                    reason: format!("not an SMS request: {e}"),
                })?;
            let outcome = self.request(&request, now).await?;
            // The mailbox and the item only: sender and subject stay out of the logs.
            let (mailbox, item) = match &request {
                SmsRequest::Notice(n) => (n.mailbox.as_str(), n.item.as_str()),
                SmsRequest::Flush { mailbox, .. } => (mailbox.as_str(), "(digest)"),
            };
            tracing::info!(mailbox, item, outcome, "sms-notify");
            Ok::<(), StepError>(())
        })
        .await
    }

    /// One request; what happened, in words.
    pub async fn request(
        &self,
        request: &SmsRequest,
        now: DateTime<Utc>,
    ) -> Result<&'static str, StepError> {
        match request {
            SmsRequest::Notice(n) => self.notice(n, now).await,
            SmsRequest::Flush {
                mailbox, window, ..
            } => self.flush(mailbox, *window, now).await,
        }
    }

    /// The mailbox's number, if it still wants SMS of this kind.
    async fn number(&self, mailbox: &str, ordinary: bool) -> Result<Option<String>, StepError> {
        let m = self.state.mailbox(mailbox).await?;
        Ok(m.as_ref()
            .and_then(|m| wanted(m, ordinary))
            .map(|s| s.number.clone()))
    }

    async fn notice(&self, n: &SmsNotice, now: DateTime<Utc>) -> Result<&'static str, StepError> {
        if now - n.at > STALE {
            tracing::warn!(mailbox = %n.mailbox, item = %n.item, at = %n.at, "a notice over an hour old: no SMS");
            return Ok("stale");
        }
        let Some(number) = self.number(&n.mailbox, n.ordinary).await? else {
            return Ok("not wanted");
        };
        for _ in 0..ATTEMPTS {
            let current = self.state.sms_window(&n.mailbox).await?;
            match decide(current.as_ref(), n, now, self.config.window) {
                Decision::Covered => return Ok("already notified"),
                Decision::Wait {
                    window,
                    opened,
                    flush_in,
                } => {
                    if let Some(w) = &window
                        && !self
                            .state
                            .replace_sms_window(&n.mailbox, current.as_ref(), w)
                            .await?
                    {
                        continue;
                    }
                    self.schedule_flush(&n.mailbox, opened, flush_in).await?;
                    return Ok("waiting for the digest");
                }
                Decision::SendNow(w) => {
                    if !self
                        .state
                        .replace_sms_window(&n.mailbox, current.as_ref(), &w)
                        .await?
                    {
                        continue;
                    }
                    let text = text_of(n);
                    let claim = Claim {
                        before: current.as_ref(),
                        claimed: &w,
                        latest: n,
                        now,
                    };
                    return self.send(&n.mailbox, &number, &text, claim).await;
                }
            }
        }
        Err(StepError::Contended(format!(
            "the SMS window of {}",
            n.mailbox
        )))
    }

    async fn flush(
        &self,
        mailbox: &str,
        opened: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<&'static str, StepError> {
        for _ in 0..ATTEMPTS {
            let current = self.state.sms_window(mailbox).await?;
            match decide_flush(current.as_ref(), opened, now, self.config.window) {
                FlushDecision::Nothing => return Ok("nothing to flush"),
                FlushDecision::Later(wait) => {
                    self.schedule_flush(mailbox, opened, wait).await?;
                    return Ok("flush rescheduled");
                }
                FlushDecision::Send {
                    window,
                    count,
                    since,
                    latest,
                } => {
                    if !self
                        .state
                        .replace_sms_window(mailbox, current.as_ref(), &window)
                        .await?
                    {
                        continue;
                    }
                    // Read now: whatever waited is covered, wanted or not.
                    let Some(number) = self.number(mailbox, latest.ordinary).await? else {
                        return Ok("not wanted");
                    };
                    let text = if count == 1 {
                        text_of(&latest)
                    } else {
                        pec_core::sms::digest(
                            mailbox,
                            count,
                            since,
                            &latest.sender,
                            &latest.subject,
                        )
                    };
                    let claim = Claim {
                        before: current.as_ref(),
                        claimed: &window,
                        latest: &latest,
                        now,
                    };
                    return self.send(mailbox, &number, &text, claim).await;
                }
            }
        }
        Err(StepError::Contended(format!("the SMS window of {mailbox}")))
    }

    /// Sends a claimed SMS; on an unavailable service the claim is given back ([`Self::release`])
    /// and the request fails, so SQS retries it.
    async fn send(
        &self,
        mailbox: &str,
        number: &str,
        text: &str,
        claim: Claim<'_>,
    ) -> Result<&'static str, StepError> {
        match self.sms.send(number, text).await {
            Ok(id) => {
                tracing::info!(mailbox, sms_id = %id, "SMS sent");
                Ok("sent")
            }
            Err(SmsError::Refused(reason)) => {
                tracing::error!(
                    mailbox,
                    reason,
                    "the SMS was refused (the number is wrong or opted out): not retried"
                );
                Ok("refused")
            }
            Err(e @ SmsError::Unavailable(_)) => {
                self.release(mailbox, claim).await?;
                Err(e.into())
            }
        }
    }

    /// Gives back a claim whose SMS could not be sent: the window as it was before. If it
    /// changed since (another notice came in between), what the claim covered waits again, in
    /// that window's digest: nothing is lost to an outage.
    async fn release(&self, mailbox: &str, claim: Claim<'_>) -> Result<(), StepError> {
        let back = claim.before.cloned().unwrap_or_default();
        if self
            .state
            .replace_sms_window(mailbox, Some(claim.claimed), &back)
            .await?
        {
            return Ok(());
        }
        let taken: Vec<String> = claim
            .claimed
            .notified
            .keys()
            .filter(|k| !back.notified.contains_key(*k))
            .cloned()
            .collect();
        for _ in 0..ATTEMPTS {
            let Some(current) = self.state.sms_window(mailbox).await? else {
                break;
            };
            let Some(opened) = current.last_sent_at else {
                break;
            };
            let mut next = current.clone();
            for item in &taken {
                next.notified.remove(item);
                if next.pending.len() < WINDOW_IDS {
                    next.pending.insert(item.clone());
                } else {
                    next.overflow = next.overflow.saturating_add(1);
                }
            }
            let at = claim.latest.at;
            next.pending_since = Some(next.pending_since.map_or(at, |t| t.min(at)));
            if next.latest.as_ref().is_none_or(|l| at >= l.at) {
                next.latest = Some(claim.latest.clone());
            }
            if self
                .state
                .replace_sms_window(mailbox, Some(&current), &next)
                .await?
            {
                let wait = (opened + self.config.window - claim.now).max(Duration::zero());
                self.schedule_flush(mailbox, opened, wait).await?;
                return Ok(());
            }
        }
        tracing::error!(
            mailbox,
            "an SMS that could not be sent could not be put back either: it is lost"
        );
        Ok(())
    }

    async fn schedule_flush(
        &self,
        mailbox: &str,
        opened: DateTime<Utc>,
        wait: Duration,
    ) -> Result<(), StepError> {
        let flush = SmsRequest::Flush {
            version: 1,
            mailbox: mailbox.to_string(),
            window: opened,
        };
        // Whole seconds, rounded up (a flush that comes early is put back anyway).
        let seconds = (wait.num_milliseconds().max(0) as u64)
            .div_ceil(1000)
            .min(900) as u32;
        self.queue
            .send_delayed(
                &self.config.queue_url,
                serde_json::to_string(&flush).unwrap_or_default(),
                seconds,
            )
            .await?;
        Ok(())
    }
}

/// A window claimed for one SMS: the window read before, the one written, the notice it names.
#[derive(Clone, Copy)]
struct Claim<'a> {
    before: Option<&'a SmsWindow>,
    claimed: &'a SmsWindow,
    latest: &'a SmsNotice,
    now: DateTime<Utc>,
}

/// The SMS of one notice.
fn text_of(n: &SmsNotice) -> String {
    if n.ordinary {
        pec_core::sms::new_ordinary(&n.mailbox, &n.sender, &n.subject)
    } else {
        pec_core::sms::new_pec(&n.mailbox, &n.sender, &n.subject)
    }
}

#[cfg(test)]
mod tests;
