//! Smoke test of the local cloud through the Rust AWS SDK, the same clients the functions use.
//!
//! Proves the properties the design relies on: WORM storage refuses deletes and overwrites, KMS
//! signs a precomputed digest that verifies against its public key, SES v1 raw sends are
//! readable back, an S3 put becomes an `ObjectCreated` message on the step's queue, a poison
//! message ends in its dead-letter queue, and DynamoDB conditional writes reject a duplicate.
//!
//! Run: `cargo test -p pec-integration --test smoke` (reuses or starts the emulators).
//! `PEC_SMOKE_ROUNDS=N` repeats every check N times (used by tests/emulator-failure.sh).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use aws_lambda_events::event::s3::S3Event;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::primitives::Blob as KmsBlob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ObjectLockRetentionMode;
use libtest_mimic::Arguments;
use pec_aws::AwsClients;
use pec_integration::{Check, HasStack, Stack, checks, http_get, run_checks, unique};
use rsa::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};

struct Ctx {
    stack: Stack,
    aws: AwsClients,
}

impl HasStack for Ctx {
    fn stack(&self) -> &Stack {
        &self.stack
    }
}

/// The operation must have failed with the S3 error `code`.
fn expect_refusal<T, E, R>(
    result: Result<T, aws_sdk_s3::error::SdkError<E, R>>,
    code: &str,
    what: &str,
) -> Result<()>
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => bail!("{what} succeeded"),
        Err(e) => {
            let got = e
                .as_service_error()
                .and_then(|s| s.code())
                .map(str::to_string);
            ensure!(
                got.as_deref() == Some(code),
                "{what} failed, but not with {code}: {e:?}"
            );
            Ok(())
        }
    }
}

/// A COMPLIANCE-locked object version can be neither deleted, nor shortened, nor replaced.
async fn object_lock_refuses_delete_and_overwrite(ctx: Arc<Ctx>) -> Result<()> {
    let bucket = ctx.stack.output("ConservationBucketName")?;
    let key = unique("smoke/locked");
    let body = b"conservation copy: must stay byte for byte".to_vec();
    let put = ctx
        .aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(ByteStream::from(body.clone()))
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .context("PutObject into the conservation bucket")?;
    let version = put
        .version_id()
        .context("no version id: versioning off?")?
        .to_string();

    let retention = ctx
        .aws
        .s3
        .get_object_retention()
        .bucket(bucket)
        .key(&key)
        .version_id(&version)
        .send()
        .await
        .context("GetObjectRetention")?;
    let retention = retention.retention().context("object has no retention")?;
    ensure!(
        retention.mode() == Some(&ObjectLockRetentionMode::Compliance),
        "default retention is not COMPLIANCE: {retention:?}"
    );
    let until = retention
        .retain_until_date()
        .context("no retain-until date")?
        .secs();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    ensure!(
        until - now > 9 * 365 * 86_400,
        "retention shorter than the template's 10 years: until {until}, now {now}"
    );

    let delete = ctx
        .aws
        .s3
        .delete_object()
        .bucket(bucket)
        .key(&key)
        .version_id(&version)
        .send()
        .await;
    expect_refusal(
        delete,
        "AccessDenied",
        "deleting a COMPLIANCE-locked version",
    )?;

    let shorten = ctx
        .aws
        .s3
        .put_object_retention()
        .bucket(bucket)
        .key(&key)
        .version_id(&version)
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .retain_until_date(aws_smithy_types::DateTime::from_secs(now + 86_400))
                .build(),
        )
        .send()
        .await;
    expect_refusal(shorten, "AccessDenied", "shortening a COMPLIANCE retention")?;

    // Writers use conditional puts: an existing key is never written again.
    let conditional = ctx
        .aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .if_none_match("*")
        .body(ByteStream::from_static(b"replacement"))
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await;
    expect_refusal(
        conditional,
        "PreconditionFailed",
        "a conditional put over an existing locked object",
    )?;

    // An unconditional put can only add a newer version: the locked one is untouched.
    ctx.aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(ByteStream::from_static(b"replacement"))
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .context("second PutObject")?;
    let original = ctx
        .aws
        .s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .version_id(&version)
        .send()
        .await
        .context("GetObject of the locked version")?
        .body
        .collect()
        .await?
        .into_bytes();
    ensure!(
        original.as_ref() == body.as_slice(),
        "the locked version changed"
    );
    Ok(())
}

/// KMS signs a SHA-256 digest (MessageType=DIGEST); the signature verifies with the public key.
async fn kms_sign_digest_verifies_against_public_key(ctx: Arc<Ctx>) -> Result<()> {
    let key_id = ctx.stack.output("SigningKeyId")?;
    let message = b"signed attributes of a PEC receipt";
    let digest = Sha256::digest(message);
    let signed = ctx
        .aws
        .kms
        .sign()
        .key_id(key_id)
        .message(KmsBlob::new(digest.to_vec()))
        .message_type(MessageType::Digest)
        .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
        .send()
        .await
        .context("KMS Sign")?;
    let signature = signed
        .signature()
        .context("no signature")?
        .as_ref()
        .to_vec();
    let public = ctx
        .aws
        .kms
        .get_public_key()
        .key_id(key_id)
        .send()
        .await
        .context("KMS GetPublicKey")?;
    ensure!(
        public.key_spec() == Some(&aws_sdk_kms::types::KeySpec::Rsa2048),
        "key spec {:?}",
        public.key_spec()
    );
    let spki = public.public_key().context("no public key")?.as_ref();
    let key = rsa::RsaPublicKey::from_public_key_der(spki).context("SPKI is not an RSA key")?;
    key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
        .context("the KMS signature does not verify against GetPublicKey")?;
    let mut other = digest;
    other[0] ^= 1;
    ensure!(
        key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &other, &signature)
            .is_err(),
        "signature verified over a different digest"
    );
    Ok(())
}

/// SES v1 SendRawEmail stores the exact raw message, readable at LocalStack's /_aws/ses.
async fn ses_send_raw_is_readable_back(ctx: Arc<Ctx>) -> Result<()> {
    let from = "posta-certificata@pec.example.test";
    ctx.aws
        .ses
        .verify_email_identity()
        .email_address(from)
        .send()
        .await
        .context("VerifyEmailIdentity")?;
    let marker = unique("smoke-ses");
    let raw = format!(
        "From: {from}\r\nTo: someone@example.org\r\nSubject: smoke {marker}\r\n\
         Message-ID: <{marker}@pec.example.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nbody {marker}\r\n"
    );
    let sent = ctx
        .aws
        .ses
        .send_raw_email()
        .source(from)
        .destinations("someone@example.org")
        .raw_message(
            aws_sdk_ses::types::RawMessage::builder()
                .data(aws_sdk_ses::primitives::Blob::new(raw.as_bytes()))
                .build()?,
        )
        .send()
        .await
        .context("SES SendRawEmail")?;
    let id = sent.message_id().to_string();
    let body = http_get(
        ctx.stack.localstack.port,
        &format!("/_aws/ses?id={id}"),
        Duration::from_secs(5),
    )
    .context("GET /_aws/ses")?;
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    let messages = json["messages"].as_array().context("no messages array")?;
    ensure!(
        messages.len() == 1,
        "expected one message with id {id}: {json}"
    );
    let stored = messages[0]["RawData"].as_str().context("no RawData")?;
    ensure!(
        stored == raw,
        "stored raw message differs from what was sent"
    );
    Ok(())
}

/// A submission envelope put into the raw-mail bucket (`submitted/<id>.json`, the gateway's
/// last write) becomes an ObjectCreated record on the ingress queue.
async fn s3_put_announces_object_created_on_ingress_queue(ctx: Arc<Ctx>) -> Result<()> {
    let bucket = ctx.stack.output("RawMailBucketName")?;
    let queue = ctx.stack.output("IngressQueueUrl")?;
    let key = format!("{}.json", unique("submitted/smoke"));
    ctx.aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(ByteStream::from_static(b"From: a@b\r\n\r\nx\r\n"))
        .send()
        .await
        .context("PutObject into the raw-mail bucket")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let received = ctx
            .aws
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(5)
            .send()
            .await
            .context("ReceiveMessage on the ingress queue")?;
        for message in received.messages() {
            let body = message.body().unwrap_or_default();
            // The first message on a new destination is S3's TestEvent; it has no Records.
            let Ok(event) = serde_json::from_str::<S3Event>(body) else {
                continue;
            };
            let ours = event.records.iter().any(|r| {
                r.event_name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("ObjectCreated:"))
                    && r.s3.bucket.name.as_deref() == Some(bucket)
                    && r.s3.object.key.as_deref() == Some(key.as_str())
            });
            if ours {
                if let Some(handle) = message.receipt_handle() {
                    ctx.aws
                        .sqs
                        .delete_message()
                        .queue_url(queue)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
                return Ok(());
            }
        }
    }
    bail!("no ObjectCreated record for s3://{bucket}/{key} on the ingress queue within 30 s")
}

/// A message that keeps failing moves to the step's dead-letter queue instead of vanishing.
async fn poison_message_moves_to_dead_letter_queue(ctx: Arc<Ctx>) -> Result<()> {
    let queue = ctx.stack.output("ScanQueueUrl")?;
    let dlq = ctx.stack.output("ScanDeadLetterQueueUrl")?;
    let marker = unique("poison");
    ctx.aws
        .sqs
        .send_message()
        .queue_url(queue)
        .message_body(&marker)
        .send()
        .await?;
    // Receive it as a failing consumer would, and make it visible again at once, until SQS
    // gives up on it (maxReceiveCount in the template's RedrivePolicy).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let got = ctx
            .aws
            .sqs
            .receive_message()
            .queue_url(dlq)
            .wait_time_seconds(0)
            .max_number_of_messages(10)
            .send()
            .await?;
        if let Some(m) = got
            .messages()
            .iter()
            .find(|m| m.body() == Some(marker.as_str()))
        {
            // Visible again in the DLQ, then replayed (what `pec dlq replay` does): it is back
            // in the scan queue and gone from the DLQ.
            ctx.aws
                .sqs
                .change_message_visibility()
                .queue_url(dlq)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .visibility_timeout(0)
                .send()
                .await?;
            let sources = pec_aws::queue::dead_letter_sources(&ctx.aws.sqs, dlq).await?;
            ensure!(
                sources.iter().any(|s| s.ends_with("pec-local-scan")),
                "the scan DLQ's sources are {sources:?}"
            );
            pec_aws::queue::redrive(&ctx.aws.sqs, dlq, queue, 1000).await?;
            let back = ctx
                .aws
                .sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .wait_time_seconds(2)
                .send()
                .await?;
            ensure!(
                back.messages()
                    .iter()
                    .any(|m| m.body() == Some(marker.as_str())),
                "the replayed message is not back in the scan queue"
            );
            for m in back.messages() {
                ctx.aws
                    .sqs
                    .delete_message()
                    .queue_url(queue)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await?;
            }
            return Ok(());
        }
        let received = ctx
            .aws
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        for m in received.messages() {
            if let Some(handle) = m.receipt_handle() {
                ctx.aws
                    .sqs
                    .change_message_visibility()
                    .queue_url(queue)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await?;
            }
        }
    }
    bail!("the poison message never reached the scan dead-letter queue")
}

/// A conditional put keyed by message and step rejects the duplicate (the idempotency rule).
async fn dynamodb_conditional_write_rejects_duplicate(ctx: Arc<Ctx>) -> Result<()> {
    let table = ctx.stack.output("StateTableName")?;
    let pk = unique("MSG#smoke");
    let put = || {
        ctx.aws
            .dynamodb
            .put_item()
            .table_name(table)
            .item("pk", AttributeValue::S(pk.clone()))
            .item("sk", AttributeValue::S("STEP#accept".into()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
    };
    put().await.context("first conditional PutItem")?;
    match put().await {
        Ok(_) => bail!("the duplicate conditional write succeeded"),
        Err(e) => {
            let service = e.into_service_error();
            ensure!(
                service.is_conditional_check_failed_exception(),
                "duplicate failed for another reason: {service:?}"
            );
        }
    }
    // The same in a transaction (how steps record an effect and its state together).
    let txn = ctx
        .aws
        .dynamodb
        .transact_write_items()
        .transact_items(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .put(
                    aws_sdk_dynamodb::types::Put::builder()
                        .table_name(table)
                        .item("pk", AttributeValue::S(pk.clone()))
                        .item("sk", AttributeValue::S("STEP#accept".into()))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()?,
                )
                .build(),
        )
        .send()
        .await;
    match txn {
        Ok(_) => bail!("the duplicate transactional write succeeded"),
        Err(e) => ensure!(
            e.into_service_error().is_transaction_canceled_exception(),
            "transaction failed for another reason"
        ),
    }
    Ok(())
}

/// The bootstrap applied the template's properties, not just the names.
async fn local_resources_carry_template_properties(ctx: Arc<Ctx>) -> Result<()> {
    let lock = ctx
        .aws
        .s3
        .get_object_lock_configuration()
        .bucket(ctx.stack.output("ConservationBucketName")?)
        .send()
        .await?;
    let rule = lock
        .object_lock_configuration()
        .and_then(|c| c.rule())
        .and_then(|r| r.default_retention())
        .context("conservation bucket has no default retention")?;
    ensure!(
        rule.mode() == Some(&ObjectLockRetentionMode::Compliance) && rule.years() == Some(10),
        "conservation default retention is {rule:?}"
    );
    // Quarantined mail leaves the conservation bucket after 30 months (its lock ends then).
    let life = ctx
        .aws
        .s3
        .get_bucket_lifecycle_configuration()
        .bucket(ctx.stack.output("ConservationBucketName")?)
        .send()
        .await?;
    ensure!(
        life.rules().iter().any(|r| {
            r.filter().and_then(|f| f.prefix()) == Some("quarantine/")
                && r.expiration().and_then(|e| e.days()) == Some(915)
        }),
        "conservation lifecycle rules {:?}",
        life.rules()
    );
    let attrs = ctx
        .aws
        .sqs
        .get_queue_attributes()
        .queue_url(ctx.stack.output("IngressQueueUrl")?)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await?;
    let redrive = attrs
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy))
        .context("ingress queue has no redrive policy")?;
    let redrive: serde_json::Value = serde_json::from_str(redrive)?;
    ensure!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .is_some_and(|a| a.ends_with("pec-local-ingress-dlq")),
        "redrive policy {redrive}"
    );
    let table = ctx
        .aws
        .dynamodb
        .describe_table()
        .table_name(ctx.stack.output("StateTableName")?)
        .send()
        .await?;
    let gsis = table
        .table()
        .map(|t| t.global_secondary_indexes())
        .unwrap_or_default();
    ensure!(
        gsis.iter().any(|g| g.index_name() == Some("gsi1")),
        "state table lacks gsi1"
    );
    let key = ctx
        .aws
        .kms
        .describe_key()
        .key_id(ctx.stack.output("SigningKeyId")?)
        .send()
        .await?;
    let meta = key.key_metadata().context("no key metadata")?;
    ensure!(
        meta.key_usage() == Some(&aws_sdk_kms::types::KeyUsageType::SignVerify),
        "signing key usage {:?}",
        meta.key_usage()
    );
    Ok(())
}

/// The provider index is read from the evidence bucket where the template says it lives.
async fn provider_index_is_read_from_s3(ctx: Arc<Ctx>) -> Result<()> {
    let bucket = ctx.stack.output("EvidenceBucketName")?;
    let key = ctx
        .stack
        .env
        .get("PEC_PROVIDER_INDEX_KEY")
        .context("PEC_PROVIDER_INDEX_KEY is not in the functions' environment")?;
    let domain = format!("{}.pec.test", unique("d").to_ascii_lowercase());
    let ldif = format!(
        "dn: providerName=Smoke,o=postacert\nobjectClass: provider\nproviderName: Smoke\n\
         managedDomains: {domain}\nmailReceipt: posta-certificata@{domain}\n\
         providerCertificateHash: 00112233445566778899AABBCCDDEEFF00112233\n\
         providerCertificate;binary:: MAA=\n\n"
    );
    ctx.aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(ldif.into_bytes()))
        .send()
        .await?;
    let source = pec_aws::ProviderIndexSource::new(
        pec_aws::S3Store::new(ctx.aws.s3.clone()),
        bucket,
        key.clone(),
        chrono::Duration::minutes(15),
    );
    let index = source.current(chrono::Utc::now()).await?;
    ensure!(
        index.is_pec_domain(&domain),
        "{domain} not found in the index read from S3"
    );
    Ok(())
}

const CHECKS: &[(&str, Check<Ctx>)] = checks![
    provider_index_is_read_from_s3,
    object_lock_refuses_delete_and_overwrite,
    kms_sign_digest_verifies_against_public_key,
    ses_send_raw_is_readable_back,
    s3_put_announces_object_created_on_ingress_queue,
    poison_message_moves_to_dead_letter_queue,
    dynamodb_conditional_write_rejects_duplicate,
    local_resources_carry_template_properties,
];

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let stack = match Stack::ensure() {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("smoke: cannot use the local stack: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("smoke: cannot build a tokio runtime: {e}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let aws = runtime.block_on(stack.clients());
    let ctx = Arc::new(Ctx { stack, aws });
    let rounds: usize = std::env::var("PEC_SMOKE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let conclusion = run_checks(
        &args,
        ctx.clone(),
        runtime,
        CHECKS,
        rounds,
        Duration::from_secs(120),
    );
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.stack.finish();
    }
    conclusion.exit_code()
}
