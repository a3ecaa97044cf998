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
