//! The 12 h / 24 h timers of relayed messages (a scheduled sweep; the clock is the caller's).
//!
//! Per **certified** recipient at another provider of a message we relayed (esterno recipients
//! start no timer), from the time the envelope was relayed:
//! - no presa in carico and no delivery receipt after 12 h → the first notice (avviso di
//!   mancata consegna per superamento dei tempi massimi, `4.4.1`, a warning);
//! - no delivery receipt after 24 h → the final one (`5.4.1`), and the recipient leaves the
//!   timers.
//!
//! Each notice is emitted once: written with `If-None-Match` under
//! `unsigned/msg/<id>/timeout-12h/<recipient>.eml` (or `timeout-24h`), then marked on the
//! recipient's relay record (a crash in between rebuilds it: the first write wins). A receipt
//! that arrives late is still delivered and logged by the delivery point; a delivery or
//! non-delivery receipt takes the recipient off the timers.

use chrono::{DateTime, Duration, Utc};
use pec_core::build::{self, Ctx};
use pec_core::ids::SeededIds;
use pec_core::policy::TimeoutNotice;
use pec_ports::{ObjectStore, PutOutcome, RelayEvent, RelayRecord, StateStore};

use crate::Settings;
use crate::StepError;
use crate::receipts::certified_of_message;

/// First notice after this long without any receipt.
pub const FIRST_NOTICE_AFTER: Duration = Duration::hours(12);
/// Final notice after this long without a delivery receipt.
pub const FINAL_NOTICE_AFTER: Duration = Duration::hours(24);

/// The timers step.
pub struct Timers<St, Db> {
    pub settings: Settings,
    pub store: St,
    pub state: Db,
}

/// A notice the sweep emitted (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub message: String,
    pub recipient: String,
    pub key: String,
    pub final_notice: bool,
}

impl<St: ObjectStore, Db: StateStore> Timers<St, Db> {
    pub fn new(settings: Settings, store: St, state: Db) -> Self {
        Self {
            settings,
            store,
            state,
        }
    }

    /// One sweep at `now`: every notice due is emitted (once).
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<Emitted>, StepError> {
        let mut out = Vec::new();
        for r in self.state.timers_due(now - FIRST_NOTICE_AFTER).await? {
            let elapsed = now - r.relayed_at;
            if r.delivered_at.is_some() || r.failed_at.is_some() {
                continue;
            }
            if elapsed >= FIRST_NOTICE_AFTER && r.taken_at.is_none() && r.notice12_at.is_none() {
                out.push(self.notice(&r, TimeoutNotice::Hours12, now).await?);
            }
            if elapsed >= FINAL_NOTICE_AFTER && r.notice24_at.is_none() {
                out.push(self.notice(&r, TimeoutNotice::Hours24, now).await?);
            }
        }
        Ok(out)
    }

    async fn notice(
        &self,
        r: &RelayRecord,
        which: TimeoutNotice,
        now: DateTime<Utc>,
    ) -> Result<Emitted, StepError> {
        let s = &self.settings;
        let (certified, _) = certified_of_message(s, &self.store, &self.state, &r.message).await?;
        let (tag, event) = match which {
            TimeoutNotice::Hours12 => (crate::keys::TIMEOUT_12H_TAG, RelayEvent::Notice12),
            TimeoutNotice::Hours24 => (crate::keys::TIMEOUT_24H_TAG, RelayEvent::Notice24),
        };
        let message = {
            let mut ids = SeededIds::new("tm", &format!("{}/{}/{tag}", r.message, r.recipient));
            let mut ctx = Ctx {
                provider: &s.provider,
                now,
                ids: &mut ids,
            };
            build::mancata_consegna_tempo(&mut ctx, &certified, &r.recipient, which)?
        };
        let key = crate::keys::unsigned_for_recipient(&r.message, tag, &r.recipient);
        if self
            .store
            .put_if_absent(&s.evidence_bucket, &key, message.render(), "message/rfc822")
            .await?
            == PutOutcome::AlreadyExists
        {
            tracing::info!(key, "timeout notice already written");
        }
        self.state
            .relay_mark(&r.message, &r.recipient, event, now)
            .await?;
        tracing::info!(key, message = %r.message, recipient = %r.recipient, "timeout notice emitted");
        Ok(Emitted {
            message: r.message.clone(),
            recipient: r.recipient.clone(),
            key,
            final_notice: which == TimeoutNotice::Hours24,
        })
    }
}
