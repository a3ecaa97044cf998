//! The whole pipeline end to end on the emulators, driven over SMTP as a user would: the
//! submission gateway and every function of template.yaml run in `pec-runner` (the local
//! stand-in for Lambda), clamd is the project's, the signatures come from the LocalStack KMS key
//! certified by a development CA. Every check asserts what ends up in the mailboxes, the
//! evidence bucket, the provider log and on the event bus.
//!
//! - `scenarios_over_smtp`: the issue's demo scenarios (delivered, unknown mailbox, Bcc, virus);
//!   every stored item verifies with our verifier and with OpenSSL and carries the message's
//!   identificativo;
//! - `events_reach_the_event_bus`: an EventBridge rule routes the integration events to SQS;
//! - `every_message_delivered_three_times`: `--deliver-times 3` (at-least-once delivery) makes
//!   nothing twice;
//! - `chaos_runner_killed_at_random_points`: 50 messages, the runner SIGKILLed and restarted
//!   several times: nothing lost, nothing duplicated, nothing in a DLQ;
//! - `quota_refuses_then_frees`: a full mailbox refuses an envelope (5.2.2) until an item is
//!   deleted;
//! - `clamav_definitions_update`: the ClamAV definition updater's code (`pec antivirus update`,
//!   its calls held to ClamavUpdateFunction's role) with Debian's freshclam against a loopback
//!   mirror of Talos-signed test databases, into the stack's evidence bucket.
//!
//! Run: `cargo test -p pec-integration --test pipeline` (reuses or starts the emulators and
//! clamd; the runners' logs of the last run are in `<state dir>/test-logs/pipeline/`). The
//! chaos seed is printed and can be fixed with `PEC_CHAOS_SEED=<n>`.
//!
//! Emulator facts these checks rely on or work around (LocalStack 4.8.1): an EventBridge rule
//! with an SQS target delivers (content filtering on `detail` included); a conditional PutObject
//! (`If-None-Match: *`) is **not** atomic: concurrent ones can all succeed (see
//! [`keys_with_one_content`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use libtest_mimic::Arguments;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use pec_aws::{DynamoMailStore, S3Store};
use pec_core::classify::{Kind, classify};
use pec_core::daticert::{Daticert, Errore};
use pec_core::events::PecEvent;
use pec_integration::{
    Binaries, Check, MAILBOX_PASSWORD, Provisioned, Runner, Stack, checks, repo_root, run_checks,
    unique,
};
use pec_ports::mailstore::{INBOX, MailStore, Origin};
use pec_ports::{MailboxItem, MessageRecord, StateStore};
use pec_smime::{Verdict, VerifyOptions, verify_message};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::time::Instant;

type Ctx = Provisioned;

/// Every step's queue (the runner polls them).
const QUEUES: [&str; 5] = [
    "IngressQueueUrl",
    "ScanQueueUrl",
    "SignQueueUrl",
    "DeliverQueueUrl",
    "ReceiptsQueueUrl",
];

// ------------------------------------------------------------------------------ helpers

/// A runner with the SMTP gateway, and what a client needs to reach it.
struct Gateway {
    runner: Runner,
    /// In-flight messages before the runner started (see [`Baseline`]).
    baseline: Baseline,
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    cert_pem: PathBuf,
}

/// `pec-runner --smtp-port 0 ARGS` (every function plus the gateway).
async fn gateway(ctx: &Ctx, name: &str, args: &[&str]) -> Result<Gateway> {
    let baseline = baseline(ctx).await?;
    let name = unique(name);
    let cert_pem = ctx.log_dir.join(format!("{name}.pem"));
    let cert_arg = cert_pem.to_string_lossy().into_owned();
    let mut all = vec!["--smtp-port", "0", "--smtp-cert-out", &cert_arg];
    all.extend_from_slice(args);
    let runner = ctx.runner(&name, &all)?;
    let addr = runner.smtp.context("the runner started no gateway")?;
    let pem = std::fs::read(&cert_pem)
        .with_context(|| format!("reading the gateway certificate {}", cert_pem.display()))?;
    let cert = CertificateDer::from_pem_slice(&pem)
        .map_err(|e| anyhow::anyhow!("gateway certificate: {e:?}"))?
        .into_owned();
    Ok(Gateway {
        runner,
        baseline,
        addr,
        cert,
        cert_pem,
    })
}

/// A message as a mail client builds it (mail-builder, as `pec send` does).
fn message(from: &str, to: &[&str], bcc: &[&str], subject: &str, text: &str) -> Result<Vec<u8>> {
    fn list<'a>(v: &[&'a str]) -> Address<'a> {
        Address::new_list(v.iter().map(|a| Address::from(*a)).collect())
    }
    let mut m = MessageBuilder::new()
        .from(Address::from(from))
        .to(list(to))
        .subject(subject)
        .text_body(text);
    if !bcc.is_empty() {
        m = m.bcc(list(bcc));
    }
    m.write_to_vec().context("building a message")
}

/// Submits `raw` over SMTP (STARTTLS, AUTH PLAIN as `user`) to `recipients`; the submission id.
async fn submit(gw: &Gateway, user: &str, recipients: &[&str], raw: &[u8]) -> Result<String> {
    let recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let id = pec_submit::client::submit(
        gw.addr,
        &gw.cert,
        "localhost",
        user,
        MAILBOX_PASSWORD,
        user,
        &recipients,
        raw,
    )
    .await
    .with_context(|| format!("submitting as {user}"))?;
    ensure!(!id.is_empty(), "the gateway gave no queue id");
    Ok(id)
}

/// `pec send` (the user's command) through the gateway; the submission id it prints.
async fn pec_send(ctx: &Ctx, gw: &Gateway, user: &str, extra: &[&str]) -> Result<String> {
    let server = gw.addr.to_string();
    let ca = gw.cert_pem.to_string_lossy().into_owned();
    let mut args = vec![
        "send",
        "--server",
        &server,
        "--ca",
        &ca,
        "--user",
        user,
        "--password-stdin",
    ];
    args.extend_from_slice(extra);
    let id = ctx
        .pec(&args, Some(&format!("{MAILBOX_PASSWORD}\n")))
        .await?
        .trim()
        .to_string();
    ensure!(!id.is_empty(), "pec send printed no submission id");
    Ok(id)
}

async fn items(ctx: &Ctx, address: &str) -> Result<Vec<MailboxItem>> {
    Ok(ctx.state.mailbox_items(address).await?)
}

/// Polls until every mailbox holds at least its count of items (never a fixed sleep).
async fn wait_for_items(ctx: &Ctx, want: &[(&str, usize)], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = Vec::new();
        for (address, n) in want {
            let have = items(ctx, address).await?;
            if have.len() < *n {
                missing.push(format!(
                    "{address}: {} of {n} ({:?})",
                    have.len(),
                    have.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>()
                ));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "after {} s the mailboxes still miss items: {}",
                timeout.as_secs(),
                missing.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (visible, in flight, delayed) messages of a queue.
async fn queue_depth(ctx: &Ctx, url: &str) -> Result<(u64, u64, u64)> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = ctx
        .aws
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .with_context(|| format!("GetQueueAttributes {url}"))?;
    let attrs = out.attributes().cloned().unwrap_or_default();
    let get = |a: A| {
        attrs
            .get(&a)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    Ok((
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
        get(A::ApproximateNumberOfMessagesDelayed),
    ))
}

/// Messages in flight in each step's queue before a check started its runner. They are held
/// by some other consumer (e.g. a test that received a message and has not deleted it: it
/// stays invisible for the queue's visibility timeout, 12 minutes), so they are not this
/// check's work and must not keep it waiting.
#[derive(Debug, Clone, Default)]
struct Baseline(BTreeMap<&'static str, u64>);

async fn baseline(ctx: &Ctx) -> Result<Baseline> {
    let mut b = BTreeMap::new();
    for q in QUEUES {
        b.insert(q, queue_depth(ctx, ctx.stack.output(q)?).await?.1);
    }
    Ok(Baseline(b))
}

/// Waits until the pipeline has nothing more to do: no step's queue has a visible or delayed
/// message, and none has more in flight than before the check (a message being handled, or
/// failed and waiting for its retry, is in flight), on three polls in a row 250 ms apart (an S3
/// notification still on its way to SQS shows up within that window).
async fn wait_drained(ctx: &Ctx, base: &Baseline, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut quiet = 0;
    loop {
        let mut busy = Vec::new();
        for q in QUEUES {
            let (visible, in_flight, delayed) = queue_depth(ctx, ctx.stack.output(q)?).await?;
            let before = base.0.get(q).copied().unwrap_or(0);
            if visible + delayed > 0 || in_flight > before {
                busy.push(format!(
                    "{q}: {visible} visible, {in_flight} in flight ({before} before the check), {delayed} delayed"
                ));
            }
        }
        if busy.is_empty() {
            quiet += 1;
            if quiet >= 3 {
                return Ok(());
            }
        } else {
            quiet = 0;
            if Instant::now() > deadline {
                bail!(
                    "the pipeline is still busy after {} s: {}",
                    timeout.as_secs(),
                    busy.join("; ")
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn get_object(ctx: &Ctx, bucket: &str, key: &str) -> Result<Vec<u8>> {
    Ok(ctx
        .aws
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("GetObject s3://{bucket}/{key}"))?
        .body
        .collect()
        .await?
        .into_bytes()
        .to_vec())
}

async fn object_exists(ctx: &Ctx, bucket: &str, key: &str) -> Result<bool> {
    match ctx
        .aws
        .s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!("HeadObject s3://{bucket}/{key}"))),
    }
}

async fn record(ctx: &Ctx, id: &str) -> Result<MessageRecord> {
    ctx.state
        .message(id)
        .await?
        .with_context(|| format!("no message record for submission {id}"))
}

/// `openssl smime -verify` against the development CA.
async fn openssl_verifies(ctx: &Ctx, bytes: &[u8]) -> Result<(bool, String)> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), bytes)?;
    let out = tokio::process::Command::new("openssl")
        .args(["smime", "-verify", "-purpose", "smimesign", "-CAfile"])
        .arg(&ctx.pki.ca_pem)
        .arg("-in")
        .arg(file.path())
        .args(["-out", "/dev/null"])
        .output()
        .await
        .context("running openssl")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// One stored item, read back and checked: signature (ours and OpenSSL), daticert present and
/// about the message of `record`, item metadata matching the object.
struct Checked {
    item: MailboxItem,
    kind: Kind,
    to: Vec<String>,
    daticert: Daticert,
}

async fn check_item(ctx: &Ctx, item: &MailboxItem, record: &MessageRecord) -> Result<Checked> {
    let what = format!("{} ({}, {})", item.object_key, item.kind, item.evidence_key);
    let bytes = get_object(
        ctx,
        ctx.stack.output("MailboxBucketName")?,
        &item.object_key,
    )
    .await?;
    ensure!(
        bytes.len() as u64 == item.size,
        "{what}: {} bytes stored, the item says {}",
        bytes.len(),
        item.size
    );
    let v = verify_message(&bytes, &ctx.pki.anchors, None, &VerifyOptions::default());
    ensure!(v.verdict == Verdict::Valid, "{what}: our verifier: {v:?}");
    let (ok, why) = openssl_verifies(ctx, &bytes).await?;
    ensure!(ok, "{what}: openssl smime -verify failed: {why}");
    let c = classify(&bytes);
    let daticert = c
        .daticert
        .clone()
        .with_context(|| format!("{what}: no readable daticert"))?;
    ensure!(
        daticert.dati.identificativo == record.identificativo,
        "{what}: daticert identificativo {} but the message record says {}",
        daticert.dati.identificativo,
        record.identificativo
    );
    ensure!(
        item.identificativo == record.identificativo,
        "{what}: item identificativo {}",
        item.identificativo
    );
    Ok(Checked {
        item: item.clone(),
        kind: c.kind,
        to: c
            .headers
            .to
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect(),
        daticert,
    })
}

/// Every item of `address`, checked; each must concern `record`'s submission (the mailboxes of
/// a scenario are fresh: anything else is a stray delivery).
async fn checked_items(ctx: &Ctx, address: &str, record: &MessageRecord) -> Result<Vec<Checked>> {
    let mut out = Vec::new();
    for item in items(ctx, address).await? {
        ensure!(
            submission_of(&item.evidence_key).as_deref() == Some(record.id.as_str()),
            "{address} holds {} ({}), not about submission {}",
            item.evidence_key,
            item.kind,
            record.id
        );
        out.push(check_item(ctx, &item, record).await?);
    }
    Ok(out)
}

/// The submission id an evidence key is about (`signed/msg/<id>/...`,
/// `signed/scan/submitted/<id>.eml/...`).
fn submission_of(evidence_key: &str) -> Option<String> {
    if let Some(rest) = evidence_key.strip_prefix("signed/msg/") {
        return rest.split('/').next().map(str::to_string);
    }
    let rest = evidence_key.strip_prefix("signed/scan/submitted/")?;
    rest.split(".eml/").next().map(str::to_string)
}

fn kinds(items: &[Checked]) -> Vec<Kind> {
    let mut k: Vec<Kind> = items.iter().map(|c| c.kind).collect();
    k.sort_by_key(|k| k.as_str());
    k
}

/// Every receipt or notice in the sender's mailbox is addressed to the sender.
fn all_to(items: &[Checked], sender: &str) -> Result<()> {
    for c in items {
        ensure!(
            c.to == [sender.to_ascii_lowercase()],
            "{} ({:?}) is addressed to {:?}, not to the sender {sender}",
            c.item.evidence_key,
            c.kind,
            c.to
        );
    }
    Ok(())
}

/// The mailbox as its owner's IMAP and POP3 clients see it (the edge service's store).
fn mail_store(ctx: &Ctx) -> Result<DynamoMailStore<S3Store>> {
    Ok(DynamoMailStore::new(
        ctx.aws.dynamodb.clone(),
        ctx.stack.output("StateTableName")?,
        S3Store::new(ctx.aws.s3.clone()),
        ctx.stack.output("MailboxBucketName")?,
    ))
}

/// used_bytes of the mailbox equals the sum of the sizes of the messages in its folders (what
/// an IMAP client sees: delivered items in INBOX, submissions filed in Sent), and every
/// delivered item is in INBOX, once, with its size.
async fn usage_matches_items(ctx: &Ctx, address: &str) -> Result<()> {
    let m = ctx
        .state
        .mailbox(address)
        .await?
        .with_context(|| format!("no mailbox {address}"))?;
    let store = mail_store(ctx)?;
    let (mut total, mut delivered) = (0, Vec::new());
    for folder in store.folders(address).await? {
        for meta in store.messages(address, &folder.name).await? {
            total += meta.size;
            if folder.name == INBOX && meta.origin == Origin::Delivered {
                delivered.push(meta.size);
            }
        }
    }
    let items = items(ctx, address).await?;
    ensure!(
        m.used_bytes == total,
        "{address}: used_bytes {} but its folders' messages add up to {total}",
        m.used_bytes,
    );
    let mut sizes: Vec<u64> = items.iter().map(|i| i.size).collect();
    sizes.sort_unstable();
    delivered.sort_unstable();
    ensure!(
        sizes == delivered,
        "{address}: delivered items of sizes {sizes:?}, INBOX holds delivered messages of sizes {delivered:?}"
    );
    Ok(())
}

/// The provider-log events about these identificativi (today and the days the messages were
/// received, so a run across midnight UTC is still complete).
///
/// Read here page by page rather than with `StateStore::log_day`, which returns only the first
/// page of a DynamoDB Query (1 MB): on a stack whose log for the day has grown past that, it
/// silently leaves out the newest events (reported as a product bug).
async fn log_events(ctx: &Ctx, records: &[&MessageRecord]) -> Result<Vec<PecEvent>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut days: BTreeSet<String> = records
        .iter()
        .map(|r| r.received_at.format("%Y-%m-%d").to_string())
        .collect();
    days.insert(chrono::Utc::now().format("%Y-%m-%d").to_string());
    let ids: BTreeSet<&str> = records.iter().map(|r| r.identificativo.as_str()).collect();
    let table = ctx.stack.output("ProviderLogTableName")?;
    let mut out = Vec::new();
    for day in days {
        let mut start = None;
        loop {
            let page = ctx
                .aws
                .dynamodb
                .query()
                .table_name(table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(format!("DAY#{day}")))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .with_context(|| format!("Query {table} DAY#{day}"))?;
            for item in page.items() {
                let doc = item
                    .get("doc")
                    .and_then(|v| v.as_s().ok())
                    .context("a log record without doc")?;
                let event: PecEvent = serde_json::from_str(doc).context("a log record's doc")?;
                if ids.contains(event.identificativo.as_str()) {
                    out.push(event);
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
    }
    Ok(out)
}

/// The keys under `prefix` in the evidence bucket, checking that every version of each key has
/// the same bytes (ETag): a duplicate write, if the store let one through, rewrote the same
/// message and never a second, different one.
///
/// One version per key is what S3 guarantees for the steps' conditional writes
/// (`If-None-Match: *`), but LocalStack 4.8.1 does not: two such PUTs arriving at the same
/// instant both succeed (checked with five concurrent PUTs: five versions). The steps rebuild
/// every message byte for byte, so that emulator race still cannot create a different receipt;
/// that is what is asserted here.
async fn keys_with_one_content(ctx: &Ctx, prefix: &str) -> Result<Vec<String>> {
    let out = ctx
        .aws
        .s3
        .list_object_versions()
        .bucket(ctx.stack.output("EvidenceBucketName")?)
        .prefix(prefix)
        .send()
        .await
        .with_context(|| format!("ListObjectVersions {prefix}"))?;
    let mut etags: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for v in out.versions() {
        etags
            .entry(v.key().unwrap_or_default().to_string())
            .or_default()
            .insert(v.e_tag().unwrap_or_default().to_string());
    }
    for (key, tags) in &etags {
        ensure!(
            tags.len() == 1,
            "{key} was written {} times with different bytes",
            tags.len()
        );
    }
    Ok(etags.into_keys().collect())
}

/// Messages of the dead-letter queues, read without consuming them (visibility 0).
async fn dead_letters(ctx: &Ctx) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    // Every dead-letter queue of the template (outputs `<Name>DeadLetterQueueUrl`).
    for (q, url) in ctx
        .stack
        .outputs
        .iter()
        .filter(|(name, _)| name.ends_with("DeadLetterQueueUrl"))
    {
        let q = q.as_str();
        let (visible, in_flight, _) = queue_depth(ctx, url).await?;
        if visible + in_flight == 0 {
            continue;
        }
        // SQS returns a sample per receive: read until every message was seen (or 50 reads
        // brought nothing new).
        let mut seen = BTreeSet::new();
        let mut fruitless = 0;
        while (seen.len() as u64) < visible && fruitless < 50 {
            let got = ctx
                .aws
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send()
                .await?;
            let mut new = false;
            for m in got.messages() {
                if seen.insert(m.message_id().unwrap_or_default().to_string()) {
                    new = true;
                    out.push((q.to_string(), m.body().unwrap_or_default().to_string()));
                }
            }
            fruitless = if new { 0 } else { fruitless + 1 };
        }
        if out.iter().all(|(name, _)| name != q) {
            out.push((
                q.to_string(),
                format!("({visible} visible, {in_flight} in flight)"),
            ));
        }
    }
    Ok(out)
}

/// Stops a runner gracefully and insists it exited cleanly.
fn stop_cleanly(runner: &mut Runner) -> Result<()> {
    match runner.stop() {
        Some(status) if status.success() => Ok(()),
        other => bail!(
            "pec-runner did not stop cleanly ({other:?}):\n{}",
            runner.log_tail(30)
        ),
    }
}

/// Adds the runner's log tail to a failure.
fn with_log<T>(result: Result<T>, runner: &Runner) -> Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e:#}\n--- pec-runner ---\n{}", runner.log_tail(25)))
}

// ------------------------------------------------------------------------------ checks

/// The issue's demo scenarios, each with its own fresh mailboxes, all in flight together:
/// (a) delivered, (b) unknown mailbox of our domain, (c) Bcc (refused), (d) EICAR (refused,
/// quarantined). What each mailbox holds is asserted exactly once the pipeline is idle.
async fn scenarios_over_smtp(ctx: Arc<Ctx>) -> Result<()> {
    let mut gw = gateway(&ctx, "scenarios", &[]).await?;
    let result = scenarios(&ctx, &gw).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn scenarios(ctx: &Ctx, gw: &Gateway) -> Result<()> {
    let (sa, ra) = (ctx.address("sa"), ctx.address("ra"));
    let (sb, nobody) = (ctx.address("sb"), ctx.address("nobody"));
    let (sc, rc, bc) = (ctx.address("sc"), ctx.address("rc"), ctx.address("bc"));
    let (sd, rd) = (ctx.address("sd"), ctx.address("rd"));
    for a in [&sa, &ra, &sb, &sc, &rc, &bc, &sd, &rd] {
        ctx.create_mailbox(a, None).await?;
    }
    let dir = tempfile::tempdir()?;
    let eicar = dir.path().join("eicar.com");
    std::fs::write(&eicar, eicar_bytes())?;
    let eicar = eicar.to_string_lossy().into_owned();

    let id_a = pec_send(
        ctx,
        gw,
        &sa,
        &[
            "--to",
            &ra,
            "--subject",
            "Scenario A",
            "--text",
            "Buongiorno.",
        ],
    )
    .await?;
    let id_b = pec_send(
        ctx,
        gw,
        &sb,
        &[
            "--to",
            &nobody,
            "--subject",
            "Scenario B",
            "--text",
            "A chi?",
        ],
    )
    .await?;
    let id_c = pec_send(
        ctx,
        gw,
        &sc,
        &[
            "--to",
            &rc,
            "--bcc",
            &bc,
            "--subject",
            "Scenario C",
            "--text",
            "In copia nascosta.",
        ],
    )
    .await?;
    let id_d = pec_send(
        ctx,
        gw,
        &sd,
        &[
            "--to",
            &rd,
            "--subject",
            "Scenario D",
            "--text",
            "Allegato.",
            "--attach",
            &eicar,
        ],
    )
    .await?;

    wait_for_items(
        ctx,
        &[(&sa, 2), (&ra, 1), (&sb, 2), (&sc, 1), (&sd, 1)],
        Duration::from_secs(40),
    )
    .await?;
    wait_drained(ctx, &gw.baseline, Duration::from_secs(20)).await?;

    // (a) delivered: acceptance + delivery receipt for the sender, the envelope for the recipient.
    let rec = record(ctx, &id_a).await?;
    let sender_items = checked_items(ctx, &sa, &rec).await?;
    ensure!(
        kinds(&sender_items) == [Kind::Accettazione, Kind::AvvenutaConsegna],
        "(a) sender holds {:?}",
        kinds(&sender_items)
    );
    all_to(&sender_items, &sa)?;
    let consegna = sender_items
        .iter()
        .find(|c| c.kind == Kind::AvvenutaConsegna)
        .context("no delivery receipt")?;
    ensure!(
        consegna.daticert.dati.consegna.as_deref() == Some(ra.as_str()),
        "(a) the delivery receipt is for {:?}",
        consegna.daticert.dati.consegna
    );
    let rcpt_items = checked_items(ctx, &ra, &rec).await?;
    ensure!(
        kinds(&rcpt_items) == [Kind::BustaTrasporto],
        "(a) recipient holds {:?}",
        kinds(&rcpt_items)
    );
    ensure!(
        rcpt_items[0].item.kind == "posta-certificata" && rcpt_items[0].to.contains(&ra),
        "(a) envelope: kind {}, To {:?}",
        rcpt_items[0].item.kind,
        rcpt_items[0].to
    );
    ensure!(
        rec.state.as_str() == "accepted",
        "(a) message state {}",
        rec.state
    );

    // (b) unknown mailbox of our domain: acceptance + non-delivery notice 5.1.1.
    let rec = record(ctx, &id_b).await?;
    let sender_items = checked_items(ctx, &sb, &rec).await?;
    ensure!(
        kinds(&sender_items) == [Kind::Accettazione, Kind::ErroreConsegna],
        "(b) sender holds {:?}",
        kinds(&sender_items)
    );
    all_to(&sender_items, &sb)?;
    let notice = sender_items
        .iter()
        .find(|c| c.kind == Kind::ErroreConsegna)
        .context("no non-delivery notice")?;
    let esteso = notice
        .daticert
        .dati
        .errore_esteso
        .clone()
        .unwrap_or_default();
    ensure!(
        esteso.starts_with("5.1.1") && notice.daticert.errore == Errore::NoDest,
        "(b) errore {:?}, errore-esteso {esteso:?}",
        notice.daticert.errore
    );
    ensure!(
        notice.daticert.dati.consegna.as_deref() == Some(nobody.as_str()),
        "(b) the notice is about {:?}",
        notice.daticert.dati.consegna
    );

    // (c) Bcc: refused at the access point; no envelope leaves.
    let rec = record(ctx, &id_c).await?;
    let sender_items = checked_items(ctx, &sc, &rec).await?;
    ensure!(
        kinds(&sender_items) == [Kind::NonAccettazione],
        "(c) sender holds {:?}",
        kinds(&sender_items)
    );
    all_to(&sender_items, &sc)?;
    let d = &sender_items[0].daticert;
    let esteso = d.dati.errore_esteso.clone().unwrap_or_default();
    ensure!(
        d.errore == Errore::Altro && esteso.to_ascii_lowercase().contains("bcc"),
        "(c) errore {:?}, errore-esteso {esteso:?}",
        d.errore
    );
    ensure!(
        rec.state.as_str() == "rejected",
        "(c) message state {}",
        rec.state
    );
    for a in [&rc, &bc] {
        let held = items(ctx, a).await?;
        ensure!(held.is_empty(), "(c) {a} received {held:?}");
    }

    // (d) EICAR: non-acceptance for virus, nothing delivered, the message in quarantine.
    let rec = record(ctx, &id_d).await?;
    let sender_items = checked_items(ctx, &sd, &rec).await?;
    ensure!(
        kinds(&sender_items) == [Kind::NonAccettazione],
        "(d) sender holds {:?}",
        kinds(&sender_items)
    );
    all_to(&sender_items, &sd)?;
    ensure!(
        sender_items[0].daticert.errore == Errore::Virus,
        "(d) errore {:?}",
        sender_items[0].daticert.errore
    );
    let held = items(ctx, &rd).await?;
    ensure!(held.is_empty(), "(d) {rd} received {held:?}");
    let quarantine = format!("quarantine/{}", rec.raw_key);
    ensure!(
        rec.raw_key == format!("submitted/{id_d}.eml"),
        "(d) raw key {}",
        rec.raw_key
    );
    let kept = get_object(
        ctx,
        ctx.stack.output("ConservationBucketName")?,
        &quarantine,
    )
    .await
    .context("(d) the infected message is not in quarantine")?;
    let raw = get_object(ctx, ctx.stack.output("RawMailBucketName")?, &rec.raw_key).await?;
    ensure!(
        kept == raw,
        "(d) the quarantined copy differs from the submitted message"
    );

    for a in [&sa, &ra, &sb, &sc, &sd] {
        usage_matches_items(ctx, a).await?;
    }
    Ok(())
}

/// EICAR, assembled at run time from two halves (as pec-scan's testing module does) so that no
/// source file looks like the test virus.
fn eicar_bytes() -> Vec<u8> {
    let mut v = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR".to_vec();
    v.extend_from_slice(b"-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

/// An EventBridge rule on the provider's bus routes this sender's events to a fresh SQS queue:
/// one message to a delivered and an unknown recipient yields accepted, envelope-dispatched,
/// delivered and not-delivered events, the same (by event id) as the provider log.
async fn events_reach_the_event_bus(ctx: Arc<Ctx>) -> Result<()> {
    let sender = ctx.address("ev");
    let (queue_url, rule) = subscribe(&ctx, &sender).await?;
    let result = async {
        let mut gw = gateway(&ctx, "events", &[]).await?;
        let result = events_flow(&ctx, &gw, &sender, &queue_url).await;
        let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
        with_log(result, &gw.runner)
    }
    .await;
    let cleanup = unsubscribe(&ctx, &queue_url, &rule).await;
    result.and(cleanup)
}

/// A queue and a rule `{source: pec.gestore, detail.sender: [sender]}` targeting it.
async fn subscribe(ctx: &Ctx, sender: &str) -> Result<(String, String)> {
    let name = unique("pec-it-events");
    let queue_url = ctx
        .aws
        .sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .context("CreateQueue")?
        .queue_url()
        .context("no queue URL")?
        .to_string();
    let arn = ctx
        .aws
        .sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .context("no queue ARN")?;
    let bus = ctx.stack.output("EventBusName")?;
    let pattern = serde_json::json!({"source": ["pec.gestore"], "detail": {"sender": [sender]}});
    let setup = async {
        ctx.aws
            .events
            .put_rule()
            .name(&name)
            .event_bus_name(bus)
            .event_pattern(pattern.to_string())
            .send()
            .await
            .context("PutRule")?;
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("queue")
            .arn(arn)
            .build()
            .context("target")?;
        let out = ctx
            .aws
            .events
            .put_targets()
            .rule(&name)
            .event_bus_name(bus)
            .targets(target)
            .send()
            .await
            .context("PutTargets")?;
        ensure!(
            out.failed_entry_count() == 0,
            "PutTargets: {:?}",
            out.failed_entries()
        );
        Ok(())
    }
    .await;
    match setup {
        Ok(()) => Ok((queue_url, name)),
        Err(e) => {
            let _ = unsubscribe(ctx, &queue_url, &name).await;
            Err(e)
        }
    }
}

async fn unsubscribe(ctx: &Ctx, queue_url: &str, rule: &str) -> Result<()> {
    let bus = ctx.stack.output("EventBusName")?;
    let _ = ctx
        .aws
        .events
        .remove_targets()
        .rule(rule)
        .event_bus_name(bus)
        .ids("queue")
        .send()
        .await;
    let _ = ctx
        .aws
        .events
        .delete_rule()
        .name(rule)
        .event_bus_name(bus)
        .send()
        .await;
    ctx.aws
        .sqs
        .delete_queue()
        .queue_url(queue_url)
        .send()
        .await
        .context("DeleteQueue")?;
    Ok(())
}

async fn events_flow(ctx: &Ctx, gw: &Gateway, sender: &str, queue_url: &str) -> Result<()> {
    let (rcpt, nobody) = (ctx.address("evr"), ctx.address("evn"));
    ctx.create_mailbox(sender, None).await?;
    ctx.create_mailbox(&rcpt, None).await?;
    let raw = message(
        sender,
        &[&rcpt, &nobody],
        &[],
        "Eventi",
        "Per gli integratori.",
    )?;
    let id = submit(gw, sender, &[&rcpt, &nobody], &raw).await?;

    // Receive until the four types are there (EventBridge is at least once: dedupe on event_id).
    let want = [
        "pec.message.accepted",
        "pec.message.envelope-dispatched",
        "pec.message.delivered",
        "pec.message.not-delivered",
    ];
    let mut got: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while want
        .iter()
        .any(|t| !got.values().any(|e| e["detail-type"] == *t))
    {
        ensure!(
            Instant::now() < deadline,
            "events after 40 s: {:?}",
            got.values().map(|e| &e["detail-type"]).collect::<Vec<_>>()
        );
        let out = ctx
            .aws
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        for m in out.messages() {
            let e: serde_json::Value = serde_json::from_str(m.body().unwrap_or_default())
                .context("an event that is not JSON")?;
            let event_id = e["detail"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            got.insert(event_id, e);
        }
    }
    let rec = record(ctx, &id).await?;
    for e in got.values() {
        let d = &e["detail"];
        ensure!(e["source"] == "pec.gestore", "source {}", e["source"]);
        ensure!(
            d["identificativo"] == rec.identificativo.as_str() && d["sender"] == sender,
            "event not about the message: {d}"
        );
        let event: PecEvent = serde_json::from_value(d.clone())
            .with_context(|| format!("the detail is not a PecEvent: {d}"))?;
        ensure!(
            e["detail-type"] == event.event_type.detail_type(),
            "detail-type {} but type {}",
            e["detail-type"],
            d["type"]
        );
        let key = d["evidence_key"].as_str().unwrap_or_default();
        ensure!(
            submission_of(key).as_deref() == Some(id.as_str()),
            "evidence key {key}"
        );
        ensure!(
            d["issuer"]
                == ctx
                    .stack
                    .function_env("DeliverFunction", "PEC_PROVIDER_NAME")?,
            "issuer {}",
            d["issuer"]
        );
    }
    let by_type = |t: &str| {
        got.values()
            .filter(|e| e["detail-type"] == t)
            .map(|e| &e["detail"])
            .collect::<Vec<_>>()
    };
    for t in want {
        ensure!(by_type(t).len() == 1, "{} {t} events", by_type(t).len());
    }
    ensure!(
        by_type("pec.message.delivered")[0]["recipient"] == rcpt.as_str(),
        "delivered event: {}",
        by_type("pec.message.delivered")[0]
    );
    let nd = by_type("pec.message.not-delivered")[0];
    ensure!(
        nd["recipient"] == nobody.as_str()
            && nd["error_detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("5.1.1")),
        "not-delivered event: {nd}"
    );
    // The provider log holds the same events, once each.
    wait_drained(ctx, &gw.baseline, Duration::from_secs(20)).await?;
    let logged: BTreeSet<String> = log_events(ctx, &[&rec])
        .await?
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    let published: BTreeSet<String> = got.keys().cloned().collect();
    ensure!(
        logged == published,
        "provider log {logged:?} vs event bus {published:?}"
    );
    Ok(())
}

/// `--deliver-times 3`: every SQS batch is handled three times concurrently. Still exactly one
/// acceptance, envelope, receipt or notice per message and recipient, one object version of
/// each, one log record per event, and exact quota accounting.
async fn every_message_delivered_three_times(ctx: Arc<Ctx>) -> Result<()> {
    let mut gw = gateway(&ctx, "deliver-times-3", &["--deliver-times", "3"]).await?;
    let result = three_times(&ctx, &gw).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn three_times(ctx: &Ctx, gw: &Gateway) -> Result<()> {
    let (s, r, nobody) = (ctx.address("ds"), ctx.address("dr"), ctx.address("dn"));
    ctx.create_mailbox(&s, None).await?;
    ctx.create_mailbox(&r, None).await?;
    let plan: [&[&str]; 4] = [&[&r], &[&r], &[&nobody], &[&r, &nobody]];
    let mut ids = Vec::new();
    for (i, to) in plan.iter().enumerate() {
        let raw = message(&s, to, &[], &format!("Tre volte {i}"), "Una sola ricevuta.")?;
        ids.push(submit(gw, &s, to, &raw).await?);
    }
    // 4 acceptances, 3 delivery receipts, 2 non-delivery notices; 3 envelopes.
    wait_for_items(ctx, &[(&s, 9), (&r, 3)], Duration::from_secs(40)).await?;
    wait_drained(ctx, &gw.baseline, Duration::from_secs(20)).await?;

    let mut records = Vec::new();
    for id in &ids {
        records.push(record(ctx, id).await?);
    }
    let sender_items = items(ctx, &s).await?;
    let rcpt_items = items(ctx, &r).await?;
    ensure!(
        sender_items.len() == 9 && rcpt_items.len() == 3,
        "sender holds {} items, recipient {}",
        sender_items.len(),
        rcpt_items.len()
    );
    // One of each (submission, kind, recipient concerned).
    let mut seen = BTreeSet::new();
    for (address, list) in [(&s, &sender_items), (&r, &rcpt_items)] {
        for item in list.iter() {
            let id = submission_of(&item.evidence_key).context("item of no submission")?;
            let rec = records.iter().find(|r| r.id == id).with_context(|| {
                format!("{address} holds {} (another message)", item.evidence_key)
            })?;
            let c = check_item(ctx, item, rec).await?;
            if address == &s {
                all_to(std::slice::from_ref(&c), &s)?;
            }
            let key = (
                address.clone(),
                id,
                c.kind.as_str(),
                c.daticert.dati.consegna.clone(),
            );
            ensure!(seen.insert(key.clone()), "twice: {key:?}");
        }
    }
    for (i, (id, to)) in ids.iter().zip(plan).enumerate() {
        let count = |k: Kind| {
            seen.iter()
                .filter(|(a, m, kind, _)| a == &s && m == id && *kind == k.as_str())
                .count()
        };
        let delivered = to.iter().filter(|a| **a == r).count();
        let refused = to.len() - delivered;
        ensure!(
            count(Kind::Accettazione) == 1
                && count(Kind::AvvenutaConsegna) == delivered
                && count(Kind::ErroreConsegna) == refused,
            "message {i}: sender holds {:?}",
            seen.iter()
                .filter(|(a, m, _, _)| a == &s && m == id)
                .collect::<Vec<_>>()
        );
        let envelopes = rcpt_items
            .iter()
            .filter(|it| submission_of(&it.evidence_key).as_deref() == Some(id.as_str()))
            .count();
        ensure!(envelopes == delivered, "message {i}: {envelopes} envelopes");
        // Evidence: one content per object; one receipt object per recipient.
        let unsigned = keys_with_one_content(ctx, &format!("unsigned/msg/{id}/")).await?;
        let signed = keys_with_one_content(ctx, &format!("signed/msg/{id}/")).await?;
        ensure!(
            signed.len() == unsigned.len(),
            "message {i}: unsigned {unsigned:?}, signed {signed:?}"
        );
        let under = |dir: &str| {
            unsigned
                .iter()
                .filter(|k| k.starts_with(&format!("unsigned/msg/{id}/{dir}/")))
                .count()
        };
        ensure!(
            under("consegna") == delivered && under("mancata-consegna") == refused,
            "message {i}: evidence {unsigned:?}"
        );
    }
    // The provider log: one record per emitted message, no event id twice.
    let refs: Vec<&MessageRecord> = records.iter().collect();
    let events = log_events(ctx, &refs).await?;
    let distinct: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    ensure!(
        distinct.len() == events.len(),
        "duplicate event ids in the provider log"
    );
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        *by_type.entry(e.event_type.detail_type()).or_default() += 1;
    }
    let expected = BTreeMap::from([
        ("pec.message.accepted", 4),
        ("pec.message.envelope-dispatched", 4),
        ("pec.message.delivered", 3),
        ("pec.message.not-delivered", 2),
    ]);
    ensure!(by_type == expected, "provider log: {by_type:?}");
    usage_matches_items(ctx, &s).await?;
    usage_matches_items(ctx, &r).await?;
    Ok(())
}

/// How many times the chaos check kills the runner.
const KILLS: usize = 5;

/// What a chaos message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delivered,
    UnknownMailbox,
    Bcc,
}

/// 50 messages in flight while the runner is SIGKILLed at random points and restarted (with a
/// 5 s visibility timeout, so what a dead runner held comes back): every message reaches its
/// final state exactly once, and no DLQ gets anything.
///
/// The gateway lives in the runner, so all 50 are submitted while the first runner is up (they
/// start flowing at once), then the kill loop begins; the killed runners run without a gateway.
async fn chaos_runner_killed_at_random_points(ctx: Arc<Ctx>) -> Result<()> {
    let seed = std::env::var("PEC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("chaos: seed {seed} (PEC_CHAOS_SEED={seed} to repeat)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let flags = ["--visibility-timeout", "5", "--retry-after", "2"];
    let (s, r, nobody) = (ctx.address("cs"), ctx.address("cr"), ctx.address("cn"));
    let bcc = ctx.address("cb");
    for a in [&s, &r, &bcc] {
        ctx.create_mailbox(a, None).await?;
    }

    let started = Instant::now();
    let gw = gateway(&ctx, "chaos-0", &flags).await?;
    let mut sent: Vec<(String, Fate)> = Vec::new();
    let submitted = async {
        let mut tasks = tokio::task::JoinSet::new();
        let gw = Arc::new((gw.addr, gw.cert.clone()));
        for i in 0..50 {
            let fate = match i % 3 {
                0 => Fate::Delivered,
                1 => Fate::UnknownMailbox,
                _ => Fate::Bcc,
            };
            let (to, bccs): (&str, &[&str]) = match fate {
                Fate::Delivered => (&r, &[]),
                Fate::UnknownMailbox => (&nobody, &[]),
                Fate::Bcc => (&r, &[&bcc]),
            };
            let raw = message(&s, &[to], bccs, &format!("Caos {i}"), "Sopravvivo?")?;
            let mut rcpts = vec![to.to_string()];
            rcpts.extend(bccs.iter().map(|b| b.to_string()));
            let (gw, s) = (gw.clone(), s.clone());
            tasks.spawn(async move {
                let id = pec_submit::client::submit(
                    gw.0,
                    &gw.1,
                    "localhost",
                    &s,
                    MAILBOX_PASSWORD,
                    &s,
                    &rcpts,
                    &raw,
                )
                .await;
                (id, fate)
            });
            // At most 5 sessions at a time.
            if tasks.len() >= 5
                && let Some(done) = tasks.join_next().await
            {
                let (id, fate) = done?;
                sent.push((id.context("submission")?, fate));
            }
        }
        while let Some(done) = tasks.join_next().await {
            let (id, fate) = done?;
            sent.push((id.context("submission")?, fate));
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let (mut runner, baseline) = (gw.runner, gw.baseline);
    with_log(submitted, &runner)?;
    ensure!(sent.len() == 50, "{} submissions", sent.len());
    let submitted_at = started.elapsed();

    // Kill at random points while the messages flow (0.3-2 s after the runner started
    // polling), restarting each time.
    let mut kills = Vec::new();
    let batches = |r: &Runner| r.logs().matches("batch handled").count();
    for round in 1..=KILLS {
        let after = Duration::from_millis(rng.u64(300..=2000));
        tokio::time::sleep(after).await;
        ensure!(
            runner.is_running(),
            "the runner died by itself:\n{}",
            runner.log_tail(25)
        );
        runner.kill_hard();
        kills.push(format!(
            "{} ms/{} batches",
            after.as_millis(),
            batches(&runner)
        ));
        runner = ctx.runner(&unique(&format!("chaos-{round}")), &flags)?;
        with_log(
            runner.wait_polling(QUEUES.len(), Duration::from_secs(30)),
            &runner,
        )?;
    }
    eprintln!("chaos: SIGKILL after (time polling/batches handled) {kills:?}");
    let killing = started.elapsed();

    // The last runner runs until everything reached its final state and the queues are idle.
    let want_sender = sent
        .iter()
        .map(|(_, f)| if *f == Fate::Bcc { 1 } else { 2 })
        .sum();
    let want_rcpt = sent.iter().filter(|(_, f)| *f == Fate::Delivered).count();
    let result = async {
        wait_for_items(
            &ctx,
            &[(&s, want_sender), (&r, want_rcpt)],
            Duration::from_secs(60),
        )
        .await?;
        wait_drained(&ctx, &baseline, Duration::from_secs(30)).await?;
        stop_cleanly(&mut runner)
    }
    .await;
    with_log(result, &runner)?;
    eprintln!(
        "chaos: submitted in {:.1} s, kills done at {:.1} s, final state and idle at {:.1} s",
        submitted_at.as_secs_f64(),
        killing.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let sender_items = items(&ctx, &s).await?;
    let rcpt_items = items(&ctx, &r).await?;
    let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (who, list) in [("sender", &sender_items), ("recipient", &rcpt_items)] {
        for item in list.iter() {
            let id = submission_of(&item.evidence_key).context("item of no submission")?;
            *per.entry((id, format!("{who}:{}", item.kind))).or_default() += 1;
        }
    }
    for (id, fate) in &sent {
        let count = |k: &str| per.get(&(id.clone(), k.to_string())).copied().unwrap_or(0);
        let expected: &[(&str, usize)] = match fate {
            Fate::Delivered => &[
                ("sender:accettazione", 1),
                ("sender:avvenuta-consegna", 1),
                ("recipient:posta-certificata", 1),
            ],
            Fate::UnknownMailbox => &[("sender:accettazione", 1), ("sender:errore-consegna", 1)],
            Fate::Bcc => &[("sender:non-accettazione", 1)],
        };
        let total: usize = per
            .iter()
            .filter(|((m, _), _)| m == id)
            .map(|(_, n)| n)
            .sum();
        let expected_total: usize = expected.iter().map(|(_, n)| n).sum();
        ensure!(
            expected.iter().all(|(k, n)| count(k) == *n) && total == expected_total,
            "{fate:?} message {id}: {:?}",
            per.iter().filter(|((m, _), _)| m == id).collect::<Vec<_>>()
        );
    }
    ensure!(
        sender_items.len() == want_sender && rcpt_items.len() == want_rcpt,
        "sender {} items, recipient {}: something else arrived",
        sender_items.len(),
        rcpt_items.len()
    );
    ensure!(
        items(&ctx, &bcc).await?.is_empty(),
        "the Bcc recipient got mail"
    );
    // Every item verifies (ours and OpenSSL) and is about its message; receipts go to the
    // sender.
    // Four at a time (each runs openssl).
    let mut checks = tokio::task::JoinSet::new();
    for (is_sender, item) in sender_items
        .iter()
        .map(|i| (true, i.clone()))
        .chain(rcpt_items.iter().map(|i| (false, i.clone())))
    {
        if checks.len() >= 4
            && let Some(done) = checks.join_next().await
        {
            done??;
        }
        let (ctx, s) = (ctx.clone(), s.clone());
        checks.spawn(async move {
            let id = submission_of(&item.evidence_key).context("item of no submission")?;
            let c = check_item(&ctx, &item, &record(&ctx, &id).await?).await?;
            if is_sender {
                all_to(std::slice::from_ref(&c), &s)?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = checks.join_next().await {
        done??;
    }
    usage_matches_items(&ctx, &s).await?;
    usage_matches_items(&ctx, &r).await?;
    let dead = dead_letters(&ctx).await?;
    let ours: Vec<_> = dead
        .iter()
        .filter(|(_, body)| sent.iter().any(|(id, _)| body.contains(id.as_str())))
        .collect();
    ensure!(ours.is_empty(), "dead letters of this run: {ours:?}");
    Ok(())
}

/// A mailbox with room for one and a half envelopes: the first is delivered, the second is
/// refused (5.2.2, and the mailbox is unchanged); once the first is deleted with `pec mailbox
/// delete` the usage is exactly 0 and a third is delivered.
async fn quota_refuses_then_frees(ctx: Arc<Ctx>) -> Result<()> {
    let mut gw = gateway(&ctx, "quota", &[]).await?;
    let result = quota(&ctx, &gw).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn quota(ctx: &Ctx, gw: &Gateway) -> Result<()> {
    // Same-length addresses and the same text: every envelope has (nearly) the same size.
    let (s, probe, q) = (ctx.address("qs"), ctx.address("qp"), ctx.address("qq"));
    ctx.create_mailbox(&s, None).await?;
    ctx.create_mailbox(&probe, None).await?;
    let send = |to: String| {
        let s = s.clone();
        async move {
            let raw = message(&s, &[&to], &[], "Quota", "Una busta di prova.")?;
            submit(gw, &s, &[&to], &raw).await
        }
    };
    // Measure one envelope.
    send(probe.clone()).await?;
    wait_for_items(ctx, &[(&probe, 1)], Duration::from_secs(30)).await?;
    let size = items(ctx, &probe).await?[0].size;
    let quota = size * 3 / 2;
    ctx.create_mailbox(&q, Some(quota)).await?;

    let first = send(q.clone()).await?;
    outcome(ctx, &s, &first, Kind::AvvenutaConsegna).await?;
    let held = items(ctx, &q).await?;
    ensure!(held.len() == 1, "{q} holds {} items", held.len());
    let stored = held[0].clone();

    let second = send(q.clone()).await?;
    let notice = outcome(ctx, &s, &second, Kind::ErroreConsegna).await?;
    let esteso = notice
        .daticert
        .dati
        .errore_esteso
        .clone()
        .unwrap_or_default();
    ensure!(
        esteso.starts_with("5.2.2") && notice.daticert.dati.consegna.as_deref() == Some(q.as_str()),
        "refusal: errore-esteso {esteso:?}, consegna {:?}",
        notice.daticert.dati.consegna
    );
    let m = ctx.state.mailbox(&q).await?.context("no quota mailbox")?;
    ensure!(
        m.used_bytes == stored.size && items(ctx, &q).await?.len() == 1,
        "after the refusal: used {} (envelope {}), {} items",
        m.used_bytes,
        stored.size,
        items(ctx, &q).await?.len()
    );

    ctx.pec(&["mailbox", "delete", &q, &stored.id], None)
        .await?;
    let listed: serde_json::Value =
        serde_json::from_str(&ctx.pec(&["mailbox", "list", &q, "--json"], None).await?)?;
    ensure!(
        listed["used_bytes"] == 0 && listed["items"].as_array().is_some_and(|i| i.is_empty()),
        "after pec mailbox delete: {listed}"
    );
    ensure!(
        listed["quota_bytes"] == quota,
        "quota {}",
        listed["quota_bytes"]
    );

    let third = send(q.clone()).await?;
    outcome(ctx, &s, &third, Kind::AvvenutaConsegna).await?;
    let held = items(ctx, &q).await?;
    ensure!(
        held.len() == 1 && submission_of(&held[0].evidence_key).as_deref() == Some(third.as_str()),
        "{q} holds {held:?}"
    );
    wait_drained(ctx, &gw.baseline, Duration::from_secs(20)).await?;
    usage_matches_items(ctx, &q).await?;
    usage_matches_items(ctx, &s).await?;
    Ok(())
}

/// Waits until `sender` holds a `kind` item about submission `id`; that item, checked.
async fn outcome(ctx: &Ctx, sender: &str, id: &str, kind: Kind) -> Result<Checked> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The record appears when the ingress step has run.
        let Some(rec) = ctx.state.message(id).await? else {
            ensure!(
                Instant::now() < deadline,
                "no message record for {id} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for item in items(ctx, sender).await? {
            // The deliver step records the item, then writes its object: wait for both.
            if submission_of(&item.evidence_key).as_deref() == Some(id)
                && item.kind == kind.as_str()
                && object_exists(
                    ctx,
                    ctx.stack.output("MailboxBucketName")?,
                    &item.object_key,
                )
                .await?
            {
                let c = check_item(ctx, &item, &rec).await?;
                ensure!(c.kind == kind, "{} is a {:?}", item.object_key, c.kind);
                return Ok(c);
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no {} for {id} within 30 s",
            kind.as_str()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A port the runner printed (`pec-runner: <what> 127.0.0.1:<port>`).
fn runner_port(runner: &Runner, what: &str) -> Result<u16> {
    let prefix = format!("pec-runner: {what} ");
    runner
        .messages()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .with_context(|| format!("the runner printed no {what} address"))
}

/// The API's port: the runner prints it after the gateway's (within 20 s).
async fn api_port(gw: &Gateway) -> Result<u16> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match runner_port(&gw.runner, "api") {
            Ok(p) => return Ok(p),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A program the check drives, which `infra/local/install.sh mailclients` installs.
fn program(name: &str) -> Result<()> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    ensure!(
        found,
        "{name} is not installed: run infra/local/install.sh mailclients (the README's test command does)"
    );
    Ok(())
}

/// Runs `cmd`, failing with its output unless it succeeds.
fn run_ok(cmd: &mut std::process::Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    Ok(text)
}

/// Files by path: bytes, inode, modification time.
type Files = BTreeMap<PathBuf, (Vec<u8>, u64, std::time::SystemTime)>;

/// Every file under `dir` (recursively) with its bytes, inode and modification time.
fn files(dir: &std::path::Path) -> Result<Files> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                stack.push(e.path());
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                out.insert(
                    e.path(),
                    (std::fs::read(e.path())?, meta.ino(), meta.modified()?),
                );
            }
        }
    }
    Ok(out)
}

/// mbsync (isync) pulling every folder of `user` into the Maildir `dir`; its output.
fn mbsync(dir: &std::path::Path, port: u16, cert: &std::path::Path, user: &str) -> Result<String> {
    let config = dir.with_extension("mbsyncrc");
    std::fs::write(
        &config,
        format!(
            "IMAPAccount pec\nHost 127.0.0.1\nPort {port}\nUser {user}\nPass {MAILBOX_PASSWORD}\n\
             SSLType IMAPS\nCertificateFile {}\nAuthMechs LOGIN\n\n\
             IMAPStore far\nAccount pec\n\n\
             MaildirStore near\nPath {dir}/\nInbox {dir}/INBOX\nSubFolders Verbatim\n\n\
             Channel pec\nFar :far:\nNear :near:\nPatterns *\nCreate Near\nSync Pull\nExpunge Near\nSyncState *\n",
            cert.display(),
            dir = dir.display()
        ),
    )?;
    std::fs::create_dir_all(dir)?;
    run_ok(
        std::process::Command::new("mbsync")
            .arg("-c")
            .arg(&config)
            .arg("-V")
            .arg("-a"),
        "mbsync",
    )
}

/// The Maildir files of `folder` under `dir`, as bytes.
fn maildir(all: &Files, dir: &std::path::Path, folder: &str) -> Vec<Vec<u8>> {
    let root = dir.join(folder);
    let mut v: Vec<Vec<u8>> = all
        .iter()
        .filter(|(p, _)| p.starts_with(&root))
        .map(|(_, (b, _, _))| without_tuid(b))
        .collect();
    v.sort();
    v
}

/// A Maildir file without the `X-TUID:` field isync 1.4 adds to the header of each message it
/// copies (its own bookkeeping, to find the message again; it changes nothing else).
fn without_tuid(file: &[u8]) -> Vec<u8> {
    let header_end = file
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(file.len());
    let mut at = 0;
    while at < header_end {
        let end = file[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(file.len(), |i| at + i + 1);
        if file[at..end].starts_with(b"X-TUID: ") {
            return [&file[..at], &file[end..]].concat();
        }
        at = end;
    }
    file.to_vec()
}

/// Messages as mbsync writes them into a Maildir: exactly the bytes served, with each CRLF
/// as LF (Maildir files use the local line end; isync converts, and has no option not to).
fn as_maildir(messages: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = messages.iter().map(|m| lf(m)).collect();
    v.sort();
    v
}

/// A Python imaplib client of `user` in IDLE on INBOX (the command written by hand: imaplib
/// before Python 3.14 has no idle()), reporting when it hears `EXISTS`.
struct IdleWatcher {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

fn idle_watcher(port: u16, cert: &std::path::Path, user: &str) -> Result<IdleWatcher> {
    use std::io::BufRead;
    let script = format!(
        "import imaplib,ssl,sys,time\nc=ssl.create_default_context(cafile={cert:?})\nc.check_hostname=False\n\
         m=imaplib.IMAP4_SSL('127.0.0.1',{port},ssl_context=c)\nm.login({user:?},{pw:?})\nm.select('INBOX')\n\
         m.send(b'I1 IDLE\\r\\n')\nl=m.readline()\nassert l.startswith(b'+'),l\nprint('idling',flush=True)\n\
         while True:\n    l=m.readline()\n    if not l: sys.exit('connection closed')\n    \
         if b'EXISTS' in l:\n        print('exists %.6f' % time.time(),flush=True)\n        break\n\
         m.send(b'DONE\\r\\n')\nm.readline()\nm.logout()\n",
        cert = cert.display().to_string(),
        pw = MAILBOX_PASSWORD,
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting the IDLE client")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(20))
        .context("the IDLE client did not start idling within 20 s")?;
    ensure!(first == "idling", "the IDLE client said {first:?}");
    Ok(IdleWatcher { child, lines })
}

impl IdleWatcher {
    /// When the client heard `EXISTS` (its wall clock).
    fn exists(&mut self, within: Duration) -> Result<std::time::SystemTime> {
        let line = self.lines.recv_timeout(within).with_context(|| {
            format!(
                "the IDLE client heard nothing within {} s",
                within.as_secs()
            )
        })?;
        let secs: f64 = line
            .strip_prefix("exists ")
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("the IDLE client said {line:?}"))?;
        Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs))
    }
}

impl Drop for IdleWatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `got` and `want` hold the same messages, byte for byte; else where they differ first.
fn same_messages(got: &[Vec<u8>], want: &[Vec<u8>]) -> Result<()> {
    ensure!(
        got.len() == want.len(),
        "{} message(s), {} expected",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(want) {
        if g != w {
            let at = g.iter().zip(w).take_while(|(a, b)| a == b).count();
            let show = |b: &[u8]| {
                String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())])
                    .into_owned()
            };
            bail!(
                "a message of {} bytes differs from the expected one of {} at byte {at}: {:?} instead of {:?}",
                g.len(),
                w.len(),
                show(g),
                show(w)
            );
        }
    }
    Ok(())
}

/// The bytes of every delivered item of `address`, as stored in the mailbox bucket.
async fn stored_objects(ctx: &Ctx, address: &str) -> Result<Vec<Vec<u8>>> {
    let bucket = ctx.stack.output("MailboxBucketName")?;
    let mut v = Vec::new();
    for item in items(ctx, address).await? {
        v.push(get_object(ctx, bucket, &item.object_key).await?);
    }
    v.sort();
    Ok(v)
}

/// fetchmail over POP3S with UIDL, keeping the messages on the server, each delivered to a file
/// in `dir`; the files it wrote this time.
fn fetchmail(
    home: &std::path::Path,
    dir: &std::path::Path,
    port: u16,
    cert: &std::path::Path,
    user: &str,
) -> Result<Vec<Vec<u8>>> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let rc = home.join(".fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no bouncemail\npoll localhost via 127.0.0.1 service {port} protocol POP3 uidl\n  \
             user \"{user}\" password \"{MAILBOX_PASSWORD}\" ssl sslcertfile \"{}\" sslcertck sslcommonname localhost keep\n  \
             mda \"/bin/sh -c 'cat > $(mktemp {}/m.XXXXXXXX)'\"\n",
            cert.display(),
            dir.display()
        ),
    )?;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600))?;
    let before: BTreeSet<PathBuf> = files(dir)?.into_keys().collect();
    let out = std::process::Command::new("fetchmail")
        .env("HOME", home)
        .args(["-f"])
        .arg(&rc)
        .args(["--nodetach", "-v"])
        .output()
        .context("running fetchmail")?;
    // 0: messages fetched, 1: none waiting.
    ensure!(
        matches!(out.status.code(), Some(0 | 1)),
        "fetchmail failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut new: Vec<Vec<u8>> = files(dir)?
        .into_iter()
        .filter(|(p, _)| !before.contains(p))
        .map(|(_, (b, _, _))| b)
        .collect();
    new.sort();
    Ok(new)
}

/// A message as fetchmail hands it to its MDA, back in the form it was served: fetchmail adds
/// its own `Received:` field on top and delivers LF line ends.
fn unfetchmailed(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split('\n').peekable();
    if lines.peek().is_some_and(|l| l.starts_with("Received: ")) {
        lines.next();
        while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
            lines.next();
        }
    }
    lines.collect::<Vec<_>>().join("\n").into_bytes()
}

fn lf(bytes: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .into_bytes()
}

/// Mailbox access with real clients nobody here wrote, on the emulators: mbsync (isync) syncs
/// both mailboxes over IMAPS and every file equals the stored object byte for byte; the
/// sender's Sent holds the submission; a second sync after a new delivery and a delete made by
/// another client (Python's imaplib) transfers only the difference; fetchmail over POP3S with
/// UIDL downloads every message once, then only the new one; an IDLE client hears of a
/// delivery within 2 s of its commit.
/// A 7 MiB attachment (over what API Gateway and Lambda take in one request) through an upload:
/// asked for with the API, PUT straight to S3 at the presigned URL, named in the message; the
/// recipient downloads the part byte for byte and the sender the delivery receipt (OpenSSL
/// verifies it), both through 307 redirects to presigned storage URLs. Then the recipient organises the message over
/// HTTP on the DynamoDB mail store: flags, move to Trash, delete.
async fn large_attachment_and_organising(
    ctx: &Ctx,
    port: u16,
    key: &str,
    s: &str,
    r: &str,
    rtoken: &str,
) -> Result<()> {
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    // A JSON request with a method and a credential, expecting `want`.
    let send_json = |method: &str, path: &str, who: &str, body: serde_json::Value, want: u16| {
        curl_json(
            port,
            path,
            &[
                "-X",
                method,
                "-H",
                "Content-Type: application/json",
                "-H",
                &bearer(who),
                "--data-binary",
                &body.to_string(),
            ],
            want,
        )
    };
    let mut file = b"%PDF-1.7\n".to_vec();
    let mut x: u32 = 0x9e37_79b9;
    while file.len() < 7 * 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        file.extend_from_slice(&x.to_le_bytes());
    }
    let path = ctx.log_dir.join(unique("upload"));
    std::fs::write(&path, &file)?;
    let ask = serde_json::json!({"content_type": "application/pdf", "size": file.len()});
    let up = send_json("POST", "/v1/uploads", key, ask, 201)?;
    let url = up["upload_url"].as_str().context("no upload_url")?;
    let put = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args([
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/pdf",
            "--upload-file",
        ])
        .arg(&path)
        .arg(url)
        .output()
        .context("running curl")?;
    let code = String::from_utf8_lossy(&put.stdout).to_string();
    ensure!(
        put.status.success() && code == "200",
        "PUT {url}: {code} {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let send = serde_json::json!({
        "from": s, "to": [r], "subject": "Allegato grande", "text": "Vedi allegato.",
        "attachments": [{"filename": "atto grande.pdf", "content_type": "application/pdf",
                         "upload": up["id"]}],
    });
    let sent = send_json("POST", "/v1/messages", key, send, 202)?;
    let id = sent["id"].as_str().context("no id")?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = curl_json(
            port,
            &format!("/v1/messages/{id}"),
            &["-H", &bearer(key)],
            200,
        )?;
        // Delivered is recorded before its receipt is signed and stored: wait for both.
        let has_receipt = st["evidence"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["kind"] == "avvenuta-consegna"));
        if st["recipients"][0]["state"] == "delivered" && has_receipt {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the large message and its delivery receipt were not delivered in 90 s: {st}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let page = curl_json(
        port,
        &format!("/v1/mailboxes/{r}/folders/INBOX/messages?subject=allegato%20grande"),
        &["-H", &bearer(rtoken)],
        200,
    )?;
    let href = page["messages"][0]["href"]
        .as_str()
        .with_context(|| format!("the large message is not in the INBOX: {page}"))?
        .to_string();
    let one = curl_json(port, &href, &["-H", &bearer(rtoken)], 200)?;
    let part = one["parts"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["filename"] == "atto grande.pdf"))
        .with_context(|| format!("no attachment in {one}"))?;
    // Over 4 MiB a download is a redirect to a storage URL (what API Gateway and Lambda could
    // not carry); followed without our credentials.
    let got = redirected(port, part["href"].as_str().unwrap_or("?"), rtoken)?;
    ensure!(
        got == file,
        "the downloaded attachment is not the uploaded file ({} octets of {})",
        got.len(),
        file.len()
    );
    // Its delivery receipt (completa: the whole original inside) too, and it verifies.
    let st = curl_json(
        port,
        &format!("/v1/messages/{id}"),
        &["-H", &bearer(key)],
        200,
    )?;
    let receipt = st["evidence"]
        .as_array()
        .and_then(|e| e.iter().find(|x| x["kind"] == "avvenuta-consegna"))
        .and_then(|e| e["href"].as_str())
        .with_context(|| format!("no delivery receipt in {st}"))?
        .to_string();
    let eml = redirected(port, &receipt, key)?;
    let (ok, why) = openssl_verifies(ctx, &eml).await?;
    ensure!(ok, "the large delivery receipt does not verify: {why}");
    let _ = std::fs::remove_file(&path);

    // Organised over HTTP: what IMAP's STORE, MOVE and EXPUNGE do, on the same store.
    let flags = serde_json::json!({"add": ["\\Seen", "Protocollato"]});
    let marked = send_json("PATCH", &href, rtoken, flags, 200)?;
    ensure!(
        marked["flags"] == serde_json::json!(["Protocollato", "\\Seen"]),
        "{marked}"
    );
    let to = serde_json::json!({"to": "Trash"});
    let moved = send_json("POST", &format!("{href}/move"), rtoken, to, 200)?;
    let trashed = moved["href"].as_str().context("no href")?.to_string();
    let there = curl_json(port, &trashed, &["-H", &bearer(rtoken)], 200)?;
    ensure!(there["flags"] == marked["flags"], "{there}");
    curl_json(port, &href, &["-H", &bearer(rtoken)], 404)?;
    let (code, _) = curl(port, &trashed, &["-X", "DELETE", "-H", &bearer(rtoken)])?;
    ensure!(code == 204, "DELETE {trashed}: HTTP {code}");
    curl_json(port, &trashed, &["-H", &bearer(rtoken)], 404)?;
    Ok(())
}

/// A download the API answers with `307` and a storage URL: the bytes at that URL, fetched
/// without the API's credentials.
fn redirected(port: u16, path: &str, token: &str) -> Result<Vec<u8>> {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, location) = text.split_once(' ').unwrap_or((&text, ""));
    ensure!(
        code == "307" && !location.is_empty(),
        "{path}: expected a 307 to storage, got {text:?}"
    );
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "60"])
        .arg(location)
        .output()
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "GET {location}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// `curl` against the runner's API: (status, body). `args` are curl's (method, headers, data).
fn curl(port: u16, path: &str, args: &[&str]) -> Result<(u16, Vec<u8>)> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "curl {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = out.stdout;
    let cut = text
        .iter()
        .rposition(|&b| b == b'\n')
        .context("curl printed no status")?;
    let status = std::str::from_utf8(&text[cut + 1..])?.trim().parse()?;
    Ok((status, text[..cut].to_vec()))
}

fn curl_json(port: u16, path: &str, args: &[&str], want: u16) -> Result<serde_json::Value> {
    let (status, body) = curl(port, path, args)?;
    ensure!(
        status == want,
        "{path}: HTTP {status}, expected {want}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// The integration API on the runner (issue #14): log in with the mailbox password, send a PEC
/// as JSON (twice with one Idempotency-Key: one submission), follow it to `delivered` with a
/// tenant API key, download the delivery receipt (OpenSSL verifies it; its JSON form names its
/// kind and hash), read the recipient's INBOX as data and raw, and find every route closed to
/// another tenant's key; logout revokes the token.
async fn integration_api(ctx: Arc<Ctx>) -> Result<()> {
    program("curl")?;
    let mut gw = gateway(&ctx, "api", &["--api-port", "0"]).await?;
    let result = api_scene(&ctx, &gw).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn api_scene(ctx: &Ctx, gw: &Gateway) -> Result<()> {
    let port = api_port(gw).await?;
    let (s, r) = (ctx.address("hs"), ctx.address("hr"));
    ctx.create_mailbox(&s, None).await?;
    ctx.create_mailbox(&r, None).await?;
    let key = ctx
        .pec(
            &[
                "apikey",
                "create",
                "--tenant",
                &ctx.tenant,
                "--name",
                "it",
                "--scopes",
                "send,read",
            ],
            None,
        )
        .await?
        .trim()
        .to_string();
    let other_tenant = unique("other");
    let foreign = ctx
        .pec(
            &[
                "apikey",
                "create",
                "--tenant",
                &other_tenant,
                "--name",
                "it",
                "--scopes",
                "send,read",
            ],
            None,
        )
        .await?
        .trim()
        .to_string();
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let json = "Content-Type: application/json";

    let login = serde_json::json!({"address": s, "password": MAILBOX_PASSWORD}).to_string();
    let tokens = curl_json(
        port,
        "/v1/auth/login",
        &["-X", "POST", "-H", json, "--data-binary", &login],
        200,
    )?;
    let token = tokens["access_token"]
        .as_str()
        .context("no access_token")?
        .to_string();
    let bad = serde_json::json!({"address": s, "password": "wrong"}).to_string();
    curl_json(
        port,
        "/v1/auth/login",
        &["-X", "POST", "-H", json, "--data-binary", &bad],
        401,
    )?;

    let send = serde_json::json!({
        "to": [r], "subject": "Inviata con l'API", "text": "Corpo del messaggio.",
        "attachments": [{"filename": "nota.txt", "content_type": "text/plain", "content": "bm90YQ=="}]
    })
    .to_string();
    let args = [
        "-X",
        "POST",
        "-H",
        json,
        "-H",
        &bearer(&token),
        "-H",
        "Idempotency-Key: it-1",
        "--data-binary",
        &send,
    ];
    let first = curl_json(port, "/v1/messages", &args, 202)?;
    let again = curl_json(port, "/v1/messages", &args, 202)?;
    let id = first["id"].as_str().context("no id")?.to_string();
    ensure!(
        again["id"] == first["id"] && again["replayed"] == true,
        "a retry made another submission: {again}"
    );

    // Followed with the tenant's key until delivered.
    let status_path = format!("/v1/messages/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let st = curl_json(port, &status_path, &["-H", &bearer(&key)], 200)?;
        if st["recipients"][0]["state"] == "delivered"
            && st["evidence"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x["kind"] == "avvenuta-consegna"))
        {
            break st;
        }
        ensure!(Instant::now() < deadline, "not delivered in 60 s: {st}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(
        status["state"] == "accepted" && status["recipients"][0]["final"] == true,
        "{status}"
    );
    ensure!(
        status["identificativo"]
            .as_str()
            .is_some_and(|i| !i.is_empty()),
        "{status}"
    );
    let kinds: Vec<&str> = status["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in ["accettazione", "busta-trasporto", "avvenuta-consegna"] {
        ensure!(kinds.contains(&k), "no {k} in the evidence: {kinds:?}");
    }
    // Only one submission for the idempotency key.
    let raw_bucket = ctx.stack.output("RawMailBucketName")?;
    let aws = ctx.stack.clients().await;
    let listed = aws
        .s3
        .list_objects_v2()
        .bucket(raw_bucket)
        // Listing answers 1,000 keys at most: start at the submission's second, not at
        // submitted/ (a stack reused by the benchmarks holds thousands).
        .prefix(format!("submitted/{}", &id[..20]))
        .send()
        .await?;
    let ours = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .filter(|k| k.ends_with(".json"))
        .filter(|k| k.contains(&id[..20]))
        .count();
    ensure!(ours == 1, "{ours} envelopes submitted around {id}");

    // The delivery receipt: the signed bytes verify with OpenSSL; the JSON names them.
    let receipt = status["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "avvenuta-consegna")
        .unwrap();
    let href = receipt["href"].as_str().unwrap();
    let (code, eml) = curl(port, href, &["-H", &bearer(&key)])?;
    ensure!(code == 200, "{href}: HTTP {code}");
    let (ok, why) = openssl_verifies(ctx, &eml).await?;
    ensure!(ok, "the downloaded delivery receipt does not verify: {why}");
    let data = curl_json(
        port,
        &format!("{href}?format=json"),
        &["-H", &bearer(&key)],
        200,
    )?;
    ensure!(data["kind"] == "avvenuta-consegna", "{data}");
    ensure!(
        data["sha256"] == pec_api_sha256(&eml),
        "the JSON hash is not the download's: {data}"
    );
    ensure!(
        data["daticert"]["dati"]["identificativo"] == status["identificativo"],
        "{data}"
    );
    ensure!(data["signature"]["verdict"].is_string(), "{data}");

    // The recipient reads the envelope over HTTP: the same bytes as stored.
    let rlogin = serde_json::json!({"address": r, "password": MAILBOX_PASSWORD}).to_string();
    let rt = curl_json(
        port,
        "/v1/auth/login",
        &["-X", "POST", "-H", json, "--data-binary", &rlogin],
        200,
    )?;
    let rtoken = rt["access_token"].as_str().unwrap().to_string();
    let page = curl_json(
        port,
        &format!("/v1/mailboxes/{r}/folders/INBOX/messages"),
        &["-H", &bearer(&rtoken)],
        200,
    )?;
    let first_msg = &page["messages"][0];
    ensure!(
        first_msg["kind"] == "posta-certificata" || first_msg["kind"] == "busta-trasporto",
        "{page}"
    );
    let one = curl_json(
        port,
        first_msg["href"].as_str().unwrap(),
        &["-H", &bearer(&rtoken)],
        200,
    )?;
    ensure!(
        one["parts"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["filename"] == "nota.txt")),
        "{one}"
    );
    let (code, raw) = curl(
        port,
        one["raw_href"].as_str().unwrap(),
        &["-H", &bearer(&rtoken)],
    )?;
    ensure!(
        code == 200 && stored_objects(ctx, &r).await?.contains(&raw),
        "the raw download is not the stored envelope"
    );
    curl_json(
        port,
        &format!("/v1/mailboxes/{r}"),
        &["-H", &bearer(&key)],
        200,
    )?;
    curl_json(
        port,
        &format!("/v1/mailboxes/{r}/folders"),
        &["-H", &bearer(&key)],
        200,
    )?;
    large_attachment_and_organising(ctx, port, &key, &s, &r, &rtoken).await?;

    // Another tenant's key and another mailbox's token see nothing.
    for path in [
        status_path.clone(),
        href.to_string(),
        format!("/v1/mailboxes/{r}"),
        format!("/v1/mailboxes/{r}/folders/INBOX/messages"),
    ] {
        curl_json(port, &path, &["-H", &bearer(&foreign)], 404)?;
    }
    curl_json(
        port,
        &format!("/v1/mailboxes/{r}"),
        &["-H", &bearer(&token)],
        404,
    )?;

    // Refresh, then logout revokes.
    let refresh = serde_json::json!({"refresh_token": tokens["refresh_token"]}).to_string();
    let fresh = curl_json(
        port,
        "/v1/auth/refresh",
        &["-X", "POST", "-H", json, "--data-binary", &refresh],
        200,
    )?;
    let t2 = fresh["access_token"].as_str().unwrap().to_string();
    curl_json(port, &status_path, &["-H", &bearer(&token)], 401)?;
    let (code, _) = curl(port, "/v1/auth/logout", &["-X", "POST", "-H", &bearer(&t2)])?;
    ensure!(code == 204, "logout: HTTP {code}");
    curl_json(port, &status_path, &["-H", &bearer(&t2)], 401)?;

    // The per-credential rate limit (the template's default, 600 a minute, counted in the
    // state table): 1,300 requests with one key in one curl (connection reused) span at most
    // two windows, so at least 100 are refused with 429 and Retry-After; another key is not.
    let burst_key = ctx
        .pec(
            &[
                "apikey",
                "create",
                "--tenant",
                &ctx.tenant,
                "--name",
                "burst",
                "--scopes",
                "read",
            ],
            None,
        )
        .await?
        .trim()
        .to_string();
    let config = ctx.log_dir.join(unique("burst.curlrc"));
    let target = format!("http://127.0.0.1:{port}/v1/mailboxes/{s}");
    std::fs::write(
        &config,
        (0..1300)
            .map(|_| format!("url = \"{target}\"\noutput = \"/dev/null\"\n"))
            .collect::<String>(),
    )?;
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "120", "-H", &bearer(&burst_key)])
        .args(["-w", "%{http_code} %header{retry-after}\n", "-K"])
        .arg(&config)
        .output()
        .context("running curl")?;
    let answers = String::from_utf8_lossy(&out.stdout).into_owned();
    let (mut ok, mut limited) = (0, 0);
    for line in answers.lines() {
        match line.split_once(' ') {
            Some(("200", _)) => ok += 1,
            Some(("429", after)) => {
                let after: u64 = after.trim().parse().unwrap_or(0);
                ensure!((1..=60).contains(&after), "429 with Retry-After {after:?}");
                limited += 1;
            }
            _ => bail!("burst: unexpected answer {line:?}"),
        }
    }
    ensure!(
        ok + limited == 1300 && limited >= 100 && (600..=1200).contains(&ok),
        "burst of 1300: {ok} answered, {limited} refused"
    );
    eprintln!("  rate limit: 1300 requests, {ok} answered, {limited} refused with 429");
    let page = curl_json(
        port,
        &format!("/v1/mailboxes/{s}"),
        &["-H", &bearer(&key)],
        200,
    )?;
    ensure!(page["address"] == s.as_str(), "{page}");
    wait_drained(ctx, &gw.baseline, Duration::from_secs(30)).await?;
    Ok(())
}

fn pec_api_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The venv `infra/local/install.sh apitest` makes (openapi-spec-validator, schemathesis).
fn apitest_venv() -> Result<PathBuf> {
    let out = std::process::Command::new("bash")
        .args(["-c", "source infra/local/lib.sh && pec_apitest_venv_dir"])
        .current_dir(repo_root())
        .output()
        .context("asking lib.sh for the API tools' venv")?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    ensure!(
        dir.join(".installed").exists(),
        "the API contract tools are not installed ({}): run infra/local/install.sh apitest",
        dir.display()
    );
    Ok(dir)
}

/// The integration API's contract (issue #14): the committed OpenAPI document passes
/// openapi-spec-validator, and Schemathesis (every check but positive-data acceptance, see
/// below) finds no server error and no response off its schema on the locally hosted API,
/// with a seeded tenant key, mailbox and message.
///
/// `positive_data_acceptance` is left out: the API refuses, with a documented 4xx problem,
/// requests the schema cannot call invalid (an address that is not one, a "PDF" that is not,
/// a cursor of another folder, a mailbox of another tenant).
async fn api_contract(ctx: Arc<Ctx>) -> Result<()> {
    let venv = apitest_venv()?;
    let spec = repo_root().join("docs/openapi.json");
    let out = std::process::Command::new(venv.join("bin/openapi-spec-validator"))
        .arg(&spec)
        .output()
        .context("running openapi-spec-validator")?;
    ensure!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Schemathesis sends far more than a credential's 600 requests a minute: the limiter is
    // checked by integration_api; here the routes are.
    let mut gw = gateway(
        &ctx,
        "contract",
        &["--api-port", "0", "--api-requests-per-minute", "1000000"],
    )
    .await?;
    let result = contract(&ctx, &gw, &venv).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn contract(ctx: &Ctx, gw: &Gateway, venv: &std::path::Path) -> Result<()> {
    let port = api_port(gw).await?;
    let (s, r) = (ctx.address("cs"), ctx.address("cr"));
    ctx.create_mailbox(&s, None).await?;
    ctx.create_mailbox(&r, None).await?;
    let key = ctx
        .pec(
            &[
                "apikey",
                "create",
                "--tenant",
                &ctx.tenant,
                "--name",
                "contract",
                "--scopes",
                "send,read",
            ],
            None,
        )
        .await?
        .trim()
        .to_string();
    let auth = format!("Authorization: Bearer {key}");
    let body = serde_json::json!({"from": s, "to": [r], "subject": "Contratto", "text": "Prova."})
        .to_string();
    let sent = curl_json(
        port,
        "/v1/messages",
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            &auth,
            "--data-binary",
            &body,
        ],
        202,
    )?;
    let id = sent["id"].as_str().context("no id")?.to_string();
    wait_for_items(ctx, &[(&s, 1), (&r, 1)], Duration::from_secs(60)).await?;
    let work = tempfile::tempdir()?;
    let out = tokio::process::Command::new(venv.join("bin/schemathesis"))
        .arg("--config-file")
        .arg(repo_root().join("tests/schemathesis.toml"))
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/v1/openapi.json"))
        .args([
            "-H",
            &auth,
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--max-examples",
            "30",
            "--seed",
            "1",
            "--no-color",
            "--request-timeout",
            "20",
        ])
        .env("PYTHONPATH", repo_root().join("tests"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PEC_API_ADDRESS", &r)
        .env("PEC_API_MESSAGE", &id)
        .current_dir(work.path())
        .output()
        .await
        .context("running schemathesis")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "schemathesis found problems (exit {}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains("generated"))
        .unwrap_or_default();
    eprintln!("api_contract: schemathesis: {}", summary.trim());
    wait_drained(ctx, &gw.baseline, Duration::from_secs(60)).await?;
    Ok(())
}

async fn mailbox_access_with_real_clients(ctx: Arc<Ctx>) -> Result<()> {
    program("mbsync")?;
    program("fetchmail")?;
    let mut gw = gateway(&ctx, "access", &["--imap-port", "0", "--pop3-port", "0"]).await?;
    let result = access(&ctx, &gw).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn access(ctx: &Ctx, gw: &Gateway) -> Result<()> {
    let imap = runner_port(&gw.runner, "imaps")?;
    let pop3 = runner_port(&gw.runner, "pop3s")?;
    let (s, r) = (ctx.address("as"), ctx.address("ar"));
    ctx.create_mailbox(&s, None).await?;
    ctx.create_mailbox(&r, None).await?;
    let raw = message(&s, &[&r], &[], "Accesso alla casella", "Prima busta.")?;
    submit(gw, &s, &[&r], &raw).await?;
    wait_for_items(ctx, &[(&s, 2), (&r, 1)], Duration::from_secs(40)).await?;
    wait_drained(ctx, &gw.baseline, Duration::from_secs(20)).await?;

    let tmp = tempfile::tempdir()?;
    // The recipient: INBOX holds the envelope, byte for byte.
    let rdir = tmp.path().join("r");
    mbsync(&rdir, imap, &gw.cert_pem, &r)?;
    let first = files(&rdir)?;
    same_messages(
        &maildir(&first, &rdir, "INBOX"),
        &as_maildir(stored_objects(ctx, &r).await?),
    )
    .with_context(|| format!("mbsync's INBOX of {r} against the stored objects"))?;
    // The sender: INBOX holds the two receipts, Sent the submission as stored.
    let sdir = tmp.path().join("s");
    mbsync(&sdir, imap, &gw.cert_pem, &s)?;
    let sfiles = files(&sdir)?;
    same_messages(
        &maildir(&sfiles, &sdir, "INBOX"),
        &as_maildir(stored_objects(ctx, &s).await?),
    )
    .with_context(|| format!("mbsync's INBOX of {s} against the stored objects"))?;
    let sent = maildir(&sfiles, &sdir, "Sent");
    ensure!(
        sent.len() == 1
            && sent[0].starts_with(b"Received: ")
            && sent[0].ends_with(&lf(&[&raw[..], b"\r\n"].concat())),
        "{s}'s Sent holds {} message(s), not the submission after our Received field: {:?}, submitted {:?}",
        sent.len(),
        sent.iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&raw)
    );

    // Another delivery, and a delete by another client (Python's imaplib: STORE \Deleted,
    // EXPUNGE); then only the difference moves.
    let raw2 = message(
        &s,
        &[&r],
        &[],
        "Accesso alla casella, seconda",
        "Seconda busta.",
    )?;
    submit(gw, &s, &[&r], &raw2).await?;
    wait_for_items(ctx, &[(&r, 2)], Duration::from_secs(40)).await?;
    let first_object = stored_objects(ctx, &r).await?;
    let script = format!(
        "import imaplib,ssl\nc=ssl.create_default_context(cafile={cert:?})\nc.check_hostname=False\n\
         m=imaplib.IMAP4_SSL('127.0.0.1',{imap},ssl_context=c)\nm.login({r:?},{pw:?})\nm.select('INBOX')\n\
         t,d=m.uid('STORE','1','+FLAGS','(\\\\Deleted)')\nassert t=='OK',d\nt,d=m.expunge()\nassert t=='OK',d\nm.logout()\n",
        cert = gw.cert_pem.display().to_string(),
        pw = MAILBOX_PASSWORD,
    );
    run_ok(
        std::process::Command::new("python3").args(["-c", &script]),
        "imaplib delete",
    )?;
    mbsync(&rdir, imap, &gw.cert_pem, &r)?;
    let second = files(&rdir)?;
    let inbox2 = maildir(&second, &rdir, "INBOX");
    let store = mail_store(ctx)?;
    let left = store.messages(&r, INBOX).await?;
    ensure!(
        left.len() == 1 && left[0].uid == 2,
        "after the delete {r}'s INBOX holds {left:?}"
    );
    let want = store
        .read(&r, INBOX, 2)
        .await?
        .context("uid 2 unreadable")?;
    ensure!(
        inbox2 == vec![lf(&want)],
        "after the second sync the Maildir INBOX is not exactly the new message"
    );
    let kept = first.keys().filter(|p| second.contains_key(*p)).count();
    ensure!(
        first_object.len() == 2 && kept == 0,
        "expected the deleted message's file to go and nothing else to stay ({kept} kept)"
    );
    // The sender's second sync transfers nothing old: same files, same inodes, same times.
    let sent_again = {
        mbsync(&sdir, imap, &gw.cert_pem, &s)?;
        files(&sdir)?
    };
    for (path, (_, ino, mtime)) in &sfiles {
        let (_, ino2, mtime2) = sent_again
            .get(path)
            .with_context(|| format!("{} went away on the second sync", path.display()))?;
        ensure!(
            ino == ino2 && mtime == mtime2,
            "{} was rewritten by the second sync",
            path.display()
        );
    }

    // fetchmail over POP3S with UIDL: the one message, then nothing, then only the new one.
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home)?;
    let fdir = tmp.path().join("fetched");
    let got = fetchmail(&home, &fdir, pop3, &gw.cert_pem, &r)?;
    ensure!(
        got.iter().map(|b| unfetchmailed(b)).collect::<Vec<_>>() == vec![lf(&want)],
        "fetchmail got {} message(s), not {r}'s one message",
        got.len()
    );
    ensure!(
        fetchmail(&home, &fdir, pop3, &gw.cert_pem, &r)?.is_empty(),
        "fetchmail fetched again what UIDL said it had"
    );
    let raw3 = message(
        &s,
        &[&r],
        &[],
        "Accesso alla casella, terza",
        "Terza busta.",
    )?;
    // A client in IDLE (Python's imaplib, the command sent by hand) hears of the delivery
    // within 2 s of its commit.
    let mut idle = idle_watcher(imap, &gw.cert_pem, &r)?;
    submit(gw, &s, &[&r], &raw3).await?;
    let deadline = Instant::now() + Duration::from_secs(40);
    while store.messages(&r, INBOX).await?.len() < 2 {
        ensure!(
            Instant::now() < deadline,
            "the third message did not reach {r}'s INBOX"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let committed = std::time::SystemTime::now();
    let heard = idle.exists(Duration::from_secs(10))?;
    let late = heard.duration_since(committed).unwrap_or(Duration::ZERO);
    eprintln!(
        "  IDLE: EXISTS heard {:.2} s after the delivery was seen committed",
        late.as_secs_f64()
    );
    ensure!(
        late <= Duration::from_secs(2),
        "the IDLE client heard of the delivery {:.2} s after it was committed",
        late.as_secs_f64()
    );
    wait_for_items(ctx, &[(&r, 3)], Duration::from_secs(40)).await?;
    while store.messages(&r, INBOX).await?.len() < 2 {
        ensure!(
            Instant::now() < deadline,
            "the third message did not reach {r}'s INBOX"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let third = store
        .read(&r, INBOX, 3)
        .await?
        .context("uid 3 unreadable")?;
    let got = fetchmail(&home, &fdir, pop3, &gw.cert_pem, &r)?;
    ensure!(
        got.iter().map(|b| unfetchmailed(b)).collect::<Vec<_>>() == vec![lf(&third)],
        "the second fetchmail got {} message(s), not only the new one",
        got.len()
    );
    wait_drained(ctx, &gw.baseline, Duration::from_secs(20)).await?;
    usage_matches_items(ctx, &s).await?;
    Ok(())
}

/// The webhook receiver (tests/webhook_receiver.py, verifying with the Standard Webhooks
/// reference library); killed when dropped.
struct Receiver {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Receiver {
    fn start(venv: &std::path::Path, dir: &std::path::Path) -> Result<Receiver> {
        use std::io::BufRead;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("endpoints.json"), "{}")?;
        let mut child = std::process::Command::new(venv.join("bin/python"))
            .arg(repo_root().join("tests/webhook_receiver.py"))
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("receiver.stderr"))?)
            .spawn()
            .context("starting tests/webhook_receiver.py")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("no receiver stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("webhook-receiver: ")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.port());
        let Some(port) = port else {
            let _ = child.kill();
            bail!(
                "the webhook receiver did not start ({line:?}): {}",
                std::fs::read_to_string(dir.join("receiver.stderr")).unwrap_or_default()
            );
        };
        Ok(Receiver {
            child,
            port,
            dir: dir.to_path_buf(),
        })
    }

    fn endpoints(&self, endpoints: &serde_json::Value) -> Result<()> {
        // Written whole, then renamed: the receiver never reads half a file.
        let tmp = self.dir.join("endpoints.json.tmp");
        std::fs::write(&tmp, endpoints.to_string())?;
        std::fs::rename(tmp, self.dir.join("endpoints.json"))?;
        Ok(())
    }

    /// Every request received so far.
    fn received(&self) -> Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(self.dir.join("received.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).context("a received.jsonl line"))
            .collect()
    }

    fn on(&self, path: &str) -> Result<Vec<serde_json::Value>> {
        Ok(self
            .received()?
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Webhooks end to end (issue #14): three subscriptions made through the API, one message sent;
/// its three events (accepted, envelope dispatched, delivered) reach the receiver signed (the Standard Webhooks reference library verifies every
/// one), each once; a 500 is retried and delivered; an endpoint that stays down is retried on
/// the schedule (the local profile's 1, 2, 3 s), parked and announced on the parked queue,
/// then replayed through the API once it is up, with the same webhook-id. Every queue message is
/// handled twice at once (at-least-once delivery), and still each attempt is one POST. Another tenant's key
/// finds none of it; a mailbox session may not manage webhooks.
/// Issue #13: an order with its own (verified) domain and member billing imports its members
/// from an .xlsx with `pec mailbox import`: one mailbox each (collisions numbered), bad rows
/// reported with their reasons, one activation mail each through SES (the token read back from
/// LocalStack's store); the link activates once (the agreement required), then the password
/// logs in; importing again creates and sends nothing.
async fn bulk_import_and_activation(ctx: Arc<Ctx>) -> Result<()> {
    program("curl")?;
    let mut gw = gateway(&ctx, "import", &["--api-port", "0"]).await?;
    let result = import_scene(&ctx, &gw).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

/// `pec ARGS`: exit code and standard output (the import exits 1 when rows were refused).
async fn pec_status(ctx: &Ctx, args: &[&str]) -> Result<(i32, String, String)> {
    let out = tokio::process::Command::new(&ctx.binaries.pec)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("starting pec {args:?}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The activation mails LocalStack's SES holds for `contacts`: (contact, text body).
fn activation_mails(ctx: &Ctx, contacts: &[String]) -> Result<Vec<(String, String)>> {
    let raw = pec_integration::http_get(
        ctx.stack.localstack.port,
        "/_aws/ses",
        Duration::from_secs(10),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&raw)?;
    let mut out = Vec::new();
    for m in v["messages"].as_array().into_iter().flatten() {
        let to: Vec<String> = m["Destination"]["ToAddresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        let Some(contact) = to.iter().find(|a| contacts.contains(a)) else {
            continue;
        };
        let data = m["RawData"].as_str().unwrap_or_default();
        let parsed = mail_parser::MessageParser::default()
            .parse(data.as_bytes())
            .context("an activation mail does not parse")?;
        out.push((
            contact.clone(),
            parsed.body_text(0).unwrap_or_default().into_owned(),
        ));
    }
    Ok(out)
}

async fn import_scene(ctx: &Ctx, gw: &Gateway) -> Result<()> {
    let port = api_port(gw).await?;
    let tenant = unique("ordine");
    let domain = format!("{tenant}.example.test");
    ctx.pec(
        &[
            "tenant",
            "add",
            &tenant,
            "--name",
            "Ordine (import)",
            "--billing",
            "member",
        ],
        None,
    )
    .await?;
    // One stack here: no provider index to check against (the demo and providers.sh have one).
    ctx.pec(
        &[
            "tenant",
            "domain",
            "add",
            &tenant,
            &domain,
            "--skip-index-check",
        ],
        None,
    )
    .await?;
    ctx.pec(&["tenant", "domain", "verify", &tenant, &domain], None)
        .await?;

    // 30 members (two pairs share a name), then 4 bad rows.
    let names = [
        ("Mario", "Rossi"),
        ("Anna", "Bianchi"),
        ("Nicolò", "D'Angelo"),
        ("Maria Grazia", "De Luca"),
        ("Luca", "Verdi"),
    ];
    let cf = |i: usize| {
        let first15 = format!("RSSMRA85T10A{:03}", i % 1000);
        let check = pec_members::fiscal::check_character(&first15);
        format!("{first15}{check}")
    };
    let tag = unique("soci");
    let contact = |i: usize| format!("{tag}.{i}@contatti.example.com");
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    let header = [
        "Nome",
        "Cognome",
        "Codice fiscale",
        "E-mail",
        "Cellulare",
        "Piano",
    ];
    for (c, h) in header.iter().enumerate() {
        sheet.write_string(0, c as u16, *h)?;
    }
    let mut contacts = Vec::new();
    for i in 0..30usize {
        let (n, c) = names[i % names.len()];
        let row = (i + 1) as u32;
        // Six Mario Rossi: mario.rossi, mario.rossi2, ... in row order.
        sheet.write_string(row, 0, n)?;
        sheet.write_string(row, 1, c)?;
        sheet.write_string(row, 2, cf(i))?;
        sheet.write_string(row, 3, contact(i))?;
        sheet.write_number(row, 4, 3_330_000_000.0 + i as f64)?;
        sheet.write_string(row, 5, if i % 2 == 0 { "pro" } else { "" })?;
        contacts.push(contact(i));
    }
    let bad = [
        [
            "Ugo",
            "Neri",
            "RSSMRA85T10A562X",
            "ugo@contatti.example.com",
            "",
            "",
        ],
        ["Ada", "Gialli", &cf(3), "ada@contatti.example.com", "", ""],
        ["Eva", "Blu", &cf(900), "eva@", "", ""],
        [
            "Ivo",
            "Rosa",
            &cf(901),
            "ivo@contatti.example.com",
            "",
            "platinum",
        ],
    ];
    for (j, r) in bad.iter().enumerate() {
        for (c, v) in r.iter().enumerate() {
            sheet.write_string((31 + j) as u32, c as u16, *v)?;
        }
    }
    let dir = tempfile::tempdir()?;
    let table = dir.path().join("soci.xlsx");
    book.save(&table)?;
    let report = dir.path().join("report.csv");
    let table_arg = table.display().to_string();
    let report_arg = report.display().to_string();
    let args = [
        "mailbox",
        "import",
        &table_arg,
        "--tenant",
        &tenant,
        "--domain",
        &domain,
        "--plan",
        "standard",
        "--report",
        &report_arg,
        "--activation-url",
        "https://webmail.pec.example.test/attiva",
    ];
    let (code, stdout, stderr) = pec_status(ctx, &args).await?;
    ensure!(
        code == 1,
        "import: exit {code} (refused rows make it 1): {stdout} {stderr}"
    );
    ensure!(
        stdout.contains("34 rows") && stdout.contains("30 created") && stdout.contains("4 refused"),
        "{stdout}"
    );
    let mut rows = Vec::new();
    for r in csv::Reader::from_path(&report)?.records() {
        let r = r?;
        rows.push((
            r[0].parse::<usize>()?,
            r[2].to_string(),
            r[3].to_string(),
            r[4].to_string(),
        ));
    }
    ensure!(rows.len() == 34, "{rows:?}");
    let find = |row: usize| {
        rows.iter()
            .find(|r| r.0 == row)
            .cloned()
            .unwrap_or_default()
    };
    ensure!(
        find(2).1 == format!("mario.rossi@{domain}"),
        "{:?}",
        find(2)
    );
    ensure!(
        find(7).1 == format!("mario.rossi2@{domain}"),
        "{:?}",
        find(7)
    );
    ensure!(
        find(4).1 == format!("nicolo.dangelo@{domain}"),
        "{:?}",
        find(4)
    );
    ensure!(
        find(5).1 == format!("mariagrazia.deluca@{domain}"),
        "{:?}",
        find(5)
    );
    for (row, reason) in [
        (32, "the check character is X, it should be S"),
        (33, "is also on row 5"),
        (34, "is not an e-mail address"),
        (35, "unknown plan \"platinum\""),
    ] {
        let r = find(row);
        ensure!(r.2 == "refused" && r.3.contains(reason), "row {row}: {r:?}");
    }
    let first = format!("mario.rossi@{domain}");
    let m = ctx
        .state
        .mailbox(&first)
        .await?
        .context("no mailbox for row 2")?;
    ensure!(
        m.tenant == tenant
            && m.plan == pec_core::plan::Plan::Pro
            && m.status == pec_ports::MailboxStatus::Pending,
        "{m:?}"
    );
    let second = ctx
        .state
        .mailbox(&format!("anna.bianchi@{domain}"))
        .await?
        .context("no mailbox for row 3")?;
    ensure!(second.plan == pec_core::plan::Plan::Standard, "{second:?}");

    // One activation mail per member, to the contact address; no password in it.
    let mails = activation_mails(ctx, &contacts)?;
    ensure!(mails.len() == 30, "{} activation mails", mails.len());
    let (_, body) = mails
        .iter()
        .find(|(c, _)| *c == contact(0))
        .context("no activation mail for row 2")?;
    ensure!(body.contains(&first), "{body}");
    let token = body
        .split("https://webmail.pec.example.test/attiva#")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("no link in the activation mail")?
        .to_string();
    let json = "Content-Type: application/json";
    let body = |accept: bool| {
        serde_json::json!({"token": token, "password": "scelta-dal-socio", "accept_agreement": accept})
            .to_string()
    };
    let refused = curl_json(
        port,
        "/v1/activation",
        &["-X", "POST", "-H", json, "--data-binary", &body(false)],
        422,
    )?;
    ensure!(
        refused["errors"][0]["pointer"] == "/accept_agreement",
        "{refused}"
    );
    // Pro includes password protection: a password of the breach data (the local stack's
    // PEC_BREACH_URL file) is refused, and the link works on.
    let breached =
        serde_json::json!({"token": token, "password": "Password2024!", "accept_agreement": true})
            .to_string();
    let refused = curl_json(
        port,
        "/v1/activation",
        &["-X", "POST", "-H", json, "--data-binary", &breached],
        422,
    )?;
    ensure!(
        refused["type"] == "urn:pec:problem:password-breached"
            && refused["errors"][0]["pointer"] == "/password",
        "{refused}"
    );
    let done = curl_json(
        port,
        "/v1/activation",
        &["-X", "POST", "-H", json, "--data-binary", &body(true)],
        200,
    )?;
    ensure!(done["address"] == first.as_str(), "{done}");
    let login = serde_json::json!({"address": first, "password": "scelta-dal-socio"}).to_string();
    curl_json(
        port,
        "/v1/auth/login",
        &["-X", "POST", "-H", json, "--data-binary", &login],
        200,
    )?;
    curl_json(
        port,
        "/v1/activation",
        &["-X", "POST", "-H", json, "--data-binary", &body(true)],
        410,
    )?;
    let m = ctx.state.mailbox(&first).await?.context("mailbox gone")?;
    ensure!(m.status == pec_ports::MailboxStatus::Active, "{m:?}");

    // Again: nothing created, nothing sent.
    let (code, stdout, _) = pec_status(ctx, &args).await?;
    ensure!(
        code == 1 && stdout.contains("30 existing") && stdout.contains("0 created"),
        "{stdout}"
    );
    let again = activation_mails(ctx, &contacts)?;
    ensure!(
        again.len() == 30,
        "a second import sent {} more mails",
        again.len() - 30
    );
    Ok(())
}

async fn webhooks_end_to_end(ctx: Arc<Ctx>) -> Result<()> {
    program("curl")?;
    let venv = apitest_venv()?;
    let receiver = Receiver::start(&venv, &ctx.log_dir.join(unique("webhooks")))?;
    // Every batch handled twice at once: a duplicate event or attempt request never POSTs again.
    let mut gw = gateway(
        &ctx,
        "webhooks",
        &["--api-port", "0", "--deliver-times", "2"],
    )
    .await?;
    let result = webhooks_scene(&ctx, &gw, &receiver).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn webhooks_scene(ctx: &Ctx, gw: &Gateway, rx: &Receiver) -> Result<()> {
    let port = api_port(gw).await?;
    // A tenant of its own: only this check's messages reach its subscriptions.
    let tenant = unique("hooks");
    ctx.pec(
        &["tenant", "add", &tenant, "--name", "Webhooks check"],
        None,
    )
    .await?;
    let (s, r) = (ctx.address("ws"), ctx.address("wr"));
    for m in [&s, &r] {
        let args = [
            "mailbox",
            "create",
            m,
            "--tenant",
            &tenant,
            "--plan",
            "standard",
            "--password-stdin",
            "--fast-hash",
        ];
        ctx.pec(&args, Some(&format!("{MAILBOX_PASSWORD}\n")))
            .await?;
    }
    let apikey = |tenant: String, scopes: &'static str| async move {
        let args = [
            "apikey", "create", "--tenant", &tenant, "--name", "hooks", "--scopes", scopes,
        ];
        ctx.pec(&args, None).await.map(|k| k.trim().to_string())
    };
    let key = apikey(tenant.clone(), "send,read,webhooks").await?;
    let foreign = apikey(unique("other"), "send,read,webhooks").await?;
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let json = "Content-Type: application/json";
    let post = |path: &str, body: serde_json::Value, who: &str, want: u16| {
        curl_json(
            port,
            path,
            &[
                "-X",
                "POST",
                "-H",
                json,
                "-H",
                &bearer(who),
                "--data-binary",
                &body.to_string(),
            ],
            want,
        )
    };

    // Refused: a mailbox session, a bad URL.
    let login = serde_json::json!({"address": s, "password": MAILBOX_PASSWORD});
    let tokens = curl_json(
        port,
        "/v1/auth/login",
        &[
            "-X",
            "POST",
            "-H",
            json,
            "--data-binary",
            &login.to_string(),
        ],
        200,
    )?;
    let session = tokens["access_token"].as_str().context("no token")?;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", rx.port);
    post(
        "/v1/webhooks",
        serde_json::json!({"url": url("/ok")}),
        session,
        403,
    )?;
    let bad = post(
        "/v1/webhooks",
        serde_json::json!({"url": "ftp://x/"}),
        &key,
        422,
    )?;
    ensure!(bad["errors"][0]["pointer"] == "/url", "{bad}");

    // Three endpoints: all events; deliveries only, flaky; acceptances only, down.
    let mut subs = BTreeMap::new();
    let mut endpoints = serde_json::Map::new();
    for (path, events, mode) in [
        ("/ok", serde_json::json!(["*"]), "ok"),
        (
            "/flaky",
            serde_json::json!(["pec.message.delivered"]),
            "flaky",
        ),
        ("/down", serde_json::json!(["pec.message.accepted"]), "down"),
    ] {
        let made = post(
            "/v1/webhooks",
            serde_json::json!({"url": url(path), "events": events}),
            &key,
            201,
        )?;
        let secret = made["secret"].as_str().context("no secret")?;
        endpoints.insert(
            path.into(),
            serde_json::json!({"secret": secret, "mode": mode}),
        );
        subs.insert(path, made["id"].as_str().context("no id")?.to_string());
    }
    rx.endpoints(&serde_json::Value::Object(endpoints.clone()))?;
    let listed = curl_json(port, "/v1/webhooks", &["-H", &bearer(&key)], 200)?;
    ensure!(
        listed["webhooks"].as_array().map(Vec::len) == Some(3)
            && listed["webhooks"][0].get("secret").is_none(),
        "{listed}"
    );

    // One message.
    let send =
        serde_json::json!({"from": s, "to": [r], "subject": "Con webhook", "text": "Corpo."});
    let sent = post("/v1/messages", send, &key, 202)?;
    let id = sent["id"].as_str().context("no id")?.to_string();

    // /ok: the acceptance and the delivery, each once, every request verified.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rx.on("/ok")?;
        let types: BTreeSet<String> = got
            .iter()
            .filter_map(|g| serde_json::from_str::<serde_json::Value>(g["body"].as_str()?).ok())
            .filter_map(|b| b["type"].as_str().map(String::from))
            .collect();
        if types.contains("pec.message.accepted") && types.contains("pec.message.delivered") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "/ok did not get both events in 60 s: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // /down: 1 + 3 attempts, then parked.
    let deliveries = |sub: &str| {
        curl_json(
            port,
            &format!("/v1/webhooks/{sub}/deliveries"),
            &["-H", &bearer(&key)],
            200,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (parked, flaky) = loop {
        let down = deliveries(&subs["/down"])?;
        let flaky = deliveries(&subs["/flaky"])?;
        if down["deliveries"][0]["status"] == "parked"
            && flaky["deliveries"][0]["status"] == "delivered"
        {
            break (
                down["deliveries"][0].clone(),
                flaky["deliveries"][0].clone(),
            );
        }
        ensure!(
            Instant::now() < deadline,
            "not parked and delivered in 60 s: {down} {flaky}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let statuses = |d: &serde_json::Value| -> Vec<u64> {
        d["log"]
            .as_array()
            .map(|l| l.iter().filter_map(|a| a["status"].as_u64()).collect())
            .unwrap_or_default()
    };
    ensure!(
        parked["attempts"] == 4 && statuses(&parked) == [503, 503, 503, 503],
        "{parked}"
    );
    ensure!(
        flaky["attempts"] == 2 && statuses(&flaky) == [500, 204],
        "{flaky}"
    );
    let got = rx.received()?;
    ensure!(
        got.iter().all(|g| g["verified"] == true),
        "a delivery failed the Standard Webhooks verification: {got:?}"
    );
    // A message delivered inside this provider: accepted, its transport envelope, delivered.
    for (path, want) in [("/ok", 3), ("/flaky", 2), ("/down", 4)] {
        let on: Vec<&serde_json::Value> = got.iter().filter(|g| g["path"] == path).collect();
        ensure!(
            on.len() == want,
            "{path}: {} requests, expected {want}: {on:?}",
            on.len()
        );
    }
    let ok_ids: BTreeSet<&str> = got
        .iter()
        .filter(|g| g["path"] == "/ok")
        .filter_map(|g| g["id"].as_str())
        .collect();
    ensure!(ok_ids.len() == 3, "an event reached /ok twice: {got:?}");
    let down_ids: BTreeSet<&str> = got
        .iter()
        .filter(|g| g["path"] == "/down")
        .filter_map(|g| g["id"].as_str())
        .collect();
    ensure!(
        down_ids.len() == 1 && down_ids.contains(parked["id"].as_str().unwrap_or_default()),
        "every retry carries the delivery's id as webhook-id: {down_ids:?} {parked}"
    );
    let status = curl_json(
        port,
        &format!("/v1/messages/{id}"),
        &["-H", &bearer(&key)],
        200,
    )?;
    for g in &got {
        let body: serde_json::Value = serde_json::from_str(g["body"].as_str().unwrap_or("null"))?;
        ensure!(
            body["data"]["identificativo"] == status["identificativo"]
                && body["data"]["sender"].as_str().map(str::to_ascii_lowercase) == Some(s.clone()),
            "a payload of another message: {body} (message {status})"
        );
    }
    // The parked delivery is announced for the operator's alarm.
    let parked_queue = ctx.stack.output("WebhookParkedQueueUrl")?;
    let mut announced = false;
    let until = Instant::now() + Duration::from_secs(10);
    while !announced && Instant::now() < until {
        let out = ctx
            .aws
            .sqs
            .receive_message()
            .queue_url(parked_queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        for m in out.messages() {
            if m.body()
                .is_some_and(|b| b.contains(parked["id"].as_str().unwrap_or("?")))
            {
                announced = true;
                ctx.aws
                    .sqs
                    .delete_message()
                    .queue_url(parked_queue)
                    .set_receipt_handle(m.receipt_handle().map(String::from))
                    .send()
                    .await?;
            }
        }
    }
    ensure!(
        announced,
        "the parked delivery was not announced on the parked queue"
    );

    // Another tenant finds none of it.
    let foreign_h = bearer(&foreign);
    let parked_id = parked["id"].as_str().context("no delivery id")?;
    let replay = format!(
        "/v1/webhooks/{}/deliveries/{parked_id}/replay",
        subs["/down"]
    );
    curl_json(
        port,
        &format!("/v1/webhooks/{}", subs["/ok"]),
        &["-H", &foreign_h],
        404,
    )?;
    curl_json(
        port,
        &format!("/v1/webhooks/{}/deliveries", subs["/down"]),
        &["-H", &foreign_h],
        404,
    )?;
    post(&replay, serde_json::json!({}), &foreign, 404)?;
    curl_json(
        port,
        &format!("/v1/webhooks/{}", subs["/ok"]),
        &["-X", "DELETE", "-H", &foreign_h],
        404,
    )?;

    // The endpoint is back: replayed, delivered with the same webhook-id.
    endpoints.insert(
        "/down".into(),
        serde_json::json!({"secret": endpoints["/down"]["secret"], "mode": "ok"}),
    );
    rx.endpoints(&serde_json::Value::Object(endpoints))?;
    post(&replay, serde_json::json!({}), &key, 202)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = deliveries(&subs["/down"])?;
        if d["deliveries"][0]["status"] == "delivered" {
            ensure!(
                statuses(&d["deliveries"][0]) == [503, 503, 503, 503, 204],
                "{d}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the replay was not delivered in 30 s: {d}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last = rx.on("/down")?;
    ensure!(
        last.len() == 5 && last[4]["answered"] == 204 && last[4]["id"] == parked["id"],
        "{last:?}"
    );
    post(&replay, serde_json::json!({}), &key, 409)?;

    // A test ping: signed like any event, whatever the subscription's event types.
    let ping = format!("/v1/webhooks/{}/ping", subs["/flaky"]);
    post(&ping, serde_json::json!({}), &foreign, 404)?;
    let queued = post(&ping, serde_json::json!({}), &key, 202)?;
    ensure!(queued["event_type"] == "pec.webhook.test", "{queued}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = deliveries(&subs["/flaky"])?;
        let test = d["deliveries"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["id"] == queued["id"]).cloned());
        if let Some(t) = test.filter(|t| t["status"] == "delivered") {
            ensure!(statuses(&t) == [500, 204], "{t}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the test ping was not delivered in 30 s: {d}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pings: Vec<serde_json::Value> = rx
        .on("/flaky")?
        .into_iter()
        .filter(|g| g["id"] == queued["id"])
        .collect();
    ensure!(
        pings.len() == 2 && pings.iter().all(|g| g["verified"] == true),
        "{pings:?}"
    );
    let body: serde_json::Value = serde_json::from_str(pings[1]["body"].as_str().unwrap_or(""))?;
    ensure!(
        body["type"] == "pec.webhook.test" && body["data"]["webhook"] == subs["/flaky"].as_str(),
        "{body}"
    );

    // Unsubscribed.
    for sub in subs.values() {
        curl(
            port,
            &format!("/v1/webhooks/{sub}"),
            &["-X", "DELETE", "-H", &bearer(&key)],
        )
        .and_then(|(st, _)| {
            ensure!(st == 204, "DELETE /v1/webhooks/{sub}: HTTP {st}");
            Ok(())
        })?;
    }
    let listed = curl_json(port, "/v1/webhooks", &["-H", &bearer(&key)], 200)?;
    ensure!(
        listed["webhooks"].as_array().is_some_and(Vec::is_empty),
        "{listed}"
    );
    wait_drained(ctx, &gw.baseline, Duration::from_secs(20)).await?;
    Ok(())
}

// ------------------------------------------------------------------ transfer in (issue #13)

/// The source mailbox of the transfer-in check: 500 generated messages (text, HTML, attachments,
/// PEC envelopes) in four folders, flags and keywords, as (folder on disk, message).
fn transfer_source_messages() -> Vec<(&'static str, pec_integration::mailgen::Message)> {
    use pec_integration::mailgen::{KEYWORDS, message};
    (0..500)
        .map(|i| {
            let mut m = message(21, i, None);
            if i % 7 == 0 {
                m.flags.insert(KEYWORDS[0].to_owned());
            }
            if i % 11 == 0 {
                m.flags.insert(KEYWORDS[1].to_owned());
            }
            let folder = match i {
                0..300 => "",
                300..400 => ".Sent",
                400..480 => ".Archivio 2024",
                _ => ".Cestino",
            };
            if folder == ".Cestino" && i % 4 == 0 {
                m.flags.insert("\\Deleted".to_owned());
            }
            (folder, m)
        })
        .collect()
}

/// Every file name under the Maildir's `cur/` and `new/` directories (the flags are in them).
fn maildir_names(root: &std::path::Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for folder in ["", ".Sent", ".Archivio 2024", ".Cestino"] {
        for sub in ["cur", "new"] {
            let dir = root.join(folder).join(sub);
            for e in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
                out.insert(format!(
                    "{folder}/{sub}/{}",
                    e?.file_name().to_string_lossy()
                ));
            }
        }
    }
    Ok(out)
}

/// `pec mailbox transfer ADDR ARGS` with the source password in PEC_TRANSFER_PASSWORD: exit
/// code, standard output and error.
async fn transfer_run(
    ctx: &Ctx,
    address: &str,
    args: &[&str],
    password: &str,
) -> Result<(i32, String, String)> {
    let out = tokio::process::Command::new(&ctx.binaries.pec)
        .args(["mailbox", "transfer", address])
        .args(args)
        .env("PEC_TRANSFER_PASSWORD", password)
        .kill_on_drop(true)
        .output()
        .await
        .context("starting pec mailbox transfer")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Transfer in: a mailbox of 500 messages served by Debian's Dovecot (a server we did not
/// write) moves into one of ours with `pec mailbox transfer`: first 200 over IMAP + STARTTLS
/// (--limit), the rest over IMAPS (it resumes), a third run copies nothing. Every message is
/// read back from our store byte for byte with its flags (keywords too) and INTERNALDATE in
/// the folder the rules say (special use, Italian name, a --folder map); the quota counts them;
/// nothing changed at the source. Refused before copying: an unmapped folder, a mailbox too
/// small (with the numbers), a wrong password.
async fn transfer_in_from_dovecot(ctx: Arc<Ctx>) -> Result<()> {
    const USER: &str = "mario.rossi@pec.altro.example";
    const PASSWORD: &str = "sorgente-segreta-1";
    let messages = transfer_source_messages();
    let dovecot =
        pec_integration::dovecot::Dovecot::start(USER, PASSWORD, &[("Sent", "\\Sent")], |root| {
            for folder in ["", ".Sent", ".Archivio 2024", ".Cestino"] {
                pec_integration::mailgen::make_maildir(&root.join(folder))?;
            }
            for (i, (folder, m)) in messages.iter().enumerate() {
                pec_integration::mailgen::write_maildir(&root.join(folder), i, m)?;
            }
            Ok(())
        })?;
    let before = maildir_names(&dovecot.maildir())?;
    let cert = dovecot.cert.display().to_string();
    let user = USER.replace('@', "%40");
    let imap = format!("imap://{user}@127.0.0.1:{}", dovecot.imap_port);
    let imaps = format!("imaps://{user}@127.0.0.1:{}", dovecot.imaps_port);
    let total: u64 = messages.iter().map(|(_, m)| m.bytes.len() as u64).sum();

    let address = ctx.address("xfer");
    ctx.create_mailbox(&address, Some(total + 1_000_000))
        .await?;
    let small = ctx.address("xfer-small");
    ctx.create_mailbox(&small, Some(total / 2)).await?;

    let result = async {
        // Refused before anything is copied.
        let (code, _, err) =
            transfer_run(&ctx, &small, &["--from", &imaps, "--ca-file", &cert], PASSWORD).await?;
        ensure!(
            code != 0 && err.contains("\"Archivio 2024\" (80 messages)") && err.contains("--folder"),
            "an unmapped folder: exit {code}: {err}"
        );
        let (code, _, err) = transfer_run(
            &ctx,
            &small,
            &["--from", &imaps, "--ca-file", &cert, "--folder", "Archivio 2024=INBOX"],
            PASSWORD,
        )
        .await?;
        ensure!(
            code != 0
                && err.contains(&format!("{total} octets"))
                && err.contains("nothing was copied"),
            "a mailbox too small: exit {code}: {err}"
        );
        let (code, _, err) = transfer_run(
            &ctx,
            &address,
            &["--from", &imaps, "--ca-file", &cert, "--folder", "Archivio 2024=INBOX"],
            "not-the-password",
        )
        .await?;
        ensure!(
            code != 0 && err.contains("refused the login"),
            "a wrong password: exit {code}: {err}"
        );
        let (code, _, err) = transfer_run(
            &ctx,
            &address,
            &["--from", &imaps, "--folder", "Archivio 2024=INBOX"],
            PASSWORD,
        )
        .await?;
        ensure!(
            code != 0 && err.to_lowercase().contains("certificate"),
            "a server certificate no root vouches for: exit {code}: {err}"
        );
        let store = mail_store(&ctx)?;
        for a in [&address, &small] {
            ensure!(store.quota(a).await?.used == 0, "{a}: something was copied");
        }

        // 200 over IMAP + STARTTLS, the rest over IMAPS, then nothing.
        let map = ["--ca-file", &cert, "--folder", "Archivio 2024=INBOX"];
        let runs = [
            (imap.as_str(), Some("200"), "200 message(s) copied, 0 already there"),
            (imaps.as_str(), None, "300 message(s) copied, 200 already there"),
            (imaps.as_str(), None, "0 message(s) copied, 500 already there"),
        ];
        for (from, limit, want) in runs {
            let mut args = vec!["--from", from];
            args.extend(map);
            if let Some(l) = limit {
                args.extend(["--limit", l]);
            }
            let started = Instant::now();
            let (code, out, err) = transfer_run(&ctx, &address, &args, PASSWORD).await?;
            ensure!(code == 0 && out.contains(want), "transfer {args:?}: exit {code}: {out}{err}");
            eprintln!(
                "  transfer {} in {:.1} s: {}",
                from.split(':').next().unwrap_or(""),
                started.elapsed().as_secs_f64(),
                out.lines().next().unwrap_or("")
            );
        }

        // Byte for byte, with flags and dates, in the right folders.
        type Seen = Vec<(Vec<u8>, Vec<String>, i64)>;
        let mut want: BTreeMap<&str, Seen> = BTreeMap::new();
        for (folder, m) in &messages {
            let ours = match *folder {
                "" | ".Archivio 2024" => INBOX,
                ".Sent" => "Sent",
                _ => "Trash",
            };
            want.entry(ours).or_default().push((
                m.bytes.clone(),
                m.flags.iter().cloned().collect(),
                m.date.timestamp(),
            ));
        }
        for (folder, mut expected) in want {
            let mut got: Seen = Vec::new();
            for meta in store.messages(&address, folder).await? {
                let bytes = store
                    .read(&address, folder, meta.uid)
                    .await?
                    .with_context(|| format!("{folder} UID {} has no bytes", meta.uid))?;
                ensure!(bytes.len() as u64 == meta.size, "{folder} UID {}: size", meta.uid);
                let origin = if folder == INBOX { Origin::Delivered } else { Origin::Appended };
                ensure!(meta.origin == origin, "{folder} UID {}: {:?}", meta.uid, meta.origin);
                got.push((bytes, meta.flags.into_iter().collect(), meta.internal_date.timestamp()));
            }
            expected.sort();
            got.sort();
            ensure!(
                got.len() == expected.len(),
                "{folder}: {} messages, want {}",
                got.len(),
                expected.len()
            );
            for (g, w) in got.iter().zip(&expected) {
                ensure!(
                    g == w,
                    "{folder}: a message differs (flags {:?} vs {:?}, date {} vs {}, {} vs {} octets)",
                    g.1,
                    w.1,
                    g.2,
                    w.2,
                    g.0.len(),
                    w.0.len()
                );
            }
        }
        let used = store.quota(&address).await?.used;
        ensure!(used == total, "quota: {used} octets in use, {total} copied");
        let mailbox = ctx.state.mailbox(&address).await?.context("the mailbox")?;
        ensure!(mailbox.quota_bytes == total + 1_000_000, "{mailbox:?}");
        let after = maildir_names(&dovecot.maildir())?;
        ensure!(before == after, "the source's flags or files changed");
        Ok(())
    }
    .await;
    result.map_err(|e| e.context(format!("Dovecot log:\n{}", dovecot.log())))
}

/// The tenant admin routes on the emulators (through the runner's API, as the api function):
/// an admin key lists its tenant's mailboxes, changes a plan, suspends and resumes a mailbox,
/// adds a domain (SES identity with DKIM, the DNS records), verifies it, lists and removes it;
/// another tenant's admin key reaches none of it. (The IAM check holds these calls against the
/// api function's role.)
async fn tenant_admin_over_the_api(ctx: Arc<Ctx>) -> Result<()> {
    program("curl")?;
    let mut gw = gateway(&ctx, "admin", &["--api-port", "0"]).await?;
    let result = admin_scene(&ctx, &gw).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn admin_scene(ctx: &Ctx, gw: &Gateway) -> Result<()> {
    let port = api_port(gw).await?;
    // The provider index the domain check reads: ours, unless a run has published one.
    let bucket = ctx.stack.output("EvidenceBucketName")?;
    let index_key = ctx
        .stack
        .function_env("ApiFunction", "PEC_PROVIDER_INDEX_KEY")
        .unwrap_or(pec_ports::keys::DEFAULT_PROVIDER_INDEX_KEY)
        .to_string();
    let published = ctx
        .aws
        .s3
        .head_object()
        .bucket(bucket)
        .key(&index_key)
        .send()
        .await
        .is_ok();
    if !published {
        let cert = ctx.pki.dir().join("provider.pem");
        let ldif = ctx
            .pec(
                &[
                    "provider-index",
                    "export",
                    "--cert",
                    &cert.to_string_lossy(),
                ],
                None,
            )
            .await?;
        ctx.aws
            .s3
            .put_object()
            .bucket(bucket)
            .key(&index_key)
            .body(ldif.into_bytes().into())
            .send()
            .await
            .context("publishing the provider index")?;
    }
    let result = admin_calls(ctx, port).await;
    if !published {
        ctx.aws
            .s3
            .delete_object()
            .bucket(bucket)
            .key(&index_key)
            .send()
            .await
            .context("removing the provider index again")?;
    }
    result
}

async fn admin_calls(ctx: &Ctx, port: u16) -> Result<()> {
    let tenant = unique("studio");
    ctx.pec(
        &["tenant", "add", &tenant, "--name", "Studio (admin API)"],
        None,
    )
    .await?;
    let key = |t: &str| {
        let t = t.to_string();
        async move {
            ctx.pec(
                &[
                    "apikey", "create", "--tenant", &t, "--name", "admin", "--scopes", "admin",
                ],
                None,
            )
            .await
            .map(|k| k.trim().to_string())
        }
    };
    let admin = key(&tenant).await?;
    let foreign = key(&unique("altro")).await?;
    let bearer = |k: &str| format!("Authorization: Bearer {k}");
    let json = "Content-Type: application/json";
    let member = ctx.address("adm");
    ctx.pec(
        &[
            "mailbox",
            "create",
            &member,
            "--tenant",
            &tenant,
            "--plan",
            "standard",
            "--password-stdin",
            "--fast-hash",
        ],
        Some(&format!("{MAILBOX_PASSWORD}\n")),
    )
    .await?;

    let second = ctx.address("adm2");
    let made = curl_json(
        port,
        "/v1/mailboxes",
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&admin),
            "-H",
            json,
            "--data-binary",
            &serde_json::json!({"address": second, "plan": "pro", "password": MAILBOX_PASSWORD})
                .to_string(),
        ],
        201,
    )?;
    ensure!(made["status"] == "active", "{made}");
    let list = curl_json(port, "/v1/mailboxes", &["-H", &bearer(&admin)], 200)?;
    let mut listed: Vec<&str> = list["mailboxes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["address"].as_str())
        .collect();
    listed.sort_unstable();
    let mut want = vec![member.as_str(), second.as_str()];
    want.sort_unstable();
    ensure!(listed == want, "{list}");
    let up = curl_json(
        port,
        &format!("/v1/mailboxes/{member}/plan"),
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&admin),
            "-H",
            json,
            "--data-binary",
            r#"{"plan":"gold","expansion_gb":1}"#,
        ],
        200,
    )?;
    ensure!(up["kind"] == "upgrade", "{up}");
    let status = format!("/v1/mailboxes/{member}/status");
    let s = curl_json(
        port,
        &status,
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&admin),
            "-H",
            json,
            "--data-binary",
            r#"{"action":"suspend","reason":"non-payment"}"#,
        ],
        200,
    )?;
    ensure!(s["status"] == "suspended", "{s}");
    let r = curl_json(
        port,
        &status,
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&admin),
            "-H",
            json,
            "--data-binary",
            r#"{"action":"resume"}"#,
        ],
        200,
    )?;
    ensure!(r["status"] == "active", "{r}");

    let domain = format!("{tenant}.example.test");
    let added = curl_json(
        port,
        "/v1/domains",
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&admin),
            "-H",
            json,
            "--data-binary",
            &format!(r#"{{"domain":"{domain}"}}"#),
        ],
        201,
    )?;
    ensure!(
        added["dns"]
            .as_array()
            .is_some_and(|d| d.iter().any(|r| r["type"] == "MX")),
        "{added}"
    );
    let verified = curl_json(
        port,
        &format!("/v1/domains/{domain}/verify"),
        &["-X", "POST", "-H", &bearer(&admin)],
        200,
    )?;
    ensure!(verified["domain"] == domain.as_str(), "{verified}");
    let listed = curl_json(port, "/v1/domains", &["-H", &bearer(&admin)], 200)?;
    ensure!(
        listed["domains"][0]["domain"] == domain.as_str(),
        "{listed}"
    );

    // Another tenant's admin key reaches nothing of it.
    let none = curl_json(port, "/v1/mailboxes", &["-H", &bearer(&foreign)], 200)?;
    ensure!(none["mailboxes"] == serde_json::json!([]), "{none}");
    for (method, path, body) in [
        (
            "POST",
            format!("/v1/mailboxes/{member}/plan"),
            r#"{"plan":"base"}"#,
        ),
        ("POST", status.clone(), r#"{"action":"revoke"}"#),
        ("POST", format!("/v1/domains/{domain}/verify"), "{}"),
        ("DELETE", format!("/v1/domains/{domain}"), ""),
    ] {
        let (code, body) = curl(
            port,
            &path,
            &[
                "-X",
                method,
                "-H",
                &bearer(&foreign),
                "-H",
                json,
                "--data-binary",
                body,
            ],
        )?;
        ensure!(
            code == 404,
            "{method} {path} with another tenant's key: HTTP {code} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let m = ctx.state.mailbox(&member).await?.context("the mailbox")?;
    ensure!(
        m.status == pec_ports::MailboxStatus::Active && m.plan == pec_core::plan::Plan::Gold,
        "{m:?}"
    );

    let (code, _) = curl(
        port,
        &format!("/v1/domains/{domain}"),
        &["-X", "DELETE", "-H", &bearer(&admin)],
    )?;
    ensure!(code == 204, "DELETE /v1/domains/{domain}: HTTP {code}");
    ensure!(
        ctx.state.domain(&domain).await?.is_none(),
        "the domain is still recorded"
    );
    api_keys_over_http(port, &admin, &foreign).await?;
    members_over_http(ctx, port, &tenant, &admin, &foreign).await
}

/// API keys made, rotated and revoked over HTTP, on the state table.
async fn api_keys_over_http(port: u16, admin: &str, foreign: &str) -> Result<()> {
    let bearer = |k: &str| format!("Authorization: Bearer {k}");
    let json = "Content-Type: application/json";
    let made = curl_json(
        port,
        "/v1/api-keys",
        &[
            "-X",
            "POST",
            "-H",
            &bearer(admin),
            "-H",
            json,
            "--data-binary",
            r#"{"name":"gestionale","scopes":["admin"]}"#,
        ],
        201,
    )?;
    let key = made["key"].as_str().context("no key")?.to_string();
    let id = made["id"].as_str().context("no id")?.to_string();
    let listed = curl_json(port, "/v1/api-keys", &["-H", &bearer(&key)], 200)?;
    ensure!(
        listed["keys"].as_array().is_some_and(|k| k
            .iter()
            .any(|k| k["id"] == id.as_str() && k["last_used_at"].is_string())),
        "{listed}"
    );
    let (code, _) = curl(
        port,
        &format!("/v1/api-keys/{id}"),
        &["-X", "DELETE", "-H", &bearer(foreign)],
    )?;
    ensure!(code == 404, "another tenant revoked a key: HTTP {code}");
    let rotated = curl_json(
        port,
        &format!("/v1/api-keys/{id}/rotate"),
        &[
            "-X",
            "POST",
            "-H",
            &bearer(admin),
            "-H",
            json,
            "--data-binary",
            r#"{"grace_seconds":0}"#,
        ],
        201,
    )?;
    let next = rotated["key"]
        .as_str()
        .context("no rotated key")?
        .to_string();
    let next_id = rotated["id"].as_str().context("no id")?.to_string();
    let (code, _) = curl(port, "/v1/api-keys", &["-H", &bearer(&key)])?;
    ensure!(
        code == 401,
        "a key rotated without grace still works: HTTP {code}"
    );
    curl_json(port, "/v1/api-keys", &["-H", &bearer(&next)], 200)?;
    let (code, _) = curl(
        port,
        &format!("/v1/api-keys/{next_id}"),
        &["-X", "DELETE", "-H", &bearer(admin)],
    )?;
    ensure!(code == 204, "DELETE /v1/api-keys/{next_id}: HTTP {code}");
    let (code, _) = curl(port, "/v1/api-keys", &["-H", &bearer(&next)])?;
    ensure!(code == 401, "a revoked key still works: HTTP {code}");
    Ok(())
}

/// A members table imported over HTTP into the tenant's own domain, a link sent again, and a
/// member activating with it.
async fn members_over_http(
    ctx: &Ctx,
    port: u16,
    tenant: &str,
    admin: &str,
    foreign: &str,
) -> Result<()> {
    let bearer = |k: &str| format!("Authorization: Bearer {k}");
    let json = "Content-Type: application/json";
    let domain = format!("soci-{tenant}.example.test");
    ctx.pec(
        &[
            "tenant",
            "domain",
            "add",
            tenant,
            &domain,
            "--skip-index-check",
        ],
        None,
    )
    .await?;
    ctx.pec(&["tenant", "domain", "verify", tenant, &domain], None)
        .await?;
    let tag = unique("api-soci");
    let contacts = [
        format!("{tag}.1@contatti.example.com"),
        format!("{tag}.2@contatti.example.com"),
    ];
    let table = format!(
        "Nome;Cognome;Codice fiscale;E-mail;Cellulare;Piano\r\n\
         Giulia;Marino;MRNGLI90C41F205{};{};+39 333 1112223;pro\r\n\
         Paolo;Conti;CNTPLA75B12L219{};{};;\r\n\
         Rita;Sala;NONVALIDO;rita@contatti.example.com;;\r\n",
        pec_members::fiscal::check_character("MRNGLI90C41F205"),
        contacts[0],
        pec_members::fiscal::check_character("CNTPLA75B12L219"),
        contacts[1],
    );
    let path = format!("/v1/members/import?domain={domain}&plan=standard");
    let post_table = |key: &str, code| {
        curl_json(
            port,
            &path,
            &[
                "-X",
                "POST",
                "-H",
                &bearer(key),
                "-H",
                "Content-Type: text/csv",
                "--data-binary",
                &table,
            ],
            code,
        )
    };
    let (code, _) = curl(
        port,
        &path,
        &[
            "-X",
            "POST",
            "-H",
            &bearer(foreign),
            "-H",
            "Content-Type: text/csv",
            "--data-binary",
            &table,
        ],
    )?;
    // The other key's tenant has no record at all here (a tenant that has one gets 422: not
    // one of its domains; shown in pec-api's tests).
    ensure!(
        code == 404,
        "another tenant imported into {domain}: HTTP {code}"
    );
    let report = post_table(admin, 200)?;
    ensure!(
        report["complete"] == true && report["created"] == 2 && report["refused"] == 1,
        "{report}"
    );
    let giulia = format!("giulia.marino@{domain}");
    ensure!(report["rows"][0]["address"] == giulia.as_str(), "{report}");
    let m = ctx
        .state
        .mailbox(&giulia)
        .await?
        .context("no mailbox for Giulia")?;
    ensure!(
        m.tenant == tenant && m.plan == pec_core::plan::Plan::Pro,
        "{m:?}"
    );
    let again = post_table(admin, 200)?;
    ensure!(again["existing"] == 2 && again["created"] == 0, "{again}");
    ensure!(
        activation_mails(ctx, &contacts)?.len() == 2,
        "not one mail per member"
    );

    // The first link is lost: a new one, and only it works.
    let resent = curl_json(
        port,
        &format!("/v1/mailboxes/{giulia}/activation"),
        &[
            "-X",
            "POST",
            "-H",
            &bearer(admin),
            "-H",
            json,
            "--data-binary",
            "{}",
        ],
        202,
    )?;
    ensure!(resent["email"] == contacts[0].as_str(), "{resent}");
    let mails = activation_mails(ctx, &contacts[..1])?;
    ensure!(mails.len() == 2, "{} mails to Giulia", mails.len());
    let token = |body: &str| {
        body.split("http://127.0.0.1/attiva#")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    let tokens: Vec<String> = mails.iter().filter_map(|(_, b)| token(b)).collect();
    ensure!(tokens.len() == 2 && tokens[0] != tokens[1], "{mails:?}");
    let body = |t: &str| {
        serde_json::json!({"token": t, "password": "scelta-da-giulia", "accept_agreement": true})
            .to_string()
    };
    let mut outcomes = Vec::new();
    for t in &tokens {
        let (code, _) = curl(
            port,
            "/v1/activation",
            &["-X", "POST", "-H", json, "--data-binary", &body(t)],
        )?;
        outcomes.push(code);
    }
    outcomes.sort_unstable();
    ensure!(
        outcomes == [200, 410],
        "activation with the old and the new link: {outcomes:?}"
    );
    let login = serde_json::json!({"address": giulia, "password": "scelta-da-giulia"}).to_string();
    curl_json(
        port,
        "/v1/auth/login",
        &["-X", "POST", "-H", json, "--data-binary", &login],
        200,
    )?;
    Ok(())
}

// ------------------------------------------------------------------------------ spam lockout

/// Issue #18 on the emulators: rspamd (infra/local/rspamd.sh) scores every submission; spam is
/// still certified; the scheduled spam-sweep function (every 2 s here) locks the mailbox at the
/// 11th spam in the hour, not before, and sends one reset link to the member's contact (SES);
/// the stolen password stops working over SMTP and the API; the link sets a new password and
/// unlocks, once; the detections that locked it never lock it again.
async fn spam_lockout_end_to_end(ctx: Arc<Ctx>) -> Result<()> {
    program("curl")?;
    let mut gw = gateway(&ctx, "spam", &["--api-port", "0", "--timers-every", "2"]).await?;
    let result = spam_scene(&ctx, &gw).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn mailbox_of(ctx: &Ctx, address: &str) -> Result<pec_ports::Mailbox> {
    ctx.state
        .mailbox(address)
        .await?
        .with_context(|| format!("no mailbox {address}"))
}

async fn spam_scene(ctx: &Ctx, gw: &Gateway) -> Result<()> {
    let port = api_port(gw).await?;
    let spammer = ctx.address("spammer");
    let friend = ctx.address("friend");
    ctx.create_mailbox(&spammer, None).await?;
    ctx.create_mailbox(&friend, None).await?;
    // The spammer is an imported member with a contact address: where the reset link goes.
    let cf = format!("CF{}", unique("x").replace(['-', '_'], "").to_uppercase());
    let contact = format!("{}@contatti.example.com", unique("contatto"));
    let mobile = test_mobile();
    let mb = mailbox_of(ctx, &spammer).await?;
    let with_member = pec_ports::Mailbox {
        member: Some(cf.clone()),
        ..mb.clone()
    };
    ensure!(ctx.state.replace_mailbox(&mb, &with_member, None).await?);
    ctx.state
        .claim_member(&pec_ports::MemberRecord {
            tenant: ctx.tenant.clone(),
            fiscal_code: cf,
            nome: "Mario".into(),
            cognome: "Spam".into(),
            email: contact.clone(),
            mobile: Some(mobile.clone()),
            plan: pec_core::plan::Plan::Standard,
            address: spammer.clone(),
            status: pec_ports::MemberStatus::Created,
            imported_at: chrono::Utc::now(),
            link: None,
        })
        .await?;
    let since = chrono::Utc::now() - chrono::Duration::minutes(5);
    let spam = message(
        &spammer,
        &[&friend],
        &[],
        "Offerta imperdibile",
        &format!("Compra ora.\r\n{}\r\n", pec_ports::spam::GTUBE),
    )?;
    // Ten spam messages: certified all the same, logged, and not enough to lock.
    for _ in 0..10 {
        submit(gw, &spammer, &[&friend], &spam).await?;
    }
    wait_for_items(ctx, &[(&friend, 10)], Duration::from_secs(120)).await?;
    let detections = ctx.state.spam_detections(&spammer, since).await?;
    ensure!(
        detections.len() == 10,
        "{} detections after 10 spam",
        detections.len()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        mailbox_of(ctx, &spammer).await?.in_service(),
        "locked at 10"
    );

    // The eleventh: locked by the next sweep.
    submit(gw, &spammer, &[&friend], &spam).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let locked = loop {
        let m = mailbox_of(ctx, &spammer).await?;
        if m.locked {
            break m;
        }
        ensure!(
            Instant::now() < deadline,
            "not locked 60 s after the 11th spam"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let note = locked.lock.context("a lock without its note")?;
    ensure!(
        note.reason == "spam" && note.detections == 11 && !note.by_operator,
        "{note:?}"
    );
    // Recorded in the provider log, once.
    let day = note.since.format("%Y-%m-%d").to_string();
    let records: Vec<_> = ctx
        .state
        .log_day(&day)
        .await?
        .into_iter()
        .filter(|e| {
            e.event_type == pec_core::events::EventType::MailboxLocked && e.sender == spammer
        })
        .collect();
    ensure!(
        records.len() == 1,
        "lock records in the provider log: {records:?}"
    );
    // The stolen password no longer opens anything.
    // SMTP says what happened and what to do (525 5.7.13), to the owner and the thief alike.
    let refused = submit(gw, &spammer, &[&friend], &spam).await;
    let err = format!(
        "{:#}",
        refused.err().context("SMTP still takes the old password")?
    );
    ensure!(
        err.contains("525") && err.contains("password may have been stolen"),
        "{err}"
    );
    let json = "Content-Type: application/json";
    let login = serde_json::json!({"address": spammer, "password": MAILBOX_PASSWORD}).to_string();
    let (code, _) = curl(
        port,
        "/v1/auth/login",
        &["-X", "POST", "-H", json, "--data-binary", &login],
    )?;
    ensure!(code != 200, "the API logs the old password in");

    // However many sweeps ran since (one every 2 s), one reset link.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mails = activation_mails(ctx, std::slice::from_ref(&contact))?;
    ensure!(mails.len() == 1, "{} reset mails: {mails:?}", mails.len());
    ensure!(mails[0].1.contains("spam"), "{}", mails[0].1);
    let token = mails[0]
        .1
        .split("http://127.0.0.1/attiva#")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("no link in the reset mail")?
        .to_string();
    // The same link by SMS to the member's contact mobile, once.
    let sms = pec_integration::sms_sent_to(ctx.stack.localstack.port, &mobile)?;
    ensure!(sms.len() == 1, "{} reset SMS: {sms:?}", sms.len());
    ensure!(
        sms[0].contains(&spammer) && sms[0].ends_with(&format!("http://127.0.0.1/attiva#{token}")),
        "{}",
        sms[0]
    );
    let reset = serde_json::json!({"token": token, "password": "una-password-nuova"}).to_string();
    curl_json(
        port,
        "/v1/activation",
        &["-X", "POST", "-H", json, "--data-binary", &reset],
        200,
    )?;
    let (again, _) = curl(
        port,
        "/v1/activation",
        &["-X", "POST", "-H", json, "--data-binary", &reset],
    )?;
    ensure!(again == 410, "the reset link worked twice ({again})");
    ensure!(
        mailbox_of(ctx, &spammer).await?.in_service(),
        "not unlocked by the reset"
    );
    let id = pec_submit::client::submit(
        gw.addr,
        &gw.cert,
        "localhost",
        &spammer,
        "una-password-nuova",
        &spammer,
        std::slice::from_ref(&friend),
        &message(&spammer, &[&friend], &[], "Di nuovo io", "Scusate.")?,
    )
    .await
    .context("submitting with the new password")?;
    ensure!(!id.is_empty());
    // The eleven detections that locked it were paid for.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        mailbox_of(ctx, &spammer).await?.in_service(),
        "locked again by old detections"
    );

    // Inbound: ordinary mail scored as spam reaches the friend's Junk folder (its anomaly
    // envelope, signed as any), as SES receiving would hand it over (raw, then the envelope).
    let id = unique("inspam").replace(['-', '_'], "");
    let raw_bucket = ctx.stack.output("RawMailBucketName")?;
    let ordinary = format!(
        "From: Someone <someone@ordinaria.test>\r\nTo: {friend}\r\nSubject: Vinci un premio\r\n\
         Message-ID: <{id}@ordinaria.test>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0100\r\n\r\n{}\r\n",
        pec_ports::spam::GTUBE
    );
    let envelope = serde_json::json!({
        "version": pec_core::submission::ENVELOPE_VERSION,
        "recipients": [friend],
        "source": "someone@ordinaria.test",
        "received_at": chrono::Utc::now(),
    });
    for (key, body) in [
        (format!("inbound/{id}.eml"), ordinary.into_bytes()),
        (format!("inbound/{id}.json"), serde_json::to_vec(&envelope)?),
    ] {
        ctx.aws
            .s3
            .put_object()
            .bucket(raw_bucket)
            .key(&key)
            .body(body.into())
            .send()
            .await
            .with_context(|| format!("writing {key}"))?;
    }
    let store = mail_store(ctx)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let junk = store.messages(&friend, "Junk").await.unwrap_or_default();
        if !junk.is_empty() {
            ensure!(junk.len() == 1, "{} messages in Junk", junk.len());
            let bytes = store
                .read(&friend, "Junk", junk[0].uid)
                .await?
                .context("the Junk message has no bytes")?;
            ensure!(
                classify(&bytes).kind == Kind::BustaAnomalia,
                "Junk holds something else than the anomaly envelope"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no anomaly envelope in Junk within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The friend's INBOX holds the 12 certified envelopes (11 spam, 1 after the reset),
    // nothing of the ordinary spam; the usage counts both folders.
    wait_for_items(ctx, &[(&friend, 13)], Duration::from_secs(90)).await?;
    let inbox = store.messages(&friend, INBOX).await?;
    ensure!(
        inbox.len() == 12,
        "{} messages in the friend's INBOX",
        inbox.len()
    );
    let mut total = 0;
    for folder in store.folders(&friend).await? {
        for meta in store.messages(&friend, &folder.name).await? {
            total += meta.size;
        }
    }
    let used = mailbox_of(ctx, &friend).await?.used_bytes;
    ensure!(used == total, "used_bytes {used}, folders hold {total}");
    Ok(())
}

/// A mobile number of this run's own (E.164, Italian mobile form).
fn test_mobile() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("+39333{:07}", nanos % 10_000_000)
}

/// SMS notification of new PEC on the emulators (issue #18): the CLI turns it on (refused on a
/// plan without it), a PEC to the mailbox is one SMS in LocalStack's SMS log with sender and
/// subject, and three more within the digest window are one digest SMS when it ends; nothing
/// for the sender's receipts, nothing twice.
async fn sms_notifications_end_to_end(ctx: Arc<Ctx>) -> Result<()> {
    let mut gw = gateway(&ctx, "sms", &[]).await?;
    let result = sms_scene(&ctx, &gw).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

async fn sms_scene(ctx: &Ctx, gw: &Gateway) -> Result<()> {
    let port = ctx.stack.localstack.port;
    let sender = ctx.address("sms-from");
    let reader = ctx.address("sms-to");
    ctx.create_mailbox(&sender, None).await?;
    ctx.create_mailbox(&reader, None).await?;
    let mobile = test_mobile();
    let national = format!("{} {}", &mobile[3..6], &mobile[6..]);
    // Standard does not include SMS notification: refused, naming the plans that do.
    let refused = ctx
        .pec(&["mailbox", "sms", &reader, "--number", &national], None)
        .await;
    let err = format!(
        "{:#}",
        refused
            .err()
            .context("SMS turned on for a Standard mailbox")?
    );
    ensure!(err.contains("SMS notification"), "{err}");
    ctx.pec(&["mailbox", "plan", &reader, "gold"], None).await?;
    let on = ctx
        .pec(&["mailbox", "sms", &reader, "--number", &national], None)
        .await?;
    ensure!(on.contains(&mobile), "{on}");

    submit(
        gw,
        &sender,
        &[&reader],
        &message(&sender, &[&reader], &[], "Primo avviso", "Uno.")?,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let sms = pec_integration::sms_sent_to(port, &mobile)?;
        if !sms.is_empty() {
            break sms;
        }
        ensure!(
            Instant::now() < deadline,
            "no SMS 60 s after a PEC was sent"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let opened = Instant::now();
    // The text is pec_core::sms's (its tests pin it; long addresses are cut there).
    ensure!(
        first == vec![pec_core::sms::new_pec(&reader, &sender, "Primo avviso")],
        "{first:?}"
    );
    // Three more right away: they wait for the window's end, then one digest.
    for subject in ["Secondo", "Terzo", "Quarto"] {
        submit(
            gw,
            &sender,
            &[&reader],
            &message(&sender, &[&reader], &[], subject, "Altro.")?,
        )
        .await?;
    }
    wait_for_items(ctx, &[(&reader, 4)], Duration::from_secs(60)).await?;
    let window = Duration::from_secs(pec_integration::SMS_DIGEST_SECONDS);
    ensure!(
        opened.elapsed() < window,
        "the three messages took longer than the {window:?} digest window to arrive: the digest cannot be checked"
    );
    let sms = pec_integration::sms_sent_to(port, &mobile)?;
    ensure!(sms.len() == 1, "SMS before the window ended: {sms:?}");
    let deadline = opened + window + Duration::from_secs(30);
    let sms = loop {
        let sms = pec_integration::sms_sent_to(port, &mobile)?;
        if sms.len() > 1 {
            break sms;
        }
        ensure!(
            Instant::now() < deadline,
            "no digest 30 s after the window ended"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(
        sms[1].starts_with("3 nuovi messaggi per sms-to-")
            && sms[1].contains(" L'ultimo da sms-from-"),
        "{sms:?}"
    );
    // Nothing more: the other flushes found the window over, receipts are not notified.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sms = pec_integration::sms_sent_to(port, &mobile)?;
    ensure!(sms.len() == 2, "{sms:?}");
    // Off: no SMS for the next one.
    ctx.pec(&["mailbox", "sms", &reader, "--off"], None).await?;
    Ok(())
}

/// Password protection (issue #18): `pec mailbox create` refuses a password of the breach data
/// (the local stack's `infra/local/pwned-sample.txt`, through PEC_BREACH_URL as in AWS) for a
/// plan that includes the check and records the finding (band only); the month's report
/// reaches the mailbox as a PEC from security@<provider domain> (accepted, its envelope signed
/// by the signing function, delivered, the delivery receipt back to the service mailbox); a
/// second run sends nothing; a preview of the current month goes out under its own id.
async fn password_protection_end_to_end(ctx: Arc<Ctx>) -> Result<()> {
    let mut gw = gateway(&ctx, "password", &[]).await?;
    let result = password_scene(&ctx).await;
    let result = result.and_then(|()| stop_cleanly(&mut gw.runner));
    with_log(result, &gw.runner)
}

/// The line of `pec mailbox password-report ARGS` for `address`.
async fn report_line(ctx: &Ctx, args: &[&str], address: &str) -> Result<serde_json::Value> {
    let mut all = vec!["mailbox", "password-report"];
    all.extend_from_slice(args);
    let out = ctx.pec(&all, None).await?;
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["mailbox"] == address)
        .with_context(|| format!("no report line for {address}: {out}"))
}

async fn password_scene(ctx: &Ctx) -> Result<()> {
    use pec_core::breach::{Band, Setting};
    let address = ctx.address("pw");
    let create = |password: &'static str| {
        let address = address.clone();
        async move {
            ctx.pec(
                &[
                    "mailbox",
                    "create",
                    &address,
                    "--tenant",
                    &ctx.tenant,
                    "--plan",
                    "gold",
                    "--password-stdin",
                    "--fast-hash",
                ],
                Some(&format!("{password}\n")),
            )
            .await
        }
    };
    let refused = format!(
        "{:#}",
        create("Password2024!")
            .await
            .err()
            .context("a breached password was accepted")?
    );
    ensure!(refused.contains("known data breaches"), "{refused}");
    ensure!(
        ctx.state.mailbox(&address).await?.is_none(),
        "a mailbox was created with a breached password"
    );
    create(pec_integration::MAILBOX_PASSWORD).await?;
    let now = chrono::Utc::now();
    let found = ctx
        .state
        .password_findings(
            now - chrono::Duration::hours(1),
            now + chrono::Duration::minutes(1),
        )
        .await?;
    let mine: Vec<_> = found.iter().filter(|f| f.mailbox == address).collect();
    ensure!(
        mine.len() == 1
            && mine[0].setting == Setting::OperatorCreate
            && mine[0].band == Band::Common
            && mine[0].tenant == ctx.tenant,
        "the refusal's finding: {mine:?}"
    );

    // Last month's report, with a finding of last month (written straight into the store: the
    // month has passed).
    let last = pec_pipeline::pwreport::month_before(now);
    let (start, _) = pec_pipeline::pwreport::month_bounds(&last).context("a month")?;
    ctx.state
        .record_password_finding(&pec_ports::breach::PasswordFinding {
            mailbox: address.clone(),
            tenant: ctx.tenant.clone(),
            at: start + chrono::Duration::days(2),
            setting: Setting::Activation,
            band: Band::Many,
        })
        .await?;
    let line = report_line(ctx, &["--month", &last], &address).await?;
    ensure!(
        line["outcome"] == "submitted" && line["findings"] == 1,
        "{line}"
    );
    wait_for_items(ctx, &[(&address, 1)], Duration::from_secs(90)).await?;
    let held = items(ctx, &address).await?;
    let report = held
        .iter()
        .find(|i| i.subject.contains("Protezione password: rapporto di"))
        .with_context(|| format!("no report among {held:?}"))?;
    ensure!(report.kind == "posta-certificata", "{report:?}");
    let sender = format!("security@{}", ctx.domain);
    // The original inside the envelope (postacert.eml) is the report's text.
    let raw = ctx
        .pec(&["mailbox", "show", &address, &report.id, "--raw"], None)
        .await?;
    let envelope = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .context("the envelope does not parse")?;
    let original = envelope
        .parts
        .iter()
        .find_map(|p| match &p.body {
            mail_parser::PartType::Message(m) => Some(m),
            _ => None,
        })
        .context("no original message in the envelope")?;
    let from = original
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .unwrap_or_default();
    ensure!(
        from == sender,
        "the report comes from {from:?}, not {sender}"
    );
    let text = original.body_text(0).context("the report has no text")?;
    ensure!(
        text.contains("è stata rifiutata 1 password")
            && text.contains("presente tra 10 e 999 volte")
            && text.contains("Cosa fare"),
        "the report's text: {text}"
    );
    // The delivery receipt comes back to the service mailbox: proof it was delivered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let receipts = items(ctx, &sender).await?;
        if receipts
            .iter()
            .any(|i| i.kind == "avvenuta-consegna" && i.subject.contains(&address))
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no delivery receipt of the report in {sender}: {receipts:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let again = report_line(ctx, &["--month", &last], &address).await?;
    ensure!(again["outcome"] == "already", "{again}");
    ensure!(
        items(ctx, &address).await?.len() == 1,
        "a second report was delivered"
    );

    // The current month so far: a preview, under its own id (today's refusal in it).
    let preview = report_line(ctx, &["--preview"], &address).await?;
    ensure!(
        preview["outcome"] == "submitted"
            && preview["findings"] == 1
            && preview["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("pwp-")),
        "{preview}"
    );
    wait_for_items(ctx, &[(&address, 2)], Duration::from_secs(90)).await?;
    Ok(())
}

/// Issue #20 item 5 on the emulators: the evidence bucket holds the signed `test` database v2;
/// `pec antivirus update` (the updater function's code, its AWS calls recorded as
/// ClamavUpdateFunction's for the IAM check) runs Debian's freshclam against a loopback mirror
/// serving v6 and its signed patches: `test.cld` v6 is uploaded, `test.cvd` deleted, the state
/// and the marker written; a second run finds nothing newer; `pec antivirus status` reads the
/// marker. The objects are removed afterwards (the bucket is shared with the other checks).
async fn clamav_definitions_update(ctx: Arc<Ctx>) -> Result<()> {
    use pec_pipeline::definitions::{
        DEFAULT_CLAMAV_DEFINITIONS_PREFIX as PREFIX, DEFAULT_MARKER_KEY, DEFAULT_STATE_KEY,
    };
    let Some(dbs) = pec_testkit::clamav::test_databases() else {
        return Ok(());
    };
    let read = |name: &str| std::fs::read(dbs.join(name)).with_context(|| name.to_string());
    let bucket = ctx.stack.output("EvidenceBucketName")?.to_string();
    let put = |key: String, body: Vec<u8>| {
        let bucket = bucket.clone();
        let ctx = ctx.clone();
        async move {
            ctx.aws
                .s3
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .body(body.into())
                .send()
                .await
                .with_context(|| format!("PutObject {key}"))
        }
    };
    let cvd = format!("{PREFIX}test.cvd");
    let cld = format!("{PREFIX}test.cld");
    let ours = [
        cvd.clone(),
        cld.clone(),
        DEFAULT_MARKER_KEY.to_string(),
        DEFAULT_STATE_KEY.to_string(),
    ];
    // Before (what an interrupted earlier run may have left) and after.
    let clean = || async {
        for key in &ours {
            let _ = ctx
                .aws
                .s3
                .delete_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await;
        }
    };
    clean().await;
    put(cvd.clone(), read("test-2.cvd")?).await?;
    let mut files = BTreeMap::from([("test.cvd".to_string(), read("test-6.cvd")?)]);
    for n in 2..=6 {
        files.insert(format!("test-{n}.cdiff"), read(&format!("test-{n}.cdiff"))?);
    }
    let mirror = pec_testkit::clamav::Mirror::start(files).await?;
    let work = ctx.log_dir.join("freshclam");
    let url = mirror.url();
    let work_arg = work.display().to_string();
    let update = [
        "antivirus",
        "update",
        "--mirror",
        &url,
        "--no-dns",
        "--database",
        "test",
        "--work-dir",
        &work_arg,
    ];
    let result = async {
        let first: serde_json::Value = serde_json::from_str(&ctx.pec(&update, None).await?)?;
        ensure!(first["status"] == "updated", "{first}");
        ensure!(
            first["uploaded"] == serde_json::json!(["test.cld"]),
            "{first}"
        );
        ensure!(
            first["deleted"] == serde_json::json!(["test.cvd"]),
            "{first}"
        );
        let header =
            pec_scan::definitions::CvdHeader::parse(&get_object(&ctx, &bucket, &cld).await?)?;
        ensure!(header.version == 6 && header.signatures == 14, "{header:?}");
        ensure!(
            !object_exists(&ctx, &bucket, &cvd).await?,
            "test.cvd is superseded"
        );
        ensure!(
            object_exists(&ctx, &bucket, DEFAULT_STATE_KEY).await?,
            "freshclam.dat kept"
        );
        let marker: pec_scan::definitions::Marker =
            serde_json::from_slice(&get_object(&ctx, &bucket, DEFAULT_MARKER_KEY).await?)?;
        ensure!(marker.databases["test"].version == 6, "{marker:?}");
        ensure!(marker.files.contains_key("test.cld"), "{marker:?}");

        let again: serde_json::Value = serde_json::from_str(&ctx.pec(&update, None).await?)?;
        ensure!(again["status"] == "up-to-date", "{again}");
        ensure!(again["uploaded"] == serde_json::json!([]), "{again}");

        let status: serde_json::Value =
            serde_json::from_str(&ctx.pec(&["antivirus", "status"], None).await?)?;
        ensure!(status["databases"]["test"]["version"] == 6, "{status}");
        ensure!(
            status["age_seconds"].as_i64().is_some_and(|a| a > 86_400),
            "built in June 2021: {status}"
        );
        Ok(())
    }
    .await;
    clean().await;
    result
}

const CHECKS: &[(&str, Check<Ctx>)] = checks![
    scenarios_over_smtp,
    bulk_import_and_activation,
    transfer_in_from_dovecot,
    mailbox_access_with_real_clients,
    integration_api,
    api_contract,
    webhooks_end_to_end,
    events_reach_the_event_bus,
    every_message_delivered_three_times,
    chaos_runner_killed_at_random_points,
    quota_refuses_then_frees,
    tenant_admin_over_the_api,
    spam_lockout_end_to_end,
    sms_notifications_end_to_end,
    password_protection_end_to_end,
    clamav_definitions_update,
];

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // Each check runs its own runner(s) on the shared queues: one check at a time, so a
    // check's messages are handled by the runner with its flags (deliver-times, chaos).
    args.test_threads = Some(1);
    let stack = match Stack::ensure() {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("pipeline: cannot use the local stack: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("pipeline: no tokio runtime: {e}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let binaries = match Binaries::build() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("pipeline: {e:#}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let ctx = match runtime.block_on(Provisioned::new(stack, binaries, "pipeline", "pipeline-it")) {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            eprintln!("pipeline: set-up failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("pipeline: runner logs in {}", ctx.log_dir.display());
    let conclusion = run_checks(
        &args,
        ctx.clone(),
        runtime,
        CHECKS,
        1,
        Duration::from_secs(100),
    );
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.finish();
    }
    conclusion.exit_code()
}
