//! The access point's formal checks (RFC 6109 §3.1.1, plus ownership of the sender address),
//! as pure functions over the submitted bytes and the SMTP envelope.
//!
//! Each failure is a [`FormalError`] whose `Display` is the Italian human reason written into
//! the avviso di non accettazione ([`refusal_reason`] joins several).

use mail_parser::{HeaderName, MimeHeaders};

use crate::addr::{is_addr_spec, same_address};
use crate::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
use crate::original::{self, Certified, all_addresses, normalise_msgid};
use crate::policy::{self, clean_text};

/// A message as submitted at the access point.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    /// The message bytes as received in SMTP DATA.
    pub raw: &'a [u8],
    /// SMTP `MAIL FROM` (reverse-path), without angle brackets.
    pub reverse_path: &'a str,
    /// SMTP `RCPT TO` (forward-paths), without angle brackets.
    pub recipients: &'a [String],
    /// The addresses the authenticated user may send as.
    pub owned_addresses: &'a [String],
}

/// Provider limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum of message size × number of recipients, in bytes.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: policy::DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

/// One failed formal check. `Display` is the Italian reason for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormalError {
    /// Not a readable RFC 5322 message.
    #[error("il messaggio non è un messaggio di posta elettronica leggibile (RFC 5322)")]
    Unparseable,
    /// No `From` address.
    #[error("manca il mittente (intestazione From)")]
    FromMissing,
    /// More than one `From` address.
    #[error("l'intestazione From contiene {0} indirizzi invece di uno solo")]
    FromMultiple(usize),
    /// The `From` address is not valid.
    #[error("l'indirizzo del mittente {0:?} non è valido")]
    FromInvalid(String),
    /// No `To` address.
    #[error("manca almeno un destinatario nell'intestazione To")]
    ToMissing,
    /// A `To`/`Cc` address is not valid.
    #[error("l'indirizzo del destinatario {0:?} non è valido")]
    RecipientInvalid(String),
    /// SMTP reverse-path differs from `From`.
    #[error(
        "il mittente della trasmissione SMTP ({reverse_path}) è diverso dal mittente del messaggio ({from})"
    )]
    ReversePathMismatch {
        /// `MAIL FROM`.
        reverse_path: String,
        /// `From`.
        from: String,
    },
    /// No SMTP recipient.
    #[error("nessun destinatario nella trasmissione SMTP")]
    NoEnvelopeRecipients,
    /// An SMTP recipient is not in `To` or `Cc`.
    #[error("il destinatario {0} non compare tra i destinatari (To o Cc) del messaggio")]
    RecipientNotInHeaders(String),
    /// `Bcc` is not empty.
    #[error(
        "il messaggio ha destinatari in copia nascosta (Bcc), non ammessi nella posta certificata"
    )]
    BccNotEmpty,
    /// Size × recipients over the limit.
    #[error(
        "la dimensione del messaggio ({size} byte) moltiplicata per il numero di destinatari ({recipients}) supera il limite di {limit} byte"
    )]
    TooLarge {
        /// Message size in bytes.
        size: u64,
        /// Number of SMTP recipients.
        recipients: u64,
        /// The limit.
        limit: u64,
    },
    /// The authenticated user does not own the `From` address.
    #[error("l'utente autenticato non è titolare dell'indirizzo mittente {0}")]
    NotOwner(String),
    /// A `Sender` header names an address the authenticated user does not own: the message
    /// would claim to be sent on someone else's behalf.
    #[error(
        "l'intestazione Sender indica {0}, indirizzo di cui l'utente autenticato non è titolare"
    )]
    SenderNotOwned(String),
    /// A multipart of the message has no closing delimiter.
    #[error(
        "la struttura MIME del messaggio non è terminata: la parte multipart con delimitatore {0:?} non ha il delimitatore di chiusura"
    )]
    UnterminatedMultipart(String),
    /// A header the transport envelope repeats (`To`, `Cc`, `Reply-To`, `Received`) cannot be
    /// written into a signed envelope as it is.
    #[error("l'intestazione {name} non può essere riportata nella busta di trasporto: {reason}")]
    HeaderNotTransportable {
        /// The header name.
        name: &'static str,
        /// Why, in Italian.
        reason: &'static str,
    },
}

/// Whether `raw[start..end]` holds the closing delimiter `--<boundary>--` at the start of a
/// line.
fn closes(raw: &[u8], start: usize, end: usize, boundary: &str) -> bool {
    let close = format!("--{boundary}--");
    let close = close.as_bytes();
    let Some(body) = raw.get(start..end) else {
        return false;
    };
    body.windows(close.len())
        .enumerate()
        .any(|(i, w)| w == close && (start + i == 0 || raw[start + i - 1] == b'\n'))
}

/// The boundary of the innermost (last) multipart of `m` whose closing delimiter is missing. An
/// open multipart inside our envelope swallows the envelope's own boundaries for MIME parsers
/// (ours and other providers'), so the signed envelope would read as tampered.
/// Attached messages (`message/rfc822`) are searched too, to any depth the parser went (their
/// parts' offsets are into the same `raw`).
/// The closing delimiter must follow the multipart's last part: one inside a part belongs to a
/// nested multipart (a nested multipart that reuses its parent's boundary, closing only itself,
/// used to pass for closing the parent too).
fn unterminated_multipart(m: &mail_parser::Message<'_>, raw: &[u8]) -> Option<String> {
    // The innermost open multipart is the one that swallowed what follows it (its parents'
    // delimiters): it is the one named.
    m.parts.iter().rev().find_map(|p| match &p.body {
        mail_parser::PartType::Multipart(children) => {
            let boundary = p.content_type()?.attribute("boundary")?.to_string();
            let end = (p.offset_end as usize).min(raw.len());
            let start = children
                .last()
                .and_then(|&c| m.parts.get(c as usize))
                .map_or(p.offset_body, |last| last.offset_end.max(p.offset_body))
                as usize;
            (!closes(raw, start.min(end), end, &boundary)).then_some(boundary)
        }
        mail_parser::PartType::Message(inner) => unterminated_multipart(inner, raw),
        _ => None,
    })
}

/// The top-level headers of the original that the transport envelope repeats (its `Received`,
/// `Reply-To`, `To` and `Cc`): they must be representable in a signed envelope as they are.
pub const ENVELOPE_INHERITS: [&str; 4] = ["Received", "Reply-To", "To", "Cc"];

/// Why a raw header value cannot travel in a signed envelope, if it cannot: RFC 5322 wants
/// ASCII (8-bit text must be RFC 2047-encoded), no control characters, CRLF line ends only as
/// folds, no whitespace-only folded line, lines of at most 998 octets.
pub(crate) fn transport_problem(name: &str, value: &[u8]) -> Option<&'static str> {
    if !value.is_ascii() {
        return Some("contiene caratteri non ASCII (vanno codificati secondo RFC 2047)");
    }
    if value
        .iter()
        .any(|&b| b == 0 || (b.is_ascii_control() && !matches!(b, b'\r' | b'\n' | b'\t')))
    {
        return Some("contiene caratteri di controllo");
    }
    let text = String::from_utf8_lossy(value);
    let text = text
        .strip_suffix("\r\n")
        .or(text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.replace("\r\n", "").contains(['\r', '\n']) {
        return Some("contiene un ritorno a capo isolato");
    }
    let mut lines = text.split("\r\n");
    // The envelope writes `Name: value` with the value's leading blanks trimmed.
    let first = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches([' ', '\t']);
    if name.len() + 2 + first.len() > 998 {
        return Some("contiene una riga più lunga di 998 caratteri");
    }
    for line in lines {
        if line.trim_matches([' ', '\t']).is_empty() {
            return Some("contiene una riga di continuazione vuota");
        }
        if line.len() > 998 {
            return Some("contiene una riga più lunga di 998 caratteri");
        }
    }
    None
}

/// Run every formal check; `Ok(())` when the message may be accepted, else every failure in a
/// fixed order (parse, From, To/Cc, reverse-path, envelope recipients, Bcc, size, ownership).
pub fn check_submission(s: &Submission<'_>, limits: &Limits) -> Result<(), Vec<FormalError>> {
    let mut errors = Vec::new();
    let size = s.raw.len() as u64;
    let n = s.recipients.len() as u64;
    let too_large = size.saturating_mul(n.max(1)) > limits.max_total_bytes;

    // Judge the bytes the acceptance and the envelope are built from: with its line ends made
    // CRLF (a bare CR read as text here is a line break there, e.g. `From: "\r" <a@b>` passed
    // the checks and then had no From when the acceptance was built: issue 11, found by
    // tests/invariant.rs in pec-pipeline).
    let canonical = original::canonical_crlf(s.raw);
    let raw: &[u8] = &canonical;
    let Some(m) = crate::mime::parse(raw) else {
        errors.push(FormalError::Unparseable);
        if too_large {
            errors.push(FormalError::TooLarge {
                size,
                recipients: n,
                limit: limits.max_total_bytes,
            });
        }
        return Err(errors);
    };

    // From: exactly one valid address.
    let from = all_addresses(&m, HeaderName::From);
    let from_headers = m.header_values(HeaderName::From).count();
    let from_addr = match (from.as_slice(), from_headers) {
        ([], _) => {
            errors.push(FormalError::FromMissing);
            None
        }
        ([one], 1) => {
            if is_addr_spec(one) {
                Some(one.clone())
            } else {
                errors.push(FormalError::FromInvalid(one.clone()));
                None
            }
        }
        (many, _) => {
            errors.push(FormalError::FromMultiple(many.len().max(from_headers)));
            None
        }
    };

    // To: at least one; every To/Cc address valid.
    let to = all_addresses(&m, HeaderName::To);
    let cc = all_addresses(&m, HeaderName::Cc);
    if to.is_empty() {
        errors.push(FormalError::ToMissing);
    }
    for a in to.iter().chain(cc.iter()) {
        if !is_addr_spec(a) {
            errors.push(FormalError::RecipientInvalid(a.clone()));
        }
    }

    // Reverse-path equal to From.
    if let Some(f) = &from_addr
        && !same_address(f, s.reverse_path)
    {
        errors.push(FormalError::ReversePathMismatch {
            reverse_path: s.reverse_path.to_string(),
            from: f.clone(),
        });
    }

    // Every envelope recipient in To or Cc.
    if s.recipients.is_empty() {
        errors.push(FormalError::NoEnvelopeRecipients);
    }
    for r in s.recipients {
        if !to.iter().chain(cc.iter()).any(|a| same_address(a, r)) {
            errors.push(FormalError::RecipientNotInHeaders(r.clone()));
        }
    }

    // Bcc empty (a Bcc header with no address is fine).
    if !all_addresses(&m, HeaderName::Bcc).is_empty() {
        errors.push(FormalError::BccNotEmpty);
    }

    if too_large {
        errors.push(FormalError::TooLarge {
            size,
            recipients: n,
            limit: limits.max_total_bytes,
        });
    }

    // The headers the envelope repeats can be signed as they are.
    if let Some(part) = m.parts.first() {
        for name in ENVELOPE_INHERITS {
            let problem = part
                .headers
                .iter()
                .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
                .filter_map(|h| raw.get(h.offset_start as usize..h.offset_end as usize))
                .find_map(|value| transport_problem(name, value));
            if let Some(reason) = problem {
                errors.push(FormalError::HeaderNotTransportable { name, reason });
            }
        }
    }

    // Every multipart closes (see `unterminated_multipart`).
    if let Some(boundary) = unterminated_multipart(&m, raw) {
        errors.push(FormalError::UnterminatedMultipart(boundary));
    }

    // The authenticated user owns the From address.
    if let Some(f) = &from_addr
        && !s.owned_addresses.iter().any(|o| same_address(o, f))
    {
        errors.push(FormalError::NotOwner(f.clone()));
    }

    // A Sender names only addresses the user owns (RFC 5322 §3.6.2: the agent responsible
    // for the transmission; in PEC that is the authenticated mailbox).
    for a in all_addresses(&m, HeaderName::Sender) {
        if !s.owned_addresses.iter().any(|o| same_address(o, &a)) {
            errors.push(FormalError::SenderNotOwned(a));
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The human reason for the notice: every failure, in order, joined by `"; "`.
pub fn refusal_reason(errors: &[FormalError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The certified data of a refused message, as far as it can be read, for the avviso di non
/// accettazione: sender = the valid `From` address, else the reverse-path; recipients = the
/// valid `To`/`Cc` addresses, else the SMTP recipients; no `Reply-To` handling (risposte = the
/// sender).
pub fn certified_for_refusal(
    s: &Submission<'_>,
    identificativo: &str,
    tipo_of: &dyn Fn(&str) -> TipoDestinatario,
) -> Certified {
    let m = crate::mime::parse(s.raw);
    let from = m
        .as_ref()
        .map(|m| all_addresses(m, HeaderName::From))
        .unwrap_or_default()
        .into_iter()
        .find(|a| is_addr_spec(a))
        .unwrap_or_else(|| s.reverse_path.to_string());
    let mut dest: Vec<String> = m
        .as_ref()
        .map(|m| {
            all_addresses(m, HeaderName::To)
                .into_iter()
                .chain(all_addresses(m, HeaderName::Cc))
                .filter(|a| is_addr_spec(a))
                .collect()
        })
        .unwrap_or_default();
    if dest.is_empty() {
        dest = s.recipients.to_vec();
    }
    let mut destinatari: Vec<Destinatario> = Vec::new();
    for a in dest {
        if !destinatari.iter().any(|d| same_address(&d.indirizzo, &a)) {
            destinatari.push(Destinatario {
                tipo: tipo_of(&a),
                indirizzo: a,
            });
        }
    }
    Certified {
        risposte: from.clone(),
        mittente: from,
        destinatari,
        oggetto: m.as_ref().and_then(|m| {
            m.header(HeaderName::Subject)
                .map(|_| clean_text(m.subject().unwrap_or_default()))
        }),
        identificativo: identificativo.to_string(),
        msgid: m
            .as_ref()
            .and_then(|m| m.message_id())
            .and_then(normalise_msgid),
        ricevuta: m
            .as_ref()
            .and_then(|m| {
                original::raw_values(m, s.raw, policy::header::X_TIPO_RICEVUTA)
                    .first()
                    .map(|v| TipoRicevuta::parse(v))
            })
            .filter(TipoRicevuta::is_known)
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub<'a>(
        raw: &'a [u8],
        rp: &'a str,
        rcpt: &'a [String],
        owned: &'a [String],
    ) -> Submission<'a> {
        Submission {
            raw,
            reverse_path: rp,
            recipients: rcpt,
            owned_addresses: owned,
        }
    }

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    const OK: &[u8] = b"From: Mario <m@pec.example.it>\r\nTo: a@pec.example.it\r\nCc: b@example.com\r\nSubject: x\r\n\r\nbody\r\n";

    #[test]
    fn accepts_a_good_message() {
        let r = v(&["a@pec.example.it", "B@example.com"]);
        let o = v(&["M@pec.example.it"]);
        assert_eq!(
            check_submission(&sub(OK, "m@pec.example.it", &r, &o), &Limits::default()),
            Ok(())
        );
    }

    /// Issue 11: a `Sender` naming another mailbox (another tenant's, say) would make the
    /// message claim to be sent on its behalf; the user's own address is fine.
    #[test]
    fn a_sender_header_names_only_the_users_addresses() {
        let r = v(&["a@pec.example.it"]);
        let o = v(&["m@pec.example.it"]);
        let check = |sender: &str| {
            let raw = format!(
                "From: Mario <m@pec.example.it>\r\nSender: {sender}\r\nTo: a@pec.example.it\r\nSubject: x\r\n\r\nbody\r\n"
            );
            check_submission(
                &sub(raw.as_bytes(), "m@pec.example.it", &r, &o),
                &Limits::default(),
            )
        };
        assert_eq!(check("<M@PEC.example.it>"), Ok(()));
        assert_eq!(
            check("Ufficio <protocollo@altro-ente.example.it>"),
            Err(vec![FormalError::SenderNotOwned(
                "protocollo@altro-ente.example.it".into()
            )])
        );
    }

    /// Issue 11, defect 1: headers the envelope repeats must be signable as they are, or the
    /// message is refused here (never accepted with an envelope the signer refuses).
    #[test]
    fn headers_the_envelope_repeats_must_be_transportable() {
        let owned = v(&["m@pec.example.it"]);
        let rcpt = v(&["a@pec.example.it"]);
        let errors = |raw: &[u8]| {
            check_submission(
                &sub(raw, "m@pec.example.it", &rcpt, &owned),
                &Limits::default(),
            )
            .err()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| match e {
                FormalError::HeaderNotTransportable { name, reason } => Some((name, reason)),
                _ => None,
            })
            .collect::<Vec<_>>()
        };
        let with = |header: &[u8]| {
            let mut raw = b"From: Mario <m@pec.example.it>\r\n".to_vec();
            raw.extend_from_slice(header);
            raw.extend_from_slice(b"Subject: x\r\n\r\nbody\r\n");
            raw
        };
        // UTF-8 and Latin-1 bytes in To; a whitespace-only continuation line; a 1,000-octet line.
        let utf8 = with("To: \"Ànna\" <a@pec.example.it>\r\n".as_bytes());
        assert_eq!(errors(&utf8)[0].0, "To", "{:?}", errors(&utf8));
        let latin1 = with(b"To: \"\xc0nna\" <a@pec.example.it>\r\n");
        assert_eq!(errors(&latin1)[0].0, "To");
        let blank_fold = with(b"To: a@pec.example.it,\r\n \r\n a@pec.example.it\r\n");
        assert_eq!(
            errors(&blank_fold),
            [("To", "contiene una riga di continuazione vuota")]
        );
        let long = format!(
            "To: a@pec.example.it\r\nReply-To: \"{}\" <m@pec.example.it>\r\n",
            "x".repeat(1000)
        );
        assert_eq!(errors(&with(long.as_bytes()))[0].0, "Reply-To");
        let received = with(b"To: a@pec.example.it\r\nReceived: from \xe9vil by x\r\n");
        assert_eq!(errors(&received)[0].0, "Received");
        // RFC 2047-encoded text and ordinary folding are fine.
        let fine = with(b"To: =?utf-8?q?=C3=80nna?= <a@pec.example.it>,\r\n\ta@pec.example.it\r\n");
        assert_eq!(errors(&fine), []);
        assert!(
            FormalError::HeaderNotTransportable {
                name: "To",
                reason: "x"
            }
            .to_string()
            .starts_with("l'intestazione To non può essere riportata nella busta di trasporto")
        );
    }

    #[test]
    fn every_multipart_must_close() {
        let owned = v(&["m@pec.example.it"]);
        let rcpt = v(&["a@pec.example.it"]);
        let check = |body: &str| {
            let raw = format!(
                "From: m@pec.example.it\r\nTo: a@pec.example.it\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n{body}"
            );
            check_submission(
                &sub(raw.as_bytes(), "m@pec.example.it", &rcpt, &owned),
                &Limits::default(),
            )
        };
        assert_eq!(check("--b\r\n\r\nx\r\n--b--\r\n"), Ok(()));
        assert_eq!(
            check("--b\r\n\r\nx\r\n"),
            Err(vec![FormalError::UnterminatedMultipart("b".into())])
        );
        // An attached message whose multipart never closes is found too.
        let attached = "--b\r\nContent-Type: message/rfc822\r\n\r\n\
             From: x@example.com\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n\
             --inner\r\n\r\ntesto\r\n\r\n--b--\r\n";
        assert_eq!(
            check(attached),
            Err(vec![FormalError::UnterminatedMultipart("inner".into())])
        );
        assert_eq!(
            check(&attached.replace("testo\r\n\r\n--b--", "testo\r\n--inner--\r\n\r\n--b--")),
            Ok(())
        );
        // A nested multipart that reuses the boundary and closes only itself does not close
        // its parent (issue 11, found by tests/invariant.rs in pec-pipeline).
        let reused = "--b\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\n\r\ninner\r\n--b--\r\n\r\n--b\r\n\r\nallegato\r\n";
        assert_eq!(
            check(reused),
            Err(vec![FormalError::UnterminatedMultipart("b".into())])
        );
        assert_eq!(check(&format!("{reused}--b--\r\n")), Ok(()));
        // The closing delimiter counts only at the start of a line.
        assert_eq!(
            check("--b\r\n\r\nsee --b-- here\r\n"),
            Err(vec![FormalError::UnterminatedMultipart("b".into())])
        );
    }

    #[test]
    fn a_bare_cr_is_judged_as_the_acceptance_reads_it() {
        let owned = v(&["m@pec.example.it"]);
        let rcpt = v(&["a@pec.example.it"]);
        // Read raw, the From is valid; with its line ends made CRLF (what the acceptance and
        // the envelope are built from) it has none.
        let raw = b"From: \"\r\" <m@pec.example.it>\r\nTo: a@pec.example.it\r\n\r\nx\r\n";
        let verdict = check_submission(
            &sub(raw, "m@pec.example.it", &rcpt, &owned),
            &Limits::default(),
        );
        assert!(verdict.is_err(), "{verdict:?}");
        // A bare LF alone is a line end like CRLF.
        let raw = b"From: m@pec.example.it\nTo: a@pec.example.it\n\nx\n";
        assert_eq!(
            check_submission(
                &sub(raw, "m@pec.example.it", &rcpt, &owned),
                &Limits::default()
            ),
            Ok(())
        );
    }

    #[test]
    fn each_failure() {
        let owned = v(&["m@pec.example.it"]);
        let rcpt = v(&["a@pec.example.it"]);
        let lim = Limits::default();
        let check = |raw: &[u8], rp: &str, rcpt: &[String], lim: &Limits| {
            check_submission(&sub(raw, rp, rcpt, &owned), lim).unwrap_err()
        };
        assert_eq!(
            check(
                b"To: a@pec.example.it\r\n\r\nx",
                "m@pec.example.it",
                &rcpt,
                &lim
            ),
            vec![FormalError::FromMissing]
        );
        assert_eq!(
            check(
                b"From: m@pec.example.it, z@pec.example.it\r\nTo: a@pec.example.it\r\n\r\nx",
                "m@pec.example.it",
                &rcpt,
                &lim
            ),
            vec![FormalError::FromMultiple(2)]
        );
        assert_eq!(
            check(
                b"From: m@pec.example.it\r\n\r\nx",
                "m@pec.example.it",
                &[],
                &lim
            ),
            vec![FormalError::ToMissing, FormalError::NoEnvelopeRecipients]
        );
        assert_eq!(
            check(OK, "other@pec.example.it", &rcpt, &lim),
            vec![FormalError::ReversePathMismatch {
                reverse_path: "other@pec.example.it".into(),
                from: "m@pec.example.it".into()
            }]
        );
        assert_eq!(
            check(OK, "m@pec.example.it", &v(&["hidden@x.it"]), &lim),
            vec![FormalError::RecipientNotInHeaders("hidden@x.it".into())]
        );
        assert_eq!(
            check(
                b"From: m@pec.example.it\r\nTo: a@pec.example.it\r\nBcc: h@x.it\r\n\r\nx",
                "m@pec.example.it",
                &rcpt,
                &lim
            ),
            vec![FormalError::BccNotEmpty]
        );
        assert!(
            check_submission(
                &sub(
                    b"From: m@pec.example.it\r\nTo: a@pec.example.it\r\nBcc:\r\n\r\nx",
                    "m@pec.example.it",
                    &rcpt,
                    &owned
                ),
                &lim
            )
            .is_ok()
        );
        let small = Limits {
            max_total_bytes: 100,
        };
        let two = v(&["a@pec.example.it", "b@example.com"]);
        assert!(matches!(
            check(OK, "m@pec.example.it", &two, &small).as_slice(),
            [FormalError::TooLarge {
                recipients: 2,
                limit: 100,
                ..
            }]
        ));
        assert_eq!(
            check_submission(
                &sub(OK, "m@pec.example.it", &rcpt, &v(&["x@pec.example.it"])),
                &lim
            )
            .unwrap_err(),
            vec![FormalError::NotOwner("m@pec.example.it".into())]
        );
        assert_eq!(
            check(
                b"From: m@pec.example.it\r\nTo: a@pec.example.it, bad@@x\r\n\r\nx",
                "m@pec.example.it",
                &rcpt,
                &lim
            )[0],
            FormalError::RecipientInvalid("bad@@x".into())
        );
        let reason = refusal_reason(&[FormalError::BccNotEmpty, FormalError::ToMissing]);
        assert!(reason.contains("Bcc") && reason.contains("; "));
    }

    #[test]
    fn refusal_data() {
        let rcpt = v(&["a@pec.example.it"]);
        let s = sub(
            b"From: m@pec.example.it\r\nSubject: s\r\n\r\nx",
            "m@pec.example.it",
            &rcpt,
            &[],
        );
        let c = certified_for_refusal(&s, "1.t@pec.example.it", &|_| TipoDestinatario::Certificato);
        assert_eq!(c.mittente, "m@pec.example.it");
        assert_eq!(c.destinatari[0].indirizzo, "a@pec.example.it");
        assert_eq!(c.oggetto.as_deref(), Some("s"));
        assert_eq!(c.msgid, None);
    }
}
