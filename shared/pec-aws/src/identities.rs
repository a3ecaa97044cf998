//! [`DomainIdentities`] on SES (the v1 API: LocalStack's community edition has no v2): a
//! domain identity with Easy DKIM, its verification and DKIM status, and its deletion.

use aws_sdk_ses::Client;
use pec_ports::identities::{DomainIdentities, IdentityError, IdentitySetup, IdentityStatus};

use crate::store::aws_error_chain;

/// SES domain identities of one account and region.
#[derive(Clone)]
pub struct SesIdentities {
    client: Client,
}

impl SesIdentities {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn err(operation: &'static str, domain: &str, e: impl std::error::Error) -> IdentityError {
        IdentityError {
            operation,
            domain: domain.to_string(),
            message: aws_error_chain(&e),
        }
    }
}

impl DomainIdentities for SesIdentities {
    async fn create(&self, domain: &str) -> Result<IdentitySetup, IdentityError> {
        let verification = self
            .client
            .verify_domain_identity()
            .domain(domain)
            .send()
            .await
            .map_err(|e| Self::err("VerifyDomainIdentity", domain, e))?;
        let dkim = self
            .client
            .verify_domain_dkim()
            .domain(domain)
            .send()
            .await
            .map_err(|e| Self::err("VerifyDomainDkim", domain, e))?;
        Ok(IdentitySetup {
            verification_token: verification.verification_token().to_string(),
            dkim_tokens: dkim.dkim_tokens().to_vec(),
        })
    }

    async fn status(&self, domain: &str) -> Result<Option<IdentityStatus>, IdentityError> {
        let verification = self
            .client
            .get_identity_verification_attributes()
            .identities(domain)
            .send()
            .await
            .map_err(|e| Self::err("GetIdentityVerificationAttributes", domain, e))?;
        let Some(v) = verification.verification_attributes().get(domain) else {
            return Ok(None);
        };
        let dkim = self
            .client
            .get_identity_dkim_attributes()
            .identities(domain)
            .send()
            .await
            .map_err(|e| Self::err("GetIdentityDkimAttributes", domain, e))?;
        let dkim_status = dkim
            .dkim_attributes()
            .get(domain)
            .map(|d| d.dkim_verification_status().as_str().to_string())
            .unwrap_or_else(|| "NotStarted".to_string());
        Ok(Some(IdentityStatus {
            verification: v.verification_status().as_str().to_string(),
            dkim: dkim_status,
        }))
    }

    async fn delete(&self, domain: &str) -> Result<(), IdentityError> {
        self.client
            .delete_identity()
            .identity(domain)
            .send()
            .await
            .map(drop)
            .map_err(|e| Self::err("DeleteIdentity", domain, e))
    }

    fn receiving_host(&self) -> String {
        let region = self
            .client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "eu-west-1".to_string());
        format!("inbound-smtp.{region}.amazonaws.com")
    }
}
