//! The one shape every host invokes a step through: a Lambda event in, a Lambda response out.
//! `pec_host::run_step` serves it to the Lambda runtime; the local runner calls it with the
//! events it polls from SQS. Both therefore run exactly the same code.

use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use pec_ports::EventPublisher;
use pec_ports::{
    MailTransport, ObjectStore, QueueSender, ReplaceableStore, RetainedStore, StateStore,
};
use pec_scan::definitions::DefinitionsUpdater;
use serde_json::Value;

use crate::definitions::{DefinitionsMetrics, DefinitionsUpdate};
use crate::deliver::Deliver;
use crate::ingress::Ingress;
use crate::lockout::SpamSweep;
use crate::pwreport::PasswordReport;
use crate::receipts::Receipts;
use crate::scan::ScanStep;
use crate::scan::metrics::Metrics;
use crate::sign::SignStep;
use crate::sms::SmsNotify;
use crate::timers::Timers;
use crate::webhooks::Webhooks;
use pec_ports::webhooks::{WebhookClient, WebhookStore};

/// An invocation that failed as a whole (Lambda retries it; for SQS, every record).
pub type StepFailure = Box<dyn std::error::Error + Send + Sync>;

/// A step as a Lambda function: one event (JSON) at `now`, one response (JSON).
pub trait Step: Send + Sync {
    /// The step's name (logs, the runner).
    fn name(&self) -> &'static str;

    /// Handles one invocation.
    fn invoke(
        &self,
        event: Value,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Value, StepFailure>> + Send;
}

fn sqs(event: Value) -> Result<SqsEvent, StepFailure> {
    Ok(serde_json::from_value(event)?)
}

fn batch(response: SqsBatchResponse) -> Result<Value, StepFailure> {
    Ok(serde_json::to_value(response)?)
}

impl<St: ObjectStore + RetainedStore, Si: pec_smime::DigestSigner, Db: StateStore> Step
    for SignStep<St, Si, Db>
{
    fn name(&self) -> &'static str {
        "sign"
    }
    async fn invoke(&self, event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        batch(self.handle(sqs(event)?, now).await)
    }
}

impl<St: ObjectStore, Rt: RetainedStore, M: Metrics> Step for ScanStep<St, Rt, M> {
    fn name(&self) -> &'static str {
        "scan"
    }
    async fn invoke(&self, event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        batch(self.handle(sqs(event)?, now).await)
    }
}

/// Two triggers: the ingress queue (SQS: submissions, inbound envelopes, clean scans) and SES
/// receiving's Lambda action (after its S3 action stored `inbound/<message id>`), which records
/// each message's SMTP envelope as `inbound/<id>.json` — that object then arrives on the queue.
impl<St: ObjectStore + RetainedStore, Db: StateStore, Q: QueueSender> Step for Ingress<St, Db, Q> {
    fn name(&self) -> &'static str {
        "ingress"
    }
    async fn invoke(&self, event: Value, _now: DateTime<Utc>) -> Result<Value, StepFailure> {
        if event["Records"][0]["eventSource"] == "aws:ses" {
            let ses = serde_json::from_value(event)?;
            let n = self.handle_ses(&ses).await?;
            return Ok(serde_json::json!({ "recorded": n }));
        }
        batch(self.handle(sqs(event)?).await)
    }
}

impl<St, Db, Q, Ev, Tr> Step for Deliver<St, Db, Q, Ev, Tr>
where
    St: ObjectStore,
    Db: StateStore,
    Q: QueueSender,
    Ev: EventPublisher,
    Tr: MailTransport,
{
    fn name(&self) -> &'static str {
        "deliver"
    }
    async fn invoke(&self, event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        batch(self.handle(sqs(event)?, now).await)
    }
}

impl<St: ObjectStore, Db: StateStore> Step for Receipts<St, Db> {
    fn name(&self) -> &'static str {
        "receipts"
    }
    async fn invoke(&self, event: Value, _now: DateTime<Utc>) -> Result<Value, StepFailure> {
        batch(self.handle(sqs(event)?).await)
    }
}

/// Run on a schedule: the event's content is not used; the clock is.
impl<St: ObjectStore, Db: StateStore> Step for Timers<St, Db> {
    fn name(&self) -> &'static str {
        "timers"
    }
    async fn invoke(&self, _event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        let emitted = self.sweep(now).await?;
        Ok(serde_json::json!({ "notices": emitted.len() }))
    }
}

impl<Db: StateStore, Mt: MailTransport, Sm: pec_ports::sms::SmsSender> Step
    for SpamSweep<Db, Mt, Sm>
{
    fn name(&self) -> &'static str {
        "spam-sweep"
    }
    async fn invoke(&self, _event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        let lines = self.run(now).await?;
        let locked = lines.iter().filter(|l| l.outcome == "locked").count();
        let failed: Vec<&str> = lines
            .iter()
            .filter(|l| l.outcome == "error")
            .map(|l| l.mailbox.as_str())
            .collect();
        if !failed.is_empty() {
            // Every other mailbox was swept; the invocation fails so that it shows (Lambda's
            // Errors metric) and the next sweep retries these.
            return Err(format!("spam sweep failed for {failed:?} ({locked} locked)").into());
        }
        Ok(serde_json::json!({ "locked": locked, "mailboxes": lines }))
    }
}

impl<Db: StateStore, St: ObjectStore> Step for PasswordReport<Db, St> {
    fn name(&self) -> &'static str {
        "password-report"
    }
    /// `{"month": "YYYY-MM"}` (a manual run), `{"preview": true}` (the current month so far),
    /// or the month before the scheduled event's `time` (stable across EventBridge's retries),
    /// or the month before `now`.
    async fn invoke(&self, event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        use crate::pwreport::{ReportRun, month_before};
        let run = match (
            event["month"].as_str(),
            event["preview"].as_bool(),
            event["time"].as_str(),
        ) {
            (Some(m), _, _) => ReportRun::Month(m.to_string()),
            (None, Some(true), _) => ReportRun::Preview,
            (None, _, Some(t)) => ReportRun::Month(month_before(t.parse::<DateTime<Utc>>()?)),
            (None, _, None) => ReportRun::Month(month_before(now)),
        };
        let lines = self.run(&run, now).await?;
        let submitted = lines.iter().filter(|l| l.outcome == "submitted").count();
        Ok(
            serde_json::json!({ "run": format!("{run:?}"), "submitted": submitted, "mailboxes": lines }),
        )
    }
}

impl<Db, W, C, Q> Step for Webhooks<Db, W, C, Q>
where
    Db: StateStore,
    W: WebhookStore,
    C: WebhookClient,
    Q: QueueSender,
{
    fn name(&self) -> &'static str {
        "webhooks"
    }
    async fn invoke(&self, event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        batch(self.handle(sqs(event)?, now).await)
    }
}

impl<Db, Sm, Q> Step for SmsNotify<Db, Sm, Q>
where
    Db: StateStore,
    Sm: pec_ports::sms::SmsSender,
    Q: QueueSender,
{
    fn name(&self) -> &'static str {
        "sms-notify"
    }
    async fn invoke(&self, event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        batch(self.handle(sqs(event)?, now).await)
    }
}

impl<St: ObjectStore + ReplaceableStore, U: DefinitionsUpdater, M: DefinitionsMetrics> Step
    for DefinitionsUpdate<St, U, M>
{
    fn name(&self) -> &'static str {
        "clamav-update"
    }
    /// Any event (the schedule's, or `{}` from an operator's `aws lambda invoke`).
    async fn invoke(&self, _event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        Ok(serde_json::to_value(self.run(now).await?)?)
    }
}

impl<O, St, J, Q> Step for crate::bulk::BulkWorker<O, St, J, Q>
where
    O: ObjectStore,
    St: StateStore,
    J: pec_ports::bulk::JobStore,
    Q: QueueSender,
{
    fn name(&self) -> &'static str {
        "bulk"
    }
    async fn invoke(&self, event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        batch(self.handle(sqs(event)?, now).await)
    }
}
