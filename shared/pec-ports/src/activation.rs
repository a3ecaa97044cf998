//! One-time activation links (issue #13): a bulk import gives each new mailbox no password,
//! only a link with a random token sent to its member; the state keeps the token's SHA-256
//! ([`ActivationRecord`]). Using the link sets the password (hashed by the caller) and, for a
//! member-paid mailbox, records that the member accepted the agreement and puts it in service.
//! Here because both the pipeline's import and the API's `POST /v1/activation` need it.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::{Mailbox, MailboxStatus, StateError, StateStore};

/// A mailbox's password hash before activation: not a PHC string, so no password matches it.
pub const NOT_ACTIVATED: &str = "!not-activated";

/// Hex SHA-256 of an activation token (what the state keeps).
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why an activation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("the activation link is unknown, already used or expired: ask for a new one")]
    Invalid,
    #[error("the mailbox {0} is paid by its member: accept the agreement to activate it")]
    AgreementRequired(String),
    #[error("the mailbox {0} no longer exists")]
    NoMailbox(String),
    #[error("the mailbox {0} kept changing; the link was not used, try again")]
    Contended(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Activates a mailbox with its one-time link: sets `password_hash` and, for a member-paid
/// mailbox, takes the member's acceptance of the agreement and puts it in service. The link
/// works once: a second use, or one after it expired, is refused. The address activated.
pub async fn activate<Db: StateStore>(
    state: &Db,
    token: &str,
    password_hash: &str,
    accepts_agreement: bool,
    now: DateTime<Utc>,
) -> Result<String, ActivationError> {
    let link = state
        .take_activation(&token_hash(token), now)
        .await?
        .ok_or(ActivationError::Invalid)?;
    if link.agreement && !accepts_agreement {
        // Not used: the member may come back and accept.
        state.put_activation(&link).await?;
        return Err(ActivationError::AgreementRequired(link.address));
    }
    for _ in 0..5 {
        let current = state
            .mailbox(&link.address)
            .await?
            .filter(|m| m.tenant == link.tenant)
            .ok_or_else(|| ActivationError::NoMailbox(link.address.clone()))?;
        let new = Mailbox {
            password_hash: password_hash.to_string(),
            status: match current.status {
                MailboxStatus::Pending => MailboxStatus::Active,
                other => other,
            },
            ..current.clone()
        };
        if state.replace_mailbox(&current, &new, None).await? {
            return Ok(link.address);
        }
    }
    // Put back: the member's link must not be lost to a race.
    state.put_activation(&link).await?;
    Err(ActivationError::Contended(link.address))
}
