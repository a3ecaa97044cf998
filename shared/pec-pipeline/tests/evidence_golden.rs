//! Golden corpus of evidence sets: what one submission produces, byte for byte.
//!
//! Each case in `tests/golden/evidence/` is an input submission plus its expected evidence set:
//!
//! | file | what |
//! |---|---|
//! | `<case>.eml` | input: the raw RFC 5322 message as the user submits it over SMTP |
//! | `<case>.json` | input: the SMTP envelope, the provider's mailboxes and the outbound relay's refusals (see [`Sidecar`]) |
//! | `<case>.out.json` | expected: the outcome, every signed message (key, kind, subject, signing time, signature verdict, mailboxes it was stored in), the recipients' outcomes and the provider log |
//! | `<case>.evidence/<nn>-<name>.eml` | expected: each signed provider message, exactly as stored, numbered in signing order |
//!
//! The set comes from the real steps over the memory fakes (`common::Flow`, shared with
//! `flow.rs`): ingress, the scan step with fake clean engines, sign, deliver, receipts, sign,
//! deliver; with a fixed clock (`common::t0`), ids seeded by the submission id (the case name
//! unless the sidecar gives `id`) and the committed test PKI's `pec.example.test` key
//! (`pec_testkit::pki`), so the bytes are the same on every run. Every signed message is
//! verified against the test CA and the provider index (it must be `Valid`), so a golden file
//! can never hold a broken signature.
//!
//! The comparison goes through `pec_testkit::golden::Corpus`: a different, missing or stale
//! expected file fails (a `<case>.evidence/` folder or a sidecar without its case too).
//! Regenerate after an intended change, then review the diff:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p pec-pipeline --test evidence_golden
//! ```

mod common;

use std::path::{Path, PathBuf};

use common::{Flow, MAILBOXES};
use pec_core::classify::classify;
use pec_pipeline::ingress::IngressOutcome;
use pec_ports::{Mailbox, RecipientReply, Refusal, StateStore};
use pec_smime::{Verdict, VerifyOptions, verify_message};
use pec_testkit::golden::{self, Corpus};
use serde::Deserialize;
use serde_json::json;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/evidence")
}

/// `<case>.json`: the SMTP envelope and the provider's state before the submission.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    /// Submission id (default: the case name).
    #[serde(default)]
    id: Option<String>,
    /// The authenticated user (SMTP AUTH).
    user: String,
    /// MAIL FROM.
    reverse_path: String,
    /// RCPT TO, in order.
    recipients: Vec<String>,
    /// The mailboxes that exist (the others are unknown users).
    mailboxes: Vec<MailboxSpec>,
    /// What the receiving MX answers recipients at other providers (the memory transport);
    /// the others are taken. With recipients outside `pec.example.test`, the test PKI's
    /// provider index is loaded (so `pec.altro.test` is a PEC domain).
    #[serde(default)]
    relay: Vec<RelaySpec>,
}

/// A recipient the receiving MX refuses for good.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelaySpec {
    recipient: String,
    /// A 5xx reply code (a deferral would fail the run).
    code: u16,
    #[serde(default)]
    enhanced: Option<String>,
    text: String,
    /// Refused at `RCPT` (default), or the whole message.
    #[serde(default = "at_rcpt")]
    at_rcpt: bool,
}

fn at_rcpt() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxSpec {
    address: String,
    /// Default: the Standard plan's quota.
    #[serde(default)]
    quota_bytes: Option<u64>,
    /// Locked mailboxes refuse envelopes.
    #[serde(default)]
    locked: bool,
}

/// One case's produced evidence set.
#[derive(Debug, PartialEq, Eq)]
struct EvidenceSet {
    /// `<case>.out.json`.
    summary: Vec<u8>,
    /// `(<nn>-<name>, bytes)` of each signed message, in signing order.
    messages: Vec<(String, Vec<u8>)>,
}

/// A case: its name and inputs.
struct Case {
    name: String,
    raw: Vec<u8>,
    sidecar: Sidecar,
}

/// Every `<case>.eml` of the corpus with its `<case>.json`, sorted; a sidecar without its
/// message fails.
fn cases() -> Vec<Case> {
    let dir = corpus_dir();
    let names = |ext: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(ext).map(str::to_string))
            .filter(|stem| !stem.contains('.'))
            .collect();
        v.sort();
        v
    };
    let inputs = names(".eml");
    for sidecar in names(".json") {
        assert!(
            inputs.contains(&sidecar),
            "{}: a sidecar without its message {sidecar}.eml",
            dir.join(format!("{sidecar}.json")).display()
        );
    }
    assert!(!inputs.is_empty(), "no case in {}", dir.display());
    inputs
        .into_iter()
        .map(|name| {
            let read = |ext: &str| {
                let path = dir.join(format!("{name}.{ext}"));
                std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            };
            let raw = read("eml");
            let sidecar = serde_json::from_slice(&read("json"))
                .unwrap_or_else(|e| panic!("{name}.json: {e}"));
            Case { name, raw, sidecar }
        })
        .collect()
}

/// `signed/msg/<id>/consegna/a@b.eml` -> `consegna-a@b`.
fn short_name(signed_key: &str, id: &str) -> String {
    let prefix = format!("signed/msg/{id}/");
    let rest = signed_key.strip_prefix(&prefix).unwrap_or(signed_key);
    rest.trim_end_matches(".eml").replace('/', "-")
}

/// Runs one submission through the pipeline and collects its evidence set.
async fn evidence_set(case: &Case) -> EvidenceSet {
    let s = &case.sidecar;
    let id = s.id.clone().unwrap_or_else(|| case.name.clone());
    let mut f = Flow::empty().await;
    for m in &s.mailboxes {
        f.add_mailbox(&Mailbox {
            locked: m.locked,
            status: Default::default(),
            member: None,
            status_note: None,
            agreement_accepted_at: None,
            ..common::mailbox_record(
                &m.address,
                m.quota_bytes.unwrap_or_else(common::standard_quota),
            )
        })
        .await;
    }
    if s.recipients
        .iter()
        .any(|r| !r.ends_with(&format!("@{}", common::DOMAIN)))
    {
        f.store.insert(
            common::EVIDENCE,
            pec_pipeline::DEFAULT_PROVIDER_INDEX_KEY,
            f.pki.index_ldif().into_bytes(),
        );
    }
    for r in &s.relay {
        assert!(r.code >= 500, "{}: only refusals for good", case.name);
        f.outbox.reply_to(
            &r.recipient,
            RecipientReply::Refused(Refusal {
                code: r.code,
                enhanced: r.enhanced.clone(),
                text: r.text.clone(),
                at_rcpt: r.at_rcpt,
            }),
        );
    }
    let recipients: Vec<&str> = s.recipients.iter().map(String::as_str).collect();
    f.submit_envelope(
        &common::envelope(&id, &s.user, &s.reverse_path, &recipients),
        &case.raw,
    );
    let outcome = f.run(&id, 1).await;
    let (outcome, refusal) = match &outcome {
        IngressOutcome::ScanRequested { .. } => ("scan-requested", None),
        IngressOutcome::Rejected { reasons, .. } => ("rejected", Some(reasons.clone())),
        other => panic!("{}: unexpected outcome {other:?}", case.name),
    };
    let record = f
        .state
        .message(&id)
        .await
        .unwrap()
        .expect("the message record");

    // Where the delivery point stored each evidence key (and that it stored the same bytes).
    let mut stored: Vec<(String, String, Vec<u8>)> = Vec::new();
    for m in &s.mailboxes {
        for item in f.state.mailbox_items(&m.address).await.unwrap() {
            let bytes = f
                .store
                .object(MAILBOXES, &item.object_key)
                .unwrap_or_else(|| panic!("{}: no object {}", case.name, item.object_key));
            stored.push((item.evidence_key, m.address.to_ascii_lowercase(), bytes));
        }
    }

    let index = f.pki.index();
    let mut messages = Vec::new();
    let mut evidence = Vec::new();
    for (n, signed) in f.signed.iter().enumerate() {
        let bytes = f
            .store
            .object(common::EVIDENCE, &signed.signed_key)
            .expect("the signed object");
        let v = verify_message(&bytes, &f.anchors, Some(&index), &VerifyOptions::default());
        assert_eq!(
            v.verdict,
            Verdict::Valid,
            "{}: {} does not verify: {:?}",
            case.name,
            signed.signed_key,
            v.reason
        );
        let signer = v.index.matched.as_ref().map(|m| m.provider_name.clone());
        assert_eq!(signer.as_deref(), Some(pec_testkit::pki::EXAMPLE_NAME));
        let c = classify(&bytes);
        let file = format!("{:02}-{}", n + 1, short_name(&signed.signed_key, &id));
        let mut stored_in = Vec::new();
        for (key, mailbox, copy) in &stored {
            if key == &signed.signed_key {
                assert_eq!(copy, &bytes, "{}: the copy in {mailbox} differs", case.name);
                stored_in.push(mailbox.clone());
            }
        }
        evidence.push(json!({
            "file": format!("{file}.eml"),
            "key": signed.signed_key,
            "kind": c.kind.as_str(),
            "subject": c.headers.subject,
            "to": c.headers.to,
            "signed_at": signed.at,
            "signature": "valid",
            "signer": signer,
            "stored_in": stored_in,
        }));
        messages.push((file, bytes));
    }

    let mut outcomes = Vec::new();
    let mut relayed = Vec::new();
    for r in &s.recipients {
        if let Some(o) = f.state.recipient(&id, r).await.unwrap() {
            let mut outcome = json!({
                "recipient": o.recipient,
                "status": o.status,
                "reason": o.reason,
                "at": o.at,
            });
            if let Some(detail) = &o.detail {
                outcome["detail"] = json!(detail);
            }
            outcomes.push(outcome);
        }
        if let Some(r) = f.state.relay(&id, r).await.unwrap() {
            relayed.push(json!({
                "recipient": r.recipient,
                "certified": r.certified,
                "relayed_at": r.relayed_at,
                "failed_at": r.failed_at,
            }));
        }
    }
    let log: Vec<_> = f
        .state
        .all_log()
        .into_iter()
        .map(|e| {
            json!({
                "type": e.event_type.detail_type(),
                "evidence_key": e.evidence_key,
                "recipient": e.recipient,
                "error_detail": e.error_detail,
            })
        })
        .collect();
    let mut summary = json!({
        "submission": {
            "id": id,
            "identificativo": record.identificativo,
            "outcome": outcome,
            "refusal": refusal,
            "state": record.state.as_str(),
            "certified": record.certified,
        },
        "evidence": evidence,
        "recipients": outcomes,
        "log": log,
    });
    if !relayed.is_empty() {
        summary["relayed"] = json!(relayed);
    }
    EvidenceSet {
        summary: golden::json(&summary),
        messages,
    }
}

async fn all_sets() -> Vec<(String, EvidenceSet)> {
    let mut out = Vec::new();
    for case in cases() {
        let set = evidence_set(&case).await;
        out.push((case.name, set));
    }
    out
}

fn update_requested() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[tokio::test]
async fn evidence_golden_corpus() {
    let dir = corpus_dir();
    let sets = all_sets().await;
    assert!(sets.len() >= 4, "the corpus has its cases");

    // A `<case>.evidence/` folder whose case is gone is stale.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".evidence"))
        else {
            continue;
        };
        if sets.iter().any(|(name, _)| name == stem) {
            continue;
        }
        if update_requested() && !pec_testkit::prereq::on_ci() {
            std::fs::remove_dir_all(&path).unwrap();
            eprintln!("UPDATE_GOLDEN: removed stale {}", path.display());
        } else {
            panic!(
                "{}: stale (no case {stem}.eml produces it; delete it or add its case)\n\
                 If the change is intended, regenerate and review the diff:\n  \
                 UPDATE_GOLDEN=1 cargo test -p pec-pipeline --test evidence_golden",
                path.display()
            );
        }
    }
    for (name, set) in &sets {
        Corpus::new(dir.join(format!("{name}.evidence")), "eml").check(
            set.messages
                .iter()
                .map(|(file, bytes)| (file.clone(), bytes.as_slice())),
        );
    }
    Corpus::new(&dir, "out.json").check(
        sets.iter()
            .map(|(name, set)| (name.clone(), set.summary.as_slice())),
    );
}

#[tokio::test]
async fn building_the_evidence_sets_twice_gives_the_same_bytes() {
    let first = all_sets().await;
    let second = all_sets().await;
    assert_eq!(first.len(), second.len());
    for ((name, a), (_, b)) in first.iter().zip(second.iter()) {
        assert_eq!(a.summary, b.summary, "{name}: the summary differs");
        assert_eq!(a.messages.len(), b.messages.len(), "{name}");
        for ((file, x), (_, y)) in a.messages.iter().zip(b.messages.iter()) {
            assert!(x == y, "{name}: {file} differs between two runs");
        }
    }
}

/// The corpus covers what the issue asks for (so a case cannot silently disappear).
#[tokio::test]
async fn the_corpus_covers_acceptance_refusal_non_delivery_and_receipt_forms() {
    let sets = all_sets().await;
    let kinds: Vec<String> = sets
        .iter()
        .flat_map(|(_, s)| s.messages.iter())
        .map(|(_, bytes)| classify(bytes).kind.as_str().to_string())
        .collect();
    for kind in [
        "accettazione",
        "non-accettazione",
        "busta-trasporto",
        "avvenuta-consegna",
        "errore-consegna",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let forms: Vec<String> = sets
        .iter()
        .flat_map(|(_, s)| s.messages.iter())
        .filter_map(|(_, bytes)| classify(bytes).headers.x_tipo_ricevuta.clone())
        .collect();
    for form in ["completa", "breve", "sintetica"] {
        assert!(
            forms.iter().any(|f| f.eq_ignore_ascii_case(form)),
            "no {form} receipt in {forms:?}"
        );
    }
}
