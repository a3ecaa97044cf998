//! ClamAV's signature databases as the definition updater and the scan function see them (pure).
//!
//! - [`CvdHeader`]: the 512-byte header every `.cvd`/`.cld`/`.cud` starts with
//!   (`ClamAV-VDB:<build time>:<version>:<signatures>:<f-level>:<md5>:<dsig>:<builder>:<stime>`,
//!   libclamav's `cl_cvdparse`). Parsing checks nothing cryptographic: freshclam verifies what it
//!   downloads and clamd verifies what it loads. The header only says which version a file is and
//!   when Talos built it (`stime`, epoch seconds), hence how old our definitions are.
//! - [`managed`]: the files the updater owns under the definitions prefix (`<db>.cvd`,
//!   `<db>.cld`). Anything else there (an operator's `.ndb`/`.hdb`) is left alone.
//! - [`Marker`]: what the updater writes last (`config/antivirus/clamav-version.json`): every
//!   managed file with its size and SHA-256, and each database's version and build time. The
//!   scan function polls it and reloads clamd when the files differ from what it loaded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Size of the header at the start of a ClamAV database container.
pub const HEADER_LEN: usize = 512;

/// A database container's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CvdHeader {
    /// As written (`22 Jun 2021 21-34 -0400`: `-` stands for `:`).
    pub build_time: String,
    pub version: u32,
    pub signatures: u64,
    pub functionality_level: u32,
    pub builder: String,
    /// Build time in epoch seconds (`stime`); absent in very old containers.
    pub built_at: Option<i64>,
    /// The header carries an MD5 and a digital signature (`.cvd`); `.cld` and `.cud` carry `X`.
    pub header_signed: bool,
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("not a ClamAV database: the header does not start with \"ClamAV-VDB:\"")]
    NotADatabase,
    #[error("the header has {0} fields, at least 8 are needed")]
    TooFewFields(usize),
    #[error("the header's {field} is not a number: {value:?}")]
    NotANumber { field: &'static str, value: String },
}

impl CvdHeader {
    /// Reads the header at the start of `bytes` (a whole file or its first 512 bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let head = bytes.get(..HEADER_LEN.min(bytes.len())).unwrap_or_default();
        let text = String::from_utf8_lossy(head);
        let text = text.trim_end_matches([' ', '\0', '\n', '\r']);
        let rest = text
            .strip_prefix("ClamAV-VDB:")
            .ok_or(HeaderError::NotADatabase)?;
        let fields: Vec<&str> = rest.split(':').collect();
        if fields.len() < 7 {
            return Err(HeaderError::TooFewFields(fields.len() + 1));
        }
        let field = |i: usize| fields.get(i).copied().unwrap_or_default().trim();
        fn number<T: std::str::FromStr>(
            field: &'static str,
            value: &str,
        ) -> Result<T, HeaderError> {
            value.parse().map_err(|_| HeaderError::NotANumber {
                field,
                value: value.to_string(),
            })
        }
        let built_at = match fields.get(7).map(|s| s.trim()) {
            None | Some("") => None,
            Some(value) => Some(number("stime", value)?),
        };
        Ok(CvdHeader {
            build_time: field(0).to_string(),
            version: number("version", field(1))?,
            signatures: number("signature count", field(2))?,
            functionality_level: number("functionality level", field(3))?,
            header_signed: field(4) != "X" && field(5) != "X",
            builder: field(6).to_string(),
            built_at,
        })
    }

    /// Seconds from the build to `now` (never negative), when the build time is known.
    pub fn age_seconds(&self, now_unix: i64) -> Option<i64> {
        self.built_at.map(|t| (now_unix - t).max(0))
    }
}

/// The kind of a managed database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// As published by Talos, header signed.
    Cvd,
    /// A `.cvd` brought up to date by freshclam with signed patches (`.cdiff`).
    Cld,
}

/// `daily.cld` → `("daily", Cld)`; `None` for a file the updater does not own.
pub fn managed(file_name: &str) -> Option<(&str, Container)> {
    let (db, ext) = file_name.rsplit_once('.')?;
    let plain = !db.is_empty()
        && db
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain {
        return None;
    }
    match ext {
        "cvd" => Some((db, Container::Cvd)),
        "cld" => Some((db, Container::Cld)),
        _ => None,
    }
}

/// One managed file as the marker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedFile {
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// One database as the marker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedDatabase {
    /// The file that holds it (`daily.cld`).
    pub file: String,
    pub version: u32,
    pub signatures: u64,
    /// Build time, epoch seconds.
    pub built_at: Option<i64>,
}

/// The updater's record of the definitions it left in the bucket (written after the files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Managed files by name.
    pub files: BTreeMap<String, MarkedFile>,
    /// Databases by name (`daily`, `main`, `bytecode`).
    pub databases: BTreeMap<String, MarkedDatabase>,
    /// When the updater last checked the mirror successfully (RFC 3339, UTC).
    pub checked_at: String,
}

impl Marker {
    /// The newest build among the databases (in production: `daily`'s), epoch seconds.
    pub fn newest_build(&self) -> Option<i64> {
        self.databases.values().filter_map(|d| d.built_at).max()
    }

    /// How old the definitions are: `now` minus the newest build.
    pub fn age_seconds(&self, now_unix: i64) -> Option<i64> {
        self.newest_build().map(|t| (now_unix - t).max(0))
    }
}

// ------------------------------------------------------------------------ the updater port

/// The managed database files (name → bytes) and the updater's own state file (freshclam's
/// `freshclam.dat`: its client id and a mirror's cool-down after a 403 or 429).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Databases {
    pub files: BTreeMap<String, Vec<u8>>,
    pub state: Option<Vec<u8>>,
}

/// What one updater run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStatus {
    /// The mirror has nothing newer.
    UpToDate,
    /// At least one database is newer (verified by the updater).
    Updated,
    /// The run failed (network, verification, cool-down): nothing changed but possibly the
    /// state; the run's `after.files` is empty and means nothing.
    Failed { reason: String },
}

/// The databases after a run, what happened, and the updater's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRun {
    pub status: UpdateStatus,
    pub after: Databases,
    pub log: String,
}

/// The updater could not run at all (no binary, no disk).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpdaterError(pub String);

/// Brings ClamAV's databases up to date from a mirror, verifying what it downloads (in AWS and
/// locally: Debian's freshclam, [`crate::freshclam::Freshclam`]; tests: fakes). `current` is
/// taken by value: with the official set it is hundreds of MB, and the caller keeps only hashes.
pub trait DefinitionsUpdater: Send + Sync {
    fn update(
        &self,
        current: Databases,
    ) -> impl std::future::Future<Output = Result<UpdateRun, UpdaterError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(text: &str) -> Vec<u8> {
        let mut bytes = text.as_bytes().to_vec();
        bytes.resize(HEADER_LEN, b' ');
        bytes.extend_from_slice(b"\x1f\x8b rest of the container");
        bytes
    }

    #[test]
    fn a_signed_cvd_header() {
        let h = CvdHeader::parse(&padded(
            "ClamAV-VDB:22 Jun 2021 21-34 -0400:6:14:81:3e249e00076b0b15bb54ced37be880c7:Dou6ICRT5Hw+/abc:micasnyd:1624412045",
        ))
        .unwrap();
        assert_eq!(h.build_time, "22 Jun 2021 21-34 -0400");
        assert_eq!(
            (h.version, h.signatures, h.functionality_level),
            (6, 14, 81)
        );
        assert_eq!(h.builder, "micasnyd");
        assert_eq!(h.built_at, Some(1_624_412_045));
        assert!(h.header_signed);
        assert_eq!(h.age_seconds(1_624_412_045 + 90_000), Some(90_000));
        assert_eq!(
            h.age_seconds(0),
            Some(0),
            "a clock behind the build is age 0"
        );
    }

    #[test]
    fn a_cld_header_has_x_for_md5_and_signature() {
        let h = CvdHeader::parse(&padded(
            "ClamAV-VDB:07 Dec 2026 07-55 +0000:27845:2071234:90:X:X:raynman:1796630100",
        ))
        .unwrap();
        assert!(!h.header_signed);
        assert_eq!(h.version, 27845);
        assert_eq!(h.built_at, Some(1_796_630_100));
    }

    #[test]
    fn an_old_header_without_stime() {
        let h = CvdHeader::parse(&padded(
            "ClamAV-VDB:01 Jan 2008 10-00 +0100:5000:100:30:X:X:sven",
        ))
        .unwrap();
        assert_eq!(h.built_at, None);
        assert_eq!(h.age_seconds(2_000_000_000), None);
    }

    #[test]
    fn bad_headers_are_named() {
        assert_eq!(
            CvdHeader::parse(b"PK\x03\x04"),
            Err(HeaderError::NotADatabase)
        );
        assert_eq!(CvdHeader::parse(b""), Err(HeaderError::NotADatabase));
        assert_eq!(
            CvdHeader::parse(&padded("ClamAV-VDB:x:1:2")),
            Err(HeaderError::TooFewFields(4))
        );
        assert!(matches!(
            CvdHeader::parse(&padded("ClamAV-VDB:t:six:14:81:X:X:b:1")),
            Err(HeaderError::NotANumber {
                field: "version",
                ..
            })
        ));
        assert!(matches!(
            CvdHeader::parse(&padded("ClamAV-VDB:t:6:14:81:X:X:b:soon")),
            Err(HeaderError::NotANumber { field: "stime", .. })
        ));
    }

    #[test]
    fn managed_files() {
        assert_eq!(managed("daily.cld"), Some(("daily", Container::Cld)));
        assert_eq!(managed("main.cvd"), Some(("main", Container::Cvd)));
        assert_eq!(managed("test.cvd"), Some(("test", Container::Cvd)));
        for other in [
            "pec-test.ndb",
            "pec-test.hdb",
            "daily.cud",
            "daily.cld.part",
            ".cvd",
            "a b.cvd",
            "freshclam.dat",
        ] {
            assert_eq!(managed(other), None, "{other}");
        }
    }

    #[test]
    fn the_marker_ages_by_its_newest_database() {
        let db = |file: &str, built_at| MarkedDatabase {
            file: file.into(),
            version: 1,
            signatures: 1,
            built_at,
        };
        let marker = Marker {
            files: BTreeMap::new(),
            databases: BTreeMap::from([
                ("main".to_string(), db("main.cvd", Some(1_000))),
                ("daily".to_string(), db("daily.cld", Some(5_000))),
                ("bytecode".to_string(), db("bytecode.cvd", None)),
            ]),
            checked_at: "2026-12-07T05:00:00Z".into(),
        };
        assert_eq!(marker.newest_build(), Some(5_000));
        assert_eq!(marker.age_seconds(5_060), Some(60));
        let text = serde_json::to_string(&marker).unwrap();
        assert_eq!(serde_json::from_str::<Marker>(&text).unwrap(), marker);
    }
}
