//! `pec send`: submit a message to the SMTP submission gateway (STARTTLS + AUTH PLAIN), as a
//! mail client would. The message is built with mail-builder from the options, or read from
//! `--eml`; the SMTP recipients are every To, Cc and Bcc address.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The gateway, e.g. 127.0.0.1:2587.
    #[arg(long)]
    pub server: SocketAddr,
    /// PEM certificate to trust for STARTTLS (the gateway's).
    #[arg(long, value_name = "PEM")]
    pub ca: PathBuf,
    /// TLS server name.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Login (the mailbox address); also the sender unless --from is given.
    #[arg(long)]
    pub user: String,
    /// Read the password from standard input (one line).
    #[arg(long)]
    pub password_stdin: bool,
    /// From address (default: --user).
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Vec<String>,
    #[arg(long)]
    pub cc: Vec<String>,
    /// Bcc: written into the message and added to the SMTP recipients (PEC refuses it).
    #[arg(long)]
    pub bcc: Vec<String>,
    #[arg(long, default_value = "")]
    pub subject: String,
    #[arg(long, default_value = "")]
    pub text: String,
    /// Attach a file (repeatable).
    #[arg(long)]
    pub attach: Vec<PathBuf>,
    /// X-TipoRicevuta: completa, breve or sintetica.
    #[arg(long)]
    pub receipt: Option<String>,
    /// Send this file as the message instead of building one.
    #[arg(long, conflicts_with_all = ["subject", "text", "attach"])]
    pub eml: Option<PathBuf>,
}

pub fn run(args: SendArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pec: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(send(args)) {
        Ok(id) => {
            println!("{id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pec: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn send(args: SendArgs) -> anyhow::Result<String> {
    if !args.password_stdin {
        bail!("give the password on standard input with --password-stdin");
    }
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    let pem =
        std::fs::read(&args.ca).with_context(|| format!("cannot read {}", args.ca.display()))?;
    let cert = CertificateDer::from_pem_slice(&pem)
        .map_err(|e| anyhow::anyhow!("--ca {}: {e:?}", args.ca.display()))?;
    let from = args.from.clone().unwrap_or_else(|| args.user.clone());
    let raw = match &args.eml {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => build(&args, &from)?,
    };
    let recipients: Vec<String> = args
        .to
        .iter()
        .chain(&args.cc)
        .chain(&args.bcc)
        .cloned()
        .collect();
    if recipients.is_empty() {
        bail!("no recipient (--to, --cc, --bcc)");
    }
    pec_submit::client::submit(
        args.server,
        &cert,
        &args.server_name,
        &args.user,
        password,
        &from,
        &recipients,
        &raw,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn build(args: &SendArgs, from: &str) -> anyhow::Result<Vec<u8>> {
    fn list(v: &[String]) -> Address<'_> {
        Address::new_list(v.iter().map(|a| Address::from(a.as_str())).collect())
    }
    let mut m = MessageBuilder::new()
        .from(Address::from(from))
        .subject(args.subject.as_str())
        .text_body(args.text.as_str());
    if !args.to.is_empty() {
        m = m.to(list(&args.to));
    }
    if !args.cc.is_empty() {
        m = m.cc(list(&args.cc));
    }
    if !args.bcc.is_empty() {
        m = m.bcc(list(&args.bcc));
    }
    if let Some(r) = &args.receipt {
        m = m.header(
            "X-TipoRicevuta",
            mail_builder::headers::raw::Raw::new(r.clone()),
        );
    }
    for path in &args.attach {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "allegato".into());
        m = m.attachment("application/octet-stream", name, bytes);
    }
    m.write_to_vec().context("building the message")
}
