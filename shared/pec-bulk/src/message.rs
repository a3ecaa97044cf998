//! One recipient's message: the rendered text, the job's attachments, our Message-ID, built
//! with `mail-builder` as the API builds a JSON submission.

use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use serde::{Deserialize, Serialize};

use crate::template::Rendered;

/// The delivery receipt the sender asks for (`X-TipoRicevuta`).
pub const RECEIPT_TYPES: [&str; 3] = ["completa", "breve", "sintetica"];

/// A file every message of the job carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// What one message is made of.
#[derive(Debug, Clone, Copy)]
pub struct Letter<'a> {
    pub from: &'a str,
    pub from_name: Option<&'a str>,
    pub to: &'a str,
    pub body: &'a Rendered,
    pub attachments: &'a [Attachment],
    /// One of [`RECEIPT_TYPES`].
    pub receipt: &'a str,
    /// The submission id (the Message-ID's left part).
    pub id: &'a str,
    pub hostname: &'a str,
    pub at: DateTime<Utc>,
}

/// Where a job's files are described (the bytes live in the raw bucket under the job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub filename: String,
    pub content_type: String,
    pub key: String,
    pub size: usize,
}

/// The message bytes (CRLF), without our trace field.
pub fn build(l: &Letter<'_>) -> Result<Vec<u8>, String> {
    let from: Address = match l.from_name {
        Some(name) => (name.to_string(), l.from.to_string()).into(),
        None => l.from.to_string().into(),
    };
    let mut m = MessageBuilder::new()
        .from(from)
        .to(Address::from(l.to.to_string()))
        .subject(l.body.subject.clone())
        .date(mail_builder::headers::date::Date::new(l.at.timestamp()))
        .message_id(format!("{}@{}", l.id, l.hostname))
        .header("X-TipoRicevuta", Raw::new(l.receipt.to_string()));
    if let Some(t) = &l.body.text {
        m = m.text_body(t.clone());
    }
    if let Some(h) = &l.body.html {
        m = m.html_body(h.clone());
    }
    for a in l.attachments {
        m = m.attachment(
            a.content_type.to_ascii_lowercase(),
            a.filename.clone(),
            a.bytes.clone(),
        );
    }
    m.write_to_vec()
        .map_err(|e| format!("building the message: {e}"))
}

/// Our trace field for a message of job `job`, put above the built bytes.
pub fn received_field(job: &str, hostname: &str, id: &str, at: DateTime<Utc>) -> String {
    format!(
        "Received: from bulk job {job}\r\n\tby {hostname} with HTTPS id {id};\r\n\t{}\r\n",
        at.to_rfc2822()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_parses_back() {
        let body = Rendered {
            subject: "Avviso n. 3 – Mario".into(),
            text: Some("Gentile Mario,\nriga due\n".into()),
            html: None,
        };
        let at = DateTime::parse_from_rfc3339("2026-12-08T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let pdf = Attachment {
            filename: "avviso.pdf".into(),
            content_type: "application/pdf".into(),
            bytes: b"%PDF-1.7 ...".to_vec(),
        };
        let bytes = build(&Letter {
            from: "ufficio@pec.example.it",
            from_name: Some("Ufficio"),
            to: "mario@pec.altro.it",
            body: &body,
            attachments: std::slice::from_ref(&pdf),
            receipt: "breve",
            id: "20261208T100000000Z-0011223344556677",
            hostname: "pec.example.it",
            at,
        })
        .unwrap();
        let m = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(m.subject(), Some("Avviso n. 3 – Mario"));
        assert_eq!(
            m.message_id(),
            Some("20261208T100000000Z-0011223344556677@pec.example.it")
        );
        assert_eq!(
            m.to().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("mario@pec.altro.it")
        );
        assert_eq!(m.header_raw("X-TipoRicevuta").map(str::trim), Some("breve"));
        // mail-builder writes CRLF line ends.
        assert_eq!(
            m.body_text(0).as_deref(),
            Some("Gentile Mario,\r\nriga due\r\n")
        );
        assert_eq!(
            m.attachment(0).map(|a| a.contents()),
            Some(&b"%PDF-1.7 ..."[..])
        );
        assert_eq!(m.date().map(|d| d.to_timestamp()), Some(at.timestamp()));
        let trace = received_field("job-1", "pec.example.it", "id-1", at);
        assert!(trace.starts_with("Received: from bulk job job-1\r\n\tby pec.example.it"));
        assert!(trace.ends_with("+0000\r\n"));
    }
}
