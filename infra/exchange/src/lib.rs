//! `pec-exchange`: the Internet between the local providers.
//!
//! Each local provider is one stack on the same emulators (`pec-local`, `pec-b`, ...). A
//! provider's delivery point relays mail for other domains through SES v1 `SendRawEmail`;
//! LocalStack keeps what was sent (`GET /_aws/ses`) and delivers nothing. This crate plays the
//! part of SMTP and of SES receiving: it reads the sent mail of our providers and, per recipient
//! domain, writes it where the recipient's provider would find it -- `inbound/<id>.eml` then
//! `inbound/<id>.json` in that provider's raw bucket, with the headers SES receiving adds -- or,
//! for a domain no local provider manages, into an outbox folder for inspection. It also injects
//! ordinary mail (a non-PEC sender, or a real fixture) as inbound mail.
//!
//! Pure parts (`headers`, `routing`, parsing in `localstack`) are unit-tested; `exchange` runs
//! over any `pec_ports::ObjectStore`.

pub mod exchange;
pub mod headers;
pub mod localstack;
pub mod routing;

pub use exchange::{Delivery, Exchange, InboundEnvelope, Options, Outcome, Report};
pub use localstack::{Endpoint, SentMail};
pub use routing::{Destination, Provider, Routes};
