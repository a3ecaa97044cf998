//! How a step consumes Lambda's SQS events: the partial batch response and the S3 notifications
//! an SQS record carries. Pure functions over `aws_lambda_events` types (no SDK).

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};

/// Lambda's partial batch response: runs `handle` on every record of `event` and reports the
/// ones that failed (logged with `step`) for retry; the others are acknowledged.
pub async fn partial_batch<F, Fut, E>(step: &str, event: &SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut response = SqsBatchResponse::default();
    for record in &event.records {
        if let Err(error) = handle(record.clone()).await {
            response
                .batch_item_failures
                .push(failure(step, record, error));
        }
    }
    response
}

/// `record` reported for retry, and why logged.
fn failure(step: &str, record: &SqsMessage, error: impl std::fmt::Display) -> BatchItemFailure {
    let id = record.message_id.clone().unwrap_or_default();
    tracing::error!(step, message_id = %id, error = %error, "failed; the message will be retried");
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = id;
    failure
}

/// [`partial_batch`] with the records handled side by side: for steps whose records wait on
/// the network (the webhooks step's POSTs), so a batch takes as long as its slowest record.
pub async fn partial_batch_concurrent<F, Fut, E>(
    step: &str,
    event: &SqsEvent,
    handle: F,
) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let outcomes =
        futures_util::future::join_all(event.records.iter().map(|r| handle(r.clone()))).await;
    let mut response = SqsBatchResponse::default();
    for (record, outcome) in event.records.iter().zip(outcomes) {
        if let Err(error) = outcome {
            response
                .batch_item_failures
                .push(failure(step, record, error));
        }
    }
    response
}

/// An SQS record that is not an S3 event notification.
#[derive(Debug, thiserror::Error)]
#[error("SQS message {message_id} is not an S3 notification: {reason}")]
pub struct NotAnS3Notification {
    pub message_id: String,
    pub reason: String,
}

/// The (bucket, key) pairs an SQS record announces. S3's one-off `s3:TestEvent` announces none.
/// Keys arrive URL-encoded (`+` for space), as S3 writes them into notifications.
pub fn s3_objects(record: &SqsMessage) -> Result<Vec<(String, String)>, NotAnS3Notification> {
    Ok(s3_notifications(record)?
        .into_iter()
        .map(|n| (n.bucket, n.key))
        .collect())
}

/// One object an S3 notification announces, and when S3 announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub bucket: String,
    pub key: String,
    /// The record's `eventTime` (`None` when it is the epoch; S3 always writes one).
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An S3 notification for `key` of `bucket` dated `at`, as S3 writes it (the key URL-encoded):
/// what a step puts back on its own queue to look at an object again later.
pub fn s3_notification(bucket: &str, key: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    use aws_lambda_events::event::s3::S3EventRecord;
    // S3 encodes keys as form values: everything but unreserved characters and '/'.
    const KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    let mut record = S3EventRecord::default();
    record.event_version = Some("2.1".into());
    record.event_source = Some("aws:s3".into());
    record.event_name = Some("ObjectCreated:Put".into());
    record.event_time = at;
    record.s3.bucket.name = Some(bucket.into());
    record.s3.object.key = Some(percent_encoding::utf8_percent_encode(key, KEY).to_string());
    let mut event = S3Event::default();
    event.records.push(record);
    serde_json::to_string(&event).unwrap_or_default()
}

/// [`s3_objects`] with the time of each notification.
pub fn s3_notifications(record: &SqsMessage) -> Result<Vec<Announced>, NotAnS3Notification> {
    let id = record.message_id.clone().unwrap_or_default();
    let not_s3 = |reason: String| NotAnS3Notification {
        message_id: id.clone(),
        reason,
    };
    let body = record
        .body
        .as_deref()
        .ok_or_else(|| not_s3("empty body".into()))?;
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| not_s3(format!("not JSON: {e}")))?;
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let event: S3Event =
        serde_json::from_value(value).map_err(|e| not_s3(format!("not an S3 event: {e}")))?;
    let mut objects = Vec::new();
    for r in event.records {
        let (Some(bucket), Some(key)) = (r.s3.bucket.name, r.s3.object.key) else {
            return Err(not_s3("a record without bucket or key".into()));
        };
        let key = percent_encoding::percent_decode_str(&key.replace('+', " "))
            .decode_utf8()
            .map_err(|e| not_s3(format!("key is not UTF-8 once decoded: {e}")))?
            .into_owned();
        let at = (r.event_time.timestamp() > 0).then_some(r.event_time);
        objects.push(Announced { bucket, key, at });
    }
    Ok(objects)
}

/// A batch of S3 notifications: `handle` runs on every object announced, in order. A record
/// fails (and is retried) when it is not an S3 notification or when any of its objects fails.
pub async fn each_object<F, Fut, E>(step: &str, event: &SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(String, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    each_announced(step, event, |a| handle(a.bucket, a.key)).await
}

/// [`each_object`] with the time S3 announced each object ([`Announced`]).
pub async fn each_announced<F, Fut, E>(step: &str, event: &SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(Announced) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    partial_batch(step, event, |record| {
        let handle = &handle;
        async move {
            for object in s3_notifications(&record).map_err(|e| e.to_string())? {
                handle(object).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }
    })
    .await
}
