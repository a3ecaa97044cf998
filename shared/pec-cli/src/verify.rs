//! `pec verify FILE`: verify a received PEC `multipart/signed` message and print the verdict.
//!
//! Exit status: 0 only for a valid message, 1 for any other verdict, 2 when the inputs cannot
//! be read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use pec_smime::{ProviderIndex, TrustAnchors, VerifyOptions, verify_message};

/// The system CA bundle (Debian `ca-certificates`).
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Arguments of `pec verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The message as received (raw RFC 5322 bytes, e.g. an .eml file).
    pub file: PathBuf,
    /// PEM file of trust anchors (repeatable). Default: the system bundle
    /// /etc/ssl/certs/ca-certificates.crt.
    #[arg(long = "anchors", value_name = "PEM")]
    pub anchors: Vec<PathBuf>,
    /// Provider index (IGPEC) as LDIF: the signer must be a listed provider certificate.
    #[arg(long, value_name = "LDIF", required_unless_present = "no_index")]
    pub index: Option<PathBuf>,
    /// Do not check the provider index (a valid verdict then only means signature + chain).
    #[arg(long, conflicts_with = "index")]
    pub no_index: bool,
    /// Evaluate certificate validity at this time (RFC 3339, e.g. 2018-11-13T15:39:26Z)
    /// instead of the signing time.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
}

fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("--at {s:?} is not an RFC 3339 time"))?
        .with_timezone(&Utc))
}

fn load(
    args: &VerifyArgs,
) -> anyhow::Result<(Vec<u8>, TrustAnchors, Option<ProviderIndex>, VerifyOptions)> {
    let raw = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let anchor_files = if args.anchors.is_empty() {
        vec![PathBuf::from(SYSTEM_BUNDLE)]
    } else {
        args.anchors.clone()
    };
    let mut anchors = TrustAnchors::new();
    for f in &anchor_files {
        let pem = std::fs::read(f)
            .with_context(|| format!("cannot read trust anchors {}", f.display()))?;
        anchors
            .add_pem_bundle(&pem)
            .with_context(|| format!("trust anchors {}", f.display()))?;
    }
    let index = match &args.index {
        Some(p) => {
            let ldif =
                std::fs::read(p).with_context(|| format!("cannot read index {}", p.display()))?;
            Some(
                ProviderIndex::from_ldif(&ldif)
                    .with_context(|| format!("provider index {}", p.display()))?,
            )
        }
        None if args.no_index => None,
        None => bail!("give the provider index with --index FILE, or --no-index"),
    };
    let options = VerifyOptions {
        evaluation_time: args.at.as_deref().map(parse_time).transpose()?,
    };
    Ok((raw, anchors, index, options))
}

/// Runs `pec verify`.
pub fn run(args: VerifyArgs) -> ExitCode {
    let (raw, anchors, index, options) = match load(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("pec verify: {e:#}");
            return ExitCode::from(2);
        }
    };
    let verification = verify_message(&raw, &anchors, index.as_ref(), &options);
    let mut json = match serde_json::to_value(&verification) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("pec verify: cannot render the report: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "file".into(),
            serde_json::Value::String(args.file.display().to_string()),
        );
        obj.insert("anchors".into(), serde_json::json!(anchors.len()));
    }
    match serde_json::to_string_pretty(&json) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("pec verify: cannot render the report: {e}");
            return ExitCode::from(2);
        }
    }
    if verification.verdict.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
