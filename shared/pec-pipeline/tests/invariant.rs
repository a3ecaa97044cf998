//! Issue 11 ("found by a hostile sender"): one invariant of the whole pipeline, tested with
//! random hostile submissions.
//!
//! **Every message accepted over SMTP ends in exactly one of**
//! - (a) an avviso di non accettazione (formal, or per virus from the scan step), or
//! - (b) a ricevuta di accettazione **and** a signed busta di trasporto, and for each SMTP
//!   recipient exactly one final outcome (ricevuta di avvenuta consegna, avviso di mancata
//!   consegna, or the 24 h timeout notice),
//!
//! with no step failing on the way (a failure is a record left in a dead-letter queue: a
//! message stuck with no end, or an acceptance whose envelope was never signed), every signed
//! object verifying, each one of a kind (no duplicate receipt, no duplicate mailbox item), and
//! duplicated events changing nothing.
//!
//! The submissions are built the way the SMTP gateway stores them (`submitted/<id>.eml`, then
//! `submitted/<id>.json`) from hostile pieces: 8-bit bytes (UTF-8 and Latin-1) in To, Cc,
//! Subject, Reply-To, Received and other headers, whitespace-only continuation lines, NUL and
//! other control bytes, lines over 998 octets, bare LF (whole message or some lines), missing and
//! duplicated headers, unterminated, deeply nested and boundary-reusing multiparts, attached
//! messages. Gateway-valid and gateway-invalid inputs alike: the raw bucket must be survivable
//! whatever it holds.
//!
//! The driver is not `common::Flow::run` (which unwraps every step): it runs the same steps over
//! the same memory fakes (ingress, the scan step with fake clean engines, the real sign step with
//! the test PKI's key, deliver, receipts) and records every step error instead.
//!
//! Cases: 128 by default (`PROPTEST_CASES` overrides), from a fixed seed (set `INVARIANT_SEED`
//! to a number to explore other inputs); failures are not persisted to files. With
//! `INVARIANT_DEBUG` set, each case prints its evidence counts and refusal reasons (to check the
//! mix: about a quarter of the cases are accepted, the rest refused for every kind of reason).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;
use common::{ANNA, EVIDENCE, Flow, MAILBOXES, MARIO, RAW, RECEIPTS_Q, SCAN_Q, TENANT};
use pec_core::classify::{Kind, classify};
use pec_core::submission::{ENVELOPE_VERSION, SubmissionEnvelope};
use pec_pipeline::deliver::ReceiptRequest;
use pec_pipeline::ingress::IngressOutcome;
use pec_pipeline::scan::ScanRequest;
use pec_ports::StateStore;
use pec_smime::{Verdict, VerifyOptions, verify_message};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// A mailbox of the provider that does not exist: its recipient must get a mancata consegna.
const GHOST: &str = "nessuno@pec.example.test";
/// The submission id of every case (each case has its own provider).
const ID: &str = "hostile1";

// ---------------------------------------------------------------------------------------------
// The driver.

/// What one submission led to.
#[derive(Debug, Default)]
struct Run {
    /// The first outcome of the submission event at ingress.
    outcome: Option<IngressOutcome>,
    /// Every step that failed: "step key: error" (each would be a record in a DLQ).
    errors: Vec<String>,
}

/// Runs every step over `f` until nothing is left, each hand-off `times` times (duplicated
/// events), recording errors instead of stopping. `tried` holds the unsigned keys already handed
/// to the signer (signed or failed), across calls.
async fn drive(f: &Flow, times: usize, tried: &mut BTreeSet<String>, run: &mut Run) {
    let submission = format!("submitted/{ID}.json");
    for _ in 0..times {
        match f.ingress().handle_object(RAW, &submission).await {
            Ok(o) => {
                run.outcome.get_or_insert(o);
            }
            Err(e) => run.errors.push(format!("ingress {submission}: {e}")),
        }
    }
    for request in f.outbox.take(SCAN_Q) {
        let request: ScanRequest = serde_json::from_str(&request).unwrap();
        match common::clean_scan_step(&f.settings, &f.store)
            .scan_request(&request, common::scanned_at())
            .await
        {
            Ok(handled) => {
                if let Some(clean) = handled.record.outputs.clean {
                    for _ in 0..times {
                        if let Err(e) = f.ingress().handle_object(EVIDENCE, &clean).await {
                            run.errors.push(format!("ingress {clean}: {e}"));
                        }
                    }
                }
            }
            Err(e) => run.errors.push(format!("scan {}: {e}", request.key)),
        }
    }
    let mut now = common::t0() + Duration::seconds(5);
    for _round in 0..20 {
        let unsigned: Vec<String> = f
            .store
            .keys(EVIDENCE)
            .into_iter()
            .filter(|k| k.starts_with("unsigned/") && !tried.contains(k))
            .collect();
        let requests = f.outbox.take(RECEIPTS_Q);
        if unsigned.is_empty() && requests.is_empty() {
            return;
        }
        for r in &requests {
            let r: ReceiptRequest = serde_json::from_str(r).unwrap();
            if let Err(e) = f.receipts().build(&r).await {
                run.errors.push(format!(
                    "receipts {} {}: {e}",
                    r.message, r.outcome.recipient
                ));
            }
        }
        for key in unsigned {
            tried.insert(key.clone());
            let body = f.store.object(EVIDENCE, &key).unwrap();
            f.sign.store().insert(EVIDENCE, &key, body);
            let signed_key = key.replacen("unsigned/", "signed/", 1);
            if let Err(e) = f.sign.sign_object(EVIDENCE, &key, now).await {
                run.errors.push(format!("sign {key}: {e}"));
                continue;
            }
            let signed = f.sign.store().object(EVIDENCE, &signed_key).unwrap();
            f.store.insert(EVIDENCE, &signed_key, signed);
            for _ in 0..times {
                if let Err(e) = f.deliver().deliver_object(&signed_key, now).await {
                    run.errors.push(format!("deliver {signed_key}: {e}"));
                }
            }
        }
        now += Duration::seconds(1);
    }
    run.errors
        .push("the steps never settled (20 rounds)".to_string());
}

// ---------------------------------------------------------------------------------------------
// The invariant.

/// The signed objects about the submission, by kind of evidence.
#[derive(Debug, Default)]
struct Evidence {
    acceptance: usize,
    envelope: usize,
    non_acceptance: usize,
    virus_non_acceptance: usize,
    /// recipient -> (delivered, not delivered, 24 h timeout) receipts.
    outcomes: BTreeMap<String, (usize, usize, usize)>,
    /// Signed keys under `signed/msg/<id>/` that are none of the above.
    other: Vec<String>,
}

fn evidence(f: &Flow) -> Evidence {
    let mut e = Evidence::default();
    let msg = format!("signed/msg/{ID}/");
    let scan = format!("signed/scan/submitted/{ID}.eml/");
    for key in f.store.keys(EVIDENCE) {
        if let Some(rest) = key.strip_prefix(&msg) {
            let per_recipient = |dir: &str| {
                rest.strip_prefix(dir)
                    .and_then(|r| r.strip_suffix(".eml"))
                    .map(str::to_string)
            };
            if rest == "accettazione.eml" {
                e.acceptance += 1;
            } else if rest == "busta-trasporto.eml" {
                e.envelope += 1;
            } else if rest == "non-accettazione.eml" {
                e.non_acceptance += 1;
            } else if let Some(r) = per_recipient("consegna/") {
                e.outcomes.entry(r).or_default().0 += 1;
            } else if let Some(r) = per_recipient("mancata-consegna/") {
                e.outcomes.entry(r).or_default().1 += 1;
            } else if let Some(r) = per_recipient("timeout-24h/") {
                e.outcomes.entry(r).or_default().2 += 1;
            } else {
                e.other.push(key.clone());
            }
        } else if let Some(rest) = key.strip_prefix(&scan) {
            if rest.starts_with("non-accettazione") {
                e.virus_non_acceptance += 1;
            } else {
                e.other.push(key.clone());
            }
        }
    }
    e
}

/// The kind a signed evidence key must classify as.
fn expected_kind(key: &str) -> Option<Kind> {
    let name = key.rsplit('/').next()?;
    if key.contains("/consegna/") {
        Some(Kind::AvvenutaConsegna)
    } else if key.contains("/mancata-consegna/") {
        Some(Kind::ErroreConsegna)
    } else {
        match name {
            "accettazione.eml" => Some(Kind::Accettazione),
            "busta-trasporto.eml" => Some(Kind::BustaTrasporto),
            n if n.starts_with("non-accettazione") => Some(Kind::NonAccettazione),
            _ => None,
        }
    }
}

/// Checks the invariant after `run`; `Err` describes every violation.
async fn check(f: &Flow, env: &SubmissionEnvelope, run: &Run) -> Result<(), String> {
    let mut v: Vec<String> = Vec::new();
    for e in &run.errors {
        v.push(format!(
            "a step failed (its record would wait in a DLQ): {e}"
        ));
    }
    let e = evidence(f);
    let refused = e.non_acceptance + e.virus_non_acceptance;
    match (e.acceptance, refused) {
        (0, 0) => v.push("neither an acceptance nor a non-acceptance was signed".into()),
        (a, r) if a > 0 && r > 0 => v.push(format!(
            "both an acceptance ({a}) and a non-acceptance ({r})"
        )),
        (a, r) if a > 1 || r > 1 => {
            v.push(format!("duplicate: {a} acceptances, {r} non-acceptances"))
        }
        _ => {}
    }
    if e.acceptance > 0 {
        if e.envelope != 1 {
            v.push(format!(
                "an acceptance was signed with {} signed envelopes",
                e.envelope
            ));
        }
        let rcpts: BTreeSet<String> = env
            .recipients
            .iter()
            .map(|r| r.to_ascii_lowercase())
            .collect();
        for r in &rcpts {
            match e.outcomes.get(r) {
                Some((d, n, t)) if d + n + t == 1 => {}
                other => v.push(format!(
                    "recipient {r}: (delivered, not delivered, timeout) receipts {other:?}, \
                     not exactly one"
                )),
            }
        }
        for r in e.outcomes.keys() {
            if !rcpts.contains(r) {
                v.push(format!("a receipt about {r}, not an SMTP recipient"));
            }
        }
    } else {
        if e.envelope > 0 {
            v.push("an envelope was signed without an acceptance".into());
        }
        if !e.outcomes.is_empty() {
            v.push(format!(
                "delivery receipts without an acceptance: {:?}",
                e.outcomes
            ));
        }
    }
    if !e.other.is_empty() {
        v.push(format!("unexpected signed objects: {:?}", e.other));
    }

    // Every signed object verifies and is what its key says.
    for key in f.store.keys(EVIDENCE) {
        if !key.starts_with("signed/") {
            continue;
        }
        let bytes = f.store.object(EVIDENCE, &key).unwrap();
        let verified = verify_message(&bytes, &f.anchors, None, &VerifyOptions::default());
        if verified.verdict != Verdict::Valid {
            v.push(format!("{key} does not verify: {:?}", verified.verdict));
        }
        let kind = classify(&bytes).kind;
        if let Some(want) = expected_kind(&key)
            && kind != want
        {
            v.push(format!("{key} classifies as {kind:?}, not {want:?}"));
        }
    }

    // The mailboxes: the sender holds each receipt once; each recipient the envelope at most
    // once, exactly when delivered.
    let mut sender: BTreeMap<String, usize> = BTreeMap::new();
    let mut recipients: BTreeMap<String, usize> = BTreeMap::new();
    for address in [MARIO, ANNA] {
        for item in f.state.mailbox_items(address).await.unwrap() {
            let Some(bytes) = f.store.object(MAILBOXES, &item.object_key) else {
                v.push(format!("{address}: item {} has no object", item.object_key));
                continue;
            };
            let kind = classify(&bytes).kind;
            if kind == Kind::BustaTrasporto {
                *recipients.entry(address.to_string()).or_default() += 1;
            } else if address == MARIO {
                *sender.entry(format!("{kind:?}")).or_default() += 1;
            } else {
                v.push(format!("{address} holds a {kind:?}"));
            }
        }
    }
    let receipts_signed = e.acceptance
        + refused
        + e.outcomes
            .values()
            .map(|(d, n, t)| d + n + t)
            .sum::<usize>();
    let receipts_held: usize = sender.values().sum();
    if receipts_held != receipts_signed {
        v.push(format!(
            "the sender holds {sender:?}, for {receipts_signed} signed receipts"
        ));
    }
    for (address, n) in &recipients {
        let delivered = e.outcomes.get(address).map(|o| o.0).unwrap_or(0);
        if *n != 1 || delivered != 1 {
            v.push(format!(
                "{address} holds {n} envelopes, with {delivered} delivery receipts"
            ));
        }
    }
    for (r, (d, _, _)) in &e.outcomes {
        if *d == 1 && !recipients.contains_key(r) {
            v.push(format!(
                "{r}: a delivery receipt, and no envelope in the mailbox"
            ));
        }
    }
    match (&run.outcome, e.acceptance > 0, refused > 0) {
        (Some(IngressOutcome::Rejected { .. }), false, true) => {}
        (Some(IngressOutcome::ScanRequested { .. }), _, _) => {}
        (o, _, _) if run.errors.is_empty() => {
            v.push(format!("ingress said {o:?} for this evidence"))
        }
        _ => {}
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// The hostile submissions.

/// One generated submission.
#[derive(Debug, Clone)]
struct Case {
    raw: Vec<u8>,
    /// SMTP RCPT TO.
    recipients: Vec<String>,
    /// Each hand-off delivered once or twice.
    times: usize,
    /// The submission event again once everything settled.
    late_duplicate: bool,
}

/// Pieces of header or body text, some harmless, most hostile.
fn text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => Just(b"Diffida".to_vec()),
        2 => Just(b" atto n. 12".to_vec()),
        2 => Just("àèìòù €".as_bytes().to_vec()),
        2 => Just(vec![0xe0, 0xe8, b' ', 0xf9, 0xa4]),
        1 => Just(b"\0".to_vec()),
        1 => Just(b"\x01\x1b\x7f".to_vec()),
        2 => Just(b"\r\n \r\n ".to_vec()),
        1 => Just(b"\r\n\t\r\n\tx".to_vec()),
        1 => Just(b"\r\n\tpiegata".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"=?utf-8?B?w6DDqCDigqw=?=".to_vec()),
        1 => Just(b"=?iso-8859-1?Q?=E0=E8?=".to_vec()),
        1 => Just(b"=?bogus?X?===?=".to_vec()),
        1 => (999usize..1400).prop_map(|n| vec![b'x'; n]),
        1 => Just(b"<>\"\\(,;:@".to_vec()),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|v| v.concat())
}

/// Text a signed envelope can carry (ASCII, proper folds, encoded words), or hostile [`text`]:
/// for the headers the envelope repeats, so that both the refusal and the acceptance paths run.
fn mostly_clean() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"Diffida".to_vec()),
        Just(b" atto n. 12".to_vec()),
        Just(b"\r\n\tpiegata".to_vec()),
        Just(b"=?utf-8?B?w6DDqCDigqw=?=".to_vec()),
        Just(b"=?iso-8859-1?Q?=E0=E8?=".to_vec()),
        Just(b"(commento)".to_vec()),
    ];
    prop_oneof![
        3 => prop::collection::vec(piece, 0..4).prop_map(|v| v.concat()),
        1 => text(),
    ]
}

/// An address of the pool, as written in a header (decorated or not).
fn written_address(addr: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(addr.as_bytes().to_vec()),
        2 => Just(format!("<{addr}>").into_bytes()),
        2 => Just(format!("\"Anna Bianchi\" <{addr}>").into_bytes()),
        1 => Just(addr.to_uppercase().into_bytes()),
        2 => mostly_clean()
            .prop_map(move |name| [b"\"", &name[..], b"\" <", addr.as_bytes(), b">"].concat()),
        1 => Just([b"\r\n \r\n <", addr.as_bytes(), b">"].concat()),
        1 => Just([b"\xc3\x80nna <", addr.as_bytes(), b">"].concat()),
        1 => Just([b"\r\n ", addr.as_bytes()].concat()),
    ]
}

fn address() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    prop_oneof![Just(ANNA), Just(MARIO), Just(GHOST)]
        .prop_flat_map(|a| (Just(a), written_address(a)))
}

/// An address-list header value and the addresses in it.
fn address_list() -> impl Strategy<Value = (Vec<&'static str>, Vec<u8>)> {
    (
        prop::collection::vec(address(), 1..4),
        prop_oneof![Just(&b", "[..]), Just(&b",\r\n "[..]), Just(&b","[..])],
    )
        .prop_map(|(v, sep)| {
            let addrs = v.iter().map(|(a, _)| *a).collect();
            let written: Vec<Vec<u8>> = v.into_iter().map(|(_, w)| w).collect();
            (addrs, written.join(sep))
        })
}

/// A body: (Content-Type value or none, body bytes).
fn body() -> impl Strategy<Value = (Option<Vec<u8>>, Vec<u8>)> {
    let plain = text().prop_map(|t| {
        (
            Some(b"text/plain; charset=utf-8".to_vec()),
            [&t[..], b"\r\n"].concat(),
        )
    });
    let raw8 = text().prop_map(|t| (None, [&t[..], b"\r\nfine\r\n"].concat()));
    // Multiparts nested `depth` deep, each level closed or not, boundaries distinct or reused.
    let nested = (
        prop_oneof![
            3 => prop::collection::vec(prop::bool::weighted(0.97), 1..4),
            1 => prop::collection::vec(prop::bool::weighted(0.97), 4..60),
        ],
        any::<bool>(),
        text(),
        prop_oneof![
            Just(""),
            Just("message/rfc822"),
            Just("base64"),
            Just("no-boundary")
        ],
    )
        .prop_map(|(closed, reuse, leaf, twist)| {
            let boundary = |i: usize| {
                if reuse {
                    "b".to_string()
                } else {
                    format!("b{i}")
                }
            };
            let mut inner: Vec<u8> = match twist {
                "base64" => b"Content-Type: application/pdf; name=\"atto.pdf\"\r\n\
                    Content-Transfer-Encoding: base64\r\n\r\n%%%not base64!!\r\n"
                    .to_vec(),
                "message/rfc822" => [
                    &b"Content-Type: message/rfc822\r\n\r\nFrom: x@y.example\r\nSubject: "[..],
                    &leaf[..],
                    b"\r\nContent-Type: multipart/mixed; boundary=\"dentro\"\r\n\r\n--dentro\r\n\r\nx\r\n",
                ]
                .concat(),
                _ => [&b"Content-Type: text/plain\r\n\r\n"[..], &leaf[..], b"\r\n"].concat(),
            };
            for (i, close) in closed.iter().enumerate().rev() {
                let b = boundary(i);
                let ct = if twist == "no-boundary" && i == 0 {
                    "Content-Type: multipart/mixed\r\n".to_string()
                } else {
                    format!("Content-Type: multipart/mixed; boundary=\"{b}\"\r\n")
                };
                let mut part = ct.into_bytes();
                part.extend_from_slice(format!("\r\n--{b}\r\n").as_bytes());
                part.extend_from_slice(&inner);
                part.extend_from_slice(
                    format!("\r\n--{b}\r\nContent-Type: text/plain\r\n\r\nallegato {i}\r\n")
                        .as_bytes(),
                );
                if *close {
                    part.extend_from_slice(format!("--{b}--\r\n").as_bytes());
                }
                inner = part;
            }
            // The outermost part's headers become the message's.
            let split = inner
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(0);
            let ct = inner[..split]
                .strip_prefix(b"Content-Type: ")
                .unwrap_or(&inner[..split])
                .to_vec();
            (Some(ct), inner[split + 4..].to_vec())
        });
    prop_oneof![3 => plain, 1 => raw8, 3 => nested]
}

/// A header: Just one, or duplicated, or missing.
fn times_of(value: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(value, 0..3)
}

/// Line ends: CRLF, bare LF everywhere, or bare LF on some lines.
#[derive(Debug, Clone, Copy)]
enum Eol {
    Crlf,
    Lf,
    Mixed(u8),
}

fn eol() -> impl Strategy<Value = Eol> {
    prop_oneof![6 => Just(Eol::Crlf), 1 => Just(Eol::Lf), 1 => any::<u8>().prop_map(Eol::Mixed)]
}

fn apply_eol(raw: Vec<u8>, eol: Eol) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut line = 0u32;
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            line += 1;
            let bare = match eol {
                Eol::Crlf => false,
                Eol::Lf => true,
                Eol::Mixed(seed) => (line * 7 + seed as u32).is_multiple_of(3),
            };
            if !bare {
                out.push(b'\r');
            }
            out.push(b'\n');
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

fn case() -> impl Strategy<Value = Case> {
    let from = prop_oneof![
        12 => Just(vec![format!("Mario Rossi <{MARIO}>").into_bytes()]),
        1 => Just(vec![]),
        1 => Just(vec![MARIO.as_bytes().to_vec(), MARIO.as_bytes().to_vec()]),
        1 => text().prop_map(|n| vec![[b"\"", &n[..], b"\" <", MARIO.as_bytes(), b">"].concat()]),
        1 => Just(vec![ANNA.as_bytes().to_vec()]),
    ];
    let to = prop_oneof![16 => address_list().prop_map(|l| vec![l]), 1 => Just(vec![]),
        1 => (address_list(), address_list()).prop_map(|(a, b)| vec![a, b])];
    let cc = prop_oneof![3 => Just(vec![]), 1 => address_list().prop_map(|l| vec![l])];
    let headers = (
        from,
        to,
        cc,
        times_of(text()),                                  // Subject
        times_of(mostly_clean()),                          // Reply-To (display name)
        times_of(mostly_clean()),                          // Received
        prop_oneof![Just(0u8), Just(1), Just(2), Just(3)], // Message-ID shape
        times_of(text()),                                  // X-Ostile
        prop_oneof![4 => Just(false), 1 => Just(true)],    // a line with no colon
        prop_oneof![9 => Just(false), 1 => Just(true)],    // Bcc
    );
    (
        headers,
        body(),
        eol(),
        prop::sample::subsequence(vec![0usize, 1, 2], 0..=3),
        prop_oneof![9 => Just(false), 1 => Just(true)], // RCPT TO someone not in the headers
        prop_oneof![3 => Just(1usize), 1 => Just(2)],
        any::<bool>(),
    )
        .prop_map(
            |(
                (from, to, cc, subject, reply_to, received, msgid, junk, no_colon, bcc),
                (ct, body),
                eol,
                pick,
                stranger,
                times,
                late_duplicate,
            )| {
                let mut h: Vec<u8> = Vec::new();
                fn header(h: &mut Vec<u8>, name: &[u8], value: &[u8]) {
                    h.extend_from_slice(name);
                    h.extend_from_slice(b": ");
                    h.extend_from_slice(value);
                    h.extend_from_slice(b"\r\n");
                }
                for r in &received {
                    header(
                        &mut h,
                        b"Received",
                        &[b"from client ([127.0.0.1]) ", &r[..]].concat(),
                    );
                }
                for f in &from {
                    header(&mut h, b"From", f);
                }
                let mut named: Vec<&'static str> = Vec::new();
                for (addrs, v) in &to {
                    header(&mut h, b"To", v);
                    named.extend(addrs);
                }
                for (addrs, v) in &cc {
                    header(&mut h, b"Cc", v);
                    named.extend(addrs);
                }
                if bcc {
                    header(&mut h, b"Bcc", ANNA.as_bytes());
                }
                for s in &subject {
                    header(&mut h, b"Subject", s);
                }
                for r in &reply_to {
                    header(
                        &mut h,
                        b"Reply-To",
                        &[&r[..], b" <", MARIO.as_bytes(), b">"].concat(),
                    );
                }
                match msgid {
                    0 => header(&mut h, b"Message-ID", b"<u1@client.example>"),
                    1 => {}
                    2 => {
                        header(&mut h, b"Message-ID", b"<u1@client.example>");
                        header(&mut h, b"Message-ID", b"<u2@client.example>");
                    }
                    _ => header(&mut h, b"Message-ID", b"<\xe0\0 broken"),
                }
                header(&mut h, b"Date", b"Mon, 23 Nov 2026 10:29:00 +0100");
                for j in &junk {
                    header(&mut h, b"X-Ostile", j);
                }
                if no_colon {
                    h.extend_from_slice(b"Questa riga non ha due punti\r\n");
                }
                if let Some(ct) = &ct {
                    header(&mut h, b"MIME-Version", b"1.0");
                    header(&mut h, b"Content-Type", ct);
                }
                h.extend_from_slice(b"\r\n");
                h.extend_from_slice(&body);
                // RCPT TO: some of the named addresses (unique), maybe a stranger.
                let mut recipients: Vec<String> = Vec::new();
                let unique: Vec<&str> = named
                    .iter()
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                for i in pick {
                    if let Some(a) = unique.get(i) {
                        recipients.push(a.to_string());
                    }
                }
                // The gateway takes DATA only after at least one RCPT TO (503 otherwise).
                if recipients.is_empty() {
                    recipients.push(unique.first().copied().unwrap_or(ANNA).to_string());
                }
                if stranger && !recipients.iter().any(|r| r == GHOST) {
                    recipients.push(GHOST.to_string());
                }
                Case {
                    raw: apply_eol(h, eol),
                    recipients,
                    times,
                    late_duplicate,
                }
            },
        )
}

/// The submission's envelope as the gateway writes it (user and reverse path: Mario).
fn gateway_envelope(recipients: &[String]) -> SubmissionEnvelope {
    SubmissionEnvelope {
        receipts_folder: None,
        version: ENVELOPE_VERSION,
        id: ID.into(),
        received_at: common::t0(),
        user: MARIO.into(),
        tenant: TENANT.into(),
        reverse_path: MARIO.into(),
        recipients: recipients.to_vec(),
        client_ip: "198.51.100.7".into(),
        tls: true,
    }
}

/// One case through the whole pipeline; `Err` lists the violations.
async fn run_case(case: &Case) -> Result<(), String> {
    let f = Flow::new().await;
    let env = gateway_envelope(&case.recipients);
    f.submit_envelope(&env, &case.raw);
    let mut tried = BTreeSet::new();
    let mut run = Run::default();
    drive(&f, case.times, &mut tried, &mut run).await;
    check(&f, &env, &run).await?;
    if std::env::var("INVARIANT_DEBUG").is_ok() {
        let e = evidence(&f);
        let reason = match &run.outcome {
            Some(IngressOutcome::Rejected { reasons, .. }) => reasons.clone(),
            _ => String::new(),
        };
        eprintln!(
            "CASE acc={} na={} nav={} outcomes={:?} {}",
            e.acceptance, e.non_acceptance, e.virus_non_acceptance, e.outcomes, reason
        );
    }
    if case.late_duplicate {
        // The submission event once more, after everything settled: nothing new may come of it.
        let before: Vec<String> = f.store.keys(EVIDENCE);
        let mut again = Run::default();
        drive(&f, 1, &mut tried, &mut again).await;
        check(&f, &env, &again)
            .await
            .map_err(|e| format!("after a late duplicate submission event:\n{e}"))?;
        if again.outcome != run.outcome {
            return Err(format!(
                "the late duplicate ended {:?}, the first event {:?}",
                again.outcome, run.outcome
            ));
        }
        let new: Vec<String> = f
            .store
            .keys(EVIDENCE)
            .into_iter()
            .filter(|k| k.starts_with("signed/") && !before.contains(k))
            .collect();
        if !new.is_empty() {
            return Err(format!("a late duplicate signed {new:?}"));
        }
    }
    Ok(())
}

/// A plain case: `raw` for `recipients`, each event once, no late duplicate.
fn plain_case(raw: &[u8], recipients: &[&str]) -> Case {
    Case {
        raw: raw.to_vec(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        times: 1,
        late_duplicate: false,
    }
}

/// Regression (found by the property test below): a nested multipart that reuses its parent's
/// boundary and closes only itself. The formal check took its closing delimiter for the parent's,
/// so the message was accepted, and the envelope (and the complete delivery receipt) carrying it
/// did not verify (`Malformed`: the open multipart swallowed the envelope's own boundaries).
/// Now refused for its unterminated multipart.
#[tokio::test]
async fn a_reused_boundary_closing_only_the_inner_multipart_is_refused() {
    let raw = format!(
        "From: Mario Rossi <{MARIO}>\r\nTo: {ANNA}\r\nSubject: Struttura\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\ntesto\r\n--b--\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nallegato\r\n"
    );
    let case = plain_case(raw.as_bytes(), &[ANNA]);
    run_case(&case).await.unwrap();
    let f = Flow::new().await;
    f.submit_envelope(&gateway_envelope(&case.recipients), &case.raw);
    let mut run = Run::default();
    drive(&f, 1, &mut BTreeSet::new(), &mut run).await;
    match run.outcome {
        Some(IngressOutcome::Rejected { reasons, .. }) => {
            assert!(reasons.contains("struttura MIME"), "{reasons}")
        }
        other => panic!("{other:?}"),
    }
    // Closed as well, it is accepted and its envelope verifies.
    let closed = format!("{raw}--b--\r\n");
    run_case(&plain_case(closed.as_bytes(), &[ANNA]))
        .await
        .unwrap();
}

/// Regression (found by the property test below): a bare CR in the From display name. The formal
/// checks read the raw bytes and found a valid From; the acceptance is built from the bytes with
/// their line ends made CRLF, where that From has no address: after the scan, ingress failed
/// ("no valid From address") with neither an acceptance nor a non-acceptance (DLQ). The checks
/// now judge the canonical bytes: refused.
#[tokio::test]
async fn a_bare_cr_in_from_is_refused_not_stuck_after_the_scan() {
    let raw = format!(
        "From: \"\r\" <{MARIO}>\r\nTo: {ANNA}\r\nMessage-ID: <u1@client.example>\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\ntesto\r\n"
    );
    let case = plain_case(raw.as_bytes(), &[ANNA]);
    run_case(&case).await.unwrap();
}

/// Bytes as a Rust byte-string literal body (for reducing a failure to a regression test).
fn escaped(raw: &[u8]) -> String {
    raw.iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn every_submission_ends_in_exactly_one_outcome() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(128);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let rng = match std::env::var("INVARIANT_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
        }
        None => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    };
    let rt = runtime();
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&case(), |case| {
        rt.block_on(run_case(&case)).map_err(|violations| {
            TestCaseError::fail(format!(
                "{violations}\nRCPT TO {:?}, times {}, late duplicate {}\nraw: b\"{}\"",
                case.recipients,
                case.times,
                case.late_duplicate,
                escaped(&case.raw)
            ))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
