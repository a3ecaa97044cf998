//! The provider-log record and the integration event of each PEC event (one type for both).
//!
//! Every message the provider emits (receipts, notices, envelopes) passes the delivery point
//! once it is signed. The delivery point describes it with [`PecEvent::from_emitted`] and writes
//! the result twice: to the provider log (DPR 68/2005 art. 11: time, identificativo,
//! Message-ID, sender, recipients certificato/esterno, subject, receipt type, issuer, error) and
//! to the integration event bus (detail-type = [`EventType::detail_type`], detail = the JSON of
//! [`PecEvent`]). The `event_id` is derived from the evidence key, so a duplicate emission
//! yields the same id: the log write is conditional on it and integrators deduplicate on it.
//!
//! The JSON schema (version 1) is documented in ARCHITECTURE.md ("Integration events").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::classify::{Classification, Kind};
use crate::daticert::{Errore, TipoDestinatario};

/// Current event schema version.
pub const EVENT_VERSION: u32 = 1;

/// The integration event source on the bus.
pub const EVENT_SOURCE: &str = "pec.gestore";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventType {
    /// Ricevuta di accettazione emitted.
    MessageAccepted,
    /// Avviso di non accettazione (formal reasons) emitted.
    MessageRejected,
    /// A virus was found: non accettazione per virus, rilevazione virus, or mancata consegna
    /// per virus.
    VirusDetected,
    /// Busta di trasporto emitted.
    EnvelopeDispatched,
    /// Busta di trasporto received from another provider (and verified).
    EnvelopeReceived,
    /// Ricevuta di presa in carico emitted.
    TakenInCharge,
    /// Ricevuta di avvenuta consegna emitted (one recipient).
    MessageDelivered,
    /// Avviso di mancata consegna emitted (one recipient).
    MessageNotDelivered,
    /// Avviso di mancata consegna per superamento dei tempi massimi.
    DeliveryTimeout,
    /// Busta di anomalia emitted.
    AnomalyDelivered,
    /// A mailbox was locked (the spam lockout, or the operator). A provider-log record only,
    /// not an integration event (not in [`EventType::ALL`]): [`PecEvent::mailbox_lock`].
    MailboxLocked,
    /// The operator lifted a lock (a provider-log record only, as [`EventType::MailboxLocked`]).
    MailboxUnlocked,
}

impl EventType {
    /// Every kind, in the order of the PEC flow.
    pub const ALL: [EventType; 10] = [
        EventType::MessageAccepted,
        EventType::MessageRejected,
        EventType::VirusDetected,
        EventType::EnvelopeDispatched,
        EventType::EnvelopeReceived,
        EventType::TakenInCharge,
        EventType::MessageDelivered,
        EventType::MessageNotDelivered,
        EventType::DeliveryTimeout,
        EventType::AnomalyDelivered,
    ];

    /// The EventBridge `DetailType`.
    pub fn detail_type(self) -> &'static str {
        match self {
            EventType::MessageAccepted => "pec.message.accepted",
            EventType::MessageRejected => "pec.message.rejected",
            EventType::VirusDetected => "pec.message.virus-detected",
            EventType::EnvelopeDispatched => "pec.message.envelope-dispatched",
            EventType::EnvelopeReceived => "pec.message.envelope-received",
            EventType::TakenInCharge => "pec.message.taken-in-charge",
            EventType::MessageDelivered => "pec.message.delivered",
            EventType::MessageNotDelivered => "pec.message.not-delivered",
            EventType::DeliveryTimeout => "pec.message.delivery-timeout",
            EventType::AnomalyDelivered => "pec.message.anomaly",
            EventType::MailboxLocked => "pec.mailbox.locked",
            EventType::MailboxUnlocked => "pec.mailbox.unlocked",
        }
    }
}

/// A recipient as certified (certificato: a PEC mailbox; esterno: ordinary mail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// `certificato` or `esterno`.
    pub kind: String,
}

/// One PEC event: a provider-log record and an integration event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PecEvent {
    /// Schema version ([`EVENT_VERSION`]).
    pub version: u32,
    /// Stable id (hex SHA-256 prefix of the evidence key): duplicates share it.
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When the event happened (the daticert time, else when it was observed), UTC.
    pub at: DateTime<Utc>,
    /// The PEC identificativo of the message the event is about.
    pub identificativo: String,
    /// The user's original Message-ID (angle brackets included), if any.
    pub msgid: Option<String>,
    /// The Message-ID of the emitted receipt/notice/envelope.
    pub message_id: Option<String>,
    /// The original sender.
    pub sender: String,
    /// Every recipient of the original, certificato/esterno.
    pub recipients: Vec<Recipient>,
    /// The recipient this event is about (delivery, non-delivery), if one.
    pub recipient: Option<String>,
    pub subject: Option<String>,
    /// The daticert `tipo` (`accettazione`, `avvenuta-consegna`, ...), or `busta-anomalia`.
    pub receipt_type: String,
    /// `completa` / `breve` / `sintetica` for delivery receipts.
    pub receipt_form: Option<String>,
    /// The emitting provider (`gestore-emittente`).
    pub issuer: String,
    /// The daticert `errore` when it is not `nessuno`.
    pub error: Option<String>,
    /// The daticert `errore-esteso`.
    pub error_detail: Option<String>,
    /// Where the signed object is (evidence bucket key).
    pub evidence_key: String,
    /// Addresses the emitted message went to.
    pub delivered_to: Vec<String>,
}

/// Why an emitted object cannot be described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{key}: a provider message of kind {kind} has no readable daticert")]
    NoDaticert { key: String, kind: &'static str },
    #[error("{key}: {kind} is not a message this provider emits")]
    NotEmitted { key: String, kind: &'static str },
}

/// The stable event id of an evidence key.
pub fn event_id(evidence_key: &str) -> String {
    let digest = Sha256::digest(evidence_key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl PecEvent {
    /// Describes a provider message (`c` = its classification: one we emitted, or a receipt
    /// or envelope another provider sent us), stored at `evidence_key`; `observed_at` is used
    /// when the daticert time cannot be read. A received envelope is reported as
    /// [`EventType::EnvelopeReceived`] by the caller.
    pub fn from_emitted(
        c: &Classification<'_>,
        evidence_key: &str,
        observed_at: DateTime<Utc>,
    ) -> Result<Self, EventError> {
        let event_type = match c.kind {
            Kind::Accettazione => EventType::MessageAccepted,
            Kind::NonAccettazione if is_virus(c) => EventType::VirusDetected,
            Kind::NonAccettazione => EventType::MessageRejected,
            Kind::BustaTrasporto => EventType::EnvelopeDispatched,
            Kind::PresaInCarico => EventType::TakenInCharge,
            Kind::AvvenutaConsegna => EventType::MessageDelivered,
            Kind::ErroreConsegna if is_virus(c) => EventType::VirusDetected,
            Kind::ErroreConsegna => EventType::MessageNotDelivered,
            Kind::PreavvisoErroreConsegna => EventType::DeliveryTimeout,
            Kind::RilevazioneVirus => EventType::VirusDetected,
            Kind::BustaAnomalia => EventType::AnomalyDelivered,
            Kind::PecSconosciuto | Kind::Ordinaria => {
                return Err(EventError::NotEmitted {
                    key: evidence_key.to_string(),
                    kind: c.kind.as_str(),
                });
            }
        };
        let delivered_to = c.headers.to.clone();
        let base = PecEvent {
            version: EVENT_VERSION,
            event_id: event_id(evidence_key),
            event_type,
            at: observed_at,
            identificativo: String::new(),
            msgid: None,
            message_id: c.headers.message_id.clone(),
            sender: String::new(),
            recipients: Vec::new(),
            recipient: None,
            subject: c.headers.subject.clone(),
            receipt_type: "busta-anomalia".to_string(),
            receipt_form: None,
            issuer: String::new(),
            error: None,
            error_detail: None,
            evidence_key: evidence_key.to_string(),
            delivered_to,
        };
        let Some(d) = &c.daticert else {
            if c.kind == Kind::BustaAnomalia {
                // An anomaly envelope carries no daticert: the facts are its own headers.
                return Ok(PecEvent {
                    sender: c.headers.from.first().cloned().unwrap_or_default(),
                    recipients: c
                        .headers
                        .to
                        .iter()
                        .map(|a| Recipient {
                            address: a.clone(),
                            kind: TipoDestinatario::Certificato.as_str().to_string(),
                        })
                        .collect(),
                    ..base
                });
            }
            return Err(EventError::NoDaticert {
                key: evidence_key.to_string(),
                kind: c.kind.as_str(),
            });
        };
        let at = crate::time::parse_daticert_time(
            &d.dati.data.giorno,
            &d.dati.data.ora,
            &d.dati.data.zona,
        )
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(observed_at);
        Ok(PecEvent {
            at,
            identificativo: d.dati.identificativo.clone(),
            msgid: d.dati.msgid.clone(),
            sender: d.intestazione.mittente.clone(),
            recipients: d
                .intestazione
                .destinatari
                .iter()
                .map(|r| Recipient {
                    address: r.indirizzo.clone(),
                    kind: r.tipo.as_str().to_string(),
                })
                .collect(),
            recipient: d.dati.consegna.clone(),
            subject: d.intestazione.oggetto.clone().or(base.subject.clone()),
            receipt_type: d.tipo.as_str().to_string(),
            receipt_form: d.dati.ricevuta.as_ref().map(|r| r.as_str().to_string()),
            issuer: d.dati.gestore_emittente.clone(),
            error: (d.errore != Errore::Nessuno).then(|| d.errore.as_str().to_string()),
            error_detail: d.dati.errore_esteso.clone(),
            ..base
        })
    }

    /// The JSON detail.
    /// The provider-log record of a lock placed (`locked`) or lifted on `mailbox`: the lock's
    /// time `since` (with `locked` it is also the record's time), `at` when it happened, the
    /// reason (`spam` or the operator's) in `error` and what caused it in `error_detail`. The
    /// id comes from the mailbox, the lock and the change, so a lock recorded twice (a sweep run
    /// again) is one record.
    pub fn mailbox_lock(
        locked: bool,
        mailbox: &str,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
        reason: &str,
        detail: Option<String>,
        issuer: &str,
    ) -> PecEvent {
        let (event_type, change) = if locked {
            (EventType::MailboxLocked, "blocco-casella")
        } else {
            (EventType::MailboxUnlocked, "sblocco-casella")
        };
        let key = format!(
            "mailbox-lock/{}/{}/{change}",
            mailbox.to_ascii_lowercase(),
            since.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        );
        PecEvent {
            version: EVENT_VERSION,
            event_id: event_id(&key),
            event_type,
            at,
            identificativo: String::new(),
            msgid: None,
            message_id: None,
            sender: mailbox.to_ascii_lowercase(),
            recipients: Vec::new(),
            recipient: None,
            subject: None,
            receipt_type: change.to_string(),
            receipt_form: None,
            issuer: issuer.to_string(),
            error: Some(reason.to_string()),
            error_detail: detail,
            evidence_key: String::new(),
            delivered_to: Vec::new(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn is_virus(c: &Classification<'_>) -> bool {
    c.daticert
        .as_ref()
        .is_some_and(|d| d.errore == Errore::Virus)
}
