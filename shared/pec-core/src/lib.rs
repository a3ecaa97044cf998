//! The PEC rules as a pure library (no IO, no AWS SDK, no clock: time and ids are injected by
//! the caller). Emit strictly, parse tolerantly; never panic on input from the network.
//!
//! - [`daticert`]: the `postacert` model, strict emitter, tolerant parser.
//! - [`build`]: every message a provider emits, as an [`UnsignedMessage`] (headers + the entity
//!   to sign).
//! - [`original`]: the certified data of a submitted message and its `postacert.eml`; the
//!   `breve` form.
//! - [`checks`]: the access point's formal checks.
//! - [`classify`]: what a received message is, with its daticert and anomalies.
//! - [`signed`]: split a received `multipart/signed` into the signed bytes and the signature.
//! - [`ids`], [`time`], [`addr`], [`text`]: identifiers, Italian civil time, addresses, bodies.
//! - [`plan`]: mailbox plans and quotas; [`submission`]: the SMTP envelope the gateway records;
//!   [`events`]: the provider-log record and the integration event of every emitted message.
//! - [`lockout`]: the spam lockout's rolling-window rule.
//! - [`policy`]: every fixed string of the rules and every choice made where they are silent.
//!
//! Tests, the golden corpus (`UPDATE_GOLDEN=1 cargo test -p pec-core --test golden`
//! regenerates it), fuzzing and the benchmark are described in `README.md`.

pub mod addr;
pub mod breach;
pub mod build;
pub mod checks;
pub mod classify;
pub mod daticert;
pub mod domain;
pub mod events;
pub mod ids;
pub mod lockout;
pub mod message;
mod mime;
pub mod original;
pub mod plan;
pub mod policy;
pub mod signed;
pub mod sms;
pub mod submission;
pub mod text;
pub mod time;

pub use message::UnsignedMessage;
pub use signed::{SignedError, SignedParts, split_signed};
