//! S/MIME `multipart/signed` framing (RFC 1847 / RFC 8551): split a received message into the
//! signed content, exactly as received, and its detached signature; and the inverse, assemble an
//! [`UnsignedMessage`] and a detached signature into a `multipart/signed` message.
//!
//! This module does no cryptography: verifying the signature is the job of the signing crate.

use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;
use mail_parser::{HeaderName, MimeHeaders, PartType};

use crate::message::UnsignedMessage;

/// The two halves of a `multipart/signed` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedParts<'a> {
    /// Exact bytes of the first child of the top-level `multipart/signed`: its headers and body,
    /// exactly as received (`raw[part.raw_header_offset()..part.raw_end_offset()]`). Line ends
    /// are NOT canonicalised: a file stored with LF line ends yields LF here; converting to CRLF
    /// before hashing is the verifier's job.
    pub content: &'a [u8],
    /// DER of the second child (`smime.p7s` / `smime.p7m`), transfer-decoded.
    pub signature: Vec<u8>,
    /// The `protocol` parameter, lower-case, e.g. `application/pkcs7-signature` or
    /// `application/x-pkcs7-signature`. When the parameter is missing, the content type of the
    /// signature part is used instead.
    pub protocol: String,
    /// The `micalg` parameter, lower-case as given (`sha1`, `sha-256`, ...), if present.
    pub micalg: Option<String>,
}

/// Why a message could not be split into signed content and signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    /// The bytes are not a MIME message at all (no header could be read).
    #[error("not a MIME message: no header could be parsed")]
    Unparseable,
    /// The top-level content type is not `multipart/signed`.
    #[error(
        "not an S/MIME signed message: top-level Content-Type is {found}, not multipart/signed"
    )]
    NotSigned {
        /// The content type found (`type/subtype`, lower-case), or `none`.
        found: String,
    },
    /// The `multipart/signed` does not have the two children RFC 1847 requires.
    #[error("multipart/signed has {found} part(s); it needs the signed content and the signature")]
    MissingParts {
        /// How many child parts were found.
        found: usize,
    },
    /// A header that decides how the message is read appears more than once at the top level.
    /// Parsers disagree on which copy wins (mail-parser the last, others the first), so
    /// what one tool verifies could differ from what another displays: refused outright.
    #[error("the top-level header {name} appears {count} times; a signed PEC object has it once")]
    RepeatedHeader {
        /// The header's name.
        name: &'static str,
        /// How often it appears.
        count: usize,
    },
    /// Neither the `protocol` parameter nor the second part names a PKCS#7 signature.
    #[error(
        "unsupported signature protocol {0:?}: expected application/pkcs7-signature or application/x-pkcs7-signature"
    )]
    UnsupportedProtocol(String),
    /// The signature part could not be transfer-decoded (e.g. broken base64).
    #[error("the signature part could not be transfer-decoded")]
    UndecodableSignature,
    /// The signature part is empty.
    #[error("the signature part is empty")]
    EmptySignature,
    /// The signature is not a complete DER SEQUENCE (truncated or not DER at all).
    #[error("the signature is not a complete DER structure ({0})")]
    MalformedSignature(&'static str),
}

/// The signature protocols accepted on input (both spellings seen in real PEC traffic).
pub const ACCEPTED_PROTOCOLS: [&str; 2] = [
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
];

/// Split a received `multipart/signed` message into its signed content (exact bytes) and its
/// transfer-decoded detached signature. Never panics; every malformed input is a [`SignedError`].
pub fn split_signed(raw: &[u8]) -> Result<SignedParts<'_>, SignedError> {
    let layout = signed_layout(raw)?;
    // RFC 1847: exactly the signed content and the signature. A third part would travel
    // unsigned beside a valid signature (and a mail client would show it).
    if layout.children != 2 {
        return Err(SignedError::MissingParts {
            found: layout.children,
        });
    }
    let signature = layout.signature?;
    Ok(SignedParts {
        content: layout.content,
        signature,
        protocol: layout.protocol,
        micalg: layout.micalg,
    })
}

/// What [`split_signed`] found, with the signature kept as a separate result so the classifier
/// can still read the signed content when the signature is missing or truncated.
#[derive(Debug, Clone)]
pub(crate) struct SignedLayout<'a> {
    pub content: &'a [u8],
    /// How many children the `multipart/signed` has (RFC 1847: two).
    pub children: usize,
    pub protocol: String,
    pub micalg: Option<String>,
    pub signature: Result<Vec<u8>, SignedError>,
}

pub(crate) fn signed_layout(raw: &[u8]) -> Result<SignedLayout<'_>, SignedError> {
    let message = crate::mime::parse(raw).ok_or(SignedError::Unparseable)?;
    let root = message.parts.first().ok_or(SignedError::Unparseable)?;
    for (header, name) in [
        (HeaderName::ContentType, "Content-Type"),
        (HeaderName::MimeVersion, "MIME-Version"),
        (
            HeaderName::ContentTransferEncoding,
            "Content-Transfer-Encoding",
        ),
    ] {
        let count = root.headers.iter().filter(|h| h.name == header).count();
        if count > 1 {
            return Err(SignedError::RepeatedHeader { name, count });
        }
    }
    let ct = root.content_type();
    let found = ct
        .map(|c| match c.subtype() {
            Some(sub) => format!("{}/{}", c.ctype(), sub).to_ascii_lowercase(),
            None => c.ctype().to_ascii_lowercase(),
        })
        .unwrap_or_else(|| "none".to_string());
    if found != "multipart/signed" {
        return Err(SignedError::NotSigned { found });
    }
    let protocol_param = ct
        .and_then(|c| c.attribute("protocol"))
        .map(|p| p.trim().to_ascii_lowercase());
    let micalg = ct
        .and_then(|c| c.attribute("micalg"))
        .map(|m| m.trim().to_ascii_lowercase());

    let children: &[u32] = match &root.body {
        PartType::Multipart(ids) => ids,
        _ => &[],
    };
    let first = children
        .first()
        .and_then(|id| message.parts.get(*id as usize))
        .ok_or(SignedError::MissingParts { found: 0 })?;
    let content = raw
        .get(first.raw_header_offset() as usize..first.raw_end_offset() as usize)
        .ok_or(SignedError::MissingParts { found: 0 })?;

    let second = children
        .get(1)
        .and_then(|id| message.parts.get(*id as usize));
    let second_type = second
        .and_then(|p| p.content_type())
        .map(|c| match c.subtype() {
            Some(sub) => format!("{}/{}", c.ctype(), sub).to_ascii_lowercase(),
            None => c.ctype().to_ascii_lowercase(),
        });
    let protocol = protocol_param
        .clone()
        .or_else(|| second_type.clone())
        .unwrap_or_default();

    let signature = match second {
        None => Err(SignedError::MissingParts {
            found: children.len(),
        }),
        Some(_) if !ACCEPTED_PROTOCOLS.contains(&protocol.as_str()) => {
            Err(SignedError::UnsupportedProtocol(protocol.clone()))
        }
        Some(part) if part.is_encoding_problem => Err(SignedError::UndecodableSignature),
        Some(part) => match &part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => check_der(b).map(|()| b.to_vec()),
            // A signature part that was not recognised as binary (odd content type): take the
            // transfer-decoded bytes as they are and let the DER check decide.
            PartType::Text(t) | PartType::Html(t) => {
                check_der(t.as_bytes()).map(|()| t.as_bytes().to_vec())
            }
            PartType::Message(_) | PartType::Multipart(_) => Err(SignedError::MalformedSignature(
                "the signature part is not a leaf part",
            )),
        },
    };
    Ok(SignedLayout {
        content,
        children: children.len(),
        protocol,
        micalg,
        signature,
    })
}

/// Cheap structural check that `der` is exactly one complete DER SEQUENCE (what a CMS
/// `ContentInfo` is). It does not decode the CMS structure: the verifier does that.
fn check_der(der: &[u8]) -> Result<(), SignedError> {
    let (&tag, rest) = der.split_first().ok_or(SignedError::EmptySignature)?;
    if tag != 0x30 {
        return Err(SignedError::MalformedSignature(
            "does not start with a SEQUENCE",
        ));
    }
    let (&first_len, rest) = rest
        .split_first()
        .ok_or(SignedError::MalformedSignature("length missing"))?;
    let (len, rest) = if first_len < 0x80 {
        (first_len as usize, rest)
    } else {
        let n = (first_len & 0x7f) as usize;
        if n == 0 {
            return Err(SignedError::MalformedSignature(
                "indefinite length (BER, not DER)",
            ));
        }
        if n > 4 {
            return Err(SignedError::MalformedSignature("length field too long"));
        }
        let bytes = rest
            .get(..n)
            .ok_or(SignedError::MalformedSignature("length truncated"))?;
        let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, rest.get(n..).unwrap_or_default())
    };
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(SignedError::MalformedSignature("truncated")),
        std::cmp::Ordering::Greater => Err(SignedError::MalformedSignature(
            "trailing bytes after the SEQUENCE",
        )),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Assemble `message` and a detached CMS signature over `message.entity` into a complete
/// `multipart/signed` message: top-level headers, `MIME-Version`, the `multipart/signed`
/// content type (`protocol="application/pkcs7-signature"; micalg=sha-256`), the entity verbatim
/// and `smime.p7s` (base64).
///
/// The boundary is the caller's, so the output is deterministic. The caller must make sure the
/// boundary does not occur in the entity (boundaries made from [`crate::ids::IdSource`] tokens
/// with a prefix that the builders never use inside entities are safe).
///
/// This is the one framing of every `multipart/signed` the provider emits: `pec-smime`'s
/// `sign_message` calls it with the real signature (and a boundary absent from the entity).
pub fn assemble_signed(message: &UnsignedMessage, signature_der: &[u8], boundary: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.entity.len() + signature_der.len() * 2 + 1024);
    for (name, value) in &message.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    let signed = MimePart::new(
        ContentType::new("multipart/signed")
            .attribute("protocol", "application/pkcs7-signature")
            .attribute("micalg", "sha-256")
            .attribute("boundary", boundary.to_string()),
        vec![
            MimePart::raw(message.entity.as_slice()),
            MimePart::new(
                ContentType::new("application/pkcs7-signature").attribute("name", "smime.p7s"),
                signature_der,
            )
            .header(
                "Content-Disposition",
                ContentType::new("attachment").attribute("filename", "smime.p7s"),
            ),
        ],
    );
    // Writing into a Vec cannot fail.
    let _ = signed.write_part(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_check() {
        assert_eq!(check_der(&[]), Err(SignedError::EmptySignature));
        assert!(check_der(&[0x30, 0x00]).is_ok());
        assert!(check_der(&[0x30, 0x01, 0x05]).is_ok());
        assert!(matches!(
            check_der(&[0x30, 0x02, 0x05]),
            Err(SignedError::MalformedSignature("truncated"))
        ));
        assert!(check_der(&[0x30, 0x81, 0x01, 0x00]).is_ok());
        assert!(matches!(
            check_der(&[0x30, 0x80, 0x00]),
            Err(SignedError::MalformedSignature(_))
        ));
        assert!(matches!(
            check_der(&[0x04, 0x00]),
            Err(SignedError::MalformedSignature(_))
        ));
    }

    #[test]
    fn not_signed() {
        let raw = b"From: a@b.it\r\nContent-Type: text/plain\r\n\r\nhello\r\n";
        assert!(matches!(
            split_signed(raw),
            Err(SignedError::NotSigned { found }) if found == "text/plain"
        ));
        assert!(split_signed(b"").is_err());
    }
}
