//! [`JobStore`] on the state table (mass-sending jobs; layout in docs/data-model.md):
//!
//! | item | pk | sk | other |
//! |---|---|---|---|
//! | job | `BULK#<job>` | `JOB` | doc (`JobRecord`); gsi1 `TENANT#<tenant>` / `BULK#<created_at>#<job>` |
//! | row claim | `BULK#<job>` | `ROW#<index, 7 digits>` | doc (`RowClaim`) |

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pec_ports::StateError;
use pec_ports::bulk::{JobRecord, JobStatus, JobStore, RowClaim};

use crate::DynamoState;
use crate::state::{Item, s, to_doc};

fn job_pk(id: &str) -> String {
    format!("BULK#{id}")
}

fn row_sk(index: usize) -> String {
    format!("ROW#{index:07}")
}

impl DynamoState {
    fn job_item(job: &JobRecord) -> Item {
        HashMap::from([
            ("pk".into(), s(job_pk(&job.id))),
            ("sk".into(), s("JOB")),
            ("doc".into(), to_doc(job)),
            ("gsi1pk".into(), s(format!("TENANT#{}", job.tenant))),
            (
                "gsi1sk".into(),
                s(format!("BULK#{}#{}", job.created_at.to_rfc3339(), job.id)),
            ),
        ])
    }

    fn claim_item(job: &str, claim: &RowClaim) -> Item {
        HashMap::from([
            ("pk".into(), s(job_pk(job))),
            ("sk".into(), s(row_sk(claim.index))),
            ("doc".into(), to_doc(claim)),
        ])
    }
}

impl JobStore for DynamoState {
    async fn create_job(&self, job: &JobRecord) -> Result<bool, StateError> {
        self.put_new(Self::job_item(job)).await
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StateError> {
        match self.get(&job_pk(id), "JOB").await? {
            Some(item) => self.decode_doc(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn jobs(&self, tenant: &str) -> Result<Vec<JobRecord>, StateError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :pk AND begins_with(gsi1sk, :p)")
                .expression_attribute_values(":pk", s(format!("TENANT#{tenant}")))
                .expression_attribute_values(":p", s("BULK#"))
                .scan_index_forward(false)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.err("Query", e))?;
            for item in page.items() {
                out.push(self.decode_doc(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn set_status(
        &self,
        id: &str,
        status: JobStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        self.change_job(id, |job| {
            job.status = status;
            job.reason = reason.map(str::to_string);
            job.updated_at = at;
        })
        .await
    }

    async fn resume(
        &self,
        id: &str,
        from: DateTime<Utc>,
        first: usize,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        self.change_job(id, |job| {
            job.status = JobStatus::Running;
            job.reason = None;
            job.paced_from = Some(from);
            job.paced_first = first;
            job.updated_at = at;
        })
        .await
    }

    async fn claim_row(&self, job: &str, claim: &RowClaim) -> Result<RowClaim, StateError> {
        Ok(self
            .put_new_or_existing(Self::claim_item(job, claim), Self::decode_doc)
            .await?
            .unwrap_or_else(|| claim.clone()))
    }

    async fn mark_submitted(&self, job: &str, index: usize) -> Result<(), StateError> {
        let Some(item) = self.get(&job_pk(job), &row_sk(index)).await? else {
            return Ok(());
        };
        let mut claim: RowClaim = self.decode_doc(&item)?;
        if claim.submitted {
            return Ok(());
        }
        claim.submitted = true;
        self.put(Self::claim_item(job, &claim)).await
    }

    async fn claims(&self, job: &str) -> Result<Vec<RowClaim>, StateError> {
        self.query_prefix(&job_pk(job), "ROW#")
            .await?
            .iter()
            .map(|item| self.decode_doc(item))
            .collect()
    }
}

impl DynamoState {
    /// Reads the job, changes it, writes it back if unchanged since (a concurrent change is
    /// read again); `false` when it does not exist or was cancelled.
    async fn change_job(
        &self,
        id: &str,
        change: impl Fn(&mut JobRecord) + Send + Sync,
    ) -> Result<bool, StateError> {
        for _ in 0..5 {
            let Some(item) = self.get(&job_pk(id), "JOB").await? else {
                return Ok(false);
            };
            let mut job: JobRecord = self.decode_doc(&item)?;
            if job.status == JobStatus::Cancelled {
                return Ok(false);
            }
            let old = item.get("doc").cloned().unwrap_or_else(|| s(""));
            change(&mut job);
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(Self::job_item(&job)))
                .condition_expression("doc = :old")
                .expression_attribute_values(":old", old)
                .send()
                .await;
            match result {
                Ok(_) => return Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    continue;
                }
                Err(e) => return Err(self.err("PutItem", e)),
            }
        }
        Err(StateError {
            operation: "PutItem",
            table: self.table.clone(),
            message: format!("job {id}: its status kept changing under this write"),
        })
    }
}
