//! The whole pipeline inside one provider over memory fakes and a local signing key: ingress,
//! (a clean scan hand-off), sign, deliver, receipts, sign, deliver. The same code runs on the
//! emulators in `tests/pipeline.rs` of the integration crate.

use chrono::{DateTime, Duration, TimeZone, Utc};
use pec_core::build::Provider;
use pec_core::classify::{Kind, classify};
use pec_core::events::EventType;
use pec_core::plan::{self, Plan};
use pec_core::submission::{ENVELOPE_VERSION, SubmissionEnvelope};
use pec_pipeline::Settings;
use pec_pipeline::deliver::{Deliver, ReceiptRequest};
use pec_pipeline::ingress::{Ingress, IngressOutcome};
use pec_pipeline::receipts::Receipts;
use pec_ports::{Mailbox, MemoryOutbox, MemoryState, MemoryStore, StateStore, Tenant};
use pec_smime::{
    DevCa, LocalSigner, ProviderCertificateParams, SigningIdentity, TrustAnchors, Verdict,
    VerifyOptions, verify_message,
};

const RAW: &str = "raw";
const EVIDENCE: &str = "evidence";
const MAILBOXES: &str = "mailboxes";
const SCAN_Q: &str = "scan-queue";
const RECEIPTS_Q: &str = "receipts-queue";
const DOMAIN: &str = "pec.example.test";
const MARIO: &str = "mario.rossi@pec.example.test";
const ANNA: &str = "anna.bianchi@pec.example.test";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap()
}

fn settings() -> Settings {
    Settings {
        provider: Provider::new("Example Gestore PEC S.p.A.", DOMAIN).unwrap(),
        raw_bucket: RAW.into(),
        evidence_bucket: EVIDENCE.into(),
        mailbox_bucket: MAILBOXES.into(),
        scan_queue_url: SCAN_Q.into(),
        receipts_queue_url: RECEIPTS_Q.into(),
        provider_index_key: pec_pipeline::DEFAULT_PROVIDER_INDEX_KEY.into(),
        trust_anchors_key: pec_pipeline::DEFAULT_TRUST_ANCHORS_KEY.into(),
    }
}

struct Flow {
    store: MemoryStore,
    state: MemoryState,
    outbox: MemoryOutbox,
    sign: pec_pipeline::sign::SignStep<MemoryStore, LocalSigner>,
    anchors: TrustAnchors,
    /// Every unsigned key seen and signed so far.
    signed: Vec<String>,
}

impl Flow {
    async fn new() -> Flow {
        let t = |y| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
        let ca = DevCa::generate("Test PEC CA", t(2020), t(2040))
            .await
            .unwrap();
        let signer = LocalSigner::generate_rsa(2048).unwrap();
        let params =
            ProviderCertificateParams::new("Example Gestore PEC S.p.A.", DOMAIN, t(2025), t(2030));
        let cert = ca
            .issue_provider_certificate(&params, signer.public_key_spki_der())
            .await
            .unwrap();
        let identity = SigningIdentity::new(cert, vec![ca.certificate().clone()]).unwrap();
        let mut anchors = TrustAnchors::new();
        anchors
            .add_pem_bundle(ca.certificate_pem().unwrap().as_bytes())
            .unwrap();
        let flow = Flow {
            store: MemoryStore::new(),
            state: MemoryState::new(),
            outbox: MemoryOutbox::new(),
            sign: pec_pipeline::sign::SignStep::new(MemoryStore::new(), signer, identity, EVIDENCE),
            anchors,
            signed: Vec::new(),
        };
        flow.state
            .put_tenant(&Tenant {
                id: "studio".into(),
                name: "Studio Rossi".into(),
            })
            .await
            .unwrap();
        for a in [MARIO, ANNA] {
            flow.mailbox(a, plan::quota_bytes(Plan::Standard, 0).unwrap())
                .await;
        }
        flow
    }

    async fn mailbox(&self, address: &str, quota: u64) {
        assert!(
            self.state
                .create_mailbox(&Mailbox {
                    address: address.into(),
                    tenant: "studio".into(),
                    plan: Plan::Standard,
                    expansions_gb: 0,
                    quota_bytes: quota,
                    used_bytes: 0,
                    password_hash: String::new(),
                    locked: false,
                    refuse_ordinary: false,
                    created_at: t0(),
                })
                .await
                .unwrap()
        );
    }

    fn ingress(&self) -> Ingress<&MemoryStore, MemoryState, &MemoryOutbox> {
        Ingress::new(settings(), &self.store, self.state.clone(), &self.outbox)
    }

    fn deliver(
        &self,
    ) -> Deliver<&MemoryStore, MemoryState, &MemoryOutbox, &MemoryOutbox, &MemoryOutbox> {
        Deliver::new(
            settings(),
            &self.store,
            self.state.clone(),
            &self.outbox,
            &self.outbox,
            &self.outbox,
        )
    }

    fn receipts(&self) -> Receipts<&MemoryStore, MemoryState> {
        Receipts::new(settings(), &self.store, self.state.clone())
    }

    /// What the gateway does: the message, then its envelope.
    fn submit(&self, id: &str, raw: &str, recipients: &[&str]) {
        let env = SubmissionEnvelope {
            version: ENVELOPE_VERSION,
            id: id.into(),
            received_at: t0(),
            user: MARIO.into(),
            tenant: "studio".into(),
            reverse_path: MARIO.into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            client_ip: "127.0.0.1".into(),
            tls: true,
        };
        self.store
            .insert(RAW, &env.message_key(), raw.as_bytes().to_vec());
        self.store.insert(RAW, &env.envelope_key(), env.to_json());
    }

    /// Runs every step until nothing is left; `times` runs each hand-off that many times
    /// (duplicated events).
    async fn run(&mut self, id: &str, times: usize) -> IngressOutcome {
        let mut first = None;
        for _ in 0..times {
            let o = self
                .ingress()
                .handle_object(RAW, &format!("submitted/{id}.json"))
                .await
                .unwrap();
            first.get_or_insert(o);
        }
        let scans = self.outbox.take(SCAN_Q);
        assert!(scans.len() == times || scans.is_empty(), "{scans:?}");
        if !scans.is_empty() {
            // The scan step's clean hand-off (the scan step is tested in its own crate).
            let key = format!("scan/clean/submitted/{id}.eml.json");
            let at = t0() + Duration::seconds(2);
            self.store.insert(
                EVIDENCE,
                &key,
                format!("{{\"scanned_at\": \"{}\"}}", at.to_rfc3339()),
            );
            for _ in 0..times {
                assert_eq!(
                    self.ingress().handle_object(EVIDENCE, &key).await.unwrap(),
                    IngressOutcome::Accepted { id: id.into() }
                );
            }
        }
        let mut now = t0() + Duration::seconds(5);
        loop {
            let unsigned: Vec<String> = self
                .store
                .keys(EVIDENCE)
                .into_iter()
                .filter(|k| k.starts_with("unsigned/") && !self.signed.contains(k))
                .collect();
            let requests = self.outbox.take(RECEIPTS_Q);
            if unsigned.is_empty() && requests.is_empty() {
                break;
            }
            for r in &requests {
                let r: ReceiptRequest = serde_json::from_str(r).unwrap();
                self.receipts().build(&r).await.unwrap();
            }
            for key in unsigned {
                let body = self.store.object(EVIDENCE, &key).unwrap();
                self.sign.store().insert(EVIDENCE, &key, body);
                let signed_key = key.replacen("unsigned/", "signed/", 1);
                self.sign.sign_object(EVIDENCE, &key, now).await.unwrap();
                let signed = self.sign.store().object(EVIDENCE, &signed_key).unwrap();
                self.store.insert(EVIDENCE, &signed_key, signed);
                for _ in 0..times {
                    self.deliver()
                        .deliver_object(&signed_key, now)
                        .await
                        .unwrap();
                }
                self.signed.push(key);
            }
            now += Duration::seconds(1);
        }
        first.unwrap()
    }

    /// (kind, subject) of what is in a mailbox, verified.
    async fn inbox(&self, address: &str) -> Vec<(Kind, String)> {
        let mut out = Vec::new();
        for item in self.state.mailbox_items(address).await.unwrap() {
            let bytes = self.store.object(MAILBOXES, &item.object_key).unwrap();
            let v = verify_message(&bytes, &self.anchors, None, &VerifyOptions::default());
            assert_eq!(v.verdict, Verdict::Valid, "{}: {v:?}", item.object_key);
            let c = classify(&bytes);
            out.push((c.kind, c.headers.subject.clone().unwrap_or_default()));
        }
        out
    }
}

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
