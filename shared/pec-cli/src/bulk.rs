//! `pec bulk`: mass sending (issue #19). `send` checks the list and templates, stores the job
//! and hands its chunks to the bulk function (the bulk queue), then follows it with a progress
//! bar until every row is submitted (`--no-wait`: return at once); `status`, `resume`,
//! `report` (CSV, `--failures`), `pause`, `cancel`, `list`. The logic is
//! `pec_pipeline::bulk`; the rows are submitted by the bulk function, never by this command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use pec_aws::{AwsClients, ClientSettings, DynamoState, S3Store, SqsSender};
use pec_bulk::Templates;
use pec_bulk::message::Attachment;
use pec_pipeline::bulk::{Bulk, BulkSettings, NewJob};
use pec_ports::bulk::{JobStatus, JobStore};

use crate::mailbox::{env, exit, runtime};

#[derive(Args, Debug)]
pub struct BulkArgs {
    #[command(subcommand)]
    pub command: BulkCommand,
}

// Parsed once per process: the size of one variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum BulkCommand {
    /// Make a job: one personalised PEC per row of the list, from a mailbox whose plan includes
    /// mass sending. Prints the rows set aside and a preview, then follows the job.
    Send {
        /// The list: .csv (UTF-8; `;`, `,` or tab) or .xlsx, a header row naming the columns.
        #[arg(long)]
        list: PathBuf,
        /// The sending mailbox.
        #[arg(long)]
        from: String,
        /// A display name for the sender.
        #[arg(long)]
        from_name: Option<String>,
        /// The subject, with parameters: "Sollecito per {{ Nome }}".
        #[arg(long)]
        subject: String,
        /// The text body (a file), with parameters.
        #[arg(long)]
        body: Option<PathBuf>,
        /// An HTML body (a file), with parameters (values are HTML-escaped).
        #[arg(long)]
        html: Option<PathBuf>,
        /// A file every message carries (repeatable).
        #[arg(long)]
        attach: Vec<PathBuf>,
        /// The job's name (its folder in the sender's mailbox); default the list's file name.
        #[arg(long)]
        name: Option<String>,
        /// The column holding the addresses (default: the one named PEC, Email, Indirizzo...).
        #[arg(long)]
        address_column: Option<String>,
        /// completa, breve or sintetica.
        #[arg(long, default_value = "completa")]
        receipt: String,
        /// Rows submitted per minute at most.
        #[arg(long)]
        per_minute: Option<u32>,
        /// Check and preview only: nothing is stored or sent.
        #[arg(long)]
        dry_run: bool,
        /// Return once the job is handed out, without following it.
        #[arg(long)]
        no_wait: bool,
        /// Give up following after this many seconds (the job goes on).
        #[arg(long, default_value_t = 3600)]
        wait_seconds: u64,
    },
    /// Where a job stands: rows submitted, delivered, failed.
    Status { job: String },
    /// Hand out again every chunk with rows not yet submitted (after a pause or an outage).
    Resume { job: String },
    /// Stop handing out rows; `resume` goes on from there.
    Pause { job: String },
    /// Stop for good: rows not yet submitted never will be.
    Cancel { job: String },
    /// The report, one line per row of the list (CSV on stdout or into --out).
    Report {
        job: String,
        /// Only the rows not delivered (set aside, refused, not delivered, timed out).
        #[arg(long)]
        failures: bool,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A tenant's jobs, newest first.
    List { tenant: String },
}

pub fn run(args: BulkArgs) -> ExitCode {
    exit(runtime().and_then(|rt| rt.block_on(bulk(args))))
}

fn queue_url() -> anyhow::Result<String> {
    std::env::var("PEC_BULK_QUEUE_URL")
        .or_else(|_| std::env::var("PEC_OUTPUT_BULK_QUEUE_URL"))
        .context("PEC_BULK_QUEUE_URL (the stack's BulkQueueUrl output); locally: eval \"$(infra/local/stack.sh env)\"")
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn text(path: &PathBuf) -> anyhow::Result<String> {
    String::from_utf8(read(path)?).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// A media type from a file name, for the common attachments.
fn media_type(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or_default();
    match ext {
        "pdf" => "application/pdf",
        "p7m" => "application/pkcs7-mime",
        "xml" => "application/xml",
        "txt" => "text/plain",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        "csv" => "text/csv",
        _ => "application/octet-stream",
    }
}

async fn bulk(args: BulkArgs) -> anyhow::Result<ExitCode> {
    let aws = AwsClients::load(&ClientSettings::from_env()?).await;
    let state = DynamoState::new(
        aws.dynamodb.clone(),
        &env("PEC_STATE_TABLE")?,
        &env("PEC_LOG_TABLE")?,
    );
    let objects = S3Store::new(aws.s3.clone());
    let queue = SqsSender::new(aws.sqs.clone());
    // What the bulk function reads, with the queue also found as the stack's output.
    let bulk_queue = queue_url()?;
    let settings = BulkSettings::from_env(&pec_ports::Env::from_fn(move |name| match name {
        "PEC_BULK_QUEUE_URL" => Some(bulk_queue.clone()),
        _ => std::env::var(name).ok(),
    }))
    .context("locally: eval \"$(infra/local/stack.sh env)\"")?;
    let b = Bulk {
        objects: &objects,
        state: &state,
        jobs: &state,
        queue: &queue,
        settings: &settings,
    };
    let now = Utc::now();
    match args.command {
        BulkCommand::Send {
            list,
            from,
            from_name,
            subject,
            body,
            html,
            attach,
            name,
            address_column,
            receipt,
            per_minute,
            dry_run,
            no_wait,
            wait_seconds,
        } => {
            let list_name = list
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut attachments = Vec::new();
            for path in &attach {
                let filename = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                attachments.push(Attachment {
                    content_type: media_type(&filename).to_string(),
                    filename,
                    bytes: read(path)?,
                });
            }
            let req = NewJob {
                sender: from,
                sender_name: from_name,
                name: name.unwrap_or_else(|| {
                    list_name
                        .rsplit_once('.')
                        .map(|(n, _)| n.to_string())
                        .unwrap_or(list_name.clone())
                }),
                list: read(&list)?,
                list_name,
                address_column,
                templates: Templates {
                    subject,
                    text: body.as_ref().map(text).transpose()?,
                    html: html.as_ref().map(text).transpose()?,
                },
                receipt,
                attachments,
                per_minute,
                dry_run,
            };
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
            let (job, plan) = b.create(req, None, now, random).await?;
            for s in &plan.skipped {
                println!("row {}: set aside: {} ({})", s.row, s.reason, s.address);
            }
            for (row, address, r) in &plan.preview {
                println!("preview, row {row}, to {address}: {}", r.subject);
            }
            if dry_run {
                println!(
                    "dry run: {} rows would be sent, {} set aside; nothing stored or sent",
                    plan.rows.len(),
                    plan.skipped.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "job {}: {} rows to send in {} chunks, {} set aside; receipts in the folder {:?} of {}",
                job.id,
                job.rows,
                job.chunks,
                job.skipped,
                pec_bulk::job::job_folder(&job.name, &job.id),
                job.sender
            );
            if no_wait {
                return Ok(ExitCode::SUCCESS);
            }
            follow(&state, &job.id, job.rows, wait_seconds).await
        }
        BulkCommand::Status { job } => {
            let record = state
                .job(&job)
                .await?
                .with_context(|| format!("no job {job}"))?;
            let lines = b.report(&job).await?;
            let t = pec_bulk::report::totals(&lines);
            let submitted = state
                .claims(&job)
                .await?
                .iter()
                .filter(|c| c.submitted)
                .count();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "job": record.id,
                    "name": record.name,
                    "sender": record.sender,
                    "status": if record.status == JobStatus::Running && submitted == record.rows { "submitted" } else { record.status.as_str() },
                    "reason": record.reason,
                    "created_at": record.created_at,
                    "rows": record.rows,
                    "skipped": record.skipped,
                    "submitted": submitted,
                    "delivered": t.delivered,
                    "failed": t.failed,
                    "settled": t.settled,
                    "folder": pec_bulk::job::job_folder(&record.name, &record.id),
                }))?
            );
            Ok(ExitCode::SUCCESS)
        }
        BulkCommand::Resume { job } => {
            let n = b.resume(&job, now).await?;
            println!("job {job}: {n} chunks handed out again");
            Ok(ExitCode::SUCCESS)
        }
        BulkCommand::Pause { job } => {
            if !state
                .set_status(&job, JobStatus::Paused, Some("paused by the operator"), now)
                .await?
            {
                bail!("no job {job}, or it was cancelled");
            }
            println!("job {job}: paused; `pec bulk resume {job}` goes on");
            Ok(ExitCode::SUCCESS)
        }
        BulkCommand::Cancel { job } => {
            if !state
                .set_status(
                    &job,
                    JobStatus::Cancelled,
                    Some("cancelled by the operator"),
                    now,
                )
                .await?
            {
                bail!("no job {job}, or it was cancelled already");
            }
            println!("job {job}: cancelled; rows not yet submitted will not be");
            Ok(ExitCode::SUCCESS)
        }
        BulkCommand::Report { job, failures, out } => {
            let lines = b.report(&job).await?;
            let csv = pec_bulk::report::to_csv(&lines, failures);
            match out {
                Some(path) => std::fs::write(&path, &csv)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{}", String::from_utf8_lossy(&csv)),
            }
            Ok(ExitCode::SUCCESS)
        }
        BulkCommand::List { tenant } => {
            for j in state.jobs(&tenant).await? {
                println!(
                    "{}\t{}\t{}\t{} rows\t{}",
                    j.id,
                    j.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    j.status.as_str(),
                    j.rows,
                    j.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A progress bar of the rows submitted, until all are or `wait_seconds` pass.
async fn follow(
    state: &DynamoState,
    job: &str,
    rows: usize,
    wait_seconds: u64,
) -> anyhow::Result<ExitCode> {
    let bar = indicatif::ProgressBar::new(rows as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} submitted {pos}/{len} [{bar:30}] {elapsed} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(wait_seconds);
    loop {
        let submitted = state
            .claims(job)
            .await?
            .iter()
            .filter(|c| c.submitted)
            .count();
        bar.set_position(submitted as u64);
        let record = state
            .job(job)
            .await?
            .with_context(|| format!("no job {job}"))?;
        if submitted >= rows {
            bar.finish_with_message("every row submitted");
            println!(
                "job {job}: {submitted} rows submitted; `pec bulk report {job}` follows the receipts"
            );
            return Ok(ExitCode::SUCCESS);
        }
        if matches!(record.status, JobStatus::Paused | JobStatus::Cancelled) {
            bar.abandon_with_message(record.status.as_str().to_string());
            println!(
                "job {job}: {} ({}); {submitted} of {rows} rows submitted",
                record.status.as_str(),
                record.reason.unwrap_or_default()
            );
            return Ok(ExitCode::from(1));
        }
        if std::time::Instant::now() > deadline {
            bar.abandon_with_message("still running");
            println!(
                "job {job}: {submitted} of {rows} rows submitted so far; it goes on without this command"
            );
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
