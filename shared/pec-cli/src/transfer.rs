//! `pec mailbox transfer ADDR --from imaps://...`: a member's existing PEC mailbox at another
//! provider copied into ADDR (`pec_pipeline::transfer`), with a progress bar and a report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use pec_aws::{AwsClients, ClientSettings, DynamoMailStore, DynamoState, S3Store};
use pec_pipeline::transfer::{self, Progress, TransferOptions};
use pec_transfer::{ImapServer, ImapSource};

use crate::mailbox::env;

pub struct Args {
    pub address: String,
    pub from: String,
    pub user: Option<String>,
    pub password_stdin: bool,
    pub ca_file: Option<PathBuf>,
    pub folders: Vec<String>,
    pub skip_folders: Vec<String>,
    pub limit: Option<usize>,
    pub json: bool,
}

pub async fn run(state: &DynamoState, args: Args) -> anyhow::Result<ExitCode> {
    let server = ImapServer::parse(&args.from)?;
    let user = match (&args.user, &server.user) {
        (Some(u), _) | (None, Some(u)) => u.clone(),
        (None, None) => bail!(
            "who logs in at {}? give --user (or the user in the URL: imaps://user%40domain@host)",
            server.host
        ),
    };
    let password = if args.password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .read_to_string(&mut p)
            .context("reading the password from standard input")?;
        p.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        std::env::var("PEC_TRANSFER_PASSWORD").map_err(|_| {
            anyhow::anyhow!(
                "give the source mailbox's password on standard input (--password-stdin) or in \
                 PEC_TRANSFER_PASSWORD"
            )
        })?
    };
    if password.is_empty() {
        bail!("the source mailbox's password is empty");
    }
    let mut options = TransferOptions {
        limit: args.limit,
        skip: args.skip_folders.iter().cloned().collect::<BTreeSet<_>>(),
        folders: BTreeMap::new(),
    };
    for m in &args.folders {
        let Some((from, to)) = m.rsplit_once('=') else {
            bail!("--folder {m:?}: write SOURCE=OURS, e.g. --folder 'Archivio 2024=INBOX'");
        };
        options.folders.insert(from.to_owned(), to.to_owned());
    }
    let roots = match &args.ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };

    let aws = AwsClients::load(&ClientSettings::from_env()?).await;
    let store = DynamoMailStore::new(
        aws.dynamodb.clone(),
        &env("PEC_STATE_TABLE")?,
        S3Store::new(aws.s3.clone()),
        &env("PEC_MAILBOX_BUCKET")?,
    );
    let mut source = ImapSource::connect(&server, &user, &password, roots.as_deref()).await?;
    drop(password);

    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "  {bar:40} {pos}/{len} messages  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let result = transfer::transfer(
        state,
        &store,
        &mut source,
        &pec_pipeline::tenants::Admin::Operator,
        &args.address,
        &options,
        &mut |p| match p {
            Progress::Planned { messages, .. } => bar.set_length(messages),
            Progress::Copied { folder, .. } => {
                bar.set_message(folder.to_owned());
                bar.inc(1);
            }
        },
    )
    .await;
    bar.finish_and_clear();
    source.logout().await;
    let report = result?;
    let elapsed = started.elapsed();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} <- {}: {} message(s) copied, {} already there, in {:.1} s{}",
            report.address,
            report.source,
            report.copied(),
            report.already(),
            elapsed.as_secs_f64(),
            if report.complete {
                ""
            } else {
                " (stopped at --limit: run it again for the rest)"
            }
        );
        for f in &report.folders {
            match &f.target {
                Some(t) => println!(
                    "  {:<24} -> {:<6} ({}): {} messages, {} copied ({} octets), {} already{}",
                    f.source,
                    t,
                    f.rule,
                    f.messages,
                    f.copied,
                    f.bytes,
                    f.already,
                    if f.vanished > 0 {
                        format!(", {} gone at the source meanwhile", f.vanished)
                    } else {
                        String::new()
                    }
                ),
                None => println!("  {:<24} not copied ({})", f.source, f.rule),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
