//! Mass sending ("Invii massivi", issue #19), the pure part: a distribution list ([`list`]) and
//! the sender's templates ([`template`]) into one personalised message per recipient
//! ([`message`]), the job's plan ([`job`]: which rows go, which are set aside and why, the
//! chunks the fan-out hands out) and its report ([`report`]).
//!
//! Like `pec-core`: bytes in, bytes out; no IO, no clock, no SDK. The steps that store the job,
//! submit each recipient exactly once and collect the outcomes are `pec_pipeline::bulk`.

pub mod job;
pub mod list;
pub mod message;
pub mod report;
pub mod template;

pub use job::{JobSpec, Plan, plan};
pub use list::{List, ListError, Row, Skipped};
pub use template::{Compiled, Rendered, TemplateError, Templates};
