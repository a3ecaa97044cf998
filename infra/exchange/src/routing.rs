//! Who manages which domain: the local providers (one bootstrapped stack each) and, for every
//! other domain, the "ordinary world".

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// One local provider, as its bootstrap recorded it (`<state dir>/<stack>.resources.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The stack name (`pec-local`, `pec-b`).
    pub stack: String,
    /// Its PEC domain (the functions' `PEC_PROVIDER_DOMAIN`), lower case.
    pub domain: String,
    /// Its raw-mail bucket (output `RawMailBucketName`): SES receiving writes `inbound/` there.
    pub raw_bucket: String,
    /// The stack's region (SES receiving endpoint in the `Received` header).
    pub region: String,
    /// Its state table (output `StateTableName`): the tenants' domains it receives for.
    pub state_table: Option<String>,
}

impl Provider {
    /// Reads a bootstrap resources file (JSON).
    pub fn from_resources(stack: &str, json: &[u8]) -> Result<Provider> {
        let v: serde_json::Value = serde_json::from_slice(json)
            .with_context(|| format!("{stack}.resources.json is not JSON"))?;
        let text = |value: &serde_json::Value, what: &str| {
            value
                .as_str()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string())
                .with_context(|| format!("{stack}.resources.json has no {what}"))
        };
        let domain = text(
            &v["function_environment"]["PEC_PROVIDER_DOMAIN"],
            "function_environment.PEC_PROVIDER_DOMAIN",
        )?
        .to_ascii_lowercase();
        if !valid_domain(&domain) {
            bail!("{stack}: {domain:?} is not a domain name");
        }
        Ok(Provider {
            stack: stack.to_string(),
            domain,
            raw_bucket: text(
                &v["outputs"]["RawMailBucketName"],
                "outputs.RawMailBucketName",
            )?,
            region: v["region"]
                .as_str()
                .filter(|r| !r.is_empty())
                .unwrap_or("eu-south-1")
                .to_string(),
            state_table: v["outputs"]["StateTableName"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }

    /// The provider of `stack`, from `<state_dir>/<stack>.resources.json`.
    pub fn load(state_dir: &Path, stack: &str) -> Result<Provider> {
        let path = state_dir.join(format!("{stack}.resources.json"));
        let json = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (bootstrap the stack: infra/local/stack.sh bootstrap --stack-name {stack})",
                path.display()
            )
        })?;
        Provider::from_resources(stack, &json)
    }
}

/// Every stack bootstrapped in `state_dir` (files `<stack>.resources.json`), sorted.
pub fn stacks_in(state_dir: &Path) -> Result<Vec<String>> {
    let mut stacks = Vec::new();
    let entries = std::fs::read_dir(state_dir)
        .with_context(|| format!("reading the state directory {}", state_dir.display()))?;
    for entry in entries.flatten() {
        if let Some(stack) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".resources.json"))
        {
            stacks.push(stack.to_string());
        }
    }
    stacks.sort();
    Ok(stacks)
}

/// Domain -> local provider.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    by_domain: BTreeMap<String, Provider>,
}

impl Routes {
    pub fn new(providers: Vec<Provider>) -> Result<Routes> {
        let mut by_domain = BTreeMap::new();
        for p in providers {
            if let Some(other) = by_domain.get(&p.domain) {
                let other: &Provider = other;
                bail!(
                    "stacks {} and {} both manage {}",
                    other.stack,
                    p.stack,
                    p.domain
                );
            }
            by_domain.insert(p.domain.clone(), p);
        }
        Ok(Routes { by_domain })
    }

    /// Adds the tenants' domains a provider receives for (what their MX records would say):
    /// `(domain, stack)` pairs. One that cannot be routed (not a domain, an unknown stack, a
    /// domain another stack routes) is skipped with the reason in the second value: the others
    /// still route.
    pub fn with_tenant_domains(mut self, domains: &[(String, String)]) -> (Routes, Vec<String>) {
        let mut skipped = Vec::new();
        for (domain, stack) in domains {
            let domain = domain.to_ascii_lowercase();
            if !valid_domain(&domain) {
                skipped.push(format!("stack {stack}: {domain:?} is not a domain name"));
                continue;
            }
            let Some(provider) = self.by_domain.values().find(|p| &p.stack == stack).cloned()
            else {
                skipped.push(format!("no stack {stack} for {domain}"));
                continue;
            };
            match self.by_domain.get(&domain) {
                Some(other) if other.stack != *stack => skipped.push(format!(
                    "stacks {} and {} both manage {domain}: left with {}",
                    other.stack, stack, other.stack
                )),
                Some(_) => {}
                None => {
                    self.by_domain.insert(domain, provider);
                }
            }
        }
        (self, skipped)
    }

    /// Every routed domain with its stack, by domain.
    pub fn domains(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_domain
            .iter()
            .map(|(d, p)| (d.as_str(), p.stack.as_str()))
    }

    /// The local provider managing `domain`, if any.
    pub fn provider(&self, domain: &str) -> Option<&Provider> {
        self.by_domain.get(&domain.to_ascii_lowercase())
    }

    /// Each provider once (by its own domain).
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.by_domain
            .iter()
            .filter(|(d, p)| **d == p.domain)
            .map(|(_, p)| p)
    }

    /// Whether a message from `source` was sent by one of these providers (any address of a
    /// managed domain: SES lets a verified domain send from every address in it).
    pub fn sent_by_us(&self, source: &str) -> Option<&Provider> {
        let address = bare_address(source)?;
        self.provider(domain_of(&address)?)
    }
}

/// `local@domain` from `Name <local@domain>`, `<local@domain>` or `local@domain`; `None` when
/// there is no single plausible address (no `@`, blanks or control characters inside).
pub fn bare_address(text: &str) -> Option<String> {
    let text = text.trim();
    let inner = match (text.rfind('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => &text[open + 1..close],
        (None, None) => text,
        _ => return None,
    };
    let inner = inner.trim();
    let (local, domain) = inner.rsplit_once('@')?;
    if local.is_empty()
        || !valid_domain(&domain.to_ascii_lowercase())
        || inner
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return None;
    }
    Some(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// The domain of a bare address.
pub fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}

/// A DNS name we are willing to use as a routing key and a directory name: labels of
/// `[a-z0-9-]`, not starting or ending with `-`, at least two labels.
pub fn valid_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Where the recipients of one message go: per domain, in domain order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local provider: `inbound/` in its raw bucket, with these recipients.
    Provider {
        stack: String,
        domain: String,
        recipients: Vec<String>,
    },
    /// Any other domain: the outbox folder of that domain.
    Ordinary {
        domain: String,
        recipients: Vec<String>,
    },
}

impl Destination {
    pub fn domain(&self) -> &str {
        match self {
            Destination::Provider { domain, .. } | Destination::Ordinary { domain, .. } => domain,
        }
    }

    pub fn recipients(&self) -> &[String] {
        match self {
            Destination::Provider { recipients, .. } | Destination::Ordinary { recipients, .. } => {
                recipients
            }
        }
    }
}

/// Groups recipients by domain (duplicates removed, first spelling kept); returns the
/// destinations and the recipients that are not usable addresses.
pub fn route(routes: &Routes, recipients: &[String]) -> (Vec<Destination>, Vec<String>) {
    let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unusable = Vec::new();
    for r in recipients {
        match bare_address(r) {
            Some(address) => {
                let domain = domain_of(&address).unwrap_or_default().to_string();
                let list = by_domain.entry(domain).or_default();
                if !list.iter().any(|a| a.eq_ignore_ascii_case(&address)) {
                    list.push(address);
                }
            }
            None => unusable.push(r.clone()),
        }
    }
    let destinations = by_domain
        .into_iter()
        .map(|(domain, recipients)| match routes.provider(&domain) {
            Some(p) => Destination::Provider {
                stack: p.stack.clone(),
                domain,
                recipients,
            },
            None => Destination::Ordinary { domain, recipients },
        })
        .collect();
    (destinations, unusable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(stack: &str, domain: &str) -> Provider {
        Provider {
            stack: stack.into(),
            domain: domain.into(),
            raw_bucket: format!("{stack}-raw"),
            region: "eu-south-1".into(),
            state_table: None,
        }
    }

    fn routes() -> Routes {
        Routes::new(vec![
            provider("pec-local", "pec.example.test"),
            provider("pec-b", "pec.altro.test"),
        ])
        .unwrap()
    }

    #[test]
    fn provider_from_the_bootstrap_resources() {
        let json = br#"{"region": "eu-south-1",
            "outputs": {"RawMailBucketName": "pec-b-raw-000000000000-eu-south-1"},
            "function_environment": {"PEC_PROVIDER_DOMAIN": "PEC.Altro.test"}}"#;
        assert_eq!(
            Provider::from_resources("pec-b", json).unwrap(),
            Provider {
                stack: "pec-b".into(),
                domain: "pec.altro.test".into(),
                raw_bucket: "pec-b-raw-000000000000-eu-south-1".into(),
                region: "eu-south-1".into(),
                state_table: None,
            }
        );
        for bad in [
            &b"not json"[..],
            br#"{"outputs": {}}"#,
            br#"{"outputs": {"RawMailBucketName": "b"}, "function_environment": {"PEC_PROVIDER_DOMAIN": "../x"}}"#,
        ] {
            assert!(Provider::from_resources("s", bad).is_err());
        }
    }

    #[test]
    fn tenants_domains_route_to_their_provider() {
        let (r, skipped) =
            routes().with_tenant_domains(&[("Ordine.Example.test".into(), "pec-local".into())]);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            r.provider("ordine.example.test").unwrap().stack,
            "pec-local"
        );
        assert_eq!(
            r.sent_by_us("mario.rossi@ordine.example.test")
                .unwrap()
                .stack,
            "pec-local"
        );
        assert_eq!(r.providers().count(), 2, "each provider once");
        let (kept, skipped) = r.clone().with_tenant_domains(&[
            ("ordine.example.test".into(), "pec-b".into()),
            ("x.test".into(), "pec-z".into()),
            ("collegio.example.test".into(), "pec-b".into()),
        ]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("both manage ordine.example.test"));
        assert_eq!(
            kept.provider("ordine.example.test").unwrap().stack,
            "pec-local"
        );
        assert_eq!(
            kept.provider("collegio.example.test").unwrap().stack,
            "pec-b"
        );
    }

    #[test]
    fn two_stacks_cannot_manage_one_domain() {
        let err = Routes::new(vec![
            provider("a", "pec.example.test"),
            provider("b", "pec.example.test"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("both manage pec.example.test"));
    }

    #[test]
    fn addresses() {
        assert_eq!(
            bare_address("\"Posta\" <posta-certificata@PEC.example.test>").as_deref(),
            Some("posta-certificata@pec.example.test")
        );
        assert_eq!(bare_address(" a@b.it ").as_deref(), Some("a@b.it"));
        for bad in [
            "",
            "nobody",
            "@x.it",
            "a@",
            "a@b",
            "a@../etc",
            "a b@c.it",
            "<a@b.it",
            "a@b.it>",
            "a@-x.it",
            "a\r\n@b.it",
        ] {
            assert_eq!(bare_address(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn senders() {
        let r = routes();
        assert_eq!(
            r.sent_by_us("posta-certificata@pec.example.test")
                .map(|p| p.stack.as_str()),
            Some("pec-local")
        );
        assert!(r.sent_by_us("someone@ordinaria.test").is_none());
        assert!(r.sent_by_us("garbage").is_none());
    }

    #[test]
    fn recipients_are_grouped_per_domain() {
        let (destinations, unusable) = route(
            &routes(),
            &[
                "anna@pec.altro.test".into(),
                "Bruno <bruno@PEC.ALTRO.TEST>".into(),
                "anna@pec.altro.test".into(),
                "carla@ordinaria.test".into(),
                "me@pec.example.test".into(),
                "not an address".into(),
            ],
        );
        assert_eq!(unusable, ["not an address"]);
        assert_eq!(
            destinations,
            [
                Destination::Ordinary {
                    domain: "ordinaria.test".into(),
                    recipients: vec!["carla@ordinaria.test".into()]
                },
                Destination::Provider {
                    stack: "pec-b".into(),
                    domain: "pec.altro.test".into(),
                    recipients: vec!["anna@pec.altro.test".into(), "bruno@pec.altro.test".into()]
                },
                Destination::Provider {
                    stack: "pec-local".into(),
                    domain: "pec.example.test".into(),
                    recipients: vec!["me@pec.example.test".into()]
                },
            ]
        );
    }
}
