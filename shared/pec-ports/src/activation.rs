//! One-time activation links (issue #13): a bulk import gives each new mailbox no password,
//! only a link with a random token sent to its member; the state keeps the token's SHA-256
//! ([`ActivationRecord`]). Using the link sets the password (hashed by the caller) and, for a
//! member-paid mailbox, records that the member accepted the agreement and puts it in service.
//! Here because both the pipeline's import and the API's `POST /v1/activation` need it.
//!
//! The spam lockout (issue #18) uses the same links: locking a mailbox replaces its password
//! hash with [`NOT_ACTIVATED`] and sends a **reset** link ([`ActivationRecord::reset_for`]),
//! which sets the new password and lifts that lock in the same conditional write. A locked
//! mailbox takes no other link (an activation link, a reset link of an earlier lock).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::{ActivationRecord, LockNote, Mailbox, MailboxStatus, StateError, StateStore};

/// A mailbox's password hash before activation: not a PHC string, so no password matches it.
pub const NOT_ACTIVATED: &str = "!not-activated";

/// A new one-time secret: 32 bytes of the operating system's random source, base64url without
/// padding (43 characters). The links and tokens of every host come from here.
pub fn random_token() -> Result<String, getrandom::Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

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

/// Takes a link for use: checks it (known, unused, not expired) and, for a member-paid
/// mailbox, that the member accepts the agreement (if not, the link is put back and still
/// works). Cheap: the caller hashes the new password only after this.
pub async fn take<Db: StateStore>(
    state: &Db,
    token: &str,
    accepts_agreement: bool,
    now: DateTime<Utc>,
) -> Result<ActivationRecord, ActivationError> {
    let link = state
        .take_activation(&token_hash(token), now)
        .await?
        .ok_or(ActivationError::Invalid)?;
    if link.agreement && !accepts_agreement {
        state.put_activation(&link).await?;
        return Err(ActivationError::AgreementRequired(link.address));
    }
    Ok(link)
}

/// Completes a taken link: sets `password_hash` and puts a pending (member-paid) mailbox in
/// service, recording when the member accepted the agreement, in one conditional write. Only a
/// mailbox not activated yet: a link cannot reset a password chosen since. On a failure of the
/// store the link is put back, so the member can try again.
pub async fn complete<Db: StateStore>(
    state: &Db,
    link: &ActivationRecord,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<String, ActivationError> {
    let result = set_password(state, link, password_hash, now).await;
    if matches!(
        result,
        Err(ActivationError::State(_) | ActivationError::Contended(_))
    ) {
        state.put_activation(link).await?;
    }
    result
}

async fn set_password<Db: StateStore>(
    state: &Db,
    link: &ActivationRecord,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<String, ActivationError> {
    for _ in 0..5 {
        let current = state
            .mailbox(&link.address)
            .await?
            .filter(|m| m.tenant == link.tenant)
            .ok_or_else(|| ActivationError::NoMailbox(link.address.clone()))?;
        if current.password_hash != NOT_ACTIVATED {
            return Err(ActivationError::Invalid);
        }
        // A locked mailbox takes only the reset link of its own spam lock.
        let unlocks = match current.spam_lock() {
            _ if !current.locked => false,
            Some(note) if link.reset_for == Some(note.since) => true,
            _ => return Err(ActivationError::Invalid),
        };
        let new = Mailbox {
            password_hash: password_hash.to_string(),
            status: match current.status {
                MailboxStatus::Pending => MailboxStatus::Active,
                other => other,
            },
            agreement_accepted_at: if link.agreement {
                Some(now)
            } else {
                current.agreement_accepted_at
            },
            // A reset link lifts the spam lock it was sent for.
            locked: current.locked && !unlocks,
            lock: match &current.lock {
                Some(note) if unlocks => Some(LockNote {
                    unlocked_at: Some(now),
                    ..note.clone()
                }),
                note => note.clone(),
            },
            ..current.clone()
        };
        if state.replace_mailbox(&current, &new, None).await? {
            return Ok(link.address.clone());
        }
    }
    Err(ActivationError::Contended(link.address.clone()))
}

/// [`take`] then [`complete`] with a password hashed beforehand (tests, tools).
pub async fn activate<Db: StateStore>(
    state: &Db,
    token: &str,
    password_hash: &str,
    accepts_agreement: bool,
    now: DateTime<Utc>,
) -> Result<String, ActivationError> {
    let link = take(state, token, accepts_agreement, now).await?;
    complete(state, &link, password_hash, now).await
}
