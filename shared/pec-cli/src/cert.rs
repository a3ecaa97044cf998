//! `pec cert ...`: development CA, provider certificates for a (KMS) public key, the provider
//! index entry, and certificate requests.
//!
//! The development CA is for tests and local work only. In production the provider
//! certificate comes from an accredited CA (AgID CA1) from a CSR; the CSR is built by
//! `pec_smime::certs::build_provider_csr` through the async signer trait, so the AWS side can
//! have KMS sign it; `pec cert csr` does the same with a local key file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use der::Encode;
use pec_smime::{
    DevCa, LocalSigner, ProviderCertificateParams, ProviderEntry,
    certs::{
        build_provider_csr, certificate_to_pem, certificates_from_pem, csr_to_pem,
        public_key_spki_der,
    },
};

/// Arguments of `pec cert`.
#[derive(clap::Args, Debug)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(clap::Subcommand, Debug)]
enum CertCommand {
    /// Create a development CA (RSA 2048 key + self-signed certificate): writes
    /// OUT_DIR/ca.pem and OUT_DIR/ca.key.pem. For tests and local development only.
    DevCa {
        /// Directory to write ca.pem and ca.key.pem into (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// Common name of the CA.
        #[arg(long, default_value = "PEC Development CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
        /// Start of validity (RFC 3339); default: now.
        #[arg(long, value_name = "RFC3339")]
        not_before: Option<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a provider certificate (subject "Posta Certificata <provider>", SAN
    /// posta-certificata@<domain>, keyUsage digitalSignature, EKU emailProtection) for a
    /// public key, signed by the development CA. The public key is a SubjectPublicKeyInfo in
    /// DER (e.g. the output of KMS GetPublicKey) or PEM ("PUBLIC KEY").
    Issue {
        /// CA certificate (PEM).
        #[arg(long, value_name = "PEM")]
        ca_cert: PathBuf,
        /// CA private key (PEM).
        #[arg(long, value_name = "PEM")]
        ca_key: PathBuf,
        /// The provider's public key (DER or PEM SubjectPublicKeyInfo).
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "kms_key_id",
            conflicts_with = "kms_key_id"
        )]
        public_key: Option<PathBuf>,
        /// Take the public key of this KMS key instead (id, ARN or alias; the AWS SDK's usual
        /// region, credentials and AWS_ENDPOINT_URL apply).
        #[arg(long, value_name = "KEY")]
        kms_key_id: Option<String>,
        /// Provider name (O= and "Posta Certificata <provider>").
        #[arg(long)]
        provider: String,
        /// The provider's PEC signing domain.
        #[arg(long)]
        domain: String,
        /// Validity in days (real provider certificates: 3 years).
        #[arg(long, default_value_t = 1095)]
        days: i64,
        /// Start of validity (RFC 3339); default: now.
        #[arg(long, value_name = "RFC3339")]
        not_before: Option<String>,
        /// Output file (PEM); default: standard output.
        #[arg(long, value_name = "PEM")]
        out: Option<PathBuf>,
    },
    /// Print the provider-index (IGPEC, LDIF) entry for a provider certificate:
    /// providerName, managedDomains, mailReceipt, providerCertificateHash (SHA-1 of the DER
    /// certificate, hex) and providerCertificate;binary.
    IndexEntry {
        /// The provider certificate (PEM; the first certificate is used).
        #[arg(long, value_name = "PEM")]
        cert: PathBuf,
        /// Provider name.
        #[arg(long)]
        provider: String,
        /// A managed PEC domain (repeatable).
        #[arg(long = "domain", value_name = "DOMAIN", required = true)]
        domains: Vec<String>,
        /// Address for presa-in-carico receipts; default posta-certificata@<first domain>.
        #[arg(long, value_name = "ADDRESS")]
        mail_receipt: Option<String>,
        /// Base DN the entry is placed under.
        #[arg(long, default_value = "o=postacert")]
        base_dn: String,
    },
    /// Build a PKCS#10 certificate request for the provider key, to send to the accredited
    /// CA: signed inside KMS with --kms-key-id (production), or with a local PEM key.
    Csr {
        /// Private key (PEM, PKCS#8 or PKCS#1 RSA).
        #[arg(
            long,
            value_name = "PEM",
            required_unless_present = "kms_key_id",
            conflicts_with = "kms_key_id"
        )]
        key: Option<PathBuf>,
        /// Sign the request with this KMS key (id, ARN or alias); its private key never leaves
        /// KMS. Needs kms:Sign, which the key policy grants to the certificate-admin role only.
        #[arg(long, value_name = "KEY")]
        kms_key_id: Option<String>,
        /// Provider name.
        #[arg(long)]
        provider: String,
        /// The provider's PEC signing domain.
        #[arg(long)]
        domain: String,
        /// Output file (PEM); default: standard output.
        #[arg(long, value_name = "PEM")]
        out: Option<PathBuf>,
    },
    /// Generate an RSA 2048 key pair for local development (PKCS#8 PEM private key, and the
    /// public key as DER SubjectPublicKeyInfo, the form KMS GetPublicKey returns).
    GenKey {
        /// Private key output (PEM).
        #[arg(long, value_name = "PEM")]
        out: PathBuf,
        /// Public key output (DER SubjectPublicKeyInfo).
        #[arg(long, value_name = "DER")]
        public_out: PathBuf,
    },
}

fn start_time(s: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    match s {
        Some(s) => Ok(DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("{s:?} is not an RFC 3339 time"))?
            .with_timezone(&Utc)),
        None => Ok(Utc::now()),
    }
}

fn read(p: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
}

fn write_new(p: &Path, bytes: &[u8], private: bool, force: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    if private {
        opts.mode(0o600);
    }
    let mut f = opts
        .open(p)
        .with_context(|| format!("cannot create {} (use --force to overwrite)", p.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", p.display()))
}

fn emit(out: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match out {
        Some(p) => {
            std::fs::write(p, bytes).with_context(|| format!("cannot write {}", p.display()))
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(bytes)
                .context("cannot write to standard output")
        }
    }
}

/// A signer on a KMS key, with the SDK configured from the environment.
async fn kms_signer(key_id: String) -> anyhow::Result<pec_aws::KmsSigner> {
    let aws = pec_aws::AwsClients::load(&pec_aws::ClientSettings::from_env()?).await;
    Ok(pec_aws::KmsSigner::new(aws.kms, key_id))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Timers and IO: the AWS SDK (--kms-key-id) needs both.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn days(d: i64) -> anyhow::Result<Duration> {
    if d <= 0 {
        bail!("--days must be positive");
    }
    Duration::try_days(d).context("--days is out of range")
}

fn run_inner(args: CertArgs) -> anyhow::Result<()> {
    match args.command {
        CertCommand::DevCa {
            out_dir,
            name,
            days: d,
            not_before,
            force,
        } => {
            let nb = start_time(not_before.as_deref())?;
            let na = nb + days(d)?;
            let ca = runtime()?.block_on(DevCa::generate(&name, nb, na))?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            let cert = out_dir.join("ca.pem");
            let key = out_dir.join("ca.key.pem");
            write_new(&key, &ca.key_pem()?, true, force)?;
            write_new(&cert, ca.certificate_pem()?.as_bytes(), false, force)?;
            eprintln!(
                "development CA {name:?} written: {} and {} (valid {} to {})",
                cert.display(),
                key.display(),
                nb.to_rfc3339(),
                na.to_rfc3339()
            );
        }
        CertCommand::Issue {
            ca_cert,
            ca_key,
            public_key,
            kms_key_id,
            provider,
            domain,
            days: d,
            not_before,
            out,
        } => {
            let ca = DevCa::from_pem(
                &read(&ca_cert, "CA certificate")?,
                &read(&ca_key, "CA key")?,
            )?;
            let spki = match (public_key, kms_key_id) {
                (Some(path), _) => public_key_spki_der(&read(&path, "public key")?)
                    .with_context(|| format!("public key {}", path.display()))?,
                (None, Some(key_id)) => runtime()?.block_on(async {
                    anyhow::Ok(kms_signer(key_id).await?.public_key_spki_der().await?)
                })?,
                (None, None) => bail!("give --public-key or --kms-key-id"),
            };
            let nb = start_time(not_before.as_deref())?;
            let params = ProviderCertificateParams::new(provider, domain, nb, nb + days(d)?);
            let cert = runtime()?.block_on(ca.issue_provider_certificate(&params, &spki))?;
            emit(out.as_deref(), certificate_to_pem(&cert)?.as_bytes())?;
        }
        CertCommand::IndexEntry {
            cert,
            provider,
            domains,
            mail_receipt,
            base_dn,
        } => {
            let certs = certificates_from_pem(&read(&cert, "certificate")?)?;
            let first = certs.first().context("no certificate")?;
            let der = first.to_der()?;
            let receipt = mail_receipt.or_else(|| {
                domains
                    .first()
                    .map(|d| format!("posta-certificata@{}", d.trim().to_ascii_lowercase()))
            });
            let entry = ProviderEntry::for_certificate(&provider, &base_dn, domains, receipt, &der);
            print!("{}", entry.to_ldif());
        }
        CertCommand::Csr {
            key,
            kms_key_id,
            provider,
            domain,
            out,
        } => {
            let csr = match (key, kms_key_id) {
                (Some(key), _) => {
                    let signer = LocalSigner::from_pem(&read(&key, "private key")?)?;
                    let spki = signer.public_key_spki_der().to_vec();
                    runtime()?.block_on(build_provider_csr(&signer, &spki, &provider, &domain))?
                }
                (None, Some(key_id)) => runtime()?.block_on(async {
                    let signer = kms_signer(key_id).await?;
                    let spki = signer.public_key_spki_der().await?;
                    anyhow::Ok(build_provider_csr(&signer, &spki, &provider, &domain).await?)
                })?,
                (None, None) => bail!("give --key or --kms-key-id"),
            };
            emit(out.as_deref(), csr_to_pem(&csr)?.as_bytes())?;
        }
        CertCommand::GenKey { out, public_out } => {
            let signer = LocalSigner::generate_rsa(2048)?;
            write_new(&out, &signer.to_pkcs8_pem()?, true, false)?;
            write_new(&public_out, signer.public_key_spki_der(), false, false)?;
        }
    }
    Ok(())
}

/// Runs `pec cert ...`.
pub fn run(args: CertArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pec cert: {e:#}");
            ExitCode::FAILURE
        }
    }
}
