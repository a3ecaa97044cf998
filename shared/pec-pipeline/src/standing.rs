//! Where each recipient of a submitted message stands, from the records the pipeline keeps:
//! the message (accepted, rejected), a virus notice, the outcome at our own mailboxes, the
//! relayed recipient's marks (taken in charge, delivered, failed, the 12 h and 24 h notices).
//! `GET /v1/messages/{id}` and the mass-sending report read it the same way.

use chrono::{DateTime, Utc};
use pec_ports::{DeliveryStatus, MessageRecord, MessageState, ObjectStore, StateStore};

use crate::StepError;

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Not yet past the access point (scan running, or just submitted).
    Pending,
    /// The access point refused the message (avviso di non accettazione).
    Rejected,
    /// A virus was found: not accepted.
    Virus,
    /// Sent on to the recipient's provider; nothing back yet.
    Dispatched,
    /// The recipient's provider took it in charge.
    TakenInCharge,
    /// No delivery receipt after 12 hours (not final).
    Timeout12h,
    /// No delivery receipt after 24 hours (final).
    Timeout24h,
    Delivered,
    NotDelivered,
}

/// One recipient of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStanding {
    /// Lower case.
    pub address: String,
    /// A PEC mailbox (ours or listed in the provider index) rather than an ordinary address.
    pub certified: bool,
    pub standing: Standing,
    /// No later receipt changes it.
    pub is_final: bool,
    /// For `NotDelivered`: `unknown-user`, `mailbox-full`, `mailbox-disabled`, ... or
    /// `reported-by-provider` (the other provider's notice says why).
    pub reason: Option<String>,
    /// When it got there.
    pub at: Option<DateTime<Utc>>,
}

/// Whether the antivirus refused submission `id` (its notices are under the raw key).
pub async fn virus_found<O: ObjectStore>(
    objects: &O,
    evidence_bucket: &str,
    id: &str,
) -> Result<bool, StepError> {
    let prefix = format!(
        "{}scan/{}/",
        crate::keys::SIGNED_PREFIX,
        pec_core::submission::message_key(id)
    );
    Ok(!objects
        .list_keys(evidence_bucket, &prefix)
        .await?
        .is_empty())
}

/// Where `address` stands among the recipients of submission `id`, given its record (`None`:
/// the access point has not seen it) and whether a virus was found.
pub async fn recipient<St: StateStore>(
    state: &St,
    id: &str,
    record: Option<&MessageRecord>,
    virus: bool,
    address: &str,
) -> Result<RecipientStanding, StepError> {
    let address = address.to_ascii_lowercase();
    let certified =
        record.is_some_and(|r| r.certified.iter().any(|a| a.eq_ignore_ascii_case(&address)));
    let mut s = RecipientStanding {
        address,
        certified,
        standing: Standing::Pending,
        is_final: false,
        reason: None,
        at: None,
    };
    match (record, virus) {
        (_, true) => {
            s.standing = Standing::Virus;
            s.is_final = true;
        }
        (Some(r), _) if r.state == MessageState::Rejected => {
            s.standing = Standing::Rejected;
            s.is_final = true;
            s.at = Some(r.updated_at);
        }
        (Some(r), _) if r.state == MessageState::Accepted => {
            if let Some(o) = state.recipient(id, &s.address).await? {
                s.at = Some(o.at);
                s.is_final = true;
                match o.status {
                    DeliveryStatus::Delivered => s.standing = Standing::Delivered,
                    DeliveryStatus::NotDelivered => {
                        s.standing = Standing::NotDelivered;
                        s.reason = o.reason.map(|r| r.as_str().to_string());
                    }
                }
            } else if let Some(rel) = state.relay(id, &s.address).await? {
                let (standing, at, fin) = if let Some(t) = rel.delivered_at {
                    (Standing::Delivered, t, true)
                } else if let Some(t) = rel.failed_at {
                    s.reason = Some("reported-by-provider".into());
                    (Standing::NotDelivered, t, true)
                } else if let Some(t) = rel.notice24_at {
                    (Standing::Timeout24h, t, true)
                } else if let Some(t) = rel.notice12_at {
                    (Standing::Timeout12h, t, false)
                } else if let Some(t) = rel.taken_at {
                    (Standing::TakenInCharge, t, !rel.certified)
                } else {
                    (Standing::Dispatched, rel.relayed_at, false)
                };
                s.standing = standing;
                s.at = Some(at);
                s.is_final = fin;
            }
        }
        _ => {}
    }
    Ok(s)
}
