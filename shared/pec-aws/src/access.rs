//! [`AccessStore`] on the state table (the integration API's sessions, API keys and
//! idempotency records; layout in docs/data-model.md):
//!
//! | item | pk | sk | other |
//! |---|---|---|---|
//! | session token | `SESSION#<sha256>` | `SESSION` | doc, `expires_at` (TTL) |
//! | API key | `APIKEY#<id>` | `APIKEY` | doc, `last_used_at`; gsi1 `TENANT#<id>` / `APIKEY#<id>` |
//! | idempotency | `IDEM#<scope>#<key>` | `IDEM` | doc, `expires_at` (TTL) |
//! | request counter | `RATE#<key/id or mailbox/address>` | window start (RFC 3339) | `requests`, `expires_at` (TTL) |
//!
//! DynamoDB's TTL deletes expired items only eventually, so every read also checks the expiry.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pec_ports::StateError;
use pec_ports::access::{AccessStore, ApiKey, IdempotencyRecord, Session};

use crate::DynamoState;
use crate::state::{Item, n, s, to_doc};

fn session_pk(hash: &str) -> String {
    format!("SESSION#{hash}")
}

fn key_pk(id: &str) -> String {
    format!("APIKEY#{id}")
}

fn idem_pk(scope: &str, key: &str) -> String {
    format!("IDEM#{scope}#{key}")
}

fn epoch(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

impl DynamoState {
    fn decode_key(&self, item: &Item) -> Result<ApiKey, StateError> {
        let mut key: ApiKey = self.decode_doc(item)?;
        if let Some(t) = item
            .get("last_used_at")
            .and_then(|v| v.as_s().ok())
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        {
            key.last_used_at = Some(t.with_timezone(&Utc));
        }
        if let Some(t) = item
            .get("revoked_at")
            .and_then(|v| v.as_s().ok())
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        {
            key.revoked_at = Some(t.with_timezone(&Utc));
        }
        if let Some(t) = item
            .get("expires_at")
            .and_then(|v| v.as_s().ok())
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        {
            key.expires_at = Some(t.with_timezone(&Utc));
        }
        Ok(key)
    }

    /// Sets a time (`:t`) on a tenant's key with `update`, under `extra` conditions besides the
    /// key existing for that tenant; `false` when a condition failed (nothing changed).
    async fn set_key_time(
        &self,
        tenant: &str,
        id: &str,
        update: &str,
        extra: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key_pk(id)))
            .key("sk", s("APIKEY"))
            .update_expression(update)
            .condition_expression(format!("attribute_exists(pk) AND gsi1pk = :tenant{extra}"))
            .expression_attribute_values(":t", s(at.to_rfc3339()))
            .expression_attribute_values(":tenant", s(format!("TENANT#{tenant}")))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }

    fn duplicate(&self, what: &str) -> StateError {
        StateError {
            operation: "PutItem",
            table: self.table.clone(),
            message: format!("{what} already exists"),
        }
    }
}

impl AccessStore for DynamoState {
    async fn put_session(&self, session: &Session) -> Result<(), StateError> {
        let item = HashMap::from([
            ("pk".into(), s(session_pk(&session.token_hash))),
            ("sk".into(), s("SESSION")),
            ("doc".into(), to_doc(session)),
            ("expires_at".into(), n(epoch(session.expires_at))),
        ]);
        if self.put_new(item).await? {
            Ok(())
        } else {
            Err(self.duplicate("session"))
        }
    }

    async fn session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StateError> {
        let Some(item) = self.get(&session_pk(token_hash), "SESSION").await? else {
            return Ok(None);
        };
        let session: Session = self.decode_doc(&item)?;
        Ok((session.expires_at > now).then_some(session))
    }

    async fn take_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StateError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(session_pk(token_hash)))
            .key("sk", s("SESSION"))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| self.err("DeleteItem", e))?;
        // DeleteItem returns the old item only to the request that deleted it: of two
        // concurrent takes, one gets the session and the other nothing.
        match out.attributes {
            Some(item) if !item.is_empty() => {
                let session: Session = self.decode_doc(&item)?;
                Ok((session.expires_at > now).then_some(session))
            }
            _ => Ok(None),
        }
    }

    async fn put_api_key(&self, key: &ApiKey) -> Result<(), StateError> {
        let item = HashMap::from([
            ("pk".into(), s(key_pk(&key.id))),
            ("sk".into(), s("APIKEY")),
            ("doc".into(), to_doc(key)),
            ("gsi1pk".into(), s(format!("TENANT#{}", key.tenant))),
            ("gsi1sk".into(), s(key_pk(&key.id))),
        ]);
        if self.put_new(item).await? {
            Ok(())
        } else {
            Err(self.duplicate("api key"))
        }
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StateError> {
        match self.get(&key_pk(id), "APIKEY").await? {
            Some(item) => self.decode_key(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StateError> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :pk AND begins_with(gsi1sk, :p)")
                .expression_attribute_values(":pk", s(format!("TENANT#{tenant}")))
                .expression_attribute_values(":p", s("APIKEY#"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.err("Query", e))?;
            for item in out.items() {
                keys.push(self.decode_key(item)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn touch_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<(), StateError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key_pk(id)))
            .key("sk", s("APIKEY"))
            .update_expression("SET last_used_at = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", s(at.to_rfc3339()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }

    async fn revoke_api_key(
        &self,
        tenant: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        self.set_key_time(
            tenant,
            id,
            "SET revoked_at = if_not_exists(revoked_at, :t)",
            "",
            at,
        )
        .await
    }

    async fn expire_api_key(
        &self,
        tenant: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        self.set_key_time(
            tenant,
            id,
            "SET expires_at = :t",
            " AND attribute_not_exists(revoked_at) AND attribute_not_exists(expires_at)",
            at,
        )
        .await
    }

    async fn claim_idempotency(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<IdempotencyRecord, StateError> {
        let pk = idem_pk(&record.scope, &record.key);
        let item: Item = HashMap::from([
            ("pk".into(), s(pk.clone())),
            ("sk".into(), s("IDEM")),
            ("doc".into(), to_doc(record)),
            ("expires_at".into(), n(epoch(record.expires_at))),
        ]);
        // Recorded unless a live record exists (an expired one not yet removed by TTL is
        // replaced).
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
            .expression_attribute_values(":now", n(epoch(record.created_at)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(record.clone()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                let item = self.get(&pk, "IDEM").await?.ok_or_else(|| StateError {
                    operation: "GetItem",
                    table: self.table.clone(),
                    message: format!("{pk}: condition failed but no item"),
                })?;
                self.decode_doc(&item)
            }
            Err(e) => Err(self.err("PutItem", e)),
        }
    }

    async fn count_request(
        &self,
        caller: &str,
        window: DateTime<Utc>,
        limit: u32,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        // One item per caller and window: ADD under a condition, so every API instance counts
        // on the same counter and a refused request is not counted.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("RATE#{caller}")))
            .key("sk", s(window.to_rfc3339()))
            .update_expression("ADD requests :one SET expires_at = :exp")
            .condition_expression("attribute_not_exists(requests) OR requests < :limit")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(u64::from(limit)))
            .expression_attribute_values(":exp", n(epoch(expires_at)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }
}
