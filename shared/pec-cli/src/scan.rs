//! `pec scan FILE`: the antivirus chain (shared/pec-scan) on one message file.
//!
//! Prints the report as JSON (`verdict`, and for an infection `engine`, `signature`, `part`;
//! for an unscannable message `bound`, `reason`, `part`; plus `engines`, `parts`,
//! `expanded_bytes`, `elapsed_ms`). Exit code: 0 clean, 1 infected, 2 unscannable, engine error
//! or unreadable file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use pec_scan::{ClamdEngine, Engine, Limits, YaraEngine};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// ClamAV through clamd (INSTREAM on the unix socket --clamd-socket).
    Clamav,
    /// YARA rules, in process (the built-in rules, or --yara-rules).
    Yara,
}

#[derive(Args)]
pub struct ScanArgs {
    /// The message (RFC 5322 file); anything else is scanned as bytes.
    file: PathBuf,
    /// Run only this engine (default: the chain, clamav then yara).
    #[arg(long, value_enum)]
    engine: Option<EngineChoice>,
    /// clamd's unix socket (infra/local/clamd.sh env prints it).
    #[arg(
        long,
        env = "PEC_CLAMD_SOCKET",
        default_value = ".local/stack/clamd/clamd.sock"
    )]
    clamd_socket: PathBuf,
    /// A YARA rule file to use instead of the built-in rules.
    #[arg(long)]
    yara_rules: Option<PathBuf>,
    /// Time budget of the scan, in milliseconds.
    #[arg(long, default_value_t = Limits::default().time_limit_ms)]
    time_limit_ms: u64,
}

fn fail(message: String) -> ExitCode {
    eprintln!("pec scan: {message}");
    ExitCode::from(2)
}

pub fn run(args: ScanArgs) -> ExitCode {
    let raw = match std::fs::read(&args.file) {
        Ok(raw) => raw,
        Err(e) => return fail(format!("cannot read {}: {e}", args.file.display())),
    };
    let yara = match &args.yara_rules {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(source) => YaraEngine::from_source(&path.display().to_string(), &source),
            Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
        },
        None => YaraEngine::builtin(),
    };
    let yara = match yara {
        Ok(yara) => yara,
        Err(e) => return fail(e.to_string()),
    };
    let clamav = ClamdEngine::new(&args.clamd_socket);
    let engines: Vec<&dyn Engine> = match args.engine {
        Some(EngineChoice::Clamav) => vec![&clamav],
        Some(EngineChoice::Yara) => vec![&yara],
        None => vec![&clamav, &yara],
    };
    let limits = Limits {
        time_limit_ms: args.time_limit_ms,
        ..Limits::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let report = runtime.block_on(pec_scan::scan(Arc::from(raw), &engines, &limits));
    match serde_json::to_string_pretty(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => return fail(format!("cannot print the report: {e}")),
    }
    ExitCode::from(u8::try_from(report.verdict.exit_code()).unwrap_or(2))
}
