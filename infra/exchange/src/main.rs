//! `pec-exchange`: carries mail between the local providers (see the crate doc in lib.rs).
//!
//!   pec-exchange [--stack pec-local --stack pec-b] [--until-idle SECONDS] [--rewrite-ids]
//!   pec-exchange inject --from someone@ordinaria.test --to anna@pec.altro.test --eml FILE
//!
//! Stacks come from the state directory (`--state-dir`, else `PEC_STACK_STATE_DIR`, else
//! `PEC_STATE_DIR`, else `.local/stack`): every `<stack>.resources.json` there unless `--stack`
//! names some. The SDK environment is the usual one (`eval "$(infra/local/stack.sh env)"`); when
//! `AWS_ENDPOINT_URL` is not set it is read from the state directory's `stack.env`.
//!
//! Output: one line per arrival on standard output,
//!   `delivered <ses message id> <stack|outbox> <location> <recipient,...>`
//!   `injected <stack> <location> <recipient,...>`
//! (a trailing `# note` when nothing new was written); diagnostics on standard error.
//! Exit status: 0 done, 1 failed (or stopped while failing), 2 bad arguments or input.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::{Parser, Subcommand};
use pec_aws::{AwsClients, ClientSettings, DynamoState, S3Store};
use pec_exchange::exchange::{Delivery, Outcome};
use pec_exchange::headers::to_crlf;
use pec_exchange::localstack::{self, Endpoint};
use pec_exchange::routing::{self, Destination, Provider, Routes};
use pec_exchange::{Exchange, Options};
use pec_ports::StateStore;

#[derive(Parser, Debug)]
#[command(
    name = "pec-exchange",
    about = "Carry mail between the local PEC providers: what their SES sent lands in the recipient provider's raw bucket (inbound/) as SES receiving writes it, or in an outbox folder for other domains"
)]
struct Cli {
    /// The stacks' state directory (the bootstrap's <stack>.resources.json files).
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// A local provider's stack (repeatable); default: every stack bootstrapped in the state
    /// directory.
    #[arg(long = "stack", global = true, value_name = "NAME")]
    stacks: Vec<String>,
    /// The exchange's own state (seen/, outbox/); default <state dir>/exchange.
    #[arg(long, global = true, value_name = "DIR")]
    exchange_dir: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Exit once nothing has been delivered for this many seconds (tests, demos); default: run
    /// until interrupted (SIGINT/SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    until_idle: Option<u64>,
    /// Do what real SES does on send and LocalStack does not: replace Message-ID with
    /// <ses-id@region.amazonses.com> and Date with the send time (top-level headers only).
    #[arg(long)]
    rewrite_ids: bool,
    /// Leave delivered messages in LocalStack's store (default: DELETE /_aws/ses?id=...).
    #[arg(long)]
    keep_sent: bool,
    /// Milliseconds between two reads of the store.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    poll_ms: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inject ordinary mail (a non-PEC sender, or a fixture) as if SES receiving had got it:
    /// inbound/<id>.eml + .json in the raw bucket of each recipient's provider.
    Inject {
        /// The envelope sender (Return-Path).
        #[arg(long, value_name = "ADDRESS")]
        from: String,
        /// A recipient (repeatable); each must be in a local provider's domain.
        #[arg(long = "to", value_name = "ADDRESS", required = true)]
        to: Vec<String>,
        /// The message (RFC 5322 bytes, used as they are; the file is only read).
        #[arg(long, value_name = "FILE")]
        eml: PathBuf,
        /// The object name (`inbound/<id>.eml`), [A-Za-z0-9-]; with it, injecting again writes
        /// nothing. Default: arrival time + a hash.
        #[arg(long)]
        id: Option<String>,
        /// Turn bare LF line ends into CRLF first, as SMTP transport would (files stored with
        /// LF, like some fixtures).
        #[arg(long)]
        crlf: bool,
    },
}

/// A failure of the input (exit 2) rather than of the exchange (exit 1).
#[derive(Debug)]
struct BadInput(String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn state_dir(cli: &Cli) -> PathBuf {
    cli.state_dir
        .clone()
        .or_else(|| std::env::var_os("PEC_STACK_STATE_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("PEC_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".local/stack"))
}

/// `export K=V` lines of `stack.env`, for a shell that did not eval them. Call before any
/// thread exists.
fn load_stack_env(state_dir: &Path) {
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        return;
    }
    let Ok(text) = std::fs::read_to_string(state_dir.join("stack.env")) else {
        return;
    };
    for line in text.lines() {
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            let v = v.trim_matches('\'');
            if std::env::var_os(k).is_none() {
                // SAFETY: called from main before the runtime (or any other thread) starts.
                unsafe { std::env::set_var(k, v) };
            }
        }
    }
}

fn routes(cli: &Cli, state_dir: &Path) -> Result<Routes> {
    let stacks = if cli.stacks.is_empty() {
        routing::stacks_in(state_dir)?
    } else {
        cli.stacks.clone()
    };
    if stacks.is_empty() {
        bail!(
            "no bootstrapped stack in {} (infra/local/stack.sh bootstrap, infra/local/providers.sh)",
            state_dir.display()
        );
    }
    let providers = stacks
        .iter()
        .map(|s| Provider::load(state_dir, s))
        .collect::<Result<Vec<_>>>()?;
    Routes::new(providers)
}

fn print_delivery(prefix: &str, d: &Delivery) {
    let target = match &d.destination {
        Destination::Provider { stack, .. } => stack.as_str(),
        Destination::Ordinary { .. } => "outbox",
    };
    let location = if d.location.is_empty() {
        "-"
    } else {
        &d.location
    };
    let note = d
        .note
        .as_ref()
        .map(|n| format!(" # {n}"))
        .unwrap_or_default();
    println!(
        "{prefix} {target} {location} {}{note}",
        d.destination.recipients().join(",")
    );
}

/// One read of the store: delivers what is new; returns how many messages were delivered and
/// the failures (retried on the next read).
async fn poll_once(
    ex: &Exchange<S3Store>,
    endpoint: &Endpoint,
    run: &RunArgs,
    reported: &mut HashSet<String>,
) -> Result<(usize, Vec<String>)> {
    let timeout = Duration::from_secs(30);
    let entries = localstack::sent_mail(endpoint, timeout).await?;
    let mut delivered = 0;
    let mut failures = Vec::new();
    for entry in entries {
        let mail = match entry {
            Ok(mail) => mail,
            Err(unusable) => {
                let id = unusable.id.clone().unwrap_or_else(|| "(no id)".into());
                if reported.insert(format!("unusable {id}")) {
                    eprintln!("pec-exchange: left in the store: {id}: {}", unusable.reason);
                }
                continue;
            }
        };
        let consume = match ex.deliver(&mail, Utc::now()).await {
            Ok(Outcome::NotOurs) => {
                if reported.insert(format!("not ours {}", mail.id)) {
                    eprintln!(
                        "pec-exchange: left in the store: {} from {:?} (not a provider routed here)",
                        mail.id, mail.source
                    );
                }
                false
            }
            Ok(Outcome::AlreadyDone) => true,
            Ok(Outcome::Delivered(report)) => {
                delivered += 1;
                if report.recipients_from_headers {
                    eprintln!(
                        "pec-exchange: {}: LocalStack did not record the envelope (start it with infra/local/stack.sh, which installs the hook): recipients read from To/Cc/Bcc",
                        mail.id
                    );
                }
                if !report.unusable.is_empty() {
                    eprintln!(
                        "pec-exchange: {}: not addresses, not delivered: {}",
                        mail.id,
                        report.unusable.join(", ")
                    );
                }
                if report.deliveries.is_empty() {
                    eprintln!("pec-exchange: {}: no recipient to deliver to", mail.id);
                }
                for d in &report.deliveries {
                    print_delivery(&format!("delivered {}", mail.id), d);
                }
                true
            }
            Err(e) => {
                let text = format!("{}: {e:#}", mail.id);
                eprintln!("pec-exchange: {text} (retried on the next read)");
                failures.push(text);
                false
            }
        };
        if consume
            && !run.keep_sent
            && let Err(e) = localstack::consume(endpoint, &mail.id, timeout).await
        {
            eprintln!(
                "pec-exchange: cannot remove {} from the store: {e:#}",
                mail.id
            );
        }
    }
    Ok((delivered, failures))
}

/// The providers' routes plus the verified domains of their tenants (each stack's state table,
/// read now: what the tenants' MX records would say). A stack whose table cannot be read, or a
/// domain that cannot be routed, is reported and left out: the rest still routes.
async fn with_tenant_domains(base: &Routes, aws: &AwsClients) -> Routes {
    let mut domains = Vec::new();
    for p in base.providers() {
        let Some(table) = &p.state_table else {
            continue;
        };
        let state = DynamoState::new(aws.dynamodb.clone(), table, "");
        match state.domains().await {
            Ok(all) => domains.extend(
                all.into_iter()
                    .filter(|d| d.is_verified())
                    .map(|d| (d.domain, p.stack.clone())),
            ),
            Err(e) => eprintln!("pec-exchange: {}: tenants' domains not read: {e}", p.stack),
        }
    }
    let (routes, skipped) = base.clone().with_tenant_domains(&domains);
    for s in skipped {
        eprintln!("pec-exchange: not routed: {s}");
    }
    routes
}

/// How often the exchange re-reads the tenants' domains while it runs.
const ROUTES_REFRESH: Duration = Duration::from_secs(2);

async fn run_exchange(
    mut ex: Exchange<S3Store>,
    run: &RunArgs,
    base: &Routes,
    aws: &AwsClients,
) -> Result<()> {
    let endpoint = Endpoint::from_env()?;
    let routes: Vec<String> = ex
        .routes()
        .providers()
        .map(|p| format!("{} -> {} (s3://{})", p.domain, p.stack, p.raw_bucket))
        .collect();
    eprintln!(
        "pec-exchange: reading http://{}:{}/_aws/ses; {}; other domains -> outbox",
        endpoint.host,
        endpoint.port,
        routes.join(", ")
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut reported = HashSet::new();
    let mut last_activity = Instant::now();
    let mut failing: Option<String>;
    // Read at start-up (run_cli): the first refresh is due one period later.
    let mut last_routes = Instant::now();
    loop {
        // The tenants' domains change rarely: re-read them every few seconds, not every poll.
        if last_routes.elapsed() >= ROUTES_REFRESH {
            let routes = with_tenant_domains(base, aws).await;
            for (domain, stack) in routes.domains() {
                if ex.routes().provider(domain).is_none() {
                    eprintln!("pec-exchange: {domain} -> {stack} (a tenant's domain)");
                }
            }
            ex.set_routes(routes);
            last_routes = Instant::now();
        }
        match poll_once(&ex, &endpoint, run, &mut reported).await {
            Ok((delivered, failures)) => {
                if delivered > 0 {
                    last_activity = Instant::now();
                }
                failing = failures.into_iter().next_back();
            }
            Err(e) => {
                eprintln!("pec-exchange: {e:#}");
                failing = Some(format!("{e:#}"));
            }
        }
        if let Some(idle) = run.until_idle
            && last_activity.elapsed() >= Duration::from_secs(idle)
        {
            eprintln!("pec-exchange: nothing to deliver for {idle} s; stopping");
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(run.poll_ms.max(10))) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    match failing {
        Some(e) => bail!("stopped while failing: {e}"),
        None => Ok(()),
    }
}

async fn inject(
    ex: Exchange<S3Store>,
    from: &str,
    to: &[String],
    eml: &Path,
    id: Option<&str>,
    crlf: bool,
) -> Result<()> {
    let raw = std::fs::read(eml)
        .with_context(|| format!("reading {}", eml.display()))
        .map_err(|e| BadInput(format!("{e:#}")))?;
    let raw = if crlf { to_crlf(&raw) } else { raw };
    // Checked before any write: a bad --from/--to/--id is the caller's mistake.
    let deliveries = match ex.inject(from, to, &raw, id, Utc::now()).await {
        Ok(d) => d,
        Err(e) if e.downcast_ref::<pec_ports::StoreError>().is_some() => return Err(e),
        Err(e) => return Err(BadInput(format!("{e:#}")).into()),
    };
    for d in &deliveries {
        print_delivery("injected", d);
    }
    Ok(())
}

async fn run_cli(cli: Cli, state_dir: PathBuf) -> Result<()> {
    let run = &cli.run;
    if cli.command.is_some()
        && (run.until_idle.is_some() || run.rewrite_ids || run.keep_sent || run.poll_ms != 500)
    {
        return Err(BadInput(
            "--until-idle, --rewrite-ids, --keep-sent and --poll-ms are not options of inject"
                .into(),
        )
        .into());
    }
    let base = routes(&cli, &state_dir)?;
    let aws = AwsClients::load(&ClientSettings::from_env()?).await;
    let routes = with_tenant_domains(&base, &aws).await;
    let dir = cli
        .exchange_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("exchange"));
    let ex = Exchange::new(
        S3Store::new(aws.s3.clone()),
        routes,
        dir,
        Options {
            rewrite_ids: cli.run.rewrite_ids,
        },
    );
    match &cli.command {
        None => run_exchange(ex, &cli.run, &base, &aws).await,
        Some(Command::Inject {
            from,
            to,
            eml,
            id,
            crlf,
        }) => inject(ex, from, to, eml, id.as_deref(), *crlf).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let state_dir = state_dir(&cli);
    load_stack_env(&state_dir);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pec-exchange: no async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_cli(cli, state_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pec-exchange: {e:#}");
            if e.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
