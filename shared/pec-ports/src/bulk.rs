//! Mass-sending jobs (issue #19): the job record, and one claim per row that makes each row's
//! submission happen once whatever crashes and retries do.
//!
//! A row is *claimed* before anything of its message is written: the claim fixes the
//! submission id and time; a worker that finds a claim reuses them, and the raw bucket keeps
//! the first copy of each object (`put_if_absent`), so a retry writes nothing new. Claims are
//! also the job's progress: a row is `submitted` once its envelope is written.
//!
//! `pec_aws::DynamoJobs` keeps these in the state table (`BULK#<job>` items,
//! docs/data-model.md); [`MemoryJobs`] in memory for unit tests and local runs without AWS.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::StateError;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    /// Rows are being submitted.
    Running,
    /// Stopped with a reason (the sender's mailbox locked or suspended, the sender asked):
    /// `resume` goes on from where it stopped.
    Paused,
    /// Every row submitted; receipts are still coming in.
    Submitted,
    /// Cancelled by the sender: rows not yet submitted never will be.
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Submitted => "submitted",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// A job, as the state table keeps it (its spec, rows and files are objects under the job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub tenant: String,
    pub sender: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Rows to send.
    pub rows: usize,
    /// Rows set aside when the job was made.
    pub skipped: usize,
    pub chunks: usize,
    /// Rows per minute at most (the tenant's pace).
    pub per_minute: u32,
    pub status: JobStatus,
    /// Why it is paused or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// Set by a resumption: the pace counts from this time, from chunk `paced_first`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced_from: Option<DateTime<Utc>>,
    #[serde(default)]
    pub paced_first: usize,
}

/// One row's claim: the submission it is (or will be) sent as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowClaim {
    /// The row's index among the job's rows (0-based).
    pub index: usize,
    pub submission_id: String,
    pub at: DateTime<Utc>,
    /// The envelope is written: the access point has it.
    pub submitted: bool,
}

/// The jobs and their rows' claims.
pub trait JobStore: Send + Sync {
    /// Stores a new job; `false`, changing nothing, when the id exists.
    fn create_job(&self, job: &JobRecord) -> impl Future<Output = Result<bool, StateError>> + Send;
    fn job(&self, id: &str) -> impl Future<Output = Result<Option<JobRecord>, StateError>> + Send;
    /// The tenant's jobs, newest first.
    fn jobs(&self, tenant: &str)
    -> impl Future<Output = Result<Vec<JobRecord>, StateError>> + Send;
    /// Sets the status (and reason) of a job; a cancelled job stays cancelled (`false`).
    fn set_status(
        &self,
        id: &str,
        status: JobStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Runs the job again (status running, no reason), paced from `from` counting from chunk
    /// `first`; `false`, changing nothing, when it does not exist or was cancelled.
    fn resume(
        &self,
        id: &str,
        from: DateTime<Utc>,
        first: usize,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;
    /// Claims row `claim.index` for `claim`'s submission, unless it is claimed: the claim that
    /// holds (the existing one, or this one). Two concurrent claims of a row: one wins, both
    /// callers get it.
    fn claim_row(
        &self,
        job: &str,
        claim: &RowClaim,
    ) -> impl Future<Output = Result<RowClaim, StateError>> + Send;
    /// Marks a claimed row submitted.
    fn mark_submitted(
        &self,
        job: &str,
        index: usize,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Every claim of the job, by index.
    fn claims(&self, job: &str) -> impl Future<Output = Result<Vec<RowClaim>, StateError>> + Send;
}

/// In memory: for unit tests and local runs.
#[derive(Debug, Default)]
pub struct MemoryJobs {
    jobs: Mutex<HashMap<String, JobRecord>>,
    claims: Mutex<HashMap<String, BTreeMap<usize, RowClaim>>>,
}

impl MemoryJobs {
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobStore for MemoryJobs {
    async fn create_job(&self, job: &JobRecord) -> Result<bool, StateError> {
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&job.id) {
            return Ok(false);
        }
        jobs.insert(job.id.clone(), job.clone());
        Ok(true)
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StateError> {
        Ok(lock(&self.jobs).get(id).cloned())
    }

    async fn jobs(&self, tenant: &str) -> Result<Vec<JobRecord>, StateError> {
        let mut out: Vec<JobRecord> = lock(&self.jobs)
            .values()
            .filter(|j| j.tenant == tenant)
            .cloned()
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    async fn set_status(
        &self,
        id: &str,
        status: JobStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let mut jobs = lock(&self.jobs);
        match jobs.get_mut(id) {
            Some(j) if j.status != JobStatus::Cancelled => {
                j.status = status;
                j.reason = reason.map(str::to_string);
                j.updated_at = at;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn resume(
        &self,
        id: &str,
        from: DateTime<Utc>,
        first: usize,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let mut jobs = lock(&self.jobs);
        match jobs.get_mut(id) {
            Some(j) if j.status != JobStatus::Cancelled => {
                j.status = JobStatus::Running;
                j.reason = None;
                j.paced_from = Some(from);
                j.paced_first = first;
                j.updated_at = at;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn claim_row(&self, job: &str, claim: &RowClaim) -> Result<RowClaim, StateError> {
        let mut claims = lock(&self.claims);
        Ok(claims
            .entry(job.to_string())
            .or_default()
            .entry(claim.index)
            .or_insert_with(|| claim.clone())
            .clone())
    }

    async fn mark_submitted(&self, job: &str, index: usize) -> Result<(), StateError> {
        if let Some(c) = lock(&self.claims)
            .get_mut(job)
            .and_then(|m| m.get_mut(&index))
        {
            c.submitted = true;
        }
        Ok(())
    }

    async fn claims(&self, job: &str) -> Result<Vec<RowClaim>, StateError> {
        Ok(lock(&self.claims)
            .get(job)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }
}

impl<T: JobStore> JobStore for &T {
    async fn create_job(&self, job: &JobRecord) -> Result<bool, StateError> {
        (*self).create_job(job).await
    }
    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StateError> {
        (*self).job(id).await
    }
    async fn jobs(&self, tenant: &str) -> Result<Vec<JobRecord>, StateError> {
        (*self).jobs(tenant).await
    }
    async fn set_status(
        &self,
        id: &str,
        status: JobStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        (*self).set_status(id, status, reason, at).await
    }
    async fn resume(
        &self,
        id: &str,
        from: DateTime<Utc>,
        first: usize,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        (*self).resume(id, from, first, at).await
    }
    async fn claim_row(&self, job: &str, claim: &RowClaim) -> Result<RowClaim, StateError> {
        (*self).claim_row(job, claim).await
    }
    async fn mark_submitted(&self, job: &str, index: usize) -> Result<(), StateError> {
        (*self).mark_submitted(job, index).await
    }
    async fn claims(&self, job: &str) -> Result<Vec<RowClaim>, StateError> {
        (*self).claims(job).await
    }
}
