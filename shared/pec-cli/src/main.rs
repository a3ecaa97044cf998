//! `pec`: the operator and developer command line.
//!
//! Each subcommand lives in its own module and is a thin shell over a library crate:
//! argument parsing and printing here, rules in `pec-core` (and friends).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod antivirus;
mod apikey;
mod bulk;
mod cert;
mod dlq;
mod import;
mod inspect;
mod mailbox;
mod scan;
mod send;
mod tenant;
mod transfer;
mod verify;

#[derive(Parser)]
#[command(name = "pec", version, about = "PEC provider tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the toolchain-independent build information of this binary.
    About,
    /// Verify a received PEC multipart/signed message; prints the verdict as JSON, exits 0
    /// only for a valid message.
    Verify(verify::VerifyArgs),
    /// Development CA, provider certificates, provider-index entries, certificate requests.
    Cert(cert::CertArgs),
    /// Say what a message is (envelope, receipt or notice kind, anomaly, ordinary mail) and
    /// print its daticert; `--json` for machine-readable output.
    Inspect(inspect::InspectArgs),
    /// Antivirus: the two engines in series (clamd, then YARA) over every part of a message;
    /// prints the verdict as JSON, exits 0 clean, 1 infected, 2 unscannable or engine error.
    Scan(scan::ScanArgs),
    /// ClamAV's definitions in the evidence bucket: update them now (freshclam), or show
    /// their versions and age.
    Antivirus(antivirus::AntivirusArgs),
    /// Tenants and their domains (state table of the deployment in the environment).
    Tenant(tenant::TenantArgs),
    /// This provider's entry for the provider index (IGPEC LDIF), with every managed domain.
    ProviderIndex(tenant::ProviderIndexArgs),
    /// Create mailboxes; list, show and delete what they hold.
    Mailbox(mailbox::MailboxArgs),
    /// Print the provider log of one day (JSON lines).
    Log(mailbox::LogArgs),
    /// Submit a message through the SMTP submission gateway (STARTTLS + AUTH); prints the
    /// gateway's queue id.
    Send(send::SendArgs),
    /// Dead-letter queues: replay their messages into the source queue.
    Dlq(dlq::DlqArgs),
    /// A tenant's API keys for the integration API (created keys are printed once).
    Apikey(apikey::ApiKeyArgs),
    /// Mass sending: one personalised PEC per row of a list, resumable, with a report.
    Bulk(bulk::BulkArgs),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a pipe whose reader has gone (`pec ... | head -1`)
    // panics. A command-line tool ends quietly instead, as the shell's own tools do.
    // SAFETY: called first, before any thread exists; SIG_DFL is a valid disposition.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::About => {
            println!("pec {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Verify(args) => verify::run(args),
        Command::Cert(args) => cert::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Antivirus(args) => antivirus::run(args),
        Command::Tenant(args) => tenant::run_tenant(args),
        Command::ProviderIndex(args) => tenant::run_provider_index(args),
        Command::Apikey(args) => apikey::run(args),
        Command::Mailbox(args) => mailbox::run_mailbox(args),
        Command::Log(args) => mailbox::run_log(args),
        Command::Send(args) => send::run(args),
        Command::Dlq(args) => dlq::run(args),
        Command::Bulk(args) => bulk::run(args),
    }
}
