//! The `scan` step: two antivirus engines in series over a raw message, and the PEC outcome.
//!
//! Input: a [`ScanRequest`] (JSON) on the scan queue — the raw message's S3 key, the tenant,
//! the point (access or receiving) and the ids/addresses that point's virus outcome needs.
//!
//! 1. If `scan/verdict/<raw key>.json` exists (a retry or a duplicate event), its decision is
//!    applied again — every write below is conditional, so nothing is produced twice.
//! 2. Otherwise the message is read from the raw bucket and scanned with the tenant's engines
//!    ([`pec_scan::scan`]); the verdict and the [`Decision`] are recorded (conditional write:
//!    the first record wins, so concurrent duplicates agree).
//! 3. The decision is applied:
//!    - **pass** (clean, or unscannable under an `accept` policy, with the warning): the
//!      record is copied to `scan/clean/<raw key>.json`, the next step's trigger;
//!    - **virus** (infected, or unscannable under the default `treat-as-infected` policy): the
//!      point's notices are built with pec-core and written under `unsigned/scan/<raw key>/` for
//!      the sign step (access point: non-accettazione per virus to the user; receiving point:
//!      rilevazione virus to the sending provider and mancata consegna per virus per recipient),
//!      and the message is copied to `quarantine/<raw key>` in the conservation bucket under a
//!      COMPLIANCE retention of 30 months. Nothing goes to `scan/clean/`: never delivered;
//!    - **retry** (an engine is down, timed out or failed): nothing is written, the
//!      `EngineUnavailable` metric is emitted and the SQS message is reported as failed, so it
//!      waits and is scanned again (after maxReceiveCount it moves to the DLQ, with its alarm).

pub mod metrics;
pub mod outcome;
mod record;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Months, Utc};
use pec_core::build::{BuildError, Provider};
use pec_ports::contract::{CONTRACT_VERSION, QUARANTINE_MONTHS};
pub use pec_ports::contract::{Point, ScanRequest};
use pec_ports::keys;
use pec_ports::spam::{SpamCheck, SpamEngine, SpamEnvelope, SpamError, SpamScore};
use pec_ports::{ConfigError, Env, ObjectStore, PutOutcome, RetainedStore, StoreError};
use pec_scan::{
    ClamdEngine, Decision, Engine, EngineKind, PolicyBook, PolicyError, Verdict, YaraEngine, decide,
};

use metrics::{EmfStdout, Metrics};
use outcome::{OutcomeError, virus_outcome};
pub use record::{Outputs, ScanRecord};

/// The three buckets the step uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    /// Raw mail (read).
    pub raw: String,
    /// Evidence: verdicts, clean hand-offs, unsigned notices.
    pub evidence: String,
    /// Conservation (Object Lock): quarantine copies.
    pub conservation: String,
}

/// The engines the step can run, by kind; each tenant's policy picks and orders them.
#[derive(Clone, Default)]
pub struct Engines {
    by_kind: BTreeMap<EngineKind, Arc<dyn Engine>>,
}

impl Engines {
    /// No engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `engine` as `kind`.
    pub fn with(mut self, kind: EngineKind, engine: Arc<dyn Engine>) -> Self {
        self.by_kind.insert(kind, engine);
        self
    }
}

/// Why a message was not handled. Every one of these fails the SQS record: it is retried and,
/// after maxReceiveCount, kept in the scan DLQ (alarm).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The queue message is not a scan request this step accepts.
    #[error("SQS message {message_id} is not a valid scan request: {reason}")]
    BadRequest { message_id: String, reason: String },
    /// The raw message is not there.
    #[error("s3://{bucket}/{key} was announced but does not exist")]
    Missing { bucket: String, key: String },
    /// S3 failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No verdict: an engine could not scan. The message waits.
    #[error(
        "no antivirus verdict for s3://{bucket}/{key}: {reason}; the message will be scanned again"
    )]
    EngineUnavailable {
        bucket: String,
        key: String,
        reason: String,
    },
    /// A stored verdict record cannot be read.
    #[error("the verdict record s3://{bucket}/{key} is unreadable: {reason}")]
    CorruptRecord {
        bucket: String,
        key: String,
        reason: String,
    },
    /// A notice could not be built.
    #[error(transparent)]
    Outcome(#[from] OutcomeError),
}

/// What one request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The record in force (the one just written, or the one found).
    pub record: ScanRecord,
    /// Whether the record already existed (retry or duplicate: nothing was scanned).
    pub replayed: bool,
    /// Objects written by this call (0 for a complete duplicate).
    pub writes: usize,
}

/// The step, over any object store, retained store and metric sink (S3 + EMF in Lambda,
/// memory in tests) and any engines (clamd + yara-x in Lambda, fakes in tests).
pub struct ScanStep<St, Rt, M> {
    store: St,
    retained: Rt,
    metrics: M,
    engines: Engines,
    spam: Option<Arc<dyn DynSpam>>,
    policies: PolicyBook,
    provider: Provider,
    buckets: Buckets,
}

impl<St: ObjectStore, Rt: RetainedStore, M: Metrics> ScanStep<St, Rt, M> {
    /// A step with every dependency given.
    pub fn new(
        store: St,
        retained: Rt,
        metrics: M,
        engines: Engines,
        policies: PolicyBook,
        provider: Provider,
        buckets: Buckets,
    ) -> Self {
        Self {
            store,
            retained,
            metrics,
            engines,
            spam: None,
            policies,
            provider,
            buckets,
        }
    }

    /// Scores every message that passes the antivirus with `engine` (issue #18). Without one,
    /// nothing is scored and the records carry no spam field.
    pub fn with_spam(mut self, engine: impl SpamEngine + 'static) -> Self {
        self.spam = Some(Arc::new(engine));
        self
    }

    /// The object store (tests read what the step wrote).
    pub fn store(&self) -> &St {
        &self.store
    }

    /// The retained store (tests read the quarantine).
    pub fn retained(&self) -> &Rt {
        &self.retained
    }

    /// The metric sink.
    pub fn metrics(&self) -> &M {
        &self.metrics
    }

    /// Handles one scan request at `now`.
    pub async fn scan_request(
        &self,
        request: &ScanRequest,
        now: DateTime<Utc>,
    ) -> Result<Handled, StepError> {
        let evidence = &self.buckets.evidence;
        let record_key = keys::verdict_key(&request.key);
        if let Some(stored) = self.store.get(evidence, &record_key).await? {
            let record = self.parse_record(&record_key, &stored)?;
            let writes = self.apply(&record).await?;
            return Ok(Handled {
                record,
                replayed: true,
                writes,
            });
        }
        let raw = self.raw(request).await?;
        let policy = self.policies.for_tenant(&request.tenant);
        let mut chosen: Vec<&dyn Engine> = Vec::new();
        for kind in &policy.engines {
            match self.engines.by_kind.get(kind) {
                Some(engine) => chosen.push(engine.as_ref()),
                None => {
                    self.metrics.engine_unavailable(kind.as_str());
                    return Err(StepError::EngineUnavailable {
                        bucket: request.bucket.clone(),
                        key: request.key.clone(),
                        reason: format!(
                            "engine {} is not configured in this function",
                            kind.as_str()
                        ),
                    });
                }
            }
        }
        let report = pec_scan::scan(Arc::from(raw.as_slice()), &chosen, &policy.limits).await;
        let decision = decide(&report.verdict, policy.unscannable);
        if let Decision::Retry { reason } = &decision {
            if let Verdict::EngineError { engine, .. } = &report.verdict {
                self.metrics.engine_unavailable(engine);
            }
            return Err(StepError::EngineUnavailable {
                bucket: request.bucket.clone(),
                key: request.key.clone(),
                reason: reason.clone(),
            });
        }
        let spam = match (&decision, &self.spam) {
            (Decision::Pass { .. }, Some(engine)) => {
                Some(self.spam_check(engine.as_ref(), request, &raw).await)
            }
            _ => None,
        };
        let mut record = ScanRecord {
            version: CONTRACT_VERSION,
            request: request.clone(),
            scanned_at: now,
            report,
            decision,
            outputs: Outputs::default(),
            spam,
        };
        record.outputs = self.plan(&record, &raw)?.outputs;
        let body = serde_json::to_vec_pretty(&record).unwrap_or_default();
        let (record, mut writes) = match self
            .store
            .put_if_absent(evidence, &record_key, body, "application/json")
            .await?
        {
            PutOutcome::Created => (record, 1),
            // A concurrent duplicate recorded first: its decision is the one in force.
            PutOutcome::AlreadyExists => {
                let stored = self
                    .store
                    .get(evidence, &record_key)
                    .await?
                    .ok_or_else(|| StepError::CorruptRecord {
                        bucket: evidence.clone(),
                        key: record_key.clone(),
                        reason: "reported as existing, then not found".into(),
                    })?;
                (self.parse_record(&record_key, &stored)?, 0)
            }
        };
        writes += self.apply_with_raw(&record, &raw).await?;
        Ok(Handled {
            record,
            replayed: false,
            writes,
        })
    }

    /// The spam score of a message that passed. An engine that cannot answer never holds the
    /// message: it goes on unscored, and the metric raises the alarm.
    async fn spam_check(
        &self,
        engine: &dyn DynSpam,
        request: &ScanRequest,
        raw: &[u8],
    ) -> SpamCheck {
        let envelope = match &request.point {
            Point::Access {
                user,
                reverse_path,
                recipients,
                ..
            } => SpamEnvelope {
                reverse_path: reverse_path.clone(),
                recipients: recipients.clone(),
                user: Some(user.clone()),
                queue_id: request.key.clone(),
            },
            Point::Receiving { recipients, .. } => SpamEnvelope {
                recipients: recipients.clone(),
                queue_id: request.key.clone(),
                ..SpamEnvelope::default()
            },
        };
        match engine.score_dyn(raw, &envelope).await {
            Ok(score) => SpamCheck::Scored(score),
            Err(e) => {
                self.metrics.engine_unavailable(SPAM_ENGINE);
                tracing::warn!(key = %request.key, error = %e, "spam engine unavailable: the message goes on unscored");
                SpamCheck::Unscored {
                    reason: e.to_string(),
                }
            }
        }
    }

    fn parse_record(&self, key: &str, bytes: &[u8]) -> Result<ScanRecord, StepError> {
        serde_json::from_slice(bytes).map_err(|e| StepError::CorruptRecord {
            bucket: self.buckets.evidence.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    async fn raw(&self, request: &ScanRequest) -> Result<Vec<u8>, StepError> {
        self.store
            .get(&request.bucket, &request.key)
            .await?
            .ok_or_else(|| StepError::Missing {
                bucket: request.bucket.clone(),
                key: request.key.clone(),
            })
    }

    /// Applies a recorded decision (fetching the raw message when the outcome needs it).
    async fn apply(&self, record: &ScanRecord) -> Result<usize, StepError> {
        match record.decision {
            Decision::Virus { .. } => {
                let raw = self.raw(&record.request).await?;
                self.apply_with_raw(record, &raw).await
            }
            _ => self.apply_with_raw(record, &[]).await,
        }
    }

    /// The writes a record calls for, rebuilt deterministically from the record.
    fn plan(&self, record: &ScanRecord, raw: &[u8]) -> Result<Plan, StepError> {
        let key = &record.request.key;
        let mut plan = Plan::default();
        match &record.decision {
            Decision::Pass { .. } => {
                plan.outputs.clean = Some(keys::clean_key(key));
            }
            Decision::Virus { description } => {
                let outcome = virus_outcome(
                    &record.request,
                    raw,
                    description,
                    &self.provider,
                    record.scanned_at,
                )?;
                for (name, message) in outcome.notices {
                    let notice_key = keys::notice_key(key, &name);
                    plan.outputs.notices.push(notice_key.clone());
                    plan.notices.push((notice_key, message.render()));
                }
                plan.outputs.note = outcome.note;
                plan.outputs.quarantine = Some(keys::quarantine_key(key));
                plan.retain_until = record
                    .scanned_at
                    .checked_add_months(Months::new(QUARANTINE_MONTHS));
            }
            Decision::Retry { .. } => {}
        }
        Ok(plan)
    }

    async fn apply_with_raw(&self, record: &ScanRecord, raw: &[u8]) -> Result<usize, StepError> {
        let plan = self.plan(record, raw)?;
        let evidence = &self.buckets.evidence;
        let mut writes = 0;
        if let Some(clean_key) = &plan.outputs.clean {
            let body = serde_json::to_vec_pretty(record).unwrap_or_default();
            if self
                .store
                .put_if_absent(evidence, clean_key, body, "application/json")
                .await?
                == PutOutcome::Created
            {
                writes += 1;
            }
        }
        // Quarantine first: once the notices exist the message is gone from the flow.
        if let (Some(q), Some(until)) = (&plan.outputs.quarantine, plan.retain_until)
            && self
                .retained
                .put_retained(&self.buckets.conservation, q, raw.to_vec(), until)
                .await?
                == PutOutcome::Created
        {
            writes += 1;
        }
        for (key, body) in plan.notices {
            if self
                .store
                .put_if_absent(evidence, &key, body, "message/rfc822")
                .await?
                == PutOutcome::Created
            {
                writes += 1;
            }
        }
        Ok(writes)
    }

    /// One SQS batch: failed records are reported for retry (partial batch response).
    pub async fn handle(&self, event: SqsEvent, now: DateTime<Utc>) -> SqsBatchResponse {
        crate::batch::partial_batch("scan", &event, |record| async move {
            self.handle_record(&record, now)
                .await
                .map(|handled| log_handled(&handled))
        })
        .await
    }

    async fn handle_record(
        &self,
        record: &SqsMessage,
        now: DateTime<Utc>,
    ) -> Result<Handled, StepError> {
        let request = parse_request(record, &self.buckets.raw)?;
        self.scan_request(&request, now).await
    }
}

/// The `Engine` dimension of the metric when the spam engine gives no score.
pub const SPAM_ENGINE: &str = "rspamd";

/// A [`SpamEngine`] behind a pointer (the step holds any engine without a type parameter).
trait DynSpam: Send + Sync {
    fn score_dyn<'a>(
        &'a self,
        raw: &'a [u8],
        envelope: &'a SpamEnvelope,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<SpamScore, SpamError>> + Send + 'a>,
    >;
}

impl<T: SpamEngine> DynSpam for T {
    fn score_dyn<'a>(
        &'a self,
        raw: &'a [u8],
        envelope: &'a SpamEnvelope,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<SpamScore, SpamError>> + Send + 'a>,
    > {
        Box::pin(self.score(raw, envelope))
    }
}

#[derive(Default)]
struct Plan {
    outputs: Outputs,
    notices: Vec<(String, Vec<u8>)>,
    retain_until: Option<DateTime<Utc>>,
}

fn log_handled(h: &Handled) {
    let r = &h.record;
    let verdict = r.report.verdict.kind();
    match &r.decision {
        Decision::Pass { warning: Some(w) } => tracing::warn!(
            key = %r.request.key, tenant = %r.request.tenant, verdict, warning = %w,
            replayed = h.replayed, writes = h.writes, "passed without a full scan (tenant policy: accept)"
        ),
        Decision::Pass { warning: None } => tracing::info!(
            key = %r.request.key, verdict, replayed = h.replayed, writes = h.writes, "clean"
        ),
        Decision::Virus { description } => tracing::warn!(
            key = %r.request.key, tenant = %r.request.tenant, point = r.request.point.as_str(),
            verdict, virus = %description, replayed = h.replayed, writes = h.writes,
            notices = r.outputs.notices.len(), "virus outcome; message quarantined"
        ),
        Decision::Retry { .. } => {}
    }
}

/// The scan request in an SQS record, checked against the raw bucket.
pub fn parse_request(record: &SqsMessage, raw_bucket: &str) -> Result<ScanRequest, StepError> {
    let id = record.message_id.clone().unwrap_or_default();
    let bad = |reason: String| StepError::BadRequest {
        message_id: id.clone(),
        reason,
    };
    let body = record
        .body
        .as_deref()
        .ok_or_else(|| bad("empty body".into()))?;
    let request: ScanRequest =
        serde_json::from_str(body).map_err(|e| bad(format!("not a scan request: {e}")))?;
    if request.version != CONTRACT_VERSION {
        return Err(bad(format!(
            "version {} (this step reads version {CONTRACT_VERSION})",
            request.version
        )));
    }
    if request.bucket != raw_bucket {
        return Err(bad(format!(
            "bucket {} is not the raw-mail bucket {raw_bucket}",
            request.bucket
        )));
    }
    if request.key.is_empty() || request.tenant.is_empty() {
        return Err(bad("empty key or tenant".into()));
    }
    Ok(request)
}

/// The step could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("s3://{bucket}/{key}: {source}")]
    Policy {
        bucket: String,
        key: String,
        source: PolicyError,
    },
    #[error("PEC_YARA_RULES_KEY names s3://{bucket}/{key}, which does not exist")]
    MissingRules { bucket: String, key: String },
    #[error(transparent)]
    Rules(#[from] pec_scan::yara::RulesError),
    #[error("provider: {0}")]
    Provider(#[from] BuildError),
}

/// Default key, in the evidence bucket, of the tenants' scan policies.
pub const DEFAULT_POLICY_KEY: &str = keys::DEFAULT_SCAN_POLICY_KEY;
/// Default clamd socket (in Lambda, the clamd the function starts listens there).
pub const DEFAULT_CLAMD_SOCKET: &str = "/tmp/clamd.sock";

/// The tenants' policies and the YARA engine, from the evidence bucket: `PEC_SCAN_POLICY_KEY`
/// (default [`DEFAULT_POLICY_KEY`]; a missing object means the built-in default for every
/// tenant, an invalid one is an error) and `PEC_YARA_RULES_KEY` (unset or empty: the built-in
/// rules; set: the object must exist and compile).
pub async fn configuration<St: ObjectStore>(
    store: &St,
    evidence: &str,
    env: &Env<'_>,
) -> Result<(PolicyBook, YaraEngine), SetupError> {
    let policy_key = env.or("PEC_SCAN_POLICY_KEY", DEFAULT_POLICY_KEY);
    let policies = match store.get(evidence, &policy_key).await? {
        Some(bytes) => PolicyBook::from_json(&bytes).map_err(|source| SetupError::Policy {
            bucket: evidence.to_string(),
            key: policy_key.clone(),
            source,
        })?,
        None => PolicyBook::default(),
    };
    let yara = match env.optional("PEC_YARA_RULES_KEY") {
        Some(key) => {
            let source =
                store
                    .get(evidence, &key)
                    .await?
                    .ok_or_else(|| SetupError::MissingRules {
                        bucket: evidence.to_string(),
                        key: key.clone(),
                    })?;
            YaraEngine::from_source(
                &format!("s3://{evidence}/{key}"),
                &String::from_utf8_lossy(&source),
            )?
        }
        None => YaraEngine::builtin()?,
    };
    Ok((policies, yara))
}

/// The production step (clamd on `PEC_CLAMD_SOCKET`, yara-x, EMF metrics) over `store` and
/// `retained` (S3 in Lambda) from its environment: `PEC_RAW_BUCKET`, `PEC_EVIDENCE_BUCKET`,
/// `PEC_CONSERVATION_BUCKET`, `PEC_PROVIDER_NAME`, `PEC_PROVIDER_DOMAIN`; optional
/// `PEC_CLAMD_SOCKET` ([`DEFAULT_CLAMD_SOCKET`]), `PEC_SCAN_POLICY_KEY` ([`DEFAULT_POLICY_KEY`]; a
/// missing object means the built-in default policy for every tenant) and `PEC_YARA_RULES_KEY` (a
/// YARA rule file in the evidence bucket replacing the built-in rules; if set, it must exist and
/// compile).
pub async fn configured<St: ObjectStore, Rt: RetainedStore>(
    store: St,
    retained: Rt,
    env: &Env<'_>,
) -> Result<ScanStep<St, Rt, EmfStdout>, SetupError> {
    let buckets = Buckets {
        raw: env.required("PEC_RAW_BUCKET")?,
        evidence: env.required("PEC_EVIDENCE_BUCKET")?,
        conservation: env.required("PEC_CONSERVATION_BUCKET")?,
    };
    let provider = Provider::new(
        &env.required("PEC_PROVIDER_NAME")?,
        &env.required("PEC_PROVIDER_DOMAIN")?,
    )?;
    let (policies, yara) = configuration(&store, &buckets.evidence, env).await?;
    let socket = env.or("PEC_CLAMD_SOCKET", DEFAULT_CLAMD_SOCKET);
    let engines = Engines::new()
        .with(EngineKind::Clamav, Arc::new(ClamdEngine::new(socket)))
        .with(EngineKind::Yara, Arc::new(yara));
    Ok(ScanStep::new(
        store, retained, EmfStdout, engines, policies, provider, buckets,
    ))
}
