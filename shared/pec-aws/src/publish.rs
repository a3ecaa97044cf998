//! Outgoing messages behind small traits: SQS sends (a step handing work to the next) and
//! integration events on EventBridge. Memory implementations record what was sent (tests).

use std::future::Future;
use std::sync::Mutex;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use pec_core::events::{EVENT_SOURCE, PecEvent};

use crate::store::aws_error_chain;

/// A send or publish failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} to {target}: {message}")]
pub struct SendError {
    pub operation: &'static str,
    pub target: String,
    pub message: String,
}

/// Sends a message body to a queue.
pub trait QueueSender: Send + Sync {
    fn send(
        &self,
        queue_url: &str,
        body: String,
    ) -> impl Future<Output = Result<(), SendError>> + Send;
}

/// Publishes integration events.
pub trait EventPublisher: Send + Sync {
    fn publish(&self, event: &PecEvent) -> impl Future<Output = Result<(), SendError>> + Send;
}

/// [`QueueSender`] on SQS.
#[derive(Clone, Debug)]
pub struct SqsSender {
    client: aws_sdk_sqs::Client,
}

impl SqsSender {
    pub fn new(client: aws_sdk_sqs::Client) -> Self {
        Self { client }
    }
}

impl QueueSender for SqsSender {
    async fn send(&self, queue_url: &str, body: String) -> Result<(), SendError> {
        self.client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map(drop)
            .map_err(|e| SendError {
                operation: "SendMessage",
                target: queue_url.to_string(),
                message: aws_error_chain(&e),
            })
    }
}

/// [`EventPublisher`] on an EventBridge bus: source [`EVENT_SOURCE`], detail-type from the
/// event type, detail = the event's JSON.
#[derive(Clone, Debug)]
pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: &str) -> Self {
        Self {
            client,
            bus: bus.to_string(),
        }
    }
}

impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, event: &PecEvent) -> Result<(), SendError> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(event.event_type.detail_type())
            .detail(event.to_json())
            .resources(event.evidence_key.clone())
            .build();
        let out = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| SendError {
                operation: "PutEvents",
                target: self.bus.clone(),
                message: aws_error_chain(&e),
            })?;
        if out.failed_entry_count() > 0 {
            let why = out
                .entries()
                .iter()
                .filter_map(|e| e.error_message())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(SendError {
                operation: "PutEvents",
                target: self.bus.clone(),
                message: format!("entry refused: {why}"),
            });
        }
        Ok(())
    }
}

/// Records sends and events in memory (unit tests).
#[derive(Default)]
pub struct MemoryOutbox {
    sent: Mutex<Vec<(String, String)>>,
    events: Mutex<Vec<PecEvent>>,
    mail: Mutex<Vec<SentMail>>,
}

impl MemoryOutbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything sent: (queue url, body).
    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Removes and returns what was sent to `queue_url`.
    pub fn take(&self, queue_url: &str) -> Vec<String> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let (mine, rest): (Vec<_>, Vec<_>) = sent.drain(..).partition(|(q, _)| q == queue_url);
        *sent = rest;
        mine.into_iter().map(|(_, b)| b).collect()
    }

    /// Every event published.
    pub fn events(&self) -> Vec<PecEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl QueueSender for MemoryOutbox {
    async fn send(&self, queue_url: &str, body: String) -> Result<(), SendError> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((queue_url.to_string(), body));
        Ok(())
    }
}

impl EventPublisher for MemoryOutbox {
    async fn publish(&self, event: &PecEvent) -> Result<(), SendError> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
        Ok(())
    }
}

impl<T: QueueSender> QueueSender for &T {
    async fn send(&self, queue_url: &str, body: String) -> Result<(), SendError> {
        (*self).send(queue_url, body).await
    }
}

impl<T: EventPublisher> EventPublisher for &T {
    async fn publish(&self, event: &PecEvent) -> Result<(), SendError> {
        (*self).publish(event).await
    }
}

/// Sends a message to other mail domains (the outbound relay): SES in AWS, an SMTP relay could
/// replace it. SES replaces `Message-ID` and `Date` of what it sends: correlation relies on the
/// daticert identificativo and `X-Riferimento-Message-ID`, never on them.
pub trait MailTransport: Send + Sync {
    /// Sends `raw` from `source` to `destinations`; the transport's message id.
    fn send_raw(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
    ) -> impl Future<Output = Result<String, SendError>> + Send;
}

/// [`MailTransport`] on SES v1 `SendRawEmail`.
#[derive(Clone, Debug)]
pub struct SesTransport {
    client: aws_sdk_ses::Client,
}

impl SesTransport {
    pub fn new(client: aws_sdk_ses::Client) -> Self {
        Self { client }
    }
}

impl MailTransport for SesTransport {
    async fn send_raw(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
    ) -> Result<String, SendError> {
        let message = aws_sdk_ses::types::RawMessage::builder()
            .data(aws_sdk_ses::primitives::Blob::new(raw))
            .build()
            .map_err(|e| SendError {
                operation: "SendRawEmail",
                target: destinations.join(","),
                message: e.to_string(),
            })?;
        let out = self
            .client
            .send_raw_email()
            .source(source)
            .set_destinations(Some(destinations.to_vec()))
            .raw_message(message)
            .send()
            .await
            .map_err(|e| SendError {
                operation: "SendRawEmail",
                target: destinations.join(","),
                message: aws_error_chain(&e),
            })?;
        Ok(out.message_id().to_string())
    }
}

/// One message handed to a [`MemoryOutbox`] transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMail {
    pub source: String,
    pub destinations: Vec<String>,
    pub raw: Vec<u8>,
}

impl MemoryOutbox {
    /// Removes and returns the mail sent through the transport.
    pub fn take_mail(&self) -> Vec<SentMail> {
        std::mem::take(&mut *self.mail.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl MailTransport for MemoryOutbox {
    async fn send_raw(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
    ) -> Result<String, SendError> {
        let mut mail = self.mail.lock().unwrap_or_else(|p| p.into_inner());
        mail.push(SentMail {
            source: source.to_string(),
            destinations: destinations.to_vec(),
            raw: raw.to_vec(),
        });
        Ok(format!("memory-{}", mail.len()))
    }
}

impl<T: MailTransport> MailTransport for &T {
    async fn send_raw(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
    ) -> Result<String, SendError> {
        (*self).send_raw(source, destinations, raw).await
    }
}
