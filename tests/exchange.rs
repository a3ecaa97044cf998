//! Two providers on the same emulators and the mail exchange between them (`pec-exchange`):
//! provider A (stack `pec-local`, pec.example.test) and provider B (stack `pec-b`,
//! pec.altro.test), bootstrapped and certified by `infra/local/providers.sh` (one development
//! CA, one provider index in both evidence buckets). A raw message sent through LocalStack SES
//! (`SendRawEmail`, A's identity) to one B address and one ordinary address lands in B's raw
//! bucket as SES receiving writes it (`inbound/<id>.eml` + `.json`, only B's recipient, bytes
//! preserved under the added SES headers) and in the outbox folder; with `--rewrite-ids` it gets
//! SES's Message-ID and Date, its body intact and its signature still valid; `inject` lands
//! ordinary mail (and a real fixture from ../shared, required) as inbound mail.
//!
//! Run: `cargo test -p pec-integration --test exchange` (reuses or starts the emulators).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_ses::primitives::Blob;
use aws_sdk_ses::types::RawMessage;
use chrono::{TimeZone, Utc};
use libtest_mimic::Arguments;
use pec_aws::AwsClients;
use pec_integration::{Check, HasStack, Stack, checks, repo_root, run_checks, run_output, unique};
use pec_smime::{
    DevCa, LocalSigner, ProviderCertificateParams, ProviderIndex, SigningIdentity, TrustAnchors,
    Verdict, VerifyOptions, sign_message, verify_message,
};

const A_DOMAIN: &str = "pec.example.test";
const B_STACK: &str = "pec-b";
const B_DOMAIN: &str = "pec.altro.test";
const B_NAME: &str = "Altro Gestore PEC S.p.A.";
const SES_HEADERS: [&str; 4] = [
    "Return-Path",
    "Received",
    "X-SES-Spam-Verdict",
    "X-SES-Virus-Verdict",
];

struct Ctx {
    stack: Stack,
    aws: AwsClients,
    pec: PathBuf,
    exchange: PathBuf,
    /// `infra/local/providers.sh`'s PKI directory (the shared development CA).
    pki: tempfile::TempDir,
    /// What `providers.sh` printed.
    providers_output: String,
    a: serde_json::Value,
    b: serde_json::Value,
}

impl HasStack for Ctx {
    fn stack(&self) -> &Stack {
        &self.stack
    }
}

impl Ctx {
    fn bucket(res: &serde_json::Value, output: &str) -> Result<String> {
        res["outputs"][output]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no output {output}"))
    }

    async fn object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        Ok(self
            .aws
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("GetObject s3://{bucket}/{key}"))?
            .body
            .collect()
            .await?
            .into_bytes()
            .to_vec())
    }

    async fn versions(&self, bucket: &str, key: &str) -> Result<usize> {
        let out = self
            .aws
            .s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .send()
            .await?;
        Ok(out
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .count())
    }

    /// `pec-exchange ARGS` on this state directory and the two providers' stacks; its
    /// standard output.
    async fn run_exchange(&self, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new(&self.exchange)
            .arg("--state-dir")
            .arg(&self.stack.state_dir)
            .args(["--stack", "pec-local", "--stack", B_STACK])
            .args(args)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(90), out)
            .await
            .context("pec-exchange did not stop within 90 s")??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "pec-exchange {args:?} failed ({}): {stderr}",
            out.status
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sends `raw` through LocalStack SES as provider A's relay would; the SES message id.
    async fn send(&self, raw: &[u8], destinations: &[&str]) -> Result<String> {
        let sent = self
            .aws
            .ses
            .send_raw_email()
            .source(format!("posta-certificata@{A_DOMAIN}"))
            .set_destinations(Some(destinations.iter().map(|d| d.to_string()).collect()))
            .raw_message(
                RawMessage::builder()
                    .data(Blob::new(raw.to_vec()))
                    .build()?,
            )
            .send()
            .await
            .context("SES SendRawEmail from provider A's identity")?;
        Ok(sent.message_id().to_string())
    }
}

/// `<verb> <ses id> <target> <location> <recipients>` lines of pec-exchange for `ses_id`.
fn lines_for<'a>(stdout: &'a str, ses_id: &str) -> Vec<Vec<&'a str>> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= 5 && w[0] == "delivered" && w[1] == ses_id)
        .collect()
}

/// The top-level header block and the body of a message (split at the first blank line).
fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    for (i, w) in raw.windows(4).enumerate() {
        if w == b"\r\n\r\n" {
            return (&raw[..i + 2], &raw[i + 2..]);
        }
    }
    (raw, &[])
}

/// The names of the header fields of `head`, in order.
fn field_names(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
        .collect()
}

/// Checks an arrival: the SES receiving headers on top of `sent`, byte for byte.
fn assert_arrival(stored: &[u8], sent: &[u8], return_path: &str) -> Result<()> {
    ensure!(
        stored.ends_with(sent),
        "the message bytes were not preserved under the SES headers"
    );
    let added = &stored[..stored.len() - sent.len()];
    ensure!(
        field_names(added) == SES_HEADERS,
        "added headers: {:?}",
        String::from_utf8_lossy(added)
    );
    let text = String::from_utf8_lossy(added);
    ensure!(
        text.starts_with(&format!("Return-Path: <{return_path}>\r\n")),
        "{text}"
    );
    ensure!(text.contains("X-SES-Spam-Verdict: PASS\r\nX-SES-Virus-Verdict: PASS\r\n"));
    Ok(())
}

/// A message of provider A to `to`, unique by `tag`.
fn message(tag: &str, to: &[&str]) -> Vec<u8> {
    format!(
        "From: posta-certificata@{A_DOMAIN}\r\n\
         To: {}\r\n\
         Subject: POSTA CERTIFICATA: {tag}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
         Message-ID: <opec.{tag}@{A_DOMAIN}>\r\n\
         X-Trasporto: posta-certificata\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Messaggio di posta certificata {tag}: citt\u{e0}, perch\u{e9}.\r\n\
         Message-ID: <in-the-body@x> (not a header)\r\n",
        to.join(", ")
    )
    .into_bytes()
}

/// Each provider's stack is separate: files, names, domains, keys.
async fn two_stacks_share_no_resource(ctx: Arc<Ctx>) -> Result<()> {
    let dir = &ctx.stack.state_dir;
    for stack in ["pec-local", B_STACK] {
        for file in [format!("{stack}.env"), format!("{stack}.resources.json")] {
            ensure!(dir.join(&file).is_file(), "{file} missing");
        }
    }
    let b_env = std::fs::read_to_string(dir.join(format!("{B_STACK}.env")))?;
    ensure!(b_env.contains(&format!("export PEC_PROVIDER_DOMAIN={B_DOMAIN}\n")));
    ensure!(b_env.contains(&format!("export PEC_PROVIDER_NAME='{B_NAME}'\n")));
    let names = |res: &serde_json::Value| -> Vec<String> {
        let mut out = Vec::new();
        for attrs in res["resources"]
            .as_object()
            .into_iter()
            .flat_map(|r| r.values())
        {
            for (k, v) in attrs.as_object().into_iter().flatten() {
                if !k.starts_with("Dkim")
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_string());
                }
            }
        }
        out
    };
    let (a, b) = (names(&ctx.a), names(&ctx.b));
    ensure!(
        a.len() > 40 && a.len() == b.len(),
        "{} vs {}",
        a.len(),
        b.len()
    );
    let shared: Vec<&String> = a.iter().filter(|n| b.contains(n)).collect();
    ensure!(shared.is_empty(), "names both stacks use: {shared:?}");
    ensure!(
        ctx.b["function_environment"]["PEC_PROVIDER_DOMAIN"] == B_DOMAIN
            && ctx.a["function_environment"]["PEC_PROVIDER_DOMAIN"] == A_DOMAIN
    );
    Ok(())
}

/// providers.sh: one CA, each chain for its own KMS key, one index in both buckets, the CA
/// as trust anchors in both; a second run changes nothing.
async fn providers_share_one_index_and_trust_anchors(ctx: Arc<Ctx>) -> Result<()> {
    let ca = std::fs::read(ctx.pki.path().join("ca.pem"))?;
    let mut anchors = TrustAnchors::new();
    anchors.add_pem_bundle(&ca)?;
    let mut index_bytes = Vec::new();
    for (res, domain) in [(&ctx.a, A_DOMAIN), (&ctx.b, B_DOMAIN)] {
        let bucket = Ctx::bucket(res, "EvidenceBucketName")?;
        let env = &res["functions"]["SignFunction"]["environment"];
        let chain_key = env["PEC_SIGNING_CHAIN_KEY"].as_str().context("chain key")?;
        let key_id = env["PEC_SIGNING_KEY_ID"].as_str().context("key id")?;
        let chain = ctx.object(&bucket, chain_key).await?;
        let identity = SigningIdentity::from_pem_chain(&chain)?;
        let kms = pec_aws::KmsSigner::new(ctx.aws.kms.clone(), key_id)
            .public_key_spki_der()
            .await?;
        ensure!(
            identity.public_key_spki_der() == kms.as_slice(),
            "{domain}: the chain is not for this stack's KMS key"
        );
        ensure!(
            ctx.object(&bucket, "config/trust-anchors.pem").await? == ca,
            "{domain}: trust anchors are not the development CA"
        );
        let index_key = res["function_environment"]["PEC_PROVIDER_INDEX_KEY"]
            .as_str()
            .context("index key")?;
        let index = ctx.object(&bucket, index_key).await?;
        if index_bytes.is_empty() {
            index_bytes = index;
        } else {
            ensure!(
                index == index_bytes,
                "the two buckets hold different indexes"
            );
        }
    }
    let index = ProviderIndex::from_ldif(&index_bytes)?;
    ensure!(
        index.entries().len() == 2,
        "{} entries",
        index.entries().len()
    );
    for (domain, name) in [(A_DOMAIN, "Example Gestore PEC S.p.A."), (B_DOMAIN, B_NAME)] {
        let entry = index
            .provider_for_domain(domain)
            .with_context(|| format!("{domain} is not in the index"))?;
        ensure!(
            entry.provider_name == name,
            "{domain}: {}",
            entry.provider_name
        );
        ensure!(
            entry.mail_receipt.as_deref() == Some(format!("posta-certificata@{domain}").as_str())
        );
    }
    ensure!(
        ctx.providers_output.contains(B_DOMAIN),
        "{}",
        ctx.providers_output
    );

    // Idempotent: a second run issues nothing and writes no new object version.
    let b_bucket = Ctx::bucket(&ctx.b, "EvidenceBucketName")?;
    let before = ctx
        .versions(&b_bucket, "config/provider-index.ldif")
        .await?;
    let provider_pem = std::fs::read(ctx.pki.path().join(B_STACK).join("provider.pem"))?;
    run_providers_sh(&ctx.stack, &ctx.pec, ctx.pki.path())?;
    ensure!(
        std::fs::read(ctx.pki.path().join(B_STACK).join("provider.pem"))? == provider_pem,
        "the certificate was issued again"
    );
    ensure!(
        ctx.versions(&b_bucket, "config/provider-index.ldif")
            .await?
            == before,
        "a second run wrote the index again"
    );
    Ok(())
}

/// A → SES → exchange: B's raw bucket gets only B's recipient, the outbox the ordinary one.
async fn sent_mail_reaches_provider_b_and_the_outbox(ctx: Arc<Ctx>) -> Result<()> {
    let tag = unique("exchange");
    let b_rcpt = format!("{tag}@{B_DOMAIN}");
    let other = format!("{tag}@ordinaria.test");
    let raw = message(&tag, &[&b_rcpt, &other]);
    let ses_id = ctx.send(&raw, &[&b_rcpt, &other]).await?;

    let stdout = ctx.run_exchange(&["--until-idle", "2"]).await?;
    let lines = lines_for(&stdout, &ses_id);
    ensure!(lines.len() == 2, "pec-exchange printed:\n{stdout}");
    let to_b = lines
        .iter()
        .find(|w| w[2] == B_STACK)
        .context("nothing delivered to pec-b")?;
    ensure!(to_b[4] == b_rcpt, "{to_b:?}");
    let b_raw = Ctx::bucket(&ctx.b, "RawMailBucketName")?;
    let eml_key = to_b[3]
        .strip_prefix(&format!("s3://{b_raw}/"))
        .with_context(|| format!("{} is not in B's raw bucket", to_b[3]))?;
    let id = eml_key
        .strip_prefix("inbound/")
        .and_then(|k| k.strip_suffix(".eml"))
        .context("not inbound/<id>.eml")?;
    ensure!(
        id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "id {id}"
    );
    let stored = ctx.object(&b_raw, eml_key).await?;
    assert_arrival(&stored, &raw, &format!("posta-certificata@{A_DOMAIN}"))?;
    let envelope: serde_json::Value =
        serde_json::from_slice(&ctx.object(&b_raw, &format!("inbound/{id}.json")).await?)?;
    ensure!(envelope["version"] == 1, "{envelope}");
    ensure!(
        envelope["recipients"] == serde_json::json!([b_rcpt]),
        "{envelope}"
    );
    ensure!(envelope["source"] == format!("posta-certificata@{A_DOMAIN}"));
    let received = envelope["received_at"].as_str().context("received_at")?;
    chrono::DateTime::parse_from_rfc3339(received).context("received_at is not RFC 3339")?;
    // The envelope is written after the message (S3 ObjectCreated order = the ingress trigger).
    let head = |key: String| {
        let s3 = ctx.aws.s3.clone();
        let b = b_raw.clone();
        async move { s3.head_object().bucket(b).key(key).send().await }
    };
    let (eml_at, json_at) = (
        head(eml_key.to_string()).await?.last_modified().cloned(),
        head(format!("inbound/{id}.json"))
            .await?
            .last_modified()
            .cloned(),
    );
    ensure!(eml_at <= json_at, "the .json was written before the .eml");

    // Nothing for provider A; the ordinary recipient is in the outbox, bytes as sent.
    let a_raw = Ctx::bucket(&ctx.a, "RawMailBucketName")?;
    let listed = ctx
        .aws
        .s3
        .list_objects_v2()
        .bucket(&a_raw)
        .prefix(format!("inbound/{id}"))
        .send()
        .await?;
    ensure!(listed.key_count().unwrap_or(0) == 0, "A got a copy");
    let to_other = lines
        .iter()
        .find(|w| w[2] == "outbox")
        .context("nothing in the outbox")?;
    ensure!(to_other[4] == other, "{to_other:?}");
    let outbox = ctx
        .stack
        .state_dir
        .join("exchange/outbox/ordinaria.test")
        .join(format!("{id}.eml"));
    ensure!(to_other[3] == outbox.display().to_string(), "{to_other:?}");
    ensure!(std::fs::read(&outbox)? == raw, "outbox bytes differ");

    // Consumed from LocalStack's store, and never delivered twice.
    let left = pec_integration::http_get(
        ctx.stack.localstack.port,
        &format!("/_aws/ses?id={ses_id}"),
        Duration::from_secs(5),
    )?;
    let left: serde_json::Value = serde_json::from_slice(&left)?;
    ensure!(
        left["messages"].as_array().is_some_and(|m| m.is_empty()),
        "still in the store: {left}"
    );
    let again = ctx.run_exchange(&["--until-idle", "1"]).await?;
    ensure!(
        lines_for(&again, &ses_id).is_empty(),
        "delivered twice:\n{again}"
    );
    Ok(())
}

/// --rewrite-ids: SES's Message-ID and Date; body and provider signature intact.
async fn rewritten_ids_leave_body_and_signature_intact(ctx: Arc<Ctx>) -> Result<()> {
    let tag = unique("rewrite");
    let b_rcpt = format!("{tag}@{B_DOMAIN}");
    // A provider-signed message (development CA, local key: only the bytes matter here).
    let y = |y| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
    let ca = DevCa::generate("Exchange test CA", y(2025), y(2035)).await?;
    let key = LocalSigner::generate_rsa(2048)?;
    let cert = ca
        .issue_provider_certificate(
            &ProviderCertificateParams::new(
                "Example Gestore PEC S.p.A.",
                A_DOMAIN,
                y(2025),
                y(2030),
            ),
            key.public_key_spki_der(),
        )
        .await?;
    let identity = SigningIdentity::new(cert, vec![])?;
    let original_id = format!("<opec.{tag}@{A_DOMAIN}>");
    let headers: Vec<(String, String)> = [
        ("Date", "Mon, 23 Nov 2026 10:00:00 +0100".to_string()),
        ("From", format!("posta-certificata@{A_DOMAIN}")),
        ("To", b_rcpt.clone()),
        ("Subject", format!("POSTA CERTIFICATA: {tag}")),
        ("Message-ID", original_id.clone()),
        ("X-Trasporto", "posta-certificata".to_string()),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    let entity = format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Busta di trasporto {tag}, citt\u{e0}.\r\nMessage-ID: {original_id}\r\n"
    );
    let signed = sign_message(&key, &identity, &headers, entity.as_bytes(), Utc::now()).await?;
    let mut anchors = TrustAnchors::new();
    anchors.add_pem_bundle(ca.certificate_pem()?.as_bytes())?;
    let verify = |raw: &[u8]| verify_message(raw, &anchors, None, &VerifyOptions::default());
    ensure!(verify(&signed).verdict == Verdict::Valid);

    let before_send = Utc::now() - chrono::Duration::seconds(2);
    let ses_id = ctx.send(&signed, &[&b_rcpt]).await?;
    let stdout = ctx
        .run_exchange(&["--rewrite-ids", "--until-idle", "2"])
        .await?;
    let lines = lines_for(&stdout, &ses_id);
    ensure!(
        lines.len() == 1 && lines[0][2] == B_STACK,
        "pec-exchange printed:\n{stdout}"
    );
    let b_raw = Ctx::bucket(&ctx.b, "RawMailBucketName")?;
    let key = lines[0][3]
        .strip_prefix(&format!("s3://{b_raw}/"))
        .context("not in B's raw bucket")?;
    let stored = ctx.object(&b_raw, key).await?;

    let (_, sent_body) = split(&signed);
    let (stored_head, stored_body) = split(&stored);
    ensure!(stored_body == sent_body, "the body changed");
    let head = String::from_utf8_lossy(stored_head);
    let names = field_names(stored_head);
    ensure!(
        names[..4] == SES_HEADERS,
        "SES receiving headers on top: {names:?}"
    );
    let value = |name: &str| {
        head.split("\r\n")
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    };
    let message_id = value("Message-ID").context("no Message-ID")?;
    ensure!(
        message_id == format!("<{ses_id}@eu-south-1.amazonses.com>"),
        "Message-ID {message_id}"
    );
    ensure!(
        !head.contains(&original_id),
        "the original Message-ID is still a header"
    );
    let date = value("Date").context("no Date")?;
    let date = chrono::DateTime::parse_from_rfc2822(&date)
        .with_context(|| format!("Date {date:?} is not RFC 5322"))?;
    ensure!(
        date >= before_send && date <= Utc::now() + chrono::Duration::seconds(2),
        "Date {date} is not the send time"
    );
    // The other top-level headers are as sent (only two fields were replaced).
    for name in ["From", "To", "Subject", "X-Trasporto", "MIME-Version"] {
        ensure!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    ensure!(
        names.len() == SES_HEADERS.len() + field_names(split(&signed).0).len(),
        "{names:?}"
    );
    let v = verify(&stored);
    ensure!(
        v.verdict == Verdict::Valid,
        "the signature no longer verifies: {v:?}"
    );
    Ok(())
}

/// `pec-exchange inject`: ordinary mail to a B mailbox lands as inbound; unknown domains are
/// refused with nothing written; a real fixture goes through unchanged.
async fn injected_ordinary_mail_lands_as_inbound(ctx: Arc<Ctx>) -> Result<()> {
    let tag = unique("inject");
    let rcpt = format!("{tag}@{B_DOMAIN}");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("ordinary.eml");
    let raw = format!(
        "From: Someone <someone@ordinaria.test>\r\nTo: {rcpt}\r\nSubject: ordinary {tag}\r\n\
         Message-ID: <{tag}@ordinaria.test>\r\n\r\nCiao.\r\n"
    );
    std::fs::write(&file, &raw)?;
    let file_arg = file.display().to_string();
    let stdout = ctx
        .run_exchange(&[
            "inject",
            "--from",
            "someone@ordinaria.test",
            "--to",
            &rcpt,
            "--eml",
            &file_arg,
        ])
        .await?;
    let words: Vec<&str> = stdout.split_whitespace().collect();
    ensure!(
        words.len() == 4 && words[0] == "injected" && words[1] == B_STACK && words[3] == rcpt,
        "{stdout}"
    );
    let b_raw = Ctx::bucket(&ctx.b, "RawMailBucketName")?;
    let key = words[2]
        .strip_prefix(&format!("s3://{b_raw}/"))
        .context("not B's raw bucket")?;
    assert_arrival(
        &ctx.object(&b_raw, key).await?,
        raw.as_bytes(),
        "someone@ordinaria.test",
    )?;
    let json_key = key.replace(".eml", ".json");
    let envelope: serde_json::Value =
        serde_json::from_slice(&ctx.object(&b_raw, &json_key).await?)?;
    ensure!(
        envelope["recipients"] == serde_json::json!([rcpt]),
        "{envelope}"
    );
    ensure!(envelope["source"] == "someone@ordinaria.test", "{envelope}");

    // A recipient no local provider manages: exit 2, nothing written.
    let out = Command::new(&ctx.exchange)
        .arg("--state-dir")
        .arg(&ctx.stack.state_dir)
        .args(["--stack", "pec-local", "--stack", B_STACK])
        .args([
            "inject",
            "--from",
            "a@ordinaria.test",
            "--to",
            "x@elsewhere.test",
        ])
        .args(["--eml", &file_arg, "--id", &tag])
        .output()?;
    ensure!(out.status.code() == Some(2), "{out:?}");
    ensure!(
        ctx.aws
            .s3
            .head_object()
            .bucket(&b_raw)
            .key(format!("inbound/{tag}.eml"))
            .send()
            .await
            .is_err(),
        "written anyway"
    );

    // A real fixture (read-only reference data beside the repository), with a fixed id:
    // injecting it twice writes once.
    // Required data: a missing folder fails loudly (never a skip), CI or not.
    let fixture = pec_testkit::fixtures::real_path("plain-mail.eml");
    let id = format!("fixture-{}", tag.replace('_', "-"));
    let fixture_arg = fixture.display().to_string();
    let args = [
        "inject",
        "--from",
        "test@tozzi.app",
        "--to",
        &rcpt,
        "--eml",
        &fixture_arg,
        "--id",
        &id,
    ];
    let first = ctx.run_exchange(&args).await?;
    let second = ctx.run_exchange(&args).await?;
    ensure!(!first.contains('#'), "{first}");
    ensure!(second.contains("# already there"), "{second}");
    let stored = ctx.object(&b_raw, &format!("inbound/{id}.eml")).await?;
    ensure!(
        stored.ends_with(&std::fs::read(&fixture)?),
        "fixture bytes changed"
    );
    Ok(())
}

const CHECKS: &[(&str, Check<Ctx>)] = checks![
    two_stacks_share_no_resource,
    providers_share_one_index_and_trust_anchors,
    sent_mail_reaches_provider_b_and_the_outbox,
    rewritten_ids_leave_body_and_signature_intact,
    injected_ordinary_mail_lands_as_inbound,
];

/// `pec` and `pec-exchange`, built before any check starts (beside the test binary).
fn build_binaries() -> Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary has no target dir")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "pec-cli",
            "-p",
            "pec-exchange",
            "--bins",
        ])
        .current_dir(repo_root())
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "cargo build -p pec-cli -p pec-exchange failed"
    );
    let (pec, exchange) = (dir.join("pec"), dir.join("pec-exchange"));
    for p in [&pec, &exchange] {
        ensure!(p.exists(), "{} was not built", p.display());
    }
    Ok((pec, exchange))
}

/// `infra/local/providers.sh --pec PEC --pki-dir DIR` on the harness's state directory.
fn run_providers_sh(stack: &Stack, pec: &Path, pki: &Path) -> Result<String> {
    run_output(
        Command::new(repo_root().join("infra/local/providers.sh"))
            .arg("--pec")
            .arg(pec)
            .arg("--pki-dir")
            .arg(pki)
            .env("PEC_STATE_DIR", &stack.state_dir),
    )
}

/// What the checks share, built on `stack` (which is handed back on failure, so that what this
/// run started can be stopped).
async fn setup(stack: Stack) -> std::result::Result<Ctx, (anyhow::Error, Stack)> {
    let prepared = async {
        let (pec, exchange) = build_binaries()?;
        let pki = tempfile::tempdir()?;
        // Bootstraps pec-local and pec-b, certifies both, one index (the set-up under test).
        let providers_output = run_providers_sh(&stack, &pec, pki.path())?;
        let read = |stack_name: &str| -> Result<serde_json::Value> {
            let path = stack.state_dir.join(format!("{stack_name}.resources.json"));
            Ok(serde_json::from_slice(
                &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            )?)
        };
        let (a, b) = (read("pec-local")?, read(B_STACK)?);
        if b["function_environment"]["PEC_PROVIDER_DOMAIN"] != B_DOMAIN {
            bail!("{B_STACK} was not bootstrapped for {B_DOMAIN}");
        }
        let aws = stack.clients().await;
        Ok::<_, anyhow::Error>((pec, exchange, pki, providers_output, a, b, aws))
    }
    .await;
    match prepared {
        Ok((pec, exchange, pki, providers_output, a, b, aws)) => Ok(Ctx {
            stack,
            aws,
            pec,
            exchange,
            pki,
            providers_output,
            a,
            b,
        }),
        Err(e) => Err((e, stack)),
    }
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // The exchange reads one shared store: one check at a time.
    args.test_threads = Some(1);
    let stack = match Stack::ensure() {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("exchange: cannot use the local stack: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("exchange: no tokio runtime: {e}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let ctx = match runtime.block_on(setup(stack)) {
        Ok(ctx) => Arc::new(ctx),
        Err((e, stack)) => {
            eprintln!("exchange: set-up failed: {e:#}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let conclusion = run_checks(
        &args,
        ctx.clone(),
        runtime,
        CHECKS,
        1,
        Duration::from_secs(180),
    );
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.stack.finish();
    }
    conclusion.exit_code()
}
