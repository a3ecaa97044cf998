//! SDK configuration shared by every function and tool.

use std::path::PathBuf;
use std::time::Duration;

use pec_ports::{ConfigError, Env};

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_smithy_http_client::{Builder, tls};

use crate::call_log::{CallLog, CallRecorder};

/// Knobs that differ between a Lambda in AWS, a test against the emulators and a CLI.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Time allowed to open a connection. Short, so a dead emulator is reported, not waited on.
    pub connect_timeout: Duration,
    /// Time allowed for one whole operation, retries included.
    pub operation_timeout: Duration,
    /// Attempts per operation (1 = no retry).
    pub max_attempts: u32,
    /// Address S3 buckets by path (`http://host/bucket/key`); needed by LocalStack.
    pub s3_force_path_style: bool,
    /// Record every AWS call of the clients built for a function here
    /// ([`AwsClients::for_function`], `PEC_AWS_CALL_LOG`; see [`crate::call_log`]).
    pub call_log: Option<PathBuf>,
    /// The stack those functions belong to, written on every recorded call (the runner sets
    /// its `--stack-name`).
    pub call_log_stack: Option<String>,
}

impl ClientSettings {
    /// Settings from the process environment (see [`ClientSettings::from_config`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_config(&Env::process())
    }

    /// Settings from `env`: `PEC_S3_FORCE_PATH_STYLE`, `PEC_AWS_CONNECT_TIMEOUT_MS`,
    /// `PEC_AWS_OPERATION_TIMEOUT_MS`, `PEC_AWS_MAX_ATTEMPTS`, `PEC_AWS_CALL_LOG`. Unset or empty
    /// values keep the defaults (3 s connect, 30 s per operation, 3 attempts, virtual-host S3,
    /// no call log); a malformed one is an error naming it.
    pub fn from_config(env: &Env<'_>) -> Result<Self, ConfigError> {
        let default = Self::default();
        let ms = |name: &str, fallback: Duration| -> Result<Duration, ConfigError> {
            Ok(env
                .parse::<u64>(name)?
                .map(Duration::from_millis)
                .unwrap_or(fallback))
        };
        let max_attempts = env
            .parse::<u32>("PEC_AWS_MAX_ATTEMPTS")?
            .unwrap_or(default.max_attempts);
        if max_attempts == 0 {
            return Err(ConfigError::Malformed {
                name: "PEC_AWS_MAX_ATTEMPTS".into(),
                value: "0".into(),
                reason: "at least 1 attempt".into(),
            });
        }
        Ok(Self {
            connect_timeout: ms("PEC_AWS_CONNECT_TIMEOUT_MS", default.connect_timeout)?,
            operation_timeout: ms("PEC_AWS_OPERATION_TIMEOUT_MS", default.operation_timeout)?,
            max_attempts,
            s3_force_path_style: env.flag("PEC_S3_FORCE_PATH_STYLE")?,
            call_log: env.optional("PEC_AWS_CALL_LOG").map(PathBuf::from),
            call_log_stack: None,
        })
    }
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(30),
            max_attempts: 3,
            s3_force_path_style: false,
            call_log: None,
            call_log_stack: None,
        }
    }
}

/// One set of SDK clients sharing a configuration (and so one HTTP connection pool).
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub config: SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
    pub ses: aws_sdk_ses::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub sns: aws_sdk_sns::Client,
    /// Settings the clients were built with (to build them again for one function).
    settings: ClientSettings,
    /// The open call log, when `settings.call_log` names one.
    call_log: Option<CallLog>,
}

impl AwsClients {
    /// Loads region, credentials and endpoints the standard way (environment, profile, Lambda
    /// role), with our HTTP client, timeouts and retries.
    pub async fn load(settings: &ClientSettings) -> Self {
        // rustls with the ring provider: one TLS stack, no C build of aws-lc (rust-crates-notes.md).
        let http_client = Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .operation_timeout(settings.operation_timeout)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts))
            .load()
            .await;
        Self::from_config(config, settings)
    }

    /// Clients over an already loaded configuration. A call log named by the settings that
    /// cannot be opened is reported and left off (recording must never stop a function).
    pub fn from_config(config: SdkConfig, settings: &ClientSettings) -> Self {
        let call_log = settings.call_log.as_ref().and_then(|path| {
            CallLog::open(path, settings.call_log_stack.clone())
                .inspect_err(|error| {
                    tracing::error!(path = %path.display(), error = %error, "cannot open the AWS call log");
                })
                .ok()
        });
        Self::build(config, settings.clone(), call_log, None)
    }

    /// The same clients for the template function `function` (its logical id): when the
    /// settings name a call log (`PEC_AWS_CALL_LOG`), every call they make is recorded with the
    /// function's name; otherwise they are these clients, unchanged.
    pub fn for_function(&self, function: &str) -> Self {
        match &self.call_log {
            Some(log) => Self::build(
                self.config.clone(),
                self.settings.clone(),
                Some(log.clone()),
                Some(log.recorder(function)),
            ),
            None => self.clone(),
        }
    }

    fn build(
        config: SdkConfig,
        settings: ClientSettings,
        call_log: Option<CallLog>,
        recorder: Option<CallRecorder>,
    ) -> Self {
        // One interceptor per service configuration; none at all without a recorder.
        macro_rules! client {
            ($sdk:ident, $builder:expr) => {{
                let mut builder = $builder;
                if let Some(recorder) = &recorder {
                    builder = builder.interceptor(recorder.clone());
                }
                $sdk::Client::from_conf(builder.build())
            }};
        }
        Self {
            s3: client!(
                aws_sdk_s3,
                aws_sdk_s3::config::Builder::from(&config)
                    .force_path_style(settings.s3_force_path_style)
            ),
            sqs: client!(aws_sdk_sqs, aws_sdk_sqs::config::Builder::from(&config)),
            dynamodb: client!(
                aws_sdk_dynamodb,
                aws_sdk_dynamodb::config::Builder::from(&config)
            ),
            kms: client!(aws_sdk_kms, aws_sdk_kms::config::Builder::from(&config)),
            ses: client!(aws_sdk_ses, aws_sdk_ses::config::Builder::from(&config)),
            events: client!(
                aws_sdk_eventbridge,
                aws_sdk_eventbridge::config::Builder::from(&config)
            ),
            sns: client!(aws_sdk_sns, aws_sdk_sns::config::Builder::from(&config)),
            config,
            settings,
            call_log,
        }
    }
}
