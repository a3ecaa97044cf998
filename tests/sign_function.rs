//! The sign step end to end on the emulators: an `unsigned/` object put in the evidence bucket
//! is announced on the sign queue, the handler (the same code Lambda runs) signs it with the
//! LocalStack KMS key, the `signed/` object verifies with OpenSSL and with our verifier, it is
//! announced on the deliver queue, and a duplicate event signs and writes nothing more.
//!
//! Run: `cargo test -p pec-integration --test sign_function` (reuses or starts the emulators).

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use aws_lambda_events::event::sqs::SqsEvent;
use chrono::{TimeZone, Utc};
use libtest_mimic::Arguments;
use pec_aws::{AwsClients, DynamoState, KmsSigner, S3Store, queue};
use pec_integration::{Check, HasStack, Stack, checks, run_checks, unique};
use pec_pipeline::sign::testing::{acceptance_key, sample_message, seed_accepted};
use pec_pipeline::sign::{SignStep, s3_objects};
use pec_smime::{
    DevCa, DigestSigner, ProviderCertificateParams, Sha256Digest, SigningIdentity, TrustAnchors,
    Verdict, VerifyOptions, verify_message,
};

/// Counts KMS calls so the duplicate check can prove there was no second one.
struct CountingKms {
    inner: KmsSigner,
    calls: AtomicUsize,
}

impl DigestSigner for CountingKms {
    type Error = pec_aws::KmsError;
    async fn sign_sha256_digest(&self, digest: Sha256Digest) -> Result<Vec<u8>, Self::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.sign_sha256_digest(digest).await
    }
}

struct Ctx {
    stack: Stack,
    aws: AwsClients,
    step: SignStep<S3Store, CountingKms, DynamoState>,
    bucket: String,
    ca_pem: tempfile::NamedTempFile,
    anchors: TrustAnchors,
    binaries: Binaries,
}

impl HasStack for Ctx {
    fn stack(&self) -> &Stack {
        &self.stack
    }
}

/// Dev CA + a provider certificate for the KMS key's public key, uploaded where the sign
/// function reads its chain (PEC_SIGNING_CHAIN_KEY), exactly as an operator would.
async fn setup(stack: Stack, binaries: Binaries) -> Result<Ctx> {
    let aws = stack.clients().await;
    let bucket = stack.output("EvidenceBucketName")?.to_string();
    let key_id = stack.function_env("SignFunction", "PEC_SIGNING_KEY_ID")?;
    let chain_key = stack.function_env("SignFunction", "PEC_SIGNING_CHAIN_KEY")?;
    let kms = KmsSigner::new(aws.kms.clone(), key_id);
    let spki = kms.public_key_spki_der().await.context("GetPublicKey")?;
    let y = |y| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
    let ca = DevCa::generate("PEC development CA", y(2025), y(2035)).await?;
    let cert = ca
        .issue_provider_certificate(
            &ProviderCertificateParams::new(
                "Example Gestore PEC S.p.A.",
                "pec.example.test",
                y(2025),
                y(2030),
            ),
            &spki,
        )
        .await?;
    let chain_pem = format!(
        "{}{}",
        pec_smime::certs::certificate_to_pem(&cert)?,
        ca.certificate_pem()?
    );
    aws.s3
        .put_object()
        .bucket(&bucket)
        .key(chain_key)
        .body(chain_pem.clone().into_bytes().into())
        .send()
        .await
        .context("uploading the provider certificate chain")?;
    // What the Lambda does at start-up: the chain from S3, the key from KMS.
    let stored = aws
        .s3
        .get_object()
        .bucket(&bucket)
        .key(chain_key)
        .send()
        .await?
        .body
        .collect()
        .await?
        .into_bytes();
    let identity = SigningIdentity::from_pem_chain(&stored)?;
    ensure!(
        identity.public_key_spki_der() == spki.as_slice(),
        "certificate is not for the KMS key"
    );
    let mut ca_pem = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut ca_pem, ca.certificate_pem()?.as_bytes())?;
    let mut anchors = TrustAnchors::new();
    anchors.add_pem_bundle(ca.certificate_pem()?.as_bytes())?;
    let state = DynamoState::new(
        aws.dynamodb.clone(),
        stack.output("StateTableName")?,
        stack.output("ProviderLogTableName")?,
    );
    let step = SignStep::new(
        S3Store::new(aws.s3.clone()),
        state,
        CountingKms {
            inner: kms,
            calls: AtomicUsize::new(0),
        },
        identity,
        bucket.clone(),
    );
    Ok(Ctx {
        stack,
        aws,
        step,
        bucket,
        ca_pem,
        anchors,
        binaries,
    })
}

/// Polls `queue_url` until a message announcing `key` arrives; returns it as a Lambda event.
/// Messages about other keys are made visible again at once for whoever waits for them.
async fn wait_for_notification(ctx: &Ctx, queue_url: &str, key: &str) -> Result<SqsEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let event = queue::receive_event(&ctx.aws.sqs, queue_url, 10, 1).await?;
        let mut mine = SqsEvent::default();
        let mut others = Vec::new();
        for record in event.records.iter() {
            let announces_key = s3_objects(record)
                .map(|objs| objs.iter().any(|(_, k)| k == key))
                .unwrap_or(false);
            if announces_key {
                mine.records.push(record.clone());
            } else if let Some(id) = &record.message_id {
                others.push(id.clone());
            }
        }
        let mut not_mine = event.clone();
        not_mine
            .records
            .retain(|r| r.message_id.as_ref().is_some_and(|id| others.contains(id)));
        queue::settle(&ctx.aws.sqs, queue_url, &not_mine, &others, 0).await?;
        if !mine.records.is_empty() {
            return Ok(mine);
        }
    }
    bail!("no notification for {key} on {queue_url} within 30 s")
}

fn openssl_verifies(ctx: &Ctx, message: &[u8]) -> Result<bool> {
    let mut file = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut file, message)?;
    let out = Command::new("openssl")
        .args(["smime", "-verify", "-purpose", "smimesign", "-CAfile"])
        .arg(ctx.ca_pem.path())
        .arg("-in")
        .arg(file.path())
        .args(["-out", "/dev/null"])
        .output()
        .context("running openssl (installed by infra/local/install.sh)")?;
    Ok(out.status.success())
}

async fn signed_object(ctx: &Ctx, key: &str) -> Result<Vec<u8>> {
    Ok(ctx
        .aws
        .s3
        .get_object()
        .bucket(&ctx.bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("GetObject {key}"))?
        .body
        .collect()
        .await?
        .into_bytes()
        .to_vec())
}

/// Records message `name` as accepted (the facts the signer checks) and puts its sample
/// acceptance where ingress would; returns the `unsigned/` key.
async fn put_acceptance(ctx: &Ctx, name: &str) -> Result<String> {
    seed_accepted(ctx.step.state(), name).await?;
    let unsigned_key = acceptance_key(name);
    ctx.aws
        .s3
        .put_object()
        .bucket(&ctx.bucket)
        .key(&unsigned_key)
        .body(sample_message(name).render().into())
        .send()
        .await?;
    Ok(unsigned_key)
}

/// Puts a sample acceptance under `unsigned/`; returns the key its signed form will have and the
/// sign-queue event that announces it.
async fn put_unsigned(ctx: &Ctx, tag: &str) -> Result<(String, SqsEvent)> {
    let name = unique(tag);
    let unsigned_key = put_acceptance(ctx, &name).await?;
    let event =
        wait_for_notification(ctx, ctx.stack.output("SignQueueUrl")?, &unsigned_key).await?;
    Ok((format!("signed/msg/{name}/accettazione.eml"), event))
}

/// Runs the sign step on `event` as Lambda would and settles the batch; every record must succeed.
async fn handle_and_settle(ctx: &Ctx, event: &SqsEvent) -> Result<()> {
    let response = ctx.step.handle(event.clone(), Utc::now()).await;
    ensure!(
        response.batch_item_failures.is_empty(),
        "handler failed: {response:?}"
    );
    queue::settle(
        &ctx.aws.sqs,
        ctx.stack.output("SignQueueUrl")?,
        event,
        &[],
        0,
    )
    .await?;
    Ok(())
}

/// unsigned/ -> sign queue -> handler -> signed/ -> deliver queue; OpenSSL and our verifier agree.
async fn unsigned_object_is_signed_through_kms_and_openssl_verifies(ctx: Arc<Ctx>) -> Result<()> {
    let (signed_key, event) = put_unsigned(&ctx, "accettazione").await?;
    handle_and_settle(&ctx, &event).await?;

    let signed = signed_object(&ctx, &signed_key).await?;
    let v = verify_message(&signed, &ctx.anchors, None, &VerifyOptions::default());
    ensure!(v.verdict == Verdict::Valid, "our verifier: {v:?}");
    ensure!(
        openssl_verifies(&ctx, &signed)?,
        "openssl smime -verify rejected the signed message"
    );

    // One byte of the signed part changed: both must reject it.
    let text = String::from_utf8_lossy(&signed);
    let at = text
        .find("Ricevuta di accettazione")
        .context("signed text not found")?;
    let mut tampered = signed.clone();
    tampered[at] = b'r';
    let v = verify_message(&tampered, &ctx.anchors, None, &VerifyOptions::default());
    ensure!(
        v.verdict == Verdict::InvalidSignature,
        "tampered copy: {v:?}"
    );
    ensure!(
        !openssl_verifies(&ctx, &tampered)?,
        "openssl accepted a tampered message"
    );

    // Locked for 30 months (Object Lock, COMPLIANCE): the version cannot be deleted.
    let head = ctx
        .aws
        .s3
        .head_object()
        .bucket(&ctx.bucket)
        .key(&signed_key)
        .send()
        .await?;
    ensure!(
        head.object_lock_mode() == Some(&aws_sdk_s3::types::ObjectLockMode::Compliance),
        "the signed object is not locked: {:?}",
        head.object_lock_mode()
    );
    let until = head
        .object_lock_retain_until_date()
        .context("no retain-until date")?
        .secs();
    let months = (until - Utc::now().timestamp()) as f64 / (30.44 * 86_400.0);
    ensure!(
        (29.5..30.5).contains(&months),
        "locked for {months:.1} months, not 30"
    );
    let deleted = ctx
        .aws
        .s3
        .delete_object()
        .bucket(&ctx.bucket)
        .key(&signed_key)
        .version_id(head.version_id().context("no version id")?)
        .send()
        .await;
    ensure!(deleted.is_err(), "a locked signed version was deleted");

    // The signed object is announced to the next step.
    wait_for_notification(&ctx, ctx.stack.output("DeliverQueueUrl")?, &signed_key)
        .await
        .context("the signed object was not announced on the deliver queue")?;
    Ok(())
}

/// The same event three times: one KMS call and one object version in all.
async fn duplicate_events_make_no_second_signature_or_object(ctx: Arc<Ctx>) -> Result<()> {
    let (signed_key, event) = put_unsigned(&ctx, "duplicate").await?;
    let before = ctx.step.signer().calls.load(Ordering::SeqCst);
    for _ in 0..3 {
        handle_and_settle(&ctx, &event).await?;
    }
    let calls = ctx.step.signer().calls.load(Ordering::SeqCst) - before;
    ensure!(calls == 1, "{calls} KMS Sign calls for one message");
    let versions = ctx
        .aws
        .s3
        .list_object_versions()
        .bucket(&ctx.bucket)
        .prefix(&signed_key)
        .send()
        .await?;
    ensure!(
        versions.versions().len() == 1,
        "{} versions of {signed_key}",
        versions.versions().len()
    );
    Ok(())
}

/// Builds (or finds up to date) the workspace binaries the checks run, in one cargo call before
/// any check starts, so a test never runs a stale copy and no check's timeout covers a build.
fn build_binaries() -> Result<Binaries> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target dir")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "pec-cli", "-p", "pec-runner", "--bins"])
        .status()?;
    ensure!(
        status.success(),
        "cargo build -p pec-cli -p pec-runner failed"
    );
    let binaries = Binaries {
        pec: dir.join("pec"),
        runner: dir.join("pec-runner"),
    };
    for path in [&binaries.pec, &binaries.runner] {
        ensure!(path.exists(), "{} was not built", path.display());
    }
    Ok(binaries)
}

struct Binaries {
    pec: std::path::PathBuf,
    runner: std::path::PathBuf,
}

fn run_ok(cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// `pec cert issue --kms-key-id` certifies the KMS key; `pec cert csr --kms-key-id` builds a
/// request signed inside KMS that OpenSSL accepts.
async fn pec_cert_works_on_the_kms_key(ctx: Arc<Ctx>) -> Result<()> {
    let pec = &ctx.binaries.pec;
    let key_id = ctx
        .stack
        .function_env("SignFunction", "PEC_SIGNING_KEY_ID")?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    run_ok(
        Command::new(pec)
            .args(["cert", "dev-ca", "--out-dir"])
            .arg(d),
    )?;
    run_ok(
        Command::new(pec)
            .args(["cert", "issue", "--ca-cert"])
            .arg(d.join("ca.pem"))
            .arg("--ca-key")
            .arg(d.join("ca.key.pem"))
            .args([
                "--kms-key-id",
                key_id,
                "--provider",
                "Example Gestore PEC S.p.A.",
            ])
            .args(["--domain", "pec.example.test", "--out"])
            .arg(d.join("provider.pem")),
    )?;
    run_ok(
        Command::new("openssl")
            .args(["verify", "-purpose", "smimesign", "-CAfile"])
            .arg(d.join("ca.pem"))
            .arg(d.join("provider.pem")),
    )?;
    let cert = std::fs::read(d.join("provider.pem"))?;
    let cert_spki = SigningIdentity::from_pem_chain(&cert)?
        .public_key_spki_der()
        .to_vec();
    let kms_spki = KmsSigner::new(ctx.aws.kms.clone(), key_id)
        .public_key_spki_der()
        .await?;
    ensure!(
        cert_spki == kms_spki,
        "the certificate is not for the KMS key"
    );

    run_ok(
        Command::new(pec)
            .args(["cert", "csr", "--kms-key-id", key_id])
            .args([
                "--provider",
                "Example Gestore PEC S.p.A.",
                "--domain",
                "pec.example.test",
            ])
            .arg("--out")
            .arg(d.join("req.pem")),
    )?;
    // OpenSSL 3.0 `req -verify` exits 0 even on a bad signature: read its verdict.
    let out = run_ok(
        Command::new("openssl")
            .args(["req", "-verify", "-noout", "-in"])
            .arg(d.join("req.pem")),
    )?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(said.contains("verify OK"), "openssl req -verify: {said}");
    Ok(())
}

/// `pec-runner` (the local stand-in for Lambda's event source mapping) signs what appears under
/// `unsigned/` with the production handler, then stops when its queues are idle.
async fn runner_signs_what_appears_in_unsigned(ctx: Arc<Ctx>) -> Result<()> {
    let runner = &ctx.binaries.runner;
    let mut names = Vec::new();
    for i in 0..3 {
        let name = unique(&format!("runner{i}"));
        put_acceptance(&ctx, &name).await?;
        names.push(name);
    }
    let out = tokio::process::Command::new(runner)
        .args(["--until-idle", "3", "--only", "SignFunction", "--state-dir"])
        .arg(&ctx.stack.state_dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .context("pec-runner did not stop within 90 s")??;
    ensure!(
        out.status.success(),
        "pec-runner failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in names {
        let signed = signed_object(&ctx, &format!("signed/msg/{name}/accettazione.eml")).await?;
        let v = verify_message(&signed, &ctx.anchors, None, &VerifyOptions::default());
        ensure!(v.verdict == Verdict::Valid, "{name}: {v:?}");
    }
    Ok(())
}

const CHECKS: &[(&str, Check<Ctx>)] = checks![
    runner_signs_what_appears_in_unsigned,
    pec_cert_works_on_the_kms_key,
    unsigned_object_is_signed_through_kms_and_openssl_verifies,
    duplicate_events_make_no_second_signature_or_object,
];

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // Both checks read the same sign queue: run them one after the other.
    args.test_threads = Some(1);
    let stack = match Stack::ensure() {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("sign_function: cannot use the local stack: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("sign_function: no tokio runtime: {e}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let binaries = match build_binaries() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sign_function: {e:#}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let ctx = match runtime.block_on(setup(stack, binaries)) {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            eprintln!("sign_function: set-up failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let conclusion = run_checks(
        &args,
        ctx.clone(),
        runtime,
        CHECKS,
        1,
        Duration::from_secs(120),
    );
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.stack.finish();
    }
    conclusion.exit_code()
}
