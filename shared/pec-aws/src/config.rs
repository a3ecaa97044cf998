//! SDK configuration shared by every function and tool.

use std::time::Duration;

use pec_ports::{ConfigError, Env};

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_smithy_http_client::{Builder, tls};

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
}

impl ClientSettings {
    /// Settings from the process environment (see [`ClientSettings::from_config`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_config(&Env::process())
    }

    /// Settings from `env`: `PEC_S3_FORCE_PATH_STYLE`, `PEC_AWS_CONNECT_TIMEOUT_MS`,
    /// `PEC_AWS_OPERATION_TIMEOUT_MS`, `PEC_AWS_MAX_ATTEMPTS`. Unset or empty values keep the
    /// defaults (3 s connect, 30 s per operation, 3 attempts, virtual-host S3); a malformed one
    /// is an error naming it.
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

    /// Clients over an already loaded configuration.
    pub fn from_config(config: SdkConfig, settings: &ClientSettings) -> Self {
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(settings.s3_force_path_style)
            .build();
        Self {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            sqs: aws_sdk_sqs::Client::new(&config),
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            kms: aws_sdk_kms::Client::new(&config),
            ses: aws_sdk_ses::Client::new(&config),
            events: aws_sdk_eventbridge::Client::new(&config),
            config,
        }
    }
}
