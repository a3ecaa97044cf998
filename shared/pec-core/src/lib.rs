//! The PEC rules as a pure library (no IO, no AWS SDK, no clock: time and ids are injected).
//!
//! - [`signed`]: split a received `multipart/signed` into the signed bytes and the signature.
//! - [`message`]: [`UnsignedMessage`], what every builder returns (headers + entity to sign).

pub mod addr;
pub mod build;
pub mod checks;
pub mod classify;
pub mod daticert;
pub mod ids;
pub mod message;
mod mime;
pub mod original;
pub mod policy;
pub mod signed;
pub mod text;
pub mod time;

pub use message::UnsignedMessage;
pub use signed::{SignedError, SignedParts, split_signed};
