//! FETCH: flags, sections, ENVELOPE and BODYSTRUCTURE computed with mail-parser.
//!
//! Everything here is built from the stored bytes; the issue wants ENVELOPE and BODYSTRUCTURE
//! computed once at delivery and stored, which the DynamoDB adapter will do with these same
//! functions.

use imap_next::imap_types::body::{BasicFields, Body, BodyStructure, SpecificFields};
use imap_next::imap_types::core::{AString, Atom, IString, Literal, NString, Vec1};
use imap_next::imap_types::envelope::{Address, Envelope};
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Section};
use imap_next::imap_types::flag::{Flag, FlagFetch};
use mail_parser::{MessageParser, MessagePart, MimeHeaders, PartType};
use pec_ports::mailstore::{Flags, MessageMeta};

/// Nesting depth past which BODYSTRUCTURE stops descending (bounded work on hostile MIME).
const MAX_DEPTH: usize = 16;

/// A stored flag as an IMAP flag (`None` for a spelling IMAP cannot carry).
pub(crate) fn to_imap_flag(flag: &str) -> Option<Flag<'static>> {
    match flag.strip_prefix('\\') {
        Some(system) => Atom::try_from(system.to_owned()).ok().map(Flag::system),
        None => Atom::try_from(flag.to_owned()).ok().map(Flag::Keyword),
    }
}

/// An IMAP flag as stored (`\Seen`, `$Label`...).
pub(crate) fn from_imap_flag(flag: &Flag<'_>) -> String {
    flag.to_string()
}

/// `FLAGS (...)` as a FETCH item.
pub(crate) fn flags_item(flags: &Flags) -> MessageDataItem<'static> {
    MessageDataItem::Flags(
        flags
            .iter()
            .filter_map(|f| to_imap_flag(f))
            .map(FlagFetch::Flag)
            .collect(),
    )
}

/// An IMAP string from any bytes: quoted when possible, else a literal (NULs dropped, which a
/// literal cannot carry).
pub(crate) fn istring(bytes: &[u8]) -> IString<'static> {
    IString::try_from(bytes.to_vec()).unwrap_or_else(|_| {
        let clean: Vec<u8> = bytes.iter().copied().filter(|b| *b != 0).collect();
        IString::Literal(Literal::unvalidated(clean))
    })
}

fn nstring(value: Option<&str>) -> NString<'static> {
    NString(value.map(|v| istring(v.as_bytes())))
}

/// The message bytes for a `BODY[...]` item, or `None` when the section names nothing.
pub(crate) fn section_bytes(raw: &[u8], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let Some(section) = section else {
        return Some(raw.to_vec());
    };
    let message = MessageParser::default().parse(raw)?;
    let root = message.root_part();
    let header_end = (root.raw_body_offset() as usize).min(raw.len());
    let header = &raw[..header_end];
    let text = &raw[header_end..];
    Some(match section {
        Section::Header(None) => header.to_vec(),
        Section::Text(None) => text.to_vec(),
        Section::HeaderFields(None, names) => filter_header(header, names.as_ref(), true),
        Section::HeaderFieldsNot(None, names) => filter_header(header, names.as_ref(), false),
        Section::Part(part) => {
            // Part numbers within one message level (multipart nesting).
            let mut current = root;
            for n in part.0.as_ref() {
                match &current.body {
                    PartType::Multipart(children) => {
                        let id = *children.get(n.get() as usize - 1)?;
                        current = message.part(id)?;
                    }
                    _ if n.get() == 1 => {}
                    _ => return None,
                }
            }
            let (start, end) = (
                current.raw_body_offset() as usize,
                current.raw_end_offset() as usize,
            );
            raw.get(start..end.min(raw.len()))?.to_vec()
        }
        _ => return None,
    })
}

/// The header lines (with their continuations) whose name is (or is not) among `names`, and the
/// blank line that ends a header.
fn filter_header(header: &[u8], names: &[AString<'_>], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut take = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            let listed = names
                .iter()
                .any(|n| n.as_ref().eq_ignore_ascii_case(name.trim_ascii()));
            take = listed == keep;
        }
        if take {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<Address<'static>> {
    let Some(list) = list else {
        return Vec::new();
    };
    list.iter()
        .take(256)
        .map(|a| {
            let (mailbox, host) = match a.address.as_deref().and_then(|s| s.rsplit_once('@')) {
                Some((m, h)) => (Some(m), Some(h)),
                None => (a.address.as_deref(), None),
            };
            Address {
                name: nstring(a.name.as_deref()),
                adl: NString(None),
                mailbox: nstring(mailbox),
                host: nstring(host),
            }
        })
        .collect()
}

fn raw_header<'m>(message: &'m mail_parser::Message<'_>, name: &'static str) -> Option<&'m str> {
    message.header_raw(name).map(str::trim)
}

/// ENVELOPE of a message.
pub(crate) fn envelope(raw: &[u8]) -> Envelope<'static> {
    let Some(m) = MessageParser::default().parse(raw) else {
        return empty_envelope();
    };
    envelope_of(&m)
}

fn empty_envelope() -> Envelope<'static> {
    Envelope {
        date: NString(None),
        subject: NString(None),
        from: vec![],
        sender: vec![],
        reply_to: vec![],
        to: vec![],
        cc: vec![],
        bcc: vec![],
        in_reply_to: NString(None),
        message_id: NString(None),
    }
}

fn envelope_of(m: &mail_parser::Message<'_>) -> Envelope<'static> {
    let from = addresses(m.from());
    let sender = match m.sender() {
        Some(s) => addresses(Some(s)),
        None => from.clone(),
    };
    let reply_to = match m.reply_to() {
        Some(r) => addresses(Some(r)),
        None => from.clone(),
    };
    Envelope {
        date: nstring(raw_header(m, "Date")),
        subject: nstring(raw_header(m, "Subject")),
        from,
        sender,
        reply_to,
        to: addresses(m.to()),
        cc: addresses(m.cc()),
        bcc: addresses(m.bcc()),
        in_reply_to: nstring(raw_header(m, "In-Reply-To")),
        message_id: nstring(raw_header(m, "Message-ID")),
    }
}

/// BODYSTRUCTURE of a message (non-extensible form, as `BODY`).
pub(crate) fn body_structure(raw: &[u8]) -> BodyStructure<'static> {
    match MessageParser::default().parse(raw) {
        Some(m) => part_structure(&m, m.root_part(), raw, 0),
        None => text_plain(raw.len(), 0),
    }
}

fn text_plain(size: usize, lines: u32) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istring(b"charset"), istring(b"us-ascii"))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring(b"7bit"),
                size: size as u32,
            },
            specific: SpecificFields::Text {
                subtype: istring(b"plain"),
                number_of_lines: lines,
            },
        },
        extension_data: None,
    }
}

fn part_structure(
    m: &mail_parser::Message<'_>,
    part: &MessagePart<'_>,
    raw: &[u8],
    depth: usize,
) -> BodyStructure<'static> {
    let start = (part.raw_body_offset() as usize).min(raw.len());
    let end = (part.raw_end_offset() as usize).clamp(start, raw.len());
    let body = &raw[start..end];
    let lines = body.iter().filter(|b| **b == b'\n').count() as u32;
    let (ctype, subtype) = match part.content_type() {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("plain").to_ascii_lowercase(),
        ),
        None => ("text".to_owned(), "plain".to_owned()),
    };
    if let PartType::Multipart(children) = &part.body
        && depth < MAX_DEPTH
    {
        let bodies: Vec<BodyStructure<'static>> = children
            .iter()
            .filter_map(|id| m.part(*id))
            .map(|child| part_structure(m, child, raw, depth + 1))
            .collect();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            return BodyStructure::Multi {
                bodies,
                subtype: istring(subtype.as_bytes()),
                extension_data: None,
            };
        }
    }
    let parameter_list = part
        .content_type()
        .and_then(|ct| ct.attributes())
        .unwrap_or_default()
        .iter()
        .take(64)
        .map(|a| (istring(a.name.as_bytes()), istring(a.value.as_bytes())))
        .collect();
    let basic = BasicFields {
        parameter_list,
        id: nstring(part.content_id()),
        description: nstring(part.content_description()),
        content_transfer_encoding: istring(
            part.content_transfer_encoding()
                .unwrap_or("7bit")
                .to_ascii_lowercase()
                .as_bytes(),
        ),
        size: body.len() as u32,
    };
    let specific = match (&part.body, ctype.as_str()) {
        (PartType::Message(inner), _) if depth < MAX_DEPTH => SpecificFields::Message {
            envelope: Box::new(envelope_of(inner)),
            body_structure: Box::new(part_structure(
                inner,
                inner.root_part(),
                inner.raw_message(),
                depth + 1,
            )),
            number_of_lines: lines,
        },
        (_, "text") => SpecificFields::Text {
            subtype: istring(subtype.as_bytes()),
            number_of_lines: lines,
        },
        _ => SpecificFields::Basic {
            r#type: istring(ctype.as_bytes()),
            subtype: istring(subtype.as_bytes()),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: None,
    }
}

/// Whether answering these items needs the message bytes.
pub(crate) fn needs_bytes(names: &[MessageDataItemName<'_>]) -> bool {
    names.iter().any(|n| {
        !matches!(
            n,
            MessageDataItemName::Flags
                | MessageDataItemName::Uid
                | MessageDataItemName::Rfc822Size
                | MessageDataItemName::InternalDate
        )
    })
}

/// Whether these items set `\Seen` (BODY[...] without PEEK, RFC822, RFC822.TEXT).
pub(crate) fn sets_seen(names: &[MessageDataItemName<'_>]) -> bool {
    names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::BodyExt { peek: false, .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Text
        )
    })
}

/// The FETCH items of one message. `uid` adds `UID` when the names lack it (UID FETCH).
pub(crate) fn items(
    names: &[MessageDataItemName<'_>],
    meta: &MessageMeta,
    raw: Option<&[u8]>,
    uid: bool,
) -> Vec<MessageDataItem<'static>> {
    let raw = raw.unwrap_or_default();
    let mut out = Vec::new();
    if uid && !names.iter().any(|n| matches!(n, MessageDataItemName::Uid)) {
        out.push(crate::selected::uid_item(meta.uid));
    }
    for name in names {
        let item = match name {
            MessageDataItemName::Uid => crate::selected::uid_item(meta.uid),
            MessageDataItemName::Flags => flags_item(&meta.flags),
            MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(meta.size as u32),
            MessageDataItemName::InternalDate => {
                let date = meta.internal_date.fixed_offset();
                match imap_next::imap_types::datetime::DateTime::try_from(date) {
                    Ok(d) => MessageDataItem::InternalDate(d),
                    Err(_) => continue,
                }
            }
            MessageDataItemName::Envelope => MessageDataItem::Envelope(envelope(raw)),
            MessageDataItemName::BodyStructure => {
                MessageDataItem::BodyStructure(body_structure(raw))
            }
            MessageDataItemName::Body => MessageDataItem::Body(body_structure(raw)),
            MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(literal(raw)),
            MessageDataItemName::Rfc822Header => MessageDataItem::Rfc822Header(literal(
                &section_bytes(raw, Some(&Section::Header(None))).unwrap_or_default(),
            )),
            MessageDataItemName::Rfc822Text => MessageDataItem::Rfc822Text(literal(
                &section_bytes(raw, Some(&Section::Text(None))).unwrap_or_default(),
            )),
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let bytes = section_bytes(raw, section.as_ref()).unwrap_or_default();
                let (data, origin) = match partial {
                    Some((start, count)) => {
                        let s = (*start as usize).min(bytes.len());
                        let e = s.saturating_add(count.get() as usize).min(bytes.len());
                        (bytes[s..e].to_vec(), Some(*start))
                    }
                    None => (bytes, None),
                };
                MessageDataItem::BodyExt {
                    section: section
                        .clone()
                        .map(|s| imap_next::imap_types::ToStatic::to_static(&s)),
                    origin,
                    data: literal(&data),
                }
            }
            _ => continue,
        };
        out.push(item);
    }
    out
}

/// Message bytes as a literal (always a literal: exact bytes, CR and LF included).
fn literal(bytes: &[u8]) -> NString<'static> {
    match Literal::try_from(bytes.to_vec()) {
        Ok(l) => NString(Some(IString::Literal(l))),
        Err(_) => NString(Some(IString::Literal(Literal::unvalidated(bytes.to_vec())))),
    }
}
