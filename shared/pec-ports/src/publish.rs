//! Outgoing messages behind small traits: queue sends (a step handing work to the next),
//! integration events, and mail to other domains (the outbound relay). The AWS adapters are
//! `pec_aws::{SqsSender, EventBridgePublisher, SesTransport}`; [`MemoryOutbox`] records what was
//! sent (tests).

use std::future::Future;
use std::sync::Mutex;

use pec_core::events::PecEvent;

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
    /// Sends a message that becomes visible after `delay_seconds` (at most 900, SQS's limit).
    fn send_delayed(
        &self,
        queue_url: &str,
        body: String,
        delay_seconds: u32,
    ) -> impl Future<Output = Result<(), SendError>> + Send;
}

/// Publishes integration events.
pub trait EventPublisher: Send + Sync {
    fn publish(&self, event: &PecEvent) -> impl Future<Output = Result<(), SendError>> + Send;
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
    /// Recorded like [`QueueSender::send`] (the delay is not kept).
    async fn send_delayed(
        &self,
        queue_url: &str,
        body: String,
        _delay: u32,
    ) -> Result<(), SendError> {
        self.send(queue_url, body).await
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
    async fn send_delayed(
        &self,
        queue_url: &str,
        body: String,
        delay: u32,
    ) -> Result<(), SendError> {
        (*self).send_delayed(queue_url, body, delay).await
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
