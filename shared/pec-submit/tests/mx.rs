//! The MX role over real TCP on 127.0.0.1, with the raw line client: what other providers and
//! the outside world meet on port 25 (`docs/design/smtp-relay-and-mx.md` §9.1, M1–M15).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;
use common::{Raw, WAIT};

use pec_submit::dev_tls::{self, DevTls};
use pec_submit::mx::Sender;
use pec_submit::mx::memory::{MemoryInbound, TablePolicy};
use pec_submit::{Config, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const HOST: &str = "mx.pec.altro.test";
/// A mailbox of ours.
const MARIO: &str = "mario@pec.altro.test";
/// Another provider's sender (its domain is in the provider index).
const PROVIDER: &str = "posta-certificata@pec.example.test";
const MAX_BYTES: usize = 64 * 1024;

struct Mx {
    addr: SocketAddr,
    tls: DevTls,
    policy: Arc<TablePolicy>,
    inbound: Arc<MemoryInbound>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Mx {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with(|_| {}, tweak).await
    }

    async fn start_with(
        policy_tweak: impl FnOnce(&mut TablePolicy),
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let tls = dev_tls::localhost().expect("dev certificate");
        let mut policy = TablePolicy::new(
            &["pec.altro.test"],
            &[MARIO, "anna@pec.altro.test"],
            &["pec.example.test"],
        );
        policy_tweak(&mut policy);
        let policy = Arc::new(policy);
        let inbound = Arc::new(MemoryInbound::default());
        let mut config = Config {
            hostname: HOST.to_owned(),
            max_message_bytes: MAX_BYTES,
            command_timeout: Duration::from_secs(10),
            data_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            ..Config::default()
        };
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::mx(
            config,
            tls.server_config.clone(),
            policy.clone(),
            inbound.clone(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Mx {
            addr,
            tls,
            policy,
            inbound,
            stop: Some(stop),
            task,
        }
    }

    async fn plain(&self) -> Raw {
        let mut c = Raw::connect(self.addr, HOST).await;
        c.expect("EHLO relay.pec.example.test", 250).await;
        c
    }

    async fn tls(&self) -> Raw {
        let c = self.plain().await;
        let mut c = c.starttls(&self.tls).await;
        c.expect("EHLO relay.pec.example.test", 250).await;
        c
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("serve() returns after the shutdown signal")
            .expect("serve() does not panic");
    }
}

fn envelope_bytes() -> Vec<u8> {
    b"Return-Path: <posta-certificata@pec.example.test>\r\n\
      Message-ID: <opec21.20261207101010.1234.01.1.1@pec.example.test>\r\n\
      Date: Mon, 7 Dec 2026 11:10:10 +0100\r\n\
      X-Trasporto: posta-certificata\r\n\
      From: \"Per conto di: a@pec.example.test\" <posta-certificata@pec.example.test>\r\n\
      To: mario@pec.altro.test\r\n\
      Subject: POSTA CERTIFICATA: prova\r\n\
      \r\n\
      ..a line that starts with a dot (stuffed on the wire)\r\n\
      corpo\r\n"
        .to_vec()
}

/// `bytes` dot-stuffed and terminated as a client sends them.
fn wire(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehlo_offers_pipelining_and_starttls_never_auth_or_chunking() {
    let mx = Mx::start(|_| {}).await;
    let mut c = Raw::connect(mx.addr, HOST).await;
    let r = c.expect("EHLO relay.pec.example.test", 250).await;
    for cap in [
        "PIPELINING",
        "STARTTLS",
        "SIZE 65536",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(r.text.contains(cap), "{cap} missing: {r:?}");
    }
    for cap in ["AUTH", "CHUNKING", "SMTPUTF8"] {
        assert!(!r.text.contains(cap), "{cap} offered: {r:?}");
    }
    let r = c.expect("AUTH PLAIN AGEAYg==", 502).await;
    assert!(r.text.starts_with("502 5.5.1"), "{r:?}");
    c.expect("BDAT 10 LAST", 502).await;
    // HELP lists what the MX answers: no AUTH there either.
    let r = c.expect("HELP", 214).await;
    assert!(
        r.text.contains("STARTTLS") && !r.text.contains("AUTH"),
        "{r:?}"
    );
    let mut c = c.starttls(&mx.tls).await;
    let r = c.expect("EHLO relay.pec.example.test", 250).await;
    assert!(r.text.contains("PIPELINING"), "{r:?}");
    assert!(
        !r.text.contains("STARTTLS") && !r.text.contains("AUTH"),
        "{r:?}"
    );
    c.expect("QUIT", 221).await;
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_open_relay_with_or_without_tls() {
    let mx = Mx::start(|_| {}).await;
    for tls in [false, true] {
        let mut c = if tls {
            mx.tls().await
        } else {
            mx.plain().await
        };
        for from in ["a@ordinaria.test", PROVIDER] {
            if from == PROVIDER && !tls {
                continue;
            }
            c.expect(&format!("MAIL FROM:<{from}>"), 250).await;
            let r = c.expect("RCPT TO:<victim@elsewhere.test>", 550).await;
            assert!(r.text.starts_with("550 5.7.1 Relaying denied"), "{r:?}");
            // A domain that merely ends like ours is not ours.
            c.expect("RCPT TO:<x@evilpec.altro.test>", 550).await;
            let r = c.expect("DATA", 503).await;
            assert!(r.text.contains("Need RCPT"), "{r:?}");
            c.expect("RSET", 250).await;
        }
    }
    assert!(mx.inbound.stored().is_empty());
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_must_use_tls_and_its_envelope_is_stored_byte_for_byte() {
    let mx = Mx::start(|_| {}).await;
    let mut c = mx.plain().await;
    let r = c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 530).await;
    assert!(
        r.text.starts_with("530 5.7.0 Must issue a STARTTLS"),
        "{r:?}"
    );
    // An ordinary sender may deliver in clear (most of the Internet still can't do better).
    c.expect("MAIL FROM:<a@ordinaria.test>", 250).await;
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let plain = b"From: a@ordinaria.test\r\nSubject: ciao\r\n\r\nciao\r\n".to_vec();
    let r = c.data(&wire(&plain)).await;
    assert_eq!(r.code, 250, "{r:?}");

    let mut c = mx.tls().await;
    let msg = envelope_bytes();
    c.expect(
        &format!("MAIL FROM:<{PROVIDER}> SIZE={} BODY=8BITMIME", msg.len()),
        250,
    )
    .await;
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    // Unknown mailboxes of ours are taken from a provider: the receiving point answers them
    // with a signed notice of non-delivery.
    c.expect("RCPT TO:<nessuno@pec.altro.test>", 250).await;
    let r = c.data(&wire(&msg)).await;
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221).await;

    let stored = mx.inbound.stored();
    assert_eq!(stored.len(), 2);
    let (first, second) = (&stored[0], &stored[1]);
    assert!(!first.tls && first.sender == Sender::Ordinary);
    assert!(
        first
            .trace
            .contains(&format!("by {HOST} with ESMTP id {}", first.id)),
        "{}",
        first.trace
    );
    assert_eq!(first.raw, plain);

    assert!(second.tls);
    assert_eq!(second.sender, Sender::Provider);
    assert_eq!(second.reverse_path, PROVIDER);
    assert_eq!(second.recipients, [MARIO, "nessuno@pec.altro.test"]);
    assert_eq!(
        second.raw, msg,
        "the message as signed, dot-unstuffed, nothing changed"
    );
    assert!(r.text.contains(&second.id), "{r:?}");
    assert!(
        second.trace.starts_with("Received: from relay.pec.example.test ([127.0.0.1])\r\n\tby mx.pec.altro.test with ESMTPS id "),
        "{}",
        second.trace
    );
    let mut expected = format!("Return-Path: <{PROVIDER}>\r\n{}", second.trace).into_bytes();
    expected.extend_from_slice(&msg);
    assert_eq!(second.stored(), expected);
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_sender_and_unknown_mailboxes_of_ordinary_senders() {
    let mx = Mx::start(|_| {}).await;
    let mut c = mx.tls().await;
    c.expect("MAIL FROM:<>", 250).await;
    let r = c.expect("RCPT TO:<nessuno@pec.altro.test>", 550).await;
    assert!(r.text.starts_with("550 5.1.1"), "{r:?}");
    c.expect("RCPT TO:<Mario@PEC.altro.test>", 250).await;
    let bounce = b"From: MAILER-DAEMON@ordinaria.test\r\nSubject: Undelivered\r\n\r\nx\r\n";
    let r = c.data(&wire(bounce)).await;
    assert_eq!(r.code, 250, "{r:?}");
    let stored = mx.inbound.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].reverse_path, "");
    assert!(
        stored[0]
            .stored()
            .starts_with(b"Return-Path: <>\r\nReceived: ")
    );
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_and_the_session_stays_usable() {
    let mx = Mx::start(|_| {}).await;
    let mut c = mx.tls().await;
    let r = c
        .expect(
            &format!("MAIL FROM:<{PROVIDER}> SIZE={}", MAX_BYTES + 1),
            552,
        )
        .await;
    assert!(r.text.starts_with("552 5.3.4"), "{r:?}");
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() <= MAX_BYTES {
        big.extend_from_slice(&[b'x'; 900]);
        big.extend_from_slice(b"\r\n");
    }
    let r = c.data(&wire(&big)).await;
    assert_eq!(r.code, 552, "{r:?}");
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let r = c.data(&wire(&envelope_bytes())).await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(mx.inbound.stored().len(), 1);
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_commands_are_refused_never_run() {
    let mx = Mx::start(|_| {}).await;
    let mut c = mx.tls().await;
    c.write(format!("MAIL FROM:<{PROVIDER}>\n").as_bytes())
        .await;
    let r = c.reply().await.unwrap();
    assert!(
        r.text.starts_with("500 5.5.2") && r.text.contains("bare LF"),
        "{r:?}"
    );
    // The refused line started no transaction.
    c.expect(&format!("RCPT TO:<{MARIO}>"), 503).await;
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    mx.shutdown().await;
}

/// SMTP smuggling (CVE-2023-51764 and kin): a message whose body holds a line end other than
/// CRLF, a dot and another line end, followed by a second transaction. Only CRLF.CRLF ends
/// DATA: the server reads the whole thing as one message, refuses it once, and runs nothing
/// from inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_transactions_are_one_refused_message() {
    let mx = Mx::start(|_| {}).await;
    let smuggled = format!(
        "MAIL FROM:<{PROVIDER}>\r\nRCPT TO:<{MARIO}>\r\nDATA\r\nFrom: {PROVIDER}\r\nSubject: evil\r\n\r\nevil\r\n.\r\n"
    );
    for seq in [
        &b"\n.\n"[..],
        b"\r.\r",
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\n",
        b"\r\n.\rX",
    ] {
        let mut c = mx.tls().await;
        c.expect("MAIL FROM:<a@ordinaria.test>", 250).await;
        c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
        let mut body = b"Subject: hi\r\n\r\na".to_vec();
        body.extend_from_slice(seq);
        body.extend_from_slice(smuggled.as_bytes());
        c.expect("DATA", 354).await;
        c.write(&body).await;
        let r = c.reply().await.expect("one reply to the whole thing");
        assert!(r.text.starts_with("554 5.6.0"), "{seq:?}: {r:?}");
        // No second reply is waiting: the next one answers NOOP.
        let r = c.cmd("NOOP").await;
        assert_eq!(r.code, 250, "{seq:?}: {r:?}");
        assert!(
            mx.inbound.stored().is_empty(),
            "{seq:?}: something was stored"
        );
    }
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_answered_in_order() {
    let mx = Mx::start(|_| {}).await;
    let mut c = mx.tls().await;
    let mut batch = format!(
        "MAIL FROM:<a@ordinaria.test>\r\nRCPT TO:<{MARIO}>\r\nRCPT TO:<nessuno@pec.altro.test>\r\nRCPT TO:<anna@pec.altro.test>\r\nDATA\r\n"
    )
    .into_bytes();
    batch.extend_from_slice(&wire(b"Subject: p\r\n\r\np\r\n"));
    batch.extend_from_slice(b"QUIT\r\n");
    c.write(&batch).await;
    let mut codes = Vec::new();
    while let Some(r) = c.reply().await {
        codes.push(r.code);
    }
    assert_eq!(codes, [250, 250, 550, 250, 354, 250, 221]);
    let stored = mx.inbound.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].recipients, [MARIO, "anna@pec.altro.test"]);
    mx.shutdown().await;
}

/// RFC 3207 §5, CVE-2011-0411: what a client pipelines after STARTTLS came in clear text and
/// must not count as sent over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_sent_after_starttls_is_dropped() {
    let mx = Mx::start(|_| {}).await;
    let mut c = mx.plain().await;
    c.write(format!("STARTTLS\r\nMAIL FROM:<{PROVIDER}>\r\n").as_bytes())
        .await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.code, 220, "{r:?}");
    // Raw::starttls sends STARTTLS itself: hand-shake over the same socket instead.
    let mut c = c.handshake(&mx.tls).await;
    c.expect("EHLO relay.pec.example.test", 250).await;
    let r = c.expect(&format!("RCPT TO:<{MARIO}>"), 503).await;
    assert!(r.text.contains("Need MAIL"), "{r:?}");
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_trace_fields_and_loops_are_refused() {
    let mx = Mx::start(|_| {}).await;
    let mut c = mx.tls().await;
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let forged = b"Received: from x by mx.pec.altro.test with ESMTPS;\r\n\tMon, 7 Dec 2026 10:00:00 +0000\r\nSubject: f\r\n\r\nf\r\n";
    let r = c.data(&wire(forged)).await;
    assert!(r.text.starts_with("554 5.7.1"), "{r:?}");
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let mut looping = Vec::new();
    for i in 0..=pec_submit::mx::MAX_RECEIVED {
        looping.extend_from_slice(
            format!(
                "Received: from h{i} by relay{i}.elsewhere.test; Mon, 7 Dec 2026 10:00:00 +0000\r\n"
            )
            .as_bytes(),
        );
    }
    looping.extend_from_slice(b"Subject: loop\r\n\r\nl\r\n");
    let r = c.data(&wire(&looping)).await;
    assert!(r.text.starts_with("554 5.4.6"), "{r:?}");
    assert!(mx.inbound.stored().is_empty());
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_and_storage_that_fail_are_temporary() {
    let mx = Mx::start(|_| {}).await;
    let mut c = mx.tls().await;
    mx.policy.down.store(true, Ordering::SeqCst);
    let r = c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 451).await;
    assert!(r.text.starts_with("451 4.3.0"), "{r:?}");
    mx.policy.down.store(false, Ordering::SeqCst);
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    mx.policy.down.store(true, Ordering::SeqCst);
    c.expect(&format!("RCPT TO:<{MARIO}>"), 451).await;
    mx.policy.down.store(false, Ordering::SeqCst);
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    mx.inbound.fail.store(true, Ordering::SeqCst);
    let r = c.data(&wire(&envelope_bytes())).await;
    assert!(r.text.starts_with("451 4.3.0"), "{r:?}");
    mx.inbound.fail.store(false, Ordering::SeqCst);
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let r = c.data(&wire(&envelope_bytes())).await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(mx.inbound.stored().len(), 1);
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_every_session() {
    let mx = Mx::start(|c| c.max_sessions_per_ip = 2).await;
    let a = mx.plain().await;
    let b = mx.plain().await;
    let mut third = tokio::net::TcpStream::connect(mx.addr).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_string(&mut third, &mut reply),
    )
    .await
    .expect("closed in time")
    .unwrap();
    assert!(
        reply.starts_with("421 4.7.0") && reply.contains("from your address"),
        "{reply:?}"
    );
    drop(a);
    // A slot is given back when a session ends.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut tcp = tokio::net::TcpStream::connect(mx.addr).await.unwrap();
        let mut head = [0u8; 3];
        tokio::time::timeout(
            WAIT,
            tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut head),
        )
        .await
        .expect("greeted in time")
        .unwrap();
        if &head == b"220" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_mailboxes_repeated_recipients_and_probing() {
    let mx = Mx::start_with(
        |p| {
            p.disabled.insert("bloccata@pec.altro.test".into());
        },
        |c| c.max_errors = 5,
    )
    .await;
    let inbound = mx.inbound.clone();
    let mut c = mx.tls().await;
    c.expect("MAIL FROM:<a@ordinaria.test>", 250).await;
    let r = c.expect("RCPT TO:<bloccata@pec.altro.test>", 550).await;
    assert!(r.text.starts_with("550 5.2.1"), "{r:?}");
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    c.expect("RCPT TO:<Mario@PEC.altro.test>", 250).await;
    let r = c.data(&wire(b"Subject: due volte\r\n\r\nx\r\n")).await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(inbound.stored()[0].recipients, [MARIO], "kept once");
    // A provider's envelope to the disabled mailbox is taken (the receiving point answers it).
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    c.expect("RCPT TO:<bloccata@pec.altro.test>", 250).await;
    c.expect("RSET", 250).await;
    // Probing for addresses: the fifth refusal (one so far) ends the session.
    c.expect("MAIL FROM:<a@ordinaria.test>", 250).await;
    for i in 0..3 {
        c.expect(&format!("RCPT TO:<probe{i}@pec.altro.test>"), 550)
            .await;
    }
    c.write(b"RCPT TO:<probe9@pec.altro.test>\r\n").await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.code, 550, "{r:?}");
    let r = c.reply().await.unwrap();
    assert!(r.text.starts_with("421 4.7.0"), "{r:?}");
    assert!(c.closed().await);
    mx.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The data budget (`Config::max_data_bytes_in_flight`): the memory of all sessions' messages
// together is bounded; what it cannot cover gets `452 4.3.1`, nothing is stored, and the
// session goes on.

/// A budget that covers exactly one message of `MAX_BYTES` declared with `SIZE` (its buffer and
/// the copy made to store it).
const BUDGET: usize = pec_submit::data_share(MAX_BYTES);

/// A message of exactly `len` bytes (CRLF lines of at most 100 octets), its subject `subject`.
fn message_of(subject: &str, len: usize) -> Vec<u8> {
    let mut m = format!("Subject: {subject}\r\n\r\n").into_bytes();
    let line = [vec![b'x'; 98], b"\r\n".to_vec()].concat();
    while m.len() + line.len() <= len {
        m.extend_from_slice(&line);
    }
    let rest = len - m.len();
    if rest >= 2 {
        m.extend(std::iter::repeat_n(b'y', rest - 2));
        m.extend_from_slice(b"\r\n");
    } else {
        // Lengthen the header's blank-line-free part instead: a message must end with CRLF.
        m.splice(9..9, std::iter::repeat_n(b'z', rest));
    }
    assert_eq!(m.len(), len);
    m
}

fn assert_insufficient_storage(r: &common::Reply) {
    assert!(
        r.text
            .starts_with("452 4.3.1 Insufficient system storage, try again later"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_that_fit_one_at_a_time_one_gets_452_then_retries() {
    let mx = Mx::start(|c| c.max_data_bytes_in_flight = BUDGET).await;
    let first = message_of("first", 40_000);
    let second = message_of("second", 40_000);
    // The first declares its size: its share (the buffer and its copy) is taken at MAIL.
    let mut a = mx.tls().await;
    a.expect(&format!("MAIL FROM:<{PROVIDER}> SIZE={}", first.len()), 250)
        .await;
    a.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    a.expect("DATA", 354).await;
    let wire_a = wire(&first);
    let (head, tail) = wire_a.split_at(10_000);
    a.write(head).await;
    // The second, at the same time, declares nothing: its buffer outgrows what is left.
    let mut b = mx.tls().await;
    b.expect("MAIL FROM:<a@ordinaria.test>", 250).await;
    b.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let r = b.data(&wire(&second)).await;
    assert_insufficient_storage(&r);
    assert!(mx.inbound.stored().is_empty(), "nothing stored for it");
    // Read to its end: the stream is in step, the session usable.
    b.expect("NOOP", 250).await;
    // The first one finishes.
    a.write(tail).await;
    let r = a.reply().await.expect("reply to the end of DATA");
    assert_eq!(r.code, 250, "{r:?}");
    // Now the second gets through, in the same session.
    b.expect("MAIL FROM:<a@ordinaria.test>", 250).await;
    b.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let r = b.data(&wire(&second)).await;
    assert_eq!(r.code, 250, "{r:?}");
    let stored = mx.inbound.stored();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].raw, first);
    assert_eq!(stored[1].raw, second);
    a.expect("QUIT", 221).await;
    b.expect("QUIT", 221).await;
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_over_the_remaining_budget_gets_452_at_mail() {
    let mx = Mx::start(|c| c.max_data_bytes_in_flight = BUDGET).await;
    let mut a = mx.tls().await;
    a.expect(&format!("MAIL FROM:<{PROVIDER}> SIZE=40000"), 250)
        .await;
    let mut b = mx.tls().await;
    let r = b
        .expect(&format!("MAIL FROM:<{PROVIDER}> SIZE=40000"), 452)
        .await;
    assert_insufficient_storage(&r);
    // No transaction was started.
    b.expect(&format!("RCPT TO:<{MARIO}>"), 503).await;
    // What is left still covers a smaller message.
    b.expect(&format!("MAIL FROM:<{PROVIDER}> SIZE=1000"), 250)
        .await;
    b.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let r = b.data(&wire(&message_of("small", 1000))).await;
    assert_eq!(r.code, 250, "{r:?}");
    // RSET gives the first session's share back.
    a.expect("RSET", 250).await;
    b.expect(&format!("MAIL FROM:<{PROVIDER}> SIZE={MAX_BYTES}"), 250)
        .await;
    b.expect("RSET", 250).await;
    assert_eq!(mx.inbound.stored().len(), 1);
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_in_mid_data_gives_its_share_back() {
    let mx = Mx::start(|c| c.max_data_bytes_in_flight = BUDGET).await;
    let mut a = mx.tls().await;
    // The whole budget, taken at MAIL.
    a.expect(&format!("MAIL FROM:<{PROVIDER}> SIZE={MAX_BYTES}"), 250)
        .await;
    a.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    a.expect("DATA", 354).await;
    let full = message_of("full", MAX_BYTES);
    a.write(&wire(&full)[..30_000]).await;
    let mut b = mx.tls().await;
    let r = b
        .expect(&format!("MAIL FROM:<{PROVIDER}> SIZE={MAX_BYTES}"), 452)
        .await;
    assert_insufficient_storage(&r);
    drop(a);
    // Once the server sees the connection gone, the whole budget is free again.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = b
            .cmd(&format!("MAIL FROM:<{PROVIDER}> SIZE={MAX_BYTES}"))
            .await;
        if r.code == 250 {
            break;
        }
        assert_insufficient_storage(&r);
        assert!(
            std::time::Instant::now() < deadline,
            "share never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let r = b.data(&wire(&full)).await;
    assert_eq!(r.code, 250, "{r:?}");
    let stored = mx.inbound.stored();
    assert_eq!(stored.len(), 1, "nothing stored for the dropped connection");
    assert_eq!(stored[0].raw, full);
    // And again without SIZE: the buffer and its copy still fit the budget alone.
    b.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    b.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let r = b.data(&wire(&full)).await;
    assert_eq!(r.code, 250, "{r:?}");
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_senders_are_greylisted_providers_never() {
    let mx = Mx::start(|c| {
        c.mx_greylisting = Some(pec_submit::mx::Greylisting::with_delay(
            Duration::from_secs(1),
        ));
    })
    .await;
    let mut c = mx.tls().await;
    // A new (source, sender, recipient): come back later.
    c.expect("MAIL FROM:<chiunque@ordinaria.test>", 250).await;
    let r = c.expect(&format!("RCPT TO:<{MARIO}>"), 451).await;
    assert!(r.text.starts_with("451 4.7.1 Greylisted"), "{r:?}");
    // Refusals come first: an unknown mailbox is still 550, not greylisted.
    let r = c.expect("RCPT TO:<nessuno@pec.altro.test>", 550).await;
    assert!(r.text.starts_with("550 5.1.1"), "{r:?}");
    c.expect("RSET", 250).await;
    // A provider is taken at once.
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let r = c.data(&wire(&envelope_bytes())).await;
    assert_eq!(r.code, 250, "{r:?}");
    // The ordinary sender's retry after the delay is taken, in a new session too.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = mx.plain().await;
    c.expect("MAIL FROM:<chiunque@ordinaria.test>", 250).await;
    c.expect(&format!("RCPT TO:<{MARIO}>"), 250).await;
    let r = c
        .data(&wire(
            b"From: chiunque@ordinaria.test\r\nSubject: ciao\r\n\r\nciao\r\n",
        ))
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let stored = mx.inbound.stored();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].reverse_path, "chiunque@ordinaria.test");
    mx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_may_start_only_so_many_messages_a_minute() {
    let mx = Mx::start(|c| c.mx_messages_per_minute = 2).await;
    let mut c = mx.tls().await;
    for _ in 0..2 {
        c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 250).await;
        c.expect("RSET", 250).await;
    }
    let r = c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 451).await;
    assert!(r.text.starts_with("451 4.7.1"), "{r:?}");
    // The allowance is the source's, not the session's.
    let mut c = mx.tls().await;
    c.expect(&format!("MAIL FROM:<{PROVIDER}>"), 451).await;
    mx.shutdown().await;
}
