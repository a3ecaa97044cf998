//! The seam every step codes against (ARCHITECTURE.md, "Layers").
//!
//! Like ripgrep's `grep-matcher`: small, stable, and free of the things that change — no AWS
//! SDK, no async runtime, no PEC rules (those are `pec-core`'s). Steps (`pec-pipeline`) see only
//! this crate; `pec-aws` implements the ports on S3, DynamoDB, SQS, EventBridge and SES; the
//! memory fakes here implement them for unit tests and pass the same conformance suite.
//!
//! - [`store`]: objects ([`ObjectStore`], Object Lock writes [`RetainedStore`]);
//! - [`state`]: the state table and provider log ([`StateStore`]) and its typed records;
//! - [`publish`]: queue sends, integration events, outbound mail;
//! - [`keys`]: every object key, formatted and parsed in one place;
//! - [`contract`]: what one step hands the next;
//! - [`config`]: the one configuration reader;
//! - [`login`]: failed-login throttling for every way a person logs in;
//! - [`identities`]: the mail service's domain identities (tenants' custom domains);
//! - [`mailstore`]: the mailbox store people read over IMAP and POP3 ([`MailStore`]);
//! - [`sms`]: SMS notifications and reset links ([`sms::SmsSender`]), the rate window;
//! - [`transfer`]: the read-only source of a mailbox transfer ([`transfer::TransferSource`]);
//! - [`bulk`]: mass-sending jobs and their rows' claims ([`bulk::JobStore`]).

pub mod access;
pub mod activation;
pub mod breach;
pub mod bulk;
pub mod config;
pub mod contract;
pub mod identities;
pub mod keys;
pub mod login;
pub mod mailstore;
pub mod net;
pub mod publish;
pub mod sms;
pub mod spam;
pub mod state;
pub mod store;
pub mod transfer;
pub mod webhooks;

pub use access::{
    AccessStore, ApiKey, IdempotencyRecord, MemoryAccess, Scope, Session, SessionKind,
};
pub use config::{ConfigError, Env};
pub use identities::{
    DomainIdentities, IdentityError, IdentitySetup, IdentityStatus, MemoryIdentities,
};
pub use login::{LoginThrottle, LoginVerdict, MemoryThrottle, ThrottlePolicy, source_key};
pub use mailstore::{MailStore, MailStoreError, MemoryMailStore};
pub use publish::{
    EventPublisher, MailTransport, MemoryOutbox, Peer, QueueSender, RecipientReply, Refusal,
    SendError, SendReport, SentMail,
};
pub use state::{
    ActivationRecord, Billing, DeliveryStatus, DnsRecord, DomainRecord, DomainStatus,
    InboundDecision, InboundRecord, LockNote, Mailbox, MailboxItem, MailboxStatus, MailboxWrite,
    MemberRecord, MemberStatus, MemoryState, MessageRecord, MessageState, NotDelivered,
    RecipientOutcome, RelayEvent, RelayRecord, SERVICE_TENANT, SpamFiling, StateError, StateStore,
    StatusNote, Tenant,
};
pub use store::{
    MemoryRetained, MemoryStore, ObjectStore, PutOutcome, ReplaceableStore, RetainedStore,
    SignedUrls, StoreError,
};
