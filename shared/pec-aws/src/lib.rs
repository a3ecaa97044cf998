//! The AWS edge of the provider.
//!
//! Everything here is plumbing: how the SDK clients are configured, never what a PEC rule says.
//!
//! **Endpoints are never hard-coded.** The SDK reads `AWS_ENDPOINT_URL` (LocalStack locally) and
//! the per-service `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local) by itself; in AWS neither is set.
//! The only local-only switch is `PEC_S3_FORCE_PATH_STYLE=1`, because LocalStack serves buckets
//! by path rather than by virtual host.

mod config;
pub mod index;
pub mod kms;
pub mod publish;
pub mod queue;
pub mod state;
pub mod store;
pub mod telemetry;

pub use config::{AwsClients, ClientSettings};
pub use index::{IndexSourceError, ProviderIndexSource};
pub use kms::{KmsError, KmsSigner};
pub use publish::{
    EventBridgePublisher, EventPublisher, MailTransport, MemoryOutbox, QueueSender, SendError,
    SentMail, SesTransport, SqsSender,
};
pub use state::{
    DynamoState, InboundRecord, Mailbox, MailboxItem, MailboxWrite, MemoryState, MessageRecord,
    RecipientOutcome, RelayEvent, RelayRecord, StateError, StateStore, Tenant,
};
pub use store::{MemoryStore, ObjectStore, PutOutcome, S3Store, StoreError};
