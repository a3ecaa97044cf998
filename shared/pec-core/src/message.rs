//! The output of every builder: top-level headers plus the MIME entity to be signed.

/// A provider message ready to be signed: the signer wraps [`UnsignedMessage::entity`] in a
/// `multipart/signed` (`protocol="application/pkcs7-signature"; micalg=sha-256`) with
/// `smime.p7s`, and writes [`UnsignedMessage::headers`] above it together with its own
/// `MIME-Version` and `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedMessage {
    /// Top-level headers in emission order (`Received`*, `Date`, `From`, `Reply-To`, `To`, `Cc`,
    /// `Subject`, `Message-ID`, `X-Riferimento-Message-ID`, `X-Ricevuta`/`X-Trasporto`,
    /// `X-TipoRicevuta`, `X-VerificaSicurezza`).
    ///
    /// Values are ready to be written as `Name: value\r\n`: non-ASCII text is already RFC 2047
    /// encoded, and long values may already be folded (a value may contain `\r\n` followed by a
    /// space or tab; never a bare line break). `MIME-Version` and the outer `Content-Type` are NOT
    /// included: the signer adds them.
    pub headers: Vec<(String, String)>,
    /// The MIME entity that is signed: a `multipart/mixed` starting with its own `Content-Type`
    /// header, with CRLF line ends throughout.
    pub entity: Vec<u8>,
}

impl UnsignedMessage {
    /// The first header called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The golden-file form: every header as `Name: value\r\n`, then `MIME-Version: 1.0\r\n`,
    /// then the entity verbatim. The result is itself a valid (unsigned) RFC 5322 message whose
    /// body is the `multipart/mixed` entity, so it can be parsed and classified.
    ///
    /// This is also how a step hands a message to the signer: it stores `render()` under
    /// `unsigned/…` and the sign function reads it back with [`UnsignedMessage::from_rendered`].
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entity.len() + 1024);
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        out.extend_from_slice(&self.entity);
        out
    }
}

/// Why bytes are not the [`UnsignedMessage::render`] form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderedError {
    /// No `MIME-Version: 1.0` line separates the top-level headers from the entity.
    #[error("no MIME-Version line between the top-level headers and the entity")]
    NoMimeVersion,
    /// A top-level header line is not `Name: value` (or a continuation of one).
    #[error("top-level header line {line} is not `Name: value`")]
    BadHeader {
        /// 1-based line number.
        line: usize,
    },
    /// Header bytes that are not ASCII.
    #[error("top-level headers must be ASCII")]
    NotAscii,
    /// The entity after `MIME-Version` is empty.
    #[error("the entity is empty")]
    EmptyEntity,
}

impl UnsignedMessage {
    /// Reads back what [`UnsignedMessage::render`] wrote: the headers up to the first
    /// `MIME-Version: 1.0` line (folded values kept as written), then the entity, byte for byte.
    pub fn from_rendered(bytes: &[u8]) -> Result<Self, RenderedError> {
        const MARKER: &[u8] = b"MIME-Version: 1.0\r\n";
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut pos = 0;
        let mut line_no = 0;
        loop {
            if bytes[pos..].starts_with(MARKER) {
                let entity = bytes[pos + MARKER.len()..].to_vec();
                if entity.is_empty() {
                    return Err(RenderedError::EmptyEntity);
                }
                return Ok(UnsignedMessage { headers, entity });
            }
            let rest = &bytes[pos..];
            let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                return Err(RenderedError::NoMimeVersion);
            };
            line_no += 1;
            let line = std::str::from_utf8(&rest[..end]).map_err(|_| RenderedError::NotAscii)?;
            if !line.is_ascii() {
                return Err(RenderedError::NotAscii);
            }
            if line.starts_with([' ', '\t']) {
                let (_, value) = headers
                    .last_mut()
                    .ok_or(RenderedError::BadHeader { line: line_no })?;
                value.push_str("\r\n");
                value.push_str(line);
            } else {
                let (name, value) = line
                    .split_once(": ")
                    .filter(|(n, _)| !n.is_empty() && !n.contains([' ', '\t']))
                    .ok_or(RenderedError::BadHeader { line: line_no })?;
                headers.push((name.to_string(), value.to_string()));
            }
            pos += end + 2;
        }
    }
}

#[cfg(test)]
mod rendered_tests {
    use super::*;

    fn sample() -> UnsignedMessage {
        UnsignedMessage {
            headers: vec![
                ("From".into(), "posta-certificata@pec.example.test".into()),
                (
                    "Subject".into(),
                    "ACCETTAZIONE: =?utf-8?q?perch=C3=A9?=\r\n =?utf-8?q?_continua?=".into(),
                ),
                ("X-Ricevuta".into(), "accettazione".into()),
            ],
            entity: b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nMIME-Version: 1.0\r\n--b--\r\n".to_vec(),
        }
    }

    #[test]
    fn render_round_trips() {
        let m = sample();
        assert_eq!(UnsignedMessage::from_rendered(&m.render()), Ok(m));
    }

    #[test]
    fn malformed_forms_are_specific_errors() {
        assert_eq!(
            UnsignedMessage::from_rendered(b"From: a@b\r\n"),
            Err(RenderedError::NoMimeVersion)
        );
        assert_eq!(
            UnsignedMessage::from_rendered(b" folded\r\nMIME-Version: 1.0\r\nx"),
            Err(RenderedError::BadHeader { line: 1 })
        );
        assert_eq!(
            UnsignedMessage::from_rendered(b"From: a@b\r\nMIME-Version: 1.0\r\n"),
            Err(RenderedError::EmptyEntity)
        );
        assert_eq!(
            UnsignedMessage::from_rendered("From: \u{e9}\r\nMIME-Version: 1.0\r\nx".as_bytes()),
            Err(RenderedError::NotAscii)
        );
    }
}
