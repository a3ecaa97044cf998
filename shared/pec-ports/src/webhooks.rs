//! Webhooks: a tenant's subscriptions, the deliveries made for them, how a delivery is signed
//! (the Standard Webhooks convention) and when it is retried.
//!
//! Every integration event (`pec_core::events::PecEvent`) is offered to the subscriptions of
//! the tenants it concerns (the tenants of its sender and recipients that are our mailboxes).
//! One event and one subscription make one [`Delivery`], whose id is derived from both
//! ([`delivery_id`]): a duplicate event finds it and sends nothing again. A delivery is tried
//! on the [`BACKOFF`] schedule (over 24 hours), then parked; a parked delivery can be replayed.
//!
//! `pec_aws` keeps these in the state table (`WHSUB#`, `WHDLV#` items, docs/data-model.md) and
//! posts over HTTPS; [`MemoryWebhooks`] and [`MemoryHooks`] are the unit tests' fakes.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::StateError;

/// A tenant's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// `wh_<16 hex>`.
    pub id: String,
    pub tenant: String,
    /// Where deliveries are posted (`https://…`; `http://` only where private targets are
    /// allowed, i.e. locally).
    pub url: String,
    /// Event types (`pec.message.delivered`, ...) or `*` for all.
    pub events: Vec<String>,
    /// The signing secret, `whsec_<base64>` (shown to the tenant at creation).
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

impl Subscription {
    /// Whether it wants events of `detail_type`.
    pub fn wants(&self, detail_type: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == detail_type)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryStatus {
    /// Not delivered yet; another attempt is scheduled (or running).
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt of the schedule failed: kept for replay.
    Parked,
    /// The subscription was deleted before the delivery succeeded: no further attempts.
    Cancelled,
}

impl DeliveryStatus {
    /// The stored and published form.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Parked => "parked",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    /// The status whose [`DeliveryStatus::as_str`] is `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Delivered,
            Self::Parked,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// One attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The HTTP status, when the endpoint answered.
    pub status: Option<u16>,
    /// Why it failed (connection, TLS, timeout, refused address...).
    pub error: Option<String>,
    /// Milliseconds until the answer.
    pub duration_ms: u64,
}

/// One event for one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// [`delivery_id`]: the `webhook-id` header, the same on every attempt.
    pub id: String,
    pub subscription: String,
    pub tenant: String,
    pub event_id: String,
    pub event_type: String,
    /// The JSON body posted (the same bytes on every attempt).
    pub payload: String,
    pub status: DeliveryStatus,
    /// Attempts started (the number of the one running, while one runs).
    pub attempts: u32,
    /// Outcomes, oldest first.
    pub log: Vec<Attempt>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When the running attempt started (a crash leaves it set; see [`WebhookStore::start_attempt`]).
    pub started_at: Option<DateTime<Utc>>,
}

/// Delays before attempts 2, 3, ...: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (the first is
/// immediate): the last attempt comes 27 h 35 min after the first.
pub const BACKOFF: [i64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

/// The delay before attempt `next` (2-based) on [`BACKOFF`], `None` when the schedule is over.
pub fn backoff(next: u32) -> Option<Duration> {
    backoff_in(&BACKOFF, next)
}

/// The delay before attempt `next` (2-based) on `schedule` (seconds between attempts).
pub fn backoff_in(schedule: &[i64], next: u32) -> Option<Duration> {
    let i = usize::try_from(next.checked_sub(2)?).ok()?;
    schedule.get(i).map(|s| Duration::seconds(*s))
}

/// A retry schedule from its configuration form, seconds separated by commas
/// (`5,300,1800,...`): 1 to 20 delays, each from 1 second to 24 hours.
pub fn parse_schedule(text: &str) -> Result<Vec<i64>, String> {
    let delays: Vec<i64> = text
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .ok_or_else(|| format!("{d:?} is not a delay of 1 to 86400 seconds"))
        })
        .collect::<Result<_, _>>()?;
    if delays.len() > 20 {
        return Err(format!("{} retries: at most 20", delays.len()));
    }
    Ok(delays)
}

/// An attempt request on the webhook queue: the webhooks step enqueues one for each retry,
/// the API for a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRequest {
    pub delivery: String,
    /// 1-based.
    pub attempt: u32,
    pub not_before: DateTime<Utc>,
}

/// The queue message form of [`AttemptRequest`]: `{"webhook_attempt": {...}}`.
pub fn attempt_message(r: &AttemptRequest) -> String {
    serde_json::json!({ "webhook_attempt": r }).to_string()
}

/// An attempt that started this long ago without an outcome is taken as crashed. Longer than
/// the webhooks function may run (template.yaml: `Timeout` 60 s), shorter than the webhook
/// queue's visibility timeout (360 s), so a redelivered request finds the attempt either
/// finished or stale, never still running.
pub const STALE_ATTEMPT: i64 = 300;

/// What [`WebhookStore::start_attempt`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The attempt is this runner's: the delivery with `attempts = n` and `started_at = now`.
    Started(Box<Delivery>),
    /// Attempt `n` was started by another runner, has no outcome yet and is not stale: the
    /// request must come back later (it fails, and the queue redelivers it), or a crashed
    /// attempt would never be retried.
    Running,
    /// Nothing to do: attempt `n` has an outcome or was overtaken, the delivery is not pending
    /// or does not exist.
    Done,
}

/// The delivery id of `event_id` for `subscription`: `msg_<32 hex>`.
pub fn delivery_id(event_id: &str, subscription: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{event_id}\n{subscription}").as_bytes());
    let hex: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The Standard Webhooks signature header value: `v1,<base64 HMAC-SHA256>` of
/// `<id>.<timestamp>.<body>` under the secret (the base64 after `whsec_`). `None` for a secret
/// that is not `whsec_<base64>`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    use base64::Engine;
    use hmac::Mac;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!("v1,{}", engine.encode(mac.finalize().into_bytes())))
}

/// Whether `url` may be subscribed: `https://` (or `http://` where private targets are
/// allowed), with a host; literal internal addresses and `localhost` are refused at once (names
/// are checked again, resolved, at every connection: `pec_aws::webhooks`).
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("the URL is longer than 2048 characters".into());
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_private => {}
        _ => return Err("the URL must be https://".into()),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or("the URL has no host")?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("the URL must not carry credentials".into());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>()
        && !allow_private
        && is_internal(ip)
    {
        return Err(format!("{ip} is an internal address"));
    }
    let lower = host.to_ascii_lowercase();
    if !allow_private && (lower == "localhost" || lower.ends_with(".localhost")) {
        return Err("localhost is not reachable from here".into());
    }
    Ok(())
}

pub use crate::net::is_internal;

/// The webhook state port.
pub trait WebhookStore: Send + Sync {
    /// Stores a new subscription (ids are unique).
    fn put_subscription(
        &self,
        s: &Subscription,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// The tenant's subscriptions, oldest first.
    fn subscriptions(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<Subscription>, StateError>> + Send;
    fn subscription(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Subscription>, StateError>> + Send;
    /// Deletes the tenant's subscription; whether it existed.
    fn delete_subscription(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Records `d` unless a delivery with its id exists; the one in force.
    fn create_delivery(
        &self,
        d: &Delivery,
    ) -> impl Future<Output = Result<Delivery, StateError>> + Send;
    fn delivery(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Delivery>, StateError>> + Send;
    /// Starts attempt `n` (1-based) of a pending delivery: only if `n - 1` attempts were
    /// started, or attempt `n` started before `stale` without an outcome (its runner crashed).
    fn start_attempt(
        &self,
        id: &str,
        n: u32,
        now: DateTime<Utc>,
        stale: DateTime<Utc>,
    ) -> impl Future<Output = Result<Start, StateError>> + Send;
    /// Records the outcome of attempt `n`, started at `started`, and the new status: only if
    /// that attempt is still the running one (a runner taken for crashed that finishes late
    /// must not overwrite its successor). Whether it was recorded.
    fn finish_attempt(
        &self,
        id: &str,
        n: u32,
        started: DateTime<Utc>,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// A parked delivery made pending again with a new round of attempts (attempts back to 0);
    /// `None` unless it was parked.
    fn replay(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Delivery>, StateError>> + Send;
    /// The subscription's deliveries, newest first, at most `limit`.
    fn deliveries(
        &self,
        subscription: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StateError>> + Send;
}

/// One POST to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub url: String,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`, `content-type`, `user-agent`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Posting a delivery: the HTTP status, or why there was none.
pub trait WebhookClient: Send + Sync {
    fn post(&self, post: &Post) -> impl Future<Output = Result<u16, String>> + Send;
}

/// [`WebhookStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryWebhooks {
    subs: Mutex<Vec<Subscription>>,
    deliveries: Mutex<HashMap<String, Delivery>>,
}

impl MemoryWebhooks {
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WebhookStore for MemoryWebhooks {
    async fn put_subscription(&self, s: &Subscription) -> Result<(), StateError> {
        let mut subs = lock(&self.subs);
        if subs.iter().any(|x| x.id == s.id) {
            return Err(StateError {
                operation: "put",
                table: "memory".into(),
                message: "subscription exists".into(),
            });
        }
        subs.push(s.clone());
        Ok(())
    }

    async fn subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, StateError> {
        let mut v: Vec<_> = lock(&self.subs)
            .iter()
            .filter(|s| s.tenant == tenant)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StateError> {
        Ok(lock(&self.subs).iter().find(|s| s.id == id).cloned())
    }

    async fn delete_subscription(&self, tenant: &str, id: &str) -> Result<bool, StateError> {
        let mut subs = lock(&self.subs);
        let before = subs.len();
        subs.retain(|s| !(s.id == id && s.tenant == tenant));
        Ok(subs.len() != before)
    }

    async fn create_delivery(&self, d: &Delivery) -> Result<Delivery, StateError> {
        Ok(lock(&self.deliveries)
            .entry(d.id.clone())
            .or_insert_with(|| d.clone())
            .clone())
    }

    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StateError> {
        Ok(lock(&self.deliveries).get(id).cloned())
    }

    async fn start_attempt(
        &self,
        id: &str,
        n: u32,
        now: DateTime<Utc>,
        stale: DateTime<Utc>,
    ) -> Result<Start, StateError> {
        let mut all = lock(&self.deliveries);
        let Some(d) = all.get_mut(id) else {
            return Ok(Start::Done);
        };
        let fresh = d.attempts + 1 == n;
        let crashed = d.attempts == n && d.started_at.is_some_and(|t| t < stale);
        if d.status != DeliveryStatus::Pending {
            return Ok(Start::Done);
        }
        if !(fresh || crashed) {
            return Ok(if d.attempts == n && d.started_at.is_some() {
                Start::Running
            } else {
                Start::Done
            });
        }
        d.attempts = n;
        d.started_at = Some(now);
        Ok(Start::Started(Box::new(d.clone())))
    }

    async fn finish_attempt(
        &self,
        id: &str,
        n: u32,
        started: DateTime<Utc>,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StateError> {
        match lock(&self.deliveries).get_mut(id) {
            Some(d) if d.attempts == n && d.started_at == Some(started) => {
                d.log.push(attempt.clone());
                d.status = status;
                d.next_attempt_at = next_attempt_at;
                d.started_at = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn replay(&self, id: &str, now: DateTime<Utc>) -> Result<Option<Delivery>, StateError> {
        let mut all = lock(&self.deliveries);
        match all.get_mut(id) {
            Some(d) if d.status == DeliveryStatus::Parked => {
                d.status = DeliveryStatus::Pending;
                d.attempts = 0;
                d.next_attempt_at = Some(now);
                Ok(Some(d.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn deliveries(
        &self,
        subscription: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StateError> {
        let mut v: Vec<_> = lock(&self.deliveries)
            .values()
            .filter(|d| d.subscription == subscription)
            .cloned()
            .collect();
        v.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        v.truncate(limit);
        Ok(v)
    }
}

/// [`WebhookClient`] that records posts and answers from a script (unit tests).
#[derive(Debug, Default)]
pub struct MemoryHooks {
    pub posts: Mutex<Vec<Post>>,
    /// Answers in order; when empty, 200.
    pub answers: Mutex<std::collections::VecDeque<Result<u16, String>>>,
}

impl WebhookClient for MemoryHooks {
    async fn post(&self, post: &Post) -> Result<u16, String> {
        lock(&self.posts).push(post.clone());
        lock(&self.answers).pop_front().unwrap_or(Ok(200))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_may_be_subscribed() {
        assert!(check_url("https://erp.example.it/pec", false).is_ok());
        for bad in [
            "http://erp.example.it/",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/",
            "https://localhost/",
            "https://a.localhost/",
            "https://user:pw@erp.example.it/",
            "ftp://x/",
            "nope",
            "",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://e.it/{}", "a".repeat(2100)), false).is_err());
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
    }

    #[test]
    fn retry_schedules() {
        assert_eq!(parse_schedule("5,300, 1800"), Ok(vec![5, 300, 1800]));
        for bad in ["", "0", "5,,6", "-1", "86401", "x"] {
            assert!(parse_schedule(bad).is_err(), "{bad:?}");
        }
        assert!(parse_schedule(&vec!["1"; 21].join(",")).is_err());
        // The default: 8 attempts over 27.6 hours.
        assert_eq!(backoff(1), None);
        assert_eq!(backoff(2), Some(Duration::seconds(5)));
        assert_eq!(backoff(9), None);
        assert_eq!(BACKOFF.iter().sum::<i64>(), 99_305);
        assert_eq!(backoff_in(&[1, 2], 3), Some(Duration::seconds(2)));
        assert_eq!(backoff_in(&[1, 2], 4), None);
    }

    /// The example of the Standard Webhooks specification (standard-webhooks/spec).
    #[test]
    fn signature_matches_the_specification_example() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(sign("nope", "a", 1, b""), None);
    }

    #[test]
    fn the_schedule_spans_more_than_a_day() {
        let total: i64 = (2..=8).map(|n| backoff(n).unwrap().num_seconds()).sum();
        assert!(total > 24 * 3600, "{total}");
        assert_eq!(backoff(1), None);
        assert_eq!(backoff(9), None);
    }
}
