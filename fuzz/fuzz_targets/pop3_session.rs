//! A whole POP3 session on arbitrary client bytes (see `common.rs` for the input format):
//! `pec_pop3::Server` over the memory store, in process, the TLS handshake taken as done
//! (feature `fuzzing`), the client's writes split by pauses, deliveries and other clients'
//! expunges. Checked after every session:
//!
//! - it never panics and it ends within the time bound (keep-open inputs included: the idle
//!   and login timeouts must end it), with a bounded heap;
//! - every octet the server wrote is in a CRLF-terminated line; the first line is the
//!   greeting; every answer starts with `+OK`, `-ERR` or is the SASL `+ `, or is a line of a
//!   multi-line answer that follows a `+OK` and ends with `.` (inner lines starting with a
//!   dot are stuffed); a `RETR` answer un-stuffed is exactly a stored message of the octets
//!   it announced, a `TOP` answer a prefix of one;
//! - the other users' mailboxes are exactly as they were (one of them locked with the same
//!   password); the user's other folders are untouched; INBOX messages keep their bytes and
//!   may only gain `\Seen`; messages leave INBOX only through `QUIT` (the answer says how
//!   many) or another client's expunge.
#![no_main]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use libfuzzer_sys::fuzz_target;
use pec_pop3::{Config, Security, Server};
use pec_ports::mailstore::{INBOX, SEEN};
use pec_submit::HashCost;

#[global_allocator]
static METER: Meter = Meter;

const KNOWN: [&[u8]; 4] = [FIRST, SECOND, DOTS, NEW];

fuzz_target!(|data: &[u8]| {
    let Some(script) = script(data) else {
        return;
    };
    let base = meter_start();
    let rt = runtime();
    let store = rt.block_on(mailboxes());
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
        ..Config::default()
    };
    let server = Server::new(config, tls(), accounts(), throttle(), Arc::clone(&store));
    let security = if script.implicit_tls {
        Security::ImplicitTls
    } else {
        Security::StartTls
    };
    let (out, outside) = converse(&script, &store, |io| async move {
        server.run_plain_for_fuzzing(io, security).await
    });
    trace(&script, &out);

    let deleted_at_quit = match check_output(&out) {
        Ok(n) => n,
        Err(e) => panic!(
            "malformed server output: {e}\n--- output (end) ---\n{}",
            show(&out)
        ),
    };

    let (anna_after, luca_after, mario_after) = rt.block_on(async {
        (
            snapshot(&store, ANNA).await,
            snapshot(&store, LUCA).await,
            snapshot(&store, MARIO).await,
        )
    });
    assert_eq!(anna_after, anna, "another user's mailbox changed");
    assert_eq!(luca_after, luca, "a locked user's mailbox changed");
    for (folder, messages) in &mario.messages {
        if folder != INBOX {
            assert_eq!(
                &mario_after.messages[folder], messages,
                "POP3 changed folder {folder}"
            );
        }
    }
    let before = &mario.messages[INBOX];
    let after = &mario_after.messages[INBOX];
    for (meta, bytes) in after {
        match before.iter().find(|(m, _)| m.uid == meta.uid) {
            Some((m, b)) => {
                assert_eq!(bytes, b, "a message's bytes changed");
                assert!(m.flags.is_subset(&meta.flags), "POP3 removed a flag");
                let gained: Vec<_> = meta.flags.difference(&m.flags).collect();
                assert!(
                    gained.iter().all(|f| f.as_str() == SEEN),
                    "POP3 set flags other than \\Seen: {gained:?}"
                );
            }
            None => {
                assert!(
                    outside.delivered.contains(&meta.uid),
                    "a message from nowhere"
                );
                assert_eq!(bytes, NEW, "a delivered message's bytes changed");
            }
        }
    }
    let present: BTreeSet<u32> = after.iter().map(|(m, _)| m.uid).collect();
    let removed: Vec<u32> = before
        .iter()
        .map(|(m, _)| m.uid)
        .chain(outside.delivered.iter().copied())
        .filter(|u| !present.contains(u) && !outside.expunged.contains(u))
        .collect();
    if !removed.is_empty() {
        match deleted_at_quit {
            Some(n) => assert!(
                removed.len() <= n,
                "QUIT said {n} messages deleted, {} are gone",
                removed.len()
            ),
            None => panic!(
                "messages {removed:?} left INBOX without a QUIT that deleted them\n{}",
                show(&out)
            ),
        }
    }
    assert!(mario_after.used <= mario_after.limit, "over quota");
    drop((store, out));
    check_memory(base, data.len());
});

fn is_status(line: &[u8]) -> bool {
    let word = |w: &[u8]| line.starts_with(w) && matches!(line.get(w.len()), None | Some(b' '));
    word(b"+OK") || word(b"-ERR") || line == b"+ "
}

/// What a multi-line answer must hold, from its `+OK` line.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `RETR`: exactly a stored message of this many octets.
    Retr(usize),
    /// `TOP`: a prefix of a stored message.
    Top,
    /// `CAPA`, `LIST`, `UIDL`, `AUTH`, or a single-line answer.
    Other,
}

fn kind(status: &[u8]) -> Kind {
    if status == b"+OK Top of message follows" {
        return Kind::Top;
    }
    let words: Vec<&[u8]> = status.split(|b| *b == b' ').collect();
    if let [b"+OK", n, b"octets"] = words.as_slice()
        && let Some(n) = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok())
    {
        return Kind::Retr(n);
    }
    Kind::Other
}

fn check_block(kind: Kind, lines: &[&[u8]]) -> Result<(), String> {
    let mut body = Vec::new();
    for line in lines {
        body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        body.extend_from_slice(b"\r\n");
    }
    match kind {
        Kind::Retr(n) if body.len() != n || !KNOWN.contains(&body.as_slice()) => Err(format!(
            "RETR announced {n} octets and sent {} that are no stored message: {:?}",
            body.len(),
            String::from_utf8_lossy(&body)
        )),
        Kind::Top if !KNOWN.iter().any(|k| k.starts_with(&body)) => Err(format!(
            "TOP sent what begins no stored message: {:?}",
            String::from_utf8_lossy(&body)
        )),
        _ => Ok(()),
    }
}

/// The server's output, line by line (see the module doc). Returns the count in a `QUIT`
/// answer that deleted messages.
fn check_output(out: &[u8]) -> Result<Option<usize>, String> {
    enum State {
        Status,
        AfterOk(Kind),
        Data(Kind, Vec<usize>),
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < out.len() {
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
        lines.push(line);
        i += end + 2;
    }
    if let Some(first) = lines.first()
        && !first.starts_with(b"+OK ")
    {
        return Err(format!("no greeting: {:?}", String::from_utf8_lossy(first)));
    }
    let mut deleted = None;
    let mut state = State::Status;
    for (n, line) in lines.iter().enumerate() {
        state = match state {
            State::Data(kind, mut block) => {
                if *line == b"." {
                    let block: Vec<&[u8]> = block.iter().map(|j| lines[*j]).collect();
                    check_block(kind, &block)?;
                    State::Status
                } else if is_status(line) {
                    return Err(format!(
                        "a status line inside a multi-line answer: {:?}",
                        String::from_utf8_lossy(line)
                    ));
                } else if line.starts_with(b".") && !line.starts_with(b"..") {
                    return Err(format!(
                        "an unstuffed dot line in a multi-line answer: {:?}",
                        String::from_utf8_lossy(line)
                    ));
                } else {
                    block.push(n);
                    State::Data(kind, block)
                }
            }
            State::AfterOk(kind) if !is_status(line) => {
                if *line == b"." {
                    check_block(kind, &[])?;
                    State::Status
                } else if line.starts_with(b".") && !line.starts_with(b"..") {
                    return Err(format!(
                        "an unstuffed dot line in a multi-line answer: {:?}",
                        String::from_utf8_lossy(line)
                    ));
                } else {
                    State::Data(kind, vec![n])
                }
            }
            State::AfterOk(Kind::Retr(_) | Kind::Top) => {
                return Err(format!(
                    "a RETR or TOP answer without its message, then {:?}",
                    String::from_utf8_lossy(line)
                ));
            }
            State::Status | State::AfterOk(Kind::Other) => {
                if !is_status(line) {
                    return Err(format!(
                        "neither +OK, -ERR nor part of a multi-line answer: {:?}",
                        String::from_utf8_lossy(line)
                    ));
                }
                if let Some(rest) = line.strip_suffix(b" messages deleted)")
                    && let Some(open) = rest.iter().rposition(|b| *b == b'(')
                    && rest.starts_with(b"+OK ")
                {
                    deleted = std::str::from_utf8(&rest[open + 1..])
                        .ok()
                        .and_then(|d| d.parse().ok());
                }
                if line.starts_with(b"+OK") {
                    State::AfterOk(kind(line))
                } else {
                    State::Status
                }
            }
        };
    }
    match state {
        State::Status | State::AfterOk(Kind::Other) => Ok(deleted),
        _ => Err("the output ends inside a multi-line answer".to_owned()),
    }
}
