//! The gateway's production adapters (feature `aws`): accounts from the state table, and the
//! raw bucket as the sink.
//!
//! The sink writes `submitted/<id>.eml` (the bytes as received), then `submitted/<id>.json`
//! ([`SubmissionEnvelope`]); only the `.json` triggers the access point, so the message is
//! always in place when ingress reads it. Both writes are conditional: a retried `DATA` that
//! reaches the sink twice with the same id (it cannot: ids are random) would change nothing.

use pec_core::submission::{
    ENVELOPE_VERSION, INBOUND_PREFIX, InboundEnvelope, InboundVia, SubmissionEnvelope,
};
use pec_ports::{ObjectStore, StateStore};

use crate::mx::{Arrival, MxSink};
use crate::{Account, BoxFuture, CredentialError, Credentials, Sink, SinkError, Submission};

/// [`Credentials`] from the state table: the login name is the mailbox address (any case).
pub struct StateCredentials<Db> {
    state: Db,
}

impl<Db: StateStore> StateCredentials<Db> {
    /// Accounts read from `state`.
    pub fn new(state: Db) -> Self {
        Self { state }
    }
}

impl<Db: StateStore> Credentials for StateCredentials<Db> {
    fn lookup<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<Account>, CredentialError>> {
        Box::pin(async move {
            let address = username.trim().to_ascii_lowercase();
            if !pec_core::addr::is_addr_spec(&address) {
                return Ok(None);
            }
            let mailbox = self
                .state
                .mailbox(&address)
                .await
                .map_err(CredentialError::new)?;
            Ok(mailbox.map(|m| {
                // Locked, suspended, pending or revoked: no session.
                let locked = !m.in_service();
                // Told to any password only where the owner's own cannot match: a lock replaced
                // it. A pending mailbox (never activated) is not described to strangers.
                let refusal = m.refusal().map(|text| crate::Refusal {
                    text,
                    to_anyone: m.locked && m.password_hash == pec_ports::activation::NOT_ACTIVATED,
                });
                Account {
                    address: m.address,
                    tenant: m.tenant,
                    password_hash: m.password_hash,
                    locked,
                    refusal,
                }
            }))
        })
    }
}

/// [`Sink`] on the raw bucket.
pub struct RawBucketSink<St> {
    store: St,
    bucket: String,
}

impl<St: ObjectStore> RawBucketSink<St> {
    /// Submissions written to `bucket` through `store`.
    pub fn new(store: St, bucket: &str) -> Self {
        Self {
            store,
            bucket: bucket.to_string(),
        }
    }
}

/// The envelope recorded for `s`.
pub fn envelope_of(s: &Submission) -> SubmissionEnvelope {
    SubmissionEnvelope {
        receipts_folder: None,
        version: ENVELOPE_VERSION,
        id: s.id.clone(),
        received_at: s.received_at,
        user: s.user.clone(),
        tenant: s.tenant.clone(),
        reverse_path: s.reverse_path.clone(),
        recipients: s.recipients.clone(),
        client_ip: s.client_ip.clone(),
        tls: s.tls,
    }
}

impl<St: ObjectStore> Sink for RawBucketSink<St> {
    fn store<'a>(&'a self, s: &'a Submission) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let envelope = envelope_of(s);
            let (eml, json) = (envelope.message_key(), envelope.envelope_key());
            put_message_then_envelope(
                &self.store,
                &self.bucket,
                (&eml, s.stored()),
                (&json, envelope.to_json()),
            )
            .await?;
            tracing::info!(id = %s.id, user = %s.user, recipients = s.recipients.len(), bytes = s.raw.len(), "submission stored");
            Ok(())
        })
    }
}

/// Writes the message, then its envelope (the object that triggers the next step, so the
/// message is in place when it runs); both conditional, so a repeated call changes nothing.
async fn put_message_then_envelope<St: ObjectStore>(
    store: &St,
    bucket: &str,
    (eml_key, eml): (&str, Vec<u8>),
    (json_key, json): (&str, Vec<u8>),
) -> Result<(), SinkError> {
    store
        .put_if_absent(bucket, eml_key, eml, "message/rfc822")
        .await
        .map_err(SinkError::new)?;
    store
        .put_if_absent(bucket, json_key, json, "application/json")
        .await
        .map_err(SinkError::new)?;
    Ok(())
}

/// [`MxSink`] on the raw bucket: `inbound/<id>.eml` ([`Arrival::stored`]: `Return-Path`, our
/// `Received`, the message as received), then `inbound/<id>.json` ([`InboundEnvelope`] with
/// `via: mx`), which alone triggers the receiving point: the same objects SES receiving leads
/// to, so the receiving point is the same for both doors.
pub struct RawInboundSink<St> {
    store: St,
    bucket: String,
}

impl<St: ObjectStore> RawInboundSink<St> {
    /// Arrivals written to `bucket` through `store`.
    pub fn new(store: St, bucket: &str) -> Self {
        Self {
            store,
            bucket: bucket.to_string(),
        }
    }
}

/// The inbound envelope recorded for `a`.
pub fn inbound_envelope_of(a: &Arrival) -> InboundEnvelope {
    InboundEnvelope {
        version: ENVELOPE_VERSION,
        recipients: a.recipients.clone(),
        source: a.reverse_path.clone(),
        received_at: a.received_at,
        via: InboundVia::Mx,
    }
}

impl<St: ObjectStore> MxSink for RawInboundSink<St> {
    fn store<'a>(&'a self, a: &'a Arrival) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let eml = format!("{INBOUND_PREFIX}{}.eml", a.id);
            let json = format!("{INBOUND_PREFIX}{}.json", a.id);
            let envelope = inbound_envelope_of(a).to_json();
            put_message_then_envelope(
                &self.store,
                &self.bucket,
                (&eml, a.stored()),
                (&json, envelope),
            )
            .await?;
            tracing::info!(id = %a.id, sender = %a.reverse_path, recipients = a.recipients.len(), bytes = a.raw.len(), "arrival stored");
            Ok(())
        })
    }
}
