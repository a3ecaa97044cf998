//! Certificates as received, and certification path building and validation (RFC 5280 §6, the
//! parts a PEC receiving point needs: signatures, validity periods, CA constraints, path length,
//! unknown critical extensions, name constraints on e-mail, DNS and directory names).
//!
//! Not done (offline library): revocation (CRL/OCSP) and certificate policies.

use chrono::{DateTime, Utc};
use const_oid::{ObjectIdentifier, db::rfc5280, db::rfc5912};
use der::{Decode, Encode, Tagged, asn1::Ia5StringRef};
use sha2::Digest;
use x509_cert::{
    Certificate,
    ext::pkix::{
        BasicConstraints, KeyUsage, KeyUsages, NameConstraints, SubjectAltName,
        constraints::name::GeneralSubtrees, name::GeneralName,
    },
    name::Name,
};

use crate::{DigestAlgorithm, raw::RawCertificate, rsa_verify, time_to_chrono};

/// A certificate with the exact bytes it was received as.
#[derive(Clone, Debug)]
pub(crate) struct ParsedCert {
    /// The complete DER as received (what the provider index hashes).
    pub der: Vec<u8>,
    /// The `tbsCertificate` bytes as received (what the issuer signed).
    pub tbs: Vec<u8>,
    /// The signature over `tbs`.
    pub signature: Vec<u8>,
    /// The signature algorithm of the outer certificate.
    pub signature_algorithm: ObjectIdentifier,
    /// The decoded certificate.
    pub cert: Certificate,
    /// The subject public key (SubjectPublicKeyInfo DER).
    pub spki: Vec<u8>,
}

impl ParsedCert {
    pub(crate) fn from_der(der: &[u8]) -> Result<Self, der::Error> {
        let raw = RawCertificate::from_der(der)?;
        let cert = Certificate::from_der(der)?;
        let spki = cert.tbs_certificate.subject_public_key_info.to_der()?;
        Ok(Self {
            der: der.to_vec(),
            tbs: raw.tbs_certificate.to_der()?,
            signature: raw.signature.raw_bytes().to_vec(),
            signature_algorithm: raw.signature_algorithm.oid,
            cert,
            spki,
        })
    }

    pub(crate) fn subject(&self) -> &Name {
        &self.cert.tbs_certificate.subject
    }

    pub(crate) fn issuer(&self) -> &Name {
        &self.cert.tbs_certificate.issuer
    }

    pub(crate) fn not_before(&self) -> Option<DateTime<Utc>> {
        time_to_chrono(&self.cert.tbs_certificate.validity.not_before)
    }

    pub(crate) fn not_after(&self) -> Option<DateTime<Utc>> {
        time_to_chrono(&self.cert.tbs_certificate.validity.not_after)
    }

    pub(crate) fn sha1(&self) -> [u8; 20] {
        sha1::Sha1::digest(&self.der).into()
    }

    pub(crate) fn sha256(&self) -> [u8; 32] {
        sha2::Sha256::digest(&self.der).into()
    }

    /// The decoded extension of type `T`, `Ok(None)` when absent, `Err` when undecodable.
    pub(crate) fn extension<T: der::DecodeOwned + const_oid::AssociatedOid>(
        &self,
    ) -> Result<Option<(bool, T)>, String> {
        let Some(exts) = &self.cert.tbs_certificate.extensions else {
            return Ok(None);
        };
        for ext in exts {
            if ext.extn_id == T::OID {
                let value = T::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| format!("undecodable extension {}: {e}", T::OID))?;
                return Ok(Some((ext.critical, value)));
            }
        }
        Ok(None)
    }

    pub(crate) fn is_self_issued(&self) -> bool {
        names_match(self.subject(), self.issuer())
    }
}

/// Whether two names are the same (RFC 5280 §7.1, simplified: attribute types equal in order;
/// string values compared case-insensitively with whitespace runs collapsed, other values
/// byte-for-byte).
pub(crate) fn names_match(a: &Name, b: &Name) -> bool {
    if a == b {
        return true;
    }
    a.0.len() == b.0.len()
        && a.0.iter().zip(b.0.iter()).all(|(ra, rb)| {
            ra.0.len() == rb.0.len()
                && ra
                    .0
                    .iter()
                    .zip(rb.0.iter())
                    .all(|(x, y)| x.oid == y.oid && attr_values_match(&x.value, &y.value))
        })
}

fn attr_string(value: &der::Any) -> Option<String> {
    use der::asn1::{PrintableStringRef, TeletexStringRef, Utf8StringRef};
    match value.tag() {
        der::Tag::Utf8String => value
            .decode_as::<Utf8StringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        der::Tag::PrintableString => value
            .decode_as::<PrintableStringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        der::Tag::Ia5String => value
            .decode_as::<Ia5StringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        der::Tag::TeletexString => value
            .decode_as::<TeletexStringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        _ => None,
    }
}

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn attr_values_match(a: &der::Any, b: &der::Any) -> bool {
    if a == b {
        return true;
    }
    match (attr_string(a), attr_string(b)) {
        (Some(x), Some(y)) => normalise(&x) == normalise(&y),
        _ => false,
    }
}

/// The digest algorithm of an RSA certificate signature algorithm we can check.
fn cert_sig_digest(oid: &ObjectIdentifier) -> Option<DigestAlgorithm> {
    match *oid {
        rfc5912::SHA_1_WITH_RSA_ENCRYPTION => Some(DigestAlgorithm::Sha1),
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION => Some(DigestAlgorithm::Sha256),
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION => Some(DigestAlgorithm::Sha384),
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION => Some(DigestAlgorithm::Sha512),
        _ => None,
    }
}

/// [`signed_by`], counting signature checks against `budget` (name mismatches are free).
fn checked_signed_by(child: &ParsedCert, issuer: &ParsedCert, budget: &mut usize) -> bool {
    if *budget == 0 || !names_match(child.issuer(), issuer.subject()) {
        return false;
    }
    *budget -= 1;
    signed_by(child, issuer)
}

/// Whether `issuer` issued and signed `child`.
fn signed_by(child: &ParsedCert, issuer: &ParsedCert) -> bool {
    if !names_match(child.issuer(), issuer.subject()) {
        return false;
    }
    let Some(alg) = cert_sig_digest(&child.signature_algorithm) else {
        return false;
    };
    let digest = alg.digest(&child.tbs);
    rsa_verify::verify_pkcs1v15(&issuer.spki, alg, &digest, &child.signature).is_ok()
}

const MAX_PATH_LEN: usize = 8;
const MAX_PATHS: usize = 8;
/// Certificate signature checks one path search may spend (a hostile message may carry many
/// certificates with the same names to make the search explode).
const MAX_SIGNATURE_CHECKS: usize = 32;

/// Every path (up to a small bound) from `leaf` through `intermediates` to one of `anchors`,
/// leaf first, anchor last. A path ends at the first trust anchor reached.
pub(crate) fn build_paths<'a>(
    leaf: &'a ParsedCert,
    intermediates: &'a [ParsedCert],
    anchors: &'a [ParsedCert],
) -> Vec<Vec<&'a ParsedCert>> {
    let mut out = Vec::new();
    let mut path = vec![leaf];
    let mut budget = MAX_SIGNATURE_CHECKS;
    extend(&mut path, intermediates, anchors, &mut out, &mut budget);
    out
}

fn is_anchor(cert: &ParsedCert, anchors: &[ParsedCert]) -> bool {
    anchors.iter().any(|a| a.der == cert.der)
}

fn extend<'a>(
    path: &mut Vec<&'a ParsedCert>,
    intermediates: &'a [ParsedCert],
    anchors: &'a [ParsedCert],
    out: &mut Vec<Vec<&'a ParsedCert>>,
    budget: &mut usize,
) {
    if out.len() >= MAX_PATHS || *budget == 0 {
        return;
    }
    let Some(last) = path.last().copied() else {
        return;
    };
    if is_anchor(last, anchors) {
        out.push(path.clone());
        return;
    }
    if path.len() >= MAX_PATH_LEN {
        return;
    }
    for anchor in anchors {
        if checked_signed_by(last, anchor, budget) {
            let mut complete = path.clone();
            complete.push(anchor);
            out.push(complete);
            if out.len() >= MAX_PATHS {
                return;
            }
        }
    }
    for inter in intermediates {
        if path.iter().any(|c| c.der == inter.der) {
            continue;
        }
        if checked_signed_by(last, inter, budget) {
            path.push(inter);
            extend(path, intermediates, anchors, out, budget);
            path.pop();
        }
    }
}

/// Why a path is not acceptable.
#[derive(Debug, Clone)]
pub(crate) enum PathProblem {
    /// Structural: CA flags, path length, critical extensions, name constraints.
    Untrusted(String),
    /// A certificate is outside its validity period at the evaluation time.
    NotValidAtTime(String),
}

/// Extensions this validator processes, or that carry no constraint it must enforce.
const KNOWN_EXTENSIONS: &[ObjectIdentifier] = &[
    rfc5280::ID_CE_BASIC_CONSTRAINTS,
    rfc5280::ID_CE_KEY_USAGE,
    rfc5280::ID_CE_EXT_KEY_USAGE,
    rfc5280::ID_CE_SUBJECT_ALT_NAME,
    rfc5280::ID_CE_ISSUER_ALT_NAME,
    rfc5280::ID_CE_NAME_CONSTRAINTS,
    rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
    rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
    rfc5280::ID_CE_CERTIFICATE_POLICIES,
    rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS,
    rfc5280::ID_PE_AUTHORITY_INFO_ACCESS,
];

/// Validates a path (leaf first, trust anchor last) at `at`.
///
/// Structural problems take precedence over validity-period problems, so an expired
/// certificate in an otherwise good path is reported as such.
pub(crate) fn validate_path(path: &[&ParsedCert], at: DateTime<Utc>) -> Result<(), PathProblem> {
    let untrusted = |s: String| Err(PathProblem::Untrusted(s));
    let last = path.len().saturating_sub(1);
    for (i, cert) in path.iter().enumerate() {
        let subject = cert.subject().to_string();
        let is_leaf = i == 0;
        let is_anchor = i == last;
        // Unknown critical extensions (the trust anchor is trusted as configured).
        if !is_anchor && let Some(exts) = &cert.cert.tbs_certificate.extensions {
            for ext in exts {
                if ext.critical && !KNOWN_EXTENSIONS.contains(&ext.extn_id) {
                    return untrusted(format!(
                        "certificate {subject} has an unsupported critical extension {}",
                        ext.extn_id
                    ));
                }
            }
        }
        if is_leaf && !(is_anchor && path.len() == 1) {
            continue;
        }
        // Issuing certificates: must be CAs allowed to sign certificates.
        let bc = cert
            .extension::<BasicConstraints>()
            .map_err(PathProblem::Untrusted)?;
        let is_v1 = cert.cert.tbs_certificate.extensions.is_none();
        match bc {
            Some((_, bc)) if bc.ca => {
                if let Some(max) = bc.path_len_constraint {
                    // Non-self-issued intermediates below this certificate (leaf excluded).
                    let below = path
                        .get(1..i)
                        .unwrap_or(&[])
                        .iter()
                        .filter(|c| !c.is_self_issued())
                        .count();
                    if below > usize::from(max) {
                        return untrusted(format!(
                            "path length constraint {max} of {subject} exceeded"
                        ));
                    }
                }
            }
            None if is_anchor && is_v1 => {}
            _ => {
                return untrusted(format!(
                    "certificate {subject} issues certificates but is not a CA (basicConstraints)"
                ));
            }
        }
        if let Some((_, ku)) = cert
            .extension::<KeyUsage>()
            .map_err(PathProblem::Untrusted)?
            && !ku.0.contains(KeyUsages::KeyCertSign)
        {
            return untrusted(format!(
                "certificate {subject} issues certificates but its key usage lacks keyCertSign"
            ));
        }
        if let Some((_, nc)) = cert
            .extension::<NameConstraints>()
            .map_err(PathProblem::Untrusted)?
        {
            for below in path.get(..i).unwrap_or(&[]) {
                // Self-issued intermediates are exempt (RFC 5280 §4.2.1.10), except the leaf.
                let is_leaf = path.first().is_some_and(|l| std::ptr::eq(*below, *l));
                if !is_leaf && below.is_self_issued() {
                    continue;
                }
                check_name_constraints(below, &nc).map_err(|e| {
                    PathProblem::Untrusted(format!(
                        "certificate {} violates the name constraints of {subject}: {e}",
                        below.subject()
                    ))
                })?;
            }
        }
    }
    for cert in path {
        let (nb, na) = (cert.not_before(), cert.not_after());
        let ok = matches!((nb, na), (Some(nb), Some(na)) if nb <= at && at <= na);
        if !ok {
            let fmt = |t: Option<DateTime<Utc>>| {
                t.map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "(unrepresentable)".into())
            };
            return Err(PathProblem::NotValidAtTime(format!(
                "certificate {} is valid from {} to {}, not at {}",
                cert.subject(),
                fmt(nb),
                fmt(na),
                at.to_rfc3339()
            )));
        }
    }
    Ok(())
}

/// The names of a certificate that name constraints apply to.
struct CertNames {
    emails: Vec<String>,
    dns: Vec<String>,
    other_kinds: Vec<&'static str>,
}

fn cert_names(cert: &ParsedCert) -> Result<CertNames, String> {
    let mut names = CertNames {
        emails: Vec::new(),
        dns: Vec::new(),
        other_kinds: Vec::new(),
    };
    if let Some((_, san)) = cert.extension::<SubjectAltName>()? {
        for gn in san.0 {
            match gn {
                GeneralName::Rfc822Name(s) => names.emails.push(s.to_string()),
                GeneralName::DnsName(s) => names.dns.push(s.to_string()),
                GeneralName::DirectoryName(_) => names.other_kinds.push("directoryName"),
                GeneralName::UniformResourceIdentifier(_) => names.other_kinds.push("uri"),
                GeneralName::IpAddress(_) => names.other_kinds.push("iPAddress"),
                GeneralName::OtherName(_) => names.other_kinds.push("otherName"),
                GeneralName::RegisteredId(_) => names.other_kinds.push("registeredID"),
                GeneralName::EdiPartyName(_) => names.other_kinds.push("ediPartyName"),
            }
        }
    }
    // emailAddress attributes in the subject count as rfc822 names (RFC 5280 §4.2.1.10).
    for rdn in &cert.subject().0 {
        for atv in rdn.0.iter() {
            if atv.oid == const_oid::db::rfc3280::EMAIL_ADDRESS
                && let Some(s) = attr_string(&atv.value)
            {
                names.emails.push(s);
            }
        }
    }
    Ok(names)
}

fn email_matches(email: &str, constraint: &str) -> bool {
    let email = email.to_ascii_lowercase();
    let constraint = constraint.to_ascii_lowercase();
    if constraint.contains('@') {
        return email == constraint;
    }
    let Some((_, host)) = email.rsplit_once('@') else {
        return false;
    };
    if let Some(suffix) = constraint.strip_prefix('.') {
        host.ends_with(&format!(".{suffix}"))
    } else {
        host == constraint
    }
}

fn dns_matches(name: &str, constraint: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let constraint = constraint
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    constraint.is_empty() || name == constraint || name.ends_with(&format!(".{constraint}"))
}

fn dir_matches(name: &Name, constraint: &Name) -> bool {
    constraint.0.len() <= name.0.len()
        && constraint.0.iter().zip(name.0.iter()).all(|(c, n)| {
            c.0.len() == n.0.len()
                && c.0
                    .iter()
                    .zip(n.0.iter())
                    .all(|(x, y)| x.oid == y.oid && attr_values_match(&x.value, &y.value))
        })
}

/// What a subtree list says about the names of one kind.
#[derive(Default)]
struct Subtrees<'a> {
    emails: Vec<String>,
    dns: Vec<String>,
    dirs: Vec<&'a Name>,
    /// Kinds constrained that this validator cannot evaluate.
    other_kinds: Vec<&'static str>,
}

fn split_subtrees(trees: &Option<GeneralSubtrees>) -> Subtrees<'_> {
    let mut s = Subtrees::default();
    for t in trees.iter().flatten() {
        match &t.base {
            GeneralName::Rfc822Name(v) => s.emails.push(v.to_string()),
            GeneralName::DnsName(v) => s.dns.push(v.to_string()),
            GeneralName::DirectoryName(n) => s.dirs.push(n),
            GeneralName::IpAddress(_) => s.other_kinds.push("iPAddress"),
            GeneralName::UniformResourceIdentifier(_) => s.other_kinds.push("uri"),
            GeneralName::OtherName(_) => s.other_kinds.push("otherName"),
            GeneralName::RegisteredId(_) => s.other_kinds.push("registeredID"),
            GeneralName::EdiPartyName(_) => s.other_kinds.push("ediPartyName"),
        }
    }
    s
}

fn check_name_constraints(cert: &ParsedCert, nc: &NameConstraints) -> Result<(), String> {
    let names = cert_names(cert)?;
    let subject = cert.subject();
    let permitted = split_subtrees(&nc.permitted_subtrees);
    let excluded = split_subtrees(&nc.excluded_subtrees);

    // A name kind present in the certificate but constrained in a way we cannot evaluate.
    for kind in &names.other_kinds {
        if permitted.other_kinds.contains(kind) || excluded.other_kinds.contains(kind) {
            return Err(format!("cannot evaluate {kind} name constraints"));
        }
    }
    for e in &names.emails {
        if excluded.emails.iter().any(|c| email_matches(e, c)) {
            return Err(format!("e-mail address {e} is excluded"));
        }
        if !permitted.emails.is_empty() && !permitted.emails.iter().any(|c| email_matches(e, c)) {
            return Err(format!("e-mail address {e} is not permitted"));
        }
    }
    for d in &names.dns {
        if excluded.dns.iter().any(|c| dns_matches(d, c)) {
            return Err(format!("DNS name {d} is excluded"));
        }
        if !permitted.dns.is_empty() && !permitted.dns.iter().any(|c| dns_matches(d, c)) {
            return Err(format!("DNS name {d} is not permitted"));
        }
    }
    if !subject.0.is_empty() {
        if excluded.dirs.iter().any(|c| dir_matches(subject, c)) {
            return Err(format!("subject {subject} is excluded"));
        }
        if !permitted.dirs.is_empty() && !permitted.dirs.iter().any(|c| dir_matches(subject, c)) {
            return Err(format!(
                "subject {subject} is not within a permitted directory name"
            ));
        }
    }
    Ok(())
}

/// Parses every `CERTIFICATE` block of a PEM text; blocks that do not decode are counted.
pub(crate) fn pem_certificate_blocks(pem: &[u8]) -> (Vec<Vec<u8>>, usize) {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut bad = 0;
    let mut rest = pem;
    while let Some(start) = find(rest, BEGIN) {
        let Some(block) = rest.get(start..) else {
            break;
        };
        let Some(end) = find(block, END) else {
            bad += 1;
            break;
        };
        let stop = end + END.len();
        match block.get(..stop).map(der::pem::decode_vec) {
            Some(Ok((_, der))) => out.push(der),
            _ => bad += 1,
        }
        rest = block.get(stop..).unwrap_or(&[]);
    }
    (out, bad)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_constraints() {
        assert!(email_matches(
            "posta-certificata@pec.aruba.it",
            "pec.aruba.it"
        ));
        assert!(email_matches("x@PEC.Aruba.it", "pec.aruba.it"));
        assert!(!email_matches("x@sub.pec.aruba.it", "pec.aruba.it"));
        assert!(email_matches("x@sub.pec.aruba.it", ".pec.aruba.it"));
        assert!(!email_matches("x@evilpec.aruba.it", ".pec.aruba.it"));
        assert!(email_matches("a@b.it", "a@b.it"));
        assert!(!email_matches("no-at-sign", "b.it"));
    }

    fn provider_cert(provider: &str, domain: &str) -> ParsedCert {
        use chrono::TimeZone;
        let t = |y| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).single().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ca = rt
            .block_on(crate::DevCa::generate("NC CA", t(2020), t(2040)))
            .unwrap();
        let key = crate::LocalSigner::generate_rsa(2048).unwrap();
        let params = crate::ProviderCertificateParams::new(provider, domain, t(2021), t(2030));
        let cert = rt
            .block_on(ca.issue_provider_certificate(&params, key.public_key_spki_der()))
            .unwrap();
        ParsedCert::from_der(&cert.to_der().unwrap()).unwrap()
    }

    /// AgID CA1 style constraints: permitted e-mail domains and organisation names.
    fn agid_like() -> NameConstraints {
        use x509_cert::ext::pkix::constraints::name::GeneralSubtree;
        let dir = crate::certs::make_name(Some("IT"), Some("Aruba PEC S.p.A."), "x").unwrap();
        let dir = x509_cert::name::RdnSequence(dir.0[..2].to_vec());
        let subtree = |base| GeneralSubtree {
            base,
            minimum: 0,
            maximum: None,
        };
        NameConstraints {
            permitted_subtrees: Some(vec![
                subtree(GeneralName::Rfc822Name(
                    der::asn1::Ia5String::new("pec.aruba.it").unwrap(),
                )),
                subtree(GeneralName::DirectoryName(dir)),
            ]),
            excluded_subtrees: None,
        }
    }

    #[test]
    fn name_constraints_on_provider_certificates() {
        let nc = agid_like();
        assert!(
            check_name_constraints(&provider_cert("Aruba PEC S.p.A.", "pec.aruba.it"), &nc).is_ok()
        );
        let e = check_name_constraints(&provider_cert("Aruba PEC S.p.A.", "pec.evil.it"), &nc)
            .unwrap_err();
        assert!(
            e.contains("posta-certificata@pec.evil.it is not permitted"),
            "{e}"
        );
        let e =
            check_name_constraints(&provider_cert("Evil S.p.A.", "pec.aruba.it"), &nc).unwrap_err();
        assert!(e.contains("not within a permitted directory name"), "{e}");
    }

    #[test]
    fn dns_constraints() {
        assert!(dns_matches("agid.gov.it", "agid.gov.it"));
        assert!(dns_matches("www.agid.gov.it", "agid.gov.it"));
        assert!(!dns_matches("evilagid.gov.it", "agid.gov.it"));
    }
}
