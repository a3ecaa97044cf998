//! The access point's formal checks (RFC 6109 §3.1.1, plus ownership of the sender address),
//! as pure functions over the submitted bytes and the SMTP envelope.
//!
//! Each failure is a [`FormalError`] whose `Display` is the Italian human reason written into
//! the avviso di non accettazione ([`refusal_reason`] joins several).

use mail_parser::HeaderName;

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
}

/// Run every formal check; `Ok(())` when the message may be accepted, else every failure in a
/// fixed order (parse, From, To/Cc, reverse-path, envelope recipients, Bcc, size, ownership).
pub fn check_submission(s: &Submission<'_>, limits: &Limits) -> Result<(), Vec<FormalError>> {
    let mut errors = Vec::new();
    let size = s.raw.len() as u64;
    let n = s.recipients.len() as u64;
    let too_large = size.saturating_mul(n.max(1)) > limits.max_total_bytes;

    let Some(m) = crate::mime::parse(s.raw) else {
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

    // The authenticated user owns the From address.
    if let Some(f) = &from_addr
        && !s.owned_addresses.iter().any(|o| same_address(o, f))
    {
        errors.push(FormalError::NotOwner(f.clone()));
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
