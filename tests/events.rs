//! The sample events in `events/` decode into the types the functions use.

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::SqsEvent;
use pec_integration::repo_root;

fn sqs_event(name: &str) -> SqsEvent {
    let path = repo_root().join("events").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn object_created_sample_carries_a_reference_not_mail() {
    let event = sqs_event("sqs-s3-object-created-raw.json");
    assert_eq!(event.records.len(), 1);
    let body = event.records[0].body.as_deref().expect("body");
    let s3: S3Event = serde_json::from_str(body).expect("S3 notification in the SQS body");
    let record = &s3.records[0];
    assert_eq!(record.event_name.as_deref(), Some("ObjectCreated:Put"));
    assert_eq!(
        record.s3.bucket.name.as_deref(),
        Some("pec-local-raw-000000000000-eu-south-1")
    );
    assert!(
        record
            .s3
            .object
            .key
            .as_deref()
            .is_some_and(|k| k.starts_with("submitted/"))
    );
    assert!(body.len() < 2_048, "events carry references, never mail");
}

#[test]
fn test_event_sample_is_not_an_s3_record() {
    let event = sqs_event("sqs-s3-test-event.json");
    let body = event.records[0].body.as_deref().expect("body");
    let value: serde_json::Value = serde_json::from_str(body).expect("json");
    assert_eq!(value["Event"], "s3:TestEvent");
    assert!(value.get("Records").is_none());
}
