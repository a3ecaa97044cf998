//! Mailbox credentials: the lookup trait and Argon2id password hashes (PHC strings).

use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

use crate::BoxFuture;

/// A mailbox that may log in.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The mailbox address; it is also the login name and becomes [`crate::Submission::user`].
    pub address: String,
    /// The tenant that owns the mailbox.
    pub tenant: String,
    /// Argon2 PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), from [`hash_password`].
    pub password_hash: String,
    /// A locked (or suspended, pending, revoked) mailbox cannot log in.
    pub locked: bool,
    /// What a locked mailbox's user is told instead of the generic failure ([`refusal_for`]).
    pub refusal: Option<Refusal>,
}

/// Why a locked mailbox may not log in: what happened and what to do (one line of ASCII).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What happened and what to do.
    pub text: String,
    /// Said to whoever tries the mailbox, not only to a right password: its hash matches no
    /// password (a spam lock replaced it, or the mailbox was never activated), so its owner
    /// could not be told otherwise. A suspended or revoked mailbox's reason is told only to
    /// its right password.
    pub to_anyone: bool,
}

/// What to tell instead of the generic failure, for `account` when the password `matched`:
/// the refusal of a locked mailbox, if the rules of [`Refusal::to_anyone`] allow it, as one
/// protocol line (printable ASCII, at most 400 characters). Every login path (SMTP, IMAP,
/// POP3) asks this; the failure still counts for the throttle.
pub fn refusal_for(account: &Account, matched: bool) -> Option<String> {
    let r = account.refusal.as_ref()?;
    let told = account.locked && (matched || r.to_anyone);
    told.then(|| {
        r.text
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(400)
            .collect()
    })
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("address", &self.address)
            .field("tenant", &self.tenant)
            .field("password_hash", &"<redacted>")
            .field("locked", &self.locked)
            .field("refusal", &self.refusal)
            .finish()
    }
}

/// The credential store could not answer (the client gets `454 4.7.0` and may retry).
#[derive(Debug, thiserror::Error)]
#[error("credential lookup failed: {0}")]
pub struct CredentialError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl CredentialError {
    /// Wraps any error or message.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(e.into())
    }
}

/// Where accounts come from (the state table in production, a map in tests).
pub trait Credentials: Send + Sync {
    /// The account whose login name is `username` (exactly as the client sent it: any case
    /// folding is the implementation's choice), or `None` if there is none.
    fn lookup<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<Account>, CredentialError>>;
}

/// Argon2id cost of a new hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashCost {
    /// The argon2 crate's defaults, OWASP's recommendation: m = 19 MiB, t = 2, p = 1. Tens of
    /// milliseconds in a release build; use it for real mailboxes.
    #[default]
    Production,
    /// m = 64 KiB, t = 1, p = 1: about a millisecond even unoptimised. **Tests and local demos
    /// only**: it offers little resistance to offline guessing.
    Fast,
}

impl HashCost {
    fn params(self) -> Params {
        match self {
            HashCost::Production => Params::default(),
            // Params::new only fails below the documented minimums, which these are not.
            HashCost::Fast => Params::new(64, 1, 1, None).unwrap_or_default(),
        }
    }
}

/// A password could not be hashed (random source or parameter failure).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct PasswordError(String);

/// Argon2id hash of `password` with a random salt and [`HashCost::Production`], as a PHC string
/// for [`Account::password_hash`]. CPU-heavy: call it from a blocking context.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    hash_password_with(password, HashCost::Production)
}

/// [`hash_password`] with a chosen cost ([`HashCost::Fast`] in tests).
pub fn hash_password_with(password: &str, cost: HashCost) -> Result<String, PasswordError> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, cost.params())
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError(e.to_string()))
}

/// Outcome of checking a password against a stored hash ([`check_password`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The password is the one hashed.
    Match,
    /// It is not.
    Mismatch,
    /// The stored string is not a usable Argon2 PHC string.
    BadHash(String),
}

/// Checks `password` against a PHC string (blocking; the parameters come from the string).
/// Every login path (SMTP here, IMAP in `pec-imap`) checks passwords with it. A stored value
/// that starts with `!` is a disabled password, as in `/etc/shadow` (`!not-activated`: a
/// mailbox not activated yet, or whose password the spam lockout replaced): no password
/// matches it, and it is not an unusable hash (which would be a temporary failure).
pub fn check_password(password: &[u8], phc: &str) -> Check {
    if phc.starts_with('!') {
        return Check::Mismatch;
    }
    let parsed = match PasswordHash::new(phc) {
        Ok(p) => p,
        Err(e) => return Check::BadHash(e.to_string()),
    };
    match Argon2::default().verify_password(password, &parsed) {
        Ok(()) => Check::Match,
        Err(argon2::password_hash::Error::PasswordInvalid) => Check::Mismatch,
        Err(e) => Check::BadHash(e.to_string()),
    }
}

/// A hash of a random password, checked for unknown users so that they cost the same time as
/// known ones (no user enumeration by timing). Made once per cost, lazily (blocking).
pub fn dummy_hash(cost: HashCost) -> &'static str {
    static PRODUCTION: OnceLock<String> = OnceLock::new();
    static FAST: OnceLock<String> = OnceLock::new();
    let cell = match cost {
        HashCost::Production => &PRODUCTION,
        HashCost::Fast => &FAST,
    };
    cell.get_or_init(|| {
        let mut secret = [0u8; 16];
        // Without randomness the dummy password is fixed; it still matches no real login.
        let _ = getrandom::fill(&mut secret);
        let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        hash_password_with(&password, cost).unwrap_or_else(|_| {
            // Fallback with a fixed salt: same cost, never fails.
            let salt = [0x5a; 16];
            Argon2::new(Algorithm::Argon2id, Version::V0x13, cost.params())
                .hash_password_with_salt(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_check() {
        let h = hash_password_with("s3cret!", HashCost::Fast).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert_eq!(check_password(b"s3cret!", &h), Check::Match);
        assert_eq!(check_password(b"s3cret?", &h), Check::Mismatch);
        assert!(matches!(
            check_password(b"x", "not a hash"),
            Check::BadHash(_)
        ));
        assert_eq!(check_password(b"x", "!not-activated"), Check::Mismatch);
        assert_eq!(check_password(b"", "!"), Check::Mismatch);
        let h2 = hash_password_with("s3cret!", HashCost::Fast).unwrap();
        assert_ne!(h, h2, "salts are random");
        assert!(dummy_hash(HashCost::Fast).starts_with("$argon2id$"));
        assert_eq!(
            check_password(b"", dummy_hash(HashCost::Fast)),
            Check::Mismatch
        );
    }

    #[test]
    fn production_params_are_owasp() {
        let p = HashCost::Production.params();
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (19 * 1024, 2, 1));
    }
}
