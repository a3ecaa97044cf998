//! The webhooks step: integration events from the event bus (an EventBridge rule puts them on
//! the webhook queue) become signed POSTs to the subscriptions of the tenants they concern,
//! retried on [`pec_ports::webhooks::BACKOFF`] for over 24 hours, then parked.
//!
//! Queue messages are either an EventBridge event (`source` `pec.gestore`, `detail` a
//! `PecEvent`) or an attempt request (`{"webhook_attempt": {"delivery", "attempt",
//! "not_before"}}`) that this step (a retry) or the API (a replay) enqueued. SQS delays are at
//! most 15 minutes: an attempt request that arrives before its time goes back on the queue for
//! the rest of the wait.
//!
//! An event creates one delivery per subscription that wants it and queues its first attempt:
//! every queue message makes at most one POST, and a batch's POSTs run side by side, so a batch
//! ends within the HTTP timeout whatever the endpoints do.
//!
//! **Who hears of an event.** The tenants of the sender (their message's progress), of the
//! mailbox the event is about (`recipient`) and of the mailboxes the emitted message went to
//! (`delivered_to`): never the tenant of another recipient of the same message, who must not
//! learn when or whether someone else received it.
//!
//! **At most one POST per attempt.** The delivery id comes from the event and the subscription,
//! so a duplicate event finds the delivery made and starts nothing; an attempt is started with
//! a condition on the attempts counter, so a duplicate attempt request does nothing either. An
//! attempt request that finds its attempt still running fails and comes back after the queue's
//! visibility timeout, when the attempt has finished or is stale (its runner crashed) and is
//! run again. An outcome is recorded only by the runner of the attempt in force. The next
//! attempt is enqueued before the outcome is recorded: a crash in between leaves the next
//! attempt to run, never a delivery without one. Receivers deduplicate on `webhook-id` (the
//! same on every attempt), as the Standard Webhooks convention asks, for the one case left: a
//! POST that succeeded just before its runner crashed.

use std::collections::BTreeSet;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Duration, Utc};
use pec_core::events::{EVENT_SOURCE, PecEvent};
use pec_ports::webhooks::{
    Attempt, Delivery, DeliveryStatus, Post, STALE_ATTEMPT, Start, WebhookClient, WebhookStore,
    backoff_in, delivery_id, sign,
};
pub use pec_ports::webhooks::{AttemptRequest, attempt_message};
use pec_ports::{QueueSender, StateStore};

use crate::StepError;

/// What the step needs.
pub struct Webhooks<Db, W, C, Q> {
    pub state: Db,
    pub hooks: W,
    pub client: C,
    pub queue: Q,
    /// The webhook queue (retries go back on it).
    pub queue_url: String,
    /// Where parked deliveries are announced (a dead-letter queue with an alarm).
    pub parked_queue_url: String,
    /// Seconds before each retry ([`pec_ports::webhooks::BACKOFF`] unless configured).
    pub schedule: Vec<i64>,
}

impl<Db: StateStore, W: WebhookStore, C: WebhookClient, Q: QueueSender> Webhooks<Db, W, C, Q> {
    pub async fn handle(&self, event: SqsEvent, now: DateTime<Utc>) -> SqsBatchResponse {
        crate::batch::partial_batch_concurrent("webhooks", &event, |record| async move {
            self.handle_record(&record, now).await
        })
        .await
    }

    async fn handle_record(
        &self,
        record: &SqsMessage,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let bad = |reason: String| StepError::BadRequest {
            message_id: record.message_id.clone().unwrap_or_default(),
            reason,
        };
        let body = record
            .body
            .as_deref()
            .ok_or_else(|| bad("empty body".into()))?;
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| bad(format!("not JSON: {e}")))?;
        if let Some(a) = value.get("webhook_attempt") {
            let r: AttemptRequest =
                serde_json::from_value(a.clone()).map_err(|e| bad(e.to_string()))?;
            return self.attempt_when_due(&r, now).await;
        }
        if value.get("source").and_then(|s| s.as_str()) != Some(EVENT_SOURCE) {
            return Err(bad(
                "neither an integration event nor an attempt request".into()
            ));
        }
        let event: PecEvent = serde_json::from_value(value["detail"].clone())
            .map_err(|e| bad(format!("detail is not a PEC event: {e}")))?;
        self.fan_out(&event, now).await
    }

    /// The tenants the event concerns: those of the sender, of the recipient it is about and
    /// of the mailboxes the emitted message went to; not those of the message's other
    /// recipients.
    async fn tenants(&self, event: &PecEvent) -> Result<BTreeSet<String>, StepError> {
        let mut addresses: BTreeSet<String> = BTreeSet::new();
        addresses.insert(event.sender.to_ascii_lowercase());
        addresses.extend(event.recipient.iter().map(|a| a.to_ascii_lowercase()));
        addresses.extend(event.delivered_to.iter().map(|a| a.to_ascii_lowercase()));
        let mut tenants = BTreeSet::new();
        for a in addresses.iter().filter(|a| pec_core::addr::is_addr_spec(a)) {
            if let Some(m) = self.state.mailbox(a).await? {
                tenants.insert(m.tenant);
            }
        }
        Ok(tenants)
    }

    async fn fan_out(&self, event: &PecEvent, now: DateTime<Utc>) -> Result<(), StepError> {
        let kind = event.event_type.detail_type();
        let payload = serde_json::json!({
            "type": kind,
            "timestamp": event.at,
            "data": event,
        })
        .to_string();
        for tenant in self.tenants(event).await? {
            for sub in self.hooks.subscriptions(&tenant).await? {
                if !sub.wants(kind) {
                    continue;
                }
                let fresh = Delivery {
                    id: delivery_id(&event.event_id, &sub.id),
                    subscription: sub.id.clone(),
                    tenant: tenant.clone(),
                    event_id: event.event_id.clone(),
                    event_type: kind.to_string(),
                    payload: payload.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    log: Vec::new(),
                    next_attempt_at: Some(now),
                    created_at: now,
                    started_at: None,
                };
                let d = self.hooks.create_delivery(&fresh).await?;
                if d.attempts == 0 && d.status == DeliveryStatus::Pending {
                    // Queued even when the delivery existed (a crash before this line): the
                    // attempt starts at most once.
                    let first = AttemptRequest {
                        delivery: d.id.clone(),
                        attempt: 1,
                        not_before: now,
                    };
                    self.queue
                        .send(&self.queue_url, attempt_message(&first))
                        .await?;
                } else {
                    tracing::info!(delivery = %d.id, "duplicate event: the delivery exists");
                }
            }
        }
        Ok(())
    }

    async fn attempt_when_due(
        &self,
        r: &AttemptRequest,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let wait = (r.not_before - now).num_seconds();
        if wait > 1 {
            // Not yet: back on the queue for the rest of the wait (SQS delays stop at 15 min).
            self.queue
                .send_delayed(&self.queue_url, attempt_message(r), wait.min(900) as u32)
                .await?;
            return Ok(());
        }
        self.attempt(&r.delivery, r.attempt, now).await
    }

    async fn attempt(&self, id: &str, n: u32, now: DateTime<Utc>) -> Result<(), StepError> {
        let stale = now - Duration::seconds(STALE_ATTEMPT);
        let d = match self.hooks.start_attempt(id, n, now, stale).await? {
            Start::Started(d) => d,
            Start::Running => {
                return Err(StepError::AttemptRunning {
                    delivery: id.to_string(),
                    attempt: n,
                });
            }
            Start::Done => {
                tracing::info!(delivery = %id, attempt = n, "attempt already made or not pending");
                return Ok(());
            }
        };
        // Records this attempt's outcome unless a successor took the attempt over.
        let finish = |attempt: Attempt, status: DeliveryStatus, next: Option<DateTime<Utc>>| async move {
            if !self
                .hooks
                .finish_attempt(id, n, now, &attempt, status, next)
                .await?
            {
                tracing::warn!(delivery = %id, attempt = n, "outcome not recorded: the attempt was taken over as stale");
            }
            Ok::<(), StepError>(())
        };
        let sub = self.hooks.subscription(&d.subscription).await?;
        let started = std::time::Instant::now();
        let Some(sub) = sub else {
            let attempt = Attempt {
                at: now,
                status: None,
                error: Some("the subscription was deleted".into()),
                duration_ms: 0,
            };
            tracing::info!(delivery = %d.id, "subscription deleted: delivery cancelled");
            return finish(attempt, DeliveryStatus::Cancelled, None).await;
        };
        let ts = now.timestamp();
        let outcome = match sign(&sub.secret, &d.id, ts, d.payload.as_bytes()) {
            None => Err("the subscription's secret is unusable".to_string()),
            Some(signature) => {
                let post = Post {
                    url: sub.url.clone(),
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("user-agent".into(), "pec-webhooks/1".into()),
                        ("webhook-id".into(), d.id.clone()),
                        ("webhook-timestamp".into(), ts.to_string()),
                        ("webhook-signature".into(), signature),
                    ],
                    body: d.payload.clone().into_bytes(),
                };
                self.client.post(&post).await
            }
        };
        let attempt = Attempt {
            at: now,
            status: outcome.as_ref().ok().copied(),
            error: match &outcome {
                Ok(s) if !(200..300).contains(s) => Some(format!("HTTP {s}")),
                Ok(_) => None,
                Err(e) => Some(e.clone()),
            },
            duration_ms: started.elapsed().as_millis() as u64,
        };
        if attempt.error.is_none() {
            tracing::info!(delivery = %d.id, attempt = n, "webhook delivered");
            return finish(attempt, DeliveryStatus::Delivered, None).await;
        }
        let retry = backoff_in(&self.schedule, n + 1);
        match retry {
            Some(delay) => {
                let next = AttemptRequest {
                    delivery: d.id.clone(),
                    attempt: n + 1,
                    not_before: now + delay,
                };
                self.queue
                    .send_delayed(
                        &self.queue_url,
                        attempt_message(&next),
                        delay.num_seconds().clamp(0, 900) as u32,
                    )
                    .await?;
                tracing::warn!(delivery = %d.id, attempt = n, error = ?attempt.error, next = %next.not_before, "webhook failed; retry scheduled");
                finish(attempt, DeliveryStatus::Pending, Some(next.not_before)).await?;
            }
            None => {
                let parked = serde_json::json!({
                    "delivery": d.id, "subscription": d.subscription, "tenant": d.tenant,
                    "event_id": d.event_id, "attempts": n, "error": attempt.error,
                });
                self.queue
                    .send(&self.parked_queue_url, parked.to_string())
                    .await?;
                tracing::error!(delivery = %d.id, attempts = n, error = ?attempt.error, "webhook parked");
                finish(attempt, DeliveryStatus::Parked, None).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use pec_core::events::{EventType, Recipient};
    use pec_core::plan::Plan;
    use pec_ports::webhooks::{MemoryHooks, MemoryWebhooks, Subscription, backoff};
    use pec_ports::{Mailbox, MemoryOutbox, MemoryState};

    const Q: &str = "q";
    const PARKED: &str = "parked";

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap() + Duration::seconds(s)
    }

    async fn step() -> Webhooks<MemoryState, MemoryWebhooks, MemoryHooks, MemoryOutbox> {
        let state = MemoryState::new();
        for (a, tenant) in [("s@a.it", "ta"), ("r@b.it", "tb"), ("x@c.it", "tc")] {
            state
                .create_mailbox(&Mailbox {
                    address: a.into(),
                    tenant: tenant.into(),
                    plan: Plan::Base,
                    expansions_gb: 0,
                    quota_bytes: 1,
                    used_bytes: 0,
                    password_hash: String::new(),
                    locked: false,
                    status: Default::default(),
                    member: None,
                    status_note: None,
                    agreement_accepted_at: None,
                    refuse_ordinary: false,
                    lock: None,
                    ordinary_spam: Default::default(),
                    sms: None,
                    created_at: t(0),
                })
                .await
                .unwrap();
        }
        let hooks = MemoryWebhooks::new();
        for (id, tenant, events) in [
            ("wh_a", "ta", vec!["*"]),
            ("wh_b", "tb", vec!["pec.message.accepted"]),
            ("wh_c", "tc", vec!["*"]),
        ] {
            hooks
                .put_subscription(&Subscription {
                    id: id.into(),
                    tenant: tenant.into(),
                    url: format!("https://{id}.example/hook"),
                    events: events.into_iter().map(String::from).collect(),
                    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                    created_at: t(0),
                })
                .await
                .unwrap();
        }
        Webhooks {
            state,
            hooks,
            client: MemoryHooks::default(),
            queue: MemoryOutbox::default(),
            queue_url: Q.into(),
            parked_queue_url: PARKED.into(),
            schedule: pec_ports::webhooks::BACKOFF.to_vec(),
        }
    }

    fn event(kind: EventType) -> SqsEvent {
        let e = PecEvent {
            version: 1,
            event_id: "ev1".into(),
            event_type: kind,
            at: t(0),
            identificativo: "id1".into(),
            msgid: None,
            message_id: None,
            sender: "S@a.it".into(),
            recipients: ["r@b.it", "x@c.it"]
                .into_iter()
                .map(|a| Recipient {
                    address: a.into(),
                    kind: "certificato".into(),
                })
                .collect(),
            recipient: Some("r@b.it".into()),
            subject: Some("s".into()),
            receipt_type: "avvenuta-consegna".into(),
            receipt_form: None,
            issuer: "p".into(),
            error: None,
            error_detail: None,
            evidence_key: "signed/x".into(),
            delivered_to: vec!["s@a.it".into()],
        };
        let body = serde_json::json!({"source": EVENT_SOURCE, "detail-type": kind.detail_type(), "detail": e});
        sqs(body.to_string())
    }

    fn sqs(body: String) -> SqsEvent {
        let mut m = SqsMessage::default();
        m.message_id = Some("m1".into());
        m.body = Some(body);
        let mut e = SqsEvent::default();
        e.records = vec![m];
        e
    }

    type Step = Webhooks<MemoryState, MemoryWebhooks, MemoryHooks, MemoryOutbox>;

    /// Handles what is on the webhook queue at `now` (as one batch); how many records failed.
    async fn drain(s: &Step, now: DateTime<Utc>) -> usize {
        let mut e = SqsEvent::default();
        for (i, body) in s.queue.take(Q).into_iter().enumerate() {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("q{i}"));
            m.body = Some(body);
            e.records.push(m);
        }
        s.handle(e, now).await.batch_item_failures.len()
    }

    #[tokio::test]
    async fn an_event_reaches_the_subscriptions_of_its_tenants_signed_once() {
        let s = step().await;
        let r = s.handle(event(EventType::MessageDelivered), t(0)).await;
        assert!(r.batch_item_failures.is_empty());
        // The event queues the first attempts; they post.
        assert!(s.client.posts.lock().unwrap().is_empty());
        assert_eq!(drain(&s, t(0)).await, 0);
        let posts = s.client.posts.lock().unwrap().clone();
        // ta (the sender's) wants everything; tb (the recipient's) only acceptances; tc's
        // mailbox is another recipient of the message: not told of r@b.it's delivery.
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].url, "https://wh_a.example/hook");
        let h = |n: &str| {
            posts[0]
                .headers
                .iter()
                .find(|(k, _)| k == n)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(h("webhook-id"), delivery_id("ev1", "wh_a"));
        let ts: i64 = h("webhook-timestamp").parse().unwrap();
        assert_eq!(
            Some(h("webhook-signature")),
            sign(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                &h("webhook-id"),
                ts,
                &posts[0].body
            )
        );
        let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
        assert_eq!(body["type"], "pec.message.delivered");
        assert_eq!(body["data"]["identificativo"], "id1");
        // The same event again: nothing more.
        s.handle(event(EventType::MessageDelivered), t(10)).await;
        assert_eq!(drain(&s, t(10)).await, 0);
        assert_eq!(s.client.posts.lock().unwrap().len(), 1);
        let d = s
            .hooks
            .delivery(&delivery_id("ev1", "wh_a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.status, DeliveryStatus::Delivered);
        assert_eq!(d.log.len(), 1);
    }

    #[tokio::test]
    async fn failures_are_retried_on_the_schedule_then_parked_and_replayable() {
        let s = step().await;
        {
            let mut a = s.client.answers.lock().unwrap();
            a.push_back(Err("connection refused".into()));
            for _ in 0..7 {
                a.push_back(Ok(503));
            }
        }
        // Only tenant ta's subscription wants deliveries.
        s.handle(event(EventType::MessageDelivered), t(0)).await;
        drain(&s, t(0)).await;
        let mut now = t(0);
        for n in 2..=8u32 {
            let queued = s.queue.take(Q);
            let mine: Vec<AttemptRequest> = queued
                .iter()
                .map(|b| {
                    serde_json::from_value(
                        serde_json::from_str::<serde_json::Value>(b).unwrap()["webhook_attempt"]
                            .clone(),
                    )
                    .unwrap()
                })
                .collect();
            assert_eq!(mine.len(), 1, "attempt {n}: {queued:?}");
            assert_eq!(mine[0].attempt, n);
            assert_eq!(mine[0].not_before - now, backoff(n).unwrap());
            // Early: it goes back on the queue, no POST.
            let before = s.client.posts.lock().unwrap().len();
            s.handle(sqs(attempt_message(&mine[0])), now).await;
            if backoff(n).unwrap().num_seconds() > 1 {
                assert_eq!(s.client.posts.lock().unwrap().len(), before);
                s.queue.take(Q);
            }
            now = mine[0].not_before;
            s.handle(sqs(attempt_message(&mine[0])), now).await;
            // A duplicate of the same request does nothing.
            s.handle(sqs(attempt_message(&mine[0])), now).await;
        }
        let id = delivery_id("ev1", "wh_a");
        let d = s.hooks.delivery(&id).await.unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Parked);
        assert_eq!(d.log.len(), 8);
        assert!(now - t(0) > Duration::hours(24));
        assert_eq!(s.queue.take(PARKED).len(), 1);
        assert!(s.queue.take(Q).is_empty());
        // Replay: a new round, delivered.
        assert!(s.hooks.replay(&id, now).await.unwrap().is_some());
        let r = AttemptRequest {
            delivery: id.clone(),
            attempt: 1,
            not_before: now,
        };
        s.handle(sqs(attempt_message(&r)), now).await;
        let d = s.hooks.delivery(&id).await.unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Delivered);
        assert_eq!(d.log.len(), 9);
    }

    #[tokio::test]
    async fn a_running_attempt_comes_back_later_and_a_late_outcome_is_dropped() {
        let s = step().await;
        s.handle(event(EventType::MessageDelivered), t(0)).await;
        let first = s.queue.take(Q);
        let id = delivery_id("ev1", "wh_a");
        // Another runner started attempt 1 at t(0) and is still at it.
        let Start::Started(_) = s.hooks.start_attempt(&id, 1, t(0), t(0)).await.unwrap() else {
            panic!("not started");
        };
        // A redelivered request fails (the queue brings it back); nothing posted.
        let r = s.handle(sqs(first[0].clone()), t(60)).await;
        assert_eq!(r.batch_item_failures.len(), 1);
        assert!(s.client.posts.lock().unwrap().is_empty());
        // Past STALE_ATTEMPT the runner is taken for crashed: the attempt runs again.
        let later = t(STALE_ATTEMPT + 1);
        assert!(
            s.handle(sqs(first[0].clone()), later)
                .await
                .batch_item_failures
                .is_empty()
        );
        assert_eq!(s.client.posts.lock().unwrap().len(), 1);
        // The first runner's late outcome does not overwrite it.
        let late = Attempt {
            at: t(0),
            status: Some(500),
            error: Some("HTTP 500".into()),
            duration_ms: 1,
        };
        assert!(
            !s.hooks
                .finish_attempt(&id, 1, t(0), &late, DeliveryStatus::Pending, None)
                .await
                .unwrap()
        );
        let d = s.hooks.delivery(&id).await.unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Delivered);
        assert_eq!(d.log.len(), 1);
    }

    #[tokio::test]
    async fn a_deleted_subscription_cancels_its_deliveries_quietly() {
        let s = step().await;
        s.client
            .answers
            .lock()
            .unwrap()
            .push_back(Err("connection refused".into()));
        s.handle(event(EventType::MessageDelivered), t(0)).await;
        drain(&s, t(0)).await;
        assert!(s.hooks.delete_subscription("ta", "wh_a").await.unwrap());
        let retry = s.queue.take(Q);
        assert_eq!(retry.len(), 1);
        s.handle(sqs(retry[0].clone()), t(3600)).await;
        let d = s
            .hooks
            .delivery(&delivery_id("ev1", "wh_a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.status, DeliveryStatus::Cancelled);
        assert_eq!(s.client.posts.lock().unwrap().len(), 1);
        assert!(s.queue.take(Q).is_empty());
        // Not parked: the operator's alarm is for endpoints that fail, not for deletions.
        assert!(s.queue.take(PARKED).is_empty());
    }

    #[tokio::test]
    async fn garbage_fails_the_record() {
        let s = step().await;
        assert_eq!(
            s.handle(sqs("nope".into()), t(0))
                .await
                .batch_item_failures
                .len(),
            1
        );
        assert_eq!(
            s.handle(sqs("{\"source\":\"x\"}".into()), t(0))
                .await
                .batch_item_failures
                .len(),
            1
        );
    }
}
