//! The MX's policy over the state table and the provider index: who is another PEC provider
//! (its domain is listed in the index), which recipients are ours (the provider's domain and the
//! tenants' verified domains, as the receiving point decides) and which mailboxes exist.

use chrono::Utc;
use pec_aws::ProviderIndexSource;
use pec_ports::{ObjectStore, StateStore};
use pec_submit::BoxFuture;
use pec_submit::mx::{MxPolicy, PolicyError, Recipient, Sender};

/// [`MxPolicy`] on the state table and the provider index in the evidence bucket.
pub struct EdgeMxPolicy<Db, St> {
    provider_domain: String,
    state: Db,
    index: ProviderIndexSource<St>,
}

impl<Db, St> EdgeMxPolicy<Db, St> {
    /// Recipients in `provider_domain` or in a tenant's domain (`state`) are ours; senders whose
    /// domain `index` lists are providers.
    pub fn new(provider_domain: &str, state: Db, index: ProviderIndexSource<St>) -> Self {
        Self {
            provider_domain: provider_domain.to_ascii_lowercase(),
            state,
            index,
        }
    }
}

impl<Db, St> MxPolicy for EdgeMxPolicy<Db, St>
where
    Db: StateStore + Send + Sync,
    St: ObjectStore + Send + Sync,
{
    fn sender<'a>(&'a self, reverse_path: &'a str) -> BoxFuture<'a, Result<Sender, PolicyError>> {
        Box::pin(async move {
            let Some(domain) = pec_core::addr::domain_of(reverse_path) else {
                return Ok(Sender::Ordinary);
            };
            // No index, no guess: the sender hears 451 and retries.
            let index = self
                .index
                .current(Utc::now())
                .await
                .map_err(PolicyError::new)?;
            Ok(if index.is_pec_domain(domain) {
                Sender::Provider
            } else {
                Sender::Ordinary
            })
        })
    }

    fn recipient<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Recipient, PolicyError>> {
        Box::pin(async move {
            let address = address.to_ascii_lowercase();
            let Some(domain) = pec_core::addr::domain_of(&address) else {
                return Ok(Recipient::NotOurs);
            };
            let ours = domain == self.provider_domain
                || self
                    .state
                    .domain_tenant(domain)
                    .await
                    .map_err(PolicyError::new)?
                    .is_some();
            if !ours {
                return Ok(Recipient::NotOurs);
            }
            let mailbox = self
                .state
                .mailbox(&address)
                .await
                .map_err(PolicyError::new)?;
            Ok(match mailbox {
                Some(m) if m.in_service() => Recipient::Known,
                Some(_) => Recipient::Disabled,
                None => Recipient::Unknown,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pec_ports::{MemoryState, MemoryStore};

    const INDEX: &str = "dn: providerName=Altro,o=postacert\nobjectClass: provider\nproviderName: Altro\n\
        managedDomains: pec.altro.test\nmailReceipt: posta-certificata@pec.altro.test\n\
        providerCertificateHash: 00112233445566778899AABBCCDDEEFF00112233\n\
        providerCertificate;binary:: MAA=\n\n";

    #[tokio::test]
    async fn senders_recipients_and_an_unreadable_index() {
        let store = MemoryStore::new();
        let state = MemoryState::default();
        let index = ProviderIndexSource::new(
            &store,
            "evidence",
            "config/index.ldif",
            chrono::Duration::zero(),
        );
        let policy = EdgeMxPolicy::new("PEC.example.test", state, index);
        // No index yet: providers cannot be told from others, so nothing is decided.
        assert!(policy.sender("a@pec.altro.test").await.is_err());
        assert_eq!(policy.sender("").await.unwrap(), Sender::Ordinary);
        store.insert("evidence", "config/index.ldif", INDEX.as_bytes().to_vec());
        assert_eq!(
            policy
                .sender("posta-certificata@PEC.altro.test")
                .await
                .unwrap(),
            Sender::Provider
        );
        assert_eq!(
            policy.sender("a@gmail.test").await.unwrap(),
            Sender::Ordinary
        );

        assert_eq!(
            policy.recipient("x@elsewhere.test").await.unwrap(),
            Recipient::NotOurs
        );
        assert_eq!(
            policy.recipient("x@pec.altro.test").await.unwrap(),
            Recipient::NotOurs
        );
        assert_eq!(
            policy.recipient("Nessuno@pec.example.test").await.unwrap(),
            Recipient::Unknown
        );
        assert_eq!(
            policy.recipient("not an address").await.unwrap(),
            Recipient::NotOurs
        );
    }
}
