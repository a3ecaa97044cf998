//! The integration API's own state: login sessions, tenant API keys, idempotency records.
//!
//! Secrets are never stored: a session token or an API key's secret is kept as its SHA-256
//! (lower-case hex). They are 256-bit random values, so a fast hash is the right one (a slow
//! password hash protects *low*-entropy secrets); whoever reads the table cannot log in.
//!
//! `pec_aws::DynamoAccess` keeps these in the state table (`SESSION#`, `APIKEY#`, `IDEM#`
//! items, docs/data-model.md); [`MemoryAccess`] in memory for unit tests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::StateError;

/// What a session token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    /// A short-lived bearer token for API calls.
    Access,
    /// A longer-lived token that can be exchanged, once, for a new pair.
    Refresh,
}

/// One login session token (stored under its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the token (lower-case hex).
    pub token_hash: String,
    pub kind: SessionKind,
    /// The mailbox that logged in.
    pub address: String,
    pub tenant: String,
    /// The hash of the other token of the pair (logout revokes both).
    pub pair_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Submit messages from the tenant's mailboxes.
    Send,
    /// Read messages, receipts and mailboxes of the tenant.
    Read,
    /// Manage the tenant (API keys, mailboxes).
    Admin,
    /// Manage webhook subscriptions.
    Webhooks,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Send, Scope::Read, Scope::Admin, Scope::Webhooks];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Webhooks => "webhooks",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A tenant's API key (the secret is shown once, at creation; only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public part of the key (`pec_<id>_<secret>`): 16 lower-case hex digits.
    pub id: String,
    pub tenant: String,
    /// A label for people ("ERP production").
    pub name: String,
    pub scopes: Vec<Scope>,
    /// SHA-256 of the secret (lower-case hex).
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    /// Revoked keys are refused; they stay listed.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The last time it authenticated a request (kept to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// A rotated key works until then (the grace its holder asked for); refused from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key authenticates requests at `now`: not revoked, not past its expiry.
    pub fn works_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }
}

/// The first answer given to an idempotency key: a retry with the same key and the same
/// request gets the same submission; with another request, a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Who may reuse it (`tenant/<id>` for a key, `mailbox/<address>` for a user) and the key
    /// they sent.
    pub scope: String,
    pub key: String,
    /// SHA-256 of the request (content type and body).
    pub request_hash: String,
    /// The submission it created.
    pub submission_id: String,
    /// The submission envelope (JSON) to write if the first attempt stopped before it did.
    pub envelope_json: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The API's state port.
pub trait AccessStore: Send + Sync {
    /// Stores a new session token (hashes are unique: an existing one is an error).
    fn put_session(&self, session: &Session)
    -> impl Future<Output = Result<(), StateError>> + Send;
    /// The session of a token hash, if it exists and has not expired at `now`.
    fn session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Session>, StateError>> + Send;
    /// Removes a session token; the removed session, if it existed (and had not expired). Two
    /// concurrent takes of one token: exactly one gets it (a refresh token is single use).
    fn take_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Session>, StateError>> + Send;
    /// Stores a new API key (ids are unique: an existing one is an error).
    fn put_api_key(&self, key: &ApiKey) -> impl Future<Output = Result<(), StateError>> + Send;
    fn api_key(&self, id: &str) -> impl Future<Output = Result<Option<ApiKey>, StateError>> + Send;
    /// The tenant's keys, oldest first.
    fn api_keys(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<ApiKey>, StateError>> + Send;
    /// Records a use of the key.
    fn touch_api_key(
        &self,
        id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Revokes the key (of this tenant); whether it existed.
    fn revoke_api_key(
        &self,
        tenant: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Sets the key (of this tenant) to stop working at `at` (a rotation's grace); `false`,
    /// changing nothing, when it does not exist, is another tenant's, is revoked or already
    /// has an expiry (two rotations of one key: one wins).
    fn expire_api_key(
        &self,
        tenant: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Records `record` unless a live record exists for its scope and key; returns the one in
    /// force (`record` itself when it was recorded now).
    fn claim_idempotency(
        &self,
        record: &IdempotencyRecord,
    ) -> impl Future<Output = Result<IdempotencyRecord, StateError>> + Send;
    /// Counts one request of `caller` in the window starting at `window` (one counter per
    /// caller and window, shared by every API instance); `false`, counting nothing, when
    /// `limit` requests were already counted in it. The counter may be forgotten after
    /// `expires_at`.
    fn count_request(
        &self,
        caller: &str,
        window: DateTime<Utc>,
        limit: u32,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
}

/// SHA-256 of a secret, lower-case hex (what the store keeps).
pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// [`AccessStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryAccess {
    sessions: Mutex<HashMap<String, Session>>,
    keys: Mutex<Vec<ApiKey>>,
    idempotency: Mutex<HashMap<(String, String), IdempotencyRecord>>,
    requests: Mutex<HashMap<(String, DateTime<Utc>), u32>>,
}

impl MemoryAccess {
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn duplicate(what: &str) -> StateError {
    StateError {
        operation: "put",
        table: "memory".into(),
        message: format!("{what} already exists"),
    }
}

impl AccessStore for MemoryAccess {
    async fn put_session(&self, session: &Session) -> Result<(), StateError> {
        let mut s = lock(&self.sessions);
        if s.contains_key(&session.token_hash) {
            return Err(duplicate("session"));
        }
        s.insert(session.token_hash.clone(), session.clone());
        Ok(())
    }

    async fn session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StateError> {
        Ok(lock(&self.sessions)
            .get(token_hash)
            .filter(|s| s.expires_at > now)
            .cloned())
    }

    async fn take_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StateError> {
        Ok(lock(&self.sessions)
            .remove(token_hash)
            .filter(|s| s.expires_at > now))
    }

    async fn put_api_key(&self, key: &ApiKey) -> Result<(), StateError> {
        let mut k = lock(&self.keys);
        if k.iter().any(|x| x.id == key.id) {
            return Err(duplicate("api key"));
        }
        k.push(key.clone());
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StateError> {
        Ok(lock(&self.keys).iter().find(|k| k.id == id).cloned())
    }

    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StateError> {
        let mut v: Vec<ApiKey> = lock(&self.keys)
            .iter()
            .filter(|k| k.tenant == tenant)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn touch_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<(), StateError> {
        if let Some(k) = lock(&self.keys).iter_mut().find(|k| k.id == id) {
            k.last_used_at = Some(at);
        }
        Ok(())
    }

    async fn revoke_api_key(
        &self,
        tenant: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let mut keys = lock(&self.keys);
        match keys.iter_mut().find(|k| k.id == id && k.tenant == tenant) {
            Some(k) => {
                k.revoked_at.get_or_insert(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn expire_api_key(
        &self,
        tenant: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let mut keys = lock(&self.keys);
        match keys.iter_mut().find(|k| k.id == id && k.tenant == tenant) {
            Some(k) if k.revoked_at.is_none() && k.expires_at.is_none() => {
                k.expires_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn claim_idempotency(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<IdempotencyRecord, StateError> {
        let mut m = lock(&self.idempotency);
        let k = (record.scope.clone(), record.key.clone());
        match m.get(&k) {
            Some(existing) if existing.expires_at > record.created_at => Ok(existing.clone()),
            _ => {
                m.insert(k, record.clone());
                Ok(record.clone())
            }
        }
    }

    async fn count_request(
        &self,
        caller: &str,
        window: DateTime<Utc>,
        limit: u32,
        _expires_at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let mut r = lock(&self.requests);
        r.retain(|(_, w), _| *w >= window);
        let n = r.entry((caller.to_string(), window)).or_insert(0);
        if *n >= limit {
            return Ok(false);
        }
        *n += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[tokio::test]
    async fn a_refresh_token_is_taken_once_and_expiry_is_honoured() {
        let m = MemoryAccess::new();
        let s = Session {
            token_hash: secret_hash("tok"),
            kind: SessionKind::Refresh,
            address: "a@b.it".into(),
            tenant: "t".into(),
            pair_hash: secret_hash("other"),
            created_at: t(0),
            expires_at: t(100),
        };
        m.put_session(&s).await.unwrap();
        assert!(m.put_session(&s).await.is_err());
        assert_eq!(
            m.session(&s.token_hash, t(99)).await.unwrap(),
            Some(s.clone())
        );
        assert_eq!(m.session(&s.token_hash, t(100)).await.unwrap(), None);
        assert_eq!(
            m.take_session(&s.token_hash, t(1)).await.unwrap(),
            Some(s.clone())
        );
        assert_eq!(m.take_session(&s.token_hash, t(1)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn idempotency_keeps_the_first_answer_until_it_expires() {
        let m = MemoryAccess::new();
        let r = |id: &str, at: i64| IdempotencyRecord {
            scope: "tenant/t".into(),
            key: "k1".into(),
            request_hash: id.into(),
            submission_id: id.into(),
            envelope_json: String::new(),
            created_at: t(at),
            expires_at: t(at + 10),
        };
        assert_eq!(
            m.claim_idempotency(&r("a", 0)).await.unwrap().submission_id,
            "a"
        );
        assert_eq!(
            m.claim_idempotency(&r("b", 5)).await.unwrap().submission_id,
            "a"
        );
        assert_eq!(
            m.claim_idempotency(&r("c", 10))
                .await
                .unwrap()
                .submission_id,
            "c"
        );
    }

    #[test]
    fn scopes_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(Scope::parse("root"), None);
    }
}
