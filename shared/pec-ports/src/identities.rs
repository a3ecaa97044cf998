//! The mail service's domain identities (SES in AWS and on the emulators:
//! `pec_aws::SesIdentities`; [`MemoryIdentities`] in unit tests): a tenant's custom domain is
//! registered with the service, which gives the tokens its DNS must carry, and reports when it
//! has seen them. Receiving follows: the receipt rule covers every verified domain.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

/// A mail-service call failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {domain}: {message}")]
pub struct IdentityError {
    pub operation: &'static str,
    pub domain: String,
    pub message: String,
}

/// What registering a domain gives: the tokens its DNS must publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySetup {
    /// The value of the `_amazonses.<domain>` TXT record.
    pub verification_token: String,
    /// Each gives a CNAME `<token>._domainkey.<domain>` → `<token>.dkim.amazonses.com`.
    pub dkim_tokens: Vec<String>,
}

/// Where a domain's verification stands at the mail service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityStatus {
    /// `Pending`, `Success`, `Failed`, `TemporaryFailure` or `NotStarted` (SES's words).
    pub verification: String,
    /// DKIM, in the same words.
    pub dkim: String,
}

impl IdentityStatus {
    pub fn is_verified(&self) -> bool {
        self.verification == "Success"
    }

    pub fn has_failed(&self) -> bool {
        self.verification == "Failed"
    }
}

/// The identity operations tenant administration needs.
pub trait DomainIdentities: Send + Sync {
    /// Registers `domain` (idempotent: registering again gives the tokens in force).
    fn create(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<IdentitySetup, IdentityError>> + Send;
    /// The domain's status; `None` if the service does not know it.
    fn status(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Option<IdentityStatus>, IdentityError>> + Send;
    /// Forgets the domain (idempotent): the service stops receiving and sending for it.
    fn delete(&self, domain: &str) -> impl Future<Output = Result<(), IdentityError>> + Send;
    /// The host the domain's MX must name (SES receiving in the deployment's region).
    fn receiving_host(&self) -> String;
}

/// [`DomainIdentities`] in memory: tokens derived from the domain; a domain is verified when
/// the test says its DNS is published ([`MemoryIdentities::publish`]).
#[derive(Debug, Default)]
pub struct MemoryIdentities {
    /// domain → published?
    domains: Mutex<BTreeMap<String, bool>>,
}

impl MemoryIdentities {
    pub fn new() -> Self {
        Self::default()
    }

    /// The tenant published the records: the next status check verifies the domain.
    pub fn publish(&self, domain: &str) {
        if let Some(p) = self.lock().get_mut(domain) {
            *p = true;
        }
    }

    /// The registered domains.
    pub fn domains(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.domains.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DomainIdentities for MemoryIdentities {
    async fn create(&self, domain: &str) -> Result<IdentitySetup, IdentityError> {
        self.lock().entry(domain.to_string()).or_insert(false);
        let token = |n: u8| format!("{n}{}", domain.replace('.', "-"));
        Ok(IdentitySetup {
            verification_token: token(0),
            dkim_tokens: vec![token(1), token(2), token(3)],
        })
    }

    async fn status(&self, domain: &str) -> Result<Option<IdentityStatus>, IdentityError> {
        Ok(self.lock().get(domain).map(|published| {
            let word = if *published { "Success" } else { "Pending" };
            IdentityStatus {
                verification: word.into(),
                dkim: word.into(),
            }
        }))
    }

    async fn delete(&self, domain: &str) -> Result<(), IdentityError> {
        self.lock().remove(domain);
        Ok(())
    }

    fn receiving_host(&self) -> String {
        "inbound-smtp.eu-west-1.amazonaws.com".into()
    }
}

impl<T: DomainIdentities> DomainIdentities for &T {
    fn create(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<IdentitySetup, IdentityError>> + Send {
        (**self).create(domain)
    }

    fn status(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Option<IdentityStatus>, IdentityError>> + Send {
        (**self).status(domain)
    }

    fn delete(&self, domain: &str) -> impl Future<Output = Result<(), IdentityError>> + Send {
        (**self).delete(domain)
    }

    fn receiving_host(&self) -> String {
        (**self).receiving_host()
    }
}
