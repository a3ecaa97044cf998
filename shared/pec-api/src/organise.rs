//! Organising a mailbox over HTTP: flags, moving to another folder, deleting. The same
//! [`MailStore`] operations IMAP's STORE, MOVE and UID EXPUNGE use, so a mail program sees the
//! change at once (its next poll or IDLE).
//!
//! Credentials with the `read` scope (and mailbox sessions) may organise: the mailbox's content
//! is never changed, only where a message is filed and how it is marked. Deleting removes the
//! message from the mailbox for good (to keep it, move it to `Trash`); the provider's log and
//! the evidence bucket keep what the rules require whatever a user deletes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use pec_ports::MailStore;
use pec_ports::access::Scope;
use pec_ports::mailstore::{DELETED, FlagChange, Flags};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{mailbox_of, principal};
use crate::problem::FieldError;
use crate::{App, Backend, Problem};

/// The system flags of IMAP (RFC 9051 §2.3.2) a client may set, in their canonical case.
/// `\Recent` is the server's; `\Deleted` is set by deleting.
const SYSTEM_FLAGS: [&str; 4] = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft"];

/// A keyword is at most this long.
const MAX_KEYWORD: usize = 64;

/// At most this many flags in one change.
const MAX_FLAGS: usize = 32;

/// `PATCH .../messages/{uid}`: flags to add and to remove.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagsChange {
    /// System flags (`\Seen`, `\Answered`, `\Flagged`, `\Draft`) or keywords (IMAP atoms such
    /// as `$Forwarded` or `Protocollato`, at most 64 characters).
    #[serde(default)]
    #[schema(example = json!(["\\Seen", "Protocollato"]), max_items = 32)]
    pub add: Vec<String>,
    #[serde(default)]
    #[schema(example = json!(["\\Flagged"]), max_items = 32)]
    pub remove: Vec<String>,
}

/// A message's flags after a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageFlags {
    pub uid: u32,
    pub flags: Vec<String>,
}

/// `POST .../messages/{uid}/move`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The destination folder of the same mailbox.
    #[schema(example = "Archivio", max_length = 1000)]
    pub to: String,
}

/// Where a moved message is now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Moved {
    pub folder: String,
    /// Its UID in the destination folder (UIDs are per folder).
    pub uid: u32,
    pub uid_validity: u32,
    pub href: String,
}

/// A flag in its canonical form, or why it cannot be set.
fn flag(f: &str) -> Result<String, String> {
    if let Some(name) = f.strip_prefix('\\') {
        return SYSTEM_FLAGS
            .iter()
            .find(|s| s[1..].eq_ignore_ascii_case(name))
            .map(|s| s.to_string())
            .ok_or_else(|| {
                format!(
                    "{f:?} is not a system flag a client sets: one of {}",
                    SYSTEM_FLAGS.join(", ")
                )
            });
    }
    // An IMAP atom: no controls, spaces or atom-specials (RFC 9051 §9, `atom`).
    let atom = |c: char| c.is_ascii_graphic() && !"(){%*\"\\]".contains(c);
    if f.is_empty() || f.len() > MAX_KEYWORD || !f.chars().all(atom) {
        return Err(format!(
            "{f:?} is not a keyword: 1 to {MAX_KEYWORD} printable ASCII characters without spaces or ( ) {{ % * \" \\ ]"
        ));
    }
    Ok(f.to_string())
}

fn flags(list: &[String], pointer: &str, errors: &mut Vec<FieldError>) -> Flags {
    if list.len() > MAX_FLAGS {
        errors.push(FieldError::new(
            pointer,
            format!("at most {MAX_FLAGS} flags at once"),
        ));
        return Flags::new();
    }
    let mut out = Flags::new();
    for (i, f) in list.iter().enumerate() {
        match flag(f) {
            Ok(f) => {
                out.insert(f);
            }
            Err(e) => errors.push(FieldError::new(format!("{pointer}/{i}"), e)),
        }
    }
    out
}

/// The caller's mailbox (read scope) and the UID, once the message is known to exist.
async fn target<B: Backend>(
    app: &App<B>,
    headers: &HeaderMap,
    address: &str,
    folder: &str,
    uid: &str,
) -> Result<(String, u32, Flags), Problem> {
    let who = principal(app, headers).await?;
    who.require(Scope::Read)?;
    let m = mailbox_of(app, &who, address).await?;
    let uid = crate::mailbox::parse_uid(uid)?;
    let mail = app.backend.mail();
    if mail.folder(&m.address, folder).await?.is_none() {
        return Err(Problem::not_found(format!("no folder {folder:?}")));
    }
    let meta = mail
        .messages(&m.address, folder)
        .await?
        .into_iter()
        .find(|x| x.uid == uid)
        .ok_or_else(|| Problem::not_found(format!("no message with UID {uid} in {folder:?}")))?;
    Ok((m.address, uid, meta.flags))
}

/// Add and remove flags (IMAP STORE).
#[utoipa::path(patch, path = "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}", operation_id = "change_flags", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address"),
        ("folder" = String, Path, description = "The folder name"),
        ("uid" = u32, Path, description = "The message UID")),
    request_body = FlagsChange,
    responses(
        (status = 200, description = "The message's flags now", body = MessageFlags),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, folder or message", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A flag that cannot be set", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_flags<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((address, folder, uid)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<MessageFlags>, Problem> {
    let (address, uid, mut now) = target(&app, &headers, &address, &folder, &uid).await?;
    let req: FlagsChange = crate::send::json_body(&headers, &body)?;
    let mut errors = Vec::new();
    let add = flags(&req.add, "/add", &mut errors);
    let remove = flags(&req.remove, "/remove", &mut errors);
    if let Some(both) = add.intersection(&remove).next() {
        errors.push(FieldError::new(
            "/remove",
            format!("{both:?} is both added and removed"),
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let mail = app.backend.mail();
    for (change, set) in [(FlagChange::Add, &add), (FlagChange::Remove, &remove)] {
        if set.is_empty() {
            continue;
        }
        match mail
            .store_flags(&address, &folder, &[uid], change, set)
            .await?
            .into_iter()
            .find(|(u, _)| *u == uid)
        {
            Some((_, f)) => now = f,
            // Expunged meanwhile (by IMAP, another request).
            None => {
                return Err(Problem::not_found(format!(
                    "no message with UID {uid} in {folder:?}"
                )));
            }
        }
    }
    Ok(Json(MessageFlags {
        uid,
        flags: now.into_iter().collect(),
    }))
}

/// Move a message to another folder of the mailbox (IMAP MOVE).
#[utoipa::path(post, path = "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}/move", operation_id = "move_message", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address"),
        ("folder" = String, Path, description = "The folder name"),
        ("uid" = u32, Path, description = "The message UID")),
    request_body = MoveRequest,
    responses(
        (status = 200, description = "Moved", body = Moved),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, folder, message or destination", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The destination is the folder itself", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown fields or a destination that is not a string", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn move_message<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((address, folder, uid)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Moved>, Problem> {
    let (address, uid, _) = target(&app, &headers, &address, &folder, &uid).await?;
    let req: MoveRequest = crate::send::json_body(&headers, &body)?;
    let mail = app.backend.mail();
    let dest = mail
        .folder(&address, &req.to)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no folder {:?} to move to", req.to)))?;
    if dest.name == folder
        || (pec_ports::mailstore::is_inbox(&dest.name) && pec_ports::mailstore::is_inbox(&folder))
    {
        return Err(Problem::conflict(
            "same-folder",
            format!("the message is already in {folder:?}"),
        ));
    }
    let moved = mail
        .move_messages(&address, &folder, &[uid], &dest.name)
        .await?;
    let new_uid = moved
        .pairs
        .iter()
        .find(|(from, _)| *from == uid)
        .map(|(_, to)| *to)
        .ok_or_else(|| Problem::not_found(format!("no message with UID {uid} in {folder:?}")))?;
    Ok(Json(Moved {
        href: format!(
            "/v1/mailboxes/{address}/folders/{}/messages/{new_uid}",
            crate::mailbox::encode_segment(&dest.name)
        ),
        folder: dest.name,
        uid: new_uid,
        uid_validity: moved.uid_validity,
    }))
}

/// Delete a message from the mailbox for good (IMAP `\Deleted` and UID EXPUNGE of that message
/// only); its octets leave the quota. To keep it, move it to `Trash` instead.
#[utoipa::path(delete, path = "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}", operation_id = "delete_message", tag = "mailboxes", security(("bearer" = [])),
    params(("address" = String, Path, description = "The mailbox address"),
        ("folder" = String, Path, description = "The folder name"),
        ("uid" = u32, Path, description = "The message UID")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, folder or message", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_message<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((address, folder, uid)): Path<(String, String, String)>,
) -> Result<StatusCode, Problem> {
    let (address, uid, _) = target(&app, &headers, &address, &folder, &uid).await?;
    let mail = app.backend.mail();
    let deleted = Flags::from([DELETED.to_string()]);
    mail.store_flags(&address, &folder, &[uid], FlagChange::Add, &deleted)
        .await?;
    let gone = mail.expunge(&address, &folder, Some(&[uid])).await?;
    if !gone.contains(&uid) {
        return Err(Problem::not_found(format!(
            "no message with UID {uid} in {folder:?}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::flag;

    #[test]
    fn flags_are_canonical_or_refused() {
        assert_eq!(flag("\\seen").unwrap(), "\\Seen");
        assert_eq!(flag("\\FLAGGED").unwrap(), "\\Flagged");
        assert_eq!(flag("$Forwarded").unwrap(), "$Forwarded");
        assert_eq!(flag("Protocollato").unwrap(), "Protocollato");
        for bad in [
            "\\Recent",
            "\\Deleted",
            "\\Nope",
            "",
            "two words",
            "a(b",
            "quo\"te",
            "città",
            "x\r\nA001 LOGOUT",
            &"k".repeat(65),
        ] {
            assert!(flag(bad).is_err(), "{bad:?}");
        }
    }
}
