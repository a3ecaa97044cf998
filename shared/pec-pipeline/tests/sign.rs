//! The sign step over an in-memory store and the test PKI's provider key (`pec-testkit`):
//! signing, idempotency, bad input.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, TimeZone, Utc};
use pec_pipeline::sign::testing::{acceptance_key, sample_message, sample_receipt, seed_accepted};
use pec_pipeline::sign::{Outcome, SignStep, StepError};
use pec_ports::{
    DeliveryStatus, InboundDecision, InboundRecord, MemoryState, MemoryStore, RecipientOutcome,
    StateStore, keys,
};
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
    step: SignStep<MemoryStore, Counting, MemoryState>,
    anchors: TrustAnchors,
}

impl Fixture {
    fn store(&self) -> &MemoryStore {
        self.step.store()
    }

    /// Records message `id` as accepted and puts its sample acceptance where ingress would;
    /// returns the `unsigned/` key.
    async fn accepted(&self, id: &str) -> String {
        seed_accepted(self.step.state(), id).await.unwrap();
        let key = acceptance_key(id);
        self.store()
            .insert(BUCKET, &key, sample_message(id).render());
        key
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
            MemoryState::new(),
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
    let key = f.accepted("a").await;
    let out = f.step.sign_object(BUCKET, &key, now()).await.unwrap();
    assert_eq!(
        out,
        Outcome::Signed {
            signed_key: "signed/msg/a/accettazione.eml".into()
        }
    );
    let signed = f
        .store()
        .object(BUCKET, "signed/msg/a/accettazione.eml")
        .expect("signed object");
    // Locked (S3 Object Lock, COMPLIANCE) for the 30 months the rules keep evidence.
    assert_eq!(
        f.store()
            .retained_until(BUCKET, "signed/msg/a/accettazione.eml"),
        now().checked_add_months(chrono::Months::new(30))
    );
    let v = verify_message(&signed, &f.anchors, None, &VerifyOptions::default());
    assert_eq!(v.verdict, Verdict::Valid, "{v:?}");
    let text = String::from_utf8_lossy(&signed);
    assert!(text.contains("X-Ricevuta: accettazione"));
    assert!(text.contains("protocol=\"application/pkcs7-signature\""));
}

#[tokio::test]
async fn duplicate_event_signs_once_and_writes_once() {
    let f = fixture().await;
    let key = f.accepted("b").await;
    let event = || batch(vec![notification("m1", BUCKET, &key)]);
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
    let ok = f.accepted("ok").await;
    seed_accepted(f.step.state(), "garbage").await.unwrap();
    let garbage = acceptance_key("garbage");
    f.store()
        .insert(BUCKET, &garbage, b"not a provider message".to_vec());
    let mut not_json = SqsMessage::default();
    not_json.message_id = Some("m-notjson".into());
    not_json.body = Some("{{".into());
    let response = f
        .step
        .handle(
            batch(vec![
                notification("m-ok", BUCKET, &ok),
                notification("m-garbage", BUCKET, &garbage),
                notification("m-missing", BUCKET, &acceptance_key("missing")),
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
    assert!(
        f.store()
            .object(BUCKET, "signed/msg/ok/accettazione.eml")
            .is_some()
    );
    assert!(
        f.store()
            .object(BUCKET, "signed/msg/garbage/accettazione.eml")
            .is_none()
    );
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
    // A delivery receipt for a recipient whose address has a '+': S3 announces it encoded.
    let recipient = "anna+studio@pec.example.test";
    f.step
        .state()
        .record_recipient("c", &delivered(recipient))
        .await
        .unwrap();
    let key = keys::unsigned_receipt("c", true, recipient);
    f.store().insert(
        BUCKET,
        &key,
        sample_receipt("c", "avvenuta-consegna").render(),
    );
    let response = f
        .step
        .handle(
            batch(vec![notification(
                "m",
                BUCKET,
                "unsigned/msg/c/consegna/anna%2Bstudio%40pec.example.test.eml",
            )]),
            now(),
        )
        .await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert!(
        f.store()
            .object(
                BUCKET,
                "signed/msg/c/consegna/anna+studio@pec.example.test.eml"
            )
            .is_some()
    );
}

fn delivered(recipient: &str) -> RecipientOutcome {
    RecipientOutcome {
        recipient: recipient.into(),
        status: DeliveryStatus::Delivered,
        reason: None,
        at: now(),
        item_id: Some("item".into()),
        detail: None,
    }
}

/// Signs `message` under `key`; the refusal's reason, or panics if it was signed.
async fn refused(f: &Fixture, key: &str, message: Vec<u8>) -> String {
    f.store().insert(BUCKET, key, message);
    match f.step.sign_object(BUCKET, key, now()).await {
        Err(StepError::Refused { reason, .. }) => {
            assert_eq!(f.step.signer().calls.load(Ordering::SeqCst), 0);
            reason
        }
        other => panic!("{key} was not refused: {other:?}"),
    }
}

/// Issue 11: a compromised writer (the scan function handles hostile attachments) must not get
/// just anything signed. Keys no step writes, a kind its key does not admit, and facts the state
/// does not record are all refused, and nothing is signed.
#[tokio::test]
async fn the_signer_refuses_what_no_writer_may_produce() {
    let f = fixture().await;
    let acceptance = || sample_message("x").render();

    // Keys no step writes.
    let r = refused(&f, "unsigned/2026/a.eml", acceptance()).await;
    assert!(r.contains("no step writes"), "{r}");

    // The scan step's prefix cannot yield an acceptance, nor the receipts' a different kind.
    seed_accepted(f.step.state(), "x").await.unwrap();
    let r = refused(
        &f,
        "unsigned/scan/submitted/x.eml/non-accettazione-virus.eml",
        acceptance(),
    )
    .await;
    assert!(r.contains("admits a non-accettazione"), "{r}");
    let r = refused(
        &f,
        &keys::unsigned_receipt("x", true, "destinatario@pec.example.test"),
        acceptance(),
    )
    .await;
    assert!(r.contains("admits a avvenuta-consegna"), "{r}");
    // Both PEC headers, or neither: no declared kind.
    let mut both = sample_message("x");
    both.headers
        .push(("X-Trasporto".into(), "posta-certificata".into()));
    let r = refused(&f, &acceptance_key("x"), both.render()).await;
    assert!(r.contains("declares no known kind"), "{r}");
    let mut twice = sample_message("x");
    twice
        .headers
        .push(("x-ricevuta".into(), "accettazione".into()));
    let r = refused(&f, &acceptance_key("x"), twice.render()).await;
    assert!(r.contains("more than once"), "{r}");

    // The facts: no record, the wrong state, the wrong addressee.
    let r = refused(&f, &acceptance_key("nobody"), acceptance()).await;
    assert!(r.contains("no message nobody is recorded"), "{r}");
    let r = refused(
        &f,
        &keys::unsigned("x", keys::NON_ACCEPTANCE),
        sample_receipt("x", "non-accettazione").render(),
    )
    .await;
    assert!(r.contains("recorded as accepted, not rejected"), "{r}");
    let mut elsewhere = sample_message("x");
    for (n, v) in &mut elsewhere.headers {
        if n == "To" {
            *v = "complice@altro.example".into();
        }
    }
    let r = refused(&f, &acceptance_key("x"), elsewhere.render()).await;
    assert!(r.contains("not addressed to the recorded sender"), "{r}");

    // A delivery receipt for a recipient with no recorded outcome, or another outcome.
    let r = refused(
        &f,
        &keys::unsigned_receipt("x", true, "destinatario@pec.example.test"),
        sample_receipt("x", "avvenuta-consegna").render(),
    )
    .await;
    assert!(r.contains("no outcome is recorded"), "{r}");
    f.step
        .state()
        .record_recipient("x", &delivered("destinatario@pec.example.test"))
        .await
        .unwrap();
    let r = refused(
        &f,
        &keys::unsigned_receipt("x", false, "destinatario@pec.example.test"),
        sample_receipt("x", "errore-consegna").render(),
    )
    .await;
    assert!(
        r.contains("recorded as delivered, not not-delivered"),
        "{r}"
    );

    // A timeout notice for a recipient never relayed.
    let r = refused(
        &f,
        &keys::unsigned_for_recipient("x", keys::TIMEOUT_12H_TAG, "destinatario@pec.example.test"),
        sample_receipt("x", "preavviso-errore-consegna").render(),
    )
    .await;
    assert!(r.contains("never relayed"), "{r}");

    // A presa in carico for inbound mail the receiving point judged an anomaly.
    f.step
        .state()
        .create_inbound(&InboundRecord {
            id: "in1".into(),
            received_at: now(),
            source: "posta-certificata@altro.example".into(),
            recipients: vec![],
            decision: InboundDecision::Anomaly,
            kind: "ordinaria".into(),
            reason: None,
            security_error: false,
            identificativo: None,
            sender_receipt_address: None,
            sender_provider: None,
            via: Default::default(),
        })
        .await
        .unwrap();
    let r = refused(
        &f,
        &keys::unsigned_inbound("in1", keys::TAKEN_IN_CHARGE),
        sample_receipt("x", "presa-in-carico").render(),
    )
    .await;
    assert!(r.contains("decided as anomaly, not envelope"), "{r}");

    // A virus notice with no recorded virus verdict.
    let r = refused(
        &f,
        "unsigned/scan/submitted/x.eml/non-accettazione-virus.eml",
        sample_receipt("x", "non-accettazione").render(),
    )
    .await;
    assert!(r.contains("no scan verdict"), "{r}");

    assert_eq!(f.store().writes(), 0, "nothing signed, nothing written");
    // And the genuine acceptance still signs.
    let key = f.accepted("x").await;
    assert!(matches!(
        f.step.sign_object(BUCKET, &key, now()).await,
        Ok(Outcome::Signed { .. })
    ));
}
