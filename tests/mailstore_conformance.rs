//! The MailStore conformance suite (`pec_ports::mailstore::conformance`) against
//! [`pec_aws::DynamoMailStore`] on DynamoDB Local and LocalStack S3: the stack's state table and
//! mailbox bucket (shared with the other tests: every case has mailboxes of its own).
//!
//! Mailboxes are made as `pec mailbox create` makes them ([`DynamoState::create_mailbox`]), and
//! a delivery goes the delivery step's way: the bytes to the mailbox bucket, then
//! [`DynamoState::store_in_mailbox`] (one transaction: item, quota, the INBOX entry and its
//! UID). So the cases that mix deliveries and appends race the delivery step's transaction
//! against the edge service's.
//!
//! Run: `cargo test -p pec-integration --test mailstore_conformance` (reuses or starts the
//! emulators).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use libtest_mimic::{Arguments, Failed, Trial};
use pec_aws::{DynamoMailStore, DynamoState, S3Store};
use pec_core::plan::Plan;
use pec_integration::{Stack, unique};
use pec_ports::keys;
use pec_ports::mailstore::conformance::{self, MailStoreHarness};
use pec_ports::mailstore::{Appended, INBOX, MailStore};
use pec_ports::state::{Mailbox, MailboxItem, MailboxWrite, StateStore};
use pec_ports::{ObjectStore, PutOutcome};

/// Longest a case may take.
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

struct Harness {
    stack: Stack,
    dynamodb: aws_sdk_dynamodb::Client,
    state: DynamoState,
    store: DynamoMailStore<S3Store>,
    objects: S3Store,
    table: String,
    bucket: String,
    deliveries: AtomicU64,
    ns: String,
}

impl MailStoreHarness for Harness {
    type Store = DynamoMailStore<S3Store>;

    fn store(&self) -> &Self::Store {
        &self.store
    }

    async fn mailbox(&self, address: &str, quota_bytes: u64) -> Result<(), String> {
        let mailbox = Mailbox {
            address: address.to_owned(),
            tenant: "conformance".to_owned(),
            plan: Plan::Standard,
            expansions_gb: 0,
            quota_bytes,
            used_bytes: 0,
            password_hash: String::new(),
            locked: false,
            status: Default::default(),
            member: None,
            status_note: None,
            agreement_accepted_at: None,
            refuse_ordinary: false,
            lock: None,
            ordinary_spam: Default::default(),
            sms: None,
            created_at: chrono::Utc::now(),
        };
        match self.state.create_mailbox(&mailbox).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{address} exists already")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn deliver(&self, address: &str, bytes: Vec<u8>) -> Result<Appended, String> {
        let n = self.deliveries.fetch_add(1, Ordering::SeqCst);
        let evidence_key = format!("signed/conformance/{}/{n}/busta-trasporto.eml", self.ns);
        let id = keys::item_id(&evidence_key);
        let object_key = keys::mailbox_object(address, &id);
        let size = bytes.len() as u64;
        match self
            .objects
            .put_if_absent(&self.bucket, &object_key, bytes, "message/rfc822")
            .await
        {
            Ok(PutOutcome::Created) => {}
            Ok(other) => return Err(format!("{object_key}: {other:?}")),
            Err(e) => return Err(e.to_string()),
        }
        let item = MailboxItem {
            id: id.clone(),
            object_key,
            size,
            kind: "busta-trasporto".to_owned(),
            subject: "conformance".to_owned(),
            from: "posta-certificata@pec.example.test".to_owned(),
            identificativo: String::new(),
            evidence_key,
            stored_at: chrono::Utc::now(),
            folder: None,
        };
        match self
            .state
            .store_in_mailbox(address, &item, None, false)
            .await
        {
            Ok(MailboxWrite::Stored) => {}
            Ok(other) => return Err(format!("delivery to {address}: {other:?}")),
            Err(e) => return Err(e.to_string()),
        }
        // Where the delivery step filed it: the INBOX entry carrying the item id.
        let out = self
            .dynamodb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .filter_expression("item_id = :id")
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(format!("MBX#{}", address.to_ascii_lowercase())),
            )
            .expression_attribute_values(":p", AttributeValue::S("UID#INBOX#".to_owned()))
            .expression_attribute_values(":id", AttributeValue::S(id.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let uid = out
            .items()
            .first()
            .and_then(|i| i.get("sk"))
            .and_then(|v| v.as_s().ok())
            .and_then(|sk| sk.rsplit('#').next())
            .and_then(|u| u.parse::<u32>().ok())
            .ok_or_else(|| format!("no INBOX entry for item {id} of {address}"))?;
        let uid_validity = self
            .store
            .folder(address, INBOX)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no INBOX")?
            .uid_validity;
        Ok(Appended { uid_validity, uid })
    }
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let stack = match Stack::ensure() {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("mailstore_conformance: cannot use the local stack: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("mailstore_conformance: no tokio runtime: {e}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let names = (
        stack.output("StateTableName").map(str::to_string),
        stack.output("ProviderLogTableName").map(str::to_string),
        stack.output("MailboxBucketName").map(str::to_string),
    );
    let (table, log_table, bucket) = match names {
        (Ok(t), Ok(l), Ok(b)) => (t, l, b),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("mailstore_conformance: {e:#}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let clients = runtime.block_on(stack.clients());
    let objects = S3Store::new(clients.s3.clone());
    let harness = Arc::new(Harness {
        state: DynamoState::new(clients.dynamodb.clone(), &table, &log_table),
        store: DynamoMailStore::new(clients.dynamodb.clone(), &table, objects.clone(), &bucket),
        dynamodb: clients.dynamodb.clone(),
        objects,
        table,
        bucket,
        deliveries: AtomicU64::new(0),
        ns: unique("mconf"),
        stack,
    });
    let mut trials = Vec::new();
    for case in conformance::cases::<Harness>() {
        let (h, rt) = (harness.clone(), runtime.clone());
        trials.push(Trial::test(case.name, move || {
            if let Some(problem) = h.stack.diagnose() {
                return Err(Failed::from(problem));
            }
            let start = Instant::now();
            let outcome = rt
                .block_on(async { tokio::time::timeout(CASE_TIMEOUT, case.run(&*h, &h.ns)).await });
            eprintln!("  {}: {:.2} s", case.name, start.elapsed().as_secs_f64());
            match outcome {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Failed::from(e)),
                Err(_) => Err(Failed::from(format!(
                    "timed out after {} s",
                    CASE_TIMEOUT.as_secs()
                ))),
            }
        }));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Ok(h) = Arc::try_unwrap(harness) {
        h.stack.finish();
    }
    conclusion.exit_code()
}
