//! The AWS calls each function makes, recorded for the offline IAM check.
//!
//! `infra/local/iam_check.py` compares what every function really calls (service, operation,
//! the bucket and key, table and partition key, queue, key, bus, sender) with what its role in
//! `template.yaml` allows. The record comes from here: when `PEC_AWS_CALL_LOG` names a file,
//! every client built by [`crate::AwsClients::for_function`] carries a [`CallRecorder`] that
//! appends one JSON line per operation (after it completes, with its HTTP status, so a 404 is
//! told from a success). Clients that are not built for a function record nothing, and without
//! the variable no interceptor is registered at all: zero cost in Lambda.
//!
//! Only the parts that identify the resource are written, never a payload: object bodies, item
//! attributes other than the partition key, message bodies and mail are left out.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde_json::{Map, Value, json};

/// The open call log of this process (shared by every recorder), and the stack it serves.
#[derive(Clone, Debug)]
pub struct CallLog {
    file: Arc<Mutex<File>>,
    stack: Option<String>,
}

impl CallLog {
    /// Opens `path` for appending (several processes may append to one file: each line is
    /// written by one `write` of an `O_APPEND` file). `stack` names the stack whose functions
    /// this process runs (the runner's `--stack-name`), written on every line.
    pub fn open(path: &Path, stack: Option<String>) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Arc::new(Mutex::new(file)),
            stack,
        })
    }

    /// A recorder labelling every call with `function` (a template logical id).
    pub fn recorder(&self, function: &str) -> CallRecorder {
        CallRecorder {
            log: self.clone(),
            function: function.to_string(),
        }
    }

    fn append(&self, line: &Value) {
        let mut text = line.to_string();
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = file.write_all(text.as_bytes()) {
            tracing::warn!(error = %error, "cannot append to the AWS call log");
        }
    }
}

/// The SDK interceptor that appends one line per operation to a [`CallLog`].
#[derive(Clone, Debug)]
pub struct CallRecorder {
    log: CallLog,
    function: String,
}

/// What the request said about its resource, kept between the last attempt's transmission and
/// the end of the operation.
#[derive(Debug, Clone)]
struct Resource(Map<String, Value>);

impl Storable for Resource {
    type Storer = StoreReplace<Self>;
}

impl Intercept for CallRecorder {
    fn name(&self) -> &'static str {
        "PecCallRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let service = cfg
            .load::<Metadata>()
            .map(|m| m.service().to_string())
            .unwrap_or_default();
        let request = context.request();
        let mut resource = resource_of(&service, request.uri(), request.body().bytes());
        // A write with an Object Lock retention also needs s3:PutObjectRetention.
        if service == "S3" && request.headers().contains_key("x-amz-object-lock-mode") {
            resource.insert("object_lock_retention".into(), json!(true));
        }
        cfg.interceptor_state().store_put(Resource(resource));
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(metadata) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let mut line = Map::new();
        line.insert("function".into(), json!(self.function));
        line.insert("stack".into(), json!(self.log.stack));
        line.insert("service".into(), json!(metadata.service()));
        line.insert("operation".into(), json!(metadata.name()));
        line.insert(
            "status".into(),
            json!(context.response().map(|r| r.status().as_u16())),
        );
        if let Some(Resource(resource)) = cfg.load::<Resource>() {
            line.extend(resource.clone());
        }
        self.log.append(&Value::Object(line));
        Ok(())
    }
}

/// The resource-identifying parts of one request. S3 is read from the path-style URI
/// (`/bucket/key?query`: the local stack's addressing); the JSON protocols (DynamoDB, SQS, KMS,
/// EventBridge) from their body; SES (query protocol) from its form body.
fn resource_of(service: &str, uri: &str, body: Option<&[u8]>) -> Map<String, Value> {
    let mut out = Map::new();
    match service {
        "S3" => s3_resource(uri, &mut out),
        "SES" => {
            let form = body.map(form_fields).unwrap_or_default();
            if let Some(source) = form.get("Source") {
                out.insert("source".into(), json!(source));
            }
            // Identity management (tenants' domains): the identity it names.
            if let Some(identity) = ["Domain", "Identity", "Identities.member.1"]
                .iter()
                .find_map(|f| form.get(*f))
            {
                out.insert("identity".into(), json!(identity));
            }
        }
        _ => {
            let body: Value = body
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            json_resource(&body, &mut out);
        }
    }
    out
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn s3_resource(uri: &str, out: &mut Map<String, Value>) {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path_and_query = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let path = path.trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if !bucket.is_empty() {
        out.insert("bucket".into(), json!(decode(bucket)));
    }
    if !key.is_empty() {
        out.insert("key".into(), json!(decode(key)));
    }
    for pair in query.split('&') {
        if let Some(prefix) = pair.strip_prefix("prefix=") {
            out.insert("prefix".into(), json!(decode(&prefix.replace('+', " "))));
        }
    }
}

fn form_fields(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(&k.replace('+', " ")), decode(&v.replace('+', " "))))
        .collect()
}

/// The partition key (`pk`, a string) of a DynamoDB key or item, if it has one.
fn partition_key(item: &Value) -> Value {
    item.get("pk")
        .and_then(|v| v.get("S"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn json_resource(body: &Value, out: &mut Map<String, Value>) {
    for field in ["TableName", "IndexName", "QueueUrl", "KeyId"] {
        if let Some(value) = body.get(field) {
            out.insert(field.into(), value.clone());
        }
    }
    // DynamoDB: the partition key of the item a call reads or writes (later: LeadingKeys).
    if let Some(key) = body.get("Key").or_else(|| body.get("Item")) {
        out.insert("pk".into(), partition_key(key));
    }
    // A query names its partition key in the key condition: kept with its values.
    if let Some(condition) = body.get("KeyConditionExpression") {
        out.insert("KeyConditionExpression".into(), condition.clone());
        for field in ["ExpressionAttributeNames", "ExpressionAttributeValues"] {
            if let Some(value) = body.get(field) {
                out.insert(field.into(), value.clone());
            }
        }
    }
    // A transaction: what each item does, to which table and partition.
    if let Some(items) = body.get("TransactItems").and_then(Value::as_array) {
        let items: Vec<Value> = items
            .iter()
            .filter_map(|item| item.as_object()?.iter().next())
            .map(|(kind, spec)| {
                let key = spec.get("Key").or_else(|| spec.get("Item"));
                json!({
                    "kind": kind,
                    "TableName": spec.get("TableName"),
                    "pk": key.map(partition_key).unwrap_or(Value::Null),
                })
            })
            .collect();
        out.insert("TransactItems".into(), Value::Array(items));
    }
    // EventBridge: the bus of every entry.
    if let Some(entries) = body.get("Entries").and_then(Value::as_array) {
        let buses: Vec<Value> = entries
            .iter()
            .map(|e| e.get("EventBusName").cloned().unwrap_or(Value::Null))
            .collect();
        out.insert("EventBusNames".into(), Value::Array(buses));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_path_style_bucket_key_and_prefix() {
        let r = resource_of(
            "S3",
            "http://127.0.0.1:4566/pec-local-evidencebucket/signed/msg/a%20b/x.eml?x-id=GetObject",
            None,
        );
        assert_eq!(r["bucket"], "pec-local-evidencebucket");
        assert_eq!(r["key"], "signed/msg/a b/x.eml");
        let r = resource_of(
            "S3",
            "http://127.0.0.1:4566/raw?list-type=2&prefix=config%2Fantivirus%2F",
            None,
        );
        assert_eq!(r["bucket"], "raw");
        assert!(r.get("key").is_none());
        assert_eq!(r["prefix"], "config/antivirus/");
    }

    #[test]
    fn dynamodb_tables_and_partition_keys() {
        let body = br#"{"TransactItems":[{"Put":{"TableName":"t1","Item":{"pk":{"S":"MSG#1"},"sk":{"S":"A"},"hash":{"S":"secret"}}}},
            {"ConditionCheck":{"TableName":"t2","Key":{"pk":{"S":"BOX#x"}}}}]}"#;
        let r = resource_of("DynamoDB", "http://localhost/", Some(body));
        assert_eq!(
            r["TransactItems"],
            json!([{"kind":"Put","TableName":"t1","pk":"MSG#1"},{"kind":"ConditionCheck","TableName":"t2","pk":"BOX#x"}])
        );
        assert!(!Value::Object(r).to_string().contains("secret"));
        let r = resource_of(
            "DynamoDB",
            "http://localhost/",
            Some(br#"{"TableName":"t","Key":{"pk":{"S":"P"},"sk":{"S":"S"}}}"#),
        );
        assert_eq!(r["TableName"], "t");
        assert_eq!(r["pk"], "P");
    }

    #[test]
    fn ses_source_and_json_targets() {
        let r = resource_of(
            "SES",
            "http://localhost/",
            Some(b"Action=SendRawEmail&Source=posta-certificata%40pec.example.test&RawMessage.Data=AAAA"),
        );
        assert_eq!(r["source"], "posta-certificata@pec.example.test");
        let r = resource_of(
            "EventBridge",
            "http://localhost/",
            Some(br#"{"Entries":[{"EventBusName":"bus","Detail":"{}"}]}"#),
        );
        assert_eq!(r["EventBusNames"], json!(["bus"]));
        let r = resource_of(
            "KMS",
            "http://localhost/",
            Some(br#"{"KeyId":"k","Message":"AA"}"#),
        );
        assert_eq!(r["KeyId"], "k");
        assert!(r.get("Message").is_none());
    }
}
