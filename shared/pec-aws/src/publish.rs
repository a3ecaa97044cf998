//! The publishing ports on AWS: [`SqsSender`], [`EventBridgePublisher`], [`SesTransport`].

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use pec_core::events::{EVENT_SOURCE, PecEvent};
use pec_ports::publish::{EventPublisher, MailTransport, QueueSender, SendError};

use crate::store::aws_error_chain;

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
                permanent: false,
            })
    }

    async fn send_delayed(
        &self,
        queue_url: &str,
        body: String,
        delay: u32,
    ) -> Result<(), SendError> {
        self.client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .delay_seconds(delay.min(900) as i32)
            .send()
            .await
            .map(drop)
            .map_err(|e| SendError {
                operation: "SendMessage",
                target: queue_url.to_string(),
                message: aws_error_chain(&e),
                permanent: false,
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
                permanent: false,
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
                permanent: false,
            });
        }
        Ok(())
    }
}

/// [`MailTransport`] on SES v1 `SendRawEmail`. SES gives no answer per recipient: its
/// [`MailTransport::send_each`] is the trait's default, every recipient taken once SES took the
/// message (a later bounce is not seen here).
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
                permanent: true,
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
                // SES refused this message itself (an unverified address in the sandbox, a
                // virus, a bad header): the same bytes will be refused again.
                permanent: e
                    .as_service_error()
                    .is_some_and(|se| se.is_message_rejected()),
            })?;
        Ok(out.message_id().to_string())
    }
}
