//! The classifier: given the raw bytes of a received message, say what it is.
//!
//! Rule (the one robust clients use, confirmed by the real samples): `X-Ricevuta` present → a
//! receipt or notice of that kind; else `X-Trasporto: posta-certificata` → a transport
//! envelope; else `X-Trasporto: errore` → an anomaly envelope; else, for a `multipart/signed`
//! message carrying a daticert, the daticert `tipo` (with an anomaly for the missing header);
//! else ordinary mail.
//!
//! The daticert, the signed bytes (exactly as received) and the embedded `postacert.eml` are
//! returned with the list of [`Anomaly`]s found. Tolerated without anomaly: both signature
//! protocol spellings, any `micalg`, a missing `X-TipoRicevuta`, `errore` `no-dest` or `altro`,
//! header names in any case.
//!
//! No cryptography here: whether the signature is valid, and by whom, is decided by the
//! verifier (the signing crate) on [`SignedInfo::content`] and [`SignedInfo::signature`].
//! Never panics: malformed input yields a [`Classification`] with anomalies.

use std::borrow::Cow;
use std::fmt;

use mail_parser::{HeaderName, Message, MessagePart, MimeHeaders, PartType};

use crate::daticert::{self, Daticert, Errore, Tipo, TipoRicevuta};
use crate::original;
use crate::policy::{header, subject};
use crate::signed;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Kind {
    /// Busta di trasporto (`X-Trasporto: posta-certificata`).
    BustaTrasporto,
    /// Busta di anomalia (`X-Trasporto: errore`).
    BustaAnomalia,
    /// Ricevuta di accettazione.
    Accettazione,
    /// Avviso di non accettazione (formal or virus: see the daticert `errore`).
    NonAccettazione,
    /// Ricevuta di presa in carico.
    PresaInCarico,
    /// Ricevuta di avvenuta consegna.
    AvvenutaConsegna,
    /// Avviso di mancata consegna (also for virus: see the daticert `errore`).
    ErroreConsegna,
    /// Avviso di mancata consegna per superamento dei tempi massimi.
    PreavvisoErroreConsegna,
    /// Avviso di rilevazione virus.
    RilevazioneVirus,
    /// PEC headers with a value this crate does not know.
    PecSconosciuto,
    /// Not a PEC message.
    Ordinaria,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 11] = [
        Kind::BustaTrasporto,
        Kind::BustaAnomalia,
        Kind::Accettazione,
        Kind::NonAccettazione,
        Kind::PresaInCarico,
        Kind::AvvenutaConsegna,
        Kind::ErroreConsegna,
        Kind::PreavvisoErroreConsegna,
        Kind::RilevazioneVirus,
        Kind::PecSconosciuto,
        Kind::Ordinaria,
    ];

    /// The machine name (`busta-trasporto`, `accettazione`, ..., `ordinaria`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::BustaTrasporto => "busta-trasporto",
            Kind::BustaAnomalia => "busta-anomalia",
            Kind::Accettazione => "accettazione",
            Kind::NonAccettazione => "non-accettazione",
            Kind::PresaInCarico => "presa-in-carico",
            Kind::AvvenutaConsegna => "avvenuta-consegna",
            Kind::ErroreConsegna => "errore-consegna",
            Kind::PreavvisoErroreConsegna => "preavviso-errore-consegna",
            Kind::RilevazioneVirus => "rilevazione-virus",
            Kind::PecSconosciuto => "pec-sconosciuto",
            Kind::Ordinaria => "ordinaria",
        }
    }

    /// Whether this is a PEC object (anything but ordinary mail).
    pub fn is_pec(&self) -> bool {
        !matches!(self, Kind::Ordinaria)
    }

    /// The kind a provider message declares in its own headers (values trimmed and compared
    /// without case): `X-Ricevuta` for a receipt or notice, else `X-Trasporto`
    /// (`posta-certificata`, `errore`) for an envelope. `None` when both or neither are given, or
    /// the value is unknown.
    pub fn declared(x_ricevuta: Option<&str>, x_trasporto: Option<&str>) -> Option<Kind> {
        match (x_ricevuta, x_trasporto) {
            (Some(r), None) => Kind::from_x_ricevuta(&r.trim().to_ascii_lowercase()),
            (None, Some(t)) => match t.trim().to_ascii_lowercase().as_str() {
                "posta-certificata" => Some(Kind::BustaTrasporto),
                "errore" => Some(Kind::BustaAnomalia),
                _ => None,
            },
            _ => None,
        }
    }

    fn from_x_ricevuta(v: &str) -> Option<Kind> {
        Some(match v {
            "accettazione" => Kind::Accettazione,
            "non-accettazione" => Kind::NonAccettazione,
            "presa-in-carico" => Kind::PresaInCarico,
            "avvenuta-consegna" => Kind::AvvenutaConsegna,
            "errore-consegna" => Kind::ErroreConsegna,
            "preavviso-errore-consegna" => Kind::PreavvisoErroreConsegna,
            "rilevazione-virus" => Kind::RilevazioneVirus,
            _ => return None,
        })
    }

    fn from_tipo(t: &Tipo) -> Option<Kind> {
        Some(match t {
            Tipo::Accettazione => Kind::Accettazione,
            Tipo::NonAccettazione => Kind::NonAccettazione,
            Tipo::PresaInCarico => Kind::PresaInCarico,
            Tipo::AvvenutaConsegna => Kind::AvvenutaConsegna,
            Tipo::PostaCertificata => Kind::BustaTrasporto,
            Tipo::ErroreConsegna => Kind::ErroreConsegna,
            Tipo::PreavvisoErroreConsegna => Kind::PreavvisoErroreConsegna,
            Tipo::RilevazioneVirus => Kind::RilevazioneVirus,
            Tipo::Other(_) => return None,
        })
    }

    /// The daticert `tipo` this kind must carry.
    fn tipo(&self) -> Option<Tipo> {
        Some(match self {
            Kind::Accettazione => Tipo::Accettazione,
            Kind::NonAccettazione => Tipo::NonAccettazione,
            Kind::PresaInCarico => Tipo::PresaInCarico,
            Kind::AvvenutaConsegna => Tipo::AvvenutaConsegna,
            Kind::BustaTrasporto => Tipo::PostaCertificata,
            Kind::ErroreConsegna => Tipo::ErroreConsegna,
            Kind::PreavvisoErroreConsegna => Tipo::PreavvisoErroreConsegna,
            Kind::RilevazioneVirus => Tipo::RilevazioneVirus,
            _ => return None,
        })
    }

    /// The subject prefixes this kind may carry.
    fn prefixes(&self) -> &'static [&'static str] {
        match self {
            Kind::BustaTrasporto => &[subject::POSTA_CERTIFICATA],
            Kind::BustaAnomalia => &[subject::ANOMALIA],
            Kind::Accettazione => &[subject::ACCETTAZIONE],
            Kind::NonAccettazione => &[subject::NON_ACCETTAZIONE, subject::NON_ACCETTAZIONE_VIRUS],
            Kind::PresaInCarico => &[subject::PRESA_IN_CARICO],
            Kind::AvvenutaConsegna => &[subject::CONSEGNA],
            Kind::ErroreConsegna => &[subject::MANCATA_CONSEGNA, subject::MANCATA_CONSEGNA_VIRUS],
            Kind::PreavvisoErroreConsegna => &[subject::MANCATA_CONSEGNA_TEMPO],
            Kind::RilevazioneVirus => &[subject::RILEVAZIONE_VIRUS],
            Kind::PecSconosciuto | Kind::Ordinaria => &[],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something wrong or unusual found while classifying.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "anomaly", rename_all = "kebab-case"))]
pub enum Anomaly {
    /// The bytes are not an RFC 5322 message.
    Unparseable,
    /// A PEC message that is not `multipart/signed`.
    NotSigned {
        /// The top-level content type.
        content_type: String,
    },
    /// The signature part is missing, truncated or undecodable.
    Signature {
        /// What is wrong.
        problem: String,
    },
    /// No `daticert.xml` where one is required.
    MissingDaticert,
    /// `daticert.xml` could not be read at all.
    DaticertUnreadable {
        /// Why.
        error: String,
    },
    /// `daticert.xml` was read with tolerance.
    Daticert {
        /// What was tolerated.
        issue: String,
    },
    /// The headers and the daticert disagree about the kind.
    TipoMismatch {
        /// What the headers say.
        header: String,
        /// What the daticert says.
        daticert: String,
    },
    /// A PEC header has a value this crate does not know.
    UnknownHeaderValue {
        /// The header.
        header: String,
        /// Its value.
        value: String,
    },
    /// A PEC header occurs more than once with different values, or both `X-Ricevuta` and
    /// `X-Trasporto` are present.
    ConflictingHeaders {
        /// Description.
        detail: String,
    },
    /// The kind requires a header that is missing.
    MissingHeader {
        /// The header.
        header: String,
    },
    /// No `postacert.eml` where the kind requires the original.
    MissingPostacert,
    /// The subject does not start with the kind's prefix.
    SubjectPrefix {
        /// The prefixes allowed for the kind.
        expected: Vec<String>,
        /// The subject found.
        found: String,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::Unparseable => write!(f, "not an RFC 5322 message"),
            Anomaly::NotSigned { content_type } => {
                write!(f, "PEC message not signed (top-level type {content_type})")
            }
            Anomaly::Signature { problem } => write!(f, "signature: {problem}"),
            Anomaly::MissingDaticert => write!(f, "daticert.xml missing"),
            Anomaly::DaticertUnreadable { error } => write!(f, "daticert.xml unreadable: {error}"),
            Anomaly::Daticert { issue } => write!(f, "daticert.xml: {issue}"),
            Anomaly::TipoMismatch { header, daticert } => {
                write!(f, "headers say {header}, daticert says {daticert}")
            }
            Anomaly::UnknownHeaderValue { header, value } => {
                write!(f, "{header} has the unknown value {value:?}")
            }
            Anomaly::ConflictingHeaders { detail } => write!(f, "conflicting headers: {detail}"),
            Anomaly::MissingHeader { header } => write!(f, "{header} missing"),
            Anomaly::MissingPostacert => write!(f, "postacert.eml (the original) missing"),
            Anomaly::SubjectPrefix { expected, found } => {
                write!(
                    f,
                    "subject {found:?} does not start with {}",
                    expected.join(" or ")
                )
            }
        }
    }
}

/// The PEC-relevant top-level headers, as read (trimmed; X- values lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PecHeaders {
    /// `X-Ricevuta` (lower-case).
    pub x_ricevuta: Option<String>,
    /// `X-Trasporto` (lower-case).
    pub x_trasporto: Option<String>,
    /// `X-TipoRicevuta` (lower-case).
    pub x_tipo_ricevuta: Option<String>,
    /// `X-VerificaSicurezza` (lower-case).
    pub x_verifica_sicurezza: Option<String>,
    /// `X-Riferimento-Message-ID`, as written.
    pub x_riferimento_message_id: Option<String>,
    /// `Message-ID`, with angle brackets.
    pub message_id: Option<String>,
    /// `From` addresses.
    pub from: Vec<String>,
    /// `To` addresses.
    pub to: Vec<String>,
    /// `Subject`, decoded.
    pub subject: Option<String>,
    /// `Date`, as written.
    pub date: Option<String>,
}

/// The `multipart/signed` framing as received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SignedInfo<'a> {
    /// The signed bytes, exactly as received (not canonicalised).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub content: &'a [u8],
    /// `protocol`, lower-case.
    pub protocol: String,
    /// `micalg`, lower-case.
    pub micalg: Option<String>,
    /// The DER signature, when it could be extracted.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub signature: Option<Vec<u8>>,
}

/// The result of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Classification<'a> {
    /// What the message is.
    pub kind: Kind,
    /// The PEC headers.
    pub headers: PecHeaders,
    /// The daticert, when present and readable.
    pub daticert: Option<Daticert>,
    /// The signed framing, when the message is `multipart/signed`.
    pub signed: Option<SignedInfo<'a>>,
    /// The embedded original (`postacert.eml`), transfer-decoded.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub postacert: Option<Cow<'a, [u8]>>,
    /// Everything wrong or unusual.
    pub anomalies: Vec<Anomaly>,
}

impl Classification<'_> {
    /// An Italian description of the message, e.g. "avviso di mancata consegna per virus".
    pub fn description(&self) -> &'static str {
        let errore = self.daticert.as_ref().map(|d| &d.errore);
        match (self.kind, errore) {
            (Kind::BustaTrasporto, _) => "busta di trasporto",
            (Kind::BustaAnomalia, _) => "busta di anomalia",
            (Kind::Accettazione, _) => "ricevuta di accettazione",
            (Kind::NonAccettazione, Some(Errore::Virus)) => "avviso di non accettazione per virus",
            (Kind::NonAccettazione, _) => "avviso di non accettazione",
            (Kind::PresaInCarico, _) => "ricevuta di presa in carico",
            (Kind::AvvenutaConsegna, _) => "ricevuta di avvenuta consegna",
            (Kind::ErroreConsegna, Some(Errore::Virus)) => "avviso di mancata consegna per virus",
            (Kind::ErroreConsegna, _) => "avviso di mancata consegna",
            (Kind::PreavvisoErroreConsegna, _) => {
                "avviso di mancata consegna per superamento dei tempi massimi"
            }
            (Kind::RilevazioneVirus, _) => "avviso di rilevazione virus",
            (Kind::PecSconosciuto, _) => "messaggio PEC di tipo sconosciuto",
            (Kind::Ordinaria, _) => "posta ordinaria (non PEC)",
        }
    }
}

fn header_values(m: &Message<'_>, raw: &[u8], name: &str) -> Vec<String> {
    original::raw_values(m, raw, name)
        .into_iter()
        .map(|v| {
            // Unfold and drop a trailing comment/parameter: `X-Ricevuta: accettazione`.
            v.split([';', '('])
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_ascii_lowercase()
        })
        .collect()
}

fn single(values: Vec<String>, name: &str, anomalies: &mut Vec<Anomaly>) -> Option<String> {
    let first = values.first().cloned();
    if values.iter().any(|v| Some(v) != first.as_ref()) {
        anomalies.push(Anomaly::ConflictingHeaders {
            detail: format!("{name} occurs with different values: {}", values.join(", ")),
        });
    }
    first
}

fn content_type_of(part: &MessagePart<'_>) -> String {
    part.content_type()
        .map(|c| match c.subtype() {
            Some(sub) => format!("{}/{}", c.ctype(), sub).to_ascii_lowercase(),
            None => c.ctype().to_ascii_lowercase(),
        })
        .unwrap_or_else(|| "text/plain".to_string())
}

fn file_name(part: &MessagePart<'_>) -> Option<String> {
    part.attachment_name()
        .map(|n| n.trim().to_ascii_lowercase())
}

/// Leaf parts under `start` (through nested multiparts; not into attached messages).
fn leaves(m: &Message<'_>, start: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack = vec![start];
    let mut visited = 0usize;
    while let Some(id) = stack.pop() {
        visited += 1;
        if visited > m.parts.len() + 1 {
            break; // defensive: a cycle cannot happen, but never loop forever
        }
        match m.parts.get(id).map(|p| &p.body) {
            Some(PartType::Multipart(children)) => stack.extend(
                children
                    .iter()
                    .rev()
                    .map(|c| *c as usize)
                    .filter(|c| *c != id),
            ),
            Some(_) => out.push(id),
            None => {}
        }
    }
    out
}

/// Whether SES receiving judged the message spam: its `X-SES-Spam-Verdict` header (SES adds
/// it above the sender's headers, so the first one is SES's) says `FAIL`. Never panics.
pub fn ses_spam_verdict_failed(raw: &[u8]) -> bool {
    mail_parser::MessageParser::new()
        .parse_headers(raw)
        .and_then(|m| {
            m.headers_raw()
                .find(|(name, _)| name.eq_ignore_ascii_case("X-SES-Spam-Verdict"))
                .map(|(_, v)| v.trim().eq_ignore_ascii_case("FAIL"))
        })
        .unwrap_or(false)
}

/// Classify a received message. Never panics.
pub fn classify(raw: &[u8]) -> Classification<'_> {
    let mut anomalies = Vec::new();
    let Some(m) = crate::mime::parse(raw) else {
        return Classification {
            kind: Kind::Ordinaria,
            headers: PecHeaders::default(),
            daticert: None,
            signed: None,
            postacert: None,
            anomalies: vec![Anomaly::Unparseable],
        };
    };

    // Headers.
    let x_ricevuta = single(
        header_values(&m, raw, header::X_RICEVUTA),
        header::X_RICEVUTA,
        &mut anomalies,
    );
    let x_trasporto = single(
        header_values(&m, raw, header::X_TRASPORTO),
        header::X_TRASPORTO,
        &mut anomalies,
    );
    let headers = PecHeaders {
        x_tipo_ricevuta: header_values(&m, raw, header::X_TIPO_RICEVUTA)
            .into_iter()
            .next(),
        x_verifica_sicurezza: header_values(&m, raw, header::X_VERIFICA_SICUREZZA)
            .into_iter()
            .next(),
        x_riferimento_message_id: original::raw_values(&m, raw, header::X_RIFERIMENTO_MESSAGE_ID)
            .first()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" ")),
        message_id: m.message_id().map(|id| format!("<{id}>")),
        from: original::addresses(m.from()),
        to: original::all_addresses(&m, HeaderName::To),
        subject: m.subject().map(str::to_string),
        date: original::raw_values(&m, raw, "Date")
            .first()
            .map(|v| v.to_string()),
        x_ricevuta: x_ricevuta.clone(),
        x_trasporto: x_trasporto.clone(),
    };
    if x_ricevuta.is_some() && x_trasporto.is_some() {
        anomalies.push(Anomaly::ConflictingHeaders {
            detail: "both X-Ricevuta and X-Trasporto are present".into(),
        });
    }

    // Signed framing.
    let root_type = m.parts.first().map(content_type_of).unwrap_or_default();
    let mut signed_info = None;
    let mut body_root = 0usize;
    if root_type == "multipart/signed" {
        match signed::signed_layout(raw) {
            Ok(layout) => {
                let signature = match layout.signature {
                    Ok(s) => Some(s),
                    Err(e) => {
                        anomalies.push(Anomaly::Signature {
                            problem: e.to_string(),
                        });
                        None
                    }
                };
                signed_info = Some(SignedInfo {
                    content: layout.content,
                    protocol: layout.protocol,
                    micalg: layout.micalg,
                    signature,
                });
            }
            Err(e) => anomalies.push(Anomaly::Signature {
                problem: e.to_string(),
            }),
        }
        if let Some(PartType::Multipart(children)) = m.parts.first().map(|p| &p.body) {
            body_root = children.first().map_or(0, |c| *c as usize);
        }
    }

    // Service parts.
    let leaf_ids = leaves(&m, body_root);
    let daticert_part = leaf_ids
        .iter()
        .copied()
        .find(|&id| m.parts.get(id).and_then(file_name).as_deref() == Some("daticert.xml"))
        .or_else(|| {
            leaf_ids.iter().copied().find(|&id| {
                m.parts.get(id).is_some_and(|p| {
                    matches!(content_type_of(p).as_str(), "application/xml" | "text/xml")
                })
            })
        });
    let postacert_part = leaf_ids
        .iter()
        .copied()
        .filter(|&id| {
            m.parts
                .get(id)
                .is_some_and(|p| content_type_of(p) == "message/rfc822")
        })
        .min_by_key(|&id| {
            // Prefer the one named postacert.eml.
            (m.parts.get(id).and_then(file_name).as_deref() != Some("postacert.eml")) as u8
        });

    let mut daticert = None;
    if let Some(part) = daticert_part.and_then(|id| m.parts.get(id)) {
        match daticert::parse(part.contents()) {
            Ok(parsed) => {
                anomalies.extend(parsed.issues.iter().map(|i| Anomaly::Daticert {
                    issue: i.to_string(),
                }));
                daticert = Some(parsed.daticert);
            }
            Err(e) => anomalies.push(Anomaly::DaticertUnreadable {
                error: e.to_string(),
            }),
        }
    }
    let postacert: Option<Cow<'_, [u8]>> =
        postacert_part
            .and_then(|id| m.parts.get(id))
            .map(|p| match p.encoding {
                mail_parser::Encoding::None => Cow::Borrowed(
                    raw.get(p.offset_body as usize..p.offset_end as usize)
                        .unwrap_or_default(),
                ),
                _ => match &p.body {
                    PartType::Message(inner) => Cow::Owned(inner.raw_message.to_vec()),
                    other => Cow::Owned(match other {
                        PartType::Binary(b) | PartType::InlineBinary(b) => b.to_vec(),
                        PartType::Text(t) | PartType::Html(t) => t.as_bytes().to_vec(),
                        _ => Vec::new(),
                    }),
                },
            });

    // Kind.
    let mut kind = Kind::Ordinaria;
    if let Some(v) = &x_ricevuta {
        kind = match Kind::from_x_ricevuta(v) {
            Some(k) => k,
            None => {
                anomalies.push(Anomaly::UnknownHeaderValue {
                    header: header::X_RICEVUTA.into(),
                    value: v.clone(),
                });
                daticert
                    .as_ref()
                    .and_then(|d| Kind::from_tipo(&d.tipo))
                    .filter(|k| *k != Kind::BustaTrasporto)
                    .unwrap_or(Kind::PecSconosciuto)
            }
        };
    } else if let Some(v) = &x_trasporto {
        kind = match v.as_str() {
            "posta-certificata" => Kind::BustaTrasporto,
            "errore" => Kind::BustaAnomalia,
            _ => {
                anomalies.push(Anomaly::UnknownHeaderValue {
                    header: header::X_TRASPORTO.into(),
                    value: v.clone(),
                });
                Kind::PecSconosciuto
            }
        };
    } else if signed_info.is_some()
        && let Some(k) = daticert.as_ref().and_then(|d| Kind::from_tipo(&d.tipo))
    {
        kind = k;
        anomalies.push(Anomaly::MissingHeader {
            header: if k == Kind::BustaTrasporto {
                header::X_TRASPORTO.into()
            } else {
                header::X_RICEVUTA.into()
            },
        });
    }

    if kind.is_pec() {
        if root_type != "multipart/signed" {
            anomalies.push(Anomaly::NotSigned {
                content_type: root_type.clone(),
            });
        }
        if let Some(v) = &headers.x_tipo_ricevuta
            && !TipoRicevuta::parse(v).is_known()
        {
            anomalies.push(Anomaly::UnknownHeaderValue {
                header: header::X_TIPO_RICEVUTA.into(),
                value: v.clone(),
            });
        }
        // daticert presence and agreement.
        if let Some(expected) = kind.tipo() {
            match &daticert {
                None if daticert_part.is_none() => anomalies.push(Anomaly::MissingDaticert),
                None => {}
                Some(d) if d.tipo != expected => anomalies.push(Anomaly::TipoMismatch {
                    header: kind.as_str().into(),
                    daticert: d.tipo.as_str().into(),
                }),
                Some(_) => {}
            }
        }
        // The original where it must be.
        let form = daticert
            .as_ref()
            .and_then(|d| d.dati.ricevuta.clone())
            .or_else(|| headers.x_tipo_ricevuta.as_deref().map(TipoRicevuta::parse))
            .unwrap_or_default();
        let needs_original = match kind {
            Kind::BustaTrasporto | Kind::BustaAnomalia => true,
            Kind::AvvenutaConsegna => matches!(form, TipoRicevuta::Completa | TipoRicevuta::Breve),
            _ => false,
        };
        if needs_original && postacert.is_none() {
            anomalies.push(Anomaly::MissingPostacert);
        }
        // Subject prefix.
        let prefixes = kind.prefixes();
        let found = headers.subject.clone().unwrap_or_default();
        if !prefixes.is_empty()
            && !prefixes.iter().any(|p| {
                let p = p.trim_end();
                found
                    .get(..p.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(p))
            })
        {
            anomalies.push(Anomaly::SubjectPrefix {
                expected: prefixes.iter().map(|p| p.to_string()).collect(),
                found,
            });
        }
    }

    Classification {
        kind,
        headers,
        daticert,
        signed: signed_info,
        postacert,
        anomalies,
    }
}

#[cfg(test)]
mod ses_verdict_tests {
    use super::ses_spam_verdict_failed;

    #[test]
    fn the_first_ses_spam_verdict_decides() {
        assert!(ses_spam_verdict_failed(
            b"X-SES-Spam-Verdict: FAIL\r\nX-SES-Virus-Verdict: PASS\r\nSubject: x\r\n\r\nbody"
        ));
        assert!(!ses_spam_verdict_failed(
            b"X-SES-Spam-Verdict: PASS\r\nX-SES-Spam-Verdict: FAIL\r\nSubject: x\r\n\r\nbody"
        ));
        assert!(!ses_spam_verdict_failed(b"Subject: x\r\n\r\nbody"));
        assert!(!ses_spam_verdict_failed(b"\xff\xfe not mail at all"));
    }
}
