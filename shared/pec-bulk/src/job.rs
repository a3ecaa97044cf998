//! A job: what the sender asked for ([`JobSpec`], stored once when the job is made), the rows
//! that go, split into chunks the fan-out hands out, and the rows set aside ([`plan`]).
//!
//! Exactly once per recipient is the pipeline's (`pec_pipeline::bulk`): each row's submission
//! is claimed (`row` → submission id and time) before anything is written, and a retry of a
//! chunk finds the claim and writes the same objects again, which the raw bucket keeps once.

use std::ops::Range;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::list::{List, Row, Skipped};
use crate::message::AttachmentRef;
use crate::template::{Compiled, Rendered, Templates};

/// [`JobSpec::version`].
pub const JOB_VERSION: u32 = 1;
/// Rows per chunk unless the caller says otherwise: one chunk is one queue message, small
/// enough for a Lambda invocation to finish well inside its timeout at the tenant's pace.
pub const DEFAULT_CHUNK_ROWS: usize = 50;
/// The parent folder of the jobs' folders in the sender's mailbox.
pub const JOBS_FOLDER: &str = "Invii massivi";

/// A job as the sender made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub version: u32,
    /// [`valid_job_id`].
    pub id: String,
    pub tenant: String,
    /// The sending mailbox.
    pub sender: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// A name for people (the folder's name).
    pub name: String,
    pub templates: Templates,
    /// `completa`, `breve` or `sintetica`.
    pub receipt: String,
    #[serde(default)]
    pub attachments: Vec<AttachmentRef>,
    pub created_at: DateTime<Utc>,
    /// Rows to send.
    pub rows: usize,
    /// Rows set aside when the job was made.
    pub skipped: usize,
    pub chunk_rows: usize,
}

impl JobSpec {
    /// How many chunks the rows make.
    pub fn chunks(&self) -> usize {
        self.rows.div_ceil(self.chunk_rows.max(1))
    }

    /// The row indexes (0-based, into the job's rows) of chunk `n`.
    pub fn chunk(&self, n: usize) -> Range<usize> {
        let size = self.chunk_rows.max(1);
        let start = (n * size).min(self.rows);
        start..(start + size).min(self.rows)
    }

    /// The job's folder in the sender's mailbox: its receipts and notices, and nothing else.
    pub fn folder(&self) -> String {
        job_folder(&self.name, &self.id)
    }
}

/// `Invii massivi/<name> (<id>)`: the id keeps two jobs of the same name apart; the name's
/// accents are folded (folder names travel as ASCII to every IMAP client), `/` (the hierarchy
/// delimiter), `&` (modified UTF-7's shift) and control characters become spaces.
pub fn job_folder(name: &str, id: &str) -> String {
    let clean: String = deunicode::deunicode(name)
        .chars()
        .map(|c| {
            if c == '/' || c == '&' || c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let clean: String = clean.chars().take(80).collect();
    if clean.is_empty() {
        format!("{JOBS_FOLDER}/{id}")
    } else {
        format!("{JOBS_FOLDER}/{clean} ({id})")
    }
}

/// `job-` and 1 to 60 characters of `[A-Za-z0-9-]` (the id names objects and records).
pub fn valid_job_id(id: &str) -> bool {
    id.strip_prefix("job-").is_some_and(|rest| {
        (1..=60).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// A job id from the time it was made and 8 random bytes the caller draws.
pub fn new_job_id(now: DateTime<Utc>, random: [u8; 8]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("job-{}-{hex}", now.format("%Y%m%dT%H%M%SZ"))
}

/// The rows that go, the rows set aside (the list's and the templates'), and a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub rows: Vec<Row>,
    pub skipped: Vec<Skipped>,
    /// The first rows rendered: (row, address, text).
    pub preview: Vec<(usize, String, Rendered)>,
}

/// Renders every row once: a row whose message cannot be made is set aside with the reason,
/// before anything is sent.
pub fn plan(list: List, templates: &Compiled, preview: usize) -> Plan {
    let mut rows = Vec::with_capacity(list.rows.len());
    let mut skipped = list.skipped;
    let mut shown = Vec::new();
    for row in list.rows {
        match templates.render(&row) {
            Ok(r) => {
                if shown.len() < preview {
                    shown.push((row.row, row.address.clone(), r));
                }
                rows.push(row);
            }
            Err(reason) => skipped.push(Skipped {
                row: row.row,
                address: row.address.clone(),
                reason,
            }),
        }
    }
    skipped.sort_by_key(|s| s.row);
    Plan {
        rows,
        skipped,
        preview: shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::{Options, read};

    #[test]
    fn chunks_cover_every_row_once() {
        let mut spec = JobSpec {
            version: JOB_VERSION,
            id: "job-1".into(),
            tenant: "t".into(),
            sender: "a@x.it".into(),
            sender_name: None,
            name: "Solleciti / dicembre".into(),
            templates: Templates {
                subject: "s".into(),
                text: Some("t".into()),
                html: None,
            },
            receipt: "completa".into(),
            attachments: vec![],
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            rows: 101,
            skipped: 0,
            chunk_rows: 50,
        };
        assert_eq!(spec.chunks(), 3);
        assert_eq!(
            (0..spec.chunks())
                .map(|n| spec.chunk(n))
                .collect::<Vec<_>>(),
            [0..50, 50..100, 100..101]
        );
        assert_eq!(spec.folder(), "Invii massivi/Solleciti dicembre (job-1)");
        assert_eq!(
            job_folder("Città & più/2026", "job-2"),
            "Invii massivi/Citta piu 2026 (job-2)"
        );
        spec.rows = 0;
        assert_eq!(spec.chunks(), 0);
        assert_eq!(
            serde_json::from_slice::<JobSpec>(&serde_json::to_vec(&spec).unwrap()).unwrap(),
            spec
        );
    }

    #[test]
    fn job_ids() {
        let at = DateTime::parse_from_rfc3339("2026-12-08T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = new_job_id(at, [0xab; 8]);
        assert_eq!(id, "job-20261208T100000Z-abababababababab");
        assert!(valid_job_id(&id));
        assert!(!valid_job_id("job-"));
        assert!(!valid_job_id("job-a/b"));
        assert!(!valid_job_id("x-1"));
    }

    #[test]
    fn the_plan_sets_aside_rows_that_cannot_be_rendered() {
        let list = read(
            "l.csv",
            b"PEC;Nome\na@x.it;Mario\nb@x.it;\nc@x.it;Anna\nnot-one;x\n",
            &Options::default(),
        )
        .unwrap();
        let t = Compiled::new(
            &Templates {
                subject: "Per {{ Nome }}".into(),
                text: Some("ciao".into()),
                html: None,
            },
            &list.columns,
        )
        .unwrap();
        let p = plan(list, &t, 1);
        assert_eq!(p.rows.iter().map(|r| r.row).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(p.skipped.iter().map(|s| s.row).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(p.preview.len(), 1);
        assert_eq!(p.preview[0].2.subject, "Per Mario");
    }
}
