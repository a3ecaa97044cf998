//! The outbound relay of the deliver step over the memory fakes, with the memory transport
//! answering per recipient as an SMTP relay does (`MemoryOutbox::reply_to`): taken, deferred
//! (4xx) or refused for good (5xx, no such domain). docs/design/smtp-relay-and-mx.md §6:
//! - a certified recipient of our envelope refused for good gets the avviso di mancata consegna
//!   at once (recorded outcome, relay record failed, one receipts request, then receipts and
//!   sign as for a local non-delivery), and no timer notice after it;
//! - a deferred recipient fails the step, and the event's retry sends only what is left
//!   (markers per recipient; an older marker naming the domain still covers it);
//! - a duplicate event queues no second request and sends nothing again.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{ANNA, EVIDENCE, Flow, MARIO, RAW, RECEIPTS_Q, SCAN_Q, t0};
use pec_core::classify::{Kind, classify};
use pec_core::daticert::Errore;
use pec_core::policy::DeliveryFailure;
use pec_pipeline::StepError;
use pec_pipeline::deliver::{DETAIL_MAX_CHARS, ReceiptRequest, non_delivery};
use pec_pipeline::ingress::IngressOutcome;
use pec_pipeline::receipts::failure_of;
use pec_pipeline::timers::Timers;
use pec_ports::{
    DeliveryStatus, NotDelivered, Peer, RecipientOutcome, RecipientReply, Refusal, RelayEvent,
    StateStore,
};

const LUIGI: &str = "luigi.verdi@pec.altro.test";
const PIERO: &str = "piero.neri@pec.altro.test";
/// An ordinary (esterno) address: its domain is not in the provider index.
const ORDINARY: &str = "someone@ordinaria.test";
const PROVIDER: &str = pec_testkit::pki::EXAMPLE_NAME;

fn message(to: &[&str]) -> String {
    format!(
        "From: Mario Rossi <{MARIO}>\r\nTo: {}\r\nSubject: Diffida\r\nMessage-ID: <u1@client.example>\r\nDate: Mon, 23 Nov 2026 10:29:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTesto della diffida.\r\n",
        to.join(", ")
    )
}

fn refused(code: u16, enhanced: Option<&str>, text: &str, at_rcpt: bool) -> Refusal {
    Refusal {
        code,
        enhanced: enhanced.map(str::to_string),
        text: text.into(),
        at_rcpt,
    }
}

fn deferred(text: &str) -> RecipientReply {
    RecipientReply::Deferred { text: text.into() }
}

/// Copies an unsigned object to the sign step's store, signs it at `now` and copies the signed
/// object back; the signed key, or the sign step's refusal.
async fn sign(f: &Flow, key: &str, now: DateTime<Utc>) -> Result<String, String> {
    let body = f.store.object(EVIDENCE, key).unwrap();
    f.sign.store().insert(EVIDENCE, key, body);
    f.sign
        .sign_object(EVIDENCE, key, now)
        .await
        .map_err(|e| e.to_string())?;
    let signed_key = key.replacen("unsigned/", "signed/", 1);
    let signed = f.sign.store().object(EVIDENCE, &signed_key).unwrap();
    f.store.insert(EVIDENCE, &signed_key, signed);
    Ok(signed_key)
}

/// A provider with the provider index (so pec.altro.test is a PEC domain) and a submission by
/// MARIO to `to`, taken through ingress, the clean scan and acceptance, its acceptance and
/// envelope signed and nothing delivered yet: the envelope's signed key.
async fn accepted(id: &str, to: &[&str]) -> (Flow, String) {
    let f = Flow::new().await;
    f.store.insert(
        EVIDENCE,
        pec_pipeline::DEFAULT_PROVIDER_INDEX_KEY,
        f.pki.index_ldif().into_bytes(),
    );
    f.submit(id, &message(to), to);
    f.ingress()
        .handle_object(RAW, &format!("submitted/{id}.json"))
        .await
        .unwrap();
    let scans = f.outbox.take(SCAN_Q);
    assert_eq!(scans.len(), 1);
    let clean = common::scan_clean(&f.settings, &f.store, &scans[0], common::scanned_at()).await;
    assert_eq!(
        f.ingress().handle_object(EVIDENCE, &clean).await.unwrap(),
        IngressOutcome::Accepted { id: id.into() }
    );
    let now = t0() + Duration::seconds(5);
    for name in ["accettazione", "busta-trasporto"] {
        sign(&f, &format!("unsigned/msg/{id}/{name}.eml"), now)
            .await
            .unwrap();
    }
    (f, format!("signed/msg/{id}/busta-trasporto.eml"))
}

fn delivered_at() -> DateTime<Utc> {
    t0() + Duration::seconds(6)
}

fn requests(f: &Flow) -> Vec<ReceiptRequest> {
    f.outbox
        .take(RECEIPTS_Q)
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn a_5xx_for_one_pec_recipient_is_a_mancata_consegna_at_once_and_the_other_is_sent() {
    let (f, key) = accepted("r1", &[LUIGI, PIERO]).await;
    f.outbox.reply_to(
        LUIGI,
        RecipientReply::Refused(refused(
            550,
            Some("5.1.1"),
            "5.1.1 <luigi.verdi@pec.altro.test>: Recipient address rejected",
            true,
        )),
    );
    let d = f
        .deliver()
        .deliver_object(&key, delivered_at())
        .await
        .unwrap();
    assert_eq!(sorted(d.relayed), sorted(vec![LUIGI.into(), PIERO.into()]));

    // One send to the domain, both recipients in it; the taken one is marked, and so is the
    // refused one (done with).
    let mail = f.outbox.take_mail();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].destinations, [LUIGI, PIERO]);
    assert_eq!(
        mail[0].peer,
        Some(Peer::Provider),
        "PEC recipients: verified TLS only"
    );
    assert!(f.state.was_sent(&key, PIERO).await.unwrap());
    assert!(f.state.was_sent(&key, LUIGI).await.unwrap());

    // One receipts request, for the refused recipient, with the mapped reason.
    let reqs = requests(&f);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(r.message, "r1");
    assert_eq!(r.envelope, None);
    assert_eq!(r.outcome.recipient, LUIGI);
    assert_eq!(r.outcome.status, DeliveryStatus::NotDelivered);
    assert_eq!(r.outcome.reason, Some(NotDelivered::UnknownUser));
    assert_eq!(
        r.outcome.detail.as_deref(),
        Some("5.1.1 <luigi.verdi@pec.altro.test>: Recipient address rejected")
    );
    assert_eq!(
        f.state.recipient("r1", LUIGI).await.unwrap().as_ref(),
        Some(&r.outcome)
    );
    assert_eq!(f.state.recipient("r1", PIERO).await.unwrap(), None);
    let luigi = f.state.relay("r1", LUIGI).await.unwrap().unwrap();
    assert!(luigi.certified && luigi.failed_at == Some(delivered_at()));
    let piero = f.state.relay("r1", PIERO).await.unwrap().unwrap();
    assert!(piero.certified && piero.failed_at.is_none());

    // Receipts builds the avviso di mancata consegna; sign takes it (a recorded not-delivered
    // outcome); deliver files it in the sender's mailbox.
    let unsigned = f.receipts().build(r).await.unwrap();
    assert_eq!(
        unsigned,
        format!("unsigned/msg/r1/mancata-consegna/{LUIGI}.eml")
    );
    let signed = sign(&f, &unsigned, delivered_at() + Duration::seconds(1))
        .await
        .unwrap();
    f.deliver()
        .deliver_object(&signed, delivered_at() + Duration::seconds(1))
        .await
        .unwrap();
    let bytes = f.store.object(EVIDENCE, &signed).unwrap();
    let c = classify(&bytes);
    assert_eq!(c.kind, Kind::ErroreConsegna);
    let d = c.daticert.unwrap();
    assert_eq!(d.errore, Errore::NoDest);
    assert_eq!(d.dati.consegna.as_deref(), Some(LUIGI));
    assert_eq!(
        d.dati.errore_esteso.as_deref(),
        Some(format!("5.1.1 - {PROVIDER} - indirizzo non valido").as_str())
    );
    assert!(
        f.inbox(MARIO)
            .await
            .iter()
            .any(|(k, s)| *k == Kind::ErroreConsegna && s == "AVVISO DI MANCATA CONSEGNA: Diffida"),
        "{:?}",
        f.inbox(MARIO).await
    );

    // The timers leave the refused recipient alone (its notice was the immediate one); the
    // other, with no receipt back, gets the 12 h and 24 h notices.
    let timers = Timers::new(f.settings.clone(), &f.store, f.state.clone());
    let emitted = timers
        .sweep(delivered_at() + Duration::hours(25))
        .await
        .unwrap();
    assert_eq!(emitted.len(), 2, "{emitted:?}");
    assert!(emitted.iter().all(|e| e.recipient == PIERO), "{emitted:?}");
}

#[tokio::test]
async fn a_deferred_recipient_fails_the_step_and_the_retry_sends_only_it() {
    let (f, key) = accepted("r2", &[LUIGI, PIERO, ANNA]).await;
    f.outbox.reply_to(
        PIERO,
        deferred("451 4.7.1 <piero.neri@pec.altro.test>: try again later"),
    );
    let err = f
        .deliver()
        .deliver_object(&key, delivered_at())
        .await
        .unwrap_err();
    assert!(matches!(err, StepError::RelayDeferred(_)), "{err}");
    assert!(err.to_string().contains("4.7.1"), "{err}");
    assert_eq!(f.outbox.take_mail()[0].destinations, [LUIGI, PIERO]);
    assert!(f.state.was_sent(&key, LUIGI).await.unwrap());
    assert!(!f.state.was_sent(&key, PIERO).await.unwrap());
    // The local recipient was delivered all the same; a deferral is no non-delivery.
    let reqs = requests(&f);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].outcome.recipient, ANNA);
    assert!(f.state.relay("r2", PIERO).await.unwrap().is_some());
    // The provider log and the integration event are written although the event fails.
    let day = delivered_at().format("%Y-%m-%d").to_string();
    let logged = f.state.log_day(&day).await.unwrap();
    assert!(
        logged.iter().any(|e| e.evidence_key == key),
        "no log record for {key}: {logged:?}"
    );
    assert!(f.outbox.events().iter().any(|e| e.evidence_key == key));

    // SQS brings the event back: only the deferred recipient is sent, and the step succeeds.
    let later = delivered_at() + Duration::minutes(5);
    f.deliver().deliver_object(&key, later).await.unwrap();
    let mail = f.outbox.take_mail();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].destinations, [PIERO]);
    assert!(f.state.was_sent(&key, PIERO).await.unwrap());
    // The timers count from the first attempt.
    let piero = f.state.relay("r2", PIERO).await.unwrap().unwrap();
    assert_eq!(piero.relayed_at, delivered_at());

    // A duplicate of the event: nothing is sent again.
    f.deliver().deliver_object(&key, later).await.unwrap();
    assert!(f.outbox.take_mail().is_empty());
    assert!(
        requests(&f)
            .iter()
            .all(|r| r.outcome.status == DeliveryStatus::Delivered)
    );
}

#[tokio::test]
async fn a_duplicate_event_after_a_5xx_queues_no_second_request() {
    let (f, key) = accepted("r3", &[LUIGI, PIERO]).await;
    f.outbox.reply_to(
        LUIGI,
        RecipientReply::Refused(refused(
            554,
            Some("5.7.1"),
            "5.7.1 Message rejected by policy",
            true,
        )),
    );
    for _ in 0..3 {
        f.deliver()
            .deliver_object(&key, delivered_at())
            .await
            .unwrap();
    }
    assert_eq!(f.outbox.take_mail().len(), 1, "sent once");
    let reqs = requests(&f);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].outcome.reason, Some(NotDelivered::Refused));
    assert_eq!(
        failure_of(&reqs[0].outcome),
        DeliveryFailure::Other {
            code: "5.7.1".into(),
            text: "rifiutato dal server di destinazione: 5.7.1 Message rejected by policy".into()
        }
    );
    // The receipt, built from it, carries the MX's code and reply.
    let unsigned = f.receipts().build(&reqs[0]).await.unwrap();
    let signed = sign(&f, &unsigned, delivered_at() + Duration::seconds(1))
        .await
        .unwrap();
    let d = classify(&f.store.object(EVIDENCE, &signed).unwrap())
        .daticert
        .unwrap();
    assert_eq!(d.errore, Errore::Altro);
    assert_eq!(
        d.dati.errore_esteso.as_deref(),
        Some(
            format!(
                "5.7.1 - {PROVIDER} - rifiutato dal server di destinazione: 5.7.1 Message rejected by policy"
            )
            .as_str()
        )
    );
}

/// A crash after the refusal was recorded and before the recipient was marked: the retry hands
/// the recorded outcome on (the same request again: receipts writes the notice once) and does
/// not send to that recipient again.
#[tokio::test]
async fn a_refusal_recorded_before_a_crash_is_handed_on_without_a_second_send() {
    let (f, key) = accepted("r4", &[LUIGI, PIERO]).await;
    let outcome = RecipientOutcome {
        recipient: LUIGI.into(),
        status: DeliveryStatus::NotDelivered,
        reason: Some(NotDelivered::UnknownDomain),
        at: delivered_at(),
        item_id: None,
        detail: Some("5.1.2 pec.altro.test does not exist".into()),
    };
    f.state.record_recipient("r4", &outcome).await.unwrap();
    let later = delivered_at() + Duration::minutes(1);
    f.deliver().deliver_object(&key, later).await.unwrap();
    let mail = f.outbox.take_mail();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].destinations, [PIERO]);
    let reqs = requests(&f);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].outcome, outcome);
    assert_eq!(failure_of(&reqs[0].outcome), DeliveryFailure::UnknownDomain);
    assert!(
        f.state
            .relay("r4", LUIGI)
            .await
            .unwrap()
            .unwrap()
            .failed_at
            .is_some()
    );
}

/// Markers written before they were per recipient name the domain: every recipient of it
/// counts as sent (events in flight at the upgrade send nothing twice).
#[tokio::test]
async fn a_domain_marker_of_an_earlier_version_covers_its_recipients() {
    let (f, key) = accepted("r5", &[LUIGI, PIERO]).await;
    assert!(f.state.mark_sent(&key, "pec.altro.test").await.unwrap());
    f.deliver()
        .deliver_object(&key, delivered_at())
        .await
        .unwrap();
    assert!(f.outbox.take_mail().is_empty());
    assert!(requests(&f).is_empty());
}

/// A refused ordinary (esterno) recipient: logged and marked, nothing PEC (no outcome, no
/// request, no failed relay record).
#[tokio::test]
async fn refusals_outside_certified_envelope_recipients_are_only_logged() {
    let (f, key) = accepted("r6", &[LUIGI, ORDINARY]).await;
    f.outbox.reply_to(
        ORDINARY,
        RecipientReply::Refused(refused(550, None, "no such user here", true)),
    );
    f.deliver()
        .deliver_object(&key, delivered_at())
        .await
        .unwrap();
    let mail = f.outbox.take_mail();
    assert_eq!(mail.len(), 2, "one send per domain");
    for m in &mail {
        let expected = if m.destinations == [ORDINARY] {
            Peer::Ordinary
        } else {
            Peer::Provider
        };
        assert_eq!(m.peer, Some(expected), "{:?}", m.destinations);
    }
    assert!(requests(&f).is_empty());
    assert_eq!(f.state.recipient("r6", ORDINARY).await.unwrap(), None);
    let relay = f.state.relay("r6", ORDINARY).await.unwrap().unwrap();
    assert!(!relay.certified && relay.failed_at.is_none());
    assert!(f.state.was_sent(&key, ORDINARY).await.unwrap());
    // Marked: a duplicate sends nothing again.
    f.deliver()
        .deliver_object(&key, delivered_at())
        .await
        .unwrap();
    assert!(f.outbox.take_mail().is_empty());
}

/// The §6 table, from the MX's reply to the NOTA 12 code of the notice.
#[test]
fn refusals_map_to_the_nota12_codes() {
    let cases: [(Refusal, NotDelivered, &str, Errore); 9] = [
        (
            refused(550, Some("5.1.1"), "5.1.1 no such user", true),
            NotDelivered::UnknownUser,
            "5.1.1 - P - indirizzo non valido",
            Errore::NoDest,
        ),
        (
            refused(550, None, "no such user", true),
            NotDelivered::UnknownUser,
            "5.1.1 - P - indirizzo non valido",
            Errore::NoDest,
        ),
        (
            refused(550, Some("5.1.2"), "5.1.2 x.test does not exist", false),
            NotDelivered::UnknownDomain,
            "5.1.2 - P - dominio non valido",
            Errore::NoDominio,
        ),
        (
            refused(556, Some("5.1.10"), "5.1.10 null MX", false),
            NotDelivered::UnknownDomain,
            "5.1.2 - P - dominio non valido",
            Errore::NoDominio,
        ),
        (
            refused(552, Some("5.2.2"), "5.2.2 mailbox full", true),
            NotDelivered::MailboxFull,
            "5.2.2 - P - casella piena",
            Errore::Altro,
        ),
        (
            refused(550, Some("5.2.1"), "5.2.1 mailbox disabled", true),
            NotDelivered::MailboxDisabled,
            "5.2.1 - P - casella disabilitata",
            Errore::Altro,
        ),
        // 550 without an enhanced code for the whole message (MAIL, DATA): not an address.
        (
            refused(550, None, "go away", false),
            NotDelivered::Refused,
            "5.0.0 - P - rifiutato dal server di destinazione: 550 go away",
            Errore::Altro,
        ),
        // The text is the MX's: controls cleaned; its enhanced code leads the detail once.
        (
            refused(554, Some("5.7.1"), "5.7.1 spam\r\nrejected\u{7}", true),
            NotDelivered::Refused,
            "5.7.1 - P - rifiutato dal server di destinazione: 5.7.1 spam  rejected",
            Errore::Altro,
        ),
        (
            refused(553, Some("5.1.3"), "bad address syntax", true),
            NotDelivered::Refused,
            "5.1.3 - P - rifiutato dal server di destinazione: 5.1.3 bad address syntax",
            Errore::Altro,
        ),
    ];
    for (refusal, reason, esteso, errore) in cases {
        let (r, detail) = non_delivery(&refusal);
        assert_eq!(r, reason, "{refusal:?}");
        let outcome = RecipientOutcome {
            recipient: LUIGI.into(),
            status: DeliveryStatus::NotDelivered,
            reason: Some(r),
            at: t0(),
            item_id: None,
            detail: Some(detail),
        };
        let failure = failure_of(&outcome);
        assert_eq!(failure.errore_esteso("P"), esteso, "{refusal:?}");
        assert_eq!(failure.parts().2, errore, "{refusal:?}");
    }

    // The MX's text is cut to 200 characters.
    let long = "x".repeat(500);
    let (_, detail) = non_delivery(&refused(554, Some("5.7.1"), &long, true));
    assert_eq!(detail.chars().count(), DETAIL_MAX_CHARS);
    assert!(detail.starts_with("5.7.1 xxx"));
    // A refused outcome without a detail (none recorded) still gets a notice.
    let bare = RecipientOutcome {
        recipient: LUIGI.into(),
        status: DeliveryStatus::NotDelivered,
        reason: Some(NotDelivered::Refused),
        at: t0(),
        item_id: None,
        detail: None,
    };
    assert_eq!(
        failure_of(&bare).errore_esteso("P"),
        "5.0.0 - P - rifiutato dal server di destinazione"
    );
}

/// An event redriven late (after the 24 h notice, or once the recipient's provider answered)
/// sends nothing: the sender already has the final word.
#[tokio::test]
async fn a_settled_relay_record_is_not_sent_again() {
    let (f, key) = accepted("r8", &[LUIGI, PIERO]).await;
    f.outbox
        .reply_to(PIERO, deferred("451 4.3.0 try again later"));
    assert!(
        f.deliver()
            .deliver_object(&key, delivered_at())
            .await
            .is_err()
    );
    f.outbox.take_mail();
    // The timers' final notice goes out for Piero before the event comes back.
    let late = delivered_at() + Duration::hours(25);
    f.state
        .relay_mark("r8", PIERO, RelayEvent::Notice24, late)
        .await
        .unwrap();
    f.deliver().deliver_object(&key, late).await.unwrap();
    assert!(
        f.outbox.take_mail().is_empty(),
        "nothing sent after the 24 h notice"
    );
    assert!(f.state.was_sent(&key, PIERO).await.unwrap());
}

const DELIVER_Q: &str = "deliver-queue";

/// The SQS record S3 writes for `key` of the evidence bucket at `at`.
fn notification(key: &str, at: DateTime<Utc>) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
    record.message_id = Some(format!("m-{}", at.timestamp()));
    record.body = Some(pec_pipeline::batch::s3_notification(EVIDENCE, key, at));
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    event.records.push(record);
    event
}

/// A deferred relay is retried from the deliver queue with a delay (the event itself is done,
/// no SQS redelivery towards the DLQ), dated from the first attempt; after 24 h it is given up.
#[tokio::test]
async fn a_deferred_relay_comes_back_on_the_deliver_queue_until_24_hours() {
    let (mut f, key) = accepted("r9", &[LUIGI, PIERO]).await;
    f.settings.deliver_queue_url = Some(DELIVER_Q.into());
    let first = delivered_at();
    f.outbox
        .reply_to(PIERO, deferred("451 4.7.1 try again later"));
    let r = f.deliver().handle(notification(&key, first), first).await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    let again = f.outbox.take(DELIVER_Q);
    assert_eq!(again.len(), 1);
    // The same object, announced as at the first attempt.
    let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
    record.body = Some(again[0].clone());
    let announced = pec_pipeline::batch::s3_notifications(&record).unwrap();
    assert_eq!(announced.len(), 1);
    assert_eq!(
        (announced[0].bucket.as_str(), announced[0].key.as_str()),
        (EVIDENCE, key.as_str())
    );
    assert_eq!(announced[0].at, Some(first));
    assert_eq!(f.outbox.take_mail().len(), 1);

    // Five minutes later it comes back: still deferred, queued again, the first time kept.
    let later = first + Duration::minutes(5);
    f.outbox.reply_to(PIERO, deferred("451 4.7.1 still busy"));
    let r = f.deliver().handle(notification(&key, first), later).await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    let mail = f.outbox.take_mail();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].destinations, [PIERO], "only the deferred recipient");
    assert_eq!(f.outbox.take(DELIVER_Q).len(), 1);

    // Then it is taken: nothing queued any more.
    let r = f
        .deliver()
        .handle(notification(&key, first), first + Duration::minutes(20))
        .await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert!(f.outbox.take(DELIVER_Q).is_empty());
    assert!(f.state.was_sent(&key, PIERO).await.unwrap());

    // Another message still deferred a whole day later stops coming back on the queue: its
    // event fails, towards the DLQ and its alarm.
    let (mut g, key) = accepted("r10", &[PIERO]).await;
    g.settings.deliver_queue_url = Some(DELIVER_Q.into());
    g.outbox.reply_to(PIERO, deferred("451 4.3.0 down"));
    let r = g
        .deliver()
        .handle(notification(&key, first), first + Duration::hours(24))
        .await;
    assert_eq!(r.batch_item_failures.len(), 1, "{r:?}");
    assert!(g.outbox.take(DELIVER_Q).is_empty(), "no retry after 24 h");
    assert!(!g.state.was_sent(&key, PIERO).await.unwrap());

    // A local problem (the transport says retrying cannot help) is not retried from the queue:
    // the event fails towards the DLQ and its alarm.
    let (mut l, key) = accepted("r12", &[PIERO]).await;
    l.settings.deliver_queue_url = Some(DELIVER_Q.into());
    l.outbox.fail_next_send(pec_ports::SendError {
        operation: "SMTP relay",
        target: "pec.altro.test".into(),
        message: "cannot be sent: a bare LF".into(),
        permanent: true,
    });
    let r = l.deliver().handle(notification(&key, first), first).await;
    assert_eq!(r.batch_item_failures.len(), 1, "{r:?}");
    assert!(l.outbox.take(DELIVER_Q).is_empty());
    let err = l.deliver().deliver_object(&key, first).await;
    assert!(
        err.is_ok(),
        "the next attempt (no scripted failure) sends it: {err:?}"
    );

    // Without the queue configured, the event fails and SQS brings it back (the former way).
    let (h, key) = accepted("r11", &[PIERO]).await;
    h.outbox.reply_to(PIERO, deferred("451 4.3.0 down"));
    let r = h.deliver().handle(notification(&key, first), first).await;
    assert_eq!(r.batch_item_failures.len(), 1);
}

#[test]
fn relay_retries_back_off_to_a_quarter_of_an_hour() {
    use pec_pipeline::deliver::relay_retry_delay;
    let d = |mins: i64| relay_retry_delay(Duration::minutes(mins));
    assert_eq!(
        [d(0), d(1), d(4), d(8), d(16), d(60), d(23 * 60)],
        [60, 60, 120, 240, 480, 900, 900]
    );
}

const RELAY_Q: &str = "relay-queue-url";

fn relay_worker(
    f: &Flow,
) -> pec_pipeline::relay::Relay<
    &pec_ports::MemoryStore,
    pec_ports::MemoryState,
    &pec_ports::MemoryOutbox,
    &pec_ports::MemoryOutbox,
> {
    pec_pipeline::relay::Relay::new(
        pec_pipeline::relay::RelaySettings {
            provider: f.settings.provider.clone(),
            evidence_bucket: EVIDENCE.into(),
            receipts_queue_url: RECEIPTS_Q.into(),
            relay_queue_url: RELAY_Q.into(),
        },
        &f.store,
        f.state.clone(),
        &f.outbox,
        &f.outbox,
    )
}

fn queued(bodies: &[String]) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    for (i, body) in bodies.iter().enumerate() {
        let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
        record.message_id = Some(format!("q-{i}"));
        record.body = Some(body.clone());
        event.records.push(record);
    }
    event
}

/// `PEC_RELAY=smtp`: deliver sends nothing itself; it hands the envelope to the relay worker on
/// the edge (one request naming the object, its outside recipients and the message), once. The
/// worker sends it, settles each answer as deliver would (a 5xx for a certified recipient is
/// the avviso di mancata consegna at once; a 4xx puts the request back on the relay queue,
/// delayed, the first time kept), and a whole day later gives up towards the relay DLQ.
#[tokio::test]
async fn with_the_smtp_relay_deliver_hands_off_and_the_edge_worker_sends() {
    let (mut f, key) = accepted("w1", &[LUIGI, PIERO]).await;
    f.settings.relay_queue_url = Some(RELAY_Q.into());
    let first = delivered_at();
    let d = f.deliver().deliver_object(&key, first).await.unwrap();
    assert_eq!(sorted(d.relayed), sorted(vec![LUIGI.into(), PIERO.into()]));
    assert!(
        f.outbox.take_mail().is_empty(),
        "deliver sends nothing itself"
    );
    let handed = f.outbox.take(RELAY_Q);
    assert_eq!(handed.len(), 1);
    let request: pec_ports::contract::RelayRequest = serde_json::from_str(&handed[0]).unwrap();
    assert_eq!(
        request,
        pec_ports::contract::RelayRequest {
            version: 1,
            bucket: EVIDENCE.into(),
            key: key.clone(),
            recipients: vec![LUIGI.into(), PIERO.into()],
            message: Some("w1".into()),
            first_at: first,
        }
    );
    // The relay records exist from the hand-off (the timers count from there).
    assert_eq!(
        f.state
            .relay("w1", PIERO)
            .await
            .unwrap()
            .unwrap()
            .relayed_at,
        first
    );
    // A duplicate deliver event hands nothing again.
    f.deliver().deliver_object(&key, first).await.unwrap();
    assert!(f.outbox.take(RELAY_Q).is_empty());
    assert!(
        requests(&f)
            .iter()
            .all(|r| r.message != "w1" || r.outcome.status == DeliveryStatus::Delivered)
    );

    // The worker: LUIGI refused for good, PIERO deferred.
    f.outbox.reply_to(
        LUIGI,
        RecipientReply::Refused(refused(550, Some("5.1.1"), "no such user", true)),
    );
    f.outbox
        .reply_to(PIERO, deferred("451 4.7.1 try again later"));
    let now = first + Duration::seconds(2);
    let r = relay_worker(&f).handle(queued(&handed), now).await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    let mail = f.outbox.take_mail();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].destinations, [LUIGI, PIERO]);
    assert_eq!(mail[0].peer, Some(Peer::Provider));
    assert_eq!(
        mail[0].raw,
        f.store.object(EVIDENCE, &key).unwrap(),
        "byte for byte"
    );
    let reqs = requests(&f);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        (reqs[0].outcome.recipient.as_str(), reqs[0].outcome.reason),
        (LUIGI, Some(NotDelivered::UnknownUser))
    );
    assert!(
        f.state
            .relay("w1", LUIGI)
            .await
            .unwrap()
            .unwrap()
            .failed_at
            .is_some()
    );
    let again = f.outbox.take(RELAY_Q);
    assert_eq!(again.len(), 1, "the deferred request comes back");
    let back: pec_ports::contract::RelayRequest = serde_json::from_str(&again[0]).unwrap();
    assert_eq!(back, request, "unchanged: the first time is kept");

    // Next time PIERO takes it; LUIGI is not sent again, no second request for it.
    let r = relay_worker(&f)
        .handle(queued(&again), first + Duration::minutes(2))
        .await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    let mail = f.outbox.take_mail();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].destinations, [PIERO]);
    assert!(f.outbox.take(RELAY_Q).is_empty());
    assert!(requests(&f).is_empty());
    assert!(f.state.was_sent(&key, PIERO).await.unwrap());
    // A duplicate of the request now sends nothing.
    let r = relay_worker(&f)
        .handle(queued(&again), first + Duration::minutes(3))
        .await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert!(f.outbox.take_mail().is_empty());

    // Still deferred 24 h after the hand-off: the message fails (towards the relay DLQ).
    let (mut g, key) = accepted("w2", &[PIERO]).await;
    g.settings.relay_queue_url = Some(RELAY_Q.into());
    g.deliver().deliver_object(&key, first).await.unwrap();
    let handed = g.outbox.take(RELAY_Q);
    g.outbox.reply_to(PIERO, deferred("451 4.3.0 down"));
    let r = relay_worker(&g)
        .handle(queued(&handed), first + Duration::hours(24))
        .await;
    assert_eq!(r.batch_item_failures.len(), 1, "{r:?}");
    assert!(g.outbox.take(RELAY_Q).is_empty());
}

/// The worker acts only on well-formed requests for signed objects of the evidence bucket;
/// anything else fails (and ends in the relay DLQ under its alarm), sending nothing.
#[tokio::test]
async fn the_relay_worker_refuses_requests_it_cannot_trust() {
    let (f, key) = accepted("w3", &[PIERO]).await;
    let good = serde_json::json!({
        "version": 1, "bucket": EVIDENCE, "key": key, "recipients": [PIERO],
        "message": "w3", "first_at": delivered_at()
    });
    let mut bad = Vec::new();
    bad.push("not json".to_string());
    let mut v = good.clone();
    v["version"] = 2.into();
    bad.push(v.to_string());
    let mut v = good.clone();
    v["bucket"] = "someone-elses".into();
    bad.push(v.to_string());
    let mut v = good.clone();
    v["key"] = "unsigned/msg/w3/busta-trasporto.eml".into();
    bad.push(v.to_string());
    let mut v = good.clone();
    v["key"] = "signed/msg/w3/missing.eml".into();
    bad.push(v.to_string());
    let r = relay_worker(&f).handle(queued(&bad), delivered_at()).await;
    assert_eq!(r.batch_item_failures.len(), bad.len(), "{r:?}");
    assert!(f.outbox.take_mail().is_empty());
    let r = relay_worker(&f)
        .handle(queued(&[good.to_string()]), delivered_at())
        .await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(f.outbox.take_mail().len(), 1);
}
