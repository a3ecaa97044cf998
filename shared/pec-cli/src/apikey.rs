//! `pec apikey`: a tenant's API keys for the integration API (`pec-api`).
//!
//! The key is printed once, at creation; the state table keeps only its hash.

use std::process::ExitCode;

use anyhow::bail;
use chrono::Utc;
use pec_ports::access::{AccessStore, Scope};

use crate::mailbox::{clients, exit, runtime};

#[derive(clap::Args, Debug)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    pub command: ApiKeyCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Create a key and print it (once: it cannot be shown again).
    Create {
        #[arg(long)]
        tenant: String,
        /// A label for people ("ERP production").
        #[arg(long)]
        name: String,
        /// Comma-separated: send, read, admin, webhooks.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// The tenant's keys (id, name, scopes, created, last used, revoked, expires) as JSON lines.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key by id: it stops working at once.
    Revoke {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

pub fn run(args: ApiKeyArgs) -> ExitCode {
    exit(runtime().and_then(|rt| {
        rt.block_on(async {
            let (state, _) = clients().await?;
            match args.command {
                ApiKeyCommand::Create {
                    tenant,
                    name,
                    scopes,
                } => {
                    let mut parsed = Vec::new();
                    for s in &scopes {
                        match Scope::parse(s.trim()) {
                            Some(v) if !parsed.contains(&v) => parsed.push(v),
                            Some(_) => {}
                            None => bail!("unknown scope {s:?}: send, read, admin, webhooks"),
                        }
                    }
                    let (shown, key) =
                        pec_api::auth::new_api_key(&tenant, &name, parsed, Utc::now())
                            .map_err(|p| anyhow::anyhow!(p.detail))?;
                    state.put_api_key(&key).await?;
                    eprintln!(
                        "pec: API key {} for tenant {tenant}; it is shown only now",
                        key.id
                    );
                    println!("{shown}");
                }
                ApiKeyCommand::List { tenant } => {
                    for k in state.api_keys(&tenant).await? {
                        let line = serde_json::json!({
                            "id": k.id, "name": k.name, "scopes": k.scopes,
                            "created_at": k.created_at, "last_used_at": k.last_used_at,
                            "revoked_at": k.revoked_at, "expires_at": k.expires_at,
                        });
                        println!("{line}");
                    }
                }
                ApiKeyCommand::Revoke { tenant, id } => {
                    if !state.revoke_api_key(&tenant, &id, Utc::now()).await? {
                        bail!("tenant {tenant} has no API key {id}");
                    }
                    println!("revoked {id}");
                }
            }
            Ok(ExitCode::SUCCESS)
        })
    }))
}
