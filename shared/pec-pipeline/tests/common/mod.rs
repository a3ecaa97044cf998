//! The single-provider driver shared by `flow.rs` and `evidence_golden.rs`: the whole pipeline
//! inside one provider over memory fakes, signed with the test PKI's `pec.example.test` key:
//! ingress, the scan step with fake clean engines, sign, deliver, receipts, sign, deliver.
//!
//! Everything is dated from [`t0`] (submission), `t0 + 2 s` (the scan verdict) and `t0 + 5 s`,
//! `+ 6 s`, ... (one second per signing round), and every id is seeded by the submission id, so
//! the same submission gives the same bytes on every run.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use pec_core::classify::{Kind, classify};
use pec_core::plan::Plan;
use pec_core::submission::{ENVELOPE_VERSION, SubmissionEnvelope};
use pec_pipeline::Settings;
use pec_pipeline::deliver::{Deliver, ReceiptRequest};
use pec_pipeline::ingress::{Ingress, IngressOutcome};
use pec_pipeline::receipts::Receipts;
use pec_pipeline::scan::metrics::RecordedMetrics;
use pec_pipeline::scan::{Buckets, Engines, ScanRequest, ScanStep};
use pec_ports::{
    Mailbox, MemoryOutbox, MemoryRetained, MemoryState, MemoryStore, StateStore, Tenant,
};
use pec_scan::testing::FakeEngine;
use pec_scan::{Decision, EngineKind, PolicyBook};
use pec_smime::{LocalSigner, TrustAnchors, Verdict, VerifyOptions, verify_message};
use pec_testkit::pki::TestPki;

pub const RAW: &str = "raw";
pub const EVIDENCE: &str = "evidence";
pub const MAILBOXES: &str = "mailboxes";
pub const CONSERVATION: &str = "conservation";
pub const SCAN_Q: &str = "scan-queue";
pub const RECEIPTS_Q: &str = "receipts-queue";
pub const TENANT: &str = "studio";
pub const DOMAIN: &str = pec_testkit::pki::EXAMPLE_DOMAIN;
pub const MARIO: &str = "mario.rossi@pec.example.test";
pub const ANNA: &str = "anna.bianchi@pec.example.test";

/// The submission time.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap()
}

/// When the scan step reaches its verdict (the acceptance receipt's and envelope's time).
pub fn scanned_at() -> DateTime<Utc> {
    t0() + Duration::seconds(2)
}

/// The settings of the `pec.example.test` provider over the fakes' bucket and queue names.
pub fn settings(pki: &TestPki) -> Settings {
    settings_for(pki.example.core_provider())
}

/// [`settings`] for any provider.
pub fn settings_for(provider: pec_core::build::Provider) -> Settings {
    Settings {
        provider,
        raw_bucket: RAW.into(),
        evidence_bucket: EVIDENCE.into(),
        mailbox_bucket: MAILBOXES.into(),
        scan_queue_url: SCAN_Q.into(),
        receipts_queue_url: RECEIPTS_Q.into(),
        provider_index_key: pec_pipeline::DEFAULT_PROVIDER_INDEX_KEY.into(),
        trust_anchors_key: pec_pipeline::DEFAULT_TRUST_ANCHORS_KEY.into(),
        sms_queue_url: None,
        deliver_queue_url: None,
        relay_queue_url: None,
    }
}

/// The scan step over `store` (raw and evidence buckets of `settings`) with two fake engines
/// that find nothing: every message passes and gets its clean hand-off. The fake spam engine
/// scores a message with the GTUBE pattern as spam (the spam lockout's tests).
pub fn clean_scan_step<'a>(
    settings: &Settings,
    store: &'a MemoryStore,
) -> ScanStep<&'a MemoryStore, MemoryRetained, RecordedMetrics> {
    let engines = Engines::new()
        .with(EngineKind::Clamav, Arc::new(FakeEngine::clean("clamav")))
        .with(EngineKind::Yara, Arc::new(FakeEngine::clean("yara")));
    ScanStep::new(
        store,
        MemoryRetained::new(),
        RecordedMetrics::default(),
        engines,
        PolicyBook::default(),
        settings.provider.clone(),
        Buckets {
            raw: settings.raw_bucket.clone(),
            evidence: settings.evidence_bucket.clone(),
            conservation: CONSERVATION.into(),
        },
    )
    .with_spam(pec_ports::spam::FakeSpam::new())
}

/// Runs one scan-queue message through [`clean_scan_step`] at `at`; returns the clean hand-off
/// key it wrote (`scan/clean/<raw key>.json`).
pub async fn scan_clean(
    settings: &Settings,
    store: &MemoryStore,
    request: &str,
    at: DateTime<Utc>,
) -> String {
    let request: ScanRequest = serde_json::from_str(request).unwrap();
    let handled = clean_scan_step(settings, store)
        .scan_request(&request, at)
        .await
        .unwrap();
    assert_eq!(
        handled.record.decision,
        Decision::Pass { warning: None },
        "{:?}",
        handled.record.report
    );
    let key = handled.record.outputs.clean.expect("a clean hand-off");
    assert!(store.object(&settings.evidence_bucket, &key).is_some());
    key
}

/// A mailbox of the tenant, Standard plan, with `quota` bytes.
pub fn mailbox_record(address: &str, quota: u64) -> Mailbox {
    Mailbox {
        address: address.into(),
        tenant: TENANT.into(),
        plan: Plan::Standard,
        expansions_gb: 0,
        quota_bytes: quota,
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
    }
}

/// The Standard plan's quota.
pub fn standard_quota() -> u64 {
    pec_core::plan::quota_bytes(Plan::Standard, 0).unwrap()
}

/// What the gateway writes for a submission by `user` (tenant [`TENANT`], received at [`t0`]).
pub fn envelope(
    id: &str,
    user: &str,
    reverse_path: &str,
    recipients: &[&str],
) -> SubmissionEnvelope {
    SubmissionEnvelope {
        receipts_folder: None,
        version: ENVELOPE_VERSION,
        id: id.into(),
        received_at: t0(),
        user: user.into(),
        tenant: TENANT.into(),
        reverse_path: reverse_path.into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        client_ip: "127.0.0.1".into(),
        tls: true,
    }
}

/// One message the sign step signed.
#[derive(Debug, Clone)]
pub struct Signed {
    pub unsigned_key: String,
    pub signed_key: String,
    /// The signing time (and the delivery time).
    pub at: DateTime<Utc>,
}

pub struct Flow {
    pub pki: TestPki,
    pub settings: Settings,
    pub store: MemoryStore,
    pub state: MemoryState,
    pub outbox: MemoryOutbox,
    pub sign: pec_pipeline::sign::SignStep<MemoryStore, LocalSigner, MemoryState>,
    pub anchors: TrustAnchors,
    /// Every message signed so far, in signing order.
    pub signed: Vec<Signed>,
}

impl Flow {
    /// The provider with its tenant and no mailbox.
    pub async fn empty() -> Flow {
        let pki = TestPki::load();
        let state = MemoryState::new();
        let sign = pec_pipeline::sign::SignStep::new(
            MemoryStore::new(),
            state.clone(),
            pki.example.signer.clone(),
            pki.example.identity.clone(),
            EVIDENCE,
        );
        let flow = Flow {
            settings: settings(&pki),
            anchors: pki.anchors.clone(),
            pki,
            store: MemoryStore::new(),
            state,
            outbox: MemoryOutbox::new(),
            sign,
            signed: Vec::new(),
        };
        flow.state
            .put_tenant(&Tenant {
                id: TENANT.into(),
                name: "Studio Rossi".into(),
                billing: Default::default(),
            })
            .await
            .unwrap();
        flow
    }

    /// [`Flow::empty`] with the mailboxes of [`MARIO`] and [`ANNA`] (Standard quota).
    pub async fn new() -> Flow {
        let flow = Flow::empty().await;
        for a in [MARIO, ANNA] {
            flow.mailbox(a, standard_quota()).await;
        }
        flow
    }

    pub async fn mailbox(&self, address: &str, quota: u64) {
        self.add_mailbox(&mailbox_record(address, quota)).await;
    }

    pub async fn add_mailbox(&self, mailbox: &Mailbox) {
        assert!(self.state.create_mailbox(mailbox).await.unwrap());
    }

    pub fn ingress(&self) -> Ingress<&MemoryStore, MemoryState, &MemoryOutbox> {
        Ingress::new(
            self.settings.clone(),
            &self.store,
            self.state.clone(),
            &self.outbox,
        )
    }

    pub fn deliver(
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

    pub fn receipts(&self) -> Receipts<&MemoryStore, MemoryState> {
        Receipts::new(self.settings.clone(), &self.store, self.state.clone())
    }

    /// What the gateway does for [`MARIO`]: the message, then its envelope.
    pub fn submit(&self, id: &str, raw: &str, recipients: &[&str]) {
        self.submit_envelope(&envelope(id, MARIO, MARIO, recipients), raw.as_bytes());
    }

    /// What the gateway does: the message, then its envelope.
    pub fn submit_envelope(&self, env: &SubmissionEnvelope, raw: &[u8]) {
        self.store.insert(RAW, &env.message_key(), raw.to_vec());
        self.store.insert(RAW, &env.envelope_key(), env.to_json());
    }

    /// Runs every step until nothing is left; `times` runs each hand-off that many times
    /// (duplicated events).
    pub async fn run(&mut self, id: &str, times: usize) -> IngressOutcome {
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
            // The scan step, with engines that find nothing (the scan step has its own tests).
            let mut key = String::new();
            for request in &scans {
                key = scan_clean(&self.settings, &self.store, request, scanned_at()).await;
            }
            assert_eq!(key, format!("scan/clean/submitted/{id}.eml.json"));
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
                .filter(|k| {
                    k.starts_with("unsigned/") && !self.signed.iter().any(|s| &s.unsigned_key == k)
                })
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
                self.signed.push(Signed {
                    unsigned_key: key,
                    signed_key,
                    at: now,
                });
            }
            now += Duration::seconds(1);
        }
        first.unwrap()
    }

    /// (kind, subject) of what is in a mailbox, verified.
    pub async fn inbox(&self, address: &str) -> Vec<(Kind, String)> {
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
