//! The sign step over an in-memory store and the test PKI's provider key (`pec-testkit`):
//! signing, idempotency, bad input.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, TimeZone, Utc};
use pec_pipeline::sign::{Outcome, SignStep, testing::sample_message};
use pec_ports::MemoryStore;
use pec_smime::{
    DigestSigner, LocalSigner, Sha256Digest, TrustAnchors, Verdict, VerifyOptions, verify_message,
};
use pec_testkit::pki::TestPki;

const BUCKET: &str = "evidence";

/// Counts calls, so tests can prove a duplicate makes no second signature.
struct Counting {
    inner: LocalSigner,
    calls: AtomicUsize,
}

impl DigestSigner for Counting {
    type Error = <LocalSigner as DigestSigner>::Error;
    async fn sign_sha256_digest(&self, digest: Sha256Digest) -> Result<Vec<u8>, Self::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.sign_sha256_digest(digest).await
    }
}

struct Fixture {
    step: SignStep<MemoryStore, Counting>,
    anchors: TrustAnchors,
}

impl Fixture {
    fn store(&self) -> &MemoryStore {
        self.step.store()
    }
}

async fn fixture() -> Fixture {
    let pki = TestPki::load();
    let signer = Counting {
        inner: pki.example.signer.clone(),
        calls: AtomicUsize::new(0),
    };
    Fixture {
        step: SignStep::new(
            MemoryStore::new(),
            signer,
            pki.example.identity.clone(),
            BUCKET,
        ),
        anchors: pki.anchors,
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 41, 7).unwrap()
}

fn notification(message_id: &str, bucket: &str, key: &str) -> SqsMessage {
    // The full shape S3 (and LocalStack) writes; see events/sqs-s3-object-created-raw.json.
    let body = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-south-1",
        "eventTime": "2026-11-23T09:41:07.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:EXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "R", "x-amz-id-2": "I"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "unsigned-to-sign",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "EXAMPLE"},
                          "arn": format!("arn:aws:s3:::{bucket}")},
               "object": {"key": key, "size": 10, "eTag": "e", "sequencer": "0A"}}
    }]});
    let mut m = SqsMessage::default();
    m.message_id = Some(message_id.into());
    m.body = Some(body.to_string());
    m
}

fn batch(records: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = records;
    e
}

#[tokio::test]
async fn signs_unsigned_object_into_signed_prefix_and_it_verifies() {
    let f = fixture().await;
    f.store()
        .insert(BUCKET, "unsigned/2026/a.eml", sample_message("a").render());
    let out = f
        .step
        .sign_object(BUCKET, "unsigned/2026/a.eml", now())
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Signed {
            signed_key: "signed/2026/a.eml".into()
        }
    );
    let signed = f
        .store()
        .object(BUCKET, "signed/2026/a.eml")
        .expect("signed object");
    let v = verify_message(&signed, &f.anchors, None, &VerifyOptions::default());
    assert_eq!(v.verdict, Verdict::Valid, "{v:?}");
    let text = String::from_utf8_lossy(&signed);
    assert!(text.contains("X-Ricevuta: accettazione"));
    assert!(text.contains("protocol=\"application/pkcs7-signature\""));
}

#[tokio::test]
async fn duplicate_event_signs_once_and_writes_once() {
    let f = fixture().await;
    f.store()
        .insert(BUCKET, "unsigned/b.eml", sample_message("b").render());
    let event = || batch(vec![notification("m1", BUCKET, "unsigned/b.eml")]);
    for _ in 0..3 {
        let response = f.step.handle(event(), now()).await;
        assert!(response.batch_item_failures.is_empty());
    }
    assert_eq!(
        f.step.signer().calls.load(Ordering::SeqCst),
        1,
        "one signature in all"
    );
    assert_eq!(f.store().writes(), 1, "one signed object in all");
}

#[tokio::test]
async fn bad_records_are_reported_for_retry_and_good_ones_acknowledged() {
    let f = fixture().await;
    f.store()
        .insert(BUCKET, "unsigned/ok.eml", sample_message("ok").render());
    f.store().insert(
        BUCKET,
        "unsigned/garbage.eml",
        b"not a provider message".to_vec(),
    );
    let mut not_json = SqsMessage::default();
    not_json.message_id = Some("m-notjson".into());
    not_json.body = Some("{{".into());
    let response = f
        .step
        .handle(
            batch(vec![
                notification("m-ok", BUCKET, "unsigned/ok.eml"),
                notification("m-garbage", BUCKET, "unsigned/garbage.eml"),
                notification("m-missing", BUCKET, "unsigned/missing.eml"),
                not_json,
            ]),
            now(),
        )
        .await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m-garbage", "m-missing", "m-notjson"]);
    assert!(f.store().object(BUCKET, "signed/ok.eml").is_some());
    assert!(f.store().object(BUCKET, "signed/garbage.eml").is_none());
}

#[tokio::test]
async fn test_events_and_foreign_keys_are_acknowledged_without_signing() {
    let f = fixture().await;
    let mut test_event = SqsMessage::default();
    test_event.message_id = Some("m-test".into());
    test_event.body =
        Some(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"evidence"}"#.into());
    let response = f
        .step
        .handle(
            batch(vec![
                test_event,
                notification("m-signed", BUCKET, "signed/x.eml"),
                notification("m-other", "other-bucket", "unsigned/x.eml"),
            ]),
            now(),
        )
        .await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(f.step.signer().calls.load(Ordering::SeqCst), 0);
    assert_eq!(f.store().writes(), 0);
}

#[tokio::test]
async fn url_encoded_keys_are_decoded() {
    let f = fixture().await;
    f.store().insert(
        BUCKET,
        "unsigned/with space+plus.eml",
        sample_message("c").render(),
    );
    let response = f
        .step
        .handle(
            batch(vec![notification(
                "m",
                BUCKET,
                "unsigned/with+space%2Bplus.eml",
            )]),
            now(),
        )
        .await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert!(
        f.store()
            .object(BUCKET, "signed/with space+plus.eml")
            .is_some()
    );
}
