//! `daticert.xml`: the certification data attached to every PEC receipt, notice and envelope.
//!
//! The element tree follows the DTD of the technical rules (DM 2-11-2005 annex, RFC 6109 §4) as
//! rebuilt from real messages:
//!
//! ```text
//! postacert @tipo @errore
//! ├── intestazione
//! │   ├── mittente            1
//! │   ├── destinatari @tipo   1..n   (certificato | esterno)
//! │   ├── risposte            1
//! │   └── oggetto             0..1
//! └── dati
//!     ├── gestore-emittente   1
//!     ├── data @zona          1      (giorno, ora)
//!     ├── identificativo      1
//!     ├── msgid               0..1
//!     ├── ricevuta @tipo      0..1   (completa | breve | sintetica), EMPTY
//!     ├── consegna            0..1
//!     ├── ricezione           0..n
//!     └── errore-esteso       0..1
//! ```
//!
//! **Emit strictly** ([`Daticert::to_xml`]): UTF-8, `<?xml version="1.0" encoding="UTF-8"?>`,
//! DTD element order, 4-space indentation and LF line ends as the real providers write it,
//! `errore` always present, every metacharacter escaped by quick-xml (`&lt;` `&gt;` `&amp;`
//! `&quot;` `&apos;`), and a refusal ([`DaticertError::NotEmittable`]) for values the DTD does
//! not allow or characters XML 1.0 cannot carry.
//!
//! **Parse tolerantly** ([`parse`]): unknown attribute values are kept ([`Tipo::Other`], ...),
//! elements are recognised by name wherever they appear, stray text and unknown elements are
//! reported as [`Issue`]s and otherwise ignored, missing elements are reported and left empty,
//! ISO-8859-1 input (declared or not valid UTF-8) is transcoded, and leaf text is trimmed.

use std::fmt;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesRef, BytesStart, BytesText, Event};
use quick_xml::reader::Reader;

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize), serde(into = "String"))]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value the DTD does not list, kept as read (parse only; never emitted).
            Other(String),
        }

        impl $name {
            /// The XML spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Other(s) => s.as_str(),
                }
            }

            /// Read a value tolerantly: surrounding whitespace and ASCII case are ignored;
            /// anything unknown is kept as [`Self::Other`].
            pub fn parse(s: &str) -> Self {
                let t = s.trim();
                $( if t.eq_ignore_ascii_case($text) { return Self::$variant; } )+
                Self::Other(t.to_string())
            }

            /// Whether this is a value the DTD lists.
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }
    };
}

string_enum! {
    /// `postacert@tipo`: which message this daticert certifies.
    Tipo {
        /// Ricevuta di accettazione.
        Accettazione = "accettazione",
        /// Avviso di non accettazione (formal error or virus).
        NonAccettazione = "non-accettazione",
        /// Ricevuta di presa in carico.
        PresaInCarico = "presa-in-carico",
        /// Ricevuta di avvenuta consegna.
        AvvenutaConsegna = "avvenuta-consegna",
        /// Busta di trasporto.
        PostaCertificata = "posta-certificata",
        /// Avviso di mancata consegna (also for virus).
        ErroreConsegna = "errore-consegna",
        /// Avviso di mancata consegna per superamento dei tempi massimi (12 h and 24 h).
        PreavvisoErroreConsegna = "preavviso-errore-consegna",
        /// Avviso di rilevazione virus.
        RilevazioneVirus = "rilevazione-virus",
    }
}

string_enum! {
    /// `postacert@errore`.
    Errore {
        /// No error.
        Nessuno = "nessuno",
        /// Recipient unknown.
        NoDest = "no-dest",
        /// Recipient domain unknown.
        NoDominio = "no-dominio",
        /// Virus.
        Virus = "virus",
        /// Any other error (reason in `errore-esteso`).
        Altro = "altro",
    }
}

string_enum! {
    /// `destinatari@tipo`.
    TipoDestinatario {
        /// A mailbox of a PEC provider.
        Certificato = "certificato",
        /// An ordinary (non-PEC) mailbox.
        Esterno = "esterno",
    }
}

string_enum! {
    /// `ricevuta@tipo`: the delivery receipt form requested by the sender.
    TipoRicevuta {
        /// With the complete original.
        Completa = "completa",
        /// With the original, attachments replaced by their hashes.
        Breve = "breve",
        /// Without the original.
        Sintetica = "sintetica",
    }
}

#[allow(clippy::derivable_impls)] // generated by a macro
impl Default for Errore {
    fn default() -> Self {
        Errore::Nessuno
    }
}

#[allow(clippy::derivable_impls)] // generated by a macro
impl Default for TipoDestinatario {
    fn default() -> Self {
        TipoDestinatario::Certificato
    }
}

#[allow(clippy::derivable_impls)] // generated by a macro
impl Default for TipoRicevuta {
    fn default() -> Self {
        TipoRicevuta::Completa
    }
}

/// One `<destinatari>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Destinatario {
    /// `certificato` or `esterno`.
    pub tipo: TipoDestinatario,
    /// The address.
    pub indirizzo: String,
}

/// `<intestazione>`: the certified data of the original message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Intestazione {
    /// `<mittente>`.
    pub mittente: String,
    /// Every `<destinatari>`, in order.
    pub destinatari: Vec<Destinatario>,
    /// `<risposte>`.
    pub risposte: String,
    /// `<oggetto>` (decoded subject), if present.
    pub oggetto: Option<String>,
}

/// `<data zona="..."><giorno/><ora/></data>`, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Data {
    /// `@zona`, e.g. `+0100`.
    pub zona: String,
    /// `dd/mm/yyyy`.
    pub giorno: String,
    /// `hh:mm:ss`.
    pub ora: String,
}

impl Data {
    /// The instant in Italian civil time (see [`crate::time::PecTime`]).
    pub fn from_time(t: &crate::time::PecTime) -> Self {
        Data {
            zona: t.zona(),
            giorno: t.giorno(),
            ora: t.ora(),
        }
    }

    /// The instant this `<data>` denotes, if it parses.
    pub fn to_datetime(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        crate::time::parse_daticert_time(&self.giorno, &self.ora, &self.zona)
    }
}

/// `<dati>`: the data of this event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub struct Dati {
    /// `<gestore-emittente>`: the provider that emits this document.
    pub gestore_emittente: String,
    /// `<data>`.
    pub data: Data,
    /// `<identificativo>`: the PEC identifier of the original message.
    pub identificativo: String,
    /// `<msgid>`: the user's original `Message-ID`, angle brackets included.
    pub msgid: Option<String>,
    /// `<ricevuta tipo>`.
    pub ricevuta: Option<TipoRicevuta>,
    /// `<consegna>`: the recipient this event is about.
    pub consegna: Option<String>,
    /// Every `<ricezione>`: recipients taken in charge / affected.
    pub ricezione: Vec<String>,
    /// `<errore-esteso>`.
    pub errore_esteso: Option<String>,
}

/// A whole `daticert.xml`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Daticert {
    /// `postacert@tipo`.
    pub tipo: Tipo,
    /// `postacert@errore`.
    pub errore: Errore,
    /// `<intestazione>`.
    pub intestazione: Intestazione,
    /// `<dati>`.
    pub dati: Dati,
}

impl Default for Tipo {
    fn default() -> Self {
        Tipo::Other(String::new())
    }
}

/// Why a daticert could not be emitted or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaticertError {
    /// A value the DTD does not allow, or text XML 1.0 cannot carry, was given for emission.
    #[error("daticert field {field} cannot be emitted: {reason}")]
    NotEmittable {
        /// The element or attribute.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The input is not well-formed XML.
    #[error("daticert.xml is not well-formed XML at byte {position}: {message}")]
    Xml {
        /// Byte offset where the reader stopped.
        position: u64,
        /// The reader's message.
        message: String,
    },
    /// The document element is not `postacert`.
    #[error("daticert.xml root element is <{0}>, not <postacert>")]
    NotPostacert(String),
    /// There is no element at all.
    #[error("daticert.xml has no root element")]
    Empty,
}

/// Something odd found while reading a daticert tolerantly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "issue", rename_all = "kebab-case"))]
pub enum Issue {
    /// A required element or attribute is missing.
    Missing {
        /// Its name.
        name: String,
    },
    /// An element that occurs at most once occurred again (the first one is kept).
    Duplicate {
        /// Its name.
        name: String,
    },
    /// An element the DTD does not have (ignored).
    UnknownElement {
        /// Its name.
        name: String,
    },
    /// Non-whitespace text outside a text element (ignored).
    StrayText {
        /// The text (trimmed, cut to 80 characters).
        text: String,
    },
    /// An attribute value the DTD does not list (kept).
    UnknownValue {
        /// `element@attribute`.
        attribute: String,
        /// The value.
        value: String,
    },
    /// The input was not UTF-8 and was read as ISO-8859-1.
    Latin1,
    /// An entity reference that is not predefined (kept as `&name;`).
    UnknownEntity {
        /// The entity name.
        name: String,
    },
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Issue::Missing { name } => write!(f, "required {name} is missing"),
            Issue::Duplicate { name } => {
                write!(f, "<{name}> occurs more than once; the first is used")
            }
            Issue::UnknownElement { name } => write!(f, "unknown element <{name}> ignored"),
            Issue::StrayText { text } => write!(f, "stray text {text:?} ignored"),
            Issue::UnknownValue { attribute, value } => {
                write!(f, "{attribute} has the unknown value {value:?}")
            }
            Issue::Latin1 => write!(f, "not UTF-8: read as ISO-8859-1"),
            Issue::UnknownEntity { name } => write!(f, "unknown entity &{name}; kept as text"),
        }
    }
}

/// The result of [`parse`]: the data and what was odd about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// What could be read.
    pub daticert: Daticert,
    /// What was tolerated.
    pub issues: Vec<Issue>,
}

// ---------------------------------------------------------------------------------------------
// Emission
// ---------------------------------------------------------------------------------------------

/// Whether `c` can appear in XML 1.0 character data (the `Char` production) and survive a
/// round trip unchanged (CR would be normalised away, so it is refused too).
fn xml_safe_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Text values must be single-line XML characters without surrounding whitespace (the parser
/// trims leaf text, so anything else would not read back identically).
fn check_text(field: &'static str, value: &str) -> Result<(), DaticertError> {
    if let Some(c) = value.chars().find(|c| !xml_safe_char(*c) || *c == '\n') {
        return Err(DaticertError::NotEmittable {
            field,
            reason: format!("character U+{:04X} is not allowed", c as u32),
        });
    }
    if value.trim_matches([' ', '\t', '\r', '\n']).len() != value.len() {
        return Err(DaticertError::NotEmittable {
            field,
            reason: "leading or trailing whitespace".into(),
        });
    }
    Ok(())
}

fn check_known(field: &'static str, known: bool, value: &str) -> Result<(), DaticertError> {
    if known {
        Ok(())
    } else {
        Err(DaticertError::NotEmittable {
            field,
            reason: format!("{value:?} is not a value of the DTD"),
        })
    }
}

impl Daticert {
    /// Check that every value can be emitted (see [`Daticert::to_xml`]).
    pub fn validate(&self) -> Result<(), DaticertError> {
        check_known("postacert@tipo", self.tipo.is_known(), self.tipo.as_str())?;
        check_known(
            "postacert@errore",
            self.errore.is_known(),
            self.errore.as_str(),
        )?;
        let i = &self.intestazione;
        check_text("mittente", &i.mittente)?;
        if i.destinatari.is_empty() {
            return Err(DaticertError::NotEmittable {
                field: "destinatari",
                reason: "at least one recipient is required".into(),
            });
        }
        for d in &i.destinatari {
            check_known("destinatari@tipo", d.tipo.is_known(), d.tipo.as_str())?;
            check_text("destinatari", &d.indirizzo)?;
        }
        check_text("risposte", &i.risposte)?;
        if let Some(o) = &i.oggetto {
            check_text("oggetto", o)?;
        }
        let d = &self.dati;
        check_text("gestore-emittente", &d.gestore_emittente)?;
        check_text("data@zona", &d.data.zona)?;
        check_text("giorno", &d.data.giorno)?;
        check_text("ora", &d.data.ora)?;
        check_text("identificativo", &d.identificativo)?;
        if let Some(m) = &d.msgid {
            check_text("msgid", m)?;
        }
        if let Some(r) = &d.ricevuta {
            check_known("ricevuta@tipo", r.is_known(), r.as_str())?;
        }
        if let Some(c) = &d.consegna {
            check_text("consegna", c)?;
        }
        for r in &d.ricezione {
            check_text("ricezione", r)?;
        }
        if let Some(e) = &d.errore_esteso {
            check_text("errore-esteso", e)?;
        }
        Ok(())
    }

    /// Emit the document strictly (see the module documentation). Deterministic: the same
    /// value always gives the same bytes.
    pub fn to_xml(&self) -> Result<Vec<u8>, DaticertError> {
        self.validate()?;
        let mut w = Writer::new_with_indent(Vec::with_capacity(1024), b' ', 4);
        // Writing into a Vec cannot fail: the io::Result values below are always Ok.
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        let _ = w
            .create_element("postacert")
            .with_attribute(("tipo", self.tipo.as_str()))
            .with_attribute(("errore", self.errore.as_str()))
            .write_inner_content(|w| {
                let i = &self.intestazione;
                w.create_element("intestazione").write_inner_content(|w| {
                    leaf(w, "mittente", &i.mittente)?;
                    for d in &i.destinatari {
                        w.create_element("destinatari")
                            .with_attribute(("tipo", d.tipo.as_str()))
                            .write_text_content(BytesText::new(&d.indirizzo))?;
                    }
                    leaf(w, "risposte", &i.risposte)?;
                    if let Some(o) = &i.oggetto {
                        leaf(w, "oggetto", o)?;
                    }
                    Ok(())
                })?;
                let d = &self.dati;
                w.create_element("dati").write_inner_content(|w| {
                    leaf(w, "gestore-emittente", &d.gestore_emittente)?;
                    w.create_element("data")
                        .with_attribute(("zona", d.data.zona.as_str()))
                        .write_inner_content(|w| {
                            leaf(w, "giorno", &d.data.giorno)?;
                            leaf(w, "ora", &d.data.ora)
                        })?;
                    leaf(w, "identificativo", &d.identificativo)?;
                    if let Some(m) = &d.msgid {
                        leaf(w, "msgid", m)?;
                    }
                    if let Some(r) = &d.ricevuta {
                        // `<ricevuta tipo="completa" />`: the spelling of the real providers
                        // (a space before the slash). The value is a DTD token: nothing to escape.
                        w.write_event(Event::Empty(BytesStart::from_content(
                            format!("ricevuta tipo=\"{}\" ", r.as_str()),
                            "ricevuta".len(),
                        )))?;
                    }
                    if let Some(c) = &d.consegna {
                        leaf(w, "consegna", c)?;
                    }
                    for r in &d.ricezione {
                        leaf(w, "ricezione", r)?;
                    }
                    if let Some(e) = &d.errore_esteso {
                        leaf(w, "errore-esteso", e)?;
                    }
                    Ok(())
                })?;
                Ok(())
            });
        let mut out = w.into_inner();
        out.push(b'\n');
        Ok(out)
    }
}

fn leaf(w: &mut Writer<Vec<u8>>, name: &str, text: &str) -> std::io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(text))
        .map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Read a `daticert.xml` tolerantly. Only input that is not XML at all (or whose root is not
/// `postacert`) is an error; everything else is read as far as possible and reported in
/// [`Parsed::issues`]. Never panics.
pub fn parse(xml: &[u8]) -> Result<Parsed, DaticertError> {
    let mut issues = Vec::new();
    let xml = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    let text: String = match std::str::from_utf8(xml) {
        Ok(s) if !declares_latin1(s) => s.to_string(),
        Ok(s) => {
            // Declared ISO-8859-1 but valid UTF-8: pure ASCII reads the same either way; any
            // other byte means the declaration is right and the bytes are Latin-1.
            if s.is_ascii() {
                s.to_string()
            } else {
                issues.push(Issue::Latin1);
                xml.iter().map(|&b| b as char).collect()
            }
        }
        Err(_) => {
            issues.push(Issue::Latin1);
            xml.iter().map(|&b| b as char).collect()
        }
    };
    let mut p = ParseState {
        issues,
        ..ParseState::default()
    };
    let mut reader = Reader::from_str(&text);
    reader.config_mut().check_end_names = true;
    let mut root_seen = false;
    loop {
        let event = reader.read_event().map_err(|e| DaticertError::Xml {
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        match event {
            Event::Start(e) => {
                let name = local(e.local_name().as_ref());
                if !root_seen {
                    root_seen = true;
                    if name != "postacert" {
                        return Err(DaticertError::NotPostacert(name));
                    }
                }
                p.open(&name, &e);
            }
            Event::Empty(e) => {
                let name = local(e.local_name().as_ref());
                if !root_seen {
                    root_seen = true;
                    if name != "postacert" {
                        return Err(DaticertError::NotPostacert(name));
                    }
                }
                p.open(&name, &e);
                p.close();
            }
            Event::End(_) => p.close(),
            Event::Text(t) => {
                let s = t.xml10_content().map_err(|e| DaticertError::Xml {
                    position: reader.buffer_position(),
                    message: e.to_string(),
                })?;
                p.text(&s);
            }
            Event::CData(t) => {
                let s = String::from_utf8_lossy(&t).into_owned();
                p.text(&s);
            }
            Event::GeneralRef(r) => p.reference(&r),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
        }
    }
    if !root_seen {
        return Err(DaticertError::Empty);
    }
    Ok(p.finish())
}

fn declares_latin1(s: &str) -> bool {
    let Some(head) = s.get(..s.len().min(100)).or(Some(s)) else {
        return false;
    };
    let Some(end) = head.find("?>") else {
        return false;
    };
    let decl = head.get(..end).unwrap_or_default().to_ascii_lowercase();
    decl.starts_with("<?xml")
        && (decl.contains("iso-8859-1") || decl.contains("latin1") || decl.contains("iso8859-1"))
}

fn local(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

/// Elements whose text content is a value.
const TEXT_ELEMENTS: [&str; 13] = [
    "mittente",
    "destinatari",
    "risposte",
    "oggetto",
    "gestore-emittente",
    "giorno",
    "ora",
    "identificativo",
    "msgid",
    "consegna",
    "ricezione",
    "errore-esteso",
    "ricevuta",
];
/// Elements that only contain elements.
const CONTAINER_ELEMENTS: [&str; 4] = ["postacert", "intestazione", "dati", "data"];

#[derive(Default)]
struct ParseState {
    d: Daticert,
    issues: Vec<Issue>,
    stack: Vec<String>,
    /// Text collected for the innermost open text element.
    buf: String,
    /// `tipo` of the `<destinatari>` being read.
    dest_tipo: TipoDestinatario,
    seen: Vec<&'static str>,
    data_seen: bool,
}

impl ParseState {
    fn current(&self) -> Option<&str> {
        self.stack.last().map(String::as_str)
    }

    fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
        e.attributes().flatten().find_map(|a| {
            if local(a.key.local_name().as_ref()) == name {
                Some(
                    // decode_and_unescape_value, not unescape_value: the latter disappears when
                    // another crate of the build enables quick-xml's `encoding` (calamine does).
                    a.decode_and_unescape_value(e.decoder())
                        .map(|v| v.into_owned())
                        .unwrap_or_else(|_| String::from_utf8_lossy(&a.value).into_owned()),
                )
            } else {
                None
            }
        })
    }

    fn unknown_value(&mut self, attribute: &str, known: bool, value: &str) {
        if !known {
            self.issues.push(Issue::UnknownValue {
                attribute: attribute.to_string(),
                value: value.to_string(),
            });
        }
    }

    fn open(&mut self, name: &str, e: &BytesStart<'_>) {
        self.buf.clear();
        match name {
            "postacert" if self.stack.is_empty() => {
                match Self::attr(e, "tipo") {
                    Some(t) => {
                        self.d.tipo = Tipo::parse(&t);
                        let known = self.d.tipo.is_known();
                        self.unknown_value("postacert@tipo", known, &t);
                    }
                    None => self.issues.push(Issue::Missing {
                        name: "postacert@tipo".into(),
                    }),
                }
                // `errore` has the DTD default `nessuno`.
                if let Some(v) = Self::attr(e, "errore") {
                    self.d.errore = Errore::parse(&v);
                    let known = self.d.errore.is_known();
                    self.unknown_value("postacert@errore", known, &v);
                }
            }
            "destinatari" => {
                self.dest_tipo = match Self::attr(e, "tipo") {
                    Some(v) => {
                        let t = TipoDestinatario::parse(&v);
                        self.unknown_value("destinatari@tipo", t.is_known(), &v);
                        t
                    }
                    None => TipoDestinatario::Certificato,
                };
            }
            "data" => {
                self.data_seen = true;
                match Self::attr(e, "zona") {
                    Some(z) => self.d.dati.data.zona = z.trim().to_string(),
                    None => self.issues.push(Issue::Missing {
                        name: "data@zona".into(),
                    }),
                }
            }
            "ricevuta" => {
                if self.d.dati.ricevuta.is_some() {
                    self.issues.push(Issue::Duplicate {
                        name: "ricevuta".into(),
                    });
                } else {
                    let t = match Self::attr(e, "tipo") {
                        Some(v) => {
                            let t = TipoRicevuta::parse(&v);
                            self.unknown_value("ricevuta@tipo", t.is_known(), &v);
                            t
                        }
                        None => TipoRicevuta::Completa,
                    };
                    self.d.dati.ricevuta = Some(t);
                }
            }
            _ => {}
        }
        if !TEXT_ELEMENTS.contains(&name) && !CONTAINER_ELEMENTS.contains(&name) {
            self.issues.push(Issue::UnknownElement {
                name: name.chars().take(80).collect(),
            });
        }
        self.stack.push(name.to_string());
    }

    fn text(&mut self, s: &str) {
        match self.current() {
            Some(cur) if TEXT_ELEMENTS.contains(&cur) && cur != "ricevuta" => self.buf.push_str(s),
            // Text inside an unknown element is part of that element: ignored with it.
            Some(cur) if !CONTAINER_ELEMENTS.contains(&cur) && cur != "ricevuta" => {}
            _ => {
                let t = s.trim();
                if !t.is_empty() {
                    self.issues.push(Issue::StrayText {
                        text: t.chars().take(80).collect(),
                    });
                }
            }
        }
    }

    fn reference(&mut self, r: &BytesRef<'_>) {
        let name = String::from_utf8_lossy(r).into_owned();
        let resolved: String = if let Ok(Some(c)) = r.resolve_char_ref() {
            c.to_string()
        } else if let Some(s) = quick_xml::escape::resolve_xml_entity(&name) {
            s.to_string()
        } else {
            self.issues.push(Issue::UnknownEntity {
                name: name.chars().take(80).collect(),
            });
            format!("&{name};")
        };
        self.text(&resolved);
    }

    fn once(&mut self, name: &'static str) -> bool {
        if self.seen.contains(&name) {
            self.issues.push(Issue::Duplicate { name: name.into() });
            false
        } else {
            self.seen.push(name);
            true
        }
    }

    fn close(&mut self) {
        let Some(name) = self.stack.pop() else {
            return;
        };
        // XML whitespace only: a value may legitimately end in, say, U+00A0.
        let value = self.buf.trim_matches([' ', '\t', '\r', '\n']).to_string();
        self.buf.clear();
        match name.as_str() {
            "mittente" if self.once("mittente") => self.d.intestazione.mittente = value,
            "destinatari" => self.d.intestazione.destinatari.push(Destinatario {
                tipo: std::mem::take(&mut self.dest_tipo),
                indirizzo: value,
            }),
            "risposte" if self.once("risposte") => self.d.intestazione.risposte = value,
            "oggetto" if self.once("oggetto") => self.d.intestazione.oggetto = Some(value),
            "gestore-emittente" if self.once("gestore-emittente") => {
                self.d.dati.gestore_emittente = value
            }
            "giorno" if self.once("giorno") => self.d.dati.data.giorno = value,
            "ora" if self.once("ora") => self.d.dati.data.ora = value,
            "identificativo" if self.once("identificativo") => self.d.dati.identificativo = value,
            "msgid" if self.once("msgid") => self.d.dati.msgid = Some(value),
            "consegna" if self.once("consegna") => self.d.dati.consegna = Some(value),
            "ricezione" => self.d.dati.ricezione.push(value),
            "errore-esteso" if self.once("errore-esteso") => {
                self.d.dati.errore_esteso = Some(value)
            }
            _ => {}
        }
    }

    fn finish(mut self) -> Parsed {
        let checks = [
            (!self.seen.contains(&"mittente"), "mittente"),
            (self.d.intestazione.destinatari.is_empty(), "destinatari"),
            (!self.seen.contains(&"risposte"), "risposte"),
            (
                !self.seen.contains(&"gestore-emittente"),
                "gestore-emittente",
            ),
            (!self.data_seen, "data"),
            (self.data_seen && !self.seen.contains(&"giorno"), "giorno"),
            (self.data_seen && !self.seen.contains(&"ora"), "ora"),
            (!self.seen.contains(&"identificativo"), "identificativo"),
        ];
        for (missing, name) in checks {
            if missing {
                self.issues.push(Issue::Missing { name: name.into() });
            }
        }
        Parsed {
            daticert: self.d,
            issues: self.issues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Daticert {
        Daticert {
            tipo: Tipo::AvvenutaConsegna,
            errore: Errore::Nessuno,
            intestazione: Intestazione {
                mittente: "studio@pec.example.it".into(),
                destinatari: vec![
                    Destinatario {
                        tipo: TipoDestinatario::Certificato,
                        indirizzo: "protocollo@pec.comune.example.it".into(),
                    },
                    Destinatario {
                        tipo: TipoDestinatario::Esterno,
                        indirizzo: "amministrazione@example.com".into(),
                    },
                ],
                risposte: "studio@pec.example.it".into(),
                oggetto: Some("Messa in mora <urgente> & \"riservata\" - perché".into()),
            },
            dati: Dati {
                gestore_emittente: "Altro Gestore PEC S.p.A.".into(),
                data: Data {
                    zona: "+0100".into(),
                    giorno: "02/12/2026".into(),
                    ora: "09:41:12".into(),
                },
                identificativo: "20261202084107000.a1@pec.example.it".into(),
                msgid: Some("<5f0c@mua.example.it>".into()),
                ricevuta: Some(TipoRicevuta::Completa),
                consegna: Some("protocollo@pec.comune.example.it".into()),
                ricezione: vec![],
                errore_esteso: None,
            },
        }
    }

    #[test]
    fn emits_the_real_layout() {
        let xml = String::from_utf8(sample().to_xml().unwrap()).unwrap();
        let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="avvenuta-consegna" errore="nessuno">
    <intestazione>
        <mittente>studio@pec.example.it</mittente>
        <destinatari tipo="certificato">protocollo@pec.comune.example.it</destinatari>
        <destinatari tipo="esterno">amministrazione@example.com</destinatari>
        <risposte>studio@pec.example.it</risposte>
        <oggetto>Messa in mora &lt;urgente&gt; &amp; &quot;riservata&quot; - perché</oggetto>
    </intestazione>
    <dati>
        <gestore-emittente>Altro Gestore PEC S.p.A.</gestore-emittente>
        <data zona="+0100">
            <giorno>02/12/2026</giorno>
            <ora>09:41:12</ora>
        </data>
        <identificativo>20261202084107000.a1@pec.example.it</identificativo>
        <msgid>&lt;5f0c@mua.example.it&gt;</msgid>
        <ricevuta tipo="completa" />
        <consegna>protocollo@pec.comune.example.it</consegna>
    </dati>
</postacert>
"#;
        assert_eq!(xml, expected);
    }

    #[test]
    fn round_trip() {
        let d = sample();
        let parsed = parse(&d.to_xml().unwrap()).unwrap();
        assert_eq!(parsed.issues, vec![]);
        assert_eq!(parsed.daticert, d);
    }

    #[test]
    fn refuses_unknown_values_and_controls() {
        let mut d = sample();
        d.tipo = Tipo::Other("errore".into());
        assert!(matches!(
            d.to_xml(),
            Err(DaticertError::NotEmittable { .. })
        ));
        let mut d = sample();
        d.intestazione.oggetto = Some("a\r\nb".into());
        assert!(matches!(
            d.to_xml(),
            Err(DaticertError::NotEmittable {
                field: "oggetto",
                ..
            })
        ));
        let mut d = sample();
        d.intestazione.destinatari.clear();
        assert!(d.to_xml().is_err());
    }

    #[test]
    fn tolerant_parse() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE postacert SYSTEM "Docs.dtd">
<postacert tipo="Errore-Consegna" errore="no-dest">
 <intestazione>
  <mittente>a@b.it</mittente>
  <destinatari>c@d.it</destinatari>
  <risposte>a@b.it</risposte>a
 </intestazione>
 <dati>
  <gestore-emittente>X</gestore-emittente>
  <data zona="+0200"><giorno>01/07/2026</giorno><ora>12:00:00</ora></data>
  <identificativo> id@x </identificativo>
  <ricevuta/>
  <consegna>c@d.it</consegna>
  <nuovo>?</nuovo>
  <errore-esteso>5.1.1 - X - indirizzo &#233; non valido</errore-esteso>
 </dati>
</postacert>"#;
        let p = parse(xml).unwrap();
        assert_eq!(p.daticert.tipo, Tipo::ErroreConsegna);
        assert_eq!(p.daticert.errore, Errore::NoDest);
        assert_eq!(
            p.daticert.intestazione.destinatari[0].tipo,
            TipoDestinatario::Certificato
        );
        assert_eq!(p.daticert.intestazione.oggetto, None);
        assert_eq!(p.daticert.dati.identificativo, "id@x");
        assert_eq!(p.daticert.dati.ricevuta, Some(TipoRicevuta::Completa));
        assert_eq!(
            p.daticert.dati.errore_esteso.as_deref(),
            Some("5.1.1 - X - indirizzo é non valido")
        );
        assert_eq!(
            p.issues,
            vec![
                Issue::StrayText { text: "a".into() },
                Issue::UnknownElement {
                    name: "nuovo".into()
                },
            ]
        );
    }

    #[test]
    fn unknown_values_kept() {
        let xml = br#"<postacert tipo="errore" errore="boh"><intestazione><mittente>a</mittente><destinatari tipo="pec">b</destinatari><risposte>a</risposte></intestazione><dati><gestore-emittente>g</gestore-emittente><data zona="+0100"><giorno>01/01/2020</giorno><ora>00:00:00</ora></data><identificativo>i</identificativo><ricevuta tipo="lunga"/></dati></postacert>"#;
        let p = parse(xml).unwrap();
        assert_eq!(p.daticert.tipo, Tipo::Other("errore".into()));
        assert_eq!(p.daticert.errore, Errore::Other("boh".into()));
        assert_eq!(
            p.daticert.intestazione.destinatari[0].tipo,
            TipoDestinatario::Other("pec".into())
        );
        assert_eq!(
            p.daticert.dati.ricevuta,
            Some(TipoRicevuta::Other("lunga".into()))
        );
        assert_eq!(p.issues.len(), 4);
    }

    #[test]
    fn latin1_and_errors() {
        let mut xml = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><postacert tipo=\"accettazione\"><intestazione><oggetto>perch".to_vec();
        xml.push(0xE9);
        xml.extend_from_slice(b"</oggetto></intestazione></postacert>");
        let p = parse(&xml).unwrap();
        assert_eq!(p.daticert.intestazione.oggetto.as_deref(), Some("perché"));
        assert!(p.issues.contains(&Issue::Latin1));
        assert!(p.issues.contains(&Issue::Missing {
            name: "identificativo".into()
        }));
        assert!(matches!(parse(b""), Err(DaticertError::Empty)));
        assert!(matches!(
            parse(b"<html/>"),
            Err(DaticertError::NotPostacert(_))
        ));
        assert!(matches!(
            parse(b"<postacert><a></b></postacert>"),
            Err(DaticertError::Xml { .. })
        ));
    }
}
