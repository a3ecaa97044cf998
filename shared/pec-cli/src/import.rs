//! `pec mailbox import`: a members table into mailboxes (pec_members reads and checks it,
//! pec_pipeline::tenants::import_members does the rest), with a progress bar and a CSV report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::Utc;
use pec_aws::{AwsClients, ClientSettings, DynamoState, SesTransport};
use pec_core::plan;
use pec_pipeline::tenants::{self, ImportRow, ImportSettings};

use crate::mailbox::env;

pub struct Args {
    pub file: PathBuf,
    pub tenant: String,
    pub domain: String,
    pub pattern: String,
    pub plan: String,
    pub report: Option<PathBuf>,
    pub activation_url: String,
    pub valid_days: u32,
}

/// A one-time token: 32 random bytes, base64url.
pub(crate) fn token() -> String {
    // No randomness is not something to go on without: the links would be guessable.
    pec_ports::activation::random_token().expect("the operating system's random source")
}

fn check_link(activation_url: &str, valid_days: u32) -> anyhow::Result<()> {
    if !(1..=30).contains(&valid_days) {
        bail!("--valid-days: 1 to 30");
    }
    if !activation_url.starts_with("https://") && !activation_url.starts_with("http://127.0.0.1") {
        bail!("--activation-url must be an https:// address (http://127.0.0.1 for local tests)");
    }
    Ok(())
}

/// `pec mailbox resend-activation ADDR`: a new link to the member, the old one retired.
pub async fn resend(
    state: &DynamoState,
    address: &str,
    activation_url: &str,
    valid_days: u32,
) -> anyhow::Result<ExitCode> {
    check_link(activation_url, valid_days)?;
    let settings = ImportSettings {
        domain: String::new(),
        pattern: pec_members::AddressPattern::default(),
        provider_domain: env("PEC_PROVIDER_DOMAIN")?,
        activation_url: activation_url.to_string(),
        activation_valid: chrono::Duration::days(i64::from(valid_days)),
    };
    let aws = AwsClients::load(&ClientSettings::from_env()?).await;
    let mail = SesTransport::new(aws.ses.clone());
    let mut tokens = token;
    let r = tenants::reissue_activation(
        state,
        &mail,
        &tenants::Admin::Operator,
        address,
        &settings,
        Utc::now(),
        &mut tokens,
    )
    .await?;
    println!(
        "{}: a new activation link went to {} (valid until {}); the previous one no longer works",
        r.address,
        r.email,
        r.expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run(state: &DynamoState, args: Args) -> anyhow::Result<ExitCode> {
    let default_plan = plan::parse_plan(&args.plan)?;
    let pattern: pec_members::AddressPattern = args.pattern.parse()?;
    check_link(&args.activation_url, args.valid_days)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let name = args.file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let table = pec_members::table::read(name, &bytes)
        .with_context(|| format!("{}", args.file.display()))?;
    let (members, refused) = pec_members::members(&table, default_plan)
        .with_context(|| format!("{}", args.file.display()))?;
    let settings = ImportSettings {
        domain: args.domain.clone(),
        pattern,
        provider_domain: env("PEC_PROVIDER_DOMAIN")?,
        activation_url: args.activation_url.clone(),
        activation_valid: chrono::Duration::days(i64::from(args.valid_days)),
    };
    let aws = AwsClients::load(&ClientSettings::from_env()?).await;
    let mail = SesTransport::new(aws.ses.clone());
    let bar = indicatif::ProgressBar::new((members.len() + refused.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "  {bar:40} {pos}/{len} rows  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut tokens = token;
    let report = tenants::import_members(
        state,
        &mail,
        &args.tenant,
        &settings,
        &members,
        &refused,
        Utc::now(),
        &mut tokens,
        &mut |r: &ImportRow| {
            bar.set_message(r.address.clone());
            bar.inc(1);
        },
    )
    .await?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let out = args.report.clone().unwrap_or_else(|| {
        let mut p = args.file.clone().into_os_string();
        p.push(".report.csv");
        PathBuf::from(p)
    });
    let mut w = csv::Writer::from_path(&out)
        .with_context(|| format!("cannot write the report {}", out.display()))?;
    w.write_record(["row", "fiscal_code", "address", "outcome", "reason"])?;
    for r in &report {
        w.write_record([
            r.row.to_string(),
            r.fiscal_code.clone(),
            r.address.clone(),
            r.outcome.to_string(),
            r.reason.clone(),
        ])?;
    }
    w.flush()?;
    let count = |o: &str| report.iter().filter(|r| r.outcome == o).count();
    println!(
        "{}: {} rows in {:.1} s: {} created, {} completed, {} existing, {} refused; report {}",
        args.file.display(),
        report.len(),
        elapsed.as_secs_f64(),
        count("created"),
        count("completed"),
        count("existing"),
        count("refused"),
        out.display()
    );
    for r in report.iter().filter(|r| r.outcome == "refused") {
        eprintln!("  row {}: {}", r.row, r.reason);
    }
    Ok(if count("refused") > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
