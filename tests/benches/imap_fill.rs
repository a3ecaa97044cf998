//! Fills a mailbox for `benches/imap.sh`: N varied, realistic messages (5–50 KB: plain text,
//! text + HTML, an attachment, PEC transport envelopes with daticert.xml, postacert.eml and a
//! signature) written through `DynamoMailStore::append` into INBOX (the mailbox bucket and the
//! state table, as the edge service reads them), a few appends in parallel; with `--maildir DIR`
//! the same bytes (LF line ends, as Dovecot's own delivery writes them) with the same flags and
//! dates as a Maildir for Dovecot. Messages are a function of `--seed` and their index only.
//!
//!   cargo bench -p pec-integration --bench imap_fill -- --address A --count N
//!       [--concurrency C] [--seed S] [--maildir DIR] [--json FILE]
//!   cargo bench -p pec-integration --bench imap_fill -- --address A --big BYTES [--json FILE]
//!
//! Needs the SDK environment and `PEC_STATE_TABLE`, `PEC_MAILBOX_BUCKET` (`eval "$(infra/local/
//! stack.sh env)"`); the mailbox must exist (`pec mailbox create`). Not a libtest bench: it
//! ignores the `--bench` cargo passes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pec_aws::{AwsClients, ClientSettings, DynamoMailStore, S3Store};
use pec_integration::mailgen::{make_maildir, message, write_maildir};
use pec_ports::mailstore::{MailStore, MailStoreError, Origin};

struct Args {
    address: String,
    count: usize,
    concurrency: usize,
    seed: u64,
    maildir: Option<PathBuf>,
    big: Option<usize>,
    json: Option<PathBuf>,
    dry_run: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        address: String::new(),
        count: 0,
        concurrency: 4,
        seed: 1,
        maildir: None,
        big: None,
        json: None,
        dry_run: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--address" => a.address = value()?,
            "--count" => a.count = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--maildir" => a.maildir = Some(value()?.into()),
            "--big" => a.big = Some(value()?.parse()?),
            "--json" => a.json = Some(value()?.into()),
            "--dry-run" => a.dry_run = true,
            other => bail!("unknown argument {other} (see the comment at the top of imap_fill.rs)"),
        }
    }
    if a.address.is_empty() || (a.count == 0 && a.big.is_none()) || a.concurrency == 0 {
        bail!(
            "usage: --address A (--count N | --big BYTES) [--concurrency C] [--seed S] [--maildir DIR] [--json FILE]"
        );
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    // --dry-run: only generate (and write the Maildir), to look at the messages.
    let store = if args.dry_run {
        None
    } else {
        let table = std::env::var("PEC_STATE_TABLE")
            .context("PEC_STATE_TABLE (eval \"$(infra/local/stack.sh env)\")")?;
        let bucket = std::env::var("PEC_MAILBOX_BUCKET").context("PEC_MAILBOX_BUCKET")?;
        let aws = AwsClients::load(&ClientSettings::from_env()?).await;
        Some(Arc::new(DynamoMailStore::new(
            aws.dynamodb.clone(),
            &table,
            S3Store::new(aws.s3.clone()),
            &bucket,
        )))
    };
    if let Some(dir) = &args.maildir {
        make_maildir(dir)?;
    }
    let count = if args.big.is_some() { 1 } else { args.count };
    let next = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(count) {
        let (store, next, total, retries) =
            (store.clone(), next.clone(), total.clone(), retries.clone());
        let (address, maildir, seed, big) = (
            args.address.clone(),
            args.maildir.clone(),
            args.seed,
            args.big,
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return anyhow::Ok(());
                }
                let m = message(seed, i, big);
                if let Some(dir) = &maildir {
                    write_maildir(dir, i, &m)?;
                }
                let size = m.bytes.len() as u64;
                let mut attempt = 0;
                while let Some(store) = &store {
                    // Parallel appends race for INBOX's uid_next; the store retries a lost race
                    // 20 times, and so does this loop once more on "kept changing".
                    match store
                        .append(
                            &address,
                            "INBOX",
                            m.bytes.clone(),
                            m.flags.clone(),
                            m.date,
                            Origin::Delivered,
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(MailStoreError::Unavailable(e)) if attempt < 20 => {
                            attempt += 1;
                            retries.fetch_add(1, Ordering::Relaxed);
                            if attempt == 20 {
                                eprintln!("imap_fill: message {i}: {e}; last try");
                            }
                            tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
                        }
                        Err(e) => bail!("appending message {i} to {address}: {e}"),
                    }
                }
                total.fetch_add(size, Ordering::SeqCst);
                if (i + 1) % 1000 == 0 {
                    eprintln!(
                        "imap_fill: {} of {count} after {:.0} s",
                        i + 1,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes = total.load(Ordering::SeqCst);
    let retried = retries.load(Ordering::SeqCst);
    println!(
        "filled the INBOX of {}: {count} message(s), {:.1} MB ({:.1} KB average), in {secs:.1} s ({:.1} messages/s, {} appends in parallel; {retried} append(s) retried)",
        args.address,
        bytes as f64 / 1e6,
        bytes as f64 / 1e3 / count as f64,
        count as f64 / secs,
        args.concurrency.min(count),
    );
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::json!({
                "address": args.address, "messages": count, "bytes": bytes, "seconds": secs,
                "concurrency": args.concurrency.min(count), "retried": retried,
            })
            .to_string(),
        )?;
    }
    Ok(())
}
