//! The typed records the state store keeps (wire format: the JSON documents in DynamoDB items,
//! so serde names are part of the contract).

use chrono::{DateTime, Utc};
use pec_core::plan::Plan;
use serde::{Deserialize, Serialize};

/// A state operation failed (network, throttling, a corrupt item...).
#[derive(Debug, thiserror::Error)]
#[error("{operation} on {table}: {message}")]
pub struct StateError {
    pub operation: &'static str,
    pub table: String,
    pub message: String,
}

/// The tenant of the provider's own service mailboxes (`security@<provider domain>`, which
/// sends the monthly password reports): no person logs in to them, and the spam lockout never
/// locks them.
pub const SERVICE_TENANT: &str = "_provider";

/// A tenant (a professional order, a firm) that brings its own domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Who pays for the mailboxes (absent in records written before billing modes: the tenant).
    #[serde(default)]
    pub billing: Billing,
}

/// Who pays for a tenant's mailboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Billing {
    /// The order or firm: its members' mailboxes are active at once.
    #[default]
    Tenant,
    /// Each member, under the tenant's agreement: a mailbox is pending until its member accepts
    /// the agreement (at activation).
    Member,
}

impl Billing {
    pub fn parse(s: &str) -> Option<Billing> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tenant" => Some(Billing::Tenant),
            "member" => Some(Billing::Member),
            _ => None,
        }
    }
}

/// Where a mailbox stands in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailboxStatus {
    /// In service.
    #[default]
    Active,
    /// Created, waiting for its member to accept the agreement (member-paid tenants).
    Pending,
    /// Out of service for a while (spam lock, non-payment): no login, envelopes refused.
    Suspended,
    /// Closed: no login, envelopes refused; its conservation archive stays readable and its
    /// provider-log records stay for 30 months.
    Revoked,
}

impl MailboxStatus {
    pub fn is_active(&self) -> bool {
        *self == MailboxStatus::Active
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MailboxStatus::Active => "active",
            MailboxStatus::Pending => "pending",
            MailboxStatus::Suspended => "suspended",
            MailboxStatus::Revoked => "revoked",
        }
    }
}

/// The last status change of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusNote {
    /// `spam`, `non-payment`, `request`, `other`...
    pub reason: String,
    pub since: DateTime<Utc>,
    /// The status before the change (a resumed mailbox goes back to it).
    pub previous: MailboxStatus,
    /// Set by the provider's operator (a tenant cannot lift it); false for a tenant's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_provider: bool,
}

/// A domain a tenant brought (`DOMAIN#<domain>`), with what its DNS must say and whether the
/// mail service has verified it. Mail is received and routed for it once verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// Lower case, checked by [`pec_core::domain::check`].
    pub domain: String,
    pub tenant: String,
    pub status: DomainStatus,
    /// The records the tenant must publish (MX, SPF, DKIM, DMARC, the identity's TXT).
    #[serde(default)]
    pub dns: Vec<DnsRecord>,
    /// DKIM as the mail service last reported it (`Pending`, `Success`, `Failed`, ...).
    #[serde(default)]
    pub dkim_status: String,
    pub added_at: DateTime<Utc>,
    #[serde(default)]
    pub checked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub verified_at: Option<DateTime<Utc>>,
}

impl DomainRecord {
    /// Whether mail is received and routed for the domain.
    pub fn is_verified(&self) -> bool {
        self.status == DomainStatus::Verified
    }
}

/// Where a domain's verification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainStatus {
    /// Added; its DNS records are not (all) seen yet.
    Pending,
    /// The mail service found the records: the domain receives and sends.
    Verified,
    /// The mail service gave up (records wrong or missing for 72 h): publish them, verify again.
    Failed,
}

impl DomainStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainStatus::Pending => "pending",
            DomainStatus::Verified => "verified",
            DomainStatus::Failed => "failed",
        }
    }
}

/// One DNS record a tenant must publish for its domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// `MX`, `TXT` or `CNAME`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The owner name (fully qualified, no trailing dot).
    pub name: String,
    /// The record data as it goes in the zone (`10 inbound-smtp.eu-west-1.amazonaws.com`,
    /// `"v=spf1 ..."`).
    pub value: String,
    /// What it is for.
    pub purpose: String,
}

/// A member of a tenant as a bulk import recorded it (`MEMBER#<tenant>#<fiscal code>`): the
/// fiscal code is the member's identity within the tenant, so importing the same table again
/// finds every member and creates nothing twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub tenant: String,
    /// Upper case.
    pub fiscal_code: String,
    pub nome: String,
    pub cognome: String,
    /// The contact address the activation link went to.
    pub email: String,
    /// E.164.
    #[serde(default)]
    pub mobile: Option<String>,
    pub plan: Plan,
    /// The mailbox address reserved (then created) for the member.
    pub address: String,
    pub status: MemberStatus,
    pub imported_at: DateTime<Utc>,
    /// Hex SHA-256 of the activation link in force: a new link retires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// How far a member's import got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// The address is reserved; the mailbox or the activation link may not exist yet (an
    /// interrupted import completes it when run again).
    Reserved,
    /// Mailbox created and activation link sent.
    Created,
}

/// A one-time activation link's record (`ACTIVATE#<SHA-256 of the token>`): the token itself
/// is only in the link sent to the member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRecord {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    pub address: String,
    pub tenant: String,
    /// The member must accept the agreement (member-paid tenants).
    pub agreement: bool,
    pub expires_at: DateTime<Utc>,
    /// For a reset link, the time (`LockNote::since`) of the spam lock it was sent for: using
    /// it sets the password and lifts that lock, and only that one (not a later lock, never an
    /// operator's). A locked mailbox takes no other link. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_for: Option<DateTime<Utc>>,
}

/// Where ordinary mail scored as spam goes (its anomaly envelope).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpamFiling {
    /// The Junk folder ("Posta indesiderata").
    #[default]
    Junk,
    /// Not stored (the signed envelope stays in the evidence bucket, as every one does).
    Delete,
}

impl SpamFiling {
    pub fn is_junk(&self) -> bool {
        *self == SpamFiling::Junk
    }

    pub fn parse(s: &str) -> Option<SpamFiling> {
        match s.trim().to_ascii_lowercase().as_str() {
            "junk" => Some(SpamFiling::Junk),
            "delete" => Some(SpamFiling::Delete),
            _ => None,
        }
    }
}

/// Why and since when a mailbox is (or was last) locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockNote {
    /// `spam` (the lockout sweep) or the operator's reason.
    pub reason: String,
    pub since: DateTime<Utc>,
    /// Locked by the provider's operator (`pec mailbox lock`), not by the sweep.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_operator: bool,
    /// The detections in the burst that locked it (the sweep's).
    #[serde(default)]
    pub detections: usize,
    /// When it was unlocked (by its reset link or the operator): the sweep counts only
    /// detections after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlocked_at: Option<DateTime<Utc>>,
}

/// A PEC mailbox of one of our domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// The address, lower-case.
    pub address: String,
    pub tenant: String,
    pub plan: Plan,
    /// Whole GiB bought on top of the plan.
    pub expansions_gb: u32,
    /// Plan inbox plus expansions.
    pub quota_bytes: u64,
    /// Sum of the sizes of the stored items (exact: kept in the same transaction as each
    /// store and delete).
    pub used_bytes: u64,
    /// Argon2id PHC string of the submission password.
    pub password_hash: String,
    /// Locked (e.g. by the spam lockout): cannot submit; delivery refuses envelopes.
    pub locked: bool,
    /// Lifecycle (absent in records written before it, and not written while active, so those
    /// documents read and compare as before: active).
    #[serde(default, skip_serializing_if = "MailboxStatus::is_active")]
    pub status: MailboxStatus,
    /// The member (fiscal code) a bulk import made it for: an interrupted import adopts only its
    /// own member's mailbox. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Why, since when and from what the mailbox is suspended or revoked (set by each status
    /// change; not written when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_note: Option<StatusNote>,
    /// When its member accepted the agreement (a member-paid mailbox's activation), written
    /// with the password in one conditional write. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_accepted_at: Option<DateTime<Utc>>,
    /// Refuses ordinary (non-PEC) mail instead of wrapping it in an anomaly envelope.
    pub refuse_ordinary: bool,
    /// The last lock (spam lockout or operator): why, since when, and when it was lifted.
    /// Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockNote>,
    /// What happens to ordinary mail scored as spam (PEC messages are never filtered). Not
    /// written while the default (Junk).
    #[serde(default, skip_serializing_if = "SpamFiling::is_junk")]
    pub ordinary_spam: SpamFiling,
    /// SMS notification of new PEC (plans that include it): the number and whether ordinary
    /// mail is notified too. Not written when absent (off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<crate::sms::SmsSettings>,
    pub created_at: DateTime<Utc>,
}

impl Mailbox {
    /// Whether the mailbox logs in, submits and receives envelopes: active and not locked.
    pub fn in_service(&self) -> bool {
        !self.locked && self.status == MailboxStatus::Active
    }

    /// Why this mailbox may not log in, as SMTP, IMAP and POP3 tell whoever tries it: what
    /// happened and what to do, in words that give a stranger nothing more than "locked" (a
    /// spam-locked mailbox is told to any password: its own was replaced). `None` while it is
    /// in service.
    pub fn refusal(&self) -> Option<String> {
        if self.in_service() {
            return None;
        }
        let a = &self.address;
        Some(match (self.spam_lock(), &self.lock) {
            // Say what happened and what to do: the reset link went to the member's contact.
            (Some(_), _) => format!(
                "the mailbox {a} is locked to protect it: its password may have been stolen. \
                 Choose a new one with the link sent to your contact address, or ask the \
                 organisation that gave you the mailbox to send a new link"
            ),
            (None, Some(_)) if self.locked => format!(
                "the mailbox {a} is locked by the provider; ask the organisation that gave you \
                 the mailbox"
            ),
            _ => match self.status {
                MailboxStatus::Pending => format!(
                    "the mailbox {a} is not activated yet: open the activation link sent to \
                     your contact address"
                ),
                MailboxStatus::Suspended => format!(
                    "the mailbox {a} is suspended; ask the organisation that gave you the mailbox"
                ),
                MailboxStatus::Revoked => format!("the mailbox {a} is closed"),
                MailboxStatus::Active => format!(
                    "the mailbox {a} is locked; ask the organisation that gave you the mailbox"
                ),
            },
        })
    }

    /// The lock note of a mailbox locked by the spam lockout (not by the operator): a reset
    /// link can lift it.
    pub fn spam_lock(&self) -> Option<&LockNote> {
        self.lock
            .as_ref()
            .filter(|note| self.locked && !note.by_operator)
    }
}

/// One message stored in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxItem {
    /// Unique within the mailbox; derived from what was delivered, so a duplicate finds it.
    pub id: String,
    /// Where the bytes are (mailbox bucket).
    pub object_key: String,
    /// Size in bytes (counts towards the quota).
    pub size: u64,
    /// What it is (`busta-trasporto`, `accettazione`, `avvenuta-consegna`, ...).
    pub kind: String,
    pub subject: String,
    pub from: String,
    /// The identificativo of the message it concerns, when known.
    pub identificativo: String,
    /// The evidence key of the signed object.
    pub evidence_key: String,
    pub stored_at: DateTime<Utc>,
    /// The folder it is filed in at delivery (`None`: INBOX; `Junk` for ordinary mail scored
    /// as spam). Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

/// A submitted message as the access point recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The submission id.
    pub id: String,
    pub identificativo: String,
    /// Message-ID given to a message submitted without one.
    pub fallback_msgid: String,
    pub tenant: String,
    /// Authenticated mailbox.
    pub user: String,
    /// Raw-bucket key of the submitted bytes.
    pub raw_key: String,
    pub received_at: DateTime<Utc>,
    pub state: MessageState,
    pub subject: String,
    pub sender: String,
    /// SMTP `MAIL FROM` (records written before it was kept read as empty).
    #[serde(default)]
    pub reverse_path: String,
    /// SMTP recipients.
    pub recipients: Vec<String>,
    /// Recipients that are PEC mailboxes (ours or listed in the provider index).
    pub certified: Vec<String>,
    /// When the state last changed.
    pub updated_at: DateTime<Utc>,
    /// SHA-256 (lower-case hex) of the submitted bytes the formal checks judged: every later
    /// read of `raw_key` (acceptance, envelope, receipts, timeout notices) must find the same
    /// bytes. Empty in records written before it was kept.
    #[serde(default)]
    pub raw_sha256: String,
    /// The sender's folder for the receipts and notices about this message (a mass-sending
    /// job's folder, from the submission envelope); `None`: INBOX.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts_folder: Option<String>,
}

/// The delivery point's decision for one recipient of one message (recorded once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientOutcome {
    pub recipient: String,
    pub status: DeliveryStatus,
    /// Why, for [`DeliveryStatus::NotDelivered`].
    pub reason: Option<NotDelivered>,
    pub at: DateTime<Utc>,
    /// The mailbox item (for `delivered`).
    pub item_id: Option<String>,
    /// What the receiving side said, for a recipient at another provider refused over SMTP:
    /// `<x.y.z> <remote text>`, cleaned (`pec_core::policy::clean_text`), at most 200 chars.
    /// Absent in records written before it existed, and for every other outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Inbound mail as the receiving point recorded it (one per `inbound/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundRecord {
    /// The inbound id (`inbound/<id>.eml`).
    pub id: String,
    pub received_at: DateTime<Utc>,
    /// SMTP source (Return-Path).
    pub source: String,
    /// The recipients in our domains.
    pub recipients: Vec<String>,
    /// What the receiving point decided.
    pub decision: InboundDecision,
    /// The classifier's kind (`busta-trasporto`, `ordinaria`, ...).
    pub kind: String,
    /// Why, for anomalies and refusals (the verification verdict and reason).
    pub reason: Option<String>,
    /// A security failure (bad signature, signer not listed...): `X-VerificaSicurezza: errore`.
    pub security_error: bool,
    /// The PEC identificativo (daticert), when there is one.
    pub identificativo: Option<String>,
    /// The sending provider's `mailReceipt` (provider index), for envelopes.
    pub sender_receipt_address: Option<String>,
    /// The sending provider's name (provider index).
    pub sender_provider: Option<String>,
    /// The door it came in by (SES receiving or our MX): which unsigned fields are ours.
    #[serde(default)]
    pub via: pec_core::submission::InboundVia,
}

/// A recipient of one of our messages that lives at another provider (or is ordinary mail):
/// what came back, and the timers (12 h / 24 h) that apply to certified ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRecord {
    /// Submission id.
    pub message: String,
    pub recipient: String,
    /// A PEC mailbox (certificato): the timers apply. Ordinary (esterno): none.
    pub certified: bool,
    pub relayed_at: DateTime<Utc>,
    pub taken_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub notice12_at: Option<DateTime<Utc>>,
    pub notice24_at: Option<DateTime<Utc>>,
}

/// What happened to a relayed recipient (each recorded once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEvent {
    /// Presa in carico received.
    TakenInCharge,
    /// Avvenuta consegna received.
    Delivered,
    /// Mancata consegna received.
    Failed,
    /// Our 12 h notice emitted.
    Notice12,
    /// Our 24 h notice emitted.
    Notice24,
}

impl RelayEvent {
    /// The record field (and DynamoDB attribute) the event sets.
    pub fn attribute(self) -> &'static str {
        match self {
            RelayEvent::TakenInCharge => "taken_at",
            RelayEvent::Delivered => "delivered_at",
            RelayEvent::Failed => "failed_at",
            RelayEvent::Notice12 => "notice12_at",
            RelayEvent::Notice24 => "notice24_at",
        }
    }

    /// After this, no timer applies any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RelayEvent::Delivered | RelayEvent::Failed | RelayEvent::Notice24
        )
    }
}

/// What [`StateStore::store_in_mailbox`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxWrite {
    /// Stored now (and the recipient outcome, if given, recorded).
    Stored,
    /// The item was already there (a duplicate): nothing changed.
    Duplicate,
    /// The recipient outcome was already decided: nothing changed; this is the one in force.
    Decided(RecipientOutcome),
    /// No such mailbox.
    NoMailbox,
    /// The item does not fit (only when the quota is enforced).
    Full { used: u64, quota: u64 },
}

/// Where a submitted message stands at the access point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MessageState {
    /// The formal checks passed and the scan was requested (a virus leaves it here: the scan
    /// step's verdict record and its notice say so).
    Scanning,
    /// Refused by the formal checks (avviso di non accettazione).
    Rejected,
    /// Clean scan: acceptance receipt and transport envelope issued.
    Accepted,
}

/// The delivery point's decision for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryStatus {
    Delivered,
    NotDelivered,
}

/// Why a recipient was not delivered (the non-delivery notice's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotDelivered {
    /// No such mailbox.
    UnknownUser,
    /// The envelope does not fit in the mailbox.
    MailboxFull,
    /// The mailbox is locked or suspended.
    MailboxDisabled,
    /// The recipient's domain does not exist or takes no mail (NXDOMAIN, null MX, `5.1.2`
    /// from the MX): a recipient at another provider.
    UnknownDomain,
    /// Refused for good by the receiving MX for another reason (its reply in
    /// [`RecipientOutcome::detail`]).
    Refused,
}

/// What the receiving point decided about inbound mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InboundDecision {
    /// A verified transport envelope of another provider.
    Envelope,
    /// A verified receipt or notice about one of our messages.
    Receipt,
    /// Ordinary mail, or a PEC object that failed verification: an anomaly envelope.
    Anomaly,
    /// Ordinary mail for a mailbox that refuses it.
    Refused,
    /// No recipient in our domains.
    NotOurs,
}

macro_rules! wire_names {
    ($($t:ty { $($v:ident = $s:literal),+ $(,)? })+) => {$(
        impl $t {
            /// The wire name (JSON, DynamoDB, logs).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

wire_names! {
    MessageState { Scanning = "scanning", Rejected = "rejected", Accepted = "accepted" }
    DeliveryStatus { Delivered = "delivered", NotDelivered = "not-delivered" }
    NotDelivered { UnknownUser = "unknown-user", MailboxFull = "mailbox-full", MailboxDisabled = "mailbox-disabled", UnknownDomain = "unknown-domain", Refused = "refused" }
    InboundDecision { Envelope = "envelope", Receipt = "receipt", Anomaly = "anomaly", Refused = "refused", NotOurs = "not-ours" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde names are the wire format (DynamoDB documents): they equal `as_str`.
    #[test]
    fn wire_names_are_the_serde_names() {
        fn check<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(
            v: T,
            name: &str,
        ) {
            assert_eq!(serde_json::to_value(&v).unwrap(), name);
            assert_eq!(serde_json::from_value::<T>(name.into()).unwrap(), v);
        }
        use InboundDecision as I;
        use MessageState as M;
        for v in [M::Scanning, M::Rejected, M::Accepted] {
            check(v, v.as_str());
        }
        for v in [DeliveryStatus::Delivered, DeliveryStatus::NotDelivered] {
            check(v, v.as_str());
        }
        use NotDelivered as N;
        for v in [
            N::UnknownUser,
            N::MailboxFull,
            N::MailboxDisabled,
            N::UnknownDomain,
            N::Refused,
        ] {
            check(v, v.as_str());
        }
        for v in [I::Envelope, I::Receipt, I::Anomaly, I::Refused, I::NotOurs] {
            check(v, v.as_str());
        }
        assert_eq!(DeliveryStatus::NotDelivered.to_string(), "not-delivered");
    }

    /// `detail` is new: stored outcomes without it read back, and outcomes without it are
    /// written as before.
    #[test]
    fn recipient_outcomes_without_detail_read_and_write_as_before() {
        let stored = r#"{"recipient":"a@b.test","status":"not-delivered","reason":"unknown-user","at":"2026-11-23T09:30:05Z","item_id":null}"#;
        let o: RecipientOutcome = serde_json::from_str(stored).unwrap();
        assert_eq!(o.detail, None);
        assert_eq!(serde_json::to_string(&o).unwrap(), stored);
        let refused = RecipientOutcome {
            reason: Some(NotDelivered::Refused),
            detail: Some("5.7.1 no".into()),
            ..o
        };
        let back: RecipientOutcome =
            serde_json::from_str(&serde_json::to_string(&refused).unwrap()).unwrap();
        assert_eq!(back, refused);
    }
}
