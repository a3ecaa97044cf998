//! `POST /v1/messages`: a PEC submitted over HTTP, into the same raw-bucket path as SMTP.
//!
//! Two forms: JSON ([`SendRequest`], built into a MIME message with `mail-builder`) or the
//! message itself (`Content-Type: message/rfc822`, the envelope read from its From, To and Cc).
//! Everything is checked before anything is written, so a refused request leaves nothing.
//!
//! **Idempotency.** With `Idempotency-Key`, the first request's answer is recorded (per mailbox
//! user or per tenant) for 24 hours: a retry with the same key and the same body gets the same
//! submission id, with another body `409`. The order of writes makes every crash point safe:
//! the message bytes (`submitted/<id>.eml`, announced to nobody), then the idempotency record
//! (holding the envelope), then the envelope (`submitted/<id>.json`, which starts the access
//! point). A retry after a crash finds the record and writes the envelope if it is missing.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use pec_core::submission::{ENVELOPE_VERSION, SubmissionEnvelope};
use pec_ports::ObjectStore;
use pec_ports::access::{AccessStore, IdempotencyRecord, Scope};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{ClientIp, Principal, client_ip, mailbox_of, principal};
use crate::problem::FieldError;
use crate::{App, Backend, Problem, sha256_hex};

/// Parses a JSON body: `415` unless `Content-Type` is JSON, `400` for malformed JSON, `422`
/// (with the field) for unknown or mistyped fields.
pub(crate) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Problem> {
    if !is_json(headers) {
        return Err(Problem::unsupported_media(
            "send Content-Type: application/json",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: Result<T, _> =
        serde::Deserialize::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    value.map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Problem::invalid(vec![FieldError::new(
                format!("/ (line {}, column {})", e.line(), e.column()),
                e.to_string(),
            )]),
            _ => Problem::bad_request("malformed-json", format!("the body is not valid JSON: {e}")),
        }
    })
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json(headers: &HeaderMap) -> bool {
    let t = media_type(headers);
    t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
}

/// The receipt the sender asks for (`X-TipoRicevuta`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptType {
    /// The delivery receipt carries the whole original message (the default).
    #[default]
    Completa,
    /// The delivery receipt carries the original's hashes instead of its attachments.
    Breve,
    /// The delivery receipt carries only the certification data.
    Sintetica,
}

impl ReceiptType {
    fn as_str(self) -> &'static str {
        match self {
            ReceiptType::Completa => "completa",
            ReceiptType::Breve => "breve",
            ReceiptType::Sintetica => "sintetica",
        }
    }
}

/// An attachment: inline in the request (`content`), or uploaded beforehand (`upload`, from
/// `POST /v1/uploads`: for files over a few MB). Exactly one of the two.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    #[schema(example = "fattura.pdf")]
    pub filename: String,
    /// Its media type; checked against the content for common formats.
    #[schema(example = "application/pdf")]
    pub content_type: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub content: Option<String>,
    /// The id of an upload of the caller's tenant whose file was `PUT`.
    #[schema(example = "up_Xk2m9QvT7cRw1pLs4dYh8A")]
    pub upload: Option<String>,
}

/// A PEC to send.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The sending mailbox. Defaults to the logged-in mailbox; required with an API key.
    #[schema(example = "ufficio@pec.example.it")]
    pub from: Option<String>,
    /// A display name for the sender.
    pub from_name: Option<String>,
    /// Recipients (PEC or ordinary addresses).
    #[schema(example = json!(["destinatario@pec.altro.it"]), min_items = 1, max_items = 500)]
    pub to: Vec<String>,
    #[serde(default)]
    #[schema(max_items = 499)]
    pub cc: Vec<String>,
    /// One line, without control characters.
    #[schema(min_length = 1, max_length = 900)]
    pub subject: String,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body (sent beside the text as `multipart/alternative`).
    pub html: Option<String>,
    /// The delivery receipt wanted (default `completa`).
    #[serde(default)]
    pub receipt: ReceiptType,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// What was submitted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The submission id: `GET /v1/messages/{id}` follows it.
    pub id: String,
    pub submitted_at: DateTime<Utc>,
    /// The envelope sender.
    pub from: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// `true` when this answers a retry with the same `Idempotency-Key`.
    pub replayed: bool,
    /// `/v1/messages/{id}`.
    pub status_url: String,
}

const MAX_RECIPIENTS: usize = 500;

fn check_address(pointer: String, a: &str, errors: &mut Vec<FieldError>) -> String {
    let a = a.trim().to_ascii_lowercase();
    if !pec_core::addr::is_addr_spec(&a) {
        errors.push(FieldError::new(
            pointer,
            format!("{a:?} is not an e-mail address"),
        ));
    }
    a
}

/// A header value a person typed: one line, no control characters.
fn check_line(pointer: &str, v: &str, max: usize, errors: &mut Vec<FieldError>) {
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        errors.push(FieldError::new(
            pointer,
            format!(
                "control character U+{:04X} (a line break?) is not allowed here",
                c as u32
            ),
        ));
    } else if v.chars().count() > max {
        errors.push(FieldError::new(
            pointer,
            format!("longer than {max} characters"),
        ));
    }
}

/// The media type a few well-known formats announce in their first bytes.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"%PDF-", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"MZ", "application/vnd.microsoft.portable-executable"),
        (b"\x7fELF", "application/x-executable"),
    ];
    MAGIC
        .iter()
        .find(|(m, _)| bytes.starts_with(m))
        .map(|(_, t)| *t)
}

/// A declared type that contradicts the content: a PDF that is not one, an executable under
/// any other name.
fn forged_type(declared: &str, bytes: &[u8]) -> Option<String> {
    let declared = declared.to_ascii_lowercase();
    let sniffed = sniff(bytes);
    let executable = matches!(
        sniffed,
        Some("application/vnd.microsoft.portable-executable" | "application/x-executable")
    );
    let generic = declared == "application/octet-stream";
    if executable
        && !generic
        && !declared.contains("executable")
        && !declared.contains("msdownload")
    {
        return Some(format!(
            "the content is an executable program, not {declared}"
        ));
    }
    let strict = ["application/pdf", "image/png", "image/jpeg", "image/gif"];
    if strict.contains(&declared.as_str()) && sniffed != Some(declared.as_str()) {
        return Some(format!("the content is not {declared}"));
    }
    None
}

pub(crate) fn valid_media_type(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    matches!(t.split_once('/'), Some((a, b)) if token(a) && token(b))
}

/// The files of the request's uploaded attachments, by attachment (`None` for inline ones):
/// each the bytes or why it cannot be used.
type Uploaded = Vec<Option<Result<Vec<u8>, FieldError>>>;

async fn fetch_uploads<B: Backend>(
    app: &App<B>,
    tenant: &str,
    req: &SendRequest,
    now: DateTime<Utc>,
) -> Result<Uploaded, Problem> {
    let mut out = Vec::with_capacity(req.attachments.len());
    for (i, a) in req.attachments.iter().enumerate() {
        out.push(match (&a.upload, &a.content) {
            (Some(up), None) => Some(
                crate::uploads::uploaded(app, tenant, up, &format!("/attachments/{i}/upload"), now)
                    .await?,
            ),
            _ => None,
        });
    }
    Ok(out)
}

/// The JSON form, checked and built into a message: (sender, recipients, bytes).
fn build(
    req: &SendRequest,
    uploaded: Uploaded,
    sender: &str,
    id: &str,
    at: DateTime<Utc>,
    hostname: &str,
    max: usize,
) -> Result<(Vec<String>, Vec<u8>), Problem> {
    let mut errors = Vec::new();
    if req.to.is_empty() {
        errors.push(FieldError::new("/to", "at least one recipient is needed"));
    }
    if req.to.len() + req.cc.len() > MAX_RECIPIENTS {
        errors.push(FieldError::new(
            "/to",
            format!("at most {MAX_RECIPIENTS} recipients"),
        ));
    }
    let to: Vec<String> = req
        .to
        .iter()
        .enumerate()
        .map(|(i, a)| check_address(format!("/to/{i}"), a, &mut errors))
        .collect();
    let cc: Vec<String> = req
        .cc
        .iter()
        .enumerate()
        .map(|(i, a)| check_address(format!("/cc/{i}"), a, &mut errors))
        .collect();
    check_line("/subject", &req.subject, 900, &mut errors);
    if req.subject.trim().is_empty() {
        errors.push(FieldError::new("/subject", "a PEC needs a subject"));
    }
    if let Some(n) = &req.from_name {
        check_line("/from_name", n, 200, &mut errors);
    }
    if req.text.is_none() && req.html.is_none() && req.attachments.is_empty() {
        errors.push(FieldError::new(
            "/text",
            "the message has no text, HTML or attachment",
        ));
    }
    let mut files = Vec::new();
    let mut total = 0usize;
    for ((i, a), upload) in req.attachments.iter().enumerate().zip(uploaded) {
        let p = |f: &str| format!("/attachments/{i}/{f}");
        check_line(&p("filename"), &a.filename, 255, &mut errors);
        if a.filename.trim().is_empty() || a.filename.contains(['/', '\\']) {
            errors.push(FieldError::new(
                p("filename"),
                "a file name without folders is needed",
            ));
        }
        if !valid_media_type(&a.content_type) {
            errors.push(FieldError::new(
                p("content_type"),
                format!("{:?} is not a media type (type/subtype)", a.content_type),
            ));
        }
        let bytes = match (&a.content, upload) {
            (Some(c), None) if a.upload.is_none() => base64::engine::general_purpose::STANDARD
                .decode(c.as_bytes())
                .map_err(|e| FieldError::new(p("content"), format!("not base64: {e}"))),
            (None, Some(up)) => up,
            _ => Err(FieldError::new(
                p("content"),
                "give the file as content (base64) or as an upload id, one of the two",
            )),
        };
        match bytes {
            Ok(bytes) => {
                if let Some(why) = forged_type(&a.content_type, &bytes) {
                    errors.push(FieldError::new(p("content_type"), why));
                }
                total += bytes.len();
                files.push(bytes);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    if total > max {
        return Err(Problem::too_large(format!(
            "the attachments total {total} octets; a PEC may carry at most {max}"
        )));
    }
    let from: Address = match &req.from_name {
        Some(name) => (name.clone(), sender.to_string()).into(),
        None => sender.to_string().into(),
    };
    let mut m = MessageBuilder::new()
        .from(from)
        .to(to
            .iter()
            .map(|a| Address::from(a.clone()))
            .collect::<Vec<_>>())
        .subject(req.subject.clone())
        .date(mail_builder::headers::date::Date::new(at.timestamp()))
        .message_id(format!("{id}@{hostname}"))
        .header("X-TipoRicevuta", Raw::new(req.receipt.as_str()));
    if !cc.is_empty() {
        m = m.cc(cc
            .iter()
            .map(|a| Address::from(a.clone()))
            .collect::<Vec<_>>());
    }
    if let Some(t) = &req.text {
        m = m.text_body(t.clone());
    }
    if let Some(h) = &req.html {
        m = m.html_body(h.clone());
    }
    for (a, bytes) in req.attachments.iter().zip(files) {
        m = m.attachment(
            a.content_type.to_ascii_lowercase(),
            a.filename.clone(),
            bytes,
        );
    }
    let bytes = m
        .write_to_vec()
        .map_err(|e| Problem::unavailable(format!("building the message: {e}")))?;
    let recipients = to.into_iter().chain(cc).collect();
    Ok((recipients, bytes))
}

/// The raw form: CRLF line ends (bare LF is converted, as files saved on Unix have them),
/// lines of at most 998 octets, and the envelope from the header.
fn raw_message(body: &[u8]) -> Result<(String, Vec<String>, Vec<u8>), Problem> {
    let mut bytes = Vec::with_capacity(body.len() + body.len() / 32);
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' && (i == 0 || body[i - 1] != b'\r') {
            bytes.push(b'\r');
        }
        if b == b'\r' && body.get(i + 1) != Some(&b'\n') {
            return Err(Problem::invalid(vec![FieldError::new(
                "/",
                "bare CR in the message (lines end with CRLF or LF)",
            )]));
        }
        bytes.push(b);
    }
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    if bytes.split(|&b| b == b'\n').any(|l| l.len() > 999) {
        return Err(Problem::invalid(vec![FieldError::new(
            "/",
            "a line is longer than 998 characters (RFC 5322 section 2.1.1)",
        )]));
    }
    let parsed = mail_parser::MessageParser::default()
        .parse_headers(&bytes)
        .ok_or_else(|| Problem::invalid(vec![FieldError::new("/", "not an e-mail message")]))?;
    let list = |a: Option<&mail_parser::Address>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address.as_deref())
                .map(|x| x.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
    };
    let from = list(parsed.from());
    let mut errors = Vec::new();
    let sender = match from.as_slice() {
        [one] => one.clone(),
        _ => {
            errors.push(FieldError::new(
                "/From",
                "exactly one From address is needed",
            ));
            String::new()
        }
    };
    let recipients: Vec<String> = list(parsed.to())
        .into_iter()
        .chain(list(parsed.cc()))
        .collect();
    if recipients.is_empty() {
        errors.push(FieldError::new("/To", "no recipient in To or Cc"));
    }
    for (i, r) in recipients.iter().enumerate() {
        if !pec_core::addr::is_addr_spec(r) {
            errors.push(FieldError::new(
                format!("/To/{i}"),
                format!("{r:?} is not an e-mail address"),
            ));
        }
    }
    if recipients.len() > MAX_RECIPIENTS {
        errors.push(FieldError::new(
            "/To",
            format!("at most {MAX_RECIPIENTS} recipients"),
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    Ok((sender, recipients, bytes))
}

/// Our trace field for a submission over HTTPS.
fn received_field(client_ip: &str, hostname: &str, id: &str, at: DateTime<Utc>) -> String {
    format!(
        "Received: from [{client_ip}]\r\n\tby {hostname} with HTTPS id {id};\r\n\t{}\r\n",
        at.to_rfc2822()
    )
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(Problem::bad_request(
            "bad-idempotency-key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Submit a PEC.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes a retry return the same submission (24 hours)")),
    request_body(content(
        (SendRequest = "application/json"),
        (String = "message/rfc822", example = "From: ufficio@pec.example.it\r\nTo: x@pec.altro.it\r\nSubject: Prova\r\n\r\nTesto\r\n"),
    )),
    responses(
        (status = 202, description = "Submitted: the access point takes it from here", body = Submitted,
            headers(("Location" = String, description = "/v1/messages/{id}"))),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to send from this mailbox", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such sending mailbox", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency-Key reused with another request", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor message/rfc822", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn send<B: Backend>(
    State(app): State<Arc<App<B>>>,
    ip: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Send)?;
    let body =
        body.map_err(|e| Problem::too_large(format!("the request body was refused: {e}")))?;
    let idem = idempotency_key(&headers)?;
    let now = app.now();
    let id = pec_submit::new_id(now);
    let hostname = &app.settings.hostname;
    let max = app.settings.max_message_bytes;
    let (sender, recipients, bytes) = match media_type(&headers).as_str() {
        "message/rfc822" => raw_message(&body)?,
        _ if is_json(&headers) => {
            let req: SendRequest = json_body(&headers, &body)?;
            let sender = match (&req.from, &who) {
                (Some(f), _) => f.trim().to_ascii_lowercase(),
                (None, Principal::Mailbox { address, .. }) => address.clone(),
                (None, Principal::Key { .. }) => {
                    return Err(Problem::invalid(vec![FieldError::new(
                        "/from",
                        "with an API key, say which mailbox sends",
                    )]));
                }
            };
            let uploaded = fetch_uploads(&app, who.tenant(), &req, now).await?;
            let (recipients, bytes) = build(&req, uploaded, &sender, &id, now, hostname, max)?;
            (sender, recipients, bytes)
        }
        other => {
            return Err(Problem::unsupported_media(format!(
                "{other:?}: send application/json or message/rfc822"
            )));
        }
    };
    if bytes.len() > max {
        return Err(Problem::too_large(format!(
            "the message is {} octets; a PEC may be at most {max}",
            bytes.len()
        )));
    }
    let domain = pec_submit::trace::trace_domain(hostname);
    if let Some(line) = pec_submit::trace::forged_received(&bytes, &domain) {
        return Err(Problem::invalid(vec![FieldError::new(
            "/Received",
            format!("a Received field names our servers but was not written by them: {line}"),
        )]));
    }
    let mailbox = mailbox_of(&app, &who, &sender).await?;
    if !mailbox.in_service() {
        return Err(Problem::forbidden(
            "mailbox-locked",
            format!("the mailbox {} is locked or suspended", mailbox.address),
        ));
    }
    let client = client_ip(&ip);
    let envelope = SubmissionEnvelope {
        receipts_folder: None,
        version: ENVELOPE_VERSION,
        id: id.clone(),
        received_at: now,
        user: mailbox.address.clone(),
        tenant: mailbox.tenant.clone(),
        reverse_path: mailbox.address.clone(),
        recipients,
        client_ip: client.clone(),
        tls: true,
    };
    let mut stored = received_field(&client, hostname, &id, now).into_bytes();
    stored.extend_from_slice(&bytes);
    let raw = &app.settings.raw_bucket;
    let objects = app.backend.objects();
    objects
        .put_if_absent(raw, &envelope.message_key(), stored, "message/rfc822")
        .await?;
    let mut answer = envelope.clone();
    let mut replayed = false;
    if let Some(key) = idem {
        let mut h = media_type(&headers).into_bytes();
        h.push(0);
        h.extend_from_slice(&body);
        let record = IdempotencyRecord {
            scope: who.idempotency_scope(),
            key,
            request_hash: sha256_hex(&h),
            submission_id: id.clone(),
            envelope_json: String::from_utf8_lossy(&envelope.to_json()).into_owned(),
            created_at: now,
            expires_at: now + app.settings.idempotency_ttl,
        };
        let held = app.backend.access().claim_idempotency(&record).await?;
        if held.submission_id != id {
            if held.request_hash != record.request_hash {
                return Err(Problem::conflict(
                    "idempotency-key-reused",
                    "this Idempotency-Key was used for a different request in the last 24 hours",
                ));
            }
            answer = SubmissionEnvelope::from_json(held.envelope_json.as_bytes())
                .map_err(|e| Problem::unavailable(format!("idempotency record: {e}")))?;
            replayed = true;
            tracing::info!(id = %answer.id, "idempotent retry");
        }
    }
    objects
        .put_if_absent(
            raw,
            &answer.envelope_key(),
            answer.to_json(),
            "application/json",
        )
        .await?;
    tracing::info!(id = %answer.id, user = %answer.user, recipients = answer.recipients.len(), "submitted over HTTPS");
    let location = format!("/v1/messages/{}", answer.id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Submitted {
            id: answer.id.clone(),
            submitted_at: answer.received_at,
            from: answer.reverse_path.clone(),
            recipients: answer.recipients.clone(),
            replayed,
            status_url: location.clone(),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_types_are_caught() {
        assert!(forged_type("application/pdf", b"%PDF-1.7 ...").is_none());
        assert!(forged_type("application/pdf", b"PK\x03\x04").is_some());
        assert!(forged_type("text/plain", b"MZ\x90\x00").is_some());
        assert!(forged_type("application/octet-stream", b"MZ\x90\x00").is_none());
        assert!(forged_type("text/plain", b"hello").is_none());
    }

    #[test]
    fn raw_messages_get_crlf_and_an_envelope() {
        let (from, rcpts, bytes) =
            raw_message(b"From: A <A@x.it>\nTo: b@y.it\nCc: c@z.it\nSubject: s\n\nbody").unwrap();
        assert_eq!(from, "a@x.it");
        assert_eq!(rcpts, ["b@y.it", "c@z.it"]);
        assert!(bytes.ends_with(b"body\r\n"));
        assert!(!bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        assert!(raw_message(b"From: a@x.it\r\nSubject: s\r\n\r\nb").is_err());
        assert!(raw_message(b"From: a@x.it\rTo: b@y.it\r\n\r\nb").is_err());
    }
}
