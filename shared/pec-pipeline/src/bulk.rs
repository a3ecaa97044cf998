//! Mass sending (issue #19): a job is made once ([`Bulk::create`]: the list and templates
//! checked, every row rendered, the job's spec, rows and files stored under `bulk/<job>/` in
//! the raw bucket, one chunk request per `chunk_rows` rows on the bulk queue), then each chunk
//! ([`Bulk::run_chunk`]) submits its rows as ordinary submissions from the sender's mailbox:
//! the same objects the gateway and the API write (`submitted/<id>.eml`, then `.json`), so
//! every recipient gets its own acceptance, envelope and receipts through the unchanged
//! pipeline, and its receipts are filed in the job's folder (`receipts_folder`).
//!
//! **Exactly once per row.** A row is claimed (`JobStore::claim_row`: submission id and time)
//! before anything is written; the message is built from the claim; both objects are written
//! with `put_if_absent`. A chunk interrupted anywhere (process killed, timeout, throttling) and
//! run again finds its claims and writes nothing twice; a row never claimed is sent then.
//! [`Bulk::resume`] hands out again every chunk with rows not yet submitted.
//!
//! **Pace.** Chunk `n` is not started before `created_at + n × chunk_rows / per_minute`: a
//! chunk taken early goes back on the queue delayed (at most 15 minutes at a time), so a job
//! of 100,000 rows at 600 a minute is spread over about 2 h 47 min whatever the concurrency.

use chrono::{DateTime, Duration, Utc};
use pec_bulk::list::{self, Options, Row, Skipped};
use pec_bulk::message::{Attachment, AttachmentRef, Letter, RECEIPT_TYPES};
use pec_bulk::report::{Kind, Line, State};
use pec_bulk::{Compiled, JobSpec, Plan, Templates};
use pec_core::plan::Feature;
use pec_core::submission::{ENVELOPE_VERSION, SubmissionEnvelope};
use pec_ports::bulk::{JobRecord, JobStatus, JobStore, RowClaim};
use pec_ports::{ObjectStore, QueueSender, StateStore};
use serde::{Deserialize, Serialize};

use crate::StepError;
use crate::standing::{self, Standing};

/// [`ChunkRequest::version`].
pub const CHUNK_VERSION: u32 = 1;
/// Rows a minute when the caller names no pace.
pub const DEFAULT_PER_MINUTE: u32 = 600;
/// The fastest pace a job may ask for (100 rows a second).
pub const MAX_PER_MINUTE: u32 = 6_000;

/// One chunk of a job, as the bulk queue carries it (a reference, never the rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    pub version: u32,
    pub job: String,
    pub chunk: usize,
}

/// Where the job's objects live and how it is paced.
#[derive(Debug, Clone)]
pub struct BulkSettings {
    pub raw_bucket: String,
    pub evidence_bucket: String,
    pub queue_url: String,
    /// Our host name (Message-ID, trace field).
    pub hostname: String,
    pub max_rows: usize,
    pub chunk_rows: usize,
    /// The largest message (octets), as for any submission.
    pub max_message_bytes: usize,
}

/// What the sender asks for.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub sender: String,
    pub sender_name: Option<String>,
    pub name: String,
    /// The list's file name (its extension picks CSV or Excel) and bytes.
    pub list_name: String,
    pub list: Vec<u8>,
    pub address_column: Option<String>,
    pub templates: Templates,
    pub receipt: String,
    pub attachments: Vec<Attachment>,
    /// Rows a minute at most ([`DEFAULT_PER_MINUTE`] when `None`).
    pub per_minute: Option<u32>,
    /// Only check and preview: store nothing, send nothing.
    pub dry_run: bool,
}

/// Why a job cannot be made (nothing was stored or sent).
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("the list: {0}")]
    List(#[from] pec_bulk::ListError),
    #[error("{0}")]
    Template(#[from] pec_bulk::TemplateError),
    #[error("no row of the list can be sent ({0} set aside: see the report)")]
    NothingToSend(usize),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Step(#[from] StepError),
}

impl From<pec_ports::StoreError> for BulkError {
    fn from(e: pec_ports::StoreError) -> Self {
        BulkError::Step(e.into())
    }
}

impl From<pec_ports::StateError> for BulkError {
    fn from(e: pec_ports::StateError) -> Self {
        BulkError::Step(e.into())
    }
}

/// What [`Bulk::run_chunk`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Rows submitted by this run.
    pub submitted: usize,
    /// Rows found already submitted (a retry).
    pub already: usize,
    /// Put back on the queue until its time (seconds), not started.
    pub later: Option<u32>,
    /// The job is paused or cancelled: nothing done (resume hands it out again).
    pub stopped: Option<String>,
}

/// `bulk/<job>/job.json`.
pub fn spec_key(job: &str) -> String {
    format!("bulk/{job}/job.json")
}

/// `bulk/<job>/rows/<chunk>.json`.
pub fn rows_key(job: &str, chunk: usize) -> String {
    format!("bulk/{job}/rows/{chunk:06}.json")
}

/// `bulk/<job>/skipped.json`.
pub fn skipped_key(job: &str) -> String {
    format!("bulk/{job}/skipped.json")
}

/// `bulk/<job>/files/<n>`.
pub fn file_key(job: &str, n: usize) -> String {
    format!("bulk/{job}/files/{n}")
}

/// The submission id of a row: the job's time and random part, then the row's index, so the
/// access point's identifiers and the objects' names show where it came from.
fn submission_id(job: &str, index: usize, at: DateTime<Utc>) -> String {
    let tail: String = job
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .chars()
        .take(16)
        .collect();
    format!("{}-b{tail}{index:06}", at.format("%Y%m%dT%H%M%S%3fZ"))
}

/// The jobs' host: the stores, the queue and the settings.
pub struct Bulk<'a, O, St, J, Q> {
    pub objects: &'a O,
    pub state: &'a St,
    pub jobs: &'a J,
    pub queue: &'a Q,
    pub settings: &'a BulkSettings,
}

impl<O, St, J, Q> Bulk<'_, O, St, J, Q>
where
    O: ObjectStore,
    St: StateStore,
    J: JobStore,
    Q: QueueSender,
{
    /// Checks the list and templates against the sender's mailbox, then (unless `dry_run`)
    /// stores the job and hands out its chunks. `tenant`: the caller's tenant, when the
    /// caller is not the operator (another tenant's mailbox is "no such mailbox").
    pub async fn create(
        &self,
        req: NewJob,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        random: [u8; 8],
    ) -> Result<(JobRecord, Plan), BulkError> {
        let sender = req.sender.trim().to_ascii_lowercase();
        let mailbox = self
            .state
            .mailbox(&sender)
            .await?
            .filter(|m| tenant.is_none_or(|t| t == m.tenant))
            .ok_or_else(|| BulkError::Refused(format!("no mailbox {sender}")))?;
        if !mailbox.plan.entitlements().includes(Feature::MassSending) {
            return Err(BulkError::Refused(format!(
                "the plan of {sender} ({}) does not include mass sending",
                mailbox.plan
            )));
        }
        if let Some(why) = mailbox.refusal() {
            return Err(BulkError::Refused(why));
        }
        if !RECEIPT_TYPES.contains(&req.receipt.as_str()) {
            return Err(BulkError::Refused(format!(
                "receipt type {:?}: completa, breve or sintetica",
                req.receipt
            )));
        }
        if req.name.trim().is_empty() {
            return Err(BulkError::Refused("the job needs a name".into()));
        }
        let per_minute = req.per_minute.unwrap_or(DEFAULT_PER_MINUTE);
        if per_minute == 0 || per_minute > MAX_PER_MINUTE {
            return Err(BulkError::Refused(format!(
                "a pace of {per_minute} rows a minute: 1 to {MAX_PER_MINUTE}"
            )));
        }
        let list = list::read(
            &req.list_name,
            &req.list,
            &Options {
                address_column: req.address_column.clone(),
                max_rows: self.settings.max_rows,
            },
        )?;
        let templates = Compiled::new(&req.templates, &list.columns)?;
        let plan = pec_bulk::plan(list, &templates, 3);
        let attached: usize = req.attachments.iter().map(|a| a.bytes.len()).sum();
        // Base64 grows the files by a third; the headers and the longest text take the rest
        // (each message is checked again by the access point).
        let text = req.templates.text.as_ref().map_or(0, String::len)
            + req.templates.html.as_ref().map_or(0, String::len);
        if attached.div_ceil(3) * 4 + text + 8 * 1024 > self.settings.max_message_bytes {
            return Err(BulkError::Refused(format!(
                "the attachments total {attached} octets: each message would exceed {} octets",
                self.settings.max_message_bytes
            )));
        }
        if plan.rows.is_empty() {
            return Err(BulkError::NothingToSend(plan.skipped.len()));
        }
        let id = pec_bulk::job::new_job_id(now, random);
        let spec = JobSpec {
            version: pec_bulk::job::JOB_VERSION,
            id: id.clone(),
            tenant: mailbox.tenant.clone(),
            sender: sender.clone(),
            sender_name: req.sender_name.clone(),
            name: req.name.trim().to_string(),
            templates: req.templates.clone(),
            receipt: req.receipt.clone(),
            attachments: req
                .attachments
                .iter()
                .enumerate()
                .map(|(n, a)| AttachmentRef {
                    filename: a.filename.clone(),
                    content_type: a.content_type.clone(),
                    key: file_key(&id, n),
                    size: a.bytes.len(),
                })
                .collect(),
            created_at: now,
            rows: plan.rows.len(),
            skipped: plan.skipped.len(),
            chunk_rows: self.settings.chunk_rows.max(1),
        };
        let record = JobRecord {
            id: id.clone(),
            tenant: spec.tenant.clone(),
            sender,
            name: spec.name.clone(),
            created_at: now,
            rows: spec.rows,
            skipped: spec.skipped,
            chunks: spec.chunks(),
            per_minute,
            status: JobStatus::Running,
            reason: None,
            updated_at: now,
            paced_from: None,
            paced_first: 0,
        };
        if req.dry_run {
            return Ok((record, plan));
        }
        // Everything a chunk reads is written before the job exists, and the job before any
        // chunk is handed out.
        let raw = &self.settings.raw_bucket;
        for (a, r) in req.attachments.iter().zip(&spec.attachments) {
            self.objects
                .put_if_absent(raw, &r.key, a.bytes.clone(), "application/octet-stream")
                .await?;
        }
        for n in 0..spec.chunks() {
            let rows = &plan.rows[spec.chunk(n)];
            self.objects
                .put_if_absent(raw, &rows_key(&id, n), json(rows), "application/json")
                .await?;
        }
        self.objects
            .put_if_absent(
                raw,
                &skipped_key(&id),
                json(&plan.skipped),
                "application/json",
            )
            .await?;
        self.objects
            .put_if_absent(raw, &spec_key(&id), json(&spec), "application/json")
            .await?;
        if !self.jobs.create_job(&record).await? {
            return Err(BulkError::Refused(format!("job {id} exists already")));
        }
        let mut record = record;
        if let Err(e) = self.hand_out(&record, 0..record.chunks).await {
            // Some chunks may be out: the job exists and is paused, so the caller learns its id
            // and `resume` hands out what is missing (never a row twice).
            let why = format!("handing out its chunks failed ({e}): resume it");
            self.jobs
                .set_status(&id, JobStatus::Paused, Some(&why), now)
                .await?;
            tracing::warn!(job = %id, error = %e, "bulk job paused while being handed out");
            record.status = JobStatus::Paused;
            record.reason = Some(why);
            return Ok((record, plan));
        }
        tracing::info!(job = %id, rows = record.rows, skipped = record.skipped, chunks = record.chunks, "bulk job made");
        Ok((record, plan))
    }

    async fn hand_out(
        &self,
        job: &JobRecord,
        chunks: impl Iterator<Item = usize>,
    ) -> Result<(), StepError> {
        for chunk in chunks {
            let body = serde_json::to_string(&ChunkRequest {
                version: CHUNK_VERSION,
                job: job.id.clone(),
                chunk,
            })
            .unwrap_or_default();
            self.queue.send(&self.settings.queue_url, body).await?;
        }
        Ok(())
    }

    async fn spec(&self, job: &str) -> Result<JobSpec, StepError> {
        let bytes = self
            .objects
            .get(&self.settings.raw_bucket, &spec_key(job))
            .await?
            .ok_or_else(|| StepError::NoRecord(format!("bulk job {job}: no spec")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StepError::NoRecord(format!("bulk job {job}: spec: {e}")))
    }

    /// When chunk `n` of `job` may start: paced from the job's making, or from its last
    /// resumption counting from the first chunk it handed out again.
    fn not_before(job: &JobRecord, spec: &JobSpec, n: usize) -> DateTime<Utc> {
        let (from, rank) = match job.paced_from {
            Some(from) => (from, n.saturating_sub(job.paced_first)),
            None => (job.created_at, n),
        };
        let rows_before = rank.saturating_mul(spec.chunk_rows) as i64;
        from + Duration::milliseconds(
            rows_before.saturating_mul(60_000) / i64::from(job.per_minute.max(1)),
        )
    }

    /// Submits the rows of one chunk (each once, whatever ran before).
    pub async fn run_chunk(
        &self,
        req: &ChunkRequest,
        now: DateTime<Utc>,
    ) -> Result<ChunkOutcome, StepError> {
        let mut out = ChunkOutcome::default();
        let job = self
            .jobs
            .job(&req.job)
            .await?
            .ok_or_else(|| StepError::NoRecord(format!("bulk job {}", req.job)))?;
        if matches!(job.status, JobStatus::Paused | JobStatus::Cancelled) {
            out.stopped = Some(format!(
                "{}{}",
                job.status.as_str(),
                job.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
            return Ok(out);
        }
        let spec = self.spec(&req.job).await?;
        if req.chunk >= spec.chunks() {
            return Err(StepError::NoRecord(format!(
                "bulk job {}: no chunk {}",
                req.job, req.chunk
            )));
        }
        let start = Self::not_before(&job, &spec, req.chunk);
        if start > now {
            let wait = (start - now).num_seconds().clamp(1, 900) as u32;
            let body = serde_json::to_string(req).unwrap_or_default();
            self.queue
                .send_delayed(&self.settings.queue_url, body, wait)
                .await?;
            out.later = Some(wait);
            return Ok(out);
        }
        // The sender's mailbox may have been locked or suspended since the job was made: the
        // job pauses with the reason, and resume goes on from here.
        let mailbox = self.state.mailbox(&spec.sender).await?;
        let refusal = match &mailbox {
            None => Some(format!("the mailbox {} no longer exists", spec.sender)),
            Some(m) if m.tenant != spec.tenant => {
                Some(format!("the mailbox {} no longer exists", spec.sender))
            }
            Some(m) if !m.plan.entitlements().includes(Feature::MassSending) => Some(format!(
                "the plan of {} ({}) no longer includes mass sending",
                spec.sender, m.plan
            )),
            Some(m) => m.refusal(),
        };
        if let Some(why) = refusal {
            self.jobs
                .set_status(&job.id, JobStatus::Paused, Some(&why), now)
                .await?;
            tracing::warn!(job = %job.id, reason = %why, "bulk job paused");
            out.stopped = Some(format!("paused: {why}"));
            return Ok(out);
        }
        let raw = &self.settings.raw_bucket;
        let rows: Vec<Row> = match self.objects.get(raw, &rows_key(&job.id, req.chunk)).await? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| {
                StepError::NoRecord(format!("bulk job {} chunk {}: {e}", job.id, req.chunk))
            })?,
            None => {
                return Err(StepError::NoRecord(format!(
                    "bulk job {} chunk {}: no rows",
                    job.id, req.chunk
                )));
            }
        };
        let templates = Compiled::new(&spec.templates, &columns_of(&rows))
            .map_err(|e| StepError::NoRecord(format!("bulk job {}: {e}", job.id)))?;
        let mut files = Vec::with_capacity(spec.attachments.len());
        for a in &spec.attachments {
            let bytes = self.objects.get(raw, &a.key).await?.ok_or_else(|| {
                StepError::NoRecord(format!("bulk job {}: no file {}", job.id, a.key))
            })?;
            files.push(Attachment {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                bytes,
            });
        }
        let folder = spec.folder();
        let first = spec.chunk(req.chunk).start;
        for (offset, row) in rows.iter().enumerate() {
            let index = first + offset;
            let candidate = RowClaim {
                index,
                submission_id: submission_id(&job.id, index, now),
                at: now,
                submitted: false,
            };
            let claim = self.jobs.claim_row(&job.id, &candidate).await?;
            if claim.submitted {
                out.already += 1;
                continue;
            }
            let rendered = templates.render(row).map_err(|e| {
                StepError::NoRecord(format!("bulk job {} row {}: {e}", job.id, row.row))
            })?;
            // The access point takes the message in charge when its envelope is written: now,
            // not when the row was first claimed (a retry can come much later). A retry after
            // the envelope was written keeps the first one (put_if_absent).
            let envelope = SubmissionEnvelope {
                version: ENVELOPE_VERSION,
                id: claim.submission_id.clone(),
                received_at: now.max(claim.at),
                user: spec.sender.clone(),
                tenant: spec.tenant.clone(),
                reverse_path: spec.sender.clone(),
                recipients: vec![row.address.clone()],
                client_ip: String::new(),
                tls: true,
                receipts_folder: Some(folder.clone()),
            };
            let mut bytes = pec_bulk::message::received_field(
                &job.id,
                &self.settings.hostname,
                &claim.submission_id,
                claim.at,
            )
            .into_bytes();
            let built = pec_bulk::message::build(&Letter {
                from: &spec.sender,
                from_name: spec.sender_name.as_deref(),
                to: &row.address,
                body: &rendered,
                attachments: &files,
                receipt: &spec.receipt,
                id: &claim.submission_id,
                hostname: &self.settings.hostname,
                at: claim.at,
            })
            .map_err(|e| {
                StepError::NoRecord(format!("bulk job {} row {}: {e}", job.id, row.row))
            })?;
            bytes.extend_from_slice(&built);
            // The bytes first (announced to nobody), then the envelope, which starts the
            // access point: a crash between them is made good by the next run.
            self.objects
                .put_if_absent(raw, &envelope.message_key(), bytes, "message/rfc822")
                .await?;
            self.objects
                .put_if_absent(
                    raw,
                    &envelope.envelope_key(),
                    envelope.to_json(),
                    "application/json",
                )
                .await?;
            self.jobs.mark_submitted(&job.id, index).await?;
            out.submitted += 1;
        }
        tracing::info!(job = %job.id, chunk = req.chunk, submitted = out.submitted, already = out.already, "bulk chunk done");
        Ok(out)
    }

    /// Hands out again every chunk with rows not yet submitted, the job running again.
    /// Returns how many chunks.
    pub async fn resume(&self, job: &str, now: DateTime<Utc>) -> Result<usize, BulkError> {
        let record = self
            .jobs
            .job(job)
            .await?
            .ok_or_else(|| BulkError::Refused(format!("no job {job}")))?;
        if record.status == JobStatus::Cancelled {
            return Err(BulkError::Refused(format!("job {job} was cancelled")));
        }
        let spec = self.spec(job).await?;
        let done: std::collections::HashSet<usize> = self
            .jobs
            .claims(job)
            .await?
            .into_iter()
            .filter(|c| c.submitted)
            .map(|c| c.index)
            .collect();
        let open: Vec<usize> = (0..spec.chunks())
            .filter(|&n| spec.chunk(n).any(|i| !done.contains(&i)))
            .collect();
        // A resumed job is paced from now, from the first chunk handed out again: its chunks
        // are handed out at once, each waiting for its turn.
        let first = open.first().copied().unwrap_or(0);
        if !self.jobs.resume(job, now, first, now).await? {
            return Err(BulkError::Refused(format!("job {job} was cancelled")));
        }
        self.hand_out(&record, open.iter().copied()).await?;
        Ok(open.len())
    }

    /// One line per row of the list (sent or set aside), in the list's order.
    pub async fn report(&self, job: &str) -> Result<Vec<Line>, BulkError> {
        let spec = self.spec(job).await?;
        let raw = &self.settings.raw_bucket;
        let claims: std::collections::HashMap<usize, RowClaim> = self
            .jobs
            .claims(job)
            .await?
            .into_iter()
            .map(|c| (c.index, c))
            .collect();
        let mut lines = Vec::with_capacity(spec.rows + spec.skipped);
        if let Some(b) = self.objects.get(raw, &skipped_key(job)).await? {
            let skipped: Vec<Skipped> = serde_json::from_slice(&b)
                .map_err(|e| BulkError::Refused(format!("job {job}: skipped rows: {e}")))?;
            lines.extend(skipped.into_iter().map(|s| Line {
                row: s.row,
                address: s.address,
                kind: None,
                submission: None,
                submitted_at: None,
                accepted_at: None,
                state: State::Skipped,
                reason: Some(s.reason),
                at: None,
            }));
        }
        for n in 0..spec.chunks() {
            let Some(b) = self.objects.get(raw, &rows_key(job, n)).await? else {
                continue;
            };
            let rows: Vec<Row> = serde_json::from_slice(&b)
                .map_err(|e| BulkError::Refused(format!("job {job}: rows: {e}")))?;
            for (offset, row) in rows.into_iter().enumerate() {
                let index = spec.chunk(n).start + offset;
                let mut line = Line {
                    row: row.row,
                    address: row.address.clone(),
                    kind: None,
                    submission: None,
                    submitted_at: None,
                    accepted_at: None,
                    state: State::Waiting,
                    reason: None,
                    at: None,
                };
                if let Some(c) = claims.get(&index) {
                    let record = self.state.message(&c.submission_id).await?;
                    // Claimed, its envelope not known to be written: still waiting.
                    if !c.submitted && record.is_none() {
                        lines.push(line);
                        continue;
                    }
                    line.submission = Some(c.submission_id.clone());
                    line.submitted_at = Some(c.at);
                    // A virus leaves the message scanning: only then can a notice exist to list.
                    let scanning = record
                        .as_ref()
                        .is_none_or(|r| r.state == pec_ports::MessageState::Scanning);
                    let virus = scanning
                        && standing::virus_found(
                            self.objects,
                            &self.settings.evidence_bucket,
                            &c.submission_id,
                        )
                        .await?;
                    let s = standing::recipient(
                        self.state,
                        &c.submission_id,
                        record.as_ref(),
                        virus,
                        &row.address,
                    )
                    .await?;
                    if let Some(r) = &record
                        && r.state == pec_ports::MessageState::Accepted
                    {
                        line.accepted_at = Some(r.updated_at);
                        line.kind = Some(if s.certified {
                            Kind::Pec
                        } else {
                            Kind::Ordinary
                        });
                    }
                    line.state = match s.standing {
                        Standing::Pending => State::Pending,
                        Standing::Rejected => State::Rejected,
                        Standing::Virus => State::Virus,
                        Standing::Dispatched => State::Dispatched,
                        Standing::TakenInCharge => State::TakenInCharge,
                        Standing::Timeout12h => State::Timeout12h,
                        Standing::Timeout24h => State::Timeout24h,
                        Standing::Delivered => State::Delivered,
                        Standing::NotDelivered => State::NotDelivered,
                    };
                    line.reason = s.reason;
                    line.at = s.at;
                }
                lines.push(line);
            }
        }
        lines.sort_by_key(|l| l.row);
        Ok(lines)
    }
}

/// The columns the rows carry (every row has every column: `list::from_table` fills them).
fn columns_of(rows: &[Row]) -> Vec<pec_bulk::list::Column> {
    rows.first()
        .map(|r| {
            r.values
                .keys()
                .map(|k| pec_bulk::list::Column {
                    header: k.clone(),
                    name: k.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn json<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl BulkSettings {
    /// `PEC_RAW_BUCKET`, `PEC_EVIDENCE_BUCKET`, `PEC_BULK_QUEUE_URL`, `PEC_PROVIDER_DOMAIN` (the
    /// Message-ID's host); optional `PEC_BULK_MAX_ROWS` (default 100,000), `PEC_BULK_CHUNK_ROWS`
    /// (default 50), `PEC_MAX_MESSAGE_BYTES` (default 100 MiB).
    pub fn from_env(env: &pec_ports::config::Env<'_>) -> Result<Self, crate::SettingsError> {
        Ok(BulkSettings {
            raw_bucket: env.required("PEC_RAW_BUCKET")?,
            evidence_bucket: env.required("PEC_EVIDENCE_BUCKET")?,
            queue_url: env.required("PEC_BULK_QUEUE_URL")?,
            hostname: env.required("PEC_PROVIDER_DOMAIN")?,
            max_rows: env
                .parse("PEC_BULK_MAX_ROWS")?
                .unwrap_or(pec_bulk::list::DEFAULT_MAX_ROWS),
            chunk_rows: env
                .parse("PEC_BULK_CHUNK_ROWS")?
                .unwrap_or(pec_bulk::job::DEFAULT_CHUNK_ROWS),
            max_message_bytes: env
                .parse("PEC_MAX_MESSAGE_BYTES")?
                .unwrap_or(100 * 1024 * 1024),
        })
    }
}

/// The bulk function: each [`ChunkRequest`] of the bulk queue run with [`Bulk::run_chunk`]. A
/// request it cannot read fails (and after the queue's `maxReceiveCount`, waits in the bulk
/// DLQ under its alarm); a failed chunk is simply offered again.
pub struct BulkWorker<O, St, J, Q> {
    pub objects: O,
    pub state: St,
    pub jobs: J,
    pub queue: Q,
    pub settings: BulkSettings,
}

impl<O, St, J, Q> BulkWorker<O, St, J, Q>
where
    O: ObjectStore,
    St: StateStore,
    J: JobStore,
    Q: QueueSender,
{
    pub fn bulk(&self) -> Bulk<'_, O, St, J, Q> {
        Bulk {
            objects: &self.objects,
            state: &self.state,
            jobs: &self.jobs,
            queue: &self.queue,
            settings: &self.settings,
        }
    }

    pub async fn handle(
        &self,
        event: aws_lambda_events::event::sqs::SqsEvent,
        now: DateTime<Utc>,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        crate::batch::partial_batch("bulk", &event, |record| async move {
            let id = record.message_id.clone().unwrap_or_default();
            let request: ChunkRequest = serde_json::from_str(record.body.as_deref().unwrap_or(""))
                .ok()
                .filter(|r: &ChunkRequest| {
                    r.version == CHUNK_VERSION && pec_bulk::job::valid_job_id(&r.job)
                })
                .ok_or_else(|| StepError::BadRequest {
                    message_id: id,
                    reason: "not a bulk chunk request (version 1, a job id, a chunk)".into(),
                })?;
            self.bulk().run_chunk(&request, now).await.map(|_| ())
        })
        .await
    }
}
