//! A duplicate re-applies the decision in force, whatever happened to the inputs since (issue
//! 11, defect 3): rewriting `submitted/<id>.json` (or the message) after the access point decided
//! must neither accept a refused message nor refuse an accepted one.

mod common;

use common::{ANNA, EVIDENCE, Flow, MARIO, RAW, SCAN_Q, envelope};
use pec_pipeline::StepError;
use pec_pipeline::ingress::IngressOutcome;
use pec_ports::contract::{Point, ScanRequest};
use pec_ports::{MessageState, StateStore};

const HIDDEN: &str = "nascosto@pec.example.test";

fn message() -> String {
    format!(
        "From: Mario Rossi <{MARIO}>\r\nTo: {ANNA}\r\nSubject: Diffida\r\nMessage-ID: <u1@client.example>\r\nDate: Mon, 23 Nov 2026 10:29:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTesto della diffida.\r\n"
    )
}

async fn ingress(f: &Flow, id: &str) -> Result<IngressOutcome, StepError> {
    f.ingress()
        .handle_object(RAW, &format!("submitted/{id}.json"))
        .await
}

fn unsigned(f: &Flow, id: &str) -> Vec<String> {
    f.store
        .keys(EVIDENCE)
        .into_iter()
        .filter(|k| k.starts_with(&format!("unsigned/msg/{id}/")))
        .collect()
}

#[tokio::test]
async fn a_refused_submission_stays_refused_when_its_envelope_is_corrected_afterwards() {
    let f = Flow::new().await;
    // A Bcc (an SMTP recipient not in To/Cc): refused.
    let refused = envelope("d1", MARIO, MARIO, &[ANNA, HIDDEN]);
    f.submit_envelope(&refused, message().as_bytes());
    assert!(matches!(
        ingress(&f, "d1").await.unwrap(),
        IngressOutcome::Rejected { .. }
    ));
    // Someone rewrites the envelope so that it would pass, and the event comes again.
    f.store.insert(
        RAW,
        &refused.envelope_key(),
        envelope("d1", MARIO, MARIO, &[ANNA]).to_json(),
    );
    assert!(matches!(
        ingress(&f, "d1").await.unwrap(),
        IngressOutcome::Rejected { .. }
    ));
    assert!(
        f.outbox.take(SCAN_Q).is_empty(),
        "no scan, so no acceptance"
    );
    assert_eq!(unsigned(&f, "d1"), ["unsigned/msg/d1/non-accettazione.eml"]);
    let record = f.state.message("d1").await.unwrap().unwrap();
    assert_eq!(record.state, MessageState::Rejected);
}

#[tokio::test]
async fn a_passed_submission_gets_no_non_acceptance_when_its_envelope_is_spoiled_afterwards() {
    let f = Flow::new().await;
    let passed = envelope("d2", MARIO, MARIO, &[ANNA]);
    f.submit_envelope(&passed, message().as_bytes());
    assert_eq!(
        ingress(&f, "d2").await.unwrap(),
        IngressOutcome::ScanRequested { id: "d2".into() }
    );
    let first = f.outbox.take(SCAN_Q);
    // The envelope now carries a hidden recipient (which would be refused), and the event
    // comes again: the decision in force (passed) stands and the scan request is the recorded one.
    f.store.insert(
        RAW,
        &passed.envelope_key(),
        envelope("d2", MARIO, MARIO, &[ANNA, HIDDEN]).to_json(),
    );
    assert_eq!(
        ingress(&f, "d2").await.unwrap(),
        IngressOutcome::ScanRequested { id: "d2".into() }
    );
    let again = f.outbox.take(SCAN_Q);
    assert_eq!(again, first, "the same request, built from the record");
    let request: ScanRequest = serde_json::from_str(&again[0]).unwrap();
    assert!(
        matches!(&request.point, Point::Access { recipients, .. } if recipients == &[ANNA.to_string()])
    );
    assert!(unsigned(&f, "d2").is_empty(), "no non-acceptance");
    let record = f.state.message("d2").await.unwrap().unwrap();
    assert_eq!(record.state, MessageState::Scanning);
}

#[tokio::test]
async fn a_recorded_refusal_without_its_notice_waits_rather_than_flipping() {
    // The refusal was recorded, then the step stopped before writing the notice; meanwhile the
    // envelope was rewritten to pass. The notice cannot be rebuilt from inputs that no longer
    // refuse, and the message must not be accepted: the record fails (retried, then DLQ).
    let first = Flow::new().await;
    let refused = envelope("d3", MARIO, MARIO, &[ANNA, HIDDEN]);
    first.submit_envelope(&refused, message().as_bytes());
    ingress(&first, "d3").await.unwrap();
    let record = first.state.message("d3").await.unwrap().unwrap();

    let f = Flow::new().await;
    assert_eq!(f.state.create_message(&record).await.unwrap(), None);
    f.submit_envelope(&envelope("d3", MARIO, MARIO, &[ANNA]), message().as_bytes());
    assert!(matches!(
        ingress(&f, "d3").await,
        Err(StepError::BadInput { .. })
    ));
    assert!(f.outbox.take(SCAN_Q).is_empty());
    assert!(unsigned(&f, "d3").is_empty());
}

/// Issue 11: the raw message is read by key, so it could be rewritten between the formal checks
/// and the acceptance (or a later receipt). The record keeps the SHA-256 of the bytes judged;
/// different bytes are refused (retried, then the DLQ and its alarm): no acceptance, no envelope
/// carrying a message nobody checked.
#[tokio::test]
async fn a_message_rewritten_after_the_formal_checks_is_never_enveloped() {
    let f = Flow::new().await;
    let passed = envelope("d4", MARIO, MARIO, &[ANNA]);
    f.submit_envelope(&passed, message().as_bytes());
    assert_eq!(
        ingress(&f, "d4").await.unwrap(),
        IngressOutcome::ScanRequested { id: "d4".into() }
    );
    let request = f.outbox.take(SCAN_Q).remove(0);
    let record = f.state.message("d4").await.unwrap().unwrap();
    assert_eq!(record.raw_sha256.len(), 64);
    // The message is swapped for another after the checks and before the acceptance.
    let swapped = message().replace("Testo della diffida.", "Tutt'altro testo.");
    f.store
        .insert(RAW, &passed.message_key(), swapped.into_bytes());
    common::scan_clean(&f.settings, &f.store, &request, common::scanned_at()).await;
    let clean = "scan/clean/submitted/d4.eml.json";
    match f.ingress().handle_object(EVIDENCE, clean).await {
        Err(e @ StepError::Changed { .. }) => {
            assert!(
                e.to_string().contains("changed after the formal checks"),
                "{e}"
            )
        }
        other => panic!("not refused: {other:?}"),
    }
    assert!(unsigned(&f, "d4").is_empty(), "no acceptance, no envelope");
    // Put back as judged, the retry goes through.
    f.store
        .insert(RAW, &passed.message_key(), message().into_bytes());
    f.ingress().handle_object(EVIDENCE, clean).await.unwrap();
    assert_eq!(unsigned(&f, "d4").len(), 2, "{:?}", unsigned(&f, "d4"));
}
