//! Webhooks in AWS: [`WebhookStore`] on the state table, and [`HttpsWebhooks`], the client that
//! posts deliveries.
//!
//! | item | pk | sk | other |
//! |---|---|---|---|
//! | subscription | `WHSUB#<id>` | `WHSUB` | doc (tenant, URL, events, secret); gsi1 `TENANT#<t>` / `WHSUB#<id>` |
//! | delivery | `WHDLV#<id>` | `WHDLV` | doc (event, payload), `status`, `attempts`, `started_at`, `next_attempt_at`, `log` (list of JSON attempts); gsi1 `WHSUB#<sub>` / `<created>#<id>` |
//!
//! **No request forgery.** The client resolves the endpoint's name itself and connects only to
//! the addresses it checked ([`pec_ports::webhooks::is_internal`] refuses loopback, private,
//! link-local and the other internal ranges unless private targets are allowed, which only the
//! local profile does), so a name that resolves differently later (DNS rebinding) cannot reach
//! inside. Redirects are not followed; each POST has 10 seconds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};
use pec_ports::StateError;
use pec_ports::webhooks::{
    Attempt, Delivery, DeliveryStatus, Post, Start, Subscription, WebhookClient, WebhookStore,
    check_url, is_internal,
};

use crate::DynamoState;
use crate::state::{Item, n, s, to_doc};

fn sub_pk(id: &str) -> String {
    format!("WHSUB#{id}")
}

fn dlv_pk(id: &str) -> String {
    format!("WHDLV#{id}")
}

impl DynamoState {
    fn decode_delivery(&self, item: &Item) -> Result<Delivery, StateError> {
        let mut d: Delivery = self.decode_doc(item)?;
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let time = |k: &str| {
            text(k)
                .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        if let Some(a) = item.get("attempts").and_then(|v| v.as_n().ok()) {
            d.attempts = a.parse().unwrap_or(d.attempts);
        }
        d.status = text("status")
            .as_deref()
            .and_then(DeliveryStatus::parse)
            .unwrap_or(DeliveryStatus::Pending);
        d.started_at = time("started_at");
        d.next_attempt_at = time("next_attempt_at");
        if let Some(log) = item.get("log").and_then(|v| v.as_l().ok()) {
            d.log = log
                .iter()
                .filter_map(|v| v.as_s().ok())
                .filter_map(|j| serde_json::from_str(j).ok())
                .collect();
        }
        Ok(d)
    }
}

impl WebhookStore for DynamoState {
    async fn put_subscription(&self, sub: &Subscription) -> Result<(), StateError> {
        let item = HashMap::from([
            ("pk".into(), s(sub_pk(&sub.id))),
            ("sk".into(), s("WHSUB")),
            ("doc".into(), to_doc(sub)),
            ("gsi1pk".into(), s(format!("TENANT#{}", sub.tenant))),
            ("gsi1sk".into(), s(sub_pk(&sub.id))),
        ]);
        if self.put_new(item).await? {
            Ok(())
        } else {
            Err(StateError {
                operation: "PutItem",
                table: self.table.clone(),
                message: format!("subscription {} exists", sub.id),
            })
        }
    }

    async fn subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, StateError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pk AND begins_with(gsi1sk, :p)")
            .expression_attribute_values(":pk", s(format!("TENANT#{tenant}")))
            .expression_attribute_values(":p", s("WHSUB#"))
            .send()
            .await
            .map_err(|e| self.err("Query", e))?;
        let mut v = Vec::new();
        for item in out.items() {
            v.push(self.decode_doc::<Subscription>(item)?);
        }
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StateError> {
        match self.get(&sub_pk(id), "WHSUB").await? {
            Some(item) => self.decode_doc(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn delete_subscription(&self, tenant: &str, id: &str) -> Result<bool, StateError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(sub_pk(id)))
            .key("sk", s("WHSUB"))
            .condition_expression("gsi1pk = :t")
            .expression_attribute_values(":t", s(format!("TENANT#{tenant}")))
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
            Err(e) => Err(self.err("DeleteItem", e)),
        }
    }

    async fn create_delivery(&self, d: &Delivery) -> Result<Delivery, StateError> {
        let mut item = HashMap::from([
            ("pk".into(), s(dlv_pk(&d.id))),
            ("sk".into(), s("WHDLV")),
            ("doc".into(), to_doc(d)),
            ("status".into(), s(d.status.as_str())),
            ("attempts".into(), n(u64::from(d.attempts))),
            ("log".into(), AttributeValue::L(Vec::new())),
            ("gsi1pk".into(), s(sub_pk(&d.subscription))),
            (
                "gsi1sk".into(),
                s(format!("{}#{}", d.created_at.to_rfc3339(), d.id)),
            ),
        ]);
        if let Some(t) = d.next_attempt_at {
            item.insert("next_attempt_at".into(), s(t.to_rfc3339()));
        }
        if self.put_new(item).await? {
            return Ok(d.clone());
        }
        self.delivery(&d.id).await?.ok_or_else(|| StateError {
            operation: "GetItem",
            table: self.table.clone(),
            message: format!("delivery {} vanished", d.id),
        })
    }

    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StateError> {
        match self.get(&dlv_pk(id), "WHDLV").await? {
            Some(item) => self.decode_delivery(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn start_attempt(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
        stale: DateTime<Utc>,
    ) -> Result<Start, StateError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(dlv_pk(id)))
            .key("sk", s("WHDLV"))
            .update_expression("SET attempts = :n, started_at = :now")
            .condition_expression(
                "#st = :pending AND (attempts = :prev OR (attempts = :n AND started_at < :stale))",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":n", n(u64::from(attempt)))
            .expression_attribute_values(":prev", n(u64::from(attempt.saturating_sub(1))))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":stale", s(stale.to_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => match out.attributes {
                Some(item) => self
                    .decode_delivery(&item)
                    .map(|d| Start::Started(Box::new(d))),
                None => Ok(Start::Done),
            },
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                // Which way the condition failed: a running attempt comes back later.
                Ok(match self.delivery(id).await? {
                    Some(d)
                        if d.status == DeliveryStatus::Pending
                            && d.attempts == attempt
                            && d.started_at.is_some() =>
                    {
                        Start::Running
                    }
                    _ => Start::Done,
                })
            }
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }

    async fn finish_attempt(
        &self,
        id: &str,
        attempt_no: u32,
        started: DateTime<Utc>,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StateError> {
        let entry = AttributeValue::L(vec![s(serde_json::to_string(attempt).unwrap_or_default())]);
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(dlv_pk(id)))
            .key("sk", s("WHDLV"))
            // Only the running attempt's own outcome (a late runner taken for crashed loses).
            .condition_expression("attempts = :n AND started_at = :started")
            // `status` and `log` are DynamoDB reserved words.
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#log", "log")
            .expression_attribute_values(":n", n(u64::from(attempt_no)))
            .expression_attribute_values(":started", s(started.to_rfc3339()))
            .expression_attribute_values(":st", s(status.as_str()))
            .expression_attribute_values(":a", entry)
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()));
        let expression = match next_attempt_at {
            Some(t) => {
                update = update.expression_attribute_values(":next", s(t.to_rfc3339()));
                "SET #st = :st, next_attempt_at = :next, #log = list_append(if_not_exists(#log, :empty), :a) REMOVE started_at"
            }
            None => {
                "SET #st = :st, #log = list_append(if_not_exists(#log, :empty), :a) REMOVE started_at, next_attempt_at"
            }
        };
        match update.update_expression(expression).send().await {
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

    async fn replay(&self, id: &str, now: DateTime<Utc>) -> Result<Option<Delivery>, StateError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(dlv_pk(id)))
            .key("sk", s("WHDLV"))
            .update_expression("SET #st = :pending, attempts = :zero, next_attempt_at = :now")
            .condition_expression("#st = :parked")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":parked", s("parked"))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => match out.attributes {
                Some(item) => self.decode_delivery(&item).map(Some),
                None => Ok(None),
            },
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }

    async fn deliveries(
        &self,
        subscription: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StateError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(sub_pk(subscription)))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(100))
            .send()
            .await
            .map_err(|e| self.err("Query", e))?;
        // The index projects every attribute: the log reads from it (eventually consistent).
        let mut v = Vec::new();
        for item in out.items() {
            v.push(self.decode_delivery(item)?);
        }
        Ok(v)
    }
}

/// Posts deliveries over HTTPS (and HTTP where private targets are allowed: locally).
#[derive(Clone)]
pub struct HttpsWebhooks {
    allow_private: bool,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<
            hyper_util::client::legacy::connect::HttpConnector<CheckedResolver>,
        >,
        http_body_util::Full<bytes::Bytes>,
    >,
}

/// Resolves names and keeps only the addresses a webhook may reach.
#[derive(Clone)]
pub struct CheckedResolver {
    allow_private: bool,
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let allow = self.allow_private;
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let ok: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| allow || !is_internal(a.ip()))
                .collect();
            if ok.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} resolves only to internal addresses ({all:?}): refused",
                        name.as_str()
                    ),
                ));
            }
            Ok(ok.into_iter())
        })
    }
}

impl HttpsWebhooks {
    /// A client; `allow_private` lets deliveries reach loopback and private addresses over
    /// plain HTTP too (the local profile only).
    pub fn new(allow_private: bool) -> Result<Self, std::io::Error> {
        let http = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(
            CheckedResolver { allow_private },
        );
        Ok(HttpsWebhooks {
            allow_private,
            client: https_client(http, Duration::from_secs(5), allow_private)?,
        })
    }
}

/// An HTTP/1 client over `http` with TLS from the system's roots: HTTPS only, or plain HTTP
/// too when `allow_http` (local stand-ins); connections time out after `connect_timeout`.
pub(crate) fn https_client<R, B>(
    mut http: hyper_util::client::legacy::connect::HttpConnector<R>,
    connect_timeout: Duration,
    allow_http: bool,
) -> Result<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector<R>>,
        B,
    >,
    std::io::Error,
>
where
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector<R>>:
        hyper_util::client::legacy::connect::Connect + Clone,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_native_roots()?;
    let https = if allow_http {
        builder.https_or_http().enable_http1().wrap_connector(http)
    } else {
        builder.https_only().enable_http1().wrap_connector(http)
    };
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

impl WebhookClient for HttpsWebhooks {
    async fn post(&self, post: &Post) -> Result<u16, String> {
        check_url(&post.url, self.allow_private)?;
        let mut req = http::Request::post(&post.url);
        for (k, v) in &post.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from(
                post.body.clone(),
            )))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp.status().as_u16()),
            Ok(Err(e)) => {
                use std::error::Error;
                let mut msg = e.to_string();
                let mut src = e.source();
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                Err(msg)
            }
            Err(_) => Err("no answer within 10 s".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_names_are_refused_at_connection() {
        let c = HttpsWebhooks::new(false).unwrap();
        let e = c
            .post(&Post {
                url: "https://localtest.me/".into(),
                headers: vec![],
                body: vec![],
            })
            .await;
        // localtest.me resolves to 127.0.0.1 where DNS answers; without DNS the lookup fails.
        assert!(e.is_err(), "{e:?}");
    }
}
