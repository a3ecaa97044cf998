//! `pec tenant` (tenants and their custom domains) and `pec provider-index export`: thin shells
//! over `pec_pipeline::tenants` on the deployment in the environment (the state table, SES and
//! the provider index in the evidence bucket; locally `eval "$(infra/local/stack.sh env)"`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use pec_aws::{AwsClients, ClientSettings, S3Store, SesIdentities};
use pec_pipeline::tenants::{self, DomainPolicy};
use pec_ports::{DomainRecord, ObjectStore, StateStore, Tenant};
use pec_smime::ProviderEntry;
use pec_smime::ProviderIndex;

use crate::mailbox::{clients, env, exit, runtime};

#[derive(clap::Args, Debug)]
pub struct TenantArgs {
    #[command(subcommand)]
    pub command: TenantCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TenantCommand {
    /// Create or update a tenant; each --domain is added and verified as `tenant domain add`
    /// and `tenant domain verify` would.
    Add {
        /// Tenant id (`[a-z0-9-]`).
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// A custom domain for the tenant's mailboxes (repeatable).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Who pays for the mailboxes: `tenant` (active at once) or `member` (pending until
        /// the member accepts the agreement at activation).
        #[arg(long, default_value = "tenant")]
        billing: String,
    },
    /// A tenant's custom domains: add (prints the DNS records to publish), verify, list, remove.
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum DomainCommand {
    /// Add a domain to a tenant: registers it with the mail service (DKIM included) and prints
    /// the DNS records the tenant must publish. Refused if another tenant or another provider
    /// (provider index) manages it.
    Add {
        tenant: String,
        domain: String,
        #[arg(long)]
        json: bool,
        /// Do not read the provider index (a deployment that has none yet).
        #[arg(long)]
        skip_index_check: bool,
    },
    /// Ask the mail service whether the domain's records are seen; records the status.
    Verify {
        tenant: String,
        domain: String,
        /// Keep asking (every 5 s) for up to this many seconds until verified.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// The tenant's domains with their status.
    List {
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a domain (refused while mailboxes are in it).
    Remove { tenant: String, domain: String },
}

#[derive(clap::Args, Debug)]
pub struct ProviderIndexArgs {
    #[command(subcommand)]
    pub command: ProviderIndexCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ProviderIndexCommand {
    /// Print this provider's entry for the provider index (IGPEC LDIF) with every domain it
    /// manages: the provider domain, then every verified tenant domain.
    Export {
        /// The provider certificate (PEM; the first certificate is used).
        #[arg(long, value_name = "PEM")]
        cert: PathBuf,
        /// Provider name (default: PEC_PROVIDER_NAME).
        #[arg(long)]
        provider: Option<String>,
        /// Address for presa-in-carico receipts; default posta-certificata@<provider domain>.
        #[arg(long, value_name = "ADDRESS")]
        mail_receipt: Option<String>,
        /// Base DN the entry is placed under.
        #[arg(long, default_value = "o=postacert")]
        base_dn: String,
    },
}

fn policy() -> anyhow::Result<DomainPolicy> {
    let provider_domain = env("PEC_PROVIDER_DOMAIN")?.to_ascii_lowercase();
    Ok(DomainPolicy {
        dmarc_reports: Some(format!("dmarc@{provider_domain}")),
        provider_domain,
    })
}

async fn identities() -> anyhow::Result<SesIdentities> {
    let aws = AwsClients::load(&ClientSettings::from_env()?).await;
    Ok(SesIdentities::new(aws.ses.clone()))
}

/// The provider index the functions read (evidence bucket), for the conflict check.
async fn provider_index(s3: &S3Store) -> anyhow::Result<ProviderIndex> {
    let bucket = env("PEC_EVIDENCE_BUCKET")?;
    let key = pec_ports::Env::process().or(
        "PEC_PROVIDER_INDEX_KEY",
        pec_ports::keys::DEFAULT_PROVIDER_INDEX_KEY,
    );
    let ldif = s3.get(&bucket, &key).await?.with_context(|| {
        format!(
            "the provider index s3://{bucket}/{key} is missing: a domain another provider \
             manages could not be refused (publish the index, or give --skip-index-check)"
        )
    })?;
    ProviderIndex::from_ldif(&ldif)
        .map_err(|e| anyhow::anyhow!("the provider index s3://{bucket}/{key}: {e}"))
}

pub fn run_tenant(args: TenantArgs) -> ExitCode {
    exit(runtime().and_then(|rt| rt.block_on(tenant(args))))
}

async fn tenant(args: TenantArgs) -> anyhow::Result<ExitCode> {
    let (state, s3) = clients().await?;
    match args.command {
        TenantCommand::Add {
            id,
            name,
            domains,
            billing,
        } => {
            let billing = pec_ports::Billing::parse(&billing)
                .with_context(|| format!("--billing {billing:?}: tenant or member"))?;
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                bail!("tenant id {id:?}: use lower-case letters, digits and '-'");
            }
            state
                .put_tenant(&Tenant {
                    id: id.clone(),
                    name,
                    billing,
                })
                .await?;
            println!("tenant {id}");
            if !domains.is_empty() {
                let ids = identities().await?;
                let index = provider_index(&s3).await?;
                for d in &domains {
                    tenants::add_domain(&state, &ids, Some(&index), &policy()?, &id, d, Utc::now())
                        .await?;
                    let r = tenants::verify_domain(&state, &ids, &id, d, Utc::now()).await?;
                    println!("  domain {} ({})", r.domain, r.status.as_str());
                }
            }
        }
        TenantCommand::Domain { command } => {
            let ids = identities().await?;
            match command {
                DomainCommand::Add {
                    tenant,
                    domain,
                    json,
                    skip_index_check,
                } => {
                    let index = if skip_index_check {
                        None
                    } else {
                        Some(provider_index(&s3).await?)
                    };
                    let r = tenants::add_domain(
                        &state,
                        &ids,
                        index.as_ref(),
                        &policy()?,
                        &tenant,
                        &domain,
                        Utc::now(),
                    )
                    .await?;
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!(
                            "domain {} for tenant {}: {}; publish these records, then \
                             `pec tenant domain verify {} {}`:",
                            r.domain,
                            r.tenant,
                            r.status.as_str(),
                            r.tenant,
                            r.domain
                        );
                        print_zone(&r);
                    }
                }
                DomainCommand::Verify {
                    tenant,
                    domain,
                    wait,
                    json,
                } => {
                    let deadline = Instant::now() + Duration::from_secs(wait);
                    let r = loop {
                        let r = tenants::verify_domain(&state, &ids, &tenant, &domain, Utc::now())
                            .await?;
                        if r.is_verified() || Instant::now() >= deadline {
                            break r;
                        }
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    };
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!(
                            "domain {}: {} (DKIM {})",
                            r.domain,
                            r.status.as_str(),
                            r.dkim_status
                        );
                    }
                    if !r.is_verified() {
                        return Ok(ExitCode::from(1));
                    }
                }
                DomainCommand::List { tenant, json } => {
                    for r in tenants::list_domains(&state, &tenant).await? {
                        if json {
                            println!("{}", serde_json::to_string(&r)?);
                        } else {
                            println!(
                                "{}  {}  DKIM {}  added {}{}",
                                r.domain,
                                r.status.as_str(),
                                if r.dkim_status.is_empty() {
                                    "-"
                                } else {
                                    &r.dkim_status
                                },
                                r.added_at.format("%Y-%m-%d %H:%M:%S"),
                                r.verified_at
                                    .map(|t| format!(
                                        "  verified {}",
                                        t.format("%Y-%m-%d %H:%M:%S")
                                    ))
                                    .unwrap_or_default()
                            );
                        }
                    }
                }
                DomainCommand::Remove { tenant, domain } => {
                    tenants::remove_domain(&state, &ids, &tenant, &domain).await?;
                    println!("domain {domain} removed from tenant {tenant}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The records as zone-file lines.
fn print_zone(r: &DomainRecord) {
    for d in &r.dns {
        println!(
            "  {}.  3600  IN  {:<5}  {}    ; {}",
            d.name, d.kind, d.value, d.purpose
        );
    }
}

pub fn run_provider_index(args: ProviderIndexArgs) -> ExitCode {
    exit(runtime().and_then(|rt| {
        rt.block_on(async {
            let ProviderIndexCommand::Export {
                cert,
                provider,
                mail_receipt,
                base_dn,
            } = args.command;
            let (state, _) = clients().await?;
            let provider_domain = env("PEC_PROVIDER_DOMAIN")?.to_ascii_lowercase();
            let provider = match provider {
                Some(p) => p,
                None => env("PEC_PROVIDER_NAME")?,
            };
            let pem = std::fs::read(&cert)
                .with_context(|| format!("cannot read certificate {}", cert.display()))?;
            let certs = pec_smime::certs::certificates_from_pem(&pem)?;
            let first = certs.first().context("no certificate")?;
            let der = der::Encode::to_der(first)?;
            let domains = tenants::managed_domains(&state, &provider_domain).await?;
            let receipt =
                mail_receipt.unwrap_or_else(|| format!("posta-certificata@{provider_domain}"));
            let entry =
                ProviderEntry::for_certificate(&provider, &base_dn, domains, Some(receipt), &der);
            print!("{}", entry.to_ldif());
            Ok(ExitCode::SUCCESS)
        })
    }))
}
