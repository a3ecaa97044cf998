//! A sent message: its state per recipient and its evidence (every receipt and notice, as the
//! signed `.eml` or as data).
//!
//! The state comes from the records the pipeline keeps (message, recipient outcomes at our
//! mailboxes, relayed recipients with what came back from other providers and our timeout
//! notices); the evidence from the evidence bucket: what we signed about the message
//! (`signed/msg/<id>/…`), what other providers sent about it (`received/msg/<id>/…`) and the
//! antivirus notices (`signed/scan/submitted/<id>.eml/…`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use pec_core::submission::{SubmissionEnvelope, envelope_key, message_key, valid_id};
use pec_ports::access::Scope;
use pec_ports::keys::{
    DELIVERED_TAG, NOT_DELIVERED_TAG, RECEIVED_PREFIX, SIGNED_PREFIX, TIMEOUT_12H_TAG,
    TIMEOUT_24H_TAG,
};
use pec_ports::{ObjectStore, StateStore};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, principal};
use crate::{App, Backend, Problem};

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientState {
    /// Not yet past the access point (scan running, or just submitted).
    Pending,
    /// The access point refused the message (avviso di non accettazione).
    Rejected,
    /// A virus was found: not accepted (avviso di non accettazione per virus).
    Virus,
    /// Sent on to the recipient's provider; nothing back yet.
    Dispatched,
    /// The recipient's provider took it in charge (ricevuta di presa in carico).
    TakenInCharge,
    /// No delivery receipt after 12 hours (first timeout notice; not final).
    Timeout12h,
    /// No delivery receipt after 24 hours (final: avviso di mancata consegna per superamento
    /// dei tempi massimi).
    Timeout24h,
    /// Delivered (ricevuta di avvenuta consegna).
    Delivered,
    /// Not delivered (avviso di mancata consegna); `reason` says why.
    NotDelivered,
}

/// One recipient.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecipientStatus {
    pub address: String,
    /// A PEC mailbox (`true`) or an ordinary address.
    pub certified: bool,
    pub state: RecipientState,
    /// Whether `state` is final (no further receipt will change it).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// For `not-delivered`: `unknown-user`, `mailbox-full`, `mailbox-disabled`, or
    /// `reported-by-provider` (the other provider's notice says why: see the evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the state was reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

/// One piece of evidence.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Evidence {
    /// Its name under the message (`accettazione.eml`, `consegna/<recipient>.eml`,
    /// `received/<id>.eml`, `scan/<notice>.eml`).
    pub name: String,
    /// What it is: `accettazione`, `non-accettazione`, `busta-trasporto`, `avvenuta-consegna`,
    /// `mancata-consegna`, `timeout-12h`, `timeout-24h`, `virus`, `received` (sent by the
    /// recipient's provider: presa in carico, consegna, errore).
    pub kind: String,
    /// The recipient it is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Download as `message/rfc822` (the signed bytes), or as JSON with `?format=json`.
    pub href: String,
}

/// A submitted message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageStatus {
    pub id: String,
    /// The PEC identificativo, once the access point gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identificativo: Option<String>,
    /// `submitted` (the access point has not seen it yet), `scanning`, `accepted`,
    /// `rejected`, `virus`.
    pub state: String,
    pub submitted_at: DateTime<Utc>,
    pub sender: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub recipients: Vec<RecipientStatus>,
    pub evidence: Vec<Evidence>,
}

fn evidence_kind(rest: &str) -> (String, Option<String>) {
    if let Some((tag, file)) = rest.split_once('/') {
        let who = file.strip_suffix(".eml").unwrap_or(file).to_string();
        let kind = match tag {
            DELIVERED_TAG => "avvenuta-consegna",
            NOT_DELIVERED_TAG => "mancata-consegna",
            TIMEOUT_12H_TAG => "timeout-12h",
            TIMEOUT_24H_TAG => "timeout-24h",
            other => other,
        };
        return (kind.to_string(), Some(who));
    }
    (rest.strip_suffix(".eml").unwrap_or(rest).to_string(), None)
}

/// What the evidence bucket holds about submission `id`: (name, key).
async fn evidence_keys<B: Backend>(
    app: &App<B>,
    id: &str,
) -> Result<Vec<(String, String)>, Problem> {
    let bucket = &app.settings.evidence_bucket;
    let objects = app.backend.objects();
    let mut out = Vec::new();
    let signed = format!("{SIGNED_PREFIX}msg/{id}/");
    for key in objects.list_keys(bucket, &signed).await? {
        out.push((key[signed.len()..].to_string(), key));
    }
    let received = format!("{RECEIVED_PREFIX}msg/{id}/");
    for key in objects.list_keys(bucket, &received).await? {
        out.push((format!("received/{}", &key[received.len()..]), key));
    }
    let scan = format!("{SIGNED_PREFIX}scan/{}/", message_key(id));
    for key in objects.list_keys(bucket, &scan).await? {
        out.push((format!("scan/{}", &key[scan.len()..]), key));
    }
    Ok(out)
}

/// The message if the caller may see it (`404` otherwise, also for another tenant's).
async fn visible<B: Backend>(
    app: &App<B>,
    who: &Principal,
    id: &str,
) -> Result<(Option<pec_ports::MessageRecord>, SubmissionEnvelope), Problem> {
    let missing = || Problem::not_found(format!("no message {id:?}"));
    if !valid_id(id) {
        return Err(missing());
    }
    let bytes = app
        .backend
        .objects()
        .get(&app.settings.raw_bucket, &envelope_key(id))
        .await?
        .ok_or_else(missing)?;
    let envelope = SubmissionEnvelope::from_json(&bytes)
        .map_err(|e| Problem::unavailable(format!("envelope of {id}: {e}")))?;
    if !who.sees(&envelope.user, &envelope.tenant) {
        return Err(missing());
    }
    Ok((app.backend.state().message(id).await?, envelope))
}

/// The state of a sent message, per recipient, with its evidence.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "The submission id")),
    responses(
        (status = 200, description = "The message", body = MessageStatus),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn status<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<MessageStatus>, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Read)?;
    let (record, envelope) = visible(&app, &who, &id).await?;
    let evidence_keys = evidence_keys(&app, &id).await?;
    let virus = evidence_keys.iter().any(|(n, _)| n.starts_with("scan/"));
    let state = match (&record, virus) {
        (_, true) => "virus",
        (None, false) => "submitted",
        (Some(r), false) => r.state.as_str(),
    }
    .to_string();
    let db = app.backend.state();
    let mut recipients = Vec::new();
    for address in &envelope.recipients {
        let r = pec_pipeline::standing::recipient(db, &id, record.as_ref(), virus, address)
            .await
            .map_err(|e| Problem::unavailable(format!("the state of {id}: {e}")))?;
        use pec_pipeline::standing::Standing;
        recipients.push(RecipientStatus {
            address: r.address,
            certified: r.certified,
            state: match r.standing {
                Standing::Pending => RecipientState::Pending,
                Standing::Rejected => RecipientState::Rejected,
                Standing::Virus => RecipientState::Virus,
                Standing::Dispatched => RecipientState::Dispatched,
                Standing::TakenInCharge => RecipientState::TakenInCharge,
                Standing::Timeout12h => RecipientState::Timeout12h,
                Standing::Timeout24h => RecipientState::Timeout24h,
                Standing::Delivered => RecipientState::Delivered,
                Standing::NotDelivered => RecipientState::NotDelivered,
            },
            is_final: r.is_final,
            reason: r.reason,
            at: r.at,
        });
    }
    let evidence = evidence_keys
        .into_iter()
        .map(|(name, _)| {
            let (kind, recipient) = if name.starts_with("received/") {
                ("received".to_string(), None)
            } else if name.starts_with("scan/") {
                ("virus".to_string(), None)
            } else {
                evidence_kind(&name)
            };
            Evidence {
                href: format!("/v1/messages/{id}/evidence/{name}"),
                name,
                kind,
                recipient,
            }
        })
        .collect();
    Ok(Json(MessageStatus {
        identificativo: record.as_ref().map(|r| r.identificativo.clone()),
        subject: record.as_ref().map(|r| r.subject.clone()),
        id,
        state,
        submitted_at: envelope.received_at,
        sender: envelope.reverse_path,
        recipients,
        evidence,
    }))
}

/// `?format=json` asks for the data instead of the bytes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Format {
    /// `eml` (default: the signed message as `message/rfc822`) or `json`.
    #[param(pattern = "^(eml|json)$")]
    pub format: Option<String>,
}

/// A receipt as data.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceData {
    pub name: String,
    /// The PEC kind (`accettazione`, `avvenuta-consegna`, ...).
    pub kind: String,
    /// In Italian, e.g. "ricevuta di avvenuta consegna".
    pub description: String,
    /// The certification data (`daticert.xml`).
    #[schema(value_type = Object)]
    pub daticert: serde_json::Value,
    /// The PEC headers.
    #[schema(value_type = Object)]
    pub headers: serde_json::Value,
    /// The signature checked against the provider index and the accredited roots.
    pub signature: SignatureVerdict,
    /// Anything unusual in the message.
    pub anomalies: Vec<String>,
    /// SHA-256 of the signed bytes (hex): what the `.eml` download must hash to.
    pub sha256: String,
}

/// A signature verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignatureVerdict {
    /// `valid`, or what is wrong.
    pub verdict: String,
    /// The detail, for people.
    pub detail: String,
    /// The signer certificate's subject.
    pub signer: Option<String>,
    /// The signature's signingTime.
    pub signing_time: Option<DateTime<Utc>>,
}

/// One piece of evidence: the signed `.eml`, or its data as JSON.
#[utoipa::path(get, path = "/v1/messages/{id}/evidence/{name}", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "The submission id"),
        ("name" = String, Path, description = "An evidence name from the message's `evidence` list"),
        Format),
    responses(
        (status = 200, description = "The signed message exactly as issued or received (`message/rfc822`), or with format=json the receipt as data",
            content((String = "message/rfc822"), (EvidenceData = "application/json"))),
        (status = 307, description = "Over 4 MiB: the same bytes at a storage URL (Location, valid 5 minutes)"),
        (status = 400, description = "Unknown format", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such evidence (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit of this credential: wait Retry-After seconds", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn evidence<B: Backend>(
    State(app): State<Arc<App<B>>>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    format: Result<Query<Format>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let who = principal(&app, &headers).await?;
    who.require(Scope::Read)?;
    let Query(format) = format.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    let json = match format.format.as_deref() {
        None | Some("eml") => false,
        Some("json") => true,
        Some(other) => {
            return Err(Problem::bad_request(
                "unknown-format",
                format!("format {other:?}: use eml or json"),
            ));
        }
    };
    visible(&app, &who, &id).await?;
    let keys = evidence_keys(&app, &id).await?;
    let missing = || Problem::not_found(format!("message {id} has no evidence {name:?}"));
    let (_, key) = keys
        .into_iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(missing)?;
    let bytes = app
        .backend
        .objects()
        .get(&app.settings.evidence_bucket, &key)
        .await?
        .ok_or_else(missing)?;
    if !json {
        let file = name.replace('/', "_").replace('"', "");
        return crate::download::answer(
            &app,
            crate::download::Download {
                bytes,
                content_type: "message/rfc822",
                disposition: Some(format!("attachment; filename=\"{file}\"")),
                stored: Some((&app.settings.evidence_bucket, &key)),
                tenant: who.tenant(),
            },
        )
        .await;
    }
    Ok(Json(evidence_data(&app, &name, &bytes).await?).into_response())
}

async fn evidence_data<B: Backend>(
    app: &App<B>,
    name: &str,
    bytes: &[u8],
) -> Result<EvidenceData, Problem> {
    let c = pec_core::classify::classify(bytes);
    let signature = match trust(app).await {
        Ok((index, anchors)) => {
            let v = pec_smime::verify_message(
                bytes,
                &anchors,
                Some(&index),
                &pec_smime::VerifyOptions::default(),
            );
            SignatureVerdict {
                verdict: serde_json::to_value(v.verdict)
                    .ok()
                    .and_then(|j| j.as_str().map(str::to_string))
                    .unwrap_or_default(),
                detail: v.reason.clone().unwrap_or_else(|| {
                    "signature, certification path and provider listing verified".into()
                }),
                signer: v.signer.as_ref().map(|c| c.subject.clone()),
                signing_time: v.signing_time,
            }
        }
        Err(why) => SignatureVerdict {
            verdict: "not-checked".into(),
            detail: why,
            signer: None,
            signing_time: None,
        },
    };
    Ok(EvidenceData {
        name: name.to_string(),
        kind: c.kind.as_str().to_string(),
        description: c.description().to_string(),
        daticert: serde_json::to_value(&c.daticert).unwrap_or_default(),
        headers: serde_json::to_value(&c.headers).unwrap_or_default(),
        signature,
        anomalies: c.anomalies.iter().map(|a| format!("{a:?}")).collect(),
        sha256: crate::sha256_hex(bytes),
    })
}

/// The provider index and trust anchors from the evidence bucket.
async fn trust<B: Backend>(
    app: &App<B>,
) -> Result<(pec_smime::ProviderIndex, pec_smime::TrustAnchors), String> {
    let s = &app.settings;
    let get = |key: String| async move {
        app.backend
            .objects()
            .get(&s.evidence_bucket, &key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{key} is missing"))
    };
    let ldif = get(s.provider_index_key.clone()).await?;
    let pem = get(s.trust_anchors_key.clone()).await?;
    let index = pec_smime::ProviderIndex::from_ldif(&ldif).map_err(|e| e.to_string())?;
    let mut anchors = pec_smime::TrustAnchors::new();
    anchors.add_pem_bundle(&pem).map_err(|e| e.to_string())?;
    Ok((index, anchors))
}
