//! Two providers exchanging PEC over memory fakes: each has its own stores, state, signing key
//! and certificate (the test PKI of `pec-testkit`: one CA, `pec.example.test` and
//! `pec.altro.test`), both are listed in one provider index, and a memory "mail exchange"
//! carries what one relays into the other's inbound (optionally rewriting `Message-ID` and
//! `Date` as SES does). The scan step runs with fake clean engines. The emulator version is in
//! the integration tests.

mod common;

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use pec_core::classify::{Kind, classify};
use pec_core::events::EventType;
use pec_core::plan::Plan;
use pec_core::submission::{ENVELOPE_VERSION, SubmissionEnvelope};
use pec_pipeline::Settings;
use pec_pipeline::deliver::{Deliver, ReceiptRequest};
use pec_pipeline::ingress::Ingress;
use pec_pipeline::receipts::Receipts;
use pec_ports::{
    MailTransport, Mailbox, MemoryOutbox, MemoryState, MemoryStore, RelayEvent, SentMail,
    StateStore, Tenant,
};
use pec_smime::{LocalSigner, TrustAnchors, Verdict, VerifyOptions, verify_message};
use pec_testkit::fixtures::real;
use pec_testkit::pki::{TestPki, TestProvider};

const RAW: &str = common::RAW;
const EVIDENCE: &str = common::EVIDENCE;
const MAILBOXES: &str = common::MAILBOXES;
const SCAN_Q: &str = common::SCAN_Q;
const RECEIPTS_Q: &str = common::RECEIPTS_Q;

const A_DOMAIN: &str = "pec.example.test";
const B_DOMAIN: &str = "pec.altro.test";
const MARIO: &str = "mario.rossi@pec.example.test";
const LUIGI: &str = "luigi.verdi@pec.altro.test";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap()
}

struct Node {
    name: &'static str,
    settings: Settings,
    store: MemoryStore,
    state: MemoryState,
    outbox: MemoryOutbox,
    sign: pec_pipeline::sign::SignStep<MemoryStore, LocalSigner, MemoryState>,
    done: HashSet<String>,
}

impl Node {
    fn ingress(&self) -> Ingress<&MemoryStore, MemoryState, &MemoryOutbox> {
        Ingress::new(
            self.settings.clone(),
            &self.store,
            self.state.clone(),
            &self.outbox,
        )
    }

    fn deliver(
        &self,
    ) -> Deliver<&MemoryStore, MemoryState, &MemoryOutbox, &MemoryOutbox, &MemoryOutbox> {
        Deliver::new(
            self.settings.clone(),
            &self.store,
            self.state.clone(),
            &self.outbox,
            &self.outbox,
            &self.outbox,
        )
    }

    fn receipts(&self) -> Receipts<&MemoryStore, MemoryState> {
        Receipts::new(self.settings.clone(), &self.store, self.state.clone())
    }

    /// Runs every step of this provider until nothing is left; whether anything happened.
    async fn pump(&mut self, now: DateTime<Utc>) -> bool {
        let mut any = false;
        loop {
            let mut progress = false;
            let raw_triggers: Vec<String> = self
                .store
                .keys(RAW)
                .into_iter()
                .filter(|k| k.ends_with(".json") && !self.done.contains(k))
                .collect();
            for key in raw_triggers {
                self.ingress().handle_object(RAW, &key).await.unwrap();
                self.done.insert(key);
                progress = true;
            }
            for request in self.outbox.take(SCAN_Q) {
                // The scan step with engines that find nothing (the scan step has its own
                // tests): its clean hand-off is ingress's next trigger.
                common::scan_clean(&self.settings, &self.store, &request, now).await;
                progress = true;
            }
            let evidence = self.store.keys(EVIDENCE);
            for key in evidence.iter().filter(|k| k.starts_with("scan/clean/")) {
                if self.done.insert(key.clone()) {
                    self.ingress().handle_object(EVIDENCE, key).await.unwrap();
                    progress = true;
                }
            }
            for r in self.outbox.take(RECEIPTS_Q) {
                let r: ReceiptRequest = serde_json::from_str(&r).unwrap();
                self.receipts().build(&r).await.unwrap();
                progress = true;
            }
            for key in self.store.keys(EVIDENCE) {
                if key.starts_with("unsigned/") && self.done.insert(key.clone()) {
                    let body = self.store.object(EVIDENCE, &key).unwrap();
                    self.sign.store().insert(EVIDENCE, &key, body);
                    self.sign.sign_object(EVIDENCE, &key, now).await.unwrap();
                    let signed_key = key.replacen("unsigned/", "signed/", 1);
                    let signed = self.sign.store().object(EVIDENCE, &signed_key).unwrap();
                    self.store.insert(EVIDENCE, &signed_key, signed);
                    progress = true;
                }
            }
            for key in self.store.keys(EVIDENCE) {
                if (key.starts_with("signed/") || key.starts_with("received/"))
                    && self.done.insert(key.clone())
                {
                    self.deliver().deliver_object(&key, now).await.unwrap();
                    progress = true;
                }
            }
            if !progress {
                return any;
            }
            any = true;
        }
    }

    async fn inbox(&self, address: &str, anchors: &TrustAnchors) -> Vec<Stored> {
        let mut out = Vec::new();
        for item in self.state.mailbox_items(address).await.unwrap() {
            let bytes = self.store.object(MAILBOXES, &item.object_key).unwrap();
            let v = verify_message(&bytes, anchors, None, &VerifyOptions::default());
            let c = classify(&bytes);
            out.push(Stored {
                kind: c.kind,
                verdict: v.verdict,
                issuer: c
                    .daticert
                    .as_ref()
                    .map(|d| d.dati.gestore_emittente.clone())
                    .unwrap_or_default(),
                identificativo: c
                    .daticert
                    .as_ref()
                    .map(|d| d.dati.identificativo.clone())
                    .unwrap_or_default(),
                consegna: c.daticert.as_ref().and_then(|d| d.dati.consegna.clone()),
                security_flag: c.headers.x_verifica_sicurezza.clone(),
                to: c.headers.to.clone(),
                errore_esteso: c
                    .daticert
                    .as_ref()
                    .and_then(|d| d.dati.errore_esteso.clone()),
            });
        }
        out
    }
}

#[derive(Debug)]
#[allow(dead_code)]
struct Stored {
    kind: Kind,
    verdict: Verdict,
    issuer: String,
    identificativo: String,
    consegna: Option<String>,
    security_flag: Option<String>,
    to: Vec<String>,
    errore_esteso: Option<String>,
}

struct World {
    a: Node,
    b: Node,
    anchors: TrustAnchors,
    /// What went to domains no provider here serves.
    ordinary: Vec<SentMail>,
    /// Simulate SES: rewrite `Message-ID` and `Date` of everything relayed.
    rewrite: bool,
    now: DateTime<Utc>,
    inbound_seq: u32,
}

fn node(name: &'static str, provider: &TestProvider) -> Node {
    let state = MemoryState::new();
    Node {
        name,
        settings: common::settings_for(provider.core_provider()),
        store: MemoryStore::new(),
        state: state.clone(),
        outbox: MemoryOutbox::new(),
        sign: pec_pipeline::sign::SignStep::new(
            MemoryStore::new(),
            state,
            provider.signer.clone(),
            provider.identity.clone(),
            EVIDENCE,
        ),
        done: HashSet::new(),
    }
}

async fn mailbox(n: &Node, address: &str) {
    n.state
        .create_mailbox(&Mailbox {
            address: address.into(),
            tenant: "t".into(),
            plan: Plan::Standard,
            expansions_gb: 0,
            quota_bytes: Plan::Standard.inbox_bytes(),
            used_bytes: 0,
            password_hash: String::new(),
            locked: false,
            status: Default::default(),
            member: None,
            status_note: None,
            agreement_accepted_at: None,
            refuse_ordinary: false,
            lock: None,
            ordinary_spam: Default::default(),
            sms: None,
            created_at: t0(),
        })
        .await
        .unwrap();
}

impl World {
    async fn new() -> World {
        let pki = TestPki::load();
        let a = node("A", &pki.example);
        let b = node("B", &pki.altro);
        let ldif = pki.index_ldif();
        let pem = pki.ca_pem();
        for n in [&a, &b] {
            n.state
                .put_tenant(&Tenant {
                    id: "t".into(),
                    name: "Tenant".into(),
                    billing: Default::default(),
                })
                .await
                .unwrap();
            n.store.insert(
                EVIDENCE,
                pec_pipeline::DEFAULT_PROVIDER_INDEX_KEY,
                ldif.as_bytes().to_vec(),
            );
            n.store.insert(
                EVIDENCE,
                pec_pipeline::DEFAULT_TRUST_ANCHORS_KEY,
                pem.as_bytes().to_vec(),
            );
        }
        mailbox(&a, MARIO).await;
        mailbox(&b, LUIGI).await;
        World {
            a,
            b,
            anchors: pki.anchors,
            ordinary: Vec::new(),
            rewrite: false,
            now: t0(),
            inbound_seq: 0,
        }
    }

    fn submit(&self, id: &str, raw: &str, recipients: &[&str]) {
        let env = SubmissionEnvelope {
            receipts_folder: None,
            version: ENVELOPE_VERSION,
            id: id.into(),
            received_at: self.now,
            user: MARIO.into(),
            tenant: "t".into(),
            reverse_path: MARIO.into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            client_ip: "127.0.0.1".into(),
            tls: true,
        };
        self.a
            .store
            .insert(RAW, &env.message_key(), raw.as_bytes().to_vec());
        self.a.store.insert(RAW, &env.envelope_key(), env.to_json());
    }

    /// Writes `raw` into `to_node`'s inbound, as SES receiving would.
    fn inject(&mut self, to_b: bool, raw: &[u8], recipients: &[String], source: &str) {
        self.inject_via(to_b, raw, recipients, source, "ses");
    }

    /// As [`World::inject`], through the door `via` (`ses` or `mx`).
    fn inject_via(
        &mut self,
        to_b: bool,
        raw: &[u8],
        recipients: &[String],
        source: &str,
        via: &str,
    ) {
        self.inbound_seq += 1;
        let id = format!("in{:04}", self.inbound_seq);
        let node = if to_b { &self.b } else { &self.a };
        let mut bytes =
            format!("Return-Path: <{source}>\r\nX-SES-Virus-Verdict: PASS\r\n").into_bytes();
        bytes.extend_from_slice(raw);
        node.store.insert(RAW, &format!("inbound/{id}.eml"), bytes);
        let env = serde_json::json!({"version": 1, "recipients": recipients, "source": source,
            "received_at": self.now.to_rfc3339(), "via": via});
        node.store.insert(
            RAW,
            &format!("inbound/{id}.json"),
            env.to_string().into_bytes(),
        );
    }

    fn rewritten(&self, raw: &[u8]) -> Vec<u8> {
        if !self.rewrite {
            return raw.to_vec();
        }
        // SES replaces the top-level Message-ID and Date (headers end at the first CRLFCRLF).
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut out = String::new();
        for line in head.split("\r\n") {
            if line.to_ascii_lowercase().starts_with("message-id:") {
                out.push_str(&format!(
                    "Message-ID: <{}@eu-south-1.amazonses.com>\r\n",
                    self.inbound_seq + 1000
                ));
            } else if line.to_ascii_lowercase().starts_with("date:") {
                out.push_str("Date: Mon, 23 Nov 2026 08:31:00 +0000\r\n");
            } else {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str("\r\n");
        out.push_str(body);
        out.into_bytes()
    }

    /// Carries relayed mail between the providers; whether anything moved.
    fn exchange(&mut self) -> bool {
        let mut moved = false;
        for from_a in [true, false] {
            let mail = if from_a {
                self.a.outbox.take_mail()
            } else {
                self.b.outbox.take_mail()
            };
            for m in mail {
                moved = true;
                let raw = self.rewritten(&m.raw);
                let (to_a, to_b): (Vec<String>, Vec<String>) = (
                    m.destinations
                        .iter()
                        .filter(|d| d.ends_with(A_DOMAIN))
                        .cloned()
                        .collect(),
                    m.destinations
                        .iter()
                        .filter(|d| d.ends_with(B_DOMAIN))
                        .cloned()
                        .collect(),
                );
                if !to_a.is_empty() {
                    self.inject(false, &raw, &to_a, &m.source);
                }
                if !to_b.is_empty() {
                    self.inject(true, &raw, &to_b, &m.source);
                }
                if to_a.is_empty() && to_b.is_empty() {
                    self.ordinary.push(m);
                }
            }
        }
        moved
    }

    async fn run(&mut self) {
        for _ in 0..20 {
            let a = self.a.pump(self.now).await;
            let b = self.b.pump(self.now).await;
            let x = self.exchange();
            self.now += Duration::seconds(1);
            if !(a || b || x) {
                return;
            }
        }
        panic!("the providers never settled");
    }
}

fn message(to: &str) -> String {
    format!(
        "From: Mario Rossi <{MARIO}>\r\nTo: {to}\r\nSubject: Diffida\r\nMessage-ID: <u1@client.example>\r\nDate: Mon, 23 Nov 2026 10:29:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTesto.\r\n"
    )
}

fn kinds(v: &[Stored]) -> Vec<Kind> {
    let mut k: Vec<Kind> = v.iter().map(|s| s.kind).collect();
    k.sort_by_key(|k| k.as_str());
    k
}

async fn across(rewrite: bool) {
    let mut w = World::new().await;
    w.rewrite = rewrite;
    w.submit("s1", &message(LUIGI), &[LUIGI]);
    w.run().await;

    let luigi = w.b.inbox(LUIGI, &w.anchors).await;
    assert_eq!(kinds(&luigi), vec![Kind::BustaTrasporto], "{luigi:#?}");
    assert_eq!(luigi[0].verdict, Verdict::Valid);
    assert_eq!(luigi[0].issuer, "Example Gestore PEC S.p.A.");

    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(
        kinds(&mario),
        vec![Kind::Accettazione, Kind::AvvenutaConsegna],
        "{mario:#?}"
    );
    let record = w.a.state.message("s1").await.unwrap().unwrap();
    for s in &mario {
        assert_eq!(s.verdict, Verdict::Valid, "{s:?}");
        assert_eq!(s.identificativo, record.identificativo);
        assert_eq!(s.to, vec![MARIO.to_string()]);
    }
    let consegna = mario
        .iter()
        .find(|s| s.kind == Kind::AvvenutaConsegna)
        .unwrap();
    assert_eq!(consegna.issuer, "Altro Gestore PEC S.p.A.");
    assert_eq!(consegna.consegna.as_deref(), Some(LUIGI));
    assert!(record.certified.contains(&LUIGI.to_string()));

    // What each side received from the other is evidence, locked 30 months like what it signs.
    for (node, prefix) in [(&w.b, "received/in/"), (&w.a, "received/msg/s1/")] {
        let received: Vec<String> = node
            .store
            .keys(EVIDENCE)
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect();
        assert!(
            !received.is_empty(),
            "{} kept nothing under {prefix}",
            node.name
        );
        for key in received {
            let until = node.store.retained_until(EVIDENCE, &key);
            assert!(
                until.is_some_and(|u| u > w.now + Duration::days(29 * 30)),
                "{key} is not locked: {until:?}"
            );
        }
    }

    // The presa in carico reached A's provider address: logged, not stored; both receipts
    // are on the recipient's record, which is off the timers.
    let relay = w.a.state.relay("s1", LUIGI).await.unwrap().unwrap();
    assert!(relay.certified && relay.taken_at.is_some() && relay.delivered_at.is_some());
    assert!(
        w.a.state
            .timers_due(w.now + Duration::days(2))
            .await
            .unwrap()
            .is_empty()
    );
    let mut a_log: Vec<EventType> = w.a.state.all_log().iter().map(|e| e.event_type).collect();
    a_log.sort_by_key(|t| t.detail_type());
    assert_eq!(
        a_log,
        vec![
            EventType::MessageAccepted,
            EventType::MessageDelivered,
            EventType::EnvelopeDispatched,
            EventType::TakenInCharge
        ]
    );
    let mut b_log: Vec<EventType> = w.b.state.all_log().iter().map(|e| e.event_type).collect();
    b_log.sort_by_key(|t| t.detail_type());
    assert_eq!(
        b_log,
        vec![
            EventType::MessageDelivered,
            EventType::EnvelopeReceived,
            EventType::TakenInCharge
        ]
    );
    let pic =
        w.b.state
            .all_log()
            .into_iter()
            .find(|e| e.event_type == EventType::TakenInCharge)
            .unwrap();
    assert_eq!(pic.issuer, "Altro Gestore PEC S.p.A.");
    assert_eq!(pic.identificativo, record.identificativo);
    assert_eq!(
        pic.delivered_to,
        vec![format!("posta-certificata@{A_DOMAIN}")]
    );
}

#[tokio::test]
async fn a_message_to_another_provider_is_taken_in_charge_delivered_and_receipted() {
    across(false).await;
}

#[tokio::test]
async fn correlation_survives_a_relay_that_rewrites_message_id_and_date() {
    across(true).await;
}

#[tokio::test]
async fn a_missing_mailbox_at_the_other_provider_yields_its_non_delivery_notice() {
    let mut w = World::new().await;
    let ghost = "nessuno@pec.altro.test";
    w.submit("s2", &message(ghost), &[ghost]);
    w.run().await;
    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(
        kinds(&mario),
        vec![Kind::Accettazione, Kind::ErroreConsegna],
        "{mario:#?}"
    );
    let notice = mario
        .iter()
        .find(|s| s.kind == Kind::ErroreConsegna)
        .unwrap();
    assert_eq!(notice.issuer, "Altro Gestore PEC S.p.A.");
    assert_eq!(notice.verdict, Verdict::Valid);
    assert!(
        notice
            .errore_esteso
            .as_deref()
            .unwrap()
            .starts_with("5.1.1")
    );
    let relay = w.a.state.relay("s2", ghost).await.unwrap().unwrap();
    assert!(relay.failed_at.is_some());
}

#[tokio::test]
async fn an_ordinary_recipient_gets_the_message_and_starts_no_timer() {
    let mut w = World::new().await;
    let friend = "amico@ordinaria.test";
    w.submit("s3", &message(friend), &[friend]);
    w.run().await;
    assert_eq!(w.ordinary.len(), 1);
    assert_eq!(w.ordinary[0].destinations, vec![friend.to_string()]);
    assert_eq!(classify(&w.ordinary[0].raw).kind, Kind::BustaTrasporto);
    let relay = w.a.state.relay("s3", friend).await.unwrap().unwrap();
    assert!(!relay.certified);
    assert!(
        w.a.state
            .timers_due(w.now + Duration::days(2))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        kinds(&w.a.inbox(MARIO, &w.anchors).await),
        vec![Kind::Accettazione]
    );
}

#[tokio::test]
async fn ordinary_mail_arrives_as_an_anomaly_envelope() {
    let mut w = World::new().await;
    let raw = "From: someone@ordinaria.test\r\nTo: mario.rossi@pec.example.test\r\nSubject: Ciao\r\nMessage-ID: <o1@ordinaria.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nbody\r\n";
    w.inject(
        false,
        raw.as_bytes(),
        &[MARIO.to_string()],
        "someone@ordinaria.test",
    );
    w.run().await;
    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(kinds(&mario), vec![Kind::BustaAnomalia], "{mario:#?}");
    assert_eq!(mario[0].verdict, Verdict::Valid);
    assert_eq!(mario[0].security_flag, None);
    let e = &w.a.state.all_log()[0];
    assert_eq!(e.event_type, EventType::AnomalyDelivered);
}

/// Issue #21: over our own MX, an `X-SES-Spam-Verdict` field was written by the sender, not by
/// SES: it files nothing in Junk (the same message through SES receiving goes to Junk).
#[tokio::test]
async fn a_spam_verdict_field_is_believed_only_from_ses() {
    let mut w = World::new().await;
    let forged = "X-SES-Spam-Verdict: FAIL\r\nFrom: someone@ordinaria.test\r\nTo: mario.rossi@pec.example.test\r\nSubject: Preventivo\r\nMessage-ID: <mx1@ordinaria.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nbody\r\n";
    w.inject_via(
        false,
        forged.as_bytes(),
        &[MARIO.to_string()],
        "someone@ordinaria.test",
        "mx",
    );
    w.run().await;
    let items = w.a.state.mailbox_items(MARIO).await.unwrap();
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0].kind, "busta-anomalia");
    assert_eq!(items[0].folder, None, "{:#?}", items[0]);
    assert!(
        items[0].evidence_key.ends_with("/anomalia.eml"),
        "{:#?}",
        items[0]
    );
    w.inject_via(
        false,
        forged.replace("mx1@", "ses1@").as_bytes(),
        &[MARIO.to_string()],
        "someone@ordinaria.test",
        "ses",
    );
    w.run().await;
    let junk: Vec<_> =
        w.a.state
            .mailbox_items(MARIO)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.folder.as_deref() == Some("Junk"))
            .collect();
    assert_eq!(junk.len(), 1, "{junk:#?}");
}

/// Issue #18: ordinary mail scored as spam (by the engine, or by SES receiving) is delivered
/// to Junk, or not at all when the mailbox says so; a PEC envelope with the GTUBE pattern is
/// delivered to INBOX as always (PEC is never filtered).
#[tokio::test]
async fn ordinary_spam_goes_to_junk_or_nowhere_and_pec_is_never_filtered() {
    let mut w = World::new().await;
    let deleting = "protocollo@pec.example.test";
    let mut m = common::mailbox_record(deleting, Plan::Standard.inbox_bytes());
    m.ordinary_spam = pec_ports::SpamFiling::Delete;
    assert!(w.a.state.create_mailbox(&m).await.unwrap());
    let gtube = pec_ports::spam::GTUBE;
    let spam = |to: &str, n: u32| {
        format!(
            "From: someone@ordinaria.test\r\nTo: {to}\r\nSubject: Offerta\r\nMessage-ID: <sp{n}@ordinaria.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\n{gtube}\r\n"
        )
    };
    w.inject(
        false,
        spam(MARIO, 1).as_bytes(),
        &[MARIO.to_string()],
        "someone@ordinaria.test",
    );
    w.inject(
        false,
        spam(deleting, 2).as_bytes(),
        &[deleting.to_string()],
        "someone@ordinaria.test",
    );
    // SES's own verdict alone is enough.
    let ses = "X-SES-Spam-Verdict: FAIL\r\nX-SES-Virus-Verdict: PASS\r\nFrom: someone@ordinaria.test\r\nTo: mario.rossi@pec.example.test\r\nSubject: Vinci\r\nMessage-ID: <sp3@ordinaria.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nbody\r\n";
    w.inject(
        false,
        ses.as_bytes(),
        &[MARIO.to_string()],
        "someone@ordinaria.test",
    );
    w.run().await;
    let items = w.a.state.mailbox_items(MARIO).await.unwrap();
    assert_eq!(items.len(), 2, "{items:#?}");
    for item in &items {
        assert_eq!(item.kind, "busta-anomalia");
        assert_eq!(item.folder.as_deref(), Some("Junk"), "{item:#?}");
        assert!(
            item.evidence_key.ends_with("/anomalia-spam.eml"),
            "{item:#?}"
        );
    }
    assert!(w.a.state.mailbox_items(deleting).await.unwrap().is_empty());
    // The envelopes were still built and signed (the evidence stays).
    assert_eq!(
        w.a.state
            .all_log()
            .iter()
            .filter(|e| e.event_type == EventType::AnomalyDelivered)
            .count(),
        3
    );

    // A PEC message with the same pattern, from A to B: B delivers it to INBOX (no folder).
    let pec = format!(
        "From: Mario <{MARIO}>\r\nTo: {LUIGI}\r\nSubject: Offerta\r\nMessage-ID: <p1@client.example>\r\nDate: Mon, 23 Nov 2026 10:29:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{gtube}\r\n"
    );
    w.submit("pb1", &pec, &[LUIGI]);
    w.run().await;
    let envelope =
        w.b.state
            .mailbox_items(LUIGI)
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>();
    let envelope = envelope
        .iter()
        .find(|i| i.kind == "posta-certificata")
        .unwrap_or_else(|| panic!("no PEC envelope at B: {envelope:#?}"));
    assert_eq!(envelope.folder, None);
}

#[tokio::test]
async fn a_tampered_envelope_arrives_as_an_anomaly_with_the_security_flag() {
    let mut w = World::new().await;
    w.submit("s4", &message(LUIGI), &[LUIGI]);
    // Let A accept and relay, then tamper with the envelope on its way.
    w.a.pump(w.now).await;
    let mut mail = w.a.outbox.take_mail();
    assert_eq!(mail.len(), 1);
    let text = String::from_utf8(mail[0].raw.clone()).unwrap();
    assert!(text.contains("Testo."));
    mail[0].raw = text.replacen("Testo.", "Testa.", 1).into_bytes();
    let raw = mail[0].raw.clone();
    w.inject(true, &raw, &[LUIGI.to_string()], &mail[0].source);
    w.run().await;
    let luigi = w.b.inbox(LUIGI, &w.anchors).await;
    assert_eq!(kinds(&luigi), vec![Kind::BustaAnomalia], "{luigi:#?}");
    assert_eq!(luigi[0].security_flag.as_deref(), Some("errore"));
    // No presa in carico and no delivery receipt for a message that failed verification.
    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(kinds(&mario), vec![Kind::Accettazione], "{mario:#?}");
    let relay = w.a.state.relay("s4", LUIGI).await.unwrap().unwrap();
    assert!(relay.taken_at.is_none() && relay.delivered_at.is_none());
    assert_eq!(relay.notice12_at, None);
    let _ = RelayEvent::Notice12;
}

#[tokio::test]
async fn the_real_fixtures_get_their_stated_outcome_at_the_receiving_point() {
    let mut w = World::new().await;
    // The modified Aruba/Sogei envelope: a failed security check -> anomaly with the flag.
    let modified = real("aruba-2018-busta-trasporto-modified.eml");
    w.inject(
        false,
        &modified,
        &[MARIO.to_string()],
        "posta-certificata@pec.aruba.it",
    );
    w.run().await;
    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(kinds(&mario), vec![Kind::BustaAnomalia], "{mario:#?}");
    assert_eq!(mario[0].security_flag.as_deref(), Some("errore"));

    // Ordinary mail and an ordinary bounce -> anomaly envelopes without the flag.
    for name in ["plain-mail.eml", "dsn-failure.eml"] {
        let raw = real(name);
        w.inject(false, &raw, &[MARIO.to_string()], "someone@ordinaria.test");
        w.run().await;
    }
    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(mario.len(), 3, "{mario:#?}");
    assert!(
        mario
            .iter()
            .all(|s| s.kind == Kind::BustaAnomalia && s.verdict == Verdict::Valid)
    );
    assert_eq!(
        mario.iter().filter(|s| s.security_flag.is_some()).count(),
        1,
        "{mario:#?}"
    );

    // Receipts from providers we do not list (truncated signatures): anomalies with the flag.
    for name in [
        "anon-accettazione.eml",
        "anon-errore-consegna.eml",
        "aruba-2018-accettazione.eml",
    ] {
        let raw = real(name);
        w.inject(
            false,
            &raw,
            &[MARIO.to_string()],
            "posta-certificata@fakepec.it",
        );
        w.run().await;
    }
    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(mario.len(), 6, "{mario:#?}");
    assert_eq!(
        mario
            .iter()
            .filter(|s| s.security_flag.as_deref() == Some("errore"))
            .count(),
        4,
        "{mario:#?}"
    );
    let _ = w.b.name;
}

impl World {
    /// A's timer sweep at `at`, then everything it caused.
    async fn sweep_a(&mut self, at: DateTime<Utc>) -> usize {
        let timers = pec_pipeline::timers::Timers::new(
            self.a.settings.clone(),
            &self.a.store,
            self.a.state.clone(),
        );
        let n = timers.sweep(at).await.unwrap().len();
        self.now = at;
        self.a.pump(at).await;
        n
    }
}

#[tokio::test]
async fn the_12h_and_24h_notices_are_emitted_once_each_and_a_late_receipt_still_arrives() {
    let mut w = World::new().await;
    w.submit("s5", &message(LUIGI), &[LUIGI]);
    let sent_at = w.now;
    // A accepts and relays; the envelope is held up on the way to B.
    w.a.pump(w.now).await;
    let held = w.a.outbox.take_mail();
    assert_eq!(held.len(), 1);

    assert_eq!(w.sweep_a(sent_at + Duration::hours(11)).await, 0);
    assert_eq!(
        w.sweep_a(sent_at + Duration::hours(12) + Duration::seconds(5))
            .await,
        1
    );
    assert_eq!(
        w.sweep_a(sent_at + Duration::hours(13)).await,
        0,
        "the 12 h notice twice"
    );
    assert_eq!(
        w.sweep_a(sent_at + Duration::hours(24) + Duration::seconds(5))
            .await,
        1
    );
    assert_eq!(
        w.sweep_a(sent_at + Duration::hours(30)).await,
        0,
        "the 24 h notice twice"
    );
    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(
        kinds(&mario),
        vec![
            Kind::Accettazione,
            Kind::PreavvisoErroreConsegna,
            Kind::PreavvisoErroreConsegna
        ],
        "{mario:#?}"
    );
    let details: Vec<String> = mario
        .iter()
        .filter_map(|s| s.errore_esteso.clone())
        .collect();
    assert!(
        details.iter().any(|d| d.starts_with("4.4.1")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.starts_with("5.4.1")),
        "{details:?}"
    );
    assert!(mario.iter().all(|s| s.verdict == Verdict::Valid));

    // The envelope finally arrives: B takes it in charge and delivers; A still delivers the
    // late receipt to the sender and logs it.
    for m in held {
        w.a.outbox
            .send_raw(&m.source, &m.destinations, &m.raw)
            .await
            .unwrap();
    }
    w.run().await;
    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(mario.len(), 4, "{mario:#?}");
    assert!(mario.iter().any(|s| s.kind == Kind::AvvenutaConsegna));
    let relay = w.a.state.relay("s5", LUIGI).await.unwrap().unwrap();
    assert!(relay.delivered_at.is_some() && relay.notice24_at.is_some());
}

#[tokio::test]
async fn no_timeout_notice_when_the_receipts_arrive_in_time() {
    let mut w = World::new().await;
    w.submit("s6", &message(LUIGI), &[LUIGI]);
    w.run().await;
    let later = w.now + Duration::hours(25);
    assert_eq!(w.sweep_a(later).await, 0);
    assert_eq!(
        kinds(&w.a.inbox(MARIO, &w.anchors).await),
        vec![Kind::Accettazione, Kind::AvvenutaConsegna]
    );
}

#[tokio::test]
async fn a_presa_in_carico_alone_stops_the_12h_notice_but_not_the_24h_one() {
    let mut w = World::new().await;
    w.submit("s7", &message(LUIGI), &[LUIGI]);
    let sent_at = w.now;
    w.run().await;
    // Pretend the delivery receipt never came: forget it on the relay record's copy by using a
    // fresh recipient record with only the presa in carico.
    let relay = w.a.state.relay("s7", LUIGI).await.unwrap().unwrap();
    assert!(relay.taken_at.is_some());
    let other = "secondo@pec.altro.test";
    w.a.state
        .create_relay(&pec_ports::RelayRecord {
            message: "s7".into(),
            recipient: other.into(),
            certified: true,
            relayed_at: sent_at,
            taken_at: None,
            delivered_at: None,
            failed_at: None,
            notice12_at: None,
            notice24_at: None,
        })
        .await
        .unwrap();
    w.a.state
        .relay_mark(
            "s7",
            other,
            RelayEvent::TakenInCharge,
            sent_at + Duration::minutes(1),
        )
        .await
        .unwrap();
    assert_eq!(w.sweep_a(sent_at + Duration::hours(13)).await, 0);
    assert_eq!(w.sweep_a(sent_at + Duration::hours(25)).await, 1);
}

/// AWS's shape: SES receiving stores `inbound/<message id>` (S3 action), then invokes ingress
/// (Lambda action), which records the envelope; the receiving point proceeds as usual.
#[tokio::test]
async fn ses_receiving_s3_and_lambda_actions_reach_the_receiving_point() {
    let mut w = World::new().await;
    let sample = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/ses-receiving.json"),
    )
    .unwrap();
    let event: aws_lambda_events::event::ses::SimpleEmailEvent =
        serde_json::from_slice(&sample).unwrap();
    let id = event.records[0].ses.mail.message_id.clone().unwrap();
    let raw = "X-SES-Spam-Verdict: PASS\r\nX-SES-Virus-Verdict: PASS\r\nFrom: Un Privato <privato@ordinaria.test>\r\nTo: mario.rossi@pec.example.test\r\nSubject: Richiesta informazioni\r\nMessage-ID: <r1@ordinaria.test>\r\nDate: Mon, 23 Nov 2026 10:29:58 +0100\r\n\r\nBuongiorno.\r\n";
    w.a.store
        .insert(RAW, &format!("inbound/{id}"), raw.as_bytes().to_vec());
    assert_eq!(w.a.ingress().handle_ses(&event).await.unwrap(), 1);
    let envelope =
        w.a.store
            .object(RAW, &format!("inbound/{id}.json"))
            .unwrap();
    let envelope = pec_core::submission::InboundEnvelope::from_json(&envelope).unwrap();
    assert_eq!(envelope.recipients, vec![MARIO.to_string()]);
    assert_eq!(envelope.source, "privato@ordinaria.test");
    w.run().await;
    let mario = w.a.inbox(MARIO, &w.anchors).await;
    assert_eq!(kinds(&mario), vec![Kind::BustaAnomalia], "{mario:#?}");
    // The SES verdict headers travel inside the anomaly envelope with the original.
    let item = &w.a.state.mailbox_items(MARIO).await.unwrap()[0];
    let bytes = w.a.store.object(MAILBOXES, &item.object_key).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("X-SES-Virus-Verdict: PASS"));
}

#[tokio::test]
async fn a_mailbox_that_refuses_ordinary_mail_gets_no_anomaly_envelope() {
    let mut w = World::new().await;
    let strict = "protocollo@pec.example.test";
    w.a.state
        .create_mailbox(&Mailbox {
            address: strict.into(),
            tenant: "t".into(),
            plan: Plan::Standard,
            expansions_gb: 0,
            quota_bytes: Plan::Standard.inbox_bytes(),
            used_bytes: 0,
            password_hash: String::new(),
            locked: false,
            status: Default::default(),
            member: None,
            status_note: None,
            agreement_accepted_at: None,
            refuse_ordinary: true,
            lock: None,
            ordinary_spam: Default::default(),
            sms: None,
            created_at: t0(),
        })
        .await
        .unwrap();
    let raw = "From: someone@ordinaria.test\r\nTo: protocollo@pec.example.test\r\nSubject: Ciao\r\nMessage-ID: <o2@ordinaria.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nbody\r\n";
    w.inject(
        false,
        raw.as_bytes(),
        &[strict.to_string()],
        "someone@ordinaria.test",
    );
    w.run().await;
    assert!(w.a.state.mailbox_items(strict).await.unwrap().is_empty());
    let record = w.a.state.inbound("in0001").await.unwrap().unwrap();
    assert_eq!(record.decision.as_str(), "refused");
    // PEC mail to the same mailbox is still received.
    w.submit("s8", &message(strict), &[strict]);
    w.run().await;
    assert_eq!(
        kinds(&w.a.inbox(strict, &w.anchors).await),
        vec![Kind::BustaTrasporto]
    );
}
