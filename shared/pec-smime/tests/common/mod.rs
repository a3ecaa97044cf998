//! Shared test helpers: development PKI, representative entities, fixtures, openssl.
#![allow(dead_code)]

use std::process::{Command, Output};

use chrono::{DateTime, TimeZone, Utc};
use pec_smime::{DevCa, LocalSigner, ProviderCertificateParams, SigningIdentity};
use x509_cert::Certificate;

pub fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
        .single()
        .expect("valid date")
}

/// The signing time used by the tests.
pub fn signing_time() -> DateTime<Utc> {
    t(2026, 1, 15)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// A development CA, a provider key and its certificate.
pub struct Pki {
    pub ca: DevCa,
    pub key: LocalSigner,
    pub cert: Certificate,
    pub identity: SigningIdentity,
}

pub fn pki_with(params: impl FnOnce(&mut ProviderCertificateParams)) -> Pki {
    block_on(async {
        let ca = DevCa::generate("PEC Test CA", t(2020, 1, 1), t(2045, 1, 1))
            .await
            .expect("dev CA");
        let key = LocalSigner::generate_rsa(2048).expect("provider key");
        let mut p = ProviderCertificateParams::new(
            "Esempio PEC S.p.A.",
            "pec.esempio.it",
            t(2025, 1, 1),
            t(2028, 1, 1),
        );
        params(&mut p);
        let cert = ca
            .issue_provider_certificate(&p, key.public_key_spki_der())
            .await
            .expect("provider certificate");
        let identity =
            SigningIdentity::new(cert.clone(), vec![ca.certificate().clone()]).expect("identity");
        Pki {
            ca,
            key,
            cert,
            identity,
        }
    })
}

pub fn pki() -> Pki {
    pki_with(|_| {})
}

pub const HEADERS: &[(&str, &str)] = &[
    ("Date", "Thu, 15 Jan 2026 13:00:00 +0100"),
    ("From", "posta-certificata@pec.esempio.it"),
    ("To", "mario.rossi@pec.esempio.it"),
    ("Subject", "ACCETTAZIONE: Fattura n. 12"),
    ("Message-ID", "<opec1.20260115130000.1.1.1@pec.esempio.it>"),
    ("X-Ricevuta", "accettazione"),
];

pub fn headers() -> Vec<(String, String)> {
    HEADERS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Representative MIME entities to sign: (name, bytes).
pub fn entities() -> Vec<(&'static str, Vec<u8>)> {
    let envelope = "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
--outer\r\n\
Content-Type: text/plain; charset=\"iso-8859-1\"\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Messaggio di posta certificata\r\n\
Il giorno 15/01/2026 alle ore 13:00:00 (+0100) il messaggio =E8 stato inviato.\r\n\
\r\n\
--outer\r\n\
Content-Type: application/xml; name=\"daticert.xml\"\r\n\
Content-Disposition: inline; filename=\"daticert.xml\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
PD94bWwgdmVyc2lvbj0iMS4wIiBlbmNvZGluZz0iVVRGLTgiPz4KPHBvc3RhY2VydCB0aXBvPSJw\r\n\
b3N0YS1jZXJ0aWZpY2F0YSIgZXJyb3JlPSJuZXNzdW5vIi8+Cg==\r\n\
\r\n\
--outer\r\n\
Content-Type: message/rfc822; name=\"postacert.eml\"\r\n\
Content-Disposition: inline; filename=\"postacert.eml\"\r\n\
Content-Transfer-Encoding: 7bit\r\n\
\r\n\
From: mario.rossi@pec.esempio.it\r\n\
To: anna.bianchi@pec.altro.it\r\n\
Subject: Fattura n. 12\r\n\
Message-ID: <opec1.20260115130000.1.1.1@pec.esempio.it>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
In allegato la fattura.\r\n\
\r\n\
--outer--\r\n";
    let receipt = "Content-Type: multipart/mixed; boundary=\"r\"\r\n\
\r\n\
--r\r\n\
Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
\r\n\
--alt\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Ricevuta di accettazione: il messaggio \u{e8} stato accettato.\r\n\
--alt\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<html><body>Ricevuta di accettazione</body></html>\r\n\
--alt--\r\n\
\r\n\
--r\r\n\
Content-Type: application/xml; name=\"daticert.xml\"\r\n\
Content-Transfer-Encoding: 7bit\r\n\
\r\n\
<?xml version=\"1.0\"?><postacert tipo=\"accettazione\" errore=\"nessuno\"/>\r\n\
--r--";
    let plain = "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello\r\n";
    let lf_only =
        "Content-Type: text/plain; charset=us-ascii\n\nStored with LF line ends\nsecond line\n";
    vec![
        ("envelope-with-xml-and-rfc822", envelope.as_bytes().to_vec()),
        ("receipt-8bit-no-final-crlf", receipt.as_bytes().to_vec()),
        ("single-text-part", plain.as_bytes().to_vec()),
        ("lf-line-ends", lf_only.as_bytes().to_vec()),
    ]
}

pub fn sign(pki: &Pki, entity: &[u8]) -> Vec<u8> {
    block_on(pec_smime::sign_message(
        &pki.key,
        &pki.identity,
        &headers(),
        entity,
        signing_time(),
    ))
    .expect("signing")
}

/// A real fixture's bytes (pec-testkit's loader: a missing folder fails the test loudly).
pub fn fixture(name: &str) -> Vec<u8> {
    pec_testkit::fixtures::real(name)
}

/// Runs openssl; fails the test (never skips) when it is not installed.
pub fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("`openssl` could not be run ({e}): these tests require the openssl command")
        })
}

/// Flips one byte of body text inside the signed part of a signed message.
pub fn flip_signed_byte(message: &[u8], entity: &[u8]) -> Vec<u8> {
    let canonical = pec_smime::canonicalize_crlf(entity);
    let start = message
        .windows(canonical.len())
        .position(|w| w == &*canonical)
        .expect("entity is in the message verbatim");
    let word = ["fattura", "accettato", "Hello", "second line"]
        .iter()
        .find_map(|w| canonical.windows(w.len()).position(|x| x == w.as_bytes()))
        .expect("a marker word in every test entity");
    let mut out = message.to_vec();
    let i = start + word + 1;
    out[i] ^= 0x20; // change the letter's case
    out
}
