//! The relay against pec-submit's MX on 127.0.0.1 (and a bare server that offers no STARTTLS):
//! byte identity, TLS required and verified, one reply per recipient, MX fallback.

use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{SENDER, mx, relay, relay_within};

use pec_ports::Peer;
use pec_relay::{RelayError, SmtpRelay, TlsPolicy};
use pec_submit::dev_tls;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A signed-looking envelope: headers SES would rewrite, a dotted line, 8-bit text, CRLF.
fn envelope() -> Vec<u8> {
    "Message-ID: <opec21.20261207.1@pec.example.test>\r\n\
     Date: Mon, 7 Dec 2026 11:10:10 +0100\r\n\
     X-Trasporto: posta-certificata\r\n\
     From: posta-certificata@pec.example.test\r\n\
     To: mario@pec.altro.test\r\n\
     Subject: POSTA CERTIFICATA: così\r\n\
     MIME-Version: 1.0\r\n\
     Content-Type: text/plain; charset=utf-8\r\n\
     Content-Transfer-Encoding: 8bit\r\n\
     \r\n\
     .una riga che comincia con un punto\r\n\
     ..e due\r\n\
     perché\r\n"
        .as_bytes()
        .to_vec()
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_bytes_arrive_as_signed_over_verified_tls() {
    let mx = mx().await;
    let r = relay(
        &format!("pec.altro.test=localhost@127.0.0.1:{}", mx.port),
        vec![mx.tls.cert_der.to_vec()],
        TlsPolicy::Required,
    );
    let raw = envelope();
    let outcome = r
        .deliver(
            SENDER,
            &rcpts(&["mario@pec.altro.test", "anna@pec.altro.test"]),
            &raw,
        )
        .await
        .unwrap();
    assert_eq!(
        outcome.accepted,
        ["mario@pec.altro.test", "anna@pec.altro.test"]
    );
    assert!(outcome.refused.is_empty() && outcome.deferred.is_empty());
    let stored = mx.inbound.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].raw, raw,
        "byte for byte, Message-ID and Date included"
    );
    assert!(stored[0].tls);
    assert_eq!(stored[0].reverse_path, SENDER);
    assert_eq!(outcome.remote_id, stored[0].id);
    assert!(stored[0].trace.contains("from relay.pec.example.test"));
}

#[tokio::test]
async fn each_recipient_gets_its_own_answer() {
    let mx = mx().await;
    let r = relay(
        &format!("pec.altro.test=localhost@127.0.0.1:{}", mx.port),
        vec![mx.tls.cert_der.to_vec()],
        TlsPolicy::Required,
    );
    // An ordinary sender: the MX refuses unknown mailboxes at RCPT.
    let outcome = r
        .deliver(
            "someone@ordinaria.test",
            &rcpts(&["nessuno@pec.altro.test", "mario@pec.altro.test"]),
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .unwrap();
    assert_eq!(outcome.accepted, ["mario@pec.altro.test"]);
    assert_eq!(outcome.refused.len(), 1);
    assert_eq!(outcome.refused[0].recipient, "nessuno@pec.altro.test");
    assert_eq!(outcome.refused[0].code, 550);
    assert_eq!(mx.inbound.stored()[0].recipients, ["mario@pec.altro.test"]);
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_sends_nothing() {
    let mx = mx().await;
    let other = dev_tls::localhost().unwrap();
    let r = relay(
        &format!("pec.altro.test=localhost@127.0.0.1:{}", mx.port),
        vec![other.cert_der.to_vec()],
        TlsPolicy::Required,
    );
    let e = r
        .deliver(SENDER, &rcpts(&["mario@pec.altro.test"]), &envelope())
        .await
        .unwrap_err();
    assert!(matches!(e, RelayError::Transient { .. }), "{e}");
    assert!(e.to_string().contains("STARTTLS"), "{e}");
    // The right CA but the wrong name: refused too.
    let r = relay(
        &format!("pec.altro.test=mx.other.test@127.0.0.1:{}", mx.port),
        vec![mx.tls.cert_der.to_vec()],
        TlsPolicy::Required,
    );
    assert!(
        r.deliver(SENDER, &rcpts(&["mario@pec.altro.test"]), &envelope())
            .await
            .is_err()
    );
    assert!(mx.inbound.stored().is_empty());
}

/// What a [`fake_server`] does with a line.
enum Answer {
    Reply(String),
    Silent,
    Close,
}

/// A bare SMTP server on 127.0.0.1 without STARTTLS: greets as `name`, then hands each command
/// line to a fresh copy of `answer` per connection. Message lines after a `354` are skipped;
/// the final dot is handed on as `"."`.
async fn fake_server<F>(name: &'static str, answer: F) -> u16
where
    F: FnMut(&str) -> Answer + Clone + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mut answer = answer.clone();
            tokio::spawn(async move {
                let (r, mut w) = tcp.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w
                    .write_all(format!("220 {name} ESMTP\r\n").as_bytes())
                    .await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data && line != "." {
                        continue;
                    }
                    in_data = false;
                    match answer(&line) {
                        Answer::Reply(reply) => {
                            in_data = reply.starts_with("354");
                            let _ = w.write_all(reply.as_bytes()).await;
                        }
                        Answer::Silent => {}
                        Answer::Close => return,
                    }
                }
            });
        }
    });
    port
}

/// A server that greets and answers EHLO without STARTTLS, and records every line it gets.
async fn no_starttls_server() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let port = fake_server("plain.test", move |line| {
        log.lock().unwrap().push(line.to_owned());
        Answer::Reply(match line.split(' ').next().unwrap_or("") {
            "EHLO" => "250-plain.test\r\n250 8BITMIME\r\n".into(),
            "QUIT" => "221 bye\r\n".into(),
            _ => "250 ok\r\n".into(),
        })
    })
    .await;
    (port, seen)
}

#[tokio::test]
async fn pec_never_travels_in_clear_and_the_next_mx_is_tried() {
    let (plain, seen) = no_starttls_server().await;
    let r = relay(
        &format!("pec.altro.test=plain.test@127.0.0.1:{plain}"),
        Vec::new(),
        TlsPolicy::Required,
    );
    let e = r
        .deliver(SENDER, &rcpts(&["mario@pec.altro.test"]), &envelope())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no STARTTLS"), "{e}");
    assert!(
        !seen.lock().unwrap().iter().any(|l| l.starts_with("MAIL")),
        "{:?}",
        seen.lock().unwrap()
    );

    // The first MX offers no TLS, the second is down, the third takes it.
    let mx = mx().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let r = relay(
        &format!(
            "pec.altro.test=plain.test@127.0.0.1:{plain},localhost@127.0.0.1:{closed_port},localhost@127.0.0.1:{}",
            mx.port
        ),
        vec![mx.tls.cert_der.to_vec()],
        TlsPolicy::Required,
    );
    let outcome = r
        .deliver(SENDER, &rcpts(&["mario@pec.altro.test"]), &envelope())
        .await
        .unwrap();
    assert_eq!(outcome.accepted, ["mario@pec.altro.test"]);
    assert_eq!(mx.inbound.stored().len(), 1);
}

#[tokio::test]
async fn unknown_domains_and_unsendable_bytes_are_permanent() {
    let r = relay("", Vec::new(), TlsPolicy::Required);
    let e = r
        .deliver(SENDER, &rcpts(&["x@unknown.test"]), &envelope())
        .await
        .unwrap_err();
    assert!(matches!(e, RelayError::Permanent { .. }), "{e}");
    let e = r
        .deliver(
            SENDER,
            &rcpts(&["x@unknown.test"]),
            b"Subject: x\n\nbare LF\n",
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bare LF"), "{e}");
    let e = r
        .deliver(SENDER, &rcpts(&["a@one.test", "b@two.test"]), &envelope())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than one domain"), "{e}");
}

/// A server that greets, answers EHLO, then answers `quiet_from` and every later command with
/// silence (or, with `drop_after_dot`, takes DATA and closes without a reply to the final dot).
async fn stalling_server(quiet_from: &'static str, drop_after_dot: bool) -> u16 {
    let mut quiet = false;
    fake_server("stall.test", move |line| {
        if line == "." && drop_after_dot {
            return Answer::Close;
        }
        quiet |= line.starts_with(quiet_from);
        if quiet {
            return Answer::Silent;
        }
        Answer::Reply(match line.split(' ').next().unwrap_or("") {
            "EHLO" => "250-stall.test\r\n250 8BITMIME\r\n".into(),
            "DATA" => "354 go\r\n".into(),
            _ => "250 ok\r\n".into(),
        })
    })
    .await
}

/// A relay with the opportunistic policy for ordinary domains (the fake servers offer no
/// STARTTLS), replies awaited 1 s.
fn quick(routes: &str) -> SmtpRelay {
    relay_within(
        routes,
        Vec::new(),
        TlsPolicy::Opportunistic,
        Duration::from_secs(1),
    )
}

#[tokio::test]
async fn a_server_that_stops_answering_is_left_in_bounded_time() {
    let port = stalling_server("MAIL", false).await;
    let started = std::time::Instant::now();
    let e = quick(&format!("pec.altro.test=stall.test@127.0.0.1:{port}"))
        .deliver_to(
            SENDER,
            &rcpts(&["mario@pec.altro.test"]),
            b"Subject: x\r\n\r\nx\r\n",
            Peer::Ordinary,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RelayError::Transient { .. }), "{e}");
    assert!(e.to_string().contains("no answer within 1 s"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn no_reply_to_the_final_dot_is_not_sent_to_another_mx() {
    let stall = stalling_server("NEVER", true).await;
    let mx = mx().await;
    let e = quick(&format!(
        "pec.altro.test=stall.test@127.0.0.1:{stall},localhost@127.0.0.1:{}",
        mx.port
    ))
    .deliver_to(
        SENDER,
        &rcpts(&["mario@pec.altro.test"]),
        b"Subject: x\r\n\r\nx\r\n",
        Peer::Ordinary,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("outcome is unknown"), "{e}");
    assert!(
        mx.inbound.stored().is_empty(),
        "a second copy went to the next MX"
    );
}

/// A server without STARTTLS that answers `RCPT` by the local part (`ok` 250, `later` 450,
/// `no` 550) and the final dot with `after_dot`.
async fn scripted_server(after_dot: &'static str) -> u16 {
    fake_server("scripted.test", move |line| {
        Answer::Reply(if line == "." {
            format!("{after_dot}\r\n")
        } else if line.starts_with("EHLO") {
            "250-scripted.test\r\n250 8BITMIME\r\n".into()
        } else if line.starts_with("RCPT TO:<ok@") {
            "250 2.1.5 ok\r\n".into()
        } else if line.starts_with("RCPT TO:<later@") {
            "450 4.2.0 try later\r\n".into()
        } else if line.starts_with("RCPT TO:<no@") {
            "550 5.1.1 no such user\r\n".into()
        } else if line == "DATA" {
            "354 go\r\n".into()
        } else if line == "QUIT" {
            "221 bye\r\n".into()
        } else {
            "250 ok\r\n".into()
        })
    })
    .await
}

/// The answer to the message itself (at the final dot) concerns only the recipients taken at
/// RCPT; the recipients refused or deferred at RCPT keep those answers.
#[tokio::test]
async fn a_reply_to_the_message_itself_concerns_only_the_recipients_taken() {
    let all = rcpts(&["ok@b.test", "later@b.test", "no@b.test"]);
    let port = scripted_server("554 5.7.1 rejected as spam").await;
    let o = quick(&format!("b.test=scripted.test@127.0.0.1:{port}"))
        .deliver_to(SENDER, &all, &envelope(), Peer::Ordinary)
        .await
        .expect("an answer for each recipient");
    assert!(o.accepted.is_empty(), "{o:?}");
    let refused: Vec<_> = o
        .refused
        .iter()
        .map(|r| (r.recipient.as_str(), r.code, r.at_rcpt))
        .collect();
    assert_eq!(
        refused,
        [("no@b.test", 550, true), ("ok@b.test", 554, false)],
        "{o:?}"
    );
    assert_eq!(o.deferred.len(), 1, "{o:?}");
    assert_eq!(o.deferred[0].recipient, "later@b.test");

    let port = scripted_server("451 4.3.0 try again").await;
    let o = quick(&format!("b.test=scripted.test@127.0.0.1:{port}"))
        .deliver_to(SENDER, &all, &envelope(), Peer::Ordinary)
        .await
        .expect("an answer for each recipient");
    let refused: Vec<_> = o.refused.iter().map(|r| r.recipient.as_str()).collect();
    assert_eq!(refused, ["no@b.test"], "the 5.1.1 at RCPT stands: {o:?}");
    let mut deferred: Vec<_> = o.deferred.iter().map(|r| r.recipient.as_str()).collect();
    deferred.sort_unstable();
    assert_eq!(deferred, ["later@b.test", "ok@b.test"], "{o:?}");
}

/// `PEC_RELAY_TLS=opportunistic` concerns ordinary domains only: to another provider nothing
/// travels in clear, whatever the deployment configures.
#[tokio::test]
async fn opportunistic_tls_never_applies_to_another_provider() {
    let port = scripted_server("250 2.0.0 queued").await;
    let relay = quick(&format!("b.test=scripted.test@127.0.0.1:{port}"));
    let to = rcpts(&["ok@b.test"]);
    let e = relay
        .deliver_to(SENDER, &to, &envelope(), Peer::Provider)
        .await
        .unwrap_err();
    assert!(matches!(e, RelayError::Transient { .. }), "{e}");
    assert!(e.to_string().contains("no STARTTLS offered"), "{e}");
    let e = relay.deliver(SENDER, &to, &envelope()).await.unwrap_err();
    assert!(e.to_string().contains("no STARTTLS offered"), "{e}");
    let o = relay
        .deliver_to(SENDER, &to, &envelope(), Peer::Ordinary)
        .await
        .expect("an ordinary domain without STARTTLS gets it in clear");
    assert_eq!(o.accepted, to, "{o:?}");
}

/// What a hostile MX sends cannot take the relay down: an EHLO line of spaces (on which the
/// SMTP client panics) or a reply line that never ends (read up to a bound, not to memory's
/// end) make that MX a failed attempt, in bounded time, and the next MX is tried.
#[tokio::test]
async fn a_hostile_mx_costs_one_attempt_never_a_panic_or_unbounded_memory() {
    let spaces = fake_server("spaces.test", |line| {
        Answer::Reply(if line.starts_with("EHLO") {
            "250-spaces.test\r\n250-  \r\n250 8BITMIME\r\n".into()
        } else {
            "250 ok\r\n".into()
        })
    })
    .await;
    let endless = fake_server("endless.test", |line| {
        Answer::Reply(if line.starts_with("EHLO") {
            format!("250-endless.test {}", "x".repeat(3 << 20))
        } else {
            "250 ok\r\n".into()
        })
    })
    .await;
    let started = std::time::Instant::now();
    let e = quick(&format!(
        "b.test=spaces.test@127.0.0.1:{spaces},endless.test@127.0.0.1:{endless}"
    ))
    .deliver_to(SENDER, &rcpts(&["ok@b.test"]), &envelope(), Peer::Ordinary)
    .await
    .unwrap_err();
    assert!(matches!(e, RelayError::Transient { .. }), "{e}");
    let why = e.to_string();
    assert!(
        why.contains("spaces.test") && why.contains("could not read"),
        "{why}"
    );
    assert!(
        why.contains("endless.test") && why.contains("more than"),
        "{why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A server without STARTTLS that counts its sessions (EHLO) and transactions (MAIL); with
/// `close_after_message` it drops a connection at the first command after a message was taken
/// (as a server whose idle timer ran out), answering nothing.
async fn counting_server(
    close_after_message: bool,
) -> (
    u16,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sessions = Arc::new(AtomicUsize::new(0));
    let mails = Arc::new(AtomicUsize::new(0));
    let (s, m) = (sessions.clone(), mails.clone());
    let mut taken = false;
    let port = fake_server("count.test", move |line| {
        if taken && close_after_message {
            return Answer::Close;
        }
        Answer::Reply(if line.starts_with("EHLO") {
            s.fetch_add(1, Ordering::SeqCst);
            "250-count.test\r\n250 8BITMIME\r\n".into()
        } else if line.starts_with("MAIL") {
            m.fetch_add(1, Ordering::SeqCst);
            "250 2.1.0 ok\r\n".into()
        } else if line == "DATA" {
            "354 go\r\n".into()
        } else if line == "." {
            taken = true;
            "250 2.0.0 queued as Q1\r\n".into()
        } else if line == "QUIT" {
            "221 bye\r\n".into()
        } else {
            "250 ok\r\n".into()
        })
    })
    .await;
    (port, sessions, mails)
}

/// Per-domain connection reuse: the next message to the same MX goes over the connection the
/// last one left open; a kept connection the server closed meanwhile costs a reconnection,
/// never the message.
#[tokio::test]
async fn the_next_message_to_the_same_mx_reuses_the_connection() {
    use std::sync::atomic::Ordering;
    let (port, sessions, mails) = counting_server(false).await;
    let relay = quick(&format!("b.test=count.test@127.0.0.1:{port}"));
    for n in 0..3 {
        let o = relay
            .deliver_to(SENDER, &rcpts(&["ok@b.test"]), &envelope(), Peer::Ordinary)
            .await
            .unwrap_or_else(|e| panic!("message {n}: {e}"));
        assert_eq!(o.accepted, ["ok@b.test"]);
        assert_eq!(o.remote_id, "Q1");
    }
    assert_eq!(mails.load(Ordering::SeqCst), 3);
    assert_eq!(
        sessions.load(Ordering::SeqCst),
        1,
        "one connection for three messages"
    );
    assert_eq!(relay.idle_connections(), 1);

    // The server drops kept connections: each message still goes, over a new one.
    let (port, sessions, mails) = counting_server(true).await;
    let relay = quick(&format!("b.test=count.test@127.0.0.1:{port}"));
    for _ in 0..2 {
        relay
            .deliver_to(SENDER, &rcpts(&["ok@b.test"]), &envelope(), Peer::Ordinary)
            .await
            .unwrap();
    }
    assert_eq!(mails.load(Ordering::SeqCst), 2);
    assert_eq!(sessions.load(Ordering::SeqCst), 2);
}
