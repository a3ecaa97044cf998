//! `pec-runner`: the functions of template.yaml, run in one process on the local emulators.
//!
//! Lambda cannot run here (it needs Docker), so this process plays the part of Lambda's SQS
//! event source mapping: for every function the bootstrap recorded, it long-polls the function's
//! queues, hands each batch to the **same step** the Lambda runs, built by the same
//! `pec_host::wiring` and invoked through the same `Step::invoke` (same `SqsEvent` JSON in, same
//! `SqsBatchResponse` JSON out), deletes what succeeded and makes the failures visible again after
//! `--retry-after` seconds, so SQS counts the receive and moves a poison message to its DLQ after
//! the template's maxReceiveCount. Each function gets its own environment, resolved from the
//! template by `infra/local/bootstrap.py`.
//!
//!   eval "$(infra/local/stack.sh env)"; cargo run -p pec-runner -- [--until-idle 5]
//!
//! A function in the template that this runner does not know is an error, never skipped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use clap::Parser;
use pec_aws::{AwsClients, ClientSettings, queue};
use pec_host::BoxedStep;
use pec_ports::Env;

/// The template's scheduled functions: no queue, the runner's clock triggers them.
/// (The monthly PasswordReportFunction is not swept here: `pec mailbox password-report` runs
/// its code for a month on demand; nor is ClamavUpdateFunction: `pec antivirus update` runs it
/// against a mirror of one's choice.)
const SCHEDULED: [&str; 2] = ["TimersFunction", "SpamSweepFunction"];
#[derive(Parser, Debug)]
#[command(about = "Run the provider's functions locally, polling their SQS queues")]
struct Args {
    /// Where infra/local/stack.sh keeps the stack's state (the bootstrap's resources file).
    #[arg(long, env = "PEC_STACK_STATE_DIR", default_value = ".local/stack")]
    state_dir: PathBuf,
    /// The bootstrap's stack name.
    #[arg(long, default_value = "pec-local")]
    stack_name: String,
    /// Exit once every queue has been empty for this many seconds (demos, tests).
    #[arg(long, value_name = "SECONDS")]
    until_idle: Option<u64>,
    /// Seconds before a failed message is offered again (Lambda: the queue's visibility timeout).
    #[arg(long, default_value_t = 5)]
    retry_after: i32,
    /// Run only these functions (logical ids); default: every function of the template.
    #[arg(long = "only", value_name = "FUNCTION")]
    only: Vec<String>,
    /// Hand every batch to its handler this many times, concurrently (at-least-once delivery:
    /// the duplicate tests); a record fails if any delivery of it failed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=10))]
    deliver_times: u8,
    /// Hide received messages for this many seconds instead of the queue's visibility timeout
    /// (a runner killed mid-batch then gets its messages back sooner: the chaos tests).
    #[arg(long, value_name = "SECONDS")]
    visibility_timeout: Option<i32>,
    /// Run the scheduled sweeps (TimersFunction, SpamSweepFunction) every this many seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    timers_every: u64,
    /// Shift the timers sweep's clock by this many seconds (demos: see the 12 h / 24 h notices
    /// without waiting; Lambda always uses the real clock).
    #[arg(
        long,
        default_value_t = 0,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    clock_offset: i64,
    /// Also run the SMTP submission gateway on 127.0.0.1:PORT (0: any free port; the port is
    /// printed as `pec-runner: smtp 127.0.0.1:<port>`), with a self-signed certificate.
    #[arg(long, value_name = "PORT")]
    smtp_port: Option<u16>,
    /// Also serve IMAP over implicit TLS on 127.0.0.1:PORT (0: any free port; printed as
    /// `pec-runner: imaps 127.0.0.1:<port>`), over the stack's mailboxes.
    #[arg(long, value_name = "PORT")]
    imap_port: Option<u16>,
    /// Also serve POP3 over implicit TLS on 127.0.0.1:PORT (printed as `pec-runner: pop3s
    /// 127.0.0.1:<port>`).
    #[arg(long, value_name = "PORT")]
    pop3_port: Option<u16>,
    /// Also run the MX (mail for the provider's domains, from other providers and the outside
    /// world) on 127.0.0.1:PORT (printed as `pec-runner: smtp mx 127.0.0.1:<port>`), greeting
    /// as `mx.<provider domain>`, with the edge's certificate.
    #[arg(long, value_name = "PORT")]
    mx_port: Option<u16>,
    /// At most this many IMAP sessions at once (default 256, as the edge container without
    /// `PEC_EDGE_IMAP_MAX_SESSIONS`); benches/imap.sh holds 500 idle connections.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    imap_max_sessions: Option<u32>,
    /// Write the edge service's self-signed certificate (PEM) here, for clients to trust.
    #[arg(long, value_name = "FILE")]
    smtp_cert_out: Option<PathBuf>,
    /// Also serve the integration API (the api function's router, `pec_api`) over plain HTTP on
    /// 127.0.0.1:PORT (0: any free port; printed as `pec-runner: api 127.0.0.1:<port>`).
    #[arg(long, value_name = "PORT")]
    api_port: Option<u16>,
    /// Override the API's per-credential rate limit (the template's ApiRequestsPerMinute): the
    /// contract check sends thousands of requests a minute with one key.
    #[arg(long, value_name = "N")]
    api_requests_per_minute: Option<u32>,
}

/// The api function's router over the stack, served on 127.0.0.1 as API Gateway would invoke
/// it, until `stop` turns true. Its clients are the function's own (`ApiFunction`), so its
/// calls are checked against its role by the IAM check.
async fn start_api(
    aws: &AwsClients,
    env: &BTreeMap<String, String>,
    port: u16,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let aws = aws.for_function(pec_api::TEMPLATE_ID);
    let app =
        pec_api::aws::app(&aws, &Env::from_map(env)).context("the api function's environment")?;
    let router = pec_api::with_peer_address(pec_api::router(app));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port} for the API"))?;
    eprintln!("pec-runner: api {}", listener.local_addr()?);
    let mut stop = stop;
    Ok(tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            eprintln!("pec-runner: the API server stopped: {e}");
        }
    }))
}

/// The edge service (SMTP submission and, when asked, IMAP and POP3 over implicit TLS) over the
/// stack's state table, raw and mailbox buckets, as the container runs it in AWS
/// (`pec_edge::serve`), until `stop` turns true. Its clients are the edge's own
/// ([`AwsClients::for_function`] with the template's `EdgeService`), so with `PEC_AWS_CALL_LOG`
/// its calls are recorded for the IAM check against `EdgeTaskRole`, as the functions' are.
async fn start_edge(
    aws: &AwsClients,
    env: &BTreeMap<String, String>,
    args: &Args,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut settings = pec_edge::Settings::from_env(&Env::from_map(env))?;
    if let Some(n) = args.imap_max_sessions {
        settings.imap_max_sessions = n as usize;
    }
    let tls = pec_submit::dev_tls::localhost().context("edge certificate")?;
    if let Some(path) = &args.smtp_cert_out {
        std::fs::write(path, &tls.cert_pem)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    async fn bind(port: Option<u16>, what: &str) -> Result<Option<tokio::net::TcpListener>> {
        let Some(port) = port else { return Ok(None) };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port} for {what}"))?;
        eprintln!("pec-runner: {what} {}", listener.local_addr()?);
        Ok(Some(listener))
    }
    let listeners = pec_edge::Listeners {
        submission: bind(args.smtp_port, "smtp").await?,
        imaps: bind(args.imap_port, "imaps").await?,
        imap: None,
        pop3s: bind(args.pop3_port, "pop3s").await?,
        pop3: None,
        mx: bind(args.mx_port, "smtp mx").await?,
    };
    let aws = aws.for_function(pec_edge::TEMPLATE_ID);
    // The relay worker when the stack relays over SMTP (`env` then names the relay queue), with
    // this process's PEC_RELAY_* (local routes and trust anchors instead of DNS and the Mozilla
    // roots), as the container would get them from its task definition.
    let relay_env = Env::from_map(env).overlay(Env::from_fn(|name| {
        name.starts_with("PEC_RELAY_")
            .then(|| std::env::var(name).ok())
            .flatten()
            .filter(|_| name != "PEC_RELAY_QUEUE_URL")
    }));
    let relay = pec_edge::relay::RelayWorker::from_env(&aws, &relay_env, &settings)
        .context("the edge's relay worker")?;
    if relay.is_some() {
        eprintln!("pec-runner: relay worker <- {}", env["PEC_RELAY_QUEUE_URL"]);
    }
    let mut stop = stop;
    Ok(tokio::spawn(async move {
        let relay = relay.map(|r| tokio::spawn(r.run(stop.clone())));
        pec_edge::serve(&aws, &settings, tls.server_config, listeners, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
        if let Some(r) = relay {
            let _ = r.await;
        }
    }))
}

/// Builds the step of a template function from its environment, exactly as its Lambda `main`
/// does ([`pec_host::wiring::by_function`]: every function crate is registered there). The
/// scan function's clamd socket and spam engine come from this process (infra/local/clamd.sh,
/// infra/local/rspamd.sh) when it names them, `PEC_SMS_DIGEST_SECONDS` when set (tests and
/// the demo shorten the SMS digest window) and, for deliver, `PEC_RELAY` (`smtp`: it hands what goes
/// outside to the edge's relay worker, [`start_edge`]); the rest from the function's template
/// environment.
async fn step_for(
    function: &str,
    aws: &AwsClients,
    env: &BTreeMap<String, String>,
) -> Result<BoxedStep> {
    // Locally clamd is infra/local/clamd.sh's: the runner never launches the Lambda layer's.
    let env = Env::from_map(env)
        .overlay(Env::from_fn(|name| {
            // PEC_RELAY: the deliver step's outbound relay (SES, or the relay queue to the
            // edge's SMTP relay worker: the two-provider demo over SMTP).
            (matches!(
                name,
                "PEC_CLAMD_SOCKET" | "PEC_SPAM_URL" | "PEC_SMS_DIGEST_SECONDS"
            ) || (name == "PEC_RELAY" && function == "DeliverFunction"))
                .then(|| std::env::var(name).ok())
                .flatten()
        }))
        .without("PEC_CLAMD_BINARY")
        // The layer's freshclam is /opt/bin/freshclam; here Debian's (clamav-freshclam). The
        // runner never schedules the updater (no mirror here): `pec antivirus update` runs it.
        .overlay(Env::from_fn(|name| {
            (name == "PEC_FRESHCLAM_BINARY")
                .then(|| std::env::var(name).unwrap_or_else(|_| "/usr/bin/freshclam".to_string()))
        }));
    pec_host::wiring::by_function(function, aws.clone(), env)
        .await
        .with_context(|| format!("starting {function}"))
}

/// One SQS batch through a step, as Lambda invokes it: the ids of the records that failed (all
/// of them when the invocation itself fails).
async fn invoke_batch(step: BoxedStep, event: SqsEvent) -> Vec<String> {
    let all = || {
        event
            .records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect()
    };
    let payload = match serde_json::to_value(&event) {
        Ok(payload) => payload,
        Err(_) => return all(),
    };
    match step.invoke(payload, Utc::now()).await {
        Ok(response) => match serde_json::from_value::<SqsBatchResponse>(response) {
            Ok(r) => r
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(error) => {
                tracing::error!(step = step.name(), error = %error, "not a batch response: every record fails");
                all()
            }
        },
        Err(error) => {
            tracing::error!(step = step.name(), error = %error, "invocation failed: every record fails");
            all()
        }
    }
}

/// When any poller last handled a batch, for `--until-idle`.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    /// Batches being handled right now: never idle while one is in flight, however long.
    in_flight: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }

    fn end(&self) {
        self.touch();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::SeqCst)))
    }
}

/// One function reading one of its queues, as Lambda's event source mapping would.
struct Poller {
    function: String,
    queue_url: String,
    batch_size: i32,
    retry_after: i32,
    deliver_times: u8,
    visibility_timeout: Option<i32>,
    step: BoxedStep,
    sqs: aws_sdk_sqs::Client,
    activity: Arc<Activity>,
    stop: Arc<AtomicBool>,
}

impl Poller {
    /// Polls until `stop` is set. A receive in flight is always finished and its batch handled
    /// and settled: abandoning a long poll could let SQS hand a message to a reader that is
    /// gone, hiding it for a whole visibility timeout.
    async fn run(self) {
        while !self.stop.load(Ordering::SeqCst) {
            let batch = self.batch_size.clamp(1, 10);
            let event = match queue::receive_event_hidden_for(
                &self.sqs,
                &self.queue_url,
                batch,
                1,
                self.visibility_timeout,
            )
            .await
            {
                Ok(event) => event,
                Err(error) => {
                    tracing::error!(function = %self.function, error = %error, "cannot poll; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if event.records.is_empty() {
                continue;
            }
            self.activity.begin();
            let deliveries: Vec<_> = (0..self.deliver_times)
                .map(|_| tokio::spawn(invoke_batch(self.step.clone(), event.clone())))
                .collect();
            let mut failed: Vec<String> = Vec::new();
            for delivery in deliveries {
                let ids: Vec<String> = match delivery.await {
                    Ok(ids) => ids,
                    // A panicking handler fails the whole batch (Lambda: the invocation fails).
                    Err(_) => event
                        .records
                        .iter()
                        .filter_map(|r| r.message_id.clone())
                        .collect(),
                };
                for id in ids {
                    if !failed.contains(&id) {
                        failed.push(id);
                    }
                }
            }
            tracing::info!(function = %self.function, received = event.records.len(), failed = failed.len(), "batch handled");
            if let Err(error) = queue::settle(
                &self.sqs,
                &self.queue_url,
                &event,
                &failed,
                self.retry_after,
            )
            .await
            {
                tracing::error!(function = %self.function, error = %error, "cannot settle the batch; SQS will redeliver it");
            }
            self.activity.end();
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    pec_aws::telemetry::init();
    let args = Args::parse();
    let path = args
        .state_dir
        .join(format!("{}.resources.json", args.stack_name));
    let resources: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (run infra/local/stack.sh bootstrap)",
                path.display()
            )
        })?)?;
    let functions = resources["functions"]
        .as_object()
        .context("the resources file lists no functions")?;
    let mut settings = ClientSettings::from_env()?;
    // Calls recorded for the IAM check (PEC_AWS_CALL_LOG) name the stack they were made in.
    settings.call_log_stack = Some(args.stack_name.clone());
    let aws = AwsClients::load(&settings).await;
    let stop = Arc::new(AtomicBool::new(false));
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
    });
    let mut pollers = Vec::new();
    let mut api_env = None;
    for (function, spec) in functions {
        let env: BTreeMap<String, String> = spec["environment"]
            .as_object()
            .map(|vars| {
                vars.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if function == pec_api::TEMPLATE_ID {
            // An HTTP function: served below when --api-port asks for it (whatever --only
            // says: it polls no queue).
            api_env = Some(env);
            continue;
        }
        if !args.only.is_empty() && !args.only.contains(function) {
            continue;
        }
        if SCHEDULED.contains(&function.as_str()) {
            // A scheduled function: no queue, the runner's clock triggers it.
            let timers = step_for(function, &aws, &env).await?;
            let name = function.clone();
            // The clock offset is the timers' (demos of the 12 h / 24 h notices): the spam
            // sweep compares with the real times of the detections.
            let offset = if function == "TimersFunction" {
                args.clock_offset
            } else {
                0
            };
            let every = args.timers_every;
            let stop = stop.clone();
            eprintln!("pec-runner: {function} every {every} s (clock offset {offset} s)");
            pollers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let now = Utc::now() + chrono::Duration::seconds(offset);
                    match timers.invoke(serde_json::json!({}), now).await {
                        Ok(result)
                            if result["notices"].as_u64().unwrap_or(0) > 0
                                || result["locked"].as_u64().unwrap_or(0) > 0 =>
                        {
                            tracing::info!(function = %name, %result, "scheduled sweep")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(function = %name, error = %e, "sweep failed; the next sweep retries")
                        }
                    }
                    for _ in 0..every.max(1) {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }));
            continue;
        }
        let step = step_for(function, &aws, &env).await?;
        for q in spec["queues"].as_array().into_iter().flatten() {
            let queue_url = q["queue_url"]
                .as_str()
                .context("queue without URL")?
                .to_string();
            let batch_size = q["batch_size"].as_i64().unwrap_or(10) as i32;
            eprintln!("pec-runner: {function} <- {queue_url}");
            pollers.push(tokio::spawn(
                Poller {
                    function: function.clone(),
                    queue_url,
                    batch_size,
                    retry_after: args.retry_after,
                    deliver_times: args.deliver_times,
                    visibility_timeout: args.visibility_timeout,
                    step: step.clone(),
                    sqs: aws.sqs.clone(),
                    activity: activity.clone(),
                    stop: stop.clone(),
                }
                .run(),
            ));
        }
    }
    if pollers.is_empty() {
        bail!("no function to run");
    }
    let (stop_gateway, gateway_stop) = tokio::sync::watch::channel(false);
    // PEC_RELAY=smtp: deliver hands what goes outside to the edge's relay worker (the relay
    // queue), as the template's OutboundRelay=smtp does; the edge then runs even without a port.
    let relay_smtp = std::env::var("PEC_RELAY").is_ok_and(|v| v == "smtp");
    let gateway = if args
        .smtp_port
        .or(args.imap_port)
        .or(args.pop3_port)
        .or(args.mx_port)
        .is_some()
        || relay_smtp
    {
        let mut env: BTreeMap<String, String> = resources["function_environment"]
            .as_object()
            .map(|vars| {
                vars.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if relay_smtp {
            let url = resources["resources"]["RelayQueue"]["QueueUrl"]
                .as_str()
                .context("PEC_RELAY=smtp: the stack has no RelayQueue (bootstrap it again)")?;
            env.insert("PEC_RELAY_QUEUE_URL".into(), url.to_string());
        }
        Some(start_edge(&aws, &env, &args, gateway_stop.clone()).await?)
    } else {
        None
    };
    let api = match (args.api_port, &api_env) {
        (Some(port), Some(env)) => {
            let mut env = env.clone();
            if let Some(n) = args.api_requests_per_minute {
                env.insert("PEC_API_REQUESTS_PER_MINUTE".into(), n.to_string());
            }
            Some(start_api(&aws, &env, port, gateway_stop.clone()).await?)
        }
        (Some(_), None) => bail!("--api-port: the template has no {}", pec_api::TEMPLATE_ID),
        _ => None,
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // The idle clock starts once every poller (and its handler's set-up) is running.
    activity.touch();
    let idle = args.until_idle.map(Duration::from_secs);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                eprintln!("pec-runner: interrupted; stopping");
                break;
            }
            _ = terminate.recv() => {
                eprintln!("pec-runner: terminated; stopping");
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if let Some(idle) = idle
                    && activity.idle_for() >= idle
                {
                    eprintln!("pec-runner: every queue idle for {} s; stopping", idle.as_secs());
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = stop_gateway.send(true);
    if let Some(a) = api
        && tokio::time::timeout(Duration::from_secs(40), a)
            .await
            .is_err()
    {
        eprintln!("pec-runner: the API did not stop within 40 s");
    }
    if let Some(g) = gateway
        && tokio::time::timeout(Duration::from_secs(40), g)
            .await
            .is_err()
    {
        eprintln!("pec-runner: the SMTP gateway did not stop within 40 s");
    }
    for p in pollers {
        // A poller ends after its current receive (<= 1 s wait) and batch.
        if tokio::time::timeout(Duration::from_secs(120), p)
            .await
            .is_err()
        {
            eprintln!("pec-runner: a poller did not stop within 120 s");
        }
    }
    Ok(())
}
