//! The members of an order or a firm as a bulk import reads them (issue #13): a table (CSV or
//! Excel `.xlsx`) becomes validated [`Member`]s and per-row errors, and a tenant's
//! [`AddressPattern`] gives each member a mailbox address. Pure, like `pec-core`: bytes in, no
//! IO, no clock; what to do with the members (records, mailboxes, activation links) is
//! `pec_pipeline::tenants`'s.
//!
//! - [`fiscal`]: the codice fiscale (format, omocodia, check character);
//! - [`phone`]: mobile numbers to E.164;
//! - [`address`]: address patterns (`nome.cognome`), transliteration, collisions;
//! - [`table`]: CSV and `.xlsx` reading, column names in Italian or English, row validation.

pub mod address;
pub mod fiscal;
pub mod phone;
#[cfg(feature = "tables")]
pub mod table;

pub use address::{AddressError, AddressPattern};
pub use fiscal::{FiscalCodeError, fiscal_code};
pub use phone::{PhoneError, mobile_e164};
#[cfg(feature = "tables")]
pub use table::{Table, TableError, members};

/// One member, every field checked (a table row, or an API request's entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The row in the file (1 = the header).
    pub row: usize,
    pub nome: String,
    pub cognome: String,
    /// Upper case.
    pub fiscal_code: String,
    /// The contact address (where the activation link goes).
    pub email: String,
    /// E.164.
    pub mobile: Option<String>,
    pub plan: pec_core::plan::Plan,
}

/// Everything wrong with one row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {row}: {}", reasons.join("; "))]
pub struct RowError {
    pub row: usize,
    pub reasons: Vec<String>,
}
