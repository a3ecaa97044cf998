//! Against mail software nobody here wrote (issue #21 item 4, design §9.3–9.4):
//! - Debian's **Postfix** on 127.0.0.1 as another organisation's MX: our relay delivers a real,
//!   signed PEC receipt to it, and what it stores is our bytes (its own fields on top), still
//!   verifying;
//! - Postfix as another organisation's relay delivering into **our MX**: we take mail for our
//!   mailboxes over verified TLS, refuse unknown ones so that Postfix bounces with our reason,
//!   and refuse a provider that comes without TLS;
//! - **swaks** probing our MX: pipelining, STARTTLS, unknown recipients, relaying, oversize,
//!   bare LF, SMTP smuggling sequences.
//!
//! Postfix and swaks are Debian's packages (`infra/local/install.sh mta`); a missing one fails
//! under `CI=true` (`pec_testkit::prereq`).

use std::time::Duration;

mod common;
use common::{Mx, SENDER, mx, mx_with, relay};

mod postfix;
use postfix::{Postfix, Route, Setup, crlf, lf, prepended};

use pec_relay::TlsPolicy;
use pec_smime::{TrustAnchors, Verdict, VerifyOptions, verify_message};
use pec_submit::mx::Sender;

/// The fields Postfix prepends when it delivers into a Maildir.
const POSTFIX_FIELDS: [&str; 4] = ["return-path", "x-original-to", "delivered-to", "received"];

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn postfix_mx(mailboxes: &[&str]) -> Option<Postfix> {
    Postfix::start(&Setup {
        hostname: "mx.postfix.test",
        domain: "postfix.test",
        mailboxes,
        routes: &[],
        discard: &[],
        trust_pem: "",
    })
}

/// A real PEC receipt (Aruba, 2018, signature valid at signing time) as it travels: in SMTP's
/// CRLF form, without the `Return-Path` its final delivery added (the fixture is a stored
/// copy; Postfix drops that field from what it receives, `message_drop_headers`). The field is
/// outside the signed part.
fn aruba_receipt() -> Vec<u8> {
    let raw = crlf(&pec_testkit::fixtures::real("aruba-2018-accettazione.eml"));
    let first = raw
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a first line")
        + 2;
    assert!(
        raw.starts_with(b"Return-Path: "),
        "the fixture's first field"
    );
    raw[first..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_relay_delivers_to_postfix_byte_for_byte() {
    let Some(pf) = postfix_mx(&["alice"]) else {
        return;
    };
    let raw = aruba_receipt();
    // Postfix's certificate is checked: trusting another one, nothing is sent.
    let stranger = pec_submit::dev_tls::self_signed(&["mx.postfix.test"]).unwrap();
    let e = relay(
        &format!("postfix.test=mx.postfix.test@127.0.0.1:{}", pf.port),
        vec![stranger.cert_der.to_vec()],
        TlsPolicy::Required,
    )
    .deliver(SENDER, &rcpts(&["alice@postfix.test"]), &raw)
    .await
    .expect_err("an unverified MX gets nothing");
    assert!(matches!(e, pec_relay::RelayError::Transient { .. }), "{e}");
    let r = relay(
        &format!("postfix.test=mx.postfix.test@127.0.0.1:{}", pf.port),
        vec![pf.cert_der.clone()],
        TlsPolicy::Required,
    );
    let outcome = r
        .deliver(
            SENDER,
            &rcpts(&["alice@postfix.test", "nessuno@postfix.test"]),
            &raw,
        )
        .await
        .expect("Postfix takes the message");
    assert_eq!(outcome.accepted, ["alice@postfix.test"], "{outcome:?}");
    // Postfix's own words for a mailbox it does not have, one reply for that recipient.
    assert_eq!(outcome.refused.len(), 1, "{outcome:?}");
    assert_eq!(outcome.refused[0].recipient, "nessuno@postfix.test");
    assert_eq!(outcome.refused[0].code, 550, "{outcome:?}");
    assert!(outcome.refused[0].text.starts_with("5.1.1"), "{outcome:?}");
    assert!(!outcome.remote_id.is_empty(), "Postfix names its queue id");

    let stored = pf.wait_delivered("alice", 1).await.remove(0);
    assert_eq!(
        pf.delivered("alice").len(),
        1,
        "one copy: the unverified attempt sent nothing"
    );
    let ours = lf(&raw);
    assert!(
        stored.ends_with(&ours),
        "below Postfix's fields, the message is ours byte for byte (the Maildir keeps LF):\n{}",
        String::from_utf8_lossy(&stored[..stored.len().min(1500)])
    );
    let (head, rest) = stored.split_at(stored.len() - ours.len());
    let (fields, left) = prepended(head, &POSTFIX_FIELDS);
    assert!(left.is_empty(), "Postfix added more than its fields");
    assert_eq!(
        fields,
        POSTFIX_FIELDS,
        "Postfix prepends exactly its own fields:\n{}",
        String::from_utf8_lossy(head)
    );
    let head = String::from_utf8_lossy(head);
    assert!(head.contains("with ESMTPS"), "{head}");
    assert!(head.contains("(using TLSv1."), "{head}");
    assert!(head.contains(&format!("Return-Path: <{SENDER}>")), "{head}");

    // And what the third party holds still verifies: the signed part was never re-serialised.
    let anchors = TrustAnchors::from_pem_bundle(
        &std::fs::read("/etc/ssl/certs/ca-certificates.crt")
            .expect("Debian's ca-certificates (Actalis Authentication Root CA)"),
    )
    .unwrap();
    let v = verify_message(&crlf(rest), &anchors, None, &VerifyOptions::default());
    assert_eq!(v.verdict, Verdict::Valid, "{:?}", v.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_relays_into_our_mx_and_bounces_with_our_reason() {
    let mx = mx().await;
    let Some(pf) = Postfix::start(&Setup {
        hostname: "mx.postfix.test",
        domain: "postfix.test",
        mailboxes: &["alice"],
        routes: &[Route {
            domain: "pec.altro.test",
            port: mx.port,
            tls: "secure match=localhost",
        }],
        discard: &[],
        trust_pem: &mx.tls.cert_pem,
    }) else {
        return;
    };
    let Some(s) = swaks(&[
        "--server",
        &format!("127.0.0.1:{}", pf.port),
        "--from",
        "alice@postfix.test",
        "--to",
        "mario@pec.altro.test,nessuno@pec.altro.test",
        "--header",
        "Subject: da Postfix",
        "--body",
        "una mail ordinaria",
    ])
    .await
    else {
        return;
    };
    assert_eq!(s.code, 0, "Postfix takes both for relaying:\n{}", s.out);

    // Mario's copy reaches our MX over verified TLS, Postfix's trace under ours.
    pf.wait_log(&["to=<mario@pec.altro.test>", "status=sent"])
        .await;
    let stored = wait_stored(&mx, 1).await;
    let a = &stored[0];
    assert_eq!(a.recipients, ["mario@pec.altro.test"]);
    assert_eq!(a.reverse_path, "alice@postfix.test");
    assert_eq!(a.sender, Sender::Ordinary);
    assert!(a.tls, "Postfix used STARTTLS");
    let bytes = a.stored();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with(
            "Return-Path: <alice@postfix.test>\r\nReceived: from mx.postfix.test ([127.0.0.1])\r\n\tby mx.pec.altro.test with ESMTPS id "
        ),
        "{text}"
    );
    assert!(
        text.contains("by mx.postfix.test (Postfix) with ESMTP id"),
        "{text}"
    );
    // What the receiving point will make of it: not PEC (it wraps it in an anomaly envelope).
    assert_eq!(
        pec_core::classify::classify(&bytes).kind,
        pec_core::classify::Kind::Ordinaria
    );

    // The unknown mailbox: our 550 5.1.1 before DATA, and Postfix's bounce says so.
    let line = pf
        .wait_log(&["to=<nessuno@pec.altro.test>", "status=bounced"])
        .await;
    assert!(line.contains("said: 550 5.1.1"), "{line}");
    let bounce = pf.wait_delivered("alice", 1).await.remove(0);
    let bounce = String::from_utf8_lossy(&bounce);
    assert!(
        bounce.contains("Diagnostic-Code: smtp; 550 5.1.1"),
        "{bounce}"
    );
    assert!(bounce.contains("nessuno@pec.altro.test"), "{bounce}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_relaying_without_tls_is_refused() {
    let mx = mx().await;
    let Some(pf) = Postfix::start(&Setup {
        hostname: "relay.pec.example.test",
        domain: "postfix.test",
        mailboxes: &[],
        routes: &[Route {
            domain: "pec.altro.test",
            port: mx.port,
            tls: "none",
        }],
        // Its bounce goes to the (fictitious) provider: thrown away.
        discard: &["pec.example.test"],
        trust_pem: "",
    }) else {
        return;
    };
    let Some(s) = swaks(&[
        "--server",
        &format!("127.0.0.1:{}", pf.port),
        "--from",
        SENDER,
        "--to",
        "mario@pec.altro.test",
    ])
    .await
    else {
        return;
    };
    assert_eq!(s.code, 0, "{}", s.out);
    let line = pf
        .wait_log(&["to=<mario@pec.altro.test>", "status=bounced"])
        .await;
    assert!(line.contains("said: 530 5.7.0"), "{line}");
    assert!(mx.inbound.stored().is_empty());
}

/// What swaks printed, and how it ended.
struct Swaks {
    code: i32,
    out: String,
}

impl Swaks {
    /// The server's replies, in order, without swaks' direction markers.
    fn replies(&self) -> Vec<&str> {
        self.out
            .lines()
            .filter(|l| l.starts_with('<'))
            .map(|l| l.get(3..).unwrap_or_default().trim_start())
            .collect()
    }

    fn has_reply(&self, prefix: &str) -> bool {
        self.replies().iter().any(|r| r.starts_with(prefix))
    }
}

/// Runs swaks (Debian's) with `args`; `None` off CI when it is not installed.
async fn swaks(args: &[&str]) -> Option<Swaks> {
    let found = std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .map_err(|e| format!("swaks is not installed (infra/local/install.sh mta): {e}"));
    pec_testkit::prereq::require("swaks", found)?;
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("swaks")
            .args(args)
            .args(["--timeout", "20"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("swaks ends within 60 s")
    .expect("swaks runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Some(Swaks {
        code: out.status.code().unwrap_or(-1),
        out: text,
    })
}

/// swaks against our MX at `server`, greeting as another provider's relay, with the `tls`
/// options, from `from` to `to`, and `extra`.
async fn probe(server: &str, tls: &[&str], from: &str, to: &str, extra: &[&str]) -> Option<Swaks> {
    let args = [
        &["--server", server, "--ehlo", "relay.pec.example.test"][..],
        tls,
        &["--from", from, "--to", to],
        extra,
    ]
    .concat();
    swaks(&args).await
}

async fn wait_stored(mx: &Mx, n: usize) -> Vec<pec_submit::mx::Arrival> {
    for _ in 0..300 {
        let stored = mx.inbound.stored();
        if stored.len() >= n {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("our MX did not store {n} message(s) within 30 s");
}

/// A file for swaks' `--data @file` / `--body @file` (kept until the test ends).
fn data_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_probes_our_mx() {
    const MAX: usize = 64 * 1024;
    let mx = mx_with(|c| c.max_message_bytes = MAX).await;
    let server = format!("127.0.0.1:{}", mx.port);
    let ca = data_file(mx.tls.cert_pem.as_bytes());
    let ca = ca.path().to_str().unwrap().to_owned();
    let tls = [
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        ca.as_str(),
        "--tls-sni",
        "localhost",
    ];
    let server = server.as_str();
    const MARIO: &str = "mario@pec.altro.test";
    const ANYONE: &str = "chiunque@ordinaria.test";

    // A provider over verified STARTTLS, its commands pipelined: taken.
    let Some(s) = probe(server, &tls, SENDER, MARIO, &["--pipeline"]).await else {
        return;
    };
    assert_eq!(s.code, 0, "{}", s.out);
    assert!(
        s.out.contains("TLS started with cipher TLSv1.3"),
        "{}",
        s.out
    );
    assert!(s.has_reply("250-PIPELINING"), "{}", s.out);
    assert!(
        s.replies().last().is_some_and(|r| r.starts_with("221")),
        "{}",
        s.out
    );
    assert_eq!(mx.inbound.stored().len(), 1);
    assert!(mx.inbound.stored()[0].tls);

    // The same provider without TLS: refused for PEC.
    let s = probe(server, &[], SENDER, MARIO, &[]).await.unwrap();
    assert_ne!(s.code, 0);
    assert!(s.has_reply("530 5.7.0"), "{}", s.out);

    // An ordinary sender: unknown mailbox, and no relaying, with or without TLS.
    for with in [&[][..], &tls[..]] {
        let s = probe(server, with, ANYONE, "nessuno@pec.altro.test", &[])
            .await
            .unwrap();
        assert!(s.has_reply("550 5.1.1"), "{}", s.out);
        let s = probe(server, with, ANYONE, "qualcuno@gmail.com", &[])
            .await
            .unwrap();
        assert!(s.has_reply("550 5.7.1"), "{}", s.out);
    }

    // Oversize: the whole body is read, then refused; nothing kept.
    let big = data_file(
        &vec![b'x'; MAX + 1024]
            .chunks(900)
            .collect::<Vec<_>>()
            .join(&b"\n"[..]),
    );
    let body = format!("@{}", big.path().display());
    let s = probe(server, &tls, SENDER, MARIO, &["--body", &body])
        .await
        .unwrap();
    assert!(s.has_reply("552 5.3.4"), "{}", s.out);

    // Bare LF in the body, and smuggling sequences: one refused message each, no second
    // transaction run from inside it.
    let smuggled = format!(
        "MAIL FROM:<{SENDER}>\r\nRCPT TO:<mario@pec.altro.test>\r\nDATA\r\nSubject: evil\r\n\r\nevil\r\n.\r\n"
    );
    for seq in [&b"\n"[..], b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"] {
        let mut data = b"Subject: probe\r\n\r\nriga".to_vec();
        data.extend_from_slice(seq);
        data.extend_from_slice(smuggled.as_bytes());
        let file = data_file(&data);
        let data = format!("@{}", file.path().display());
        let s = probe(
            server,
            &tls,
            ANYONE,
            MARIO,
            &["--no-data-fixup", "--data", &data],
        )
        .await
        .unwrap();
        assert!(s.has_reply("554 5.6.0"), "{seq:?}:\n{}", s.out);
        assert_eq!(
            s.replies().iter().filter(|r| r.starts_with("354")).count(),
            1,
            "{seq:?}: one DATA only:\n{}",
            s.out
        );
    }
    assert_eq!(
        mx.inbound.stored().len(),
        1,
        "nothing but the first probe's message was stored"
    );
}
