//! `pec antivirus`: the ClamAV definitions in the deployment's evidence bucket.
//!
//! - `update`: one run of the scheduled definition updater (`pec_pipeline::definitions`, the
//!   `clamav-update` function's code) from this machine, with Debian's freshclam: the first
//!   fill of the bucket before traffic, a private mirror, or the local emulators. Its AWS calls
//!   are recorded as the function's (the IAM check holds them to its role).
//! - `status`: the updater's marker, the databases it lists and their age.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use pec_aws::{AwsClients, ClientSettings, S3Store};
use pec_pipeline::definitions::{
    DEFAULT_CLAMAV_DEFINITIONS_PREFIX, DEFAULT_MARKER_KEY, DEFAULT_STATE_KEY, DefinitionsPlace,
    DefinitionsUpdate,
};
use pec_ports::ObjectStore;
use pec_scan::definitions::Marker;
use pec_scan::freshclam::{Freshclam, OFFICIAL_MIRROR};

#[derive(clap::Args, Debug)]
pub struct AntivirusArgs {
    #[command(subcommand)]
    pub command: AntivirusCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum AntivirusCommand {
    /// Bring the ClamAV databases in the evidence bucket up to date (freshclam: verified
    /// signed updates), then write the marker the scan function reloads from. Prints the run
    /// as JSON; exits 2 when the update failed (the bucket is then unchanged).
    Update {
        /// The freshclam binary.
        #[arg(long, default_value = "/usr/bin/freshclam")]
        freshclam: std::path::PathBuf,
        /// The mirror (default ClamAV's CDN).
        #[arg(long, default_value = OFFICIAL_MIRROR)]
        mirror: String,
        /// Ask the mirror for versions instead of DNS (private mirrors).
        #[arg(long)]
        no_dns: bool,
        /// Only this database (repeatable; default main, daily and bytecode).
        #[arg(long = "database", value_name = "NAME")]
        databases: Vec<String>,
        /// freshclam's working directory (recreated by each run).
        #[arg(long, default_value = "/tmp/pec-freshclam")]
        work_dir: std::path::PathBuf,
        /// The evidence bucket.
        #[arg(long, env = "PEC_EVIDENCE_BUCKET")]
        bucket: String,
    },
    /// Print the updater's marker: each database's version, build time and file, and the age
    /// of the newest one.
    Status {
        /// The evidence bucket.
        #[arg(long, env = "PEC_EVIDENCE_BUCKET")]
        bucket: String,
    },
}

pub fn run(args: AntivirusArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
        .and_then(|rt| rt.block_on(command(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pec: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn command(args: AntivirusArgs) -> anyhow::Result<()> {
    match args.command {
        AntivirusCommand::Update {
            freshclam,
            mirror,
            no_dns,
            databases,
            work_dir,
            bucket,
        } => {
            let mut settings = ClientSettings::from_env()?;
            settings.call_log_stack =
                Some(std::env::var("PEC_STACK_NAME").unwrap_or_else(|_| "pec-local".into()));
            let aws = AwsClients::load(&settings)
                .await
                .for_function("ClamavUpdateFunction");
            let update = DefinitionsUpdate {
                store: S3Store::new(aws.s3.clone()),
                updater: Freshclam {
                    binary: freshclam,
                    work_dir,
                    mirror,
                    dns: !no_dns,
                    databases,
                    ca_bundle: None,
                    timeout: Duration::from_secs(900),
                },
                metrics: pec_pipeline::definitions::RecordedDefinitions::default(),
                place: DefinitionsPlace {
                    bucket,
                    prefix: DEFAULT_CLAMAV_DEFINITIONS_PREFIX.into(),
                    marker_key: DEFAULT_MARKER_KEY.into(),
                    state_key: DEFAULT_STATE_KEY.into(),
                },
            };
            let report = update.run(Utc::now()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        AntivirusCommand::Status { bucket } => {
            let aws = AwsClients::load(&ClientSettings::from_env()?).await;
            let store = S3Store::new(aws.s3.clone());
            let Some(bytes) = store.get(&bucket, DEFAULT_MARKER_KEY).await? else {
                bail!(
                    "no marker at s3://{bucket}/{DEFAULT_MARKER_KEY}: the definition updater has not run (pec antivirus update)"
                );
            };
            let marker: Marker = serde_json::from_slice(&bytes)
                .with_context(|| format!("s3://{bucket}/{DEFAULT_MARKER_KEY}"))?;
            let age = marker.age_seconds(Utc::now().timestamp());
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "checked_at": marker.checked_at,
                    "age_seconds": age,
                    "databases": marker.databases,
                    "files": marker.files,
                }))?
            );
            Ok(())
        }
    }
}
