//! Byte-exact header surgery: what SES does to a message's top-level header block on the way
//! out (a new `Message-ID` and `Date`) and on the way in (`Return-Path`, `Received`, verdicts).
//!
//! Only top-level header fields are touched; every other byte, the body included, is copied
//! as is. The top-level header block of a `multipart/signed` message lies outside the signed
//! part, so a provider signature still verifies after these changes (tested below).

use chrono::{DateTime, Utc};

/// One top-level header field: `raw[start..end]`, its continuation lines and line end included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name as written (before the colon, trailing blanks removed); empty for a line
    /// that is not a field (no colon).
    pub name: String,
    pub start: usize,
    pub end: usize,
}

/// The line ending a message uses: that of its first line (CRLF, or LF for a bare LF).
pub fn line_ending(raw: &[u8]) -> &'static str {
    match raw.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && raw[i - 1] == b'\r' => "\r\n",
        Some(_) => "\n",
        None => "\r\n",
    }
}

/// The top-level header fields and the offset where the header block ends (the blank line
/// that separates the body, or the end of the message when there is none).
pub fn header_fields(raw: &[u8]) -> (Vec<Field>, usize) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(raw.len());
        let line = &raw[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return (fields, pos);
        }
        match (line[0], fields.last_mut()) {
            (b' ' | b'\t', Some(last)) => last.end = end,
            _ => {
                let name = line
                    .iter()
                    .position(|&b| b == b':')
                    .map(|colon| {
                        String::from_utf8_lossy(&line[..colon])
                            .trim_end()
                            .to_string()
                    })
                    .unwrap_or_default();
                fields.push(Field {
                    name,
                    start: pos,
                    end,
                });
            }
        }
        pos = end;
    }
    (fields, raw.len())
}

/// The value of the first top-level field `name` (case-insensitive), unfolded and trimmed.
pub fn header_value(raw: &[u8], name: &str) -> Option<String> {
    let (fields, _) = header_fields(raw);
    let field = fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))?;
    let text = String::from_utf8_lossy(&raw[field.start..field.end]);
    let (_, value) = text.split_once(':')?;
    Some(
        value
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// RFC 5322 date-time in UTC, as SES writes it.
pub fn rfc5322_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// Replaces (or adds) top-level fields: each `(name, value)` takes the place of the first field
/// of that name, further fields of that name are removed, and a name the message does not have
/// is added at the top. Everything else is copied byte for byte.
pub fn replace_fields(raw: &[u8], replacements: &[(&str, &str)]) -> Vec<u8> {
    let eol = line_ending(raw);
    let (fields, _) = header_fields(raw);
    let mut out = Vec::with_capacity(raw.len() + 128);
    for (name, value) in replacements {
        if !fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
            out.extend_from_slice(format!("{name}: {value}{eol}").as_bytes());
        }
    }
    let mut cursor = 0;
    let mut written = vec![false; replacements.len()];
    for field in &fields {
        let Some(i) = replacements
            .iter()
            .position(|(name, _)| field.name.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        out.extend_from_slice(&raw[cursor..field.start]);
        if !written[i] {
            let (name, value) = replacements[i];
            out.extend_from_slice(format!("{name}: {value}{eol}").as_bytes());
            written[i] = true;
        }
        cursor = field.end;
    }
    out.extend_from_slice(&raw[cursor..]);
    out
}

/// What real SES does to a sent message (LocalStack does not): a `Message-ID` of its own and
/// the `Date` of acceptance.
pub fn rewrite_ids(raw: &[u8], ses_message_id: &str, region: &str, sent: DateTime<Utc>) -> Vec<u8> {
    let message_id = format!("<{ses_message_id}@{region}.amazonses.com>");
    replace_fields(
        raw,
        &[("Message-ID", &message_id), ("Date", &rfc5322_date(sent))],
    )
}

/// The headers SES receiving puts on top of a message before writing it to S3.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    /// The envelope sender (SMTP MAIL FROM), without angle brackets; empty for `<>`.
    pub return_path: &'a str,
    /// The SMTP transaction id (SES: the message id, which is also the S3 object name).
    pub smtp_id: &'a str,
    /// The receiving region (`inbound-smtp.<region>.amazonaws.com`).
    pub region: &'a str,
    pub received_at: DateTime<Utc>,
}

/// `raw` as SES receiving stores it: `Return-Path`, `Received`, `X-SES-Spam-Verdict: PASS`,
/// `X-SES-Virus-Verdict: PASS`, then the message byte for byte (in the message's line ending).
pub fn with_arrival_headers(raw: &[u8], arrival: &Arrival<'_>) -> Vec<u8> {
    let eol = line_ending(raw);
    let mut out = Vec::with_capacity(raw.len() + 512);
    let head = format!(
        "Return-Path: <{rp}>{eol}\
         Received: from pec-exchange.localhost (pec-exchange [127.0.0.1]){eol} \
         by inbound-smtp.{region}.amazonaws.com with SMTP id {id};{eol} \
         {date}{eol}\
         X-SES-Spam-Verdict: PASS{eol}\
         X-SES-Virus-Verdict: PASS{eol}",
        rp = arrival.return_path,
        region = arrival.region,
        id = arrival.smtp_id,
        date = rfc5322_date(arrival.received_at),
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(raw);
    out
}

/// Bare LF line ends as CRLF (what SMTP transport makes of a file stored with LF); CRLF and a
/// lone CR are kept.
pub fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The addresses of the top-level `To`, `Cc` and `Bcc` fields (what SES itself takes as the
/// recipients when a raw message is sent without Destinations).
pub fn header_recipients(raw: &[u8]) -> Vec<String> {
    let Some(message) = mail_parser::MessageParser::new().parse_headers(raw) else {
        return Vec::new();
    };
    [message.to(), message.cc(), message.bcc()]
        .into_iter()
        .flatten()
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SIGNED: &[u8] = b"Return-Path: <x@y>\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
Message-ID:\r\n <folded-original@pec.example.test>\r\n\
From: posta-certificata@pec.example.test\r\n\
Subject: POSTA CERTIFICATA: prova\r\n\
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n\
\tmicalg=sha-256; boundary=\"b1\"\r\n\
\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nMessage-ID: <in-the-body@x>\r\nDate: body\r\n--b1--\r\n";

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 4, 12, 38).unwrap()
    }

    fn body(raw: &[u8]) -> &[u8] {
        let (_, end) = header_fields(raw);
        &raw[end..]
    }

    #[test]
    fn fields_follow_folding_and_stop_at_the_blank_line() {
        let (fields, end) = header_fields(SIGNED);
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Return-Path",
                "Date",
                "Message-ID",
                "From",
                "Subject",
                "Content-Type"
            ]
        );
        assert_eq!(
            &SIGNED[fields[2].start..fields[2].end],
            b"Message-ID:\r\n <folded-original@pec.example.test>\r\n"
        );
        assert!(SIGNED[end..].starts_with(b"\r\n--b1"));
        assert_eq!(
            header_value(SIGNED, "message-id").as_deref(),
            Some("<folded-original@pec.example.test>")
        );
    }

    #[test]
    fn rewriting_ids_changes_two_fields_and_nothing_else() {
        let out = rewrite_ids(SIGNED, "abc-def", "eu-south-1", t());
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("\r\nMessage-ID: <abc-def@eu-south-1.amazonses.com>\r\nFrom:"));
        assert!(text.starts_with(
            "Return-Path: <x@y>\r\nDate: Mon, 23 Nov 2026 04:12:38 +0000\r\nMessage-ID:"
        ));
        assert!(!text.contains("folded-original"));
        assert_eq!(body(&out), body(SIGNED), "the body is untouched");
        // The same bytes as the original once the two fields are put back.
        let restored = replace_fields(
            &out,
            &[
                ("Date", "Mon, 23 Nov 2026 10:00:00 +0100"),
                ("Message-ID", "\r\n <folded-original@pec.example.test>"),
            ],
        );
        assert_eq!(
            String::from_utf8(restored).unwrap(),
            String::from_utf8(SIGNED.to_vec())
                .unwrap()
                .replace("Message-ID:\r\n", "Message-ID: \r\n")
        );
    }

    #[test]
    fn missing_fields_are_added_and_duplicates_removed() {
        let raw = b"From: a@b\nMessage-ID: <1@x>\nTo: c@d\nmessage-id: <2@x>\n\nbody\n";
        let out = rewrite_ids(raw, "id", "eu-south-1", t());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Date: Mon, 23 Nov 2026 04:12:38 +0000\nFrom: a@b\n\
             Message-ID: <id@eu-south-1.amazonses.com>\nTo: c@d\n\nbody\n"
        );
    }

    #[test]
    fn odd_input_never_panics() {
        for raw in [
            &b""[..],
            b"\r\n",
            b"no colon at all",
            b" leading continuation\r\nX: y",
            b"X: y",
            b"\n\n\n",
            b"Message-ID: <a>",
            &[0xff, 0xfe, b':', b'\n', b'\n', 0x80],
        ] {
            let _ = header_fields(raw);
            let _ = rewrite_ids(raw, "i", "r", t());
            let _ = header_recipients(raw);
            let _ = header_value(raw, "Message-ID");
            let _ = with_arrival_headers(
                raw,
                &Arrival {
                    return_path: "",
                    smtp_id: "i",
                    region: "r",
                    received_at: t(),
                },
            );
        }
        assert_eq!(
            rewrite_ids(b"Message-ID: <a>", "i", "r", t()),
            b"Date: Mon, 23 Nov 2026 04:12:38 +0000\r\nMessage-ID: <i@r.amazonses.com>\r\n"
        );
    }

    #[test]
    fn arrival_headers_go_on_top_in_the_message_line_ending() {
        let arrival = Arrival {
            return_path: "posta-certificata@pec.example.test",
            smtp_id: "20261123T041238000Z-abc",
            region: "eu-south-1",
            received_at: t(),
        };
        let out = with_arrival_headers(SIGNED, &arrival);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with(
            "Return-Path: <posta-certificata@pec.example.test>\r\nReceived: from pec-exchange.localhost"
        ));
        assert!(text.contains(
            "X-SES-Spam-Verdict: PASS\r\nX-SES-Virus-Verdict: PASS\r\nReturn-Path: <x@y>\r\n"
        ));
        assert!(out.ends_with(SIGNED));
        let lf = with_arrival_headers(b"From: a@b\n\nx\n", &arrival);
        assert!(!lf.contains(&b'\r'));
        let (fields, _) = header_fields(&out);
        assert_eq!(fields[1].name, "Received");
        assert_eq!(fields.len(), 4 + 6);
    }

    #[test]
    fn crlf() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd\n\n"), b"a\r\nb\r\nc\rd\r\n\r\n");
        assert_eq!(to_crlf(b"\n"), b"\r\n");
        assert_eq!(to_crlf(b""), b"");
    }

    #[test]
    fn recipients_from_to_cc_and_bcc() {
        let raw = b"From: a@b\r\nTo: \"Anna\" <anna@pec.altro.test>, bob@ordinaria.test\r\n\
Cc: Grp: c@pec.altro.test;\r\nBcc: d@x.test\r\nSubject: s\r\n\r\nTo: not@this.one\r\n";
        assert_eq!(
            header_recipients(raw),
            [
                "anna@pec.altro.test",
                "bob@ordinaria.test",
                "c@pec.altro.test",
                "d@x.test"
            ]
        );
    }
}
