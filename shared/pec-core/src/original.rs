//! The user's original message: what the access point certifies about it ([`Certified`]), how
//! it is rewritten into `postacert.eml` ([`accept`]), and the `breve` form ([`breve`]).

use std::borrow::Cow;

use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;
use mail_parser::{Address, Encoding, HeaderName, HeaderValue, Message, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

use crate::daticert::{
    Data, Dati, Daticert, Destinatario, Errore, Intestazione, Tipo, TipoDestinatario, TipoRicevuta,
};
use crate::policy::{self, clean_text};
use crate::time::PecTime;

/// The certified data of one accepted message, shared by every receipt and notice about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Certified {
    /// The sender (the `From` address).
    pub mittente: String,
    /// `To` then `Cc` recipients, each marked certificato/esterno.
    pub destinatari: Vec<Destinatario>,
    /// `Reply-To` if present, else the sender.
    pub risposte: String,
    /// The decoded, cleaned subject (`None` when the original has no `Subject`).
    pub oggetto: Option<String>,
    /// The PEC identifier.
    pub identificativo: String,
    /// The user's original `Message-ID`, angle brackets included.
    pub msgid: Option<String>,
    /// The requested delivery receipt form.
    pub ricevuta: TipoRicevuta,
}

impl Certified {
    /// The certified data as another provider's daticert states it (for receipts emitted on
    /// the receiving side: presa in carico, consegna, mancata consegna, rilevazione virus).
    pub fn from_daticert(d: &Daticert) -> Self {
        Certified {
            mittente: d.intestazione.mittente.clone(),
            destinatari: d.intestazione.destinatari.clone(),
            risposte: d.intestazione.risposte.clone(),
            oggetto: d.intestazione.oggetto.clone(),
            identificativo: d.dati.identificativo.clone(),
            msgid: d.dati.msgid.clone(),
            ricevuta: d.dati.ricevuta.clone().unwrap_or_default(),
        }
    }

    /// A daticert for an event about this message: `intestazione`, `identificativo` and
    /// `msgid` from here, the rest from the arguments (the caller adds `ricevuta`, `consegna`,
    /// `ricezione`, `errore-esteso` as the kind requires).
    pub fn daticert(&self, tipo: Tipo, errore: Errore, gestore: &str, time: &PecTime) -> Daticert {
        Daticert {
            tipo,
            errore,
            intestazione: Intestazione {
                mittente: self.mittente.clone(),
                destinatari: self.destinatari.clone(),
                risposte: self.risposte.clone(),
                oggetto: self.oggetto.clone(),
            },
            dati: Dati {
                gestore_emittente: gestore.to_string(),
                data: Data::from_time(time),
                identificativo: self.identificativo.clone(),
                msgid: self.msgid.clone(),
                ricevuta: None,
                consegna: None,
                ricezione: Vec::new(),
                errore_esteso: None,
            },
        }
    }
}

/// What the access point produced for an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The certified data.
    pub certified: Certified,
    /// The original as it goes into `postacert.eml`: CRLF line ends, `Message-ID` replaced by
    /// the identificativo, the user's id in `X-Riferimento-Message-ID`; otherwise byte for byte.
    pub postacert: Vec<u8>,
}

/// Why a submitted message could not be turned into an [`Accepted`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginalError {
    /// No header could be read.
    #[error("the message cannot be parsed as RFC 5322")]
    Unparseable,
    /// No usable `From` address (the formal checks should have refused it).
    #[error("the message has no valid From address")]
    NoFrom,
    /// No `To`/`Cc` recipient (the formal checks should have refused it).
    #[error("the message has no To or Cc recipient")]
    NoRecipients,
    /// The identificativo or the fallback Message-ID is not a valid id.
    #[error("invalid identifier {0:?}")]
    BadId(String),
}

/// Whether `recipient` is a primary (`To`) or a copy (`Cc`) recipient of the message `raw`
/// (a recipient in neither, or an unreadable message, counts as primary: the fuller receipt).
pub fn role_of(raw: &[u8], recipient: &str) -> crate::policy::RecipientRole {
    use crate::policy::RecipientRole;
    let Some(m) = crate::mime::parse(raw) else {
        return RecipientRole::Primary;
    };
    let in_to = all_addresses(&m, HeaderName::To)
        .iter()
        .any(|a| crate::addr::same_address(a, recipient));
    let in_cc = all_addresses(&m, HeaderName::Cc)
        .iter()
        .any(|a| crate::addr::same_address(a, recipient));
    if in_cc && !in_to {
        RecipientRole::Copy
    } else {
        RecipientRole::Primary
    }
}

/// Convert every bare LF (and bare CR) to CRLF: the canonical form that is signed and sent.
pub fn canonical_crlf(raw: &[u8]) -> Cow<'_, [u8]> {
    let needs = raw.iter().enumerate().any(|(i, &b)| match b {
        b'\n' => i == 0 || raw.get(i - 1) != Some(&b'\r'),
        b'\r' => raw.get(i + 1) != Some(&b'\n'),
        _ => false,
    });
    if !needs {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 16);
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Every address (`local@domain`) of an address header, in order.
pub(crate) fn addresses(v: Option<&Address<'_>>) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Some(Address::List(list)) => out.extend(
            list.iter()
                .filter_map(|a| a.address.as_deref().map(str::to_string)),
        ),
        Some(Address::Group(groups)) => {
            for g in groups {
                out.extend(
                    g.addresses
                        .iter()
                        .filter_map(|a| a.address.as_deref().map(str::to_string)),
                );
            }
        }
        None => {}
    }
    out
}

/// All addresses of every occurrence of an address header.
pub(crate) fn all_addresses(m: &Message<'_>, name: HeaderName<'static>) -> Vec<String> {
    let mut out = Vec::new();
    for v in m.header_values(name) {
        if let HeaderValue::Address(a) = v {
            out.extend(addresses(Some(a)));
        }
    }
    out
}

/// The raw value of each top-level header called `name` (trimmed, without the final CRLF).
pub(crate) fn raw_values<'a>(m: &'a Message<'a>, raw: &'a [u8], name: &str) -> Vec<&'a str> {
    m.parts
        .first()
        .map(|p| {
            p.headers
                .iter()
                .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
                .filter_map(|h| raw.get(h.offset_start as usize..h.offset_end as usize))
                .filter_map(|b| std::str::from_utf8(b).ok())
                .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r' || c == '\n'))
                .collect()
        })
        .unwrap_or_default()
}

/// A `Message-ID` value safe to write: `<id>` with printable ASCII, no spaces or angle brackets.
pub(crate) fn normalise_msgid(id: &str) -> Option<String> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    if id.is_empty()
        || id.len() > 900
        || !id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
    {
        return None;
    }
    Some(format!("<{id}>"))
}

/// Build the certified data and `postacert.eml` for a submitted message that passed the formal
/// checks ([`crate::checks`]).
///
/// - `identificativo`: from [`crate::ids::identificativo`];
/// - `fallback_msgid`: the `Message-ID` (with `<>`) to give the message if it has none;
/// - `tipo_of`: certificato/esterno for a recipient address (the provider index lookup).
pub fn accept(
    raw: &[u8],
    identificativo: &str,
    fallback_msgid: &str,
    tipo_of: &dyn Fn(&str) -> TipoDestinatario,
) -> Result<Accepted, OriginalError> {
    let raw = canonical_crlf(raw);
    let raw: &[u8] = &raw;
    if !crate::addr::is_addr_spec(identificativo) {
        return Err(OriginalError::BadId(identificativo.to_string()));
    }
    let fallback = normalise_msgid(fallback_msgid)
        .ok_or_else(|| OriginalError::BadId(fallback_msgid.to_string()))?;
    let m = crate::mime::parse(raw).ok_or(OriginalError::Unparseable)?;
    let mittente = addresses(m.from())
        .into_iter()
        .next()
        .ok_or(OriginalError::NoFrom)?;
    let mut destinatari: Vec<Destinatario> = Vec::new();
    for a in all_addresses(&m, HeaderName::To)
        .into_iter()
        .chain(all_addresses(&m, HeaderName::Cc))
    {
        if !destinatari
            .iter()
            .any(|d| crate::addr::same_address(&d.indirizzo, &a))
        {
            destinatari.push(Destinatario {
                tipo: tipo_of(&a),
                indirizzo: a,
            });
        }
    }
    if destinatari.is_empty() {
        return Err(OriginalError::NoRecipients);
    }
    let risposte = addresses(m.reply_to())
        .into_iter()
        .next()
        .unwrap_or_else(|| mittente.clone());
    let oggetto = m
        .header(HeaderName::Subject)
        .map(|_| clean_text(m.subject().unwrap_or_default()));
    let msgid = m.message_id().and_then(normalise_msgid).unwrap_or(fallback);
    let ricevuta = raw_values(&m, raw, policy::header::X_TIPO_RICEVUTA)
        .first()
        .map(|v| match TipoRicevuta::parse(v) {
            TipoRicevuta::Other(_) => TipoRicevuta::Completa,
            t => t,
        })
        .unwrap_or_default();

    // Rewrite the header block: drop Message-ID and any user-supplied X-Riferimento-Message-ID,
    // append ours at the end of the block. Everything else stays byte for byte.
    let root = m.parts.first().ok_or(OriginalError::Unparseable)?;
    let mut cuts: Vec<(usize, usize)> = root
        .headers
        .iter()
        .filter(|h| {
            matches!(h.name, HeaderName::MessageId)
                || h.name
                    .as_str()
                    .eq_ignore_ascii_case(policy::header::X_RIFERIMENTO_MESSAGE_ID)
        })
        .map(|h| (h.offset_field as usize, h.offset_end as usize))
        .collect();
    cuts.sort_unstable();
    let insert_at = root
        .headers
        .iter()
        .map(|h| h.offset_end as usize)
        .max()
        .unwrap_or(0)
        .min(raw.len());
    let mut postacert = Vec::with_capacity(raw.len() + 200);
    let mut pos = 0;
    for (a, b) in cuts {
        if a >= pos && b <= insert_at {
            postacert.extend_from_slice(raw.get(pos..a).unwrap_or_default());
            pos = b;
        }
    }
    postacert.extend_from_slice(raw.get(pos..insert_at).unwrap_or_default());
    if !postacert.is_empty() && !postacert.ends_with(b"\r\n") {
        postacert.extend_from_slice(b"\r\n");
    }
    postacert.extend_from_slice(format!("Message-ID: <{identificativo}>\r\n").as_bytes());
    postacert.extend_from_slice(
        format!("{}: {msgid}\r\n", policy::header::X_RIFERIMENTO_MESSAGE_ID).as_bytes(),
    );
    let rest = raw.get(insert_at..).unwrap_or_default();
    if rest.is_empty() {
        postacert.extend_from_slice(b"\r\n");
    } else {
        postacert.extend_from_slice(rest);
    }

    Ok(Accepted {
        certified: Certified {
            mittente,
            destinatari,
            risposte,
            oggetto,
            identificativo: identificativo.to_string(),
            msgid: Some(msgid),
            ricevuta,
        },
        postacert,
    })
}

/// The `Content-Transfer-Encoding` under which `content` can travel verbatim as a
/// `message/rfc822` part: `7bit` (ASCII, lines ≤ 998), `8bit` (no NUL, lines ≤ 998) or `binary`.
pub fn rfc822_transfer_encoding(content: &[u8]) -> &'static str {
    let mut ascii = true;
    let mut line = 0usize;
    for &b in content {
        match b {
            b'\n' => line = 0,
            b'\r' => {}
            0 => return "binary",
            _ => {
                line += 1;
                if line > 998 {
                    return "binary";
                }
                if b >= 0x80 {
                    ascii = false;
                }
            }
        }
    }
    if ascii { "7bit" } else { "8bit" }
}

/// The `breve` form of `postacert`: every attachment (each leaf part that is not a text body,
/// and every attached message) is replaced by a `text/plain` part `<name>.sha256` whose body is
/// the `sha256sum` line `<hex>  <name>` of the attachment's transfer-decoded octets. Everything
/// else stays byte for byte. See [`crate::policy`] for why.
pub fn breve(postacert: &[u8]) -> Vec<u8> {
    let Some(m) = crate::mime::parse(postacert) else {
        return postacert.to_vec();
    };
    let mut replacements: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for &id in &m.attachments {
        let Some(part) = m.parts.get(id as usize) else {
            continue;
        };
        if matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let (hs, bs, be) = (
            part.offset_header as usize,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        let Some(body) = postacert.get(bs..be) else {
            continue;
        };
        let octets: Cow<'_, [u8]> = match part.encoding {
            Encoding::Base64 => mail_parser::decoders::base64::base64_decode(body)
                .map(Cow::Owned)
                .unwrap_or(Cow::Borrowed(body)),
            Encoding::QuotedPrintable => {
                mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
                    .map(Cow::Owned)
                    .unwrap_or(Cow::Borrowed(body))
            }
            Encoding::None => Cow::Borrowed(body),
        };
        let hex: String = Sha256::digest(&octets)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = part
            .attachment_name()
            .map(clean_text)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| policy::BREVE_UNNAMED.to_string());
        let hash_name = format!("{name}{}", policy::BREVE_HASH_SUFFIX);
        let mut bytes = Vec::with_capacity(256);
        let _ = MimePart::new(
            ContentType::new("text/plain")
                .attribute("charset", "utf-8")
                .attribute("name", hash_name.clone()),
            format!("{hex}  {name}"),
        )
        .attachment(hash_name)
        .write_part(&mut bytes);
        if id == 0 {
            // The whole message is one attachment: keep the non-Content header lines.
            let mut head = Vec::new();
            let mut pos = hs;
            for h in &part.headers {
                if h.name.as_str().to_ascii_lowercase().starts_with("content-") {
                    head.extend_from_slice(
                        postacert
                            .get(pos..h.offset_field as usize)
                            .unwrap_or_default(),
                    );
                    pos = h.offset_end as usize;
                }
            }
            let header_end = part
                .headers
                .iter()
                .map(|h| h.offset_end as usize)
                .max()
                .unwrap_or(hs);
            head.extend_from_slice(postacert.get(pos..header_end).unwrap_or_default());
            head.extend_from_slice(&bytes);
            replacements.push((hs, be.max(postacert.len()), head));
        } else {
            replacements.push((hs, be, bytes));
        }
    }
    replacements.sort_by_key(|r| r.0);
    let mut out = Vec::with_capacity(postacert.len());
    let mut pos = 0;
    for (a, b, bytes) in replacements {
        if a < pos || b < a {
            continue; // overlapping: cannot happen for leaf parts; stay safe
        }
        out.extend_from_slice(postacert.get(pos..a).unwrap_or_default());
        out.extend_from_slice(&bytes);
        pos = b;
    }
    out.extend_from_slice(postacert.get(pos..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tipo(a: &str) -> TipoDestinatario {
        if a.ends_with("@pec.example.it") {
            TipoDestinatario::Certificato
        } else {
            TipoDestinatario::Esterno
        }
    }

    #[test]
    fn crlf() {
        assert_eq!(&*canonical_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert!(matches!(canonical_crlf(b"a\r\nb"), Cow::Borrowed(_)));
        assert_eq!(&*canonical_crlf(b"\n"), b"\r\n");
    }

    #[test]
    fn accept_rewrites_message_id() {
        let raw = b"Received: from mua by pec\nFrom: Mario <mario@pec.example.it>\nTo: a@pec.example.it, b@example.com\nCc: a@pec.example.it, c@pec.example.it\nSubject: =?utf-8?q?Prova_=0D=0A_perch=C3=A9?=\nMessage-ID: <abc@mua>\nX-Riferimento-Message-ID: <forged@x>\nX-TipoRicevuta: breve\n\nbody\n";
        let a = accept(
            raw,
            "20260101000000000.t1@pec.example.it",
            "<fb@pec.example.it>",
            &tipo,
        )
        .unwrap();
        let c = &a.certified;
        assert_eq!(c.mittente, "mario@pec.example.it");
        assert_eq!(c.destinatari.len(), 3);
        assert_eq!(c.destinatari[1].tipo, TipoDestinatario::Esterno);
        assert_eq!(c.risposte, "mario@pec.example.it");
        assert_eq!(c.oggetto.as_deref(), Some("Prova    perché"));
        assert_eq!(c.msgid.as_deref(), Some("<abc@mua>"));
        assert_eq!(c.ricevuta, TipoRicevuta::Breve);
        let expected = "Received: from mua by pec\r\nFrom: Mario <mario@pec.example.it>\r\nTo: a@pec.example.it, b@example.com\r\nCc: a@pec.example.it, c@pec.example.it\r\nSubject: =?utf-8?q?Prova_=0D=0A_perch=C3=A9?=\r\nX-TipoRicevuta: breve\r\nMessage-ID: <20260101000000000.t1@pec.example.it>\r\nX-Riferimento-Message-ID: <abc@mua>\r\n\r\nbody\r\n";
        assert_eq!(String::from_utf8(a.postacert).unwrap(), expected);
    }

    #[test]
    fn accept_without_message_id() {
        let raw = b"From: m@pec.example.it\r\nTo: a@pec.example.it\r\n\r\nx";
        let a = accept(raw, "1.t@pec.example.it", "<fb.1@pec.example.it>", &tipo).unwrap();
        assert_eq!(a.certified.msgid.as_deref(), Some("<fb.1@pec.example.it>"));
        assert_eq!(a.certified.oggetto, None);
        assert!(
            a.postacert
                .ends_with(b"X-Riferimento-Message-ID: <fb.1@pec.example.it>\r\n\r\nx")
        );
        // Headers only, no body at all.
        let a = accept(
            b"From: m@pec.example.it\r\nTo: a@pec.example.it\r\n",
            "1.t@pec.example.it",
            "<f@x.it>",
            &tipo,
        )
        .unwrap();
        assert!(
            a.postacert
                .ends_with(b"X-Riferimento-Message-ID: <f@x.it>\r\n\r\n")
        );
        assert_eq!(
            accept(b"To: a@b.it\r\n\r\n", "1.t@x.it", "<f@x.it>", &tipo),
            Err(OriginalError::NoFrom)
        );
    }

    #[test]
    fn breve_of_a_single_part_attachment_message() {
        let raw = b"From: a@b.it\r\nTo: c@d.it\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n";
        let b = breve(raw);
        let s = String::from_utf8(b.clone()).unwrap();
        assert!(s.starts_with("From: a@b.it\r\nTo: c@d.it\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain"), "{s}");
        assert!(!s.contains("aGVsbG8="));
        let m = crate::mime::parse(&b).unwrap();
        assert_eq!(m.subject(), Some("s"));
        let att = m.attachments().next().expect("the hash part");
        assert_eq!(att.attachment_name(), Some("a.pdf.sha256"));
        assert_eq!(
            att.text_contents(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824  a.pdf")
        );
    }

    #[test]
    fn breve_replaces_attachments() {
        let raw = b"From: a@b.it\r\nTo: c@d.it\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nciao\r\n--XX\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--XX--\r\n";
        let b = breve(raw);
        let s = String::from_utf8(b.clone()).unwrap();
        // sha256("hello")
        assert!(
            s.contains("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824  a.pdf"),
            "{s}"
        );
        assert!(s.contains("filename=\"a.pdf.sha256\""));
        assert!(s.starts_with("From: a@b.it\r\nTo: c@d.it\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nciao\r\n--XX\r\n"));
        assert!(s.ends_with("\r\n--XX--\r\n"));
        let m = crate::mime::parse(&b).unwrap();
        assert_eq!(m.body_text(0).as_deref(), Some("ciao"));
        assert_eq!(m.attachments().count(), 1);
        assert_eq!(rfc822_transfer_encoding(raw), "7bit");
        assert_eq!(rfc822_transfer_encoding("è".as_bytes()), "8bit");
        assert_eq!(rfc822_transfer_encoding(b"\0"), "binary");
    }
}
