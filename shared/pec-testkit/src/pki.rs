//! A deterministic TEST-ONLY PKI: a development CA and two providers, loaded from PEM files
//! committed under `shared/pec-testkit/pki/` (embedded at compile time).
//!
//! Because the keys and certificates are fixed and RSA PKCS#1 v1.5 signatures are
//! deterministic, a message signed with [`TestProvider::sign`] at a fixed time has the same bytes
//! on every run, so signed outputs can be golden files.
//!
//! | | name | domain | validity |
//! |---|---|---|---|
//! | CA | `Test PEC CA (TEST ONLY)` | | 2020-01-01 .. 2040-01-01 |
//! | [`TestPki::example`] | `Example Gestore PEC S.p.A.` | `pec.example.test` | 2025-01-01 .. 2030-01-01 |
//! | [`TestPki::altro`] | `Altro Gestore PEC S.p.A.` | `pec.altro.test` | 2025-01-01 .. 2030-01-01 |
//!
//! The keys are public test material: never trust the CA outside tests. Regenerate the files
//! (new keys, so every signed golden file changes) with
//! `cargo run -p pec-testkit --example regenerate-pki`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, TimeZone, Utc};
use pec_smime::{
    DevCa, LocalSigner, ProviderCertificateParams, ProviderEntry, ProviderIndex, SigningIdentity,
    TrustAnchors,
};

/// Common name of the test CA.
pub const CA_NAME: &str = "Test PEC CA (TEST ONLY)";
/// The first provider's name.
pub const EXAMPLE_NAME: &str = "Example Gestore PEC S.p.A.";
/// The first provider's domain.
pub const EXAMPLE_DOMAIN: &str = "pec.example.test";
/// The second provider's name.
pub const ALTRO_NAME: &str = "Altro Gestore PEC S.p.A.";
/// The second provider's domain.
pub const ALTRO_DOMAIN: &str = "pec.altro.test";

/// The CA's validity: 2020-01-01 .. 2040-01-01 (00:00 UTC).
pub fn ca_validity() -> (DateTime<Utc>, DateTime<Utc>) {
    (jan1(2020), jan1(2040))
}

/// The providers' validity: 2025-01-01 .. 2030-01-01 (00:00 UTC).
pub fn provider_validity() -> (DateTime<Utc>, DateTime<Utc>) {
    (jan1(2025), jan1(2030))
}

fn jan1(year: i32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// The committed PEM files, by name under `pki/`.
pub mod files {
    /// CA certificate.
    pub const CA_CERT: &str = "test-only-ca.cert.pem";
    /// CA private key.
    pub const CA_KEY: &str = "test-only-ca.key.pem";
    /// `pec.example.test` certificate.
    pub const EXAMPLE_CERT: &str = "test-only-pec.example.test.cert.pem";
    /// `pec.example.test` private key.
    pub const EXAMPLE_KEY: &str = "test-only-pec.example.test.key.pem";
    /// `pec.altro.test` certificate.
    pub const ALTRO_CERT: &str = "test-only-pec.altro.test.cert.pem";
    /// `pec.altro.test` private key.
    pub const ALTRO_KEY: &str = "test-only-pec.altro.test.key.pem";
}

const CA_CERT_PEM: &[u8] = include_bytes!("../pki/test-only-ca.cert.pem");
const CA_KEY_PEM: &[u8] = include_bytes!("../pki/test-only-ca.key.pem");
const EXAMPLE_CERT_PEM: &[u8] = include_bytes!("../pki/test-only-pec.example.test.cert.pem");
const EXAMPLE_KEY_PEM: &[u8] = include_bytes!("../pki/test-only-pec.example.test.key.pem");
const ALTRO_CERT_PEM: &[u8] = include_bytes!("../pki/test-only-pec.altro.test.cert.pem");
const ALTRO_KEY_PEM: &[u8] = include_bytes!("../pki/test-only-pec.altro.test.key.pem");

/// One provider of the test PKI: its key, certificate chain and names.
#[derive(Clone, Debug)]
pub struct TestProvider {
    /// Provider name (certificate subject and daticert `gestore-emittente`).
    pub name: &'static str,
    /// Managed domain.
    pub domain: &'static str,
    /// The provider's private key.
    pub signer: LocalSigner,
    /// Its certificate, chained to the CA.
    pub identity: SigningIdentity,
}

impl TestProvider {
    fn load(name: &'static str, domain: &'static str, cert: &[u8], key: &[u8], ca: &DevCa) -> Self {
        let signer = LocalSigner::from_pem(key).expect("committed test provider key");
        let certificate = pec_smime::certs::certificates_from_pem(cert)
            .expect("committed test provider certificate")
            .remove(0);
        let identity = SigningIdentity::new(certificate, vec![ca.certificate().clone()])
            .expect("test provider identity");
        assert_eq!(
            identity.public_key_spki_der(),
            signer.public_key_spki_der(),
            "the committed key of {domain} does not match its certificate"
        );
        Self {
            name,
            domain,
            signer,
            identity,
        }
    }

    /// The certificate as DER.
    pub fn certificate_der(&self) -> Vec<u8> {
        pec_smime::certs::to_der(self.identity.certificate()).expect("certificate encodes")
    }

    /// The provider-index entry listing this provider (by its certificate hash), with
    /// `mailReceipt: posta-certificata@<domain>`.
    pub fn index_entry(&self) -> ProviderEntry {
        ProviderEntry::for_certificate(
            self.name,
            "o=postacert",
            vec![self.domain.to_string()],
            Some(format!("posta-certificata@{}", self.domain)),
            &self.certificate_der(),
        )
    }

    /// A `pec_core::build::Provider` for the builders.
    pub fn core_provider(&self) -> pec_core::build::Provider {
        pec_core::build::Provider::new(self.name, self.domain).expect("valid test provider")
    }

    /// Signs like the sign step: [`pec_smime::sign_message`] with this provider's key.
    /// Deterministic for fixed inputs.
    pub fn sign(
        &self,
        headers: &[(String, String)],
        entity: &[u8],
        signing_time: DateTime<Utc>,
    ) -> Vec<u8> {
        block_on(pec_smime::sign_message(
            &self.signer,
            &self.identity,
            headers,
            entity,
            signing_time,
        ))
        .expect("signing with the test PKI")
    }
}

/// The test PKI: CA, trust anchors and the two providers.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// The CA (it can issue more certificates, e.g. expired or wrong-usage ones).
    pub ca: DevCa,
    /// Trust anchors holding only the CA.
    pub anchors: TrustAnchors,
    /// `Example Gestore PEC S.p.A.`, `pec.example.test`.
    pub example: TestProvider,
    /// `Altro Gestore PEC S.p.A.`, `pec.altro.test`.
    pub altro: TestProvider,
}

impl TestPki {
    /// Loads the committed PKI (panics if a file is damaged or a key does not match).
    pub fn load() -> Self {
        let ca = DevCa::from_pem(CA_CERT_PEM, CA_KEY_PEM).expect("committed test CA");
        let mut anchors = TrustAnchors::new();
        anchors
            .add_pem_bundle(CA_CERT_PEM)
            .expect("test CA as trust anchor");
        let example = TestProvider::load(
            EXAMPLE_NAME,
            EXAMPLE_DOMAIN,
            EXAMPLE_CERT_PEM,
            EXAMPLE_KEY_PEM,
            &ca,
        );
        let altro =
            TestProvider::load(ALTRO_NAME, ALTRO_DOMAIN, ALTRO_CERT_PEM, ALTRO_KEY_PEM, &ca);
        Self {
            ca,
            anchors,
            example,
            altro,
        }
    }

    /// The CA certificate as PEM (what a trust-anchors object in a bucket would hold).
    pub fn ca_pem(&self) -> String {
        self.ca.certificate_pem().expect("CA certificate as PEM")
    }

    /// A provider index listing both providers.
    pub fn index(&self) -> ProviderIndex {
        ProviderIndex::from_entries(vec![self.example.index_entry(), self.altro.index_entry()])
    }

    /// [`TestPki::index`] as LDIF (what a provider-index object in a bucket would hold).
    pub fn index_ldif(&self) -> String {
        format!(
            "{}{}",
            self.example.index_entry().to_ldif(),
            self.altro.index_entry().to_ldif()
        )
    }
}

/// Makes a new CA and provider set with fresh keys; returns the PEM files as
/// `(file name, contents)` (see [`files`]). Used by the `regenerate-pki` example only.
pub fn generate() -> Vec<(&'static str, String)> {
    const WARNING: &str = "# TEST ONLY: pec-testkit's committed test PKI (see pki/README.md).\n\
         # Public, deterministic test material. Never trust or use outside tests.\n";
    let (ca_from, ca_to) = ca_validity();
    let ca = block_on(DevCa::generate(CA_NAME, ca_from, ca_to)).expect("test CA");
    let pem = |bytes: Vec<u8>| String::from_utf8(bytes).expect("PEM is ASCII");
    let mut out = vec![
        (
            files::CA_CERT,
            format!("{WARNING}{}", ca.certificate_pem().expect("CA PEM")),
        ),
        (
            files::CA_KEY,
            format!("{WARNING}{}", pem(ca.key_pem().expect("CA key PEM"))),
        ),
    ];
    let (from, to) = provider_validity();
    for (name, domain, cert_file, key_file) in [
        (
            EXAMPLE_NAME,
            EXAMPLE_DOMAIN,
            files::EXAMPLE_CERT,
            files::EXAMPLE_KEY,
        ),
        (
            ALTRO_NAME,
            ALTRO_DOMAIN,
            files::ALTRO_CERT,
            files::ALTRO_KEY,
        ),
    ] {
        let key = LocalSigner::generate_rsa(2048).expect("provider key");
        let params = ProviderCertificateParams::new(name, domain, from, to);
        let cert = block_on(ca.issue_provider_certificate(&params, key.public_key_spki_der()))
            .expect("provider certificate");
        let cert_pem = pec_smime::certs::certificate_to_pem(&cert).expect("certificate PEM");
        out.push((cert_file, format!("{WARNING}{cert_pem}")));
        let key_pem = pem(key.to_pkcs8_pem().expect("key PEM"));
        out.push((key_file, format!("{WARNING}{key_pem}")));
    }
    out
}

/// Runs a future that completes without waiting on I/O or timers (the in-memory signer and
/// CA). Panics if it would block.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => {
            panic!("pec_testkit::pki::block_on: the future is waiting; use an async runtime for it")
        }
    }
}
