//! The spam lockout (issue #18) over memory fakes: spam scored at the scan step is accepted
//! and still certified, its detection logged by ingress; the sweep locks at the rule's edges
//! (injected times), once, with one reset link, whoever runs it and how often; the reset link
//! sets a new password and unlocks, once and before it expires; old detections never lock again.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{ANNA, Flow, MARIO, TENANT};
use pec_core::lockout::LockoutRule;
use pec_pipeline::ingress::IngressOutcome;
use pec_pipeline::lockout::{Locked, LockoutSettings, SweepLine, lock, sweep, unlock};
use pec_ports::activation::{ActivationError, NOT_ACTIVATED, activate};
use pec_ports::sms::MemorySms;
use pec_ports::spam::{GTUBE, Points, SpamDetection};
use pec_ports::{LockNote, MemberRecord, MemberStatus, MemoryOutbox, MemoryState, StateStore};

fn settings() -> LockoutSettings {
    LockoutSettings {
        rule: LockoutRule::default(),
        sweep_every: Duration::minutes(5),
        reset_valid: Duration::hours(24),
        reset_url: "https://pec.example.test/attiva".into(),
        provider_domain: "pec.example.test".into(),
        provider_name: "Example Gestore PEC S.p.A.".into(),
    }
}

fn t(minutes: i64) -> DateTime<Utc> {
    common::t0() + Duration::minutes(minutes)
}

/// A Flow whose MARIO mailbox belongs to an imported member with a contact address.
async fn flow_with_member() -> Flow {
    let f = Flow::empty().await;
    let mut mario = common::mailbox_record(MARIO, common::standard_quota());
    mario.member = Some("RSSMRA80A01H501U".into());
    mario.password_hash = "$argon2id$old".into();
    f.add_mailbox(&mario).await;
    f.mailbox(ANNA, common::standard_quota()).await;
    f.state
        .claim_member(&MemberRecord {
            tenant: TENANT.into(),
            fiscal_code: "RSSMRA80A01H501U".into(),
            nome: "Mario".into(),
            cognome: "Rossi".into(),
            email: "mario@contatti.example".into(),
            mobile: None,
            plan: pec_core::plan::Plan::Standard,
            address: MARIO.into(),
            status: MemberStatus::Created,
            imported_at: common::t0(),
            link: None,
        })
        .await
        .unwrap();
    f
}

async fn detect(state: &MemoryState, mailbox: &str, minutes: &[i64]) {
    for (i, m) in minutes.iter().enumerate() {
        state
            .record_spam(&SpamDetection {
                mailbox: mailbox.into(),
                at: t(*m),
                message: format!("s{i}-{m}"),
                identificativo: format!("{i}@pec.example.test"),
                score: Points::new(15.0).unwrap(),
            })
            .await
            .unwrap();
    }
}

async fn run(
    f: &Flow,
    mail: &MemoryOutbox,
    now: DateTime<Utc>,
    tokens: &mut u32,
) -> Vec<SweepLine> {
    let mut next = || {
        *tokens += 1;
        format!("token-number-{tokens}-padded-to-be-long")
    };
    sweep(
        &f.state,
        mail,
        &MemorySms::default(),
        &settings(),
        now,
        &mut next,
    )
    .await
    .unwrap()
}

fn outcome(lines: &[SweepLine], mailbox: &str) -> &'static str {
    lines
        .iter()
        .find(|l| l.mailbox == mailbox)
        .map(|l| l.outcome)
        .unwrap_or("not seen")
}

#[tokio::test]
async fn spam_is_accepted_certified_and_logged_for_the_lockout() {
    let mut f = flow_with_member().await;
    let raw = format!(
        "From: Mario Rossi <{MARIO}>\r\nTo: {ANNA}\r\nSubject: Offerta\r\nMessage-ID: <sp1@client.example>\r\nDate: Mon, 23 Nov 2026 10:29:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{GTUBE}\r\n"
    );
    f.submit("sp1", &raw, &[ANNA]);
    // Twice: a duplicate hand-off logs nothing more.
    assert_eq!(
        f.run("sp1", 2).await,
        IngressOutcome::ScanRequested { id: "sp1".into() }
    );
    // The PEC engine still certified it (the rules require it): delivered to Anna.
    assert_eq!(f.inbox(ANNA).await.len(), 1);
    let logged = f.state.spam_detections(MARIO, t(-60)).await.unwrap();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].message, "sp1");
    // Dated by its submission, not by its scan.
    assert_eq!(logged[0].at, common::t0());

    // An ordinary message is not a detection.
    f.submit("ok1", &raw.replace(GTUBE, "Buongiorno."), &[ANNA]);
    f.run("ok1", 1).await;
    assert_eq!(
        f.state.spam_detections(MARIO, t(-60)).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn eleven_in_fifty_nine_minutes_lock_once_with_one_reset_link() {
    let f = flow_with_member().await;
    let mail = MemoryOutbox::new();
    let mut tokens = 0;
    detect(
        &f.state,
        MARIO,
        &(0..11).map(|i| i * 59 / 10).collect::<Vec<_>>(),
    )
    .await;
    // Another sender with 10 in a minute: under the threshold.
    detect(&f.state, ANNA, &(0..10).map(|i| i / 10).collect::<Vec<_>>()).await;

    let now = t(62);
    let lines = run(&f, &mail, now, &mut tokens).await;
    assert_eq!(outcome(&lines, MARIO), "locked", "{lines:?}");
    assert_eq!(outcome(&lines, ANNA), "under-threshold");
    let m = f.state.mailbox(MARIO).await.unwrap().unwrap();
    assert!(m.locked && !m.in_service());
    assert_eq!(
        m.password_hash, NOT_ACTIVATED,
        "the stolen password no longer works"
    );
    let note = m.lock.clone().unwrap();
    assert_eq!(
        (note.reason.as_str(), note.since, note.detections),
        ("spam", now, 11)
    );

    // Run again, and two at once: nothing more is locked or sent.
    assert_eq!(
        outcome(&run(&f, &mail, now, &mut tokens).await, MARIO),
        "already-locked"
    );
    let mut t1 = 100;
    let mut t2 = 200;
    let (a, b) = tokio::join!(
        run(&f, &mail, t(63), &mut t1),
        run(&f, &mail, t(63), &mut t2)
    );
    assert_eq!(outcome(&a, MARIO), "already-locked");
    assert_eq!(outcome(&b, MARIO), "already-locked");
    let sent = mail.take_mail();
    assert_eq!(sent.len(), 1, "one reset link: {sent:?}");
    // One provider-log record of the lock, however many sweeps saw it.
    let records: Vec<_> = f
        .state
        .all_log()
        .into_iter()
        .filter(|e| e.event_type == pec_core::events::EventType::MailboxLocked)
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(
        (
            r.sender.as_str(),
            r.at,
            r.error.as_deref(),
            r.receipt_type.as_str()
        ),
        (MARIO, now, Some("spam"), "blocco-casella")
    );
    assert_eq!(r.issuer, "Example Gestore PEC S.p.A.");
    assert!(
        r.error_detail
            .as_deref()
            .unwrap()
            .starts_with("11 outbound messages"),
        "{r:?}"
    );
    assert_eq!(
        sent[0].destinations,
        vec!["mario@contatti.example".to_string()]
    );
    assert_eq!(sent[0].source, "noreply@pec.example.test");
    let text = String::from_utf8_lossy(&sent[0].raw).to_string();
    assert!(text.contains("bloccata per spam"), "{text}");
    assert!(
        text.contains("https://pec.example.test/attiva#token-number-1-padded-to-be-long"),
        "{text}"
    );

    // The reset: a new password, the lock lifted; the link works once.
    let reset_at = t(90);
    let address = activate(
        &f.state,
        "token-number-1-padded-to-be-long",
        "$argon2id$new",
        false,
        reset_at,
    )
    .await
    .unwrap();
    assert_eq!(address, MARIO);
    let m = f.state.mailbox(MARIO).await.unwrap().unwrap();
    assert!(m.in_service(), "{m:?}");
    assert_eq!(m.password_hash, "$argon2id$new");
    assert_eq!(m.lock.as_ref().unwrap().unlocked_at, Some(reset_at));
    assert!(matches!(
        activate(
            &f.state,
            "token-number-1-padded-to-be-long",
            "$argon2id$x",
            false,
            t(91)
        )
        .await,
        Err(ActivationError::Invalid)
    ));

    // The detections that locked it were paid for: the next sweeps do not lock again...
    let lines = run(&f, &mail, t(95), &mut tokens).await;
    assert_eq!(outcome(&lines, MARIO), "under-threshold", "{lines:?}");
    assert!(mail.take_mail().is_empty());
    // ...but a new burst after the reset does, with a new link.
    detect(
        &f.state,
        MARIO,
        &(0..11).map(|i| 100 + i).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(
        outcome(&run(&f, &mail, t(112), &mut tokens).await, MARIO),
        "locked"
    );
    assert_eq!(mail.take_mail().len(), 1);
}

#[tokio::test]
async fn the_edges_of_the_rule() {
    for (minutes, locks) in [
        ((0..11).map(|i| i * 59 / 10).collect::<Vec<_>>(), true),
        ((0..10).map(|i| i * 5).collect(), false),
        ((0..11).map(|i| i * 61 / 10).collect(), false),
    ] {
        let f = flow_with_member().await;
        let mail = MemoryOutbox::new();
        detect(&f.state, MARIO, &minutes).await;
        let last = *minutes.last().unwrap();
        // Swept every 5 minutes from the first detection to well after the last.
        let mut tokens = 0;
        let mut locked = false;
        for now in (0..=last + 70).step_by(5) {
            let lines = run(&f, &mail, t(now), &mut tokens).await;
            locked |= outcome(&lines, MARIO) == "locked";
        }
        assert_eq!(locked, locks, "{minutes:?}");
        assert_eq!(mail.take_mail().len(), usize::from(locks));
    }
}

#[tokio::test]
async fn a_reset_link_expires_and_an_operator_locks_and_unlocks() {
    let f = flow_with_member().await;
    let mail = MemoryOutbox::new();
    let mut tokens = 0;
    detect(&f.state, MARIO, &(0..11).collect::<Vec<_>>()).await;
    run(&f, &mail, t(12), &mut tokens).await;
    assert_eq!(mail.take_mail().len(), 1);
    // Past its 24 hours the link is refused, and the mailbox stays locked.
    assert!(matches!(
        activate(
            &f.state,
            "token-number-1-padded-to-be-long",
            "$argon2id$new",
            false,
            t(12 + 24 * 60 + 1)
        )
        .await,
        Err(ActivationError::Invalid)
    ));
    assert!(f.state.mailbox(MARIO).await.unwrap().unwrap().locked);

    // The operator unlocks; a lock by the operator sends no link, and the sweep leaves it be.
    assert!(unlock(&f.state, MARIO, t(2000)).await.unwrap());
    assert!(!unlock(&f.state, MARIO, t(2001)).await.unwrap());
    let note = LockNote {
        reason: "other".into(),
        since: t(2002),
        by_operator: true,
        detections: 0,
        unlocked_at: None,
    };
    assert!(matches!(
        lock(&f.state, ANNA, note.clone()).await.unwrap(),
        Locked::Now(_)
    ));
    assert!(matches!(
        lock(&f.state, ANNA, note).await.unwrap(),
        Locked::Already(_)
    ));
    detect(&f.state, ANNA, &(2000..2011).collect::<Vec<_>>()).await;
    let lines = run(&f, &mail, t(2012), &mut tokens).await;
    assert_eq!(outcome(&lines, ANNA), "already-locked");
    assert!(
        mail.take_mail().is_empty(),
        "an operator's lock sends no link"
    );
}

/// A link works only on the lock it was sent for: an operator's lock over a spam lock, a later
/// spam lock, or an activation link never lift one.
#[tokio::test]
async fn a_reset_link_lifts_only_its_own_spam_lock() {
    let f = flow_with_member().await;
    let mail = MemoryOutbox::new();
    let mut tokens = 0;
    detect(&f.state, MARIO, &(0..11).collect::<Vec<_>>()).await;
    run(&f, &mail, t(12), &mut tokens).await;
    assert_eq!(mail.take_mail().len(), 1);
    let first = "token-number-1-padded-to-be-long";

    // A plain activation link (an import's, say) does not open a spam-locked mailbox.
    f.state
        .put_activation(&pec_ports::ActivationRecord {
            token_hash: pec_ports::activation::token_hash("plain-activation-token-0001"),
            address: MARIO.into(),
            tenant: TENANT.into(),
            agreement: false,
            expires_at: t(10_000),
            reset_for: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        activate(
            &f.state,
            "plain-activation-token-0001",
            "$argon2id$x",
            false,
            t(13)
        )
        .await,
        Err(ActivationError::Invalid)
    ));

    // The operator locks over the spam lock: the reset link no longer lifts it.
    let operator = LockNote {
        reason: "fraud".into(),
        since: t(14),
        by_operator: true,
        detections: 0,
        unlocked_at: None,
    };
    assert!(matches!(
        lock(&f.state, MARIO, operator).await.unwrap(),
        Locked::Now(_)
    ));
    assert!(matches!(
        activate(&f.state, first, "$argon2id$x", false, t(15)).await,
        Err(ActivationError::Invalid)
    ));
    let m = f.state.mailbox(MARIO).await.unwrap().unwrap();
    assert!(m.locked && m.lock.unwrap().by_operator);

    // Unlocked, then spam-locked again: the first lock's link does not lift the second.
    assert!(unlock(&f.state, MARIO, t(20)).await.unwrap());
    detect(&f.state, MARIO, &(30..41).collect::<Vec<_>>()).await;
    assert_eq!(
        outcome(&run(&f, &mail, t(42), &mut tokens).await, MARIO),
        "locked"
    );
    assert_eq!(mail.take_mail().len(), 1);
    let second = format!("token-number-{tokens}-padded-to-be-long");
    assert!(matches!(
        activate(&f.state, first, "$argon2id$x", false, t(43)).await,
        Err(ActivationError::Invalid)
    ));
    activate(&f.state, &second, "$argon2id$second", false, t(44))
        .await
        .unwrap();
    assert!(f.state.mailbox(MARIO).await.unwrap().unwrap().in_service());
}

#[tokio::test]
async fn the_reset_link_also_goes_by_sms_to_a_contact_mobile_once() {
    let f = flow_with_member().await;
    let mut member = f
        .state
        .member(TENANT, "RSSMRA80A01H501U")
        .await
        .unwrap()
        .unwrap();
    member.mobile = Some("+393331234567".into());
    f.state.put_member(&member).await.unwrap();
    detect(&f.state, MARIO, &(0..11).collect::<Vec<_>>()).await;
    let (mail, sms) = (MemoryOutbox::new(), MemorySms::default());
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("sms-token-{n}-padded-to-be-long-enough")
    };
    let lines = sweep(&f.state, &mail, &sms, &settings(), t(20), &mut next)
        .await
        .unwrap();
    let line = lines.iter().find(|l| l.mailbox == MARIO).unwrap();
    assert_eq!(line.outcome, "locked");
    assert_eq!(
        line.link.as_deref(),
        Some("sent to mario@contatti.example; by SMS to +393331234567")
    );
    // Again: nothing more by mail or SMS.
    sweep(&f.state, &mail, &sms, &settings(), t(21), &mut next)
        .await
        .unwrap();
    assert_eq!(mail.take_mail().len(), 1);
    let sent = sms.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "+393331234567");
    assert!(
        sent[0]
            .1
            .ends_with("https://pec.example.test/attiva#sms-token-1-padded-to-be-long-enough"),
        "{}",
        sent[0].1
    );
    assert!(sent[0].1.contains(MARIO), "{}", sent[0].1);
}
