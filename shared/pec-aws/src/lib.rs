//! The AWS edge of the provider: the `pec-ports` traits implemented on S3, DynamoDB, SQS,
//! EventBridge, SES and KMS, and how the SDK clients are configured.
//!
//! Everything here is plumbing, never what a PEC rule says; no step depends on this crate (the
//! hosts in `pec-host` wire the adapters into the steps).
//!
//! **Endpoints are never hard-coded.** The SDK reads `AWS_ENDPOINT_URL` (LocalStack locally) and
//! the per-service `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local) by itself; in AWS neither is set.
//! The only local-only switch is `PEC_S3_FORCE_PATH_STYLE=1`, because LocalStack serves buckets
//! by path rather than by virtual host.

pub mod access;
pub mod breach;
pub mod bulk;
pub mod call_log;
mod config;
pub mod identities;
pub mod index;
pub mod kms;
pub mod mailstore;
pub mod publish;
pub mod queue;
pub mod sms;
pub mod spam;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod webhooks;

pub use breach::{FileBreach, HttpsBreach, breach_source};
pub use config::{AwsClients, ClientSettings};
pub use identities::SesIdentities;
pub use index::{IndexSourceError, ProviderIndexSource};
pub use kms::{KmsError, KmsSigner};
pub use mailstore::DynamoMailStore;
pub use publish::{EventBridgePublisher, SesTransport, SqsSender};
pub use sms::SnsSms;
pub use spam::RspamdEngine;
pub use state::DynamoState;
pub use store::S3Store;
