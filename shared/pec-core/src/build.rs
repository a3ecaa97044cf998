//! Builders for every message a PEC provider emits. Each returns an [`UnsignedMessage`]: the
//! top-level headers and the `multipart/mixed` entity that the signer wraps in
//! `multipart/signed`.
//!
//! Determinism: a builder reads no clock and no randomness. The instant is [`Ctx::now`]; every
//! fresh `Message-ID` and MIME boundary comes from [`Ctx::ids`], consumed in a fixed order
//! (Message-ID token first when the message needs a fresh one, then the `multipart/mixed`
//! boundary, then the `multipart/alternative` boundary). Same inputs, same bytes.
//!
//! Entity layout (as the real providers):
//!
//! ```text
//! multipart/mixed
//! ├── multipart/alternative
//! │   ├── text/plain; charset=utf-8 (quoted-printable)
//! │   └── text/html; charset=utf-8 (quoted-printable)
//! ├── application/xml; name="daticert.xml" (base64, inline)       all but the anomaly envelope
//! └── message/rfc822; name="postacert.eml" (7bit/8bit/binary)     envelopes, completa/breve receipts
//! ```

use chrono::{DateTime, Utc};
use mail_builder::encoders::quoted_printable::quoted_printable_encode;
use mail_builder::headers::Header;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use mail_parser::HeaderName;

use crate::addr::is_addr_spec;
use crate::daticert::{DaticertError, Errore, Tipo, TipoRicevuta};
use crate::ids::{self, IdError, IdSource};
use crate::message::UnsignedMessage;
use crate::original::{self, Accepted, Certified, canonical_crlf, normalise_msgid, raw_values};
use crate::policy::{
    self, DeliveryFailure, RecipientRole, TimeoutNotice, clean_text, header, subject,
};
use crate::text::{self, Facts, Notice};
use crate::time::PecTime;

/// The provider that emits the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// `gestore-emittente`, e.g. `Example PEC S.p.A.`.
    pub name: String,
    /// The PEC mail domain of the provider: receipts come from `posta-certificata@<domain>`
    /// and identificativi end in `@<domain>`.
    pub domain: String,
}

impl Provider {
    /// A provider; the domain must be a plausible DNS name and the name printable text.
    pub fn new(name: &str, domain: &str) -> Result<Self, BuildError> {
        if !ids::is_domain(domain) {
            return Err(BuildError::Id(IdError::BadDomain(domain.to_string())));
        }
        let clean = clean_text(name);
        if clean.is_empty() || clean != name {
            return Err(BuildError::InvalidText {
                field: "provider name",
            });
        }
        Ok(Provider {
            name: name.to_string(),
            domain: domain.to_ascii_lowercase(),
        })
    }

    /// `posta-certificata@<domain>`.
    pub fn address(&self) -> String {
        format!("{}@{}", policy::POSTA_CERTIFICATA_LOCAL, self.domain)
    }
}

/// Everything a builder needs besides the message data: who emits, when, and where fresh ids
/// come from.
pub struct Ctx<'a> {
    /// The emitting provider.
    pub provider: &'a Provider,
    /// The provider's time reference for this event.
    pub now: DateTime<Utc>,
    /// Fresh tokens for Message-IDs and MIME boundaries.
    pub ids: &'a mut dyn IdSource,
}

/// Why a message could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// An address that would go into a header is not a plain ASCII `local@domain`.
    #[error("invalid address for {field}: {value:?}")]
    InvalidAddress {
        /// Which field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// Text that must be printable has control characters or is empty.
    #[error("invalid text for {field}")]
    InvalidText {
        /// Which field.
        field: &'static str,
    },
    /// The daticert cannot be emitted.
    #[error(transparent)]
    Daticert(#[from] DaticertError),
    /// An identifier could not be made.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The message to embed could not be read.
    #[error(transparent)]
    Original(#[from] original::OriginalError),
}

/// Why the access point refuses a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonAcceptance {
    /// Formal checks failed: the human reason (see [`crate::checks::refusal_reason`]).
    Formal(String),
    /// A virus was found: its name or description.
    Virus(String),
}

// ---------------------------------------------------------------------------------------------
// Header helpers
// ---------------------------------------------------------------------------------------------

fn strip_crlf(mut v: Vec<u8>) -> String {
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    // mail-builder only writes ASCII in headers.
    String::from_utf8(v).unwrap_or_default()
}

fn checked_addr(field: &'static str, value: &str) -> Result<String, BuildError> {
    if is_addr_spec(value) {
        Ok(value.to_string())
    } else {
        Err(BuildError::InvalidAddress {
            field,
            value: value.to_string(),
        })
    }
}

fn per_conto_di(name: &str, provider: &Provider) -> (String, String) {
    let mut buf = Vec::new();
    let _ = Address::new_address(Some(format!("Per conto di: {name}")), provider.address())
        .write_header(&mut buf, "From: ".len());
    ("From".to_string(), strip_crlf(buf))
}

/// Raw header values inherited from a message (CRLF-canonical, folded as they were).
/// The values of a header the envelope repeats, as they are. A value that cannot travel in a
/// signed envelope (8-bit text, broken folding, an overlong line: see
/// `checks::transport_problem`) is left out: the access point refuses such submissions, so this
/// only happens in anomaly envelopes of mail from outside, whose original is attached whole.
fn inherited(m: &mail_parser::Message<'_>, raw: &[u8], name: &str) -> Vec<String> {
    raw_values(m, raw, name)
        .into_iter()
        .filter(|v| !v.is_empty())
        .filter(|v| crate::checks::transport_problem(name, v.as_bytes()).is_none())
        .map(str::to_string)
        .collect()
}

/// `Subject: <prefix><original subject>`: the fixed ASCII prefix stays literal (so that simple
/// readers see it) and only the original subject is RFC 2047-encoded when it needs to be.
fn subject_header(prefix: &str, oggetto: Option<&str>) -> (String, String) {
    let oggetto = clean_text(oggetto.unwrap_or_default());
    if oggetto.is_empty() {
        return ("Subject".to_string(), prefix.trim_end().to_string());
    }
    let mut buf = prefix.as_bytes().to_vec();
    let _ = Text::new(oggetto).write_header(&mut buf, "Subject: ".len() + prefix.len());
    ("Subject".to_string(), strip_crlf(buf))
}

// ---------------------------------------------------------------------------------------------
// Entity assembly
// ---------------------------------------------------------------------------------------------

fn qp(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    let _ = quoted_printable_encode(text.as_bytes(), &mut out, true);
    // QP output is ASCII.
    String::from_utf8(out).unwrap_or_default()
}

fn text_part(ctype: &'static str, body: String) -> MimePart<'static> {
    MimePart::new(
        ContentType::new(ctype).attribute("charset", "utf-8"),
        BodyPart::Text(body.into()),
    )
    .header("Content-Disposition", ContentType::new("inline"))
    .transfer_encoding("quoted-printable")
}

fn entity(
    ids: &mut dyn IdSource,
    notice: &Notice,
    daticert: Option<Vec<u8>>,
    postacert: Option<&[u8]>,
) -> Result<Vec<u8>, BuildError> {
    let avoid: Vec<&[u8]> = postacert.into_iter().collect();
    let mixed = ids::fresh_boundary(ids, &avoid)?;
    let alternative = ids::fresh_boundary(ids, &avoid)?;
    let mut parts = vec![MimePart::new(
        ContentType::new("multipart/alternative").attribute("boundary", alternative),
        vec![
            text_part("text/plain", qp(&notice.plain())),
            text_part("text/html", qp(&notice.html())),
        ],
    )];
    if let Some(xml) = daticert {
        parts.push(
            MimePart::new(
                ContentType::new("application/xml").attribute("name", "daticert.xml"),
                BodyPart::Binary(xml.into()),
            )
            .header(
                "Content-Disposition",
                ContentType::new("inline").attribute("filename", "daticert.xml"),
            ),
        );
    }
    if let Some(eml) = postacert {
        parts.push(
            MimePart::new(
                ContentType::new("message/rfc822").attribute("name", "postacert.eml"),
                BodyPart::Binary(eml.into()),
            )
            .header(
                "Content-Disposition",
                ContentType::new("inline").attribute("filename", "postacert.eml"),
            )
            .transfer_encoding(original::rfc822_transfer_encoding(eml)),
        );
    }
    let root = MimePart::new(
        ContentType::new("multipart/mixed").attribute("boundary", mixed),
        parts,
    );
    let mut out = Vec::with_capacity(postacert.map_or(0, <[u8]>::len) + 8192);
    let _ = root.write_part(&mut out);
    Ok(out)
}

fn facts<'a>(c: &'a Certified, time: &'a PecTime) -> Facts<'a> {
    Facts {
        time,
        oggetto: c.oggetto.as_deref().unwrap_or_default(),
        mittente: &c.mittente,
        destinatari: &c.destinatari,
        identificativo: &c.identificativo,
    }
}

/// A receipt or notice: headers + entity.
struct Receipt<'a> {
    to: &'a str,
    subject: (String, String),
    x_ricevuta: &'static str,
    x_tipo_ricevuta: Option<&'a TipoRicevuta>,
    notice: Notice,
    daticert: crate::daticert::Daticert,
    postacert: Option<&'a [u8]>,
}

fn receipt(
    ctx: &mut Ctx<'_>,
    c: &Certified,
    r: Receipt<'_>,
) -> Result<UnsignedMessage, BuildError> {
    let to = checked_addr("To", r.to)?;
    let from = ctx.provider.address();
    let time = PecTime::new(ctx.now);
    let token = ctx.ids.next_token();
    let message_id = ids::message_id(ctx.now, &token, &ctx.provider.domain)?;
    let xml = r.daticert.to_xml()?;
    let entity = entity(ctx.ids, &r.notice, Some(xml), r.postacert)?;
    let mut headers = vec![
        ("Date".to_string(), time.rfc5322()),
        ("From".to_string(), from),
        ("To".to_string(), to),
        r.subject,
        ("Message-ID".to_string(), message_id),
    ];
    if let Some(id) = c.msgid.as_deref().and_then(normalise_msgid) {
        headers.push((header::X_RIFERIMENTO_MESSAGE_ID.to_string(), id));
    }
    headers.push((header::X_RICEVUTA.to_string(), r.x_ricevuta.to_string()));
    if let Some(t) = r.x_tipo_ricevuta {
        headers.push((header::X_TIPO_RICEVUTA.to_string(), t.as_str().to_string()));
    }
    Ok(UnsignedMessage { headers, entity })
}

// ---------------------------------------------------------------------------------------------
// The builders
// ---------------------------------------------------------------------------------------------

/// Ricevuta di accettazione (access point → sender).
pub fn accettazione(ctx: &mut Ctx<'_>, c: &Certified) -> Result<UnsignedMessage, BuildError> {
    let time = PecTime::new(ctx.now);
    let d = c.daticert(
        Tipo::Accettazione,
        Errore::Nessuno,
        &ctx.provider.name,
        &time,
    );
    receipt(
        ctx,
        c,
        Receipt {
            to: &c.mittente,
            subject: subject_header(subject::ACCETTAZIONE, c.oggetto.as_deref()),
            x_ricevuta: "accettazione",
            x_tipo_ricevuta: None,
            notice: text::accettazione(&facts(c, &time)),
            daticert: d,
            postacert: None,
        },
    )
}

/// Avviso di non accettazione, for formal errors or a virus (access point → the submitting
/// user). `to` is the authenticated user's own mailbox: never the (possibly forged) `From`.
pub fn non_accettazione(
    ctx: &mut Ctx<'_>,
    c: &Certified,
    reason: &NonAcceptance,
    to: &str,
) -> Result<UnsignedMessage, BuildError> {
    let time = PecTime::new(ctx.now);
    let (errore, prefix, detail, virus) = match reason {
        NonAcceptance::Formal(r) => (
            policy::FORMAL_ERRORE,
            subject::NON_ACCETTAZIONE,
            clean_text(r),
            false,
        ),
        NonAcceptance::Virus(v) => (
            Errore::Virus,
            subject::NON_ACCETTAZIONE_VIRUS,
            clean_text(v),
            true,
        ),
    };
    let mut d = c.daticert(Tipo::NonAccettazione, errore, &ctx.provider.name, &time);
    d.dati.errore_esteso = Some(if virus {
        format!("virus rilevato: {detail}")
    } else {
        detail.clone()
    });
    receipt(
        ctx,
        c,
        Receipt {
            to,
            subject: subject_header(prefix, c.oggetto.as_deref()),
            x_ricevuta: "non-accettazione",
            x_tipo_ricevuta: None,
            notice: text::non_accettazione(&facts(c, &time), &detail, virus),
            daticert: d,
            postacert: None,
        },
    )
}

/// Busta di trasporto (access point → every recipient), with the original as `postacert.eml`.
///
/// Headers: the original's `Received` lines, `Date`, `From: "Per conto di: <sender>"
/// <posta-certificata@domain>`, `Reply-To` (the original's, else the sender), the original's
/// `To` and `Cc` verbatim, `Subject: POSTA CERTIFICATA: ...`, `Message-ID: <identificativo>`,
/// `X-Riferimento-Message-ID`, `X-Trasporto: posta-certificata`, `X-TipoRicevuta`. The SMTP
/// reverse-path of the envelope should be the sender (as real providers do).
pub fn busta_trasporto(ctx: &mut Ctx<'_>, a: &Accepted) -> Result<UnsignedMessage, BuildError> {
    let c = &a.certified;
    let time = PecTime::new(ctx.now);
    let mittente = checked_addr("mittente", &c.mittente)?;
    let identificativo = checked_addr("identificativo", &c.identificativo)?;
    let raw = canonical_crlf(&a.postacert);
    let m = crate::mime::parse(&raw[..]).ok_or(original::OriginalError::Unparseable)?;
    let mut d = c.daticert(
        Tipo::PostaCertificata,
        Errore::Nessuno,
        &ctx.provider.name,
        &time,
    );
    d.dati.ricevuta = Some(c.ricevuta.clone());
    let xml = d.to_xml()?;
    let entity = entity(
        ctx.ids,
        &text::busta_trasporto(&facts(c, &time)),
        Some(xml),
        Some(&raw),
    )?;

    let mut headers: Vec<(String, String)> = inherited(&m, &raw, "Received")
        .into_iter()
        .map(|v| ("Received".to_string(), v))
        .collect();
    headers.push(("Date".to_string(), time.rfc5322()));
    headers.push(per_conto_di(&mittente, ctx.provider));
    let reply_to = inherited(&m, &raw, "Reply-To");
    match reply_to.into_iter().next() {
        Some(r) => headers.push(("Reply-To".to_string(), r)),
        None => headers.push(("Reply-To".to_string(), mittente.clone())),
    }
    for name in ["To", "Cc"] {
        for v in inherited(&m, &raw, name) {
            headers.push((name.to_string(), v));
        }
    }
    headers.push(subject_header(
        subject::POSTA_CERTIFICATA,
        c.oggetto.as_deref(),
    ));
    headers.push(("Message-ID".to_string(), format!("<{identificativo}>")));
    if let Some(id) = c.msgid.as_deref().and_then(normalise_msgid) {
        headers.push((header::X_RIFERIMENTO_MESSAGE_ID.to_string(), id));
    }
    headers.push((
        header::X_TRASPORTO.to_string(),
        "posta-certificata".to_string(),
    ));
    let form = match &c.ricevuta {
        TipoRicevuta::Other(_) => TipoRicevuta::Completa,
        t => t.clone(),
    };
    headers.push((
        header::X_TIPO_RICEVUTA.to_string(),
        form.as_str().to_string(),
    ));
    Ok(UnsignedMessage { headers, entity })
}

/// Ricevuta di presa in carico (recipient's provider → the sender's provider at its
/// `mailReceipt` address, `to`), listing the recipients taken in charge.
pub fn presa_in_carico(
    ctx: &mut Ctx<'_>,
    c: &Certified,
    ricezione: &[String],
    to: &str,
) -> Result<UnsignedMessage, BuildError> {
    let time = PecTime::new(ctx.now);
    let mut d = c.daticert(
        Tipo::PresaInCarico,
        Errore::Nessuno,
        &ctx.provider.name,
        &time,
    );
    d.dati.ricezione = ricezione.to_vec();
    receipt(
        ctx,
        c,
        Receipt {
            to,
            subject: subject_header(subject::PRESA_IN_CARICO, c.oggetto.as_deref()),
            x_ricevuta: "presa-in-carico",
            x_tipo_ricevuta: None,
            notice: text::presa_in_carico(&facts(c, &time), &ctx.provider.name, ricezione),
            daticert: d,
            postacert: None,
        },
    )
}

/// Busta di anomalia (recipient's provider → recipient's mailbox): wraps a received message
/// that is not a valid PEC object. `security_error` adds `X-VerificaSicurezza: errore` (failed
/// signature or provider check). No daticert. See [`crate::policy`] for the id choices.
pub fn busta_anomalia(
    ctx: &mut Ctx<'_>,
    received: &[u8],
    security_error: bool,
) -> Result<UnsignedMessage, BuildError> {
    let time = PecTime::new(ctx.now);
    let raw = canonical_crlf(received);
    let m = crate::mime::parse(&raw[..]).ok_or(original::OriginalError::Unparseable)?;
    let from = original::addresses(m.from())
        .into_iter()
        .find(|a| is_addr_spec(a));
    let inherited_id = m.message_id().and_then(normalise_msgid);
    let message_id = match &inherited_id {
        Some(id) => id.clone(),
        None => ids::message_id(ctx.now, &ctx.ids.next_token(), &ctx.provider.domain)?,
    };
    let oggetto = m.subject().map(clean_text);
    let to_list: Vec<String> = original::all_addresses(&m, HeaderName::To)
        .into_iter()
        .chain(original::all_addresses(&m, HeaderName::Cc))
        .map(|a| clean_text(&a))
        .collect();
    let notice = text::anomalia(
        &time,
        oggetto.as_deref().unwrap_or_default(),
        from.as_deref().unwrap_or("mittente sconosciuto"),
        &to_list,
        security_error,
    );
    let entity = entity(ctx.ids, &notice, None, Some(&raw))?;

    let mut headers: Vec<(String, String)> = inherited(&m, &raw, "Received")
        .into_iter()
        .map(|v| ("Received".to_string(), v))
        .collect();
    headers.push(("Date".to_string(), time.rfc5322()));
    headers.push(per_conto_di(
        from.as_deref().unwrap_or("mittente sconosciuto"),
        ctx.provider,
    ));
    match (inherited(&m, &raw, "Reply-To").into_iter().next(), &from) {
        (Some(r), _) => headers.push(("Reply-To".to_string(), r)),
        (None, Some(f)) => headers.push(("Reply-To".to_string(), f.clone())),
        (None, None) => {}
    }
    for name in ["To", "Cc"] {
        for v in inherited(&m, &raw, name) {
            headers.push((name.to_string(), v));
        }
    }
    headers.push(subject_header(subject::ANOMALIA, oggetto.as_deref()));
    headers.push(("Message-ID".to_string(), message_id));
    if let Some(id) = inherited_id {
        headers.push((header::X_RIFERIMENTO_MESSAGE_ID.to_string(), id));
    }
    headers.push((header::X_TRASPORTO.to_string(), "errore".to_string()));
    if security_error {
        headers.push((
            header::X_VERIFICA_SICUREZZA.to_string(),
            "errore".to_string(),
        ));
    }
    Ok(UnsignedMessage { headers, entity })
}

/// Avviso di rilevazione virus (recipient's provider → the sender's provider at its
/// `mailReceipt` address, `to`): `affected` recipients will not get the message.
pub fn rilevazione_virus(
    ctx: &mut Ctx<'_>,
    c: &Certified,
    affected: &[String],
    virus: &str,
    to: &str,
) -> Result<UnsignedMessage, BuildError> {
    let time = PecTime::new(ctx.now);
    let virus = clean_text(virus);
    let mut d = c.daticert(
        Tipo::RilevazioneVirus,
        Errore::Virus,
        &ctx.provider.name,
        &time,
    );
    d.dati.ricezione = affected.to_vec();
    d.dati.errore_esteso = Some(format!("virus rilevato: {virus}"));
    receipt(
        ctx,
        c,
        Receipt {
            to,
            subject: subject_header(subject::RILEVAZIONE_VIRUS, c.oggetto.as_deref()),
            x_ricevuta: "rilevazione-virus",
            x_tipo_ricevuta: None,
            notice: text::rilevazione_virus(&facts(c, &time), &ctx.provider.name, &virus, affected),
            daticert: d,
            postacert: None,
        },
    )
}

/// Ricevuta di avvenuta consegna for one recipient (recipient's provider → sender).
///
/// The form is [`policy::effective_receipt_form`] of the requested one and the recipient's
/// role: `completa` embeds `postacert` as received, `breve` embeds [`original::breve`] of it,
/// `sintetica` embeds nothing.
pub fn avvenuta_consegna(
    ctx: &mut Ctx<'_>,
    c: &Certified,
    consegna: &str,
    role: RecipientRole,
    postacert: &[u8],
) -> Result<UnsignedMessage, BuildError> {
    let time = PecTime::new(ctx.now);
    let form = policy::effective_receipt_form(&c.ricevuta, role);
    let mut d = c.daticert(
        Tipo::AvvenutaConsegna,
        Errore::Nessuno,
        &ctx.provider.name,
        &time,
    );
    d.dati.ricevuta = Some(form.clone());
    d.dati.consegna = Some(consegna.to_string());
    let canonical = canonical_crlf(postacert);
    let embedded: Option<Vec<u8>> = match form {
        TipoRicevuta::Completa => Some(canonical.into_owned()),
        TipoRicevuta::Breve => Some(original::breve(&canonical)),
        _ => None,
    };
    receipt(
        ctx,
        c,
        Receipt {
            to: &c.mittente,
            subject: subject_header(subject::CONSEGNA, c.oggetto.as_deref()),
            x_ricevuta: "avvenuta-consegna",
            x_tipo_ricevuta: Some(&form),
            notice: text::avvenuta_consegna(&facts(c, &time), consegna, &form),
            daticert: d,
            postacert: embedded.as_deref(),
        },
    )
}

/// Avviso di mancata consegna for one recipient (recipient's provider → sender), with the
/// NOTA 12-style `errore-esteso`.
pub fn mancata_consegna(
    ctx: &mut Ctx<'_>,
    c: &Certified,
    consegna: &str,
    failure: &DeliveryFailure,
) -> Result<UnsignedMessage, BuildError> {
    let time = PecTime::new(ctx.now);
    let (_, _, errore) = failure.parts();
    let esteso = clean_text(&failure.errore_esteso(&ctx.provider.name));
    let mut d = c.daticert(Tipo::ErroreConsegna, errore, &ctx.provider.name, &time);
    d.dati.consegna = Some(consegna.to_string());
    d.dati.errore_esteso = Some(esteso.clone());
    receipt(
        ctx,
        c,
        Receipt {
            to: &c.mittente,
            subject: subject_header(subject::MANCATA_CONSEGNA, c.oggetto.as_deref()),
            x_ricevuta: "errore-consegna",
            x_tipo_ricevuta: None,
            notice: text::mancata_consegna(&facts(c, &time), consegna, &esteso, false),
            daticert: d,
            postacert: None,
        },
    )
}

/// Avviso di mancata consegna per virus for one recipient (recipient's provider → sender).
pub fn mancata_consegna_virus(
    ctx: &mut Ctx<'_>,
    c: &Certified,
    consegna: &str,
    virus: &str,
) -> Result<UnsignedMessage, BuildError> {
    let time = PecTime::new(ctx.now);
    let esteso = format!("virus rilevato: {}", clean_text(virus));
    let mut d = c.daticert(
        Tipo::ErroreConsegna,
        Errore::Virus,
        &ctx.provider.name,
        &time,
    );
    d.dati.consegna = Some(consegna.to_string());
    d.dati.errore_esteso = Some(esteso.clone());
    receipt(
        ctx,
        c,
        Receipt {
            to: &c.mittente,
            subject: subject_header(subject::MANCATA_CONSEGNA_VIRUS, c.oggetto.as_deref()),
            x_ricevuta: "errore-consegna",
            x_tipo_ricevuta: None,
            notice: text::mancata_consegna(&facts(c, &time), consegna, &esteso, true),
            daticert: d,
            postacert: None,
        },
    )
}

/// Avviso di mancata consegna per superamento dei tempi massimi, 12 h (warning) or 24 h
/// (final), for one recipient (sender's provider → sender).
pub fn mancata_consegna_tempo(
    ctx: &mut Ctx<'_>,
    c: &Certified,
    consegna: &str,
    which: TimeoutNotice,
) -> Result<UnsignedMessage, BuildError> {
    let time = PecTime::new(ctx.now);
    let esteso = clean_text(&which.errore_esteso(&ctx.provider.name));
    let mut d = c.daticert(
        Tipo::PreavvisoErroreConsegna,
        Errore::Altro,
        &ctx.provider.name,
        &time,
    );
    d.dati.consegna = Some(consegna.to_string());
    d.dati.errore_esteso = Some(esteso.clone());
    receipt(
        ctx,
        c,
        Receipt {
            to: &c.mittente,
            subject: subject_header(subject::MANCATA_CONSEGNA_TEMPO, c.oggetto.as_deref()),
            x_ricevuta: "preavviso-errore-consegna",
            x_tipo_ricevuta: None,
            notice: text::mancata_consegna_tempo(
                &facts(c, &time),
                consegna,
                which == TimeoutNotice::Hours24,
                &esteso,
            ),
            daticert: d,
            postacert: None,
        },
    )
}
