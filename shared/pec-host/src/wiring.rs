//! Each step over the AWS adapters, from its environment. The environment variables each step
//! reads are listed on its builder; template.yaml sets them, the local runner passes the same.

use pec_aws::webhooks::HttpsWebhooks;
use pec_aws::{
    AwsClients, DynamoState, EventBridgePublisher, KmsSigner, S3Store, SesTransport, SnsSms,
    SqsSender,
};
use pec_pipeline::bulk::{BulkSettings, BulkWorker};
use pec_pipeline::definitions::DefinitionsUpdate;
use pec_pipeline::deliver::Deliver;
use pec_pipeline::ingress::Ingress;
use pec_pipeline::lockout::{LockoutSettings, SpamSweep};
use pec_pipeline::pwreport::{PasswordReport, ReportSettings};
use pec_pipeline::receipts::Receipts;
use pec_pipeline::scan::ScanStep;
use pec_pipeline::scan::metrics::EmfStdout;
use pec_pipeline::sign::SignStep;
use pec_pipeline::sms::{SmsConfig, SmsNotify};
use pec_pipeline::timers::Timers;
use pec_pipeline::webhooks::Webhooks;
use pec_pipeline::{Settings, SettingsError};
use pec_ports::{ConfigError, Env};
use pec_scan::freshclam::Freshclam;

use crate::BoxedStep;
use crate::clamd_launch::{ClamdLaunch, LaunchError};

/// A step could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Sign(#[from] pec_pipeline::sign::SetupError),
    #[error(transparent)]
    Scan(#[from] pec_pipeline::scan::SetupError),
    #[error(transparent)]
    Kms(#[from] pec_aws::KmsError),
    #[error("starting clamd: {0}")]
    Clamd(#[from] LaunchError),
    #[error("PEC_SPAM_URL: {0}")]
    Spam(String),
    #[error("the webhook client: {0}")]
    Webhooks(std::io::Error),
    #[error(
        "the runner does not know the template function {0}: register it in pec_host::wiring::by_function"
    )]
    UnknownFunction(String),
}

fn state(aws: &AwsClients, env: &Env<'_>) -> Result<DynamoState, ConfigError> {
    Ok(DynamoState::new(
        aws.dynamodb.clone(),
        &env.required("PEC_STATE_TABLE")?,
        &env.required("PEC_LOG_TABLE")?,
    ))
}

fn s3(aws: &AwsClients) -> S3Store {
    S3Store::new(aws.s3.clone())
}

/// The sign step: `PEC_EVIDENCE_BUCKET`, `PEC_SIGNING_KEY_ID`, `PEC_SIGNING_CHAIN_KEY`, and the
/// state table it checks facts against (`PEC_STATE_TABLE`, `PEC_LOG_TABLE`; read only). Refuses
/// to start when the certificate is not for the KMS key.
pub async fn sign(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<SignStep<S3Store, KmsSigner, DynamoState>, WiringError> {
    let key_id = env.required("PEC_SIGNING_KEY_ID")?;
    let signer = KmsSigner::new(aws.kms.clone(), key_id.clone());
    let public_key = signer.public_key_spki_der().await?;
    let state = state(&aws, &env)?;
    Ok(pec_pipeline::sign::configured(s3(&aws), state, signer, &public_key, &key_id, &env).await?)
}

/// The scan step and, when `PEC_CLAMD_BINARY` names it (a Lambda layer), the clamd it starts
/// (see [`crate::clamd_launch`]): `PEC_RAW_BUCKET`, `PEC_EVIDENCE_BUCKET`,
/// `PEC_CONSERVATION_BUCKET`, `PEC_PROVIDER_NAME`, `PEC_PROVIDER_DOMAIN`, `PEC_CLAMD_SOCKET`,
/// `PEC_SCAN_POLICY_KEY`, `PEC_YARA_RULES_KEY`, `PEC_CLAMD_*`; `PEC_SPAM_URL` (rspamd's
/// normal worker; unset: no spam scoring).
pub async fn scan(aws: AwsClients, env: Env<'_>) -> Result<ScanHost, WiringError> {
    let socket = env.or("PEC_CLAMD_SOCKET", pec_pipeline::scan::DEFAULT_CLAMD_SOCKET);
    let clamd = match ClamdLaunch::from_env(&env, &socket)? {
        Some(launch) => {
            let bucket = env.required("PEC_EVIDENCE_BUCKET")?;
            let (child, loaded) = launch.launch(&s3(&aws), &bucket).await?;
            Some(Clamd {
                bucket,
                watch: tokio::sync::Mutex::new(Watch {
                    loaded,
                    // Once soon after the cold start: the launch's own check may have met
                    // the updater between writes.
                    next_check: tokio::time::Instant::now() + RECHECK_AFTER_FAILURE,
                    reload_pending: false,
                    child,
                }),
                launch,
            })
        }
        None => None,
    };
    let mut step = pec_pipeline::scan::configured(s3(&aws), s3(&aws), &env).await?;
    if let Some(url) = env.optional("PEC_SPAM_URL") {
        step = step.with_spam(
            pec_aws::RspamdEngine::new(&url, pec_aws::spam::DEFAULT_TIMEOUT)
                .map_err(WiringError::Spam)?,
        );
    }
    Ok(ScanHost {
        store: s3(&aws),
        step,
        clamd,
    })
}

/// The scan step with the clamd it started (alive as long as the step).
pub struct ScanHost {
    store: S3Store,
    step: ScanStep<S3Store, S3Store, EmfStdout>,
    clamd: Option<Clamd>,
}

/// The clamd a scan function started, and what it has loaded.
struct Clamd {
    launch: ClamdLaunch,
    bucket: String,
    watch: tokio::sync::Mutex<Watch>,
}

struct Watch {
    loaded: crate::clamd_launch::Loaded,
    next_check: tokio::time::Instant,
    /// New files are in place but clamd has not confirmed a reload yet.
    reload_pending: bool,
    /// Dropping it kills clamd.
    child: tokio::process::Child,
}

/// After a failed check (the updater between writes, S3 unavailable), the next one.
const RECHECK_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(30);

impl ScanHost {
    /// Before each message: a clamd that died is started again; at most every `check_every`
    /// (sooner after a failure), new definitions from the updater's marker and clamd reloaded
    /// (see [`crate::clamd_launch`]). Never fails the invocation: with old definitions clamd
    /// still scans, and the age alarm tells the operator; without clamd the scan is an engine
    /// error and the message waits.
    async fn keep_clamd(&self) {
        let Some(clamd) = &self.clamd else {
            return;
        };
        let mut watch = clamd.watch.lock().await;
        if let Ok(Some(status)) = watch.child.try_wait() {
            tracing::error!(%status, "clamd exited; starting it again");
            match clamd.launch.spawn().await {
                Ok(child) => watch.child = child,
                Err(e) => tracing::error!(error = %e, "clamd could not be started again"),
            }
            // A fresh clamd loads the directory as it is: no reload owed.
            watch.reload_pending = false;
        }
        let now = tokio::time::Instant::now();
        if now >= watch.next_check {
            let Watch { loaded, .. } = &mut *watch;
            match clamd
                .launch
                .refresh(&self.store, &clamd.bucket, loaded)
                .await
            {
                Ok(crate::clamd_launch::Refresh::Changed(files)) => {
                    tracing::info!(?files, "new ClamAV definitions in place");
                    watch.reload_pending = true;
                    watch.next_check = now + clamd.launch.check_every;
                }
                Ok(_) => watch.next_check = now + clamd.launch.check_every,
                Err(e) => {
                    tracing::warn!(error = %e, "ClamAV definitions not refreshed");
                    watch.next_check = now + RECHECK_AFTER_FAILURE;
                }
            }
        }
        if watch.reload_pending {
            let reloaded =
                crate::clamd_launch::reload(&clamd.launch.socket, clamd.launch.reload_wait).await;
            watch.reload_pending = !reloaded;
            if reloaded {
                tracing::info!("clamd reloaded its definitions");
            } else {
                tracing::warn!(
                    "clamd did not confirm the reload; tried again before the next message"
                );
            }
        }
    }
}

impl pec_pipeline::Step for ScanHost {
    fn name(&self) -> &'static str {
        self.step.name()
    }
    async fn invoke(
        &self,
        event: serde_json::Value,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<serde_json::Value, pec_pipeline::StepFailure> {
        self.keep_clamd().await;
        self.step.invoke(event, now).await
    }
}

/// The ClamAV definition updater: `PEC_EVIDENCE_BUCKET`, `PEC_FRESHCLAM_BINARY` (the layer's
/// `/opt/bin/freshclam`), `PEC_FRESHCLAM_WORK_DIR` (default `/tmp/freshclam`),
/// `PEC_CLAMAV_MIRROR` (default the official `https://database.clamav.net`), `PEC_CLAMAV_DNS`
/// (default true: ask `current.cvd.clamav.net` first, as the official mirror expects; false for
/// a private mirror), `PEC_CLAMAV_DATABASES` (comma-separated; default freshclam's main, daily,
/// bytecode), `PEC_FRESHCLAM_CA_BUNDLE` (`CURL_CA_BUNDLE`; default the layer's Debian bundle),
/// `PEC_FRESHCLAM_TIMEOUT_SECONDS` (default 600), `PEC_CLAMD_DEFINITIONS_PREFIX`,
/// `PEC_CLAMD_MARKER_KEY`, `PEC_CLAMAV_STATE_KEY`.
pub async fn clamav_update(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<DefinitionsUpdate<S3Store, Freshclam, EmfStdout>, WiringError> {
    use pec_pipeline::definitions as d;
    let databases = env
        .or("PEC_CLAMAV_DATABASES", "")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let updater = Freshclam {
        binary: env.required("PEC_FRESHCLAM_BINARY")?.into(),
        work_dir: env.or("PEC_FRESHCLAM_WORK_DIR", "/tmp/freshclam").into(),
        mirror: env.or("PEC_CLAMAV_MIRROR", pec_scan::freshclam::OFFICIAL_MIRROR),
        dns: env.optional("PEC_CLAMAV_DNS").is_none() || env.flag("PEC_CLAMAV_DNS")?,
        databases,
        // Only when present: elsewhere (the local runner) libcurl's own default applies.
        ca_bundle: Some(std::path::PathBuf::from(env.or(
            "PEC_FRESHCLAM_CA_BUNDLE",
            "/opt/etc/ssl/certs/ca-certificates.crt",
        )))
        .filter(|p| p.is_file()),
        timeout: std::time::Duration::from_secs(
            env.parse::<u64>("PEC_FRESHCLAM_TIMEOUT_SECONDS")?
                .unwrap_or(600),
        ),
    };
    let bucket = env.required("PEC_EVIDENCE_BUCKET")?;
    Ok(DefinitionsUpdate {
        store: s3(&aws),
        updater,
        metrics: EmfStdout,
        place: d::DefinitionsPlace {
            prefix: env.or(
                "PEC_CLAMD_DEFINITIONS_PREFIX",
                d::DEFAULT_CLAMAV_DEFINITIONS_PREFIX,
            ),
            marker_key: env.or("PEC_CLAMD_MARKER_KEY", d::DEFAULT_MARKER_KEY),
            state_key: env.or("PEC_CLAMAV_STATE_KEY", d::DEFAULT_STATE_KEY),
            bucket,
        },
    })
}

/// The ingress step (access and receiving points): `PEC_PROVIDER_NAME`, `PEC_PROVIDER_DOMAIN`,
/// `PEC_RAW_BUCKET`, `PEC_EVIDENCE_BUCKET`, `PEC_MAILBOX_BUCKET`, `PEC_SCAN_QUEUE_URL`,
/// `PEC_RECEIPTS_QUEUE_URL`, `PEC_STATE_TABLE`, `PEC_LOG_TABLE`, `PEC_PROVIDER_INDEX_KEY`,
/// `PEC_TRUST_ANCHORS_KEY`.
pub async fn ingress(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<Ingress<S3Store, DynamoState, SqsSender>, WiringError> {
    Ok(Ingress::new(
        Settings::from_env(&env)?,
        s3(&aws),
        state(&aws, &env)?,
        SqsSender::new(aws.sqs.clone()),
    ))
}

/// The deliver step: as ingress, plus `PEC_EVENT_BUS` and the outbound relay: `PEC_RELAY=ses`
/// (the default) sends through SES `SendRawEmail` (which replaces `Message-ID` and `Date`);
/// `PEC_RELAY=smtp` hands each object to the relay worker on the edge service through
/// `PEC_RELAY_QUEUE_URL` (`pec_pipeline::relay`: Lambda cannot open port 25).
pub async fn deliver(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<Deliver<S3Store, DynamoState, SqsSender, EventBridgePublisher, SesTransport>, WiringError>
{
    let settings = Settings::from_env(&env)?;
    let outbound = SesTransport::new(aws.ses.clone());
    Ok(Deliver::new(
        settings,
        s3(&aws),
        state(&aws, &env)?,
        SqsSender::new(aws.sqs.clone()),
        EventBridgePublisher::new(aws.events.clone(), &env.required("PEC_EVENT_BUS")?),
        outbound,
    ))
}

/// The receipts step: as ingress.
pub async fn receipts(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<Receipts<S3Store, DynamoState>, WiringError> {
    Ok(Receipts::new(
        Settings::from_env(&env)?,
        s3(&aws),
        state(&aws, &env)?,
    ))
}

/// The timers sweep: as ingress.
pub async fn timers(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<Timers<S3Store, DynamoState>, WiringError> {
    Ok(Timers::new(
        Settings::from_env(&env)?,
        s3(&aws),
        state(&aws, &env)?,
    ))
}

/// The spam-lockout sweep: `PEC_STATE_TABLE`, `PEC_LOG_TABLE`, and what
/// [`pec_pipeline::lockout::LockoutSettings::from_env`] reads, `PEC_SMS_SENDER_ID`; reset links
/// go out through SES, and through SNS to members with a contact mobile.
pub async fn spam_sweep(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<SpamSweep<DynamoState, SesTransport, SnsSms>, WiringError> {
    Ok(SpamSweep {
        state: state(&aws, &env)?,
        mail: SesTransport::new(aws.ses.clone()),
        sms: sns_sms(&aws, &env),
        settings: LockoutSettings::from_env(&env)?,
        new_token: random_token,
    })
}

/// The monthly password report: `PEC_STATE_TABLE`, `PEC_LOG_TABLE` (findings, mailboxes,
/// message records), `PEC_RAW_BUCKET` (its submissions), `PEC_PROVIDER_DOMAIN`,
/// `PEC_PROVIDER_NAME`.
pub async fn password_report(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<PasswordReport<DynamoState, S3Store>, WiringError> {
    Ok(PasswordReport {
        state: state(&aws, &env)?,
        store: S3Store::new(aws.s3.clone()),
        settings: ReportSettings::from_env(&env)?,
    })
}

/// 32 bytes of the operating system's random source, base64url (a reset link's secret).
fn random_token() -> String {
    // Without randomness the links would be guessable: nothing to go on with.
    pec_ports::activation::random_token().expect("the operating system's random source")
}

/// The sms-notify step: `PEC_STATE_TABLE`, `PEC_LOG_TABLE` (mailboxes, SMS windows),
/// `PEC_SMS_QUEUE_URL` (its flushes go back on it), `PEC_SMS_DIGEST_SECONDS` (the rate window,
/// default 600), `PEC_SMS_SENDER_ID` (optional alphanumeric sender id); SMS through SNS.
pub async fn sms_notify(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<SmsNotify<DynamoState, SnsSms, SqsSender>, WiringError> {
    Ok(SmsNotify {
        config: SmsConfig::from_env(&env)?,
        state: state(&aws, &env)?,
        sms: sns_sms(&aws, &env),
        queue: SqsSender::new(aws.sqs.clone()),
    })
}

/// SMS through SNS, with `PEC_SMS_SENDER_ID` when set.
fn sns_sms(aws: &AwsClients, env: &Env<'_>) -> SnsSms {
    SnsSms::new(aws.sns.clone(), env.optional("PEC_SMS_SENDER_ID"))
}

/// The webhooks step: `PEC_STATE_TABLE`, `PEC_LOG_TABLE` (mailboxes, subscriptions,
/// deliveries), `PEC_WEBHOOK_QUEUE_URL` (retries go back on it), `PEC_WEBHOOK_PARKED_QUEUE_URL`
/// (deliveries that exhausted the schedule), `PEC_WEBHOOK_PRIVATE_TARGETS` (`allow` lets
/// endpoints on loopback and private addresses, over plain HTTP too: the local profile only;
/// anything else refuses them), `PEC_WEBHOOK_RETRY_SCHEDULE` (seconds before each retry,
/// comma-separated; default `pec_ports::webhooks::BACKOFF`).
pub async fn webhooks(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<Webhooks<DynamoState, DynamoState, HttpsWebhooks, SqsSender>, WiringError> {
    let allow_private = env.or("PEC_WEBHOOK_PRIVATE_TARGETS", "refuse") == "allow";
    let schedule = match env.optional("PEC_WEBHOOK_RETRY_SCHEDULE") {
        None => pec_ports::webhooks::BACKOFF.to_vec(),
        Some(value) => pec_ports::webhooks::parse_schedule(&value).map_err(|reason| {
            ConfigError::Malformed {
                name: "PEC_WEBHOOK_RETRY_SCHEDULE".into(),
                value,
                reason,
            }
        })?,
    };
    let state = state(&aws, &env)?;
    Ok(Webhooks {
        schedule,
        hooks: state.clone(),
        state,
        client: HttpsWebhooks::new(allow_private).map_err(WiringError::Webhooks)?,
        queue: SqsSender::new(aws.sqs.clone()),
        queue_url: env.required("PEC_WEBHOOK_QUEUE_URL")?,
        parked_queue_url: env.required("PEC_WEBHOOK_PARKED_QUEUE_URL")?,
    })
}

/// The bulk function (mass sending): `PEC_STATE_TABLE`, `PEC_LOG_TABLE` (the sender's mailbox,
/// the job and its row claims), and what [`BulkSettings::from_env`] reads.
pub async fn bulk(
    aws: AwsClients,
    env: Env<'_>,
) -> Result<BulkWorker<S3Store, DynamoState, DynamoState, SqsSender>, WiringError> {
    let state = state(&aws, &env)?;
    Ok(BulkWorker {
        objects: s3(&aws),
        jobs: state.clone(),
        state,
        queue: SqsSender::new(aws.sqs.clone()),
        settings: BulkSettings::from_env(&env)?,
    })
}

/// The step of a template function (its logical id), built from `env` exactly as its Lambda
/// `main` builds it. Every function crate is registered here (the local runner's registry).
/// Its clients are the function's own ([`AwsClients::for_function`]): with `PEC_AWS_CALL_LOG`
/// set, every AWS call it makes is recorded under its name for the IAM check
/// (`infra/local/iam_check.py`).
pub async fn by_function(
    function: &str,
    aws: AwsClients,
    env: Env<'_>,
) -> Result<BoxedStep, WiringError> {
    let aws = aws.for_function(function);
    Ok(match function {
        "SignFunction" => BoxedStep::new(sign(aws, env).await?),
        "ScanFunction" => BoxedStep::new(scan(aws, env).await?),
        "IngressFunction" => BoxedStep::new(ingress(aws, env).await?),
        "DeliverFunction" => BoxedStep::new(deliver(aws, env).await?),
        "ReceiptsFunction" => BoxedStep::new(receipts(aws, env).await?),
        "TimersFunction" => BoxedStep::new(timers(aws, env).await?),
        "WebhooksFunction" => BoxedStep::new(webhooks(aws, env).await?),
        "SpamSweepFunction" => BoxedStep::new(spam_sweep(aws, env).await?),
        "SmsNotifyFunction" => BoxedStep::new(sms_notify(aws, env).await?),
        "PasswordReportFunction" => BoxedStep::new(password_report(aws, env).await?),
        "ClamavUpdateFunction" => BoxedStep::new(clamav_update(aws, env).await?),
        "BulkFunction" => BoxedStep::new(bulk(aws, env).await?),
        other => return Err(WiringError::UnknownFunction(other.to_string())),
    })
}
