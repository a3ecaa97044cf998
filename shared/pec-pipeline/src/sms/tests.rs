use super::*;
use chrono::TimeZone;
use pec_core::plan::Plan;
use pec_ports::sms::{MemorySms, SmsSettings};
use pec_ports::{MemoryOutbox, MemoryState};

const QUEUE: &str = "https://sqs/sms";
const NUMBER: &str = "+393331234567";
const MAILBOX: &str = "mario.rossi@pec.example.test";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 7, 1, 8, 0, 0).unwrap()
}

fn mailbox(plan: Plan, sms: Option<SmsSettings>) -> Mailbox {
    Mailbox {
        address: MAILBOX.into(),
        tenant: "t1".into(),
        plan,
        expansions_gb: 0,
        quota_bytes: 1 << 30,
        used_bytes: 0,
        password_hash: "!".into(),
        locked: false,
        status: Default::default(),
        member: None,
        status_note: None,
        agreement_accepted_at: None,
        refuse_ordinary: false,
        lock: None,
        ordinary_spam: Default::default(),
        sms,
        created_at: t0(),
    }
}

fn opted_in(ordinary: bool) -> Option<SmsSettings> {
    Some(SmsSettings {
        number: NUMBER.into(),
        ordinary,
    })
}

fn notice(item: &str, secs: i64) -> SmsNotice {
    SmsNotice {
        version: 1,
        mailbox: MAILBOX.into(),
        item: item.into(),
        sender: format!("{item}@pec.altro.test"),
        subject: format!("Oggetto {item}"),
        ordinary: false,
        at: t0() + Duration::seconds(secs),
    }
}

struct World {
    state: MemoryState,
    sms: MemorySms,
    queue: MemoryOutbox,
}

impl World {
    async fn new(m: Mailbox) -> World {
        let state = MemoryState::new();
        assert!(state.create_mailbox(&m).await.unwrap());
        World {
            state,
            sms: MemorySms::default(),
            queue: MemoryOutbox::new(),
        }
    }

    fn step(&self) -> SmsNotify<MemoryState, &MemorySms, &MemoryOutbox> {
        SmsNotify {
            config: SmsConfig {
                queue_url: QUEUE.into(),
                window: Duration::seconds(600),
            },
            state: self.state.clone(),
            sms: &self.sms,
            queue: &self.queue,
        }
    }

    async fn notice(&self, n: &SmsNotice, secs: i64) -> Result<&'static str, StepError> {
        self.step()
            .request(
                &SmsRequest::Notice(n.clone()),
                t0() + Duration::seconds(secs),
            )
            .await
    }

    /// Runs every flush on the queue at `secs`; what each said.
    async fn flushes(&self, secs: i64) -> Vec<&'static str> {
        let mut out = Vec::new();
        for body in self.queue.take(QUEUE) {
            let request: SmsRequest = serde_json::from_str(&body).unwrap();
            assert!(matches!(request, SmsRequest::Flush { .. }), "{body}");
            out.push(
                self.step()
                    .request(&request, t0() + Duration::seconds(secs))
                    .await
                    .unwrap(),
            );
        }
        out
    }
}

#[tokio::test]
async fn a_new_pec_is_one_sms_at_once_and_a_duplicate_sends_nothing() {
    let w = World::new(mailbox(Plan::Gold, opted_in(false))).await;
    let n = notice("m1", 0);
    assert_eq!(w.notice(&n, 1).await.unwrap(), "sent");
    assert_eq!(w.notice(&n, 2).await.unwrap(), "already notified");
    assert_eq!(
        w.sms.sent(),
        vec![(
            NUMBER.to_string(),
            "PEC per mario.rossi@pec.example.test da m1@pec.altro.test: Oggetto m1".to_string()
        )]
    );
    assert!(w.queue.sent().is_empty(), "no flush for a single notice");
}

#[tokio::test]
async fn a_burst_is_one_sms_then_one_digest_at_the_window_end() {
    let w = World::new(mailbox(Plan::Gold, opted_in(false))).await;
    assert_eq!(w.notice(&notice("m1", 0), 0).await.unwrap(), "sent");
    for (i, item) in ["m2", "m3", "m4"].iter().enumerate() {
        let at = 60 * (i as i64 + 1);
        assert_eq!(
            w.notice(&notice(item, at), at).await.unwrap(),
            "waiting for the digest"
        );
    }
    // A duplicate of a waiting notice schedules its flush again, and adds nothing.
    assert_eq!(
        w.notice(&notice("m3", 120), 130).await.unwrap(),
        "waiting for the digest"
    );
    assert_eq!(w.sms.sent().len(), 1);
    // Early flushes put themselves back; at the window's end the first sends the digest,
    // the others find the window over.
    assert_eq!(w.flushes(300).await, vec!["flush rescheduled"; 4]);
    assert_eq!(
        w.flushes(600).await,
        vec![
            "sent",
            "nothing to flush",
            "nothing to flush",
            "nothing to flush"
        ]
    );
    let sent = w.sms.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        sent[1].1,
        "3 nuovi messaggi per mario.rossi@pec.example.test dalle 10:01. L'ultimo da \
         m4@pec.altro.test: Oggetto m4"
    );
    // Covered by the digest: a late duplicate sends nothing.
    assert_eq!(
        w.notice(&notice("m2", 60), 601).await.unwrap(),
        "already notified"
    );
    // Within the digest's own window the next one waits; after it, one goes at once.
    assert_eq!(
        w.notice(&notice("m5", 700), 700).await.unwrap(),
        "waiting for the digest"
    );
    assert_eq!(w.flushes(1200).await, vec!["sent"]);
    assert_eq!(
        w.sms.sent()[2].1,
        "PEC per mario.rossi@pec.example.test da m5@pec.altro.test: Oggetto m5",
        "one waiting notice is sent as itself"
    );
    assert_eq!(w.notice(&notice("m6", 1900), 1900).await.unwrap(), "sent");
    assert_eq!(w.sms.sent().len(), 4);
}

#[tokio::test]
async fn a_duplicate_after_a_later_sms_is_still_recognised() {
    let w = World::new(mailbox(Plan::Gold, opted_in(false))).await;
    assert_eq!(w.notice(&notice("a", 0), 0).await.unwrap(), "sent");
    // After the window, B goes at once; then A's notice comes again (a deliver retry).
    assert_eq!(w.notice(&notice("b", 700), 700).await.unwrap(), "sent");
    assert_eq!(
        w.notice(&notice("a", 0), 720).await.unwrap(),
        "already notified"
    );
    assert_eq!(w.sms.sent().len(), 2);
    assert!(w.queue.sent().is_empty(), "nothing waits");
}

#[tokio::test]
async fn only_mailboxes_that_want_it_get_sms() {
    // A plan without SMS notification, even opted in.
    let w = World::new(mailbox(Plan::Standard, opted_in(true))).await;
    assert_eq!(w.notice(&notice("m1", 0), 0).await.unwrap(), "not wanted");
    // Not opted in.
    let w = World::new(mailbox(Plan::Gold, None)).await;
    assert_eq!(w.notice(&notice("m1", 0), 0).await.unwrap(), "not wanted");
    // Ordinary mail only when asked.
    let w = World::new(mailbox(Plan::Gold, opted_in(false))).await;
    let ordinary = SmsNotice {
        ordinary: true,
        ..notice("o1", 0)
    };
    assert_eq!(w.notice(&ordinary, 0).await.unwrap(), "not wanted");
    let w = World::new(mailbox(Plan::Gold, opted_in(true))).await;
    assert_eq!(w.notice(&ordinary, 0).await.unwrap(), "sent");
    assert!(w.sms.sent()[0].1.starts_with("Posta ordinaria per "));
    // A locked mailbox.
    let mut locked = mailbox(Plan::Gold, opted_in(false));
    locked.locked = true;
    let w = World::new(locked).await;
    assert_eq!(w.notice(&notice("m1", 0), 0).await.unwrap(), "not wanted");
    assert!(w.sms.sent().is_empty());
}

#[tokio::test]
async fn a_stale_notice_is_dropped() {
    let w = World::new(mailbox(Plan::Gold, opted_in(false))).await;
    assert_eq!(w.notice(&notice("m1", 0), 3601).await.unwrap(), "stale");
    assert!(w.sms.sent().is_empty());
}

#[tokio::test]
async fn a_refused_number_is_logged_not_retried_and_an_outage_is_retried() {
    let w = World::new(mailbox(Plan::Gold, opted_in(false))).await;
    w.sms.refuse.lock().unwrap().push(NUMBER.into());
    assert_eq!(w.notice(&notice("m1", 0), 0).await.unwrap(), "refused");
    // The window is claimed: the same notice again is not sent again.
    assert_eq!(
        w.notice(&notice("m1", 0), 5).await.unwrap(),
        "already notified"
    );

    let w = World::new(mailbox(Plan::Gold, opted_in(false))).await;
    w.sms.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = w.notice(&notice("m1", 0), 0).await.unwrap_err();
    assert!(
        matches!(err, StepError::Sms(SmsError::Unavailable(_))),
        "{err}"
    );
    assert_eq!(
        w.state.sms_window(MAILBOX).await.unwrap(),
        Some(SmsWindow::default()),
        "the window was put back"
    );
    w.sms.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(w.notice(&notice("m1", 0), 30).await.unwrap(), "sent");
    assert_eq!(w.sms.sent().len(), 1);
}

#[test]
fn the_rule_at_the_window_edges() {
    let len = Duration::seconds(600);
    let sent = SmsWindow {
        last_sent_at: Some(t0()),
        notified: [("m1".to_string(), t0())].into(),
        ..Default::default()
    };
    // One second before the end: waits; at the end, with nothing waiting: at once.
    assert!(matches!(
        decide(Some(&sent), &notice("m2", 599), t0() + Duration::seconds(599), len),
        Decision::Wait { flush_in, .. } if flush_in == Duration::seconds(1)
    ));
    assert!(matches!(
        decide(
            Some(&sent),
            &notice("m2", 600),
            t0() + Duration::seconds(600),
            len
        ),
        Decision::SendNow(_)
    ));
    // After the end but with notices still waiting (their flush is late): it joins them and
    // the flush is due now.
    let waiting = SmsWindow {
        pending: ["m2".to_string()].into(),
        pending_since: Some(t0()),
        latest: Some(notice("m2", 10)),
        ..sent.clone()
    };
    assert!(matches!(
        decide(Some(&waiting), &notice("m3", 700), t0() + Duration::seconds(700), len),
        Decision::Wait { flush_in, window: Some(w), .. } if flush_in.is_zero() && w.waiting() == 2
    ));
    // A flush of another window does nothing.
    assert_eq!(
        decide_flush(Some(&waiting), t0() - Duration::seconds(1), t0() + len, len),
        FlushDecision::Nothing
    );
}

#[test]
fn a_huge_burst_is_counted_beyond_the_ids_kept() {
    let len = Duration::seconds(600);
    let mut w = SmsWindow {
        last_sent_at: Some(t0()),
        ..Default::default()
    };
    for i in 0..(WINDOW_IDS + 5) {
        match decide(
            Some(&w),
            &notice(&format!("m{i}"), 1),
            t0() + Duration::seconds(1),
            len,
        ) {
            Decision::Wait {
                window: Some(next), ..
            } => w = next,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(w.pending.len(), WINDOW_IDS);
    assert_eq!(w.waiting(), WINDOW_IDS + 5);
    let FlushDecision::Send { count, .. } = decide_flush(Some(&w), t0(), t0() + len, len) else {
        panic!("due");
    };
    assert_eq!(count, WINDOW_IDS + 5);
}
