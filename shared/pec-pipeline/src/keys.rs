//! Evidence-bucket keys of the pipeline (see ARCHITECTURE.md, "Data").
//!
//! Everything about one submission lives under `msg/<submission id>/`:
//! `unsigned/msg/<id>/<name>.eml` (built by a step) becomes `signed/msg/<id>/<name>.eml`.

/// `accettazione.eml`, `busta-trasporto.eml`, `non-accettazione.eml`.
pub const ACCEPTANCE: &str = "accettazione.eml";
pub const ENVELOPE: &str = "busta-trasporto.eml";
pub const NON_ACCEPTANCE: &str = "non-accettazione.eml";

/// Where the scan step hands clean mail on.
pub const SCAN_CLEAN_PREFIX: &str = "scan/clean/";

/// `unsigned/msg/<id>/<name>`.
pub fn unsigned(id: &str, name: &str) -> String {
    format!("unsigned/msg/{id}/{name}")
}

/// `unsigned/msg/<id>/consegna/<recipient>.eml` or `.../mancata-consegna/<recipient>.eml`.
pub fn unsigned_receipt(id: &str, delivered: bool, recipient: &str) -> String {
    let dir = if delivered {
        "consegna"
    } else {
        "mancata-consegna"
    };
    format!(
        "unsigned/msg/{id}/{dir}/{}.eml",
        recipient.to_ascii_lowercase()
    )
}

/// The submission id of `signed/msg/<id>/...`, `unsigned/msg/<id>/...` or
/// `received/msg/<id>/...` (a receipt another provider sent about our message `<id>`).
pub fn message_of(key: &str) -> Option<&str> {
    let rest = key
        .strip_prefix("signed/msg/")
        .or_else(|| key.strip_prefix("unsigned/msg/"))
        .or_else(|| key.strip_prefix("received/msg/"))?;
    let id = rest.split('/').next()?;
    pec_core::submission::valid_id(id).then_some(id)
}

/// The submission id behind a scan hand-off `scan/clean/submitted/<id>.eml.json`.
pub fn message_of_clean(key: &str) -> Option<&str> {
    let raw = key.strip_prefix(SCAN_CLEAN_PREFIX)?.strip_suffix(".json")?;
    pec_core::submission::id_of_key(raw)
}

/// The submission id behind a scan notice `signed/scan/submitted/<id>.eml/...`.
pub fn message_of_scan_notice(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("signed/scan/")?;
    let raw = rest.split(".eml/").next()?;
    let id = raw.strip_prefix(pec_core::submission::SUBMITTED_PREFIX)?;
    pec_core::submission::valid_id(id).then_some(id)
}

/// A mailbox item id for a signed object: readable and unique per object.
pub fn item_id(evidence_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(evidence_key.as_bytes());
    let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
    hex
}

/// `mailbox/<address>/<item id>.eml` in the mailbox bucket.
pub fn mailbox_object(address: &str, item_id: &str) -> String {
    format!("mailbox/{}/{item_id}.eml", address.to_ascii_lowercase())
}

/// The inbound id of what the receiving point hands the delivery point:
/// `received/in/<id>/busta-trasporto.eml` (another provider's envelope, as received) and
/// `signed/in/<id>/anomalia.eml` (our anomaly envelope). The presa in carico
/// (`signed/in/<id>/presa-in-carico.eml`) goes to its `To` (the sending provider) instead.
pub fn inbound_of(key: &str) -> Option<&str> {
    let (rest, name) = if let Some(r) = key.strip_prefix("received/in/") {
        (r, "busta-trasporto.eml")
    } else if let Some(r) = key.strip_prefix("signed/in/") {
        (r, "anomalia.eml")
    } else {
        return None;
    };
    let (id, file) = rest.split_once('/')?;
    (file == name && pec_core::submission::valid_id(id)).then_some(id)
}
