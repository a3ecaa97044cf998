//! Mailboxes over HTTP: the same folders, UIDs and flags IMAP shows (the [`MailStore`]), so a
//! message read here is the message a mail program reads.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use pec_core::classify::Kind;
use pec_ports::MailStore;
use pec_ports::access::Scope;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{mailbox_of, principal};
use crate::{App, Backend, Problem};

/// A mailbox, its plan and its quota.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxInfo {
    pub address: String,
    pub tenant: String,
    /// The plan (`base`, `standard`, `pro`, ...).
    pub plan: String,
    /// Octets allowed (plan plus expansions) and in use (every folder).
    pub quota_bytes: u64,
    pub used_bytes: u64,
    /// Locked or suspended: cannot send or receive.
    pub locked: bool,
}

/// One folder.
#[derive(Debug, Serialize, ToSchema)]
pub struct Folder {
    pub name: String,
    /// `sent`, `drafts`, `junk`, `trash` for the special folders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub special_use: Option<String>,
    pub messages: u32,
    pub unseen: u32,
    /// UIDs are valid as long as this does not change (as in IMAP).
    pub uid_validity: u32,
    pub uid_next: u32,
}

/// One message in a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageSummary {
    pub uid: u32,
    pub size: u64,
    /// IMAP flags (`\Seen`, `\Flagged`, ...) and keywords.
    pub flags: Vec<String>,
    /// When it entered the mailbox.
    pub received_at: DateTime<Utc>,
    /// `delivered` by the provider, or `appended` by the owner (Sent, drafts).
    pub origin: String,
    /// The PEC kind (`busta-trasporto` for a transport envelope, `accettazione`,
    /// `avvenuta-consegna`, ..., `ordinaria`).
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The PEC identificativo the message is or is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identificativo: Option<String>,
    /// `/v1/mailboxes/{address}/folders/{folder}/messages/{uid}`.
    pub href: String,
}

/// A page of messages, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<MessageSummary>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Paging and filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^[0-9]+\\.[0-9]+$")]
    pub cursor: Option<String>,
    /// At most this many (1 to 100, default 25).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only messages whose From address contains this (case-insensitive).
    #[param(max_length = 320)]
    pub from: Option<String>,
    /// Only messages whose subject contains this (case-insensitive).
    #[param(max_length = 900)]
    pub subject: Option<String>,
    /// Only the messages of this PEC identificativo (receipts, envelopes and notices of one
    /// message share it).
    #[param(max_length = 1000)]
    pub identificativo: Option<String>,
    /// Only this PEC kind (`busta-trasporto`, `accettazione`, `avvenuta-consegna`, ...,
    /// `ordinaria`).
    pub kind: Option<String>,
    /// Only messages received at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only messages received before this time (RFC 3339).
    pub before: Option<DateTime<Utc>>,
}

/// At most this many messages are examined for one page when content filters (`from`,
/// `subject`, `identificativo`, `kind`) are given; the page then ends early with a
/// `next_cursor` to go on from.
pub const SEARCH_SCAN: usize = 500;

fn special(s: Option<pec_ports::mailstore::SpecialUse>) -> Option<String> {
    s.map(|u| format!("{u:?}").to_ascii_lowercase())
}

/// A mailbox's plan and quota.
#[utoipa::path(get, path = "/v1/mailboxes/{address}", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address")),
    responses(
        (status = 200, description = "The mailbox", body = MailboxInfo),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn mailbox<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(address): Path<String>,
) -> Result<Json<MailboxInfo>, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Read)?;
    let m = mailbox_of(&app, &who, &address).await?;
    let quota = app.backend.mail().quota(&m.address).await?;
    Ok(Json(MailboxInfo {
        plan: serde_json::to_value(m.plan)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        address: m.address,
        tenant: m.tenant,
        quota_bytes: quota.limit,
        used_bytes: quota.used,
        locked: m.locked,
    }))
}

/// The mailbox's folders.
#[utoipa::path(get, path = "/v1/mailboxes/{address}/folders", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address")),
    responses(
        (status = 200, description = "The folders", body = [Folder]),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn folders<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(address): Path<String>,
) -> Result<Json<Vec<Folder>>, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Read)?;
    let m = mailbox_of(&app, &who, &address).await?;
    let folders = app.backend.mail().folders(&m.address).await?;
    Ok(Json(
        folders
            .into_iter()
            .map(|f| Folder {
                name: f.name,
                special_use: special(f.special_use),
                messages: f.messages,
                unseen: f.unseen,
                uid_validity: f.uid_validity,
                uid_next: f.uid_next,
            })
            .collect(),
    ))
}

/// A cursor: `<uid validity>.<uid>` (the next page starts below that UID).
fn parse_cursor(c: &str, validity: u32) -> Result<u32, Problem> {
    let bad = || {
        Problem::bad_request(
            "bad-cursor",
            "the cursor is not one this API gave, or the folder was recreated since",
        )
    };
    let (v, uid) = c.split_once('.').ok_or_else(bad)?;
    if v.parse::<u32>().ok() != Some(validity) {
        return Err(bad());
    }
    uid.parse().map_err(|_| bad())
}

/// A folder's messages, newest first, with their PEC kind, subject and sender; filtered by
/// sender, subject, identificativo, kind and date. A filtered page examines at most 500
/// messages: it may hold fewer than `limit` and still have a `next_cursor`.
#[utoipa::path(get, path = "/v1/mailboxes/{address}/folders/{folder}/messages", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address"),
        ("folder" = String, Path, description = "The folder name (`INBOX`, `Sent`, ...)"),
        ListQuery),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 400, description = "Bad cursor, limit or filter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox or folder", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((address, folder)): Path<(String, String)>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MessagePage>, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Read)?;
    let Query(q) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    let limit = match q.limit {
        None => 25,
        Some(n @ 1..=100) => n as usize,
        Some(n) => {
            return Err(Problem::bad_request(
                "bad-limit",
                format!("limit {n}: between 1 and 100"),
            ));
        }
    };
    let m = mailbox_of(&app, &who, &address).await?;
    let mail = app.backend.mail();
    let info = mail
        .folder(&m.address, &folder)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no folder {folder:?}")))?;
    let below = match &q.cursor {
        Some(c) => parse_cursor(c, info.uid_validity)?,
        None => u32::MAX,
    };
    if let Some(kind) = &q.kind
        && !Kind::ALL.iter().any(|k| k.as_str() == kind)
    {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(Problem::bad_request(
            "bad-query",
            format!("kind {kind:?}: one of {}", all.join(", ")),
        ));
    }
    for (name, value, max) in [
        ("from", &q.from, 320),
        ("subject", &q.subject, 900),
        ("identificativo", &q.identificativo, 1000),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(Problem::bad_request(
                "bad-query",
                format!("{name}: at most {max} characters"),
            ));
        }
    }
    let lower = |s: &Option<String>| s.as_ref().map(|v| v.to_lowercase());
    let (from, subject) = (lower(&q.from), lower(&q.subject));
    let searching =
        from.is_some() || subject.is_some() || q.identificativo.is_some() || q.kind.is_some();
    let mut all = mail.messages(&m.address, &folder).await?;
    all.retain(|x| {
        x.uid < below
            && q.since.is_none_or(|t| x.internal_date >= t)
            && q.before.is_none_or(|t| x.internal_date < t)
    });
    all.reverse();
    let mut messages = Vec::new();
    // The last UID examined, and whether older candidates remain after it.
    let mut last = None;
    let mut scanned = 0;
    for meta in &all {
        if messages.len() == limit || (searching && scanned == SEARCH_SCAN) {
            break;
        }
        scanned += 1;
        last = Some(meta.uid);
        let bytes = mail
            .read(&m.address, &folder, meta.uid)
            .await?
            .unwrap_or_default();
        let c = pec_core::classify::classify(&bytes);
        let sender = c.headers.from.first().cloned();
        let identificativo = c.daticert.as_ref().map(|d| d.dati.identificativo.clone());
        let contains = |have: &Option<String>, want: &Option<String>| match want {
            None => true,
            Some(w) => have.as_ref().is_some_and(|h| h.to_lowercase().contains(w)),
        };
        if !contains(&sender, &from)
            || !contains(&c.headers.subject, &subject)
            || q.identificativo
                .as_ref()
                .is_some_and(|i| identificativo.as_ref() != Some(i))
            || q.kind.as_ref().is_some_and(|k| k != c.kind.as_str())
        {
            continue;
        }
        messages.push(MessageSummary {
            uid: meta.uid,
            size: meta.size,
            flags: meta.flags.iter().cloned().collect(),
            received_at: meta.internal_date,
            origin: match meta.origin {
                pec_ports::mailstore::Origin::Delivered => "delivered",
                pec_ports::mailstore::Origin::Appended => "appended",
            }
            .into(),
            kind: c.kind.as_str().into(),
            subject: c.headers.subject.clone(),
            from: sender,
            identificativo,
            href: format!(
                "/v1/mailboxes/{}/folders/{}/messages/{}",
                m.address,
                encode_segment(&folder),
                meta.uid
            ),
        });
    }
    let more = scanned < all.len();
    let next_cursor = more
        .then(|| last.map(|uid| format!("{}.{}", info.uid_validity, uid)))
        .flatten();
    Ok(Json(MessagePage {
        messages,
        next_cursor,
    }))
}

/// Percent-encodes a path segment (folder names may hold `/`, spaces, anything).
pub(crate) fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One message as data: its PEC kind, headers, certification data and the original's parts.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageData {
    pub uid: u32,
    pub kind: String,
    /// In Italian, e.g. "busta di trasporto".
    pub description: String,
    #[schema(value_type = Object)]
    pub headers: serde_json::Value,
    /// The certification data, when the message carries a `daticert.xml`.
    #[schema(value_type = Object)]
    pub daticert: serde_json::Value,
    /// The parts of the original message (`postacert.eml` in an envelope, or the message
    /// itself): text, HTML and attachments by name, type and size.
    pub parts: Vec<Part>,
    pub flags: Vec<String>,
    /// `…/raw`: the bytes exactly as stored (`message/rfc822`).
    pub raw_href: String,
}

/// One part of the original.
#[derive(Debug, Serialize, ToSchema)]
pub struct Part {
    /// The part's number in the original (stable for the message).
    pub index: usize,
    /// `…/parts/{index}`: the part's decoded content, as an attachment.
    pub href: String,
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    pub size: usize,
    /// The text, for text parts of at most 1 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A UID from the path: `404` for anything but a positive number.
pub(crate) fn parse_uid(uid: &str) -> Result<u32, Problem> {
    uid.parse::<u32>()
        .ok()
        .filter(|u| *u > 0)
        .ok_or_else(|| Problem::not_found(format!("no message with UID {uid:?}")))
}

/// The caller's tenant, the mailbox address, the UID and the message's bytes (read scope).
async fn read_as<B: Backend>(
    app: &App<B>,
    headers: &HeaderMap,
    address: &str,
    folder: &str,
    uid: &str,
) -> Result<(String, String, u32, Vec<u8>), Problem> {
    let who = principal(app, headers).await?;
    who.require(Scope::Read)?;
    let m = mailbox_of(app, &who, address).await?;
    let uid = parse_uid(uid)?;
    let bytes = app
        .backend
        .mail()
        .read(&m.address, folder, uid)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no message with UID {uid} in {folder:?}")))?;
    Ok((who.tenant().to_string(), m.address, uid, bytes))
}

/// One message as data.
#[utoipa::path(get, path = "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address"),
        ("folder" = String, Path, description = "The folder name"),
        ("uid" = u32, Path, description = "The message UID")),
    responses(
        (status = 200, description = "The message", body = MessageData),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, folder or message", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn message<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((address, folder, uid)): Path<(String, String, String)>,
) -> Result<Json<MessageData>, Problem> {
    let (_, address, uid, bytes) = read_as(&app, &headers, &address, &folder, &uid).await?;
    let c = pec_core::classify::classify(&bytes);
    let original: &[u8] = c.postacert.as_deref().unwrap_or(&bytes);
    let mut parts = Vec::new();
    let base = format!(
        "/v1/mailboxes/{address}/folders/{}/messages/{uid}",
        encode_segment(&folder)
    );
    if let Some(msg) = mail_parser::MessageParser::default().parse(original) {
        for (index, part) in msg.parts.iter().enumerate() {
            if !is_leaf(part) {
                continue;
            }
            let ct = content_type(part);
            let size = part.contents().len();
            let text = match &part.body {
                mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t)
                    if size <= 1024 * 1024 =>
                {
                    Some(t.to_string())
                }
                _ => None,
            };
            use mail_parser::MimeHeaders;
            parts.push(Part {
                index,
                href: format!("{base}/parts/{index}"),
                content_type: ct,
                filename: part.attachment_name().map(str::to_string),
                size,
                text,
            });
        }
    }
    let flags = app
        .backend
        .mail()
        .messages(&address, &folder)
        .await?
        .into_iter()
        .find(|x| x.uid == uid)
        .map(|x| x.flags.into_iter().collect())
        .unwrap_or_default();
    Ok(Json(MessageData {
        uid,
        kind: c.kind.as_str().into(),
        description: c.description().into(),
        headers: serde_json::to_value(&c.headers).unwrap_or_default(),
        daticert: serde_json::to_value(&c.daticert).unwrap_or_default(),
        parts,
        flags,
        raw_href: format!("{base}/raw"),
    }))
}

/// A part worth listing: not a multipart container (a message/rfc822 attachment is one).
fn is_leaf(part: &mail_parser::MessagePart) -> bool {
    part.is_message() || !matches!(part.body, mail_parser::PartType::Multipart(_))
}

/// A part's `type/subtype`, lower case (`text/plain` when it declares none, RFC 2045 §5.2).
fn content_type(part: &mail_parser::MessagePart) -> String {
    use mail_parser::MimeHeaders;
    part.content_type()
        .map(|t| match t.subtype() {
            Some(s) => format!("{}/{}", t.ctype(), s),
            None => t.ctype().to_string(),
        })
        .unwrap_or_else(|| "text/plain".into())
        .to_ascii_lowercase()
}

/// `Content-Disposition: attachment` with the name as sent (RFC 6266: an ASCII fallback and the
/// UTF-8 form).
fn attachment_disposition(name: Option<&str>) -> String {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return "attachment".into();
    };
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// One part of the original, decoded (base64 and quoted-printable undone), as a download.
#[utoipa::path(get, path = "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}/parts/{index}", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address"),
        ("folder" = String, Path, description = "The folder name"),
        ("uid" = u32, Path, description = "The message UID"),
        ("index" = usize, Path, description = "The part's `index` in the message data")),
    responses(
        (status = 200, description = "The part's content, with the type it declares, as an attachment", content_type = "application/octet-stream", body = String),
        (status = 307, description = "Over 4 MiB: the same bytes at a storage URL (Location, valid 5 minutes)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, folder, message or part", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn part<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((address, folder, uid, index)): Path<(String, String, String, String)>,
) -> Result<Response, Problem> {
    let (tenant, _, _, bytes) = read_as(&app, &headers, &address, &folder, &uid).await?;
    let c = pec_core::classify::classify(&bytes);
    let original: &[u8] = c.postacert.as_deref().unwrap_or(&bytes);
    let missing = || Problem::not_found(format!("no part {index:?} in message {uid}"));
    let i: usize = index.parse().map_err(|_| missing())?;
    let msg = mail_parser::MessageParser::default()
        .parse(original)
        .ok_or_else(missing)?;
    let part = msg
        .parts
        .get(i)
        .filter(|p| is_leaf(p))
        .ok_or_else(missing)?;
    use mail_parser::MimeHeaders;
    let ct = content_type(part);
    // The declared type is the sender's word: never sniffed, never rendered in the API's
    // origin (an HTML attachment must not run as the API).
    let mut response = crate::download::answer(
        &app,
        crate::download::Download {
            bytes: part.contents().to_vec(),
            content_type: &ct,
            disposition: Some(attachment_disposition(part.attachment_name())),
            stored: None,
            tenant: &tenant,
        },
    )
    .await?;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    Ok(response)
}

/// One message's bytes exactly as stored.
#[utoipa::path(get, path = "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}/raw", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address"),
        ("folder" = String, Path, description = "The folder name"),
        ("uid" = u32, Path, description = "The message UID")),
    responses(
        (status = 200, description = "The message", content_type = "message/rfc822", body = String),
        (status = 307, description = "Over 4 MiB: the same bytes at a storage URL (Location, valid 5 minutes)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, folder or message", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn raw<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((address, folder, uid)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    let (tenant, _, uid, bytes) = read_as(&app, &headers, &address, &folder, &uid).await?;
    crate::download::answer(
        &app,
        crate::download::Download {
            bytes,
            content_type: "message/rfc822",
            disposition: Some(format!("attachment; filename=\"{uid}.eml\"")),
            stored: None,
            tenant: &tenant,
        },
    )
    .await
}
