//! The whole pipeline inside one provider over memory fakes and the test PKI's provider key:
//! ingress, the scan step (fake clean engines), sign, deliver, receipts, sign, deliver. The
//! driver is `common::Flow` (shared with the evidence golden corpus); the same code runs on the
//! emulators in `tests/pipeline.rs` of the integration crate.

mod common;

use common::{ANNA, EVIDENCE, Flow, MARIO};
use pec_core::classify::Kind;
use pec_core::events::EventType;
use pec_pipeline::ingress::IngressOutcome;
use pec_ports::StateStore;

fn message(to: &str, extra: &str) -> String {
    format!(
        "From: Mario Rossi <{MARIO}>\r\nTo: {to}\r\n{extra}Subject: Diffida\r\nMessage-ID: <u1@client.example>\r\nDate: Mon, 23 Nov 2026 10:29:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTesto della diffida.\r\n"
    )
}

fn kinds(v: &[(Kind, String)]) -> Vec<Kind> {
    v.iter().map(|(k, _)| *k).collect()
}

#[tokio::test]
async fn a_normal_message_is_accepted_delivered_and_receipted() {
    let mut f = Flow::new().await;
    f.submit("s1", &message(ANNA, ""), &[ANNA]);
    assert_eq!(
        f.run("s1", 1).await,
        IngressOutcome::ScanRequested { id: "s1".into() }
    );

    assert_eq!(kinds(&f.inbox(ANNA).await), vec![Kind::BustaTrasporto]);
    let mario = f.inbox(MARIO).await;
    let mut k = kinds(&mario);
    k.sort_by_key(|k| k.as_str());
    assert_eq!(k, vec![Kind::Accettazione, Kind::AvvenutaConsegna]);
    assert!(
        mario.iter().any(|(_, s)| s == "ACCETTAZIONE: Diffida"),
        "{mario:?}"
    );
    assert!(
        mario.iter().any(|(_, s)| s == "CONSEGNA: Diffida"),
        "{mario:?}"
    );
    assert!(
        f.inbox(ANNA).await[0].1 == "POSTA CERTIFICATA: Diffida",
        "{:?}",
        f.inbox(ANNA).await
    );

    // The provider log and the bus have one event per emitted message.
    let mut types: Vec<&str> = f
        .state
        .all_log()
        .iter()
        .map(|e| e.event_type.detail_type())
        .collect();
    types.sort();
    assert_eq!(
        types,
        vec![
            "pec.message.accepted",
            "pec.message.delivered",
            "pec.message.envelope-dispatched"
        ]
    );
    let delivered = f
        .state
        .all_log()
        .into_iter()
        .find(|e| e.event_type == EventType::MessageDelivered)
        .unwrap();
    assert_eq!(delivered.recipient.as_deref(), Some(ANNA));
    assert_eq!(delivered.sender, MARIO);
    assert_eq!(delivered.issuer, "Example Gestore PEC S.p.A.");
    assert!(delivered.identificativo.ends_with("@pec.example.test"));
    assert_eq!(f.outbox.events().len(), 3);
    let record = f.state.message("s1").await.unwrap().unwrap();
    assert_eq!(record.state.as_str(), "accepted");
}

#[tokio::test]
async fn every_step_run_three_times_produces_each_receipt_once() {
    let mut f = Flow::new().await;
    f.submit("s2", &message(ANNA, ""), &[ANNA]);
    f.run("s2", 3).await;
    assert_eq!(kinds(&f.inbox(ANNA).await), vec![Kind::BustaTrasporto]);
    assert_eq!(f.inbox(MARIO).await.len(), 2);
    assert_eq!(f.state.all_log().len(), 3);
    let used: u64 = f
        .state
        .mailbox_items(ANNA)
        .await
        .unwrap()
        .iter()
        .map(|i| i.size)
        .sum();
    assert_eq!(
        f.state.mailbox(ANNA).await.unwrap().unwrap().used_bytes,
        used
    );
    let evidence = f.store.keys(EVIDENCE);
    assert_eq!(
        evidence
            .iter()
            .filter(|k| k.starts_with("unsigned/msg/s2/consegna/"))
            .count(),
        1,
        "{evidence:?}"
    );
}

#[tokio::test]
async fn a_missing_mailbox_gets_the_non_delivery_notice() {
    let mut f = Flow::new().await;
    let ghost = "nessuno@pec.example.test";
    f.submit(
        "s3",
        &message(&format!("{ANNA}, {ghost}"), ""),
        &[ANNA, ghost],
    );
    f.run("s3", 1).await;
    let mario = f.inbox(MARIO).await;
    let mut k = kinds(&mario);
    k.sort_by_key(|k| k.as_str());
    assert_eq!(
        k,
        vec![
            Kind::Accettazione,
            Kind::AvvenutaConsegna,
            Kind::ErroreConsegna
        ]
    );
    let notice = f
        .state
        .all_log()
        .into_iter()
        .find(|e| e.event_type == EventType::MessageNotDelivered)
        .unwrap();
    assert_eq!(notice.recipient.as_deref(), Some(ghost));
    assert!(
        notice
            .error_detail
            .as_deref()
            .unwrap()
            .starts_with("5.1.1 - "),
        "{notice:?}"
    );
}

/// A suspended or revoked mailbox refuses the envelope: the sender gets the non-delivery notice
/// "casella disabilitata"; what the mailbox held stays, and so do the provider-log records.
#[tokio::test]
async fn a_suspended_or_revoked_mailbox_gets_the_non_delivery_notice() {
    use pec_pipeline::tenants::{Admin, StatusChange, SuspendReason, change_status};
    for (n, change) in [
        StatusChange::Suspend(SuspendReason::NonPayment),
        StatusChange::Revoke,
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = Flow::new().await;
        f.submit("before", &message(ANNA, ""), &[ANNA]);
        f.run("before", 1).await;
        let held = f.inbox(ANNA).await.len();
        assert_eq!(held, 1, "{change:?}: delivered before the change");
        change_status(&f.state, &Admin::Operator, ANNA, change, common::t0())
            .await
            .unwrap();
        let id = format!("after-{n}");
        f.submit(&id, &message(ANNA, ""), &[ANNA]);
        f.run(&id, 1).await;
        assert_eq!(
            f.inbox(ANNA).await.len(),
            held,
            "{change:?}: nothing more delivered"
        );
        let k = kinds(&f.inbox(MARIO).await);
        assert_eq!(
            k.iter().filter(|k| **k == Kind::ErroreConsegna).count(),
            1,
            "{change:?}: {k:?}"
        );
        let log = f.state.all_log();
        let notice = log
            .iter()
            .find(|e| e.event_type == EventType::MessageNotDelivered)
            .unwrap();
        assert_eq!(notice.recipient.as_deref(), Some(ANNA));
        let detail = notice.error_detail.as_deref().unwrap_or_default();
        assert!(
            detail.starts_with("5.2.1 - ") && detail.ends_with(" - casella disabilitata"),
            "{change:?}: {detail}"
        );
        assert!(
            log.iter()
                .any(|e| e.event_type == EventType::MessageDelivered
                    && e.recipient.as_deref() == Some(ANNA)),
            "{change:?}: the earlier delivery's log record is kept"
        );
    }
}

#[tokio::test]
async fn a_bcc_is_refused_with_the_non_acceptance_notice() {
    let mut f = Flow::new().await;
    f.submit("s4", &message(ANNA, &format!("Bcc: {ANNA}\r\n")), &[ANNA]);
    let o = f.run("s4", 2).await;
    assert!(matches!(o, IngressOutcome::Rejected { .. }), "{o:?}");
    assert_eq!(kinds(&f.inbox(MARIO).await), vec![Kind::NonAccettazione]);
    assert!(f.inbox(ANNA).await.is_empty());
    let e = &f.state.all_log()[0];
    assert_eq!(e.event_type, EventType::MessageRejected);
    assert_eq!(
        f.state.message("s4").await.unwrap().unwrap().state,
        pec_ports::MessageState::Rejected
    );
}

/// Issue 11, defect 1: a `To` with raw 8-bit bytes, or folded with a whitespace-only line, used
/// to get an acceptance receipt while its envelope (which repeats `To`) could never be signed.
/// Now it is refused by the formal checks, with the reason, and nothing is accepted.
#[tokio::test]
async fn a_to_header_the_envelope_cannot_carry_is_refused_not_accepted() {
    let cases: [(&str, Vec<u8>); 3] = [
        ("h1", format!("\"Ànna\" <{ANNA}>").into_bytes()),
        (
            "h2",
            [&b"\"\xc0nna\" <"[..], ANNA.as_bytes(), b">"].concat(),
        ),
        ("h3", format!("{ANNA},\r\n \r\n {ANNA}").into_bytes()),
    ];
    for (id, to) in cases {
        let mut f = Flow::new().await;
        let mut raw = format!("From: Mario Rossi <{MARIO}>\r\nTo: ").into_bytes();
        raw.extend_from_slice(&to);
        raw.extend_from_slice(
            b"\r\nSubject: Diffida\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nTesto.\r\n",
        );
        f.submit_envelope(&common::envelope(id, MARIO, MARIO, &[ANNA]), &raw);
        let o = f.run(id, 1).await;
        match &o {
            IngressOutcome::Rejected { reasons, .. } => assert!(
                reasons.contains(
                    "l'intestazione To non può essere riportata nella busta di trasporto"
                ),
                "{id}: {reasons}"
            ),
            other => panic!("{id}: {other:?}"),
        }
        assert_eq!(
            kinds(&f.inbox(MARIO).await),
            vec![Kind::NonAccettazione],
            "{id}"
        );
        assert!(f.inbox(ANNA).await.is_empty(), "{id}");
        assert!(
            !f.store
                .keys(EVIDENCE)
                .iter()
                .any(|k| k.ends_with("accettazione.eml") && !k.ends_with("non-accettazione.eml")),
            "{id}: no acceptance"
        );
    }
}

/// Issue 11, defect 2: a message whose multipart never closes, wrapped in our envelope, made the
/// envelope's own multipart/signed unreadable to MIME parsers (the open inner part swallows the
/// outer boundaries): our verifier, and other providers', judged our envelope tampered. Such a
/// message is refused by the formal checks, and what is accepted verifies.
#[tokio::test]
async fn an_unterminated_multipart_is_refused_and_what_is_accepted_verifies() {
    let broken = |id: &str, close: bool| {
        format!(
            "From: Mario Rossi <{MARIO}>\r\nTo: {ANNA}\r\nSubject: Struttura {id}\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"interno\"\r\n\r\n\
             --interno\r\nContent-Type: multipart/alternative; boundary=\"annidato\"\r\n\r\n\
             --annidato\r\nContent-Type: text/plain\r\n\r\ntesto\r\n{}\
             --interno\r\nContent-Type: text/plain\r\n\r\nallegato\r\n{}",
            if close { "--annidato--\r\n" } else { "" },
            if close { "--interno--\r\n" } else { "" },
        )
    };
    let mut f = Flow::new().await;
    f.submit("u1", &broken("u1", false), &[ANNA]);
    match f.run("u1", 1).await {
        IngressOutcome::Rejected { reasons, .. } => {
            assert!(reasons.contains("struttura MIME"), "{reasons}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(kinds(&f.inbox(MARIO).await), vec![Kind::NonAccettazione]);
    assert!(f.inbox(ANNA).await.is_empty());

    // The same message, terminated: accepted, and the envelope verifies (inbox asserts Valid).
    let mut f = Flow::new().await;
    f.submit("u2", &broken("u2", true), &[ANNA]);
    assert_eq!(
        f.run("u2", 1).await,
        IngressOutcome::ScanRequested { id: "u2".into() }
    );
    assert_eq!(kinds(&f.inbox(ANNA).await), vec![Kind::BustaTrasporto]);
}

#[tokio::test]
async fn a_full_mailbox_refuses_the_envelope_and_usage_is_exact_after_deletes() {
    let mut f = Flow::new().await;
    let small = "piccola@pec.example.test";
    f.mailbox(small, 14_000).await;
    // The first envelope fits.
    f.submit("s5", &message(small, ""), &[small]);
    f.run("s5", 1).await;
    let items = f.state.mailbox_items(small).await.unwrap();
    assert_eq!(items.len(), 1);
    let used = f.state.mailbox(small).await.unwrap().unwrap().used_bytes;
    assert_eq!(used, items[0].size);
    assert!(
        used > 7_000 && used <= 14_000,
        "envelope size {used}: the test needs two not to fit"
    );

    // The second does not: non-delivery notice "casella piena".
    f.submit("s6", &message(small, ""), &[small]);
    f.run("s6", 1).await;
    assert_eq!(f.state.mailbox_items(small).await.unwrap().len(), 1);
    let notice = f
        .state
        .all_log()
        .into_iter()
        .find(|e| e.event_type == EventType::MessageNotDelivered)
        .unwrap();
    assert!(
        notice
            .error_detail
            .as_deref()
            .unwrap()
            .starts_with("5.2.2 - "),
        "{notice:?}"
    );

    // After deleting, usage is exactly zero and the next envelope fits again.
    let deleted = f
        .state
        .delete_item(small, &items[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.size, used);
    assert_eq!(f.state.mailbox(small).await.unwrap().unwrap().used_bytes, 0);
    assert!(
        f.state
            .delete_item(small, &items[0].id)
            .await
            .unwrap()
            .is_none()
    );
    f.submit("s7", &message(small, ""), &[small]);
    f.run("s7", 1).await;
    let log: Vec<_> = f
        .state
        .all_log()
        .into_iter()
        .map(|e| (e.event_type, e.identificativo, e.recipient, e.error_detail))
        .collect();
    assert_eq!(
        f.state.mailbox_items(small).await.unwrap().len(),
        1,
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_pec_delivered_to_a_mailbox_that_opted_in_is_one_sms() {
    use pec_ports::sms::{MemorySms, SmsRequest, SmsSettings};
    const SMS_Q: &str = "sms-queue";
    let mut f = Flow::empty().await;
    f.settings.sms_queue_url = Some(SMS_Q.into());
    f.mailbox(MARIO, common::standard_quota()).await;
    let anna = pec_ports::Mailbox {
        plan: pec_core::plan::Plan::Gold,
        sms: Some(SmsSettings {
            number: "+393331234567".into(),
            ordinary: false,
        }),
        ..common::mailbox_record(ANNA, common::standard_quota())
    };
    f.add_mailbox(&anna).await;
    // Every step three times: three notices for one envelope, none for Mario's receipts.
    f.submit("s9", &message(ANNA, ""), &[ANNA]);
    f.run("s9", 3).await;
    let notices = f.outbox.take(SMS_Q);
    assert_eq!(notices.len(), 3, "{notices:?}");
    let sms = MemorySms::default();
    let step = pec_pipeline::sms::SmsNotify {
        config: pec_pipeline::sms::SmsConfig {
            queue_url: SMS_Q.into(),
            window: chrono::Duration::seconds(600),
        },
        state: f.state.clone(),
        sms: &sms,
        queue: &f.outbox,
    };
    for body in &notices {
        let request: SmsRequest = serde_json::from_str(body).unwrap();
        let SmsRequest::Notice(n) = &request else {
            panic!("{body}")
        };
        assert_eq!((n.mailbox.as_str(), n.sender.as_str()), (ANNA, MARIO));
        step.request(&request, n.at).await.unwrap();
    }
    assert_eq!(
        sms.sent(),
        vec![(
            "+393331234567".to_string(),
            format!("PEC per {ANNA} da {MARIO}: Diffida")
        )]
    );
    assert!(f.outbox.take(SMS_Q).is_empty(), "no flush: nothing waited");
}

/// The access point tells a PEC address at another provider from an ordinary one by the
/// provider index. Without a usable index the submission waits (the record fails: retried,
/// then the DLQ and its alarm) instead of calling the recipient "esterno"; a recipient of ours
/// alone needs no index.
#[tokio::test]
async fn a_recipient_at_another_provider_waits_for_a_usable_provider_index() {
    use pec_pipeline::{StepError, TrustError};
    let f = Flow::new().await;
    let elsewhere = format!("luigi.verdi@{}", pec_testkit::pki::ALTRO_DOMAIN);
    f.submit("x1", &message(&elsewhere, ""), &[&elsewhere]);
    let err = f
        .ingress()
        .handle_object(common::RAW, "submitted/x1.json")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StepError::Trust(TrustError::Missing { .. })),
        "{err}"
    );
    assert!(f.outbox.take(common::SCAN_Q).is_empty(), "nothing went on");

    f.submit("x2", &message(ANNA, ""), &[ANNA]);
    assert_eq!(
        f.ingress()
            .handle_object(common::RAW, "submitted/x2.json")
            .await
            .unwrap(),
        IngressOutcome::ScanRequested { id: "x2".into() }
    );

    f.store.insert(
        EVIDENCE,
        pec_pipeline::DEFAULT_PROVIDER_INDEX_KEY,
        f.pki.index_ldif().into_bytes(),
    );
    assert_eq!(
        f.ingress()
            .handle_object(common::RAW, "submitted/x1.json")
            .await
            .unwrap(),
        IngressOutcome::ScanRequested { id: "x1".into() }
    );
}
