//! `pec tenant`, `pec mailbox`, `pec log`: provisioning and reading the state of a deployment.
//!
//! The tables and buckets come from the environment the stack exports (`PEC_STATE_TABLE`,
//! `PEC_LOG_TABLE`, `PEC_MAILBOX_BUCKET`; locally `eval "$(infra/local/stack.sh env)"`), the
//! endpoints from `AWS_ENDPOINT_URL*` as for every SDK client.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use pec_aws::{AwsClients, ClientSettings, DynamoState, S3Store};
use pec_core::breach::Setting;
use pec_core::classify::classify;
use pec_core::plan;
use pec_ports::breach::{Candidate, Screened, screen};
use pec_ports::{Mailbox, ObjectStore, StateStore};
use pec_smime::{TrustAnchors, VerifyOptions, verify_message};

#[derive(clap::Args, Debug)]
pub struct MailboxArgs {
    #[command(subcommand)]
    pub command: MailboxCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum MailboxCommand {
    /// Create a mailbox with its plan and submission password.
    Create {
        address: String,
        #[arg(long)]
        tenant: String,
        /// base, standard, pro, plus (1 GB), bronze, silver, silver-plus (2 GB), gold, gold-plus
        /// (5 GB): `pec mailbox plans` prints what each includes.
        #[arg(long, default_value = "standard")]
        plan: String,
        /// One expansion of 1, 3 or 5 GB on top of the plan's inbox.
        #[arg(long = "expansion-gb", alias = "expansions", default_value_t = 0)]
        expansions: u32,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// Cheap password hash: local demos and tests only.
        #[arg(long)]
        fast_hash: bool,
        /// Quota in bytes instead of the plan's (special contracts; the quota tests).
        #[arg(long)]
        quota_bytes: Option<u64>,
        /// Refuse ordinary (non-PEC) mail instead of receiving it in an anomaly envelope.
        #[arg(long)]
        refuse_ordinary: bool,
        /// Create it even if the password cannot be checked against breach data (the plan's
        /// password protection; `PEC_BREACH_URL`, default the Pwned Passwords API): a
        /// breached password is still refused when the check answers.
        #[arg(long)]
        skip_breach_check_if_unavailable: bool,
    },
    /// List what a mailbox holds, oldest first, with its usage.
    List {
        address: String,
        #[arg(long)]
        json: bool,
        /// Only what concerns this submission id (as printed by `pec send`).
        #[arg(long)]
        message: Option<String>,
        /// Verify each item's signature against these PEM trust anchors (adds a column).
        #[arg(long = "anchors", value_name = "PEM")]
        anchors: Vec<PathBuf>,
    },
    /// Show one stored message: kind, subject, date, signature verdict; `--raw` prints bytes.
    Show {
        address: String,
        /// The item id (from `pec mailbox list`).
        item: String,
        /// PEM trust anchors for the signature verdict (the provider's CA).
        #[arg(long = "anchors", value_name = "PEM")]
        anchors: Vec<PathBuf>,
        #[arg(long)]
        raw: bool,
    },
    /// Delete a stored message (frees its quota).
    Delete { address: String, item: String },
    /// Move a mailbox to another plan: an upgrade at once; a downgrade at once if what the
    /// mailbox holds fits the new limits, otherwise refused with the numbers.
    Plan {
        address: String,
        /// base, standard, pro, plus, bronze, silver, silver-plus, gold, gold-plus.
        plan: String,
        /// One expansion of 1, 3 or 5 GB on top of the plan's inbox (0: none).
        #[arg(long = "expansion-gb", default_value_t = 0)]
        expansion_gb: u32,
        /// Print the change as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The service sheet: what each plan includes (Markdown).
    Plans,
    /// Import a tenant's members from a table (.csv or .xlsx: nome, cognome, codice fiscale,
    /// email, optional cellulare and piano): one mailbox each under the tenant's address
    /// pattern, and a one-time activation link to each member's contact address. Safe to run
    /// again (nothing is created twice; an interrupted import is finished). Ends with a report.
    Import {
        /// The table.
        file: PathBuf,
        #[arg(long)]
        tenant: String,
        /// The domain of the addresses (a verified domain of the tenant, or the provider's).
        #[arg(long)]
        domain: String,
        /// Address pattern: nome, cognome, n, c joined by '.', '-' or '_'.
        #[arg(long, default_value = "nome.cognome")]
        pattern: String,
        /// The plan of rows without one.
        #[arg(long, default_value = "standard")]
        plan: String,
        /// The report (CSV: row, fiscal code, address, outcome, reason); default: <file>.report.csv.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Where members activate their mailbox (the link is this URL + '#' + a one-time token).
        #[arg(long, env = "PEC_ACTIVATION_URL")]
        activation_url: String,
        /// Days an activation link works.
        #[arg(long, default_value_t = 7)]
        valid_days: u32,
    },
    /// Send a member a new activation link for an imported mailbox not activated yet (the
    /// first expired or was lost); the previous link stops working.
    ResendActivation {
        address: String,
        /// Where members activate their mailbox (the link is this URL + '#' + a one-time token).
        #[arg(long, env = "PEC_ACTIVATION_URL")]
        activation_url: String,
        /// Days the link works.
        #[arg(long, default_value_t = 7)]
        valid_days: u32,
    },
    /// Suspend a mailbox (no login, no submission; senders get a non-delivery notice) until
    /// it is resumed.
    Suspend {
        address: String,
        /// spam, non-payment, request or other.
        #[arg(long)]
        reason: String,
    },
    /// Put a suspended mailbox back in service (active, or pending if its member had not
    /// activated it yet).
    Resume { address: String },
    /// Lock a mailbox at once (the operator's spam lock: its password is replaced, every login
    /// and session refused; no reset link is sent).
    Lock {
        address: String,
        /// Why (recorded in the mailbox's lock note).
        #[arg(long)]
        reason: String,
    },
    /// What happens to ordinary (non-PEC) mail scored as spam: `junk` (delivered to the Junk
    /// folder, the default) or `delete` (not stored). PEC messages are never filtered.
    SpamFiling {
        address: String,
        /// junk or delete.
        filing: String,
    },
    /// SMS notification of new PEC (plans that include it): `--number` turns it on (any
    /// written form of a mobile; stored as E.164), `--off` turns it off. Ordinary mail is
    /// notified too only with `--ordinary`. A burst becomes one digest SMS.
    Sms {
        address: String,
        /// The mobile number to notify.
        #[arg(long, conflicts_with = "off", required_unless_present = "off")]
        number: Option<String>,
        /// Notify ordinary (non-PEC) mail delivered to INBOX too.
        #[arg(long, conflicts_with = "off")]
        ordinary: bool,
        /// Turn SMS notifications off.
        #[arg(long)]
        off: bool,
    },
    /// Lift a lock. After a spam lock the member still chooses a new password with the reset
    /// link (or one sent with resend-activation).
    Unlock { address: String },
    /// Run the spam-lockout sweep now, as the scheduled spam-sweep function does: every mailbox
    /// over the threshold is locked and its member gets one reset link. Prints one JSON line
    /// per mailbox looked at.
    SweepSpam {
        /// The page of reset links (the link is this URL + '#' + a one-time token).
        #[arg(long, env = "PEC_ACTIVATION_URL")]
        activation_url: String,
        /// More than this many spam messages in the window lock.
        #[arg(long, default_value_t = 10)]
        threshold: usize,
        /// The rolling window, in minutes.
        #[arg(long, default_value_t = 60)]
        window_minutes: i64,
    },
    /// Send the monthly password-protection reports now, as the scheduled password-report
    /// function does early on the first of the month: each mailbox with breached passwords
    /// refused in the month gets a PEC from security@<provider domain>, once per month. One
    /// JSON line per mailbox.
    PasswordReport {
        /// The month (YYYY-MM, ended); default the previous one.
        #[arg(long, conflicts_with = "preview")]
        month: Option<String>,
        /// The current month so far, under an id of its own (one a day): the month's own
        /// report still goes out when it ends.
        #[arg(long)]
        preview: bool,
    },
    /// Close a mailbox for good (as suspended, never resumed); its messages, provider-log
    /// records and conservation copies are kept.
    Revoke {
        address: String,
        /// Revocation is final: say so.
        #[arg(long)]
        yes: bool,
    },
    /// Bring a member's PEC mailbox from another provider: every folder's messages and receipts
    /// copied over IMAP with their bytes, dates and flags, counted against the quota. Read-only
    /// at the source; safe to run again (it resumes, nothing is copied twice).
    Transfer {
        /// The mailbox here.
        address: String,
        /// The source server: imaps://[user@]host[:port], or imap://... with STARTTLS. A
        /// transfer resumes per user and host name: spell the host the same way every run.
        #[arg(long)]
        from: String,
        /// The login at the source (default: the URL's user).
        #[arg(long)]
        user: Option<String>,
        /// Read the source password from standard input (else PEC_TRANSFER_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
        /// PEM certificates trusted besides the public roots (a private or test server).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Where a source folder goes: SOURCE=INBOX|Sent|Drafts|Junk|Trash (repeatable).
        #[arg(long = "folder", value_name = "SOURCE=OURS")]
        folders: Vec<String>,
        /// A source folder not to copy (repeatable).
        #[arg(long = "skip-folder", value_name = "SOURCE")]
        skip_folders: Vec<String>,
        /// Copy at most this many messages in this run.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// The UTC day, YYYY-MM-DD (default: today).
    #[arg(long)]
    pub day: Option<String>,
}

pub(crate) fn env(name: &str) -> anyhow::Result<String> {
    pec_ports::Env::process()
        .required(name)
        .context("locally: eval \"$(infra/local/stack.sh env)\"")
}

pub(crate) async fn clients() -> anyhow::Result<(DynamoState, S3Store)> {
    let aws = AwsClients::load(&ClientSettings::from_env()?).await;
    Ok((
        DynamoState::new(
            aws.dynamodb.clone(),
            &env("PEC_STATE_TABLE")?,
            &env("PEC_LOG_TABLE")?,
        ),
        S3Store::new(aws.s3.clone()),
    ))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

pub(crate) fn exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("pec: {e:#}");
        ExitCode::from(2)
    })
}

/// The plan's password protection: a breached password is refused (and recorded for the
/// monthly report); a source that cannot answer refuses too, unless the operator says
/// otherwise.
async fn breach_check(
    state: &DynamoState,
    candidate: Candidate<'_>,
    password: &str,
    skip_if_unavailable: bool,
) -> anyhow::Result<()> {
    let url = std::env::var("PEC_BREACH_URL")
        .unwrap_or_else(|_| pec_aws::breach::DEFAULT_URL.to_string());
    let source = pec_aws::breach_source(&url).map_err(|e| anyhow::anyhow!(e))?;
    match screen(&*source, state, candidate, password, Utc::now()).await {
        Ok(Screened::NotInPlan | Screened::Clean) => Ok(()),
        Ok(Screened::Breached(band)) => bail!(
            "the password appears in known data breaches ({}): choose another, one used nowhere \
             else (the {} plan checks passwords against breach data)",
            band.en(),
            candidate.plan.as_str()
        ),
        Err(e) if skip_if_unavailable => {
            eprintln!("warning: the password was not checked against breach data: {e}");
            Ok(())
        }
        Err(e) => bail!(
            "{e}; the {} plan checks passwords against breach data (PEC_BREACH_URL={url}): \
             retry, or pass --skip-breach-check-if-unavailable",
            candidate.plan.as_str()
        ),
    }
}

pub fn run_mailbox(args: MailboxArgs) -> ExitCode {
    exit(runtime().and_then(|rt| rt.block_on(mailbox(args))))
}

async fn mailbox(args: MailboxArgs) -> anyhow::Result<ExitCode> {
    if let MailboxCommand::Plans = args.command {
        // The sheet needs no deployment.
        print!("{}", plan::sheet_markdown());
        return Ok(ExitCode::SUCCESS);
    }
    let (state, s3) = clients().await?;
    match args.command {
        MailboxCommand::Create {
            address,
            tenant,
            plan: plan_name,
            expansions,
            password_stdin,
            fast_hash,
            quota_bytes,
            refuse_ordinary,
            skip_breach_check_if_unavailable,
        } => {
            if !pec_core::addr::is_addr_spec(&address) {
                bail!("{address:?} is not a mailbox address");
            }
            let plan = plan::parse_plan(&plan_name)?;
            plan::check_expansion(expansions)?;
            if !password_stdin {
                bail!("give the password on standard input with --password-stdin");
            }
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.len() < 8 {
                bail!("the password must have at least 8 characters");
            }
            // A taken address first: no finding is recorded against someone else's mailbox.
            if state.mailbox(&address).await?.is_some() {
                bail!("mailbox {address} already exists");
            }
            breach_check(
                &state,
                Candidate {
                    mailbox: &address,
                    tenant: &tenant,
                    plan,
                    setting: Setting::OperatorCreate,
                },
                password,
                skip_breach_check_if_unavailable,
            )
            .await?;
            let cost = if fast_hash {
                pec_submit::HashCost::Fast
            } else {
                pec_submit::HashCost::Production
            };
            let hash = pec_submit::hash_password_with(password, cost)?;
            let m = Mailbox {
                address: address.to_ascii_lowercase(),
                tenant,
                plan,
                expansions_gb: expansions,
                quota_bytes: match quota_bytes {
                    Some(q) => q,
                    None => plan::quota_bytes(plan, expansions)?,
                },
                used_bytes: 0,
                password_hash: hash,
                locked: false,
                status: Default::default(),
                member: None,
                status_note: None,
                agreement_accepted_at: None,
                refuse_ordinary,
                lock: None,
                ordinary_spam: Default::default(),
                sms: None,
                created_at: Utc::now(),
            };
            if !state.create_mailbox(&m).await? {
                bail!("mailbox {address} already exists");
            }
            println!(
                "mailbox {} ({}, {} bytes)",
                m.address,
                plan.as_str(),
                m.quota_bytes
            );
        }
        MailboxCommand::List {
            address,
            json,
            message,
            anchors,
        } => {
            let m = state
                .mailbox(&address)
                .await?
                .with_context(|| format!("no mailbox {address}"))?;
            let mut items = state.mailbox_items(&address).await?;
            if let Some(id) = &message {
                let mine = [format!("/msg/{id}/"), format!("/submitted/{id}.eml/")];
                items.retain(|i| mine.iter().any(|m| i.evidence_key.contains(m.as_str())));
            }
            let ta = load_anchors(&anchors)?;
            let bucket = env("PEC_MAILBOX_BUCKET")?;
            let mut verdicts = Vec::new();
            for i in &items {
                verdicts.push(match &ta {
                    None => None,
                    Some(ta) => Some(match s3.get(&bucket, &i.object_key).await? {
                        Some(bytes) => format!(
                            "{:?}",
                            verify_message(&bytes, ta, None, &VerifyOptions::default()).verdict
                        ),
                        None => "MISSING".to_string(),
                    }),
                });
            }
            if json {
                let rows: Vec<serde_json::Value> = items
                    .iter()
                    .zip(&verdicts)
                    .map(|(i, v)| {
                        let mut row = serde_json::to_value(i).unwrap_or_default();
                        if let (Some(v), Some(obj)) = (v, row.as_object_mut()) {
                            obj.insert("signature".into(), v.clone().into());
                        }
                        row
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"mailbox": m.address, "plan": m.plan, "quota_bytes": m.quota_bytes,
                        "used_bytes": m.used_bytes, "status": m.status, "status_note": m.status_note,
                        "items": rows})
                );
            } else {
                println!(
                    "{}  {}  plan {}  used {} of {} bytes  {} message(s)",
                    m.address,
                    match &m.status_note {
                        Some(n) => format!("{} ({})", m.status.as_str(), n.reason),
                        None => m.status.as_str().to_string(),
                    },
                    m.plan.as_str(),
                    m.used_bytes,
                    m.quota_bytes,
                    items.len()
                );
                for (i, v) in items.iter().zip(&verdicts) {
                    println!(
                        "  {}  {}  {:<18} {:>7} B  {}{}",
                        i.id,
                        i.stored_at.format("%Y-%m-%d %H:%M:%S"),
                        i.kind,
                        i.size,
                        v.as_ref().map(|v| format!("{v:<8} ")).unwrap_or_default(),
                        i.subject
                    );
                }
            }
        }
        MailboxCommand::Show {
            address,
            item,
            anchors,
            raw,
        } => {
            let items = state.mailbox_items(&address).await?;
            let i = items
                .iter()
                .find(|i| i.id == item)
                .with_context(|| format!("no item {item} in {address}"))?;
            let bucket = env("PEC_MAILBOX_BUCKET")?;
            let bytes = s3
                .get(&bucket, &i.object_key)
                .await?
                .with_context(|| format!("s3://{bucket}/{} is missing", i.object_key))?;
            if raw {
                use std::io::Write;
                std::io::stdout().write_all(&bytes)?;
                return Ok(ExitCode::SUCCESS);
            }
            let c = classify(&bytes);
            println!("item:     {}", i.id);
            println!("type:     {}", c.description());
            println!(
                "subject:  {}",
                c.headers.subject.clone().unwrap_or_default()
            );
            println!("date:     {}", c.headers.date.clone().unwrap_or_default());
            println!("from:     {}", c.headers.from.join(", "));
            if let Some(d) = &c.daticert {
                println!("identificativo: {}", d.dati.identificativo);
                if let Some(r) = &d.dati.consegna {
                    println!("consegna: {r}");
                }
                if let Some(e) = &d.dati.errore_esteso {
                    println!("errore:   {e}");
                }
            }
            if let Some(ta) = load_anchors(&anchors)? {
                let v = verify_message(&bytes, &ta, None, &VerifyOptions::default());
                println!("signature: {:?}", v.verdict);
            }
        }
        MailboxCommand::Plan {
            address,
            plan: plan_name,
            expansion_gb,
            json,
        } => {
            let to = plan::parse_plan(&plan_name)?;
            let before = state
                .mailbox(&address)
                .await?
                .with_context(|| format!("no mailbox {address}"))?;
            let c = pec_pipeline::tenants::change_plan(
                &state,
                &pec_pipeline::tenants::Admin::Operator,
                &address,
                to,
                expansion_gb,
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"mailbox": before.address, "from": before.plan, "change": c})
                );
            } else {
                let names = |f: &[plan::Feature]| {
                    f.iter().map(|f| f.label()).collect::<Vec<_>>().join(", ")
                };
                println!(
                    "mailbox {}: {} +{} GB -> {} +{} GB ({:?}); inbox quota {} bytes ({}), {} in use",
                    before.address,
                    before.plan,
                    before.expansions_gb,
                    c.plan,
                    c.expansion_gb,
                    c.kind,
                    c.quota_bytes,
                    plan::gib(c.quota_bytes),
                    plan::gib(before.used_bytes),
                );
                if !c.features_gained.is_empty() {
                    println!("  gained: {}", names(&c.features_gained));
                }
                if !c.features_lost.is_empty() {
                    println!("  lost: {}", names(&c.features_lost));
                }
            }
        }
        MailboxCommand::Plans => {}
        MailboxCommand::Import {
            file,
            tenant,
            domain,
            pattern,
            plan: plan_name,
            report,
            activation_url,
            valid_days,
        } => {
            return crate::import::run(
                &state,
                crate::import::Args {
                    file,
                    tenant,
                    domain,
                    pattern,
                    plan: plan_name,
                    report,
                    activation_url,
                    valid_days,
                },
            )
            .await;
        }
        MailboxCommand::ResendActivation {
            address,
            activation_url,
            valid_days,
        } => {
            return crate::import::resend(&state, &address, &activation_url, valid_days).await;
        }
        MailboxCommand::Suspend { address, reason } => {
            let reason = pec_pipeline::tenants::SuspendReason::parse(&reason)?;
            status(
                &state,
                &address,
                pec_pipeline::tenants::StatusChange::Suspend(reason),
            )
            .await?;
        }
        MailboxCommand::Resume { address } => {
            status(
                &state,
                &address,
                pec_pipeline::tenants::StatusChange::Resume,
            )
            .await?;
        }
        MailboxCommand::Lock { address, reason } => {
            let note = pec_ports::LockNote {
                reason,
                since: Utc::now(),
                by_operator: true,
                detections: 0,
                unlocked_at: None,
            };
            match pec_pipeline::lockout::lock(&state, &address, note.clone()).await? {
                pec_pipeline::lockout::Locked::Now(_) => {
                    pec_pipeline::lockout::record_lock(&state, &address, &note, &issuer()?).await?;
                    println!("{address}: locked (recorded in the provider log)")
                }
                pec_pipeline::lockout::Locked::Already(_) => println!("{address}: already locked"),
            }
        }
        MailboxCommand::SpamFiling { address, filing } => {
            let filing = pec_ports::SpamFiling::parse(&filing)
                .with_context(|| format!("{filing:?}: junk or delete"))?;
            let mut done = false;
            for _ in 0..5 {
                let current = state
                    .mailbox(&address)
                    .await?
                    .with_context(|| format!("no mailbox {address}"))?;
                let new = Mailbox {
                    ordinary_spam: filing,
                    ..current.clone()
                };
                if state.replace_mailbox(&current, &new, None).await? {
                    done = true;
                    break;
                }
            }
            if !done {
                bail!("{address} kept changing; try again");
            }
            println!("{address}: ordinary spam -> {filing:?}");
        }
        MailboxCommand::Sms {
            address,
            number,
            ordinary,
            off,
        } => {
            let sms = match (off, number) {
                (true, _) | (_, None) => None,
                (false, Some(n)) => Some(pec_ports::sms::SmsSettings {
                    number: pec_members::mobile_e164(&n)?,
                    ordinary,
                }),
            };
            let mut done = false;
            for _ in 0..5 {
                let current = state
                    .mailbox(&address)
                    .await?
                    .with_context(|| format!("no mailbox {address}"))?;
                if sms.is_some() {
                    pec_core::plan::require(
                        current.plan,
                        pec_core::plan::Feature::SmsNotification,
                    )?;
                }
                let new = Mailbox {
                    sms: sms.clone(),
                    ..current.clone()
                };
                if state.replace_mailbox(&current, &new, None).await? {
                    done = true;
                    break;
                }
            }
            if !done {
                bail!("{address} kept changing; try again");
            }
            match &sms {
                Some(s) if s.ordinary => {
                    println!("{address}: SMS to {} for PEC and ordinary mail", s.number)
                }
                Some(s) => println!("{address}: SMS to {} for new PEC", s.number),
                None => println!("{address}: no SMS notifications"),
            }
        }
        MailboxCommand::Unlock { address } => {
            let now = Utc::now();
            if pec_pipeline::lockout::unlock(&state, &address, now).await? {
                let lifted = state.mailbox(&address).await?.and_then(|m| m.lock);
                if let Some(note) = lifted {
                    pec_pipeline::lockout::record_unlock(&state, &address, &note, now, &issuer()?)
                        .await?;
                }
                println!("{address}: unlocked (recorded in the provider log)");
            } else {
                println!("{address}: was not locked");
            }
        }
        MailboxCommand::SweepSpam {
            activation_url,
            threshold,
            window_minutes,
        } => {
            if !(1..=10_080).contains(&window_minutes) {
                bail!("--window-minutes: 1 to 10080 (a week)");
            }
            if threshold < 1 {
                bail!("--threshold: at least 1");
            }
            let aws = AwsClients::load(&ClientSettings::from_env()?).await;
            let settings = pec_pipeline::lockout::LockoutSettings {
                rule: pec_core::lockout::LockoutRule {
                    threshold,
                    window: chrono::Duration::minutes(window_minutes),
                },
                sweep_every: chrono::Duration::minutes(5),
                reset_valid: chrono::Duration::hours(24),
                reset_url: activation_url,
                provider_name: issuer()?,
                provider_domain: env("PEC_PROVIDER_DOMAIN")?,
            };
            let mail = pec_aws::SesTransport::new(aws.ses.clone());
            let sms = pec_aws::SnsSms::new(
                aws.sns.clone(),
                std::env::var("PEC_SMS_SENDER_ID")
                    .ok()
                    .filter(|v| !v.is_empty()),
            );
            let mut token = crate::import::token;
            let lines = pec_pipeline::lockout::sweep(
                &state,
                &mail,
                &sms,
                &settings,
                Utc::now(),
                &mut token,
            )
            .await?;
            for line in lines {
                println!("{}", serde_json::to_string(&line)?);
            }
        }
        MailboxCommand::PasswordReport { month, preview } => {
            // Its calls are recorded as the function's (the IAM check holds them to its role).
            let mut settings = ClientSettings::from_env()?;
            settings.call_log_stack =
                Some(std::env::var("PEC_STACK_NAME").unwrap_or_else(|_| "pec-local".into()));
            let aws = AwsClients::load(&settings)
                .await
                .for_function("PasswordReportFunction");
            let report = pec_pipeline::pwreport::PasswordReport {
                state: DynamoState::new(
                    aws.dynamodb.clone(),
                    &env("PEC_STATE_TABLE")?,
                    &env("PEC_LOG_TABLE")?,
                ),
                store: S3Store::new(aws.s3.clone()),
                settings: pec_pipeline::pwreport::ReportSettings {
                    provider_domain: env("PEC_PROVIDER_DOMAIN")?.to_ascii_lowercase(),
                    provider_name: issuer()?,
                    raw_bucket: env("PEC_RAW_BUCKET")?,
                },
            };
            let now = Utc::now();
            let run = match (preview, month) {
                (true, _) => pec_pipeline::pwreport::ReportRun::Preview,
                (false, Some(m)) => pec_pipeline::pwreport::ReportRun::Month(m),
                (false, None) => pec_pipeline::pwreport::ReportRun::Month(
                    pec_pipeline::pwreport::month_before(now),
                ),
            };
            for line in report.run(&run, now).await? {
                println!("{}", serde_json::to_string(&line)?);
            }
        }
        MailboxCommand::Revoke { address, yes } => {
            if !yes {
                bail!("revoking {address} is final (it is never resumed): add --yes");
            }
            status(
                &state,
                &address,
                pec_pipeline::tenants::StatusChange::Revoke,
            )
            .await?;
        }
        MailboxCommand::Transfer {
            address,
            from,
            user,
            password_stdin,
            ca_file,
            folders,
            skip_folders,
            limit,
            json,
        } => {
            return crate::transfer::run(
                &state,
                crate::transfer::Args {
                    address,
                    from,
                    user,
                    password_stdin,
                    ca_file,
                    folders,
                    skip_folders,
                    limit,
                    json,
                },
            )
            .await;
        }
        MailboxCommand::Delete { address, item } => match state.delete_item(&address, &item).await?
        {
            Some(i) => println!("deleted {} ({} bytes freed)", i.id, i.size),
            None => bail!("no item {item} in {address}"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(
    state: &DynamoState,
    address: &str,
    change: pec_pipeline::tenants::StatusChange,
) -> anyhow::Result<()> {
    let m = pec_pipeline::tenants::change_status(
        state,
        &pec_pipeline::tenants::Admin::Operator,
        address,
        change,
        Utc::now(),
    )
    .await?;
    match &m.status_note {
        Some(n) => println!(
            "{}: {} ({}, since {}, was {})",
            m.address,
            m.status.as_str(),
            n.reason,
            n.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            n.previous.as_str()
        ),
        None => println!("{}: {}", m.address, m.status.as_str()),
    }
    Ok(())
}

fn load_anchors(files: &[PathBuf]) -> anyhow::Result<Option<TrustAnchors>> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut ta = TrustAnchors::new();
    for f in files {
        let pem = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        ta.add_pem_bundle(&pem)
            .with_context(|| format!("trust anchors {}", f.display()))?;
    }
    Ok(Some(ta))
}

pub fn run_log(args: LogArgs) -> ExitCode {
    exit(runtime().and_then(|rt| {
        rt.block_on(async {
            let (state, _) = clients().await?;
            let day = args
                .day
                .unwrap_or_else(|| Utc::now().format("%Y-%m-%d").to_string());
            for e in state.log_day(&day).await? {
                println!("{}", e.to_json());
            }
            Ok(ExitCode::SUCCESS)
        })
    }))
}

/// The issuer of provider-log records the operator's commands write: `PEC_PROVIDER_NAME`, else
/// the provider domain.
fn issuer() -> anyhow::Result<String> {
    match std::env::var("PEC_PROVIDER_NAME") {
        Ok(name) if !name.is_empty() => Ok(name),
        _ => std::env::var("PEC_PROVIDER_DOMAIN").map_err(|_| {
            anyhow::anyhow!("PEC_PROVIDER_DOMAIN is not set (eval \"$(infra/local/stack.sh env)\")")
        }),
    }
}
