//! The provider index (Indice dei Gestori PEC, IGPEC), RFC 6109 schema, read from LDIF.
//!
//! One `provider` entry per provider (objectClass OID 1.3.6.1.4.1.16572.2.1.2) with
//! `providerName`, `managedDomains` (multi-valued), `mailReceipt`, `providerCertificateHash` and
//! `providerCertificate` (`;binary`). The index answers "is this domain PEC, and whose" and "is
//! this certificate a listed provider certificate".
//!
//! LDIF (RFC 2849) handled: `version:`, comments, line folding (a line starting with one space
//! continues the previous one), `attr: value`, `attr:: base64`, attribute options
//! (`providerCertificate;binary::`), CRLF or LF line ends, case-insensitive attribute names,
//! records separated by blank lines, `changetype: add`. `attr:< URL` values are refused (the
//! library does no IO).
//!
//! `providerCertificateHash` is, as far as the sources tell, the SHA-1 of the DER certificate;
//! its textual form is not documented, so hex (any case, with or without `:`/spaces, optionally
//! prefixed `sha1:`/`sha-256:`...) and base64 of the raw hash are all accepted; a 20-byte value
//! is taken as SHA-1, a 32-byte value as SHA-256.

use std::collections::HashMap;

use base64::Engine;
use sha2::Digest;

/// Object class of provider entries (RFC 6109).
pub const PROVIDER_OBJECT_CLASS: &str = "provider";

/// Why an LDIF text could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    /// The text is not UTF-8.
    #[error("LDIF is not UTF-8 text (byte {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// A line is not `attribute: value`.
    #[error("LDIF line {line}: expected `attribute: value`")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// A continuation line with nothing before it.
    #[error("LDIF line {line}: continuation line without a preceding line")]
    DanglingContinuation {
        /// 1-based line number.
        line: usize,
    },
    /// A record that does not start with `dn:`.
    #[error("LDIF line {line}: a record must start with `dn:`")]
    MissingDn {
        /// 1-based line number.
        line: usize,
    },
    /// Bad base64 in a `::` value.
    #[error("LDIF line {line}: invalid base64 value for {attribute}")]
    Base64 {
        /// 1-based line number.
        line: usize,
        /// Attribute name.
        attribute: String,
    },
    /// `attr:< URL` values are not supported.
    #[error("LDIF line {line}: URL values (`{attribute}:<`) are not supported")]
    UrlValue {
        /// 1-based line number.
        line: usize,
        /// Attribute name.
        attribute: String,
    },
    /// A text attribute whose value is not UTF-8.
    #[error("LDIF line {line}: value of {attribute} is not UTF-8 text")]
    NotText {
        /// 1-based line number.
        line: usize,
        /// Attribute name.
        attribute: String,
    },
    /// A change record other than `add`.
    #[error("LDIF line {line}: change records ({changetype}) are not supported")]
    ChangeRecord {
        /// 1-based line number.
        line: usize,
        /// The change type.
        changetype: String,
    },
    /// A provider entry without providerName.
    #[error("provider entry {dn:?} has no providerName")]
    MissingProviderName {
        /// The entry's DN.
        dn: String,
    },
    /// A providerCertificate value that is neither DER, PEM nor base64 of DER.
    #[error("provider entry {dn:?}: providerCertificate is not a certificate")]
    BadCertificate {
        /// The entry's DN.
        dn: String,
    },
}

/// How the signer certificate was found in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// The full providerCertificate is the same DER.
    Certificate,
    /// providerCertificateHash is the SHA-1 of the DER certificate.
    Sha1Hash,
    /// providerCertificateHash is the SHA-256 of the DER certificate.
    Sha256Hash,
}

/// A match of a certificate in the index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IndexMatch {
    /// The provider's name.
    pub provider_name: String,
    /// The entry's DN.
    pub dn: String,
    /// How it matched.
    pub matched_by: MatchedBy,
}

/// A certificate hash from providerCertificateHash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateHash {
    /// 20 bytes.
    Sha1([u8; 20]),
    /// 32 bytes.
    Sha256([u8; 32]),
    /// A value this reader cannot interpret (kept for reports; never matches).
    Unrecognised(String),
}

/// One provider entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderEntry {
    /// Distinguished name of the entry.
    pub dn: String,
    /// providerName.
    pub provider_name: String,
    /// managedDomains, lower-case, in file order.
    pub managed_domains: Vec<String>,
    /// mailReceipt: where presa in carico receipts for this provider go.
    pub mail_receipt: Option<String>,
    /// providerCertificateHash values.
    pub certificate_hashes: Vec<CertificateHash>,
    /// providerCertificate values (DER).
    pub certificates: Vec<Vec<u8>>,
    /// providerUnit.
    pub provider_unit: Option<String>,
    /// description.
    pub description: Option<String>,
    /// LDIFLocationURL.
    pub ldif_location_url: Option<String>,
}

/// The provider index.
#[derive(Clone, Debug, Default)]
pub struct ProviderIndex {
    entries: Vec<ProviderEntry>,
    domains: HashMap<String, usize>,
}

fn normalise_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl ProviderIndex {
    /// An index from entries (the first entry listing a domain wins).
    pub fn from_entries(entries: Vec<ProviderEntry>) -> Self {
        let mut domains = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for d in &e.managed_domains {
                domains.entry(normalise_domain(d)).or_insert(i);
            }
        }
        Self { entries, domains }
    }

    /// Reads an LDIF export of the index. Entries that are not providers (no `provider`
    /// objectClass and no providerName: base entries, organisational units) are ignored.
    pub fn from_ldif(ldif: &[u8]) -> Result<Self, IndexError> {
        let records = parse_ldif(ldif)?;
        let mut entries = Vec::new();
        for record in records {
            if let Some(entry) = provider_from_record(record)? {
                entries.push(entry);
            }
        }
        Ok(Self::from_entries(entries))
    }

    /// All provider entries.
    pub fn entries(&self) -> &[ProviderEntry] {
        &self.entries
    }

    /// The provider managing `domain` (exact domain, case-insensitive), if it is a PEC domain.
    pub fn provider_for_domain(&self, domain: &str) -> Option<&ProviderEntry> {
        self.domains
            .get(&normalise_domain(domain))
            .and_then(|&i| self.entries.get(i))
    }

    /// Whether `domain` is a PEC domain.
    pub fn is_pec_domain(&self, domain: &str) -> bool {
        self.provider_for_domain(domain).is_some()
    }

    /// The provider managing the domain of an e-mail address (`local@domain`).
    pub fn provider_for_address(&self, address: &str) -> Option<&ProviderEntry> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let (_, domain) = address.rsplit_once('@')?;
        self.provider_for_domain(domain)
    }

    /// Whether a DER certificate is a listed provider certificate: by full certificate first,
    /// then by SHA-1 or SHA-256 hash of the DER.
    pub fn provider_for_certificate(&self, cert_der: &[u8]) -> Option<IndexMatch> {
        let found = |e: &ProviderEntry, by| IndexMatch {
            provider_name: e.provider_name.clone(),
            dn: e.dn.clone(),
            matched_by: by,
        };
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.certificates.iter().any(|c| c == cert_der))
        {
            return Some(found(e, MatchedBy::Certificate));
        }
        let sha1: [u8; 20] = sha1::Sha1::digest(cert_der).into();
        let sha256: [u8; 32] = sha2::Sha256::digest(cert_der).into();
        for e in &self.entries {
            for h in &e.certificate_hashes {
                match h {
                    CertificateHash::Sha1(v) if *v == sha1 => {
                        return Some(found(e, MatchedBy::Sha1Hash));
                    }
                    CertificateHash::Sha256(v) if *v == sha256 => {
                        return Some(found(e, MatchedBy::Sha256Hash));
                    }
                    _ => {}
                }
            }
        }
        None
    }
}

/// An attribute value: text or binary (from `::`).
struct Value {
    bytes: Vec<u8>,
    line: usize,
    base64: bool,
}

struct Record {
    dn: String,
    line: usize,
    /// (lower-case attribute name without options, value)
    attrs: Vec<(String, Value)>,
}

/// Logical lines (folding undone) with their 1-based starting line numbers.
fn logical_lines(text: &str) -> Result<Vec<(usize, String)>, IndexError> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut in_comment = false;
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let n = i + 1;
        if let Some(cont) = line.strip_prefix(' ') {
            if in_comment {
                continue;
            }
            match out.last_mut() {
                Some((_, prev)) if !prev.is_empty() => prev.push_str(cont),
                _ => return Err(IndexError::DanglingContinuation { line: n }),
            }
            continue;
        }
        in_comment = line.starts_with('#');
        if in_comment {
            continue;
        }
        out.push((n, line.to_string()));
    }
    Ok(out)
}

fn parse_ldif(ldif: &[u8]) -> Result<Vec<Record>, IndexError> {
    let text = std::str::from_utf8(ldif).map_err(|e| IndexError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut current: Option<Record> = None;
    let mut first = true;
    for (n, line) in logical_lines(text)? {
        if line.is_empty() {
            if let Some(r) = current.take() {
                records.push(r);
            }
            continue;
        }
        let (desc, value) = parse_line(n, &line)?;
        if current.is_none() {
            if first && desc == "version" {
                first = false;
                continue;
            }
            first = false;
            if desc != "dn" {
                return Err(IndexError::MissingDn { line: n });
            }
            let dn = String::from_utf8(value.bytes).map_err(|_| IndexError::NotText {
                line: n,
                attribute: "dn".into(),
            })?;
            current = Some(Record {
                dn,
                line: n,
                attrs: Vec::new(),
            });
            continue;
        }
        if desc == "changetype" {
            let ct = String::from_utf8_lossy(&value.bytes)
                .trim()
                .to_ascii_lowercase();
            if ct != "add" {
                return Err(IndexError::ChangeRecord {
                    line: n,
                    changetype: ct,
                });
            }
            continue;
        }
        if let Some(r) = current.as_mut() {
            r.attrs.push((desc, value));
        }
    }
    if let Some(r) = current.take() {
        records.push(r);
    }
    Ok(records)
}

/// Splits `attr[;options]: value` / `attr[;options]:: base64` into the lower-case attribute
/// name (options dropped) and the value.
fn parse_line(n: usize, line: &str) -> Result<(String, Value), IndexError> {
    let (desc, rest) = line.split_once(':').ok_or(IndexError::Syntax { line: n })?;
    let name = desc
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(IndexError::Syntax { line: n });
    }
    if let Some(b64) = rest.strip_prefix(':') {
        let clean: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(clean.as_bytes())
            .map_err(|_| IndexError::Base64 {
                line: n,
                attribute: name.clone(),
            })?;
        return Ok((
            name,
            Value {
                bytes,
                line: n,
                base64: true,
            },
        ));
    }
    if rest.starts_with('<') {
        return Err(IndexError::UrlValue {
            line: n,
            attribute: name,
        });
    }
    Ok((
        name,
        Value {
            bytes: rest.trim_start_matches(' ').as_bytes().to_vec(),
            line: n,
            base64: false,
        },
    ))
}

fn text(attr: &str, v: &Value) -> Result<String, IndexError> {
    String::from_utf8(v.bytes.clone()).map_err(|_| IndexError::NotText {
        line: v.line,
        attribute: attr.to_string(),
    })
}

fn parse_hash(v: &Value) -> CertificateHash {
    let raw = |b: &[u8]| match b.len() {
        20 => <[u8; 20]>::try_from(b).ok().map(CertificateHash::Sha1),
        32 => <[u8; 32]>::try_from(b).ok().map(CertificateHash::Sha256),
        _ => None,
    };
    let as_text = std::str::from_utf8(&v.bytes).ok();
    if let Some(t) = as_text {
        let t = t.trim();
        let lower = t.to_ascii_lowercase();
        let body = [
            "sha1:", "sha-1:", "sha256:", "sha-256:", "{sha}", "{sha256}",
        ]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .unwrap_or(&lower)
        .trim();
        let hex: String = body
            .chars()
            .filter(|c| !matches!(c, ':' | ' ' | '-'))
            .collect();
        if (hex.len() == 40 || hex.len() == 64) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            if let Some(h) = bytes.as_deref().and_then(raw) {
                return h;
            }
        }
        if !v.base64
            && let Ok(b) = base64::engine::general_purpose::STANDARD.decode(t.as_bytes())
            && let Some(h) = raw(&b)
        {
            return h;
        }
    }
    if v.base64
        && let Some(h) = raw(&v.bytes)
    {
        return h;
    }
    CertificateHash::Unrecognised(String::from_utf8_lossy(&v.bytes).into_owned())
}

fn parse_certificate(v: &Value) -> Option<Vec<u8>> {
    if v.bytes.first() == Some(&0x30) {
        return Some(v.bytes.clone());
    }
    let t = std::str::from_utf8(&v.bytes).ok()?.trim();
    if t.starts_with("-----BEGIN") {
        return der::pem::decode_vec(t.as_bytes()).ok().map(|(_, d)| d);
    }
    let clean: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .ok()
        .filter(|d| d.first() == Some(&0x30))
}

fn provider_from_record(r: Record) -> Result<Option<ProviderEntry>, IndexError> {
    let is_provider = r.attrs.iter().any(|(a, v)| {
        (a == "objectclass"
            && v.bytes
                .eq_ignore_ascii_case(PROVIDER_OBJECT_CLASS.as_bytes()))
            || a == "providername"
    });
    if !is_provider {
        return Ok(None);
    }
    let _ = r.line;
    let mut e = ProviderEntry {
        dn: r.dn.clone(),
        provider_name: String::new(),
        managed_domains: Vec::new(),
        mail_receipt: None,
        certificate_hashes: Vec::new(),
        certificates: Vec::new(),
        provider_unit: None,
        description: None,
        ldif_location_url: None,
    };
    for (a, v) in &r.attrs {
        match a.as_str() {
            "providername" if e.provider_name.is_empty() => {
                e.provider_name = text(a, v)?.trim().to_string()
            }
            "manageddomains" => {
                let d = normalise_domain(&text(a, v)?);
                if !d.is_empty() && !e.managed_domains.contains(&d) {
                    e.managed_domains.push(d);
                }
            }
            "mailreceipt" if e.mail_receipt.is_none() => {
                e.mail_receipt = Some(text(a, v)?.trim().to_string())
            }
            "providercertificatehash" => e.certificate_hashes.push(parse_hash(v)),
            "providercertificate" => {
                let der = parse_certificate(v)
                    .ok_or_else(|| IndexError::BadCertificate { dn: r.dn.clone() })?;
                e.certificates.push(der);
            }
            "providerunit" if e.provider_unit.is_none() => {
                e.provider_unit = Some(text(a, v)?.trim().to_string())
            }
            "description" if e.description.is_none() => {
                e.description = Some(text(a, v)?.trim().to_string())
            }
            "ldiflocationurl" if e.ldif_location_url.is_none() => {
                e.ldif_location_url = Some(text(a, v)?.trim().to_string())
            }
            _ => {}
        }
    }
    if e.provider_name.is_empty() {
        // The naming attribute of provider entries is providerName: take it from the DN.
        let first_rdn = r.dn.split(',').next().unwrap_or("");
        match first_rdn.split_once('=') {
            Some((attr, value)) if attr.trim().eq_ignore_ascii_case("providername") => {
                e.provider_name = value.trim().to_string();
            }
            _ => return Err(IndexError::MissingProviderName { dn: r.dn }),
        }
    }
    Ok(Some(e))
}

/// Whether an LDIF value can be written as `attr: value` (RFC 2849 SAFE-STRING).
fn is_safe_string(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        None => true,
        Some(b' ' | b':' | b'<') => false,
        Some(_) => {
            b.last() != Some(&b' ')
                && b.iter()
                    .all(|&c| c.is_ascii() && c != 0 && c != b'\r' && c != b'\n')
        }
    }
}

/// Escapes an RDN attribute value (RFC 4514 §2.4).
pub fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Writes one `attr: value` line (or `attr:: base64`), folded at 76 columns.
fn push_attr(out: &mut String, attr: &str, value: &[u8]) {
    let line = match std::str::from_utf8(value) {
        Ok(s) if is_safe_string(s) => format!("{attr}: {s}"),
        _ => format!(
            "{attr}:: {}",
            base64::engine::general_purpose::STANDARD.encode(value)
        ),
    };
    let mut chars = line.chars().peekable();
    let mut col = 0;
    let mut first = true;
    while let Some(c) = chars.next() {
        out.push(c);
        col += 1;
        if col >= if first { 76 } else { 75 } && chars.peek().is_some() {
            out.push_str("\n ");
            col = 0;
            first = false;
        }
    }
    out.push('\n');
}

impl ProviderEntry {
    /// An entry for a provider certificate, with providerCertificateHash = SHA-1 (hex) of the
    /// DER certificate; the DN is `providerName=<name>,<base_dn>`.
    pub fn for_certificate(
        provider_name: &str,
        base_dn: &str,
        managed_domains: Vec<String>,
        mail_receipt: Option<String>,
        cert_der: &[u8],
    ) -> Self {
        let sha1: [u8; 20] = sha1::Sha1::digest(cert_der).into();
        Self {
            dn: format!("providerName={},{base_dn}", escape_dn_value(provider_name)),
            provider_name: provider_name.to_string(),
            managed_domains: managed_domains
                .iter()
                .map(|d| normalise_domain(d))
                .collect(),
            mail_receipt,
            certificate_hashes: vec![CertificateHash::Sha1(sha1)],
            certificates: vec![cert_der.to_vec()],
            provider_unit: None,
            description: None,
            ldif_location_url: None,
        }
    }

    /// The entry as an LDIF record (LF line ends, terminated by a blank line).
    pub fn to_ldif(&self) -> String {
        let mut out = String::new();
        push_attr(&mut out, "dn", self.dn.as_bytes());
        push_attr(&mut out, "objectClass", b"top");
        push_attr(&mut out, "objectClass", PROVIDER_OBJECT_CLASS.as_bytes());
        push_attr(&mut out, "providerName", self.provider_name.as_bytes());
        if let Some(u) = &self.provider_unit {
            push_attr(&mut out, "providerUnit", u.as_bytes());
        }
        if let Some(d) = &self.description {
            push_attr(&mut out, "description", d.as_bytes());
        }
        for d in &self.managed_domains {
            push_attr(&mut out, "managedDomains", d.as_bytes());
        }
        if let Some(m) = &self.mail_receipt {
            push_attr(&mut out, "mailReceipt", m.as_bytes());
        }
        for h in &self.certificate_hashes {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
            let v = match h {
                CertificateHash::Sha1(b) => hex(b),
                CertificateHash::Sha256(b) => hex(b),
                CertificateHash::Unrecognised(s) => s.clone(),
            };
            push_attr(&mut out, "providerCertificateHash", v.as_bytes());
        }
        for c in &self.certificates {
            let line = format!(
                "providerCertificate;binary:: {}",
                base64::engine::general_purpose::STANDARD.encode(c)
            );
            push_attr_raw(&mut out, &line);
        }
        if let Some(u) = &self.ldif_location_url {
            push_attr(&mut out, "LDIFLocationURL", u.as_bytes());
        }
        out.push('\n');
        out
    }
}

fn push_attr_raw(out: &mut String, line: &str) {
    let mut col = 0;
    let mut first = true;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        col += 1;
        if col >= if first { 76 } else { 75 } && chars.peek().is_some() {
            out.push_str("\n ");
            col = 0;
            first = false;
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "version: 1\r
# IGPEC export\r
#  folded comment line\r
\r
dn: o=postacert\r
objectClass: top\r
objectClass: organization\r
o: postacert\r
\r
dn: providerName=ARUBA PEC,o=postacert\r
objectClass: top\r
objectClass: provider\r
providerName: ARUBA PEC\r
managedDomains: pec.aruba.it\r
managedDomains: PEC.IT\r
managedDomains:: Y2VydC5sZWdhbG1haWwuaXQ=\r
mailReceipt: posta-certificata@pec.aruba.it\r
providerCertificateHash: B9:44:4B:A4:D5:28:80:FB:BE:4C:3C:0C:55:BF:81:E3:23:AD:DF:8B\r
description: a long description that is folded over\r
  two lines\r
\r
dn: providerName=Esempio,o=postacert\r
objectclass: provider\r
manageddomains: pec.esempio.it\r
providerCertificateHash:: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r
";

    #[test]
    fn parses_sample() {
        let idx = ProviderIndex::from_ldif(SAMPLE.as_bytes()).unwrap();
        assert_eq!(idx.entries().len(), 2);
        let aruba = idx.provider_for_domain("pec.it").unwrap();
        assert_eq!(aruba.provider_name, "ARUBA PEC");
        assert_eq!(
            aruba.managed_domains,
            vec!["pec.aruba.it", "pec.it", "cert.legalmail.it"]
        );
        assert_eq!(
            aruba.description.as_deref(),
            Some("a long description that is folded over two lines")
        );
        assert!(matches!(aruba.certificate_hashes[0], CertificateHash::Sha1(h) if h[0] == 0xB9));
        assert!(idx.is_pec_domain("PEC.Aruba.it."));
        assert!(!idx.is_pec_domain("gmail.com"));
        assert_eq!(
            idx.provider_for_address("<mario.rossi@pec.esempio.it>")
                .unwrap()
                .provider_name,
            "Esempio"
        );
        let esempio = idx.provider_for_domain("pec.esempio.it").unwrap();
        assert!(matches!(
            esempio.certificate_hashes[0],
            CertificateHash::Sha256(h) if h[31] == 0x1f
        ));
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(
            ProviderIndex::from_ldif(b"objectClass: provider\n").unwrap_err(),
            IndexError::MissingDn { line: 1 }
        );
        assert_eq!(
            ProviderIndex::from_ldif(b" continued\n").unwrap_err(),
            IndexError::DanglingContinuation { line: 1 }
        );
        assert!(matches!(
            ProviderIndex::from_ldif(b"dn: x\nproviderCertificate:< file:///c.der\n").unwrap_err(),
            IndexError::UrlValue { line: 2, .. }
        ));
        assert!(matches!(
            ProviderIndex::from_ldif(b"dn: x\nproviderName:: !!!\n").unwrap_err(),
            IndexError::Base64 { line: 2, .. }
        ));
        assert!(matches!(
            ProviderIndex::from_ldif(b"dn: x\nno colon here\n").unwrap_err(),
            IndexError::Syntax { line: 2 }
        ));
        assert!(matches!(
            ProviderIndex::from_ldif(b"dn: cn=x\nobjectClass: provider\n").unwrap_err(),
            IndexError::MissingProviderName { .. }
        ));
        assert!(ProviderIndex::from_ldif(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn entry_roundtrip() {
        let fake_cert: Vec<u8> = std::iter::once(0x30u8).chain(0..=255u8).collect();
        let e = ProviderEntry::for_certificate(
            "Società Esempio, S.p.A.",
            "o=postacert",
            vec!["PEC.Esempio.it".into(), "esempio-pec.it".into()],
            Some("posta-certificata@pec.esempio.it".into()),
            &fake_cert,
        );
        let ldif = e.to_ldif();
        assert!(ldif.lines().all(|l| l.len() <= 76), "{ldif}");
        let idx = ProviderIndex::from_ldif(ldif.as_bytes()).unwrap();
        assert_eq!(idx.entries(), std::slice::from_ref(&e));
        assert_eq!(
            idx.entries()[0].dn,
            "providerName=Società Esempio\\, S.p.A.,o=postacert"
        );
        assert!(ldif.contains("dn:: "), "non-ASCII DN goes base64: {ldif}");
        let m = idx.provider_for_certificate(&fake_cert).unwrap();
        assert_eq!(m.matched_by, MatchedBy::Certificate);
        // Hash-only entry matches by SHA-1.
        let mut hash_only = e;
        hash_only.certificates.clear();
        let idx = ProviderIndex::from_entries(vec![hash_only]);
        assert_eq!(
            idx.provider_for_certificate(&fake_cert).unwrap().matched_by,
            MatchedBy::Sha1Hash
        );
        assert!(idx.provider_for_certificate(b"0other").is_none());
    }
}
