//! Mass sending over the memory fakes: a job made from a CSV list, its chunks run, each row
//! through the whole pipeline (access point, scan, sign, deliver, receipts), the receipts filed
//! in the job's folder, the report; exactly once per row under failures at every write, chunk
//! messages delivered twice and resumes; a job paused when its sender is locked.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use pec_bulk::Templates;
use pec_bulk::message::Attachment;
use pec_bulk::report::{Kind, State};
use pec_core::plan::Plan;
use pec_pipeline::bulk::{Bulk, BulkError, BulkSettings, ChunkRequest, NewJob};
use pec_ports::bulk::{JobStatus, JobStore, MemoryJobs, RowClaim};
use pec_ports::{
    MemoryOutbox, MemoryStore, ObjectStore, PutOutcome, StateError, StateStore, StoreError,
};

const BULK_Q: &str = "bulk-queue";
const SENDER: &str = "ufficio@pec.example.test";

fn bulk_settings(chunk_rows: usize) -> BulkSettings {
    BulkSettings {
        raw_bucket: RAW.into(),
        evidence_bucket: EVIDENCE.into(),
        queue_url: BULK_Q.into(),
        hostname: "pec.example.test".into(),
        max_rows: 100_000,
        chunk_rows,
        max_message_bytes: 30 * 1024 * 1024,
    }
}

fn job(list: &str) -> NewJob {
    NewJob {
        sender: SENDER.into(),
        sender_name: Some("Ufficio".into()),
        name: "Solleciti dicembre".into(),
        list_name: "lista.csv".into(),
        list: list.as_bytes().to_vec(),
        address_column: None,
        templates: Templates {
            subject: "Sollecito per {{ Nome }}".into(),
            text: Some("Gentile {{ Nome }}, restano da pagare EUR {{ Importo }}.\n".into()),
            html: None,
        },
        receipt: "completa".into(),
        attachments: vec![Attachment {
            filename: "avviso.pdf".into(),
            content_type: "application/pdf".into(),
            bytes: b"%PDF-1.7 avviso".to_vec(),
        }],
        per_minute: Some(6_000),
        dry_run: false,
    }
}

async fn sender(flow: &Flow, plan: Plan) {
    let mut m = mailbox_record(SENDER, standard_quota());
    m.plan = plan;
    flow.add_mailbox(&m).await;
}

fn chunks(outbox: &MemoryOutbox) -> Vec<ChunkRequest> {
    outbox
        .take(BULK_Q)
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect()
}

#[tokio::test]
async fn a_job_goes_through_the_pipeline_and_its_receipts_fill_its_folder() {
    let mut flow = Flow::new().await;
    sender(&flow, Plan::Pro).await;
    flow.store.insert(
        EVIDENCE,
        pec_pipeline::DEFAULT_PROVIDER_INDEX_KEY,
        flow.pki.index_ldif().into_bytes(),
    );
    let jobs = MemoryJobs::new();
    let queue = MemoryOutbox::new();
    let settings = bulk_settings(2);
    let list = format!(
        "Nome;PEC;Importo\nAnna;{ANNA};12,50\nNessuno;nessuno@pec.example.test;3\nOrdinario;someone@ordinary.example;7\nRotto;non-un-indirizzo;1\nAnna di nuovo;{ANNA};9\nSenza importo;mario.rossi@pec.example.test;\n"
    );
    let now = t0();
    let (record, plan) = {
        let bulk = Bulk {
            objects: &flow.store,
            state: &flow.state,
            jobs: &jobs,
            queue: &queue,
            settings: &settings,
        };
        bulk.create(job(&list), Some(TENANT), now, [7; 8])
            .await
            .unwrap()
    };
    assert_eq!(record.rows, 3);
    assert_eq!(record.skipped, 3);
    assert_eq!(record.chunks, 2);
    assert_eq!(plan.preview[0].2.subject, "Sollecito per Anna");
    let reasons: Vec<(usize, &str)> = plan
        .skipped
        .iter()
        .map(|s| (s.row, s.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (5, "\"non-un-indirizzo\" is not an e-mail address"),
            (6, "the same address as row 2: sent once"),
            (7, "no value for Importo (used by the template)"),
        ]
    );
    // Each chunk, delivered twice (SQS delivers at least once).
    let requests = chunks(&queue);
    assert_eq!(requests.len(), 2);
    for r in requests.iter().chain(&requests) {
        let bulk = Bulk {
            objects: &flow.store,
            state: &flow.state,
            jobs: &jobs,
            queue: &queue,
            settings: &settings,
        };
        bulk.run_chunk(r, now + Duration::minutes(1)).await.unwrap();
    }
    let claims = jobs.claims(&record.id).await.unwrap();
    assert_eq!(claims.len(), 3);
    assert!(claims.iter().all(|c| c.submitted));
    for c in &claims {
        flow.run(&c.submission_id, 1).await;
    }
    // The first row's message: personalised, with the attachment, from the sender.
    let raw = flow
        .store
        .object(RAW, &format!("submitted/{}.eml", claims[0].submission_id))
        .unwrap();
    let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert_eq!(m.subject(), Some("Sollecito per Anna"));
    assert!(m.body_text(0).unwrap().contains("EUR 12,50"));
    assert_eq!(m.attachment(0).unwrap().contents(), b"%PDF-1.7 avviso");
    // Anna has her PEC; the sender's receipts are all in the job's folder, none in INBOX.
    assert_eq!(flow.inbox(ANNA).await.len(), 1);
    let folder = pec_bulk::job::job_folder("Solleciti dicembre", &record.id);
    let items = flow.state.mailbox_items(SENDER).await.unwrap();
    assert!(items.len() >= 5, "{items:?}");
    assert!(
        items
            .iter()
            .all(|i| i.folder.as_deref() == Some(folder.as_str())),
        "{items:?}"
    );
    let bulk = Bulk {
        objects: &flow.store,
        state: &flow.state,
        jobs: &jobs,
        queue: &queue,
        settings: &settings,
    };
    let report = bulk.report(&record.id).await.unwrap();
    let got: Vec<(usize, State, Option<&str>, Option<Kind>)> = report
        .iter()
        .map(|l| (l.row, l.state, l.reason.as_deref(), l.kind))
        .collect();
    assert_eq!(
        got,
        [
            (2, State::Delivered, None, Some(Kind::Pec)),
            (
                3,
                State::NotDelivered,
                Some("unknown-user"),
                Some(Kind::Pec)
            ),
            (4, State::Dispatched, None, Some(Kind::Ordinary)),
            (
                5,
                State::Skipped,
                Some("\"non-un-indirizzo\" is not an e-mail address"),
                None
            ),
            (
                6,
                State::Skipped,
                Some("the same address as row 2: sent once"),
                None
            ),
            (
                7,
                State::Skipped,
                Some("no value for Importo (used by the template)"),
                None
            ),
        ]
    );
    let csv = String::from_utf8(pec_bulk::report::to_csv(&report, true)).unwrap();
    assert!(
        csv.contains("indirizzo errato: casella inesistente"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 5, "{csv}");
}

#[tokio::test]
async fn a_job_is_refused_before_anything_is_stored() {
    let flow = Flow::new().await;
    sender(&flow, Plan::Standard).await;
    let jobs = MemoryJobs::new();
    let queue = MemoryOutbox::new();
    let settings = bulk_settings(50);
    let bulk = Bulk {
        objects: &flow.store,
        state: &flow.state,
        jobs: &jobs,
        queue: &queue,
        settings: &settings,
    };
    let list = format!("Nome;PEC;Importo\nAnna;{ANNA};1\n");
    let refusal = |r: Result<_, BulkError>| r.map(|_| ()).unwrap_err().to_string();
    // The Standard plan has no mass sending.
    let e = refusal(bulk.create(job(&list), Some(TENANT), t0(), [1; 8]).await);
    assert!(e.contains("does not include mass sending"), "{e}");
    let old = flow.state.mailbox(SENDER).await.unwrap().unwrap();
    let mut m = old.clone();
    m.plan = Plan::Plus;
    assert!(flow.state.replace_mailbox(&old, &m, None).await.unwrap());
    // Another tenant's mailbox is no mailbox at all.
    let e = refusal(bulk.create(job(&list), Some("altro"), t0(), [1; 8]).await);
    assert_eq!(e, format!("no mailbox {SENDER}"));
    let mut bad = job(&list);
    bad.templates.subject = "{{ Cognome }}".into();
    let e = refusal(bulk.create(bad, Some(TENANT), t0(), [1; 8]).await);
    assert!(
        e.contains("names \"Cognome\", which is not a column"),
        "{e}"
    );
    let e = refusal(
        bulk.create(job("Nome;PEC;Importo\n"), Some(TENANT), t0(), [1; 8])
            .await,
    );
    assert!(e.contains("no recipients"), "{e}");
    let e = refusal(
        bulk.create(job("Nome;PEC;Importo\nA;x;1\n"), Some(TENANT), t0(), [1; 8])
            .await,
    );
    assert!(
        e.contains("no row of the list can be sent (1 set aside"),
        "{e}"
    );
    let mut dry = job(&list);
    dry.dry_run = true;
    let (_, plan) = bulk.create(dry, Some(TENANT), t0(), [1; 8]).await.unwrap();
    assert_eq!(plan.rows.len(), 1);
    assert!(
        flow.store.keys(RAW).is_empty(),
        "{:?}",
        flow.store.keys(RAW)
    );
    assert!(queue.take(BULK_Q).is_empty());
    assert!(jobs.jobs(TENANT).await.unwrap().is_empty());
}

/// An object store that fails a write now and then, before or after writing it (a crash
/// between the write and its answer).
struct Flaky<'a> {
    inner: &'a MemoryStore,
    dice: Dice,
}

/// A seeded die with `every` faces: 0 fails before the write, 1 after it.
struct Dice {
    seed: std::sync::Mutex<u64>,
    every: u64,
}

impl Dice {
    fn new(seed: u64, every: u64) -> Self {
        Dice {
            seed: std::sync::Mutex::new(seed),
            every,
        }
    }

    fn roll(&self) -> u64 {
        let mut s = self.seed.lock().unwrap();
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*s >> 33) % self.every
    }
}

impl ObjectStore for Flaky<'_> {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(bucket, key).await
    }
    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        self.inner.exists(bucket, key).await
    }
    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_keys(bucket, prefix).await
    }
    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<PutOutcome, StoreError> {
        let fail = StoreError {
            operation: "PutObject",
            bucket: bucket.into(),
            key: key.into(),
            message: "injected".into(),
        };
        match self.dice.roll() {
            0 => Err(fail),
            1 => {
                self.inner
                    .put_if_absent(bucket, key, body, content_type)
                    .await?;
                Err(fail)
            }
            _ => {
                self.inner
                    .put_if_absent(bucket, key, body, content_type)
                    .await
            }
        }
    }
}

/// Job claims that fail now and then, before or after the write.
struct FlakyJobs<'a> {
    inner: &'a MemoryJobs,
    dice: Dice,
}

impl FlakyJobs<'_> {
    fn fail() -> StateError {
        StateError {
            operation: "PutItem",
            table: "memory".into(),
            message: "injected".into(),
        }
    }
}

impl JobStore for FlakyJobs<'_> {
    async fn create_job(&self, job: &pec_ports::bulk::JobRecord) -> Result<bool, StateError> {
        self.inner.create_job(job).await
    }
    async fn job(&self, id: &str) -> Result<Option<pec_ports::bulk::JobRecord>, StateError> {
        self.inner.job(id).await
    }
    async fn jobs(&self, tenant: &str) -> Result<Vec<pec_ports::bulk::JobRecord>, StateError> {
        self.inner.jobs(tenant).await
    }
    async fn set_status(
        &self,
        id: &str,
        status: JobStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        self.inner.set_status(id, status, reason, at).await
    }
    async fn resume(
        &self,
        id: &str,
        from: DateTime<Utc>,
        first: usize,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        self.inner.resume(id, from, first, at).await
    }
    async fn claim_row(&self, job: &str, claim: &RowClaim) -> Result<RowClaim, StateError> {
        match self.dice.roll() {
            0 => Err(Self::fail()),
            1 => {
                self.inner.claim_row(job, claim).await?;
                Err(Self::fail())
            }
            _ => self.inner.claim_row(job, claim).await,
        }
    }
    async fn mark_submitted(&self, job: &str, index: usize) -> Result<(), StateError> {
        match self.dice.roll() {
            0 => Err(Self::fail()),
            1 => {
                self.inner.mark_submitted(job, index).await?;
                Err(Self::fail())
            }
            _ => self.inner.mark_submitted(job, index).await,
        }
    }
    async fn claims(&self, job: &str) -> Result<Vec<RowClaim>, StateError> {
        self.inner.claims(job).await
    }
}

#[tokio::test]
async fn every_row_is_submitted_exactly_once_whatever_fails_and_repeats() {
    for seed in 1..=4u64 {
        let flow = Flow::new().await;
        sender(&flow, Plan::Pro).await;
        let jobs = MemoryJobs::new();
        let queue = MemoryOutbox::new();
        let settings = bulk_settings(50);
        let mut list = String::from("PEC;Nome;Importo\n");
        for i in 0..500 {
            list.push_str(&format!("r{i}@pec.altro.example;N{i};{i}\n"));
        }
        let record = {
            let bulk = Bulk {
                objects: &flow.store,
                state: &flow.state,
                jobs: &jobs,
                queue: &queue,
                settings: &settings,
            };
            bulk.create(job(&list), Some(TENANT), t0(), [seed as u8; 8])
                .await
                .unwrap()
                .0
        };
        let flaky = Flaky {
            inner: &flow.store,
            dice: Dice::new(seed, 60),
        };
        let flaky_jobs = FlakyJobs {
            inner: &jobs,
            dice: Dice::new(seed * 31, 90),
        };
        let bulk = Bulk {
            objects: &flaky,
            state: &flow.state,
            jobs: &flaky_jobs,
            queue: &queue,
            settings: &settings,
        };
        // A queue that redelivers what failed, and sometimes what succeeded; halfway, the
        // sender resumes the job (handing out every chunk not done, again).
        let mut pending = chunks(&queue);
        assert_eq!(pending.len(), 10);
        let mut round = 0;
        let mut failed = 0;
        while !pending.is_empty() {
            round += 1;
            assert!(round < 200, "the job does not finish");
            let mut next = Vec::new();
            for (n, r) in pending.iter().enumerate() {
                match bulk.run_chunk(r, t0() + Duration::minutes(1)).await {
                    Ok(_) if (n + round) % 5 == 0 => next.push(r.clone()),
                    Ok(_) => {}
                    Err(_) => {
                        failed += 1;
                        next.push(r.clone());
                    }
                }
            }
            if round == 3 {
                let plain = Bulk {
                    objects: &flow.store,
                    state: &flow.state,
                    jobs: &jobs,
                    queue: &queue,
                    settings: &settings,
                };
                plain.resume(&record.id, t0()).await.unwrap();
            }
            // What the worker or the resume put on the queue.
            next.extend(chunks(&queue));
            pending = next;
        }
        assert!(failed >= 5, "seed {seed}: only {failed} chunk runs failed");
        // Exactly one envelope per recipient, its message beside it.
        let envelopes: Vec<String> = flow
            .store
            .keys(RAW)
            .into_iter()
            .filter(|k| k.starts_with("submitted/") && k.ends_with(".json"))
            .collect();
        assert_eq!(envelopes.len(), 500, "seed {seed}");
        let mut recipients = std::collections::BTreeSet::new();
        for k in &envelopes {
            let env = pec_core::submission::SubmissionEnvelope::from_json(
                &flow.store.object(RAW, k).unwrap(),
            )
            .unwrap();
            assert!(flow.store.object(RAW, &env.message_key()).is_some());
            assert_eq!(env.recipients.len(), 1);
            assert!(
                recipients.insert(env.recipients[0].clone()),
                "seed {seed}: twice {:?}",
                env.recipients
            );
        }
        let eml = flow
            .store
            .keys(RAW)
            .into_iter()
            .filter(|k| k.starts_with("submitted/") && k.ends_with(".eml"))
            .count();
        assert_eq!(eml, 500, "seed {seed}");
        let claims = jobs.claims(&record.id).await.unwrap();
        assert_eq!(claims.len(), 500);
        assert!(claims.iter().all(|c| c.submitted));
    }
}

#[tokio::test]
async fn a_locked_sender_pauses_the_job_and_resume_finishes_it() {
    let flow = Flow::new().await;
    sender(&flow, Plan::Pro).await;
    let jobs = MemoryJobs::new();
    let queue = MemoryOutbox::new();
    let settings = bulk_settings(10);
    let bulk = Bulk {
        objects: &flow.store,
        state: &flow.state,
        jobs: &jobs,
        queue: &queue,
        settings: &settings,
    };
    let mut list = String::from("PEC;Nome;Importo\n");
    for i in 0..30 {
        list.push_str(&format!("r{i}@pec.altro.example;N{i};{i}\n"));
    }
    let mut j = job(&list);
    // 10 rows a minute: chunk 1 may start a minute after chunk 0.
    j.per_minute = Some(10);
    let (record, _) = bulk.create(j, Some(TENANT), t0(), [3; 8]).await.unwrap();
    let requests = chunks(&queue);
    assert_eq!(requests.len(), 3);
    assert_eq!(
        bulk.run_chunk(&requests[0], t0()).await.unwrap().submitted,
        10
    );
    let early = bulk
        .run_chunk(&requests[1], t0() + Duration::seconds(20))
        .await
        .unwrap();
    assert_eq!(early.later, Some(40));
    assert_eq!(early.submitted, 0);
    assert_eq!(chunks(&queue), [requests[1].clone()]);
    // Locked mid-job: the job pauses with the reason; nothing more is sent.
    let old = flow.state.mailbox(SENDER).await.unwrap().unwrap();
    let mut m = old.clone();
    m.locked = true;
    assert!(flow.state.replace_mailbox(&old, &m, None).await.unwrap());
    let at = t0() + Duration::minutes(5);
    let stopped = bulk.run_chunk(&requests[1], at).await.unwrap();
    assert!(stopped.stopped.unwrap().starts_with("paused: "));
    let paused = jobs.job(&record.id).await.unwrap().unwrap();
    assert_eq!(paused.status, JobStatus::Paused);
    assert!(paused.reason.unwrap().contains("locked"));
    assert!(
        bulk.run_chunk(&requests[2], at)
            .await
            .unwrap()
            .stopped
            .is_some()
    );
    // Unlocked and resumed: the two chunks left, paced from the resumption.
    let mut open = m.clone();
    open.locked = false;
    assert!(flow.state.replace_mailbox(&m, &open, None).await.unwrap());
    assert_eq!(bulk.resume(&record.id, at).await.unwrap(), 2);
    let again = chunks(&queue);
    assert_eq!(again.iter().map(|r| r.chunk).collect::<Vec<_>>(), [1, 2]);
    // Paced from the resumption: chunk 1 at once, chunk 2 a minute later (not all at once
    // because the job is old).
    assert_eq!(bulk.run_chunk(&again[0], at).await.unwrap().submitted, 10);
    let early = bulk
        .run_chunk(&again[1], at + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(early.later, Some(59));
    assert_eq!(
        bulk.run_chunk(&again[1], at + Duration::minutes(1))
            .await
            .unwrap()
            .submitted,
        10
    );
    let claims = jobs.claims(&record.id).await.unwrap();
    assert_eq!(claims.iter().filter(|c| c.submitted).count(), 30);
    assert_eq!(
        jobs.job(&record.id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
}
