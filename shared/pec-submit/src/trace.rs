//! The gateway's trace field, and the refusal of trace fields that pretend to be ours.
//!
//! RFC 5321 §4.4: an SMTP server that accepts a message for delivery or relaying inserts a
//! `Received:` field at the top. The gateway does so for every submission (`with ESMTPSA`, RFC
//! 3848: ESMTP with STARTTLS and AUTH), so the trace a recipient reads starts with our line and
//! whatever the client brought sits below it. The transport envelope repeats the original's
//! `Received` fields (pec-rules.md, busta di trasporto): a client-supplied line such as
//! `Received: ... by mx.<our domain>` would then read as if our own servers had handled the
//! message. Such a message is refused at `DATA` (`554 5.7.1`), before anything is stored.

use chrono::{DateTime, Utc};

/// The `Received:` field (ending in CRLF) for a message accepted from `helo` at `client_ip` by
/// `hostname` under submission `id`. A `helo` that is not a plain domain or address literal
/// is written as `unknown` (the client's IP address is always in the comment).
pub fn received_field(
    helo: &str,
    client_ip: &str,
    hostname: &str,
    tls: bool,
    id: &str,
    at: DateTime<Utc>,
) -> String {
    let protocol = if tls { "ESMTPSA" } else { "ESMTPA" };
    received_field_with(helo, client_ip, hostname, protocol, id, at)
}

/// As [`received_field`], with the RFC 3848 protocol name given (`ESMTPS` for the MX over TLS).
pub fn received_field_with(
    helo: &str,
    client_ip: &str,
    hostname: &str,
    protocol: &str,
    id: &str,
    at: DateTime<Utc>,
) -> String {
    let plausible = !helo.is_empty()
        && helo.len() <= 255
        && helo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let from = if plausible { helo } else { "unknown" };
    format!(
        "Received: from {from} ([{client_ip}])\r\n\tby {hostname} with {protocol} id {id};\r\n\t{}\r\n",
        at.to_rfc2822()
    )
}

/// The domain our trace fields name: the gateway's host name without its first label when it
/// has at least three (`smtp.pec.example.test` -> `pec.example.test`), else the host name.
pub fn trace_domain(hostname: &str) -> String {
    let host = hostname.trim_end_matches('.').to_ascii_lowercase();
    match host.split_once('.') {
        Some((_, parent)) if parent.contains('.') => parent.to_string(),
        _ => host,
    }
}

/// The first `Received:` field of the message's header section whose `by` host is `domain` or
/// under it, unfolded; `None` when there is none.
pub fn forged_received(raw: &[u8], domain: &str) -> Option<String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 2);
    let head = String::from_utf8_lossy(&raw[..end]);
    // Unfold (RFC 5322 §2.2.3): a CRLF followed by blank space continues the field.
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let domain = domain.to_ascii_lowercase();
    unfolded
        .split("\r\n")
        .filter(|line| {
            line.get(..9)
                .is_some_and(|n| n.eq_ignore_ascii_case("received:"))
        })
        .find(|line| {
            let words: Vec<&str> = line[9..].split_whitespace().collect();
            words.windows(2).any(|w| {
                w[0].eq_ignore_ascii_case("by") && {
                    let host = w[1]
                        .trim_end_matches([';', ',', ')'])
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    host == domain || host.ends_with(&format!(".{domain}"))
                }
            })
        })
        .map(|line| line.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn our_received_field() {
        let at = Utc.with_ymd_and_hms(2026, 12, 4, 20, 17, 1).unwrap();
        let f = received_field(
            "client.example",
            "192.0.2.7",
            "smtp.pec.example.test",
            true,
            "ID1",
            at,
        );
        assert_eq!(
            f,
            "Received: from client.example ([192.0.2.7])\r\n\tby smtp.pec.example.test with ESMTPSA id ID1;\r\n\tFri, 4 Dec 2026 20:17:01 +0000\r\n"
        );
        let odd = received_field("a b(c)", "::1", "h", false, "I", at);
        assert!(odd.starts_with("Received: from unknown ([::1])\r\n\tby h with ESMTPA id I;"));
        assert!(forged_received(odd.as_bytes(), "h").is_some());
    }

    #[test]
    fn trace_domains() {
        assert_eq!(trace_domain("smtp.pec.example.test"), "pec.example.test");
        assert_eq!(trace_domain("SMTP.Example.It."), "example.it");
        assert_eq!(trace_domain("example.it"), "example.it");
        assert_eq!(trace_domain("localhost"), "localhost");
    }

    #[test]
    fn forged_trace_fields_are_found_folded_or_not() {
        let domain = "pec.example.test";
        let forged = b"Received: from x ([1.2.3.4])\r\n\tby mx.PEC.example.test with ESMTP;\r\n\tFri, 4 Dec 2026 20:17:01 +0000\r\nFrom: a@b\r\n\r\nReceived: by mx.pec.example.test in the body\r\n";
        let line = forged_received(forged, domain).unwrap();
        assert!(line.contains("by mx.PEC.example.test"), "{line}");
        assert!(forged_received(b"received: by pec.example.test;\r\n\r\n", domain).is_some());
        // Other hosts, look-alike domains, and the body are not ours.
        for ok in [
            &b"Received: from pc by relay.studio.example with ESMTP;\r\n\r\n"[..],
            b"Received: by mx.notpec.example.test;\r\n\r\n",
            b"Received: by pec.example.test.evil;\r\n\r\n",
            b"Subject: by mx.pec.example.test\r\n\r\n",
            b"From: a@b\r\n\r\nReceived: by mx.pec.example.test\r\n",
        ] {
            assert_eq!(
                forged_received(ok, domain),
                None,
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
    }
}
