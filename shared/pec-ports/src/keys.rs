//! Every object key of the provider, in one place (docs/data-model.md, "Objects").
//!
//! **Raw bucket**: `submitted/<id>.eml` + `submitted/<id>.json` (the submission gateway),
//! `inbound/<id>.eml` + `inbound/<id>.json` (SES receiving, the exchange) — the prefixes are
//! defined by the submission model in `pec_core::submission` and re-exported here.
//!
//! **Evidence bucket**: a step builds a provider message under `unsigned/...`; the sign step
//! writes the same name under `signed/...`; what other providers sent us is kept as received
//! under `received/...`. Everything about one of our submissions lives under `msg/<id>/`,
//! everything about one inbound message under `in/<id>/`, the scan step's virus notices under
//! `scan/<raw key>/`. The scan step also writes `scan/verdict/<raw key>.json` and, for a pass,
//! `scan/clean/<raw key>.json`. Configuration lives under `config/`.
//!
//! **Mailbox bucket**: `mailbox/<address>/<item id>.eml`. **Conservation bucket** (Object
//! Lock): `quarantine/<raw key>`.
//!
//! Every `fn` that formats a key has its parser here, and the tests check they round-trip.

use pec_core::classify::Kind;
pub use pec_core::submission::{INBOUND_PREFIX, SUBMITTED_PREFIX};
use pec_core::submission::{id_of_key, valid_id};

/// Provider messages waiting for the sign step.
pub const UNSIGNED_PREFIX: &str = "unsigned/";
/// Provider messages the sign step wrote.
pub const SIGNED_PREFIX: &str = "signed/";
/// Other providers' messages, as received.
pub const RECEIVED_PREFIX: &str = "received/";

/// `accettazione.eml`, `busta-trasporto.eml`, `non-accettazione.eml`.
pub const ACCEPTANCE: &str = "accettazione.eml";
pub const ENVELOPE: &str = "busta-trasporto.eml";
pub const NON_ACCEPTANCE: &str = "non-accettazione.eml";
/// Our presa in carico and anomaly envelope for inbound mail (`in/<id>/`).
pub const TAKEN_IN_CHARGE: &str = "presa-in-carico.eml";
pub const ANOMALY: &str = "anomalia.eml";
/// The anomaly envelope of ordinary mail scored as spam (issue #18): delivered to the
/// recipient's Junk folder, or not at all, by the mailbox's setting.
pub const ANOMALY_SPAM: &str = "anomalia-spam.eml";

/// Scan verdict records (every verdict): `scan/verdict/<raw key>.json`.
pub const VERDICT_PREFIX: &str = "scan/verdict/";
/// Clean hand-off (the ingress step's trigger): `scan/clean/<raw key>.json`.
pub const SCAN_CLEAN_PREFIX: &str = "scan/clean/";
/// Virus notices for the sign step: `unsigned/scan/<raw key>/<notice>.eml`.
pub const NOTICE_PREFIX: &str = "unsigned/scan/";
/// Quarantine copies in the conservation bucket: `quarantine/<raw key>`.
pub const QUARANTINE_PREFIX: &str = "quarantine/";

/// The provider index (IGPEC LDIF), evidence bucket, by default.
pub const DEFAULT_PROVIDER_INDEX_KEY: &str = "config/provider-index.ldif";
/// The trust anchors (PEM) other providers' signatures must chain to, by default.
pub const DEFAULT_TRUST_ANCHORS_KEY: &str = "config/trust-anchors.pem";
/// The tenants' antivirus policies, by default.
pub const DEFAULT_SCAN_POLICY_KEY: &str = "config/antivirus/scan-policy.json";
/// Where ClamAV's definitions are copied from at the scan function's cold start, by default.
pub const DEFAULT_CLAMAV_DEFINITIONS_PREFIX: &str = "config/antivirus/clamav/";

/// `unsigned/msg/<id>/<name>`.
pub fn unsigned(id: &str, name: &str) -> String {
    format!("{UNSIGNED_PREFIX}msg/{id}/{name}")
}

/// `unsigned/msg/<id>/consegna/<recipient>.eml` or `.../mancata-consegna/<recipient>.eml`.
pub fn unsigned_receipt(id: &str, delivered: bool, recipient: &str) -> String {
    let dir = if delivered {
        DELIVERED_TAG
    } else {
        NOT_DELIVERED_TAG
    };
    unsigned_for_recipient(id, dir, recipient)
}

/// `unsigned/msg/<id>/<tag>/<recipient>.eml`: a notice about one recipient (`consegna`,
/// `mancata-consegna`, the timeout notices' tags).
pub fn unsigned_for_recipient(id: &str, tag: &str, recipient: &str) -> String {
    format!(
        "{UNSIGNED_PREFIX}msg/{id}/{tag}/{}.eml",
        recipient.to_ascii_lowercase()
    )
}

/// `unsigned/in/<inbound id>/<name>` (presa in carico, anomaly envelope).
pub fn unsigned_inbound(id: &str, name: &str) -> String {
    format!("{UNSIGNED_PREFIX}in/{id}/{name}")
}

/// `received/in/<inbound id>/busta-trasporto.eml`: another provider's envelope, as received.
pub fn received_envelope(id: &str) -> String {
    format!("{RECEIVED_PREFIX}in/{id}/{ENVELOPE}")
}

/// `received/msg/<our submission id>/<inbound id>.eml`: a receipt another provider sent about
/// our message.
pub fn received_receipt(message: &str, inbound: &str) -> String {
    format!("{RECEIVED_PREFIX}msg/{message}/{inbound}.eml")
}

/// `signed/<rest>` for `unsigned/<rest>` (the sign step's output); `None` for any other key.
pub fn signed_of_unsigned(key: &str) -> Option<String> {
    let rest = key.strip_prefix(UNSIGNED_PREFIX)?;
    (!rest.is_empty()).then(|| format!("{SIGNED_PREFIX}{rest}"))
}

/// The message id the delivery point gives an envelope another provider sent us (inbound
/// `<id>`): `in-<id>`. Its recipient outcomes and the receipts we issue about them are filed
/// under it (`MSG#in-<id>`, `unsigned/msg/in-<id>/...`).
pub fn inbound_message(inbound_id: &str) -> String {
    format!("in-{inbound_id}")
}

/// Whether `id` names a message receipts are issued about: a submission id or an
/// [`inbound_message`] id (which may exceed the 64 characters of an id, by its prefix).
fn receipt_subject(id: &str) -> bool {
    valid_id(id) || id.strip_prefix("in-").is_some_and(valid_id)
}

/// Tags of the notices about one recipient (`unsigned/msg/<id>/<tag>/<recipient>.eml`).
pub const DELIVERED_TAG: &str = "consegna";
pub const NOT_DELIVERED_TAG: &str = "mancata-consegna";
pub const TIMEOUT_12H_TAG: &str = "timeout-12h";
pub const TIMEOUT_24H_TAG: &str = "timeout-24h";

/// Names of the scan step's virus notices (`unsigned/scan/<raw key>/<name>.eml`).
pub const VIRUS_NON_ACCEPTANCE: &str = "non-accettazione-virus";
pub const VIRUS_DETECTED: &str = "rilevazione-virus";
/// Followed by `-<n>`, one per recipient.
pub const VIRUS_NOT_DELIVERED: &str = "mancata-consegna-virus";

/// What an `unsigned/` key says its object is. Each writer owns its keys (and its role may
/// write only those), and each key admits exactly one kind of provider message
/// ([`UnsignedKey::kind`]): the sign step refuses a message of any other kind, so a writer
/// cannot get a receipt signed that it has no business producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsignedKey<'a> {
    /// `unsigned/msg/<id>/{accettazione,busta-trasporto,non-accettazione}.eml` (ingress).
    Submission { id: &'a str, kind: Kind },
    /// `unsigned/msg/<id>/<tag>/<recipient>.eml` (receipts: consegna, mancata-consegna;
    /// timers: timeout-12h, timeout-24h). `<id>` is a submission or, for the receipts we issue
    /// as the recipient's provider, an inbound id.
    Recipient {
        id: &'a str,
        tag: &'a str,
        recipient: &'a str,
        kind: Kind,
    },
    /// `unsigned/in/<id>/{presa-in-carico,anomalia}.eml` (the receiving point).
    Inbound { id: &'a str, kind: Kind },
    /// `unsigned/scan/<raw key>/<notice>.eml` (the scan step's virus notices).
    ScanNotice {
        raw_key: &'a str,
        name: &'a str,
        kind: Kind,
    },
}

impl UnsignedKey<'_> {
    /// The one kind of provider message this key may hold.
    pub fn kind(&self) -> Kind {
        match *self {
            UnsignedKey::Submission { kind, .. }
            | UnsignedKey::Recipient { kind, .. }
            | UnsignedKey::Inbound { kind, .. }
            | UnsignedKey::ScanNotice { kind, .. } => kind,
        }
    }
}

/// Parses an `unsigned/` key; `None` for any key no step of ours writes.
pub fn parse_unsigned(key: &str) -> Option<UnsignedKey<'_>> {
    let rest = key.strip_prefix(UNSIGNED_PREFIX)?;
    if let Some(rest) = rest.strip_prefix("msg/") {
        let (id, rest) = rest.split_once('/')?;
        if !receipt_subject(id) {
            return None;
        }
        if let Some((tag, file)) = rest.split_once('/') {
            let recipient = file.strip_suffix(".eml")?;
            let kind = match tag {
                DELIVERED_TAG => Kind::AvvenutaConsegna,
                NOT_DELIVERED_TAG => Kind::ErroreConsegna,
                TIMEOUT_12H_TAG | TIMEOUT_24H_TAG => Kind::PreavvisoErroreConsegna,
                _ => return None,
            };
            let plausible = recipient.contains('@')
                && !recipient.contains('/')
                && recipient == recipient.to_ascii_lowercase();
            return plausible.then_some(UnsignedKey::Recipient {
                id,
                tag,
                recipient,
                kind,
            });
        }
        if !valid_id(id) {
            return None;
        }
        let kind = match rest {
            ACCEPTANCE => Kind::Accettazione,
            ENVELOPE => Kind::BustaTrasporto,
            NON_ACCEPTANCE => Kind::NonAccettazione,
            _ => return None,
        };
        return Some(UnsignedKey::Submission { id, kind });
    }
    if let Some(rest) = rest.strip_prefix("in/") {
        let (id, name) = rest.split_once('/')?;
        let kind = match name {
            TAKEN_IN_CHARGE => Kind::PresaInCarico,
            ANOMALY | ANOMALY_SPAM => Kind::BustaAnomalia,
            _ => return None,
        };
        return valid_id(id).then_some(UnsignedKey::Inbound { id, kind });
    }
    let rest = rest.strip_prefix("scan/")?;
    let (raw_key, file) = rest.rsplit_once('/')?;
    let name = file.strip_suffix(".eml")?;
    let raw_id = |prefix: &str| {
        raw_key
            .strip_prefix(prefix)
            .map(|r| r.strip_suffix(".eml").unwrap_or(r))
            .is_some_and(valid_id)
    };
    let kind = if name == VIRUS_NON_ACCEPTANCE && raw_id(SUBMITTED_PREFIX) {
        Kind::NonAccettazione
    } else if name == VIRUS_DETECTED && raw_id(INBOUND_PREFIX) {
        Kind::RilevazioneVirus
    } else if name
        .strip_prefix(VIRUS_NOT_DELIVERED)
        .and_then(|n| n.strip_prefix('-'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && raw_id(INBOUND_PREFIX)
    {
        Kind::ErroreConsegna
    } else {
        return None;
    };
    Some(UnsignedKey::ScanNotice {
        raw_key,
        name,
        kind,
    })
}

/// Whether the delivery point handles this evidence key (signed or received messages).
pub fn is_deliverable(key: &str) -> bool {
    key.starts_with(SIGNED_PREFIX) || key.starts_with(RECEIVED_PREFIX)
}

/// The submission id of `signed/msg/<id>/...`, `unsigned/msg/<id>/...` or
/// `received/msg/<id>/...` (a receipt another provider sent about our message `<id>`).
pub fn message_of(key: &str) -> Option<&str> {
    let rest = key
        .strip_prefix("signed/msg/")
        .or_else(|| key.strip_prefix("unsigned/msg/"))
        .or_else(|| key.strip_prefix("received/msg/"))?;
    let id = rest.split('/').next()?;
    valid_id(id).then_some(id)
}

/// `scan/verdict/<raw key>.json`.
pub fn verdict_key(raw_key: &str) -> String {
    format!("{VERDICT_PREFIX}{raw_key}.json")
}

/// `scan/clean/<raw key>.json`.
pub fn clean_key(raw_key: &str) -> String {
    format!("{SCAN_CLEAN_PREFIX}{raw_key}.json")
}

/// `unsigned/scan/<raw key>/<name>.eml`.
pub fn notice_key(raw_key: &str, name: &str) -> String {
    format!("{NOTICE_PREFIX}{raw_key}/{name}.eml")
}

/// `quarantine/<raw key>`.
pub fn quarantine_key(raw_key: &str) -> String {
    format!("{QUARANTINE_PREFIX}{raw_key}")
}

/// The submission id behind a scan hand-off `scan/clean/submitted/<id>.eml.json`.
pub fn message_of_clean(key: &str) -> Option<&str> {
    let raw = key.strip_prefix(SCAN_CLEAN_PREFIX)?.strip_suffix(".json")?;
    id_of_key(raw)
}

/// The inbound id behind a scan hand-off `scan/clean/inbound/<id>[.eml].json`.
pub fn inbound_of_clean(key: &str) -> Option<&str> {
    let raw = key.strip_prefix(SCAN_CLEAN_PREFIX)?.strip_suffix(".json")?;
    let raw = raw.strip_suffix(".eml").unwrap_or(raw);
    let id = raw.strip_prefix(INBOUND_PREFIX)?;
    valid_id(id).then_some(id)
}

/// The submission id behind a scan notice `signed/scan/submitted/<id>.eml/...`.
pub fn message_of_scan_notice(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("signed/scan/")?;
    let raw = rest.split(".eml/").next()?;
    let id = raw.strip_prefix(SUBMITTED_PREFIX)?;
    valid_id(id).then_some(id)
}

/// A mailbox item id for a signed object: readable and unique per object.
pub fn item_id(evidence_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(evidence_key.as_bytes());
    d.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The item id of a message its owner wrote into the mailbox (IMAP APPEND): `a-` and the
/// first 12 bytes of the SHA-256 of its bytes, in hex. Never an [`item_id`] (those have no
/// `-`); the same bytes appended twice share one object.
pub fn appended_item_id(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("a-{hex}")
}

/// `mailbox/<address>/<item id>.eml` in the mailbox bucket.
pub fn mailbox_object(address: &str, item_id: &str) -> String {
    format!("mailbox/{}/{item_id}.eml", address.to_ascii_lowercase())
}

/// The inbound id of what the receiving point hands the delivery point:
/// `received/in/<id>/busta-trasporto.eml` (another provider's envelope, as received) and
/// `signed/in/<id>/anomalia.eml` or `anomalia-spam.eml` (our anomaly envelope). The presa in
/// carico (`signed/in/<id>/presa-in-carico.eml`) goes to its `To` (the sending provider)
/// instead.
pub fn inbound_of(key: &str) -> Option<&str> {
    let (rest, names) = if let Some(r) = key.strip_prefix("received/in/") {
        (r, &[ENVELOPE][..])
    } else if let Some(r) = key.strip_prefix("signed/in/") {
        (r, &[ANOMALY, ANOMALY_SPAM][..])
    } else {
        return None;
    };
    let (id, file) = rest.split_once('/')?;
    (names.contains(&file) && valid_id(id)).then_some(id)
}

/// Whether `key` is the anomaly envelope of ordinary mail scored as spam.
pub fn is_spam_anomaly(key: &str) -> bool {
    inbound_of(key).is_some() && key.ends_with(&format!("/{ANOMALY_SPAM}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "20261123T120000000Z-abc123";

    #[test]
    fn submission_keys_round_trip() {
        for name in [ACCEPTANCE, ENVELOPE, NON_ACCEPTANCE] {
            let k = unsigned(ID, name);
            assert_eq!(message_of(&k), Some(ID));
            let signed = signed_of_unsigned(&k).unwrap();
            assert_eq!(signed, format!("signed/msg/{ID}/{name}"));
            assert_eq!(message_of(&signed), Some(ID));
            assert!(is_deliverable(&signed) && !is_deliverable(&k));
        }
        for delivered in [true, false] {
            let k = unsigned_receipt(ID, delivered, "Anna@PEC.example.test");
            assert!(k.ends_with("/anna@pec.example.test.eml"), "{k}");
            assert_eq!(message_of(&k), Some(ID));
        }
        let r = received_receipt(ID, "in-1");
        assert_eq!(message_of(&r), Some(ID));
        assert!(is_deliverable(&r));
    }

    #[test]
    fn inbound_keys_round_trip() {
        assert_eq!(inbound_of(&received_envelope(ID)), Some(ID));
        let anomaly = signed_of_unsigned(&unsigned_inbound(ID, ANOMALY)).unwrap();
        assert_eq!(inbound_of(&anomaly), Some(ID));
        assert!(!is_spam_anomaly(&anomaly));
        let spam = signed_of_unsigned(&unsigned_inbound(ID, ANOMALY_SPAM)).unwrap();
        assert_eq!(inbound_of(&spam), Some(ID));
        assert!(is_spam_anomaly(&spam));
        assert!(!is_spam_anomaly(&unsigned_inbound(ID, ANOMALY_SPAM)));
        let taken = signed_of_unsigned(&unsigned_inbound(ID, TAKEN_IN_CHARGE)).unwrap();
        assert_eq!(
            inbound_of(&taken),
            None,
            "the presa in carico goes to the sender"
        );
        assert_eq!(inbound_of("received/in/../busta-trasporto.eml"), None);
    }

    #[test]
    fn scan_keys_round_trip() {
        let submitted = format!("{SUBMITTED_PREFIX}{ID}.eml");
        assert_eq!(message_of_clean(&clean_key(&submitted)), Some(ID));
        assert_eq!(inbound_of_clean(&clean_key(&submitted)), None);
        for inbound in [
            format!("{INBOUND_PREFIX}{ID}.eml"),
            format!("{INBOUND_PREFIX}{ID}"),
        ] {
            assert_eq!(inbound_of_clean(&clean_key(&inbound)), Some(ID));
            assert_eq!(message_of_clean(&clean_key(&inbound)), None);
        }
        let notice = notice_key(&submitted, "non-accettazione-virus");
        let signed = signed_of_unsigned(&notice).unwrap();
        assert_eq!(message_of_scan_notice(&signed), Some(ID));
        assert_eq!(
            verdict_key(&submitted),
            format!("scan/verdict/{submitted}.json")
        );
        assert_eq!(
            quarantine_key(&submitted),
            format!("quarantine/{submitted}")
        );
    }

    #[test]
    fn mailbox_keys() {
        let id = item_id("signed/msg/x/accettazione.eml");
        assert_eq!(id.len(), 24);
        assert_eq!(id, item_id("signed/msg/x/accettazione.eml"));
        assert_ne!(id, item_id("signed/msg/y/accettazione.eml"));
        assert_eq!(
            mailbox_object("Mario@PEC.example.test", &id),
            format!("mailbox/mario@pec.example.test/{id}.eml")
        );
    }

    #[test]
    fn every_unsigned_key_a_step_writes_admits_one_kind() {
        let r = "anna@pec.example.test";
        let cases = [
            (unsigned(ID, ACCEPTANCE), Kind::Accettazione),
            (unsigned(ID, ENVELOPE), Kind::BustaTrasporto),
            (unsigned(ID, NON_ACCEPTANCE), Kind::NonAccettazione),
            (unsigned_receipt(ID, true, r), Kind::AvvenutaConsegna),
            (unsigned_receipt(ID, false, r), Kind::ErroreConsegna),
            (
                unsigned_for_recipient(ID, TIMEOUT_12H_TAG, r),
                Kind::PreavvisoErroreConsegna,
            ),
            (
                unsigned_for_recipient(ID, TIMEOUT_24H_TAG, r),
                Kind::PreavvisoErroreConsegna,
            ),
            (unsigned_inbound(ID, TAKEN_IN_CHARGE), Kind::PresaInCarico),
            (unsigned_inbound(ID, ANOMALY), Kind::BustaAnomalia),
            (unsigned_inbound(ID, ANOMALY_SPAM), Kind::BustaAnomalia),
            (
                notice_key(&format!("submitted/{ID}.eml"), VIRUS_NON_ACCEPTANCE),
                Kind::NonAccettazione,
            ),
            (
                notice_key(&format!("inbound/{ID}.eml"), VIRUS_DETECTED),
                Kind::RilevazioneVirus,
            ),
            (
                notice_key(&format!("inbound/{ID}"), "mancata-consegna-virus-2"),
                Kind::ErroreConsegna,
            ),
        ];
        for (key, kind) in cases {
            let parsed = parse_unsigned(&key).unwrap_or_else(|| panic!("{key} not parsed"));
            assert_eq!(parsed.kind(), kind, "{key}");
        }
        // The receipts we issue for another provider's envelope: `in-` + an inbound id of up to
        // 64 characters (SES message ids are long).
        let long = "a".repeat(64);
        let inbound = inbound_message(&long);
        assert!(matches!(
            parse_unsigned(&unsigned_receipt(&inbound, false, r)),
            Some(UnsignedKey::Recipient { id, .. }) if id == inbound
        ));
        assert_eq!(parse_unsigned(&unsigned(&inbound, ACCEPTANCE)), None);
        assert_eq!(
            parse_unsigned(&unsigned_receipt(&format!("in-{long}a"), true, r)),
            None
        );
        match parse_unsigned(&unsigned_receipt(ID, true, r)) {
            Some(UnsignedKey::Recipient { id, recipient, .. }) => {
                assert_eq!((id, recipient), (ID, r))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsigned_keys_no_step_writes_are_refused() {
        for key in [
            "unsigned/a.eml".to_string(),
            "unsigned/2026/a.eml".to_string(),
            format!("unsigned/msg/{ID}/other.eml"),
            format!("unsigned/msg/{ID}/consegna/not-an-address.eml"),
            format!("unsigned/msg/{ID}/consegna/Anna@PEC.example.test.eml"),
            format!("unsigned/msg/{ID}/consegna/a@b/c.eml"),
            format!("unsigned/msg/{ID}/regalo/anna@pec.example.test.eml"),
            format!("unsigned/msg/../{ACCEPTANCE}"),
            format!("unsigned/in/{ID}/{ACCEPTANCE}"),
            // A virus notice's kind must match the point: no acceptance-side notice for
            // inbound mail and no receiving-side notice for a submission.
            notice_key(&format!("inbound/{ID}.eml"), VIRUS_NON_ACCEPTANCE),
            notice_key(&format!("submitted/{ID}.eml"), VIRUS_DETECTED),
            notice_key(&format!("submitted/{ID}.eml"), "accettazione"),
            notice_key(&format!("inbound/{ID}.eml"), "mancata-consegna-virus-"),
            notice_key("elsewhere/x.eml", VIRUS_DETECTED),
        ] {
            assert_eq!(parse_unsigned(&key), None, "{key}");
        }
    }

    #[test]
    fn foreign_keys_are_not_ours() {
        assert_eq!(signed_of_unsigned("signed/msg/x"), None);
        assert_eq!(signed_of_unsigned("unsigned/"), None);
        assert_eq!(message_of("other/msg/x/y"), None);
        assert_eq!(message_of("signed/msg/../y"), None);
    }
}
