//! A whole IMAP session on arbitrary client bytes (see `common.rs` for the input format):
//! `pec_imap::Server` over the memory store, in process, the TLS handshake taken as done
//! (feature `fuzzing`), the client's writes split by pauses, deliveries and other clients'
//! expunges. Checked after every session:
//!
//! - it never panics and it ends within the time bound (keep-open inputs included: the idle
//!   and login timeouts must end it), with a bounded heap;
//! - every octet the server wrote is in a CRLF-terminated line or in a literal announced by
//!   `{n}` at the end of a line; every response starts with `* `, `+`, or a tag the client
//!   sent followed by `OK`, `NO` or `BAD`; the first is the greeting;
//! - the other users' mailboxes are exactly as they were (one of them locked with the same
//!   password), the user's folders are the same, and the user's INBOX only ever holds
//!   messages the provider delivered (nothing appended, copied or moved there);
//! - the quota is never exceeded.
#![no_main]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use libfuzzer_sys::fuzz_target;
use pec_imap::{Config, Notifier, Security, Server};
use pec_ports::mailstore::{INBOX, Origin};
use pec_submit::HashCost;

#[global_allocator]
static METER: Meter = Meter;

fuzz_target!(|data: &[u8]| {
    let Some(script) = script(data) else {
        return;
    };
    let base = meter_start();
    let rt = runtime();
    let store = rt.block_on(mailboxes());
    let notifier = Notifier::new();
    store.set_listener(Arc::new(notifier.clone()));
    let (anna, luca, mario) = rt.block_on(async {
        (
            snapshot(&store, ANNA).await,
            snapshot(&store, LUCA).await,
            snapshot(&store, MARIO).await,
        )
    });
    let config = Config {
        dummy_hash_cost: HashCost::Fast,
        login_timeout: LOGIN_TIMEOUT,
        idle_timeout: IDLE_TIMEOUT,
        write_timeout: Duration::from_secs(10),
        idle_poll: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    let server = Server::new(
        config,
        tls(),
        accounts(),
        throttle(),
        Arc::clone(&store),
        notifier,
    );
    let security = if script.implicit_tls {
        Security::ImplicitTls
    } else {
        Security::StartTls
    };
    let (out, outside) = converse(&script, &store, |io| async move {
        server.run_plain_for_fuzzing(io, security).await
    });
    trace(&script, &out);

    if let Err(e) = check_output(&out, &script.sent) {
        panic!(
            "malformed server output: {e}\n--- output (end) ---\n{}",
            show(&out)
        );
    }

    let (anna_after, luca_after, mario_after) = rt.block_on(async {
        (
            snapshot(&store, ANNA).await,
            snapshot(&store, LUCA).await,
            snapshot(&store, MARIO).await,
        )
    });
    assert_eq!(anna_after, anna, "another user's mailbox changed");
    assert_eq!(luca_after, luca, "a locked user's mailbox changed");
    let names = |s: &Snapshot| {
        s.folders
            .iter()
            .map(|f| (f.name.clone(), f.uid_validity))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&mario_after), names(&mario), "folders changed");
    for (meta, bytes) in &mario_after.messages[INBOX] {
        assert_eq!(
            meta.origin,
            Origin::Delivered,
            "an appended message in INBOX"
        );
        assert!(
            [FIRST, SECOND, DOTS, NEW].contains(&bytes.as_slice()),
            "INBOX holds bytes nobody delivered: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert!(mario_after.used <= mario_after.limit, "over quota");
    let _ = outside;
    drop((store, out));
    check_memory(base, data.len());
});

/// The length of the literal a response line announces (`{n}` or `~{n}` at its end).
fn literal(line: &[u8]) -> Result<Option<usize>, String> {
    let Some(body) = line.strip_suffix(b"}") else {
        return Ok(None);
    };
    let Some(open) = body.iter().rposition(|b| *b == b'{') else {
        return Ok(None);
    };
    let digits = &body[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "a line ends with a brace that is not a literal: {:?}",
            String::from_utf8_lossy(line)
        ));
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .map(Some)
        .ok_or_else(|| "literal length out of range".to_owned())
}

/// The server's output, response by response: CRLF lines (no other CR or LF), literals as
/// announced, the greeting first, then untagged, continuation or tagged responses whose tag
/// the client sent.
fn check_output(out: &[u8], sent: &[u8]) -> Result<(), String> {
    let mut i = 0;
    let mut first = true;
    while i < out.len() {
        let start = i;
        loop {
            let Some(end) = out[i..].windows(2).position(|w| w == b"\r\n") else {
                return Err(format!(
                    "the output ends inside a line: {:?}",
                    String::from_utf8_lossy(&out[i..])
                ));
            };
            let line = &out[i..i + end];
            if line.iter().any(|b| *b == b'\r' || *b == b'\n') {
                return Err(format!(
                    "bare CR or LF in a line: {:?}",
                    String::from_utf8_lossy(line)
                ));
            }
            i += end + 2;
            match literal(line)? {
                Some(n) => {
                    if out.len() - i < n {
                        return Err(format!("a literal of {n} octets is cut short"));
                    }
                    i += n;
                }
                None => break,
            }
        }
        let response = &out[start..i];
        if first {
            first = false;
            if !(response.starts_with(b"* OK ") || response.starts_with(b"* BYE ")) {
                return Err(format!(
                    "the first response is not a greeting: {:?}",
                    String::from_utf8_lossy(response)
                ));
            }
            continue;
        }
        if response.starts_with(b"* ") && response.len() > 4 {
            continue;
        }
        if response.starts_with(b"+ ") || response == b"+\r\n" {
            continue;
        }
        let Some(space) = response.iter().position(|b| *b == b' ') else {
            return Err(format!(
                "a response without a space: {:?}",
                String::from_utf8_lossy(response)
            ));
        };
        let (tag, rest) = response.split_at(space);
        if tag.is_empty() || tag.contains(&b'+') || tag.contains(&b'*') {
            return Err(format!(
                "not a tag: {:?}",
                String::from_utf8_lossy(response)
            ));
        }
        if !contains(sent, &response[..=space]) {
            return Err(format!(
                "a tag the client never sent: {:?}",
                String::from_utf8_lossy(response)
            ));
        }
        if !(rest.starts_with(b" OK ") || rest.starts_with(b" NO ") || rest.starts_with(b" BAD ")) {
            return Err(format!(
                "a tagged response that is not OK, NO or BAD: {:?}",
                String::from_utf8_lossy(response)
            ));
        }
    }
    Ok(())
}
