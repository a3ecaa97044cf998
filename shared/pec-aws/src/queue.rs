//! Polling an SQS queue the way Lambda's event source mapping does, for the local runner and the
//! integration tests: the handlers get the very `SqsEvent` they get in AWS.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageSystemAttributeName;

use crate::store::aws_error_chain;

/// A queue operation failed.
#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} on {queue_url}: {message}")]
pub struct QueueError {
    pub operation: &'static str,
    pub queue_url: String,
    pub message: String,
}

/// Receives up to `max` messages (long-polling `wait_seconds`) as a Lambda `SqsEvent`.
pub async fn receive_event(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    max: i32,
    wait_seconds: i32,
) -> Result<SqsEvent, QueueError> {
    receive_event_hidden_for(client, queue_url, max, wait_seconds, None).await
}

/// [`receive_event`], hiding the received messages for `visibility_seconds` instead of the
/// queue's visibility timeout (the local runner's `--visibility-timeout`).
pub async fn receive_event_hidden_for(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    max: i32,
    wait_seconds: i32,
    visibility_seconds: Option<i32>,
) -> Result<SqsEvent, QueueError> {
    let out = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait_seconds)
        .set_visibility_timeout(visibility_seconds)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| QueueError {
            operation: "ReceiveMessage",
            queue_url: queue_url.to_string(),
            message: aws_error_chain(&e),
        })?;
    let mut event = SqsEvent::default();
    for m in out.messages() {
        let mut record = SqsMessage::default();
        record.message_id = m.message_id().map(str::to_string);
        record.receipt_handle = m.receipt_handle().map(str::to_string);
        record.body = m.body().map(str::to_string);
        record.md5_of_body = m.md5_of_body().map(str::to_string);
        record.event_source = Some("aws:sqs".into());
        record.attributes = m
            .attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        event.records.push(record);
    }
    Ok(event)
}

/// Deletes the records of `event` whose ids are not in `failed` (what Lambda does with a partial
/// batch response), and makes the failed ones visible again after `retry_after_seconds`.
pub async fn settle(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    event: &SqsEvent,
    failed: &[String],
    retry_after_seconds: i32,
) -> Result<(), QueueError> {
    for record in &event.records {
        let (Some(id), Some(handle)) = (&record.message_id, &record.receipt_handle) else {
            continue;
        };
        let result = if failed.contains(id) {
            client
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .visibility_timeout(retry_after_seconds)
                .send()
                .await
                .map(drop)
                .map_err(|e| ("ChangeMessageVisibility", aws_error_chain(&e)))
        } else {
            client
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .send()
                .await
                .map(drop)
                .map_err(|e| ("DeleteMessage", aws_error_chain(&e)))
        };
        result.map_err(|(operation, message)| QueueError {
            operation,
            queue_url: queue_url.to_string(),
            message,
        })?;
    }
    Ok(())
}

fn queue_error(operation: &'static str, queue_url: &str, e: impl std::error::Error) -> QueueError {
    QueueError {
        operation,
        queue_url: queue_url.to_string(),
        message: aws_error_chain(&e),
    }
}

/// The queues whose redrive policy names `dlq_url` as their dead-letter queue.
pub async fn dead_letter_sources(
    client: &aws_sdk_sqs::Client,
    dlq_url: &str,
) -> Result<Vec<String>, QueueError> {
    let out = client
        .list_dead_letter_source_queues()
        .queue_url(dlq_url)
        .send()
        .await
        .map_err(|e| queue_error("ListDeadLetterSourceQueues", dlq_url, e))?;
    Ok(out.queue_urls().to_vec())
}

/// Moves up to `max` messages from `dlq_url` back to `target_url` (the replay after a fix):
/// each is sent to the target with its body and attributes, then deleted from the DLQ. A crash
/// between the two leaves a copy in both, which the idempotent steps absorb; nothing is lost.
/// Returns how many were moved.
pub async fn redrive(
    client: &aws_sdk_sqs::Client,
    dlq_url: &str,
    target_url: &str,
    max: usize,
) -> Result<usize, QueueError> {
    let mut moved = 0;
    while moved < max {
        let want = (max - moved).min(10) as i32;
        let out = client
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(want)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| queue_error("ReceiveMessage", dlq_url, e))?;
        if out.messages().is_empty() {
            break;
        }
        for m in out.messages() {
            client
                .send_message()
                .queue_url(target_url)
                .message_body(m.body().unwrap_or_default())
                .set_message_attributes(m.message_attributes().cloned())
                .send()
                .await
                .map_err(|e| queue_error("SendMessage", target_url, e))?;
            if let Some(handle) = m.receipt_handle() {
                client
                    .delete_message()
                    .queue_url(dlq_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .map_err(|e| queue_error("DeleteMessage", dlq_url, e))?;
            }
            moved += 1;
        }
    }
    Ok(moved)
}
