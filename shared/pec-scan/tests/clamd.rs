//! Engine 1 against a real clamd, and the two engines as a chain.
//!
//! Custom harness: clamd is started once with the project's script (`infra/local/clamd.sh start`,
//! which reuses this clone's clamd if it is already running) and stopped at the end only if this
//! run started it. clamd must be installed (`infra/local/install.sh clamav`); if it is not, or
//! does not start, every test fails with the script's message.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use pec_scan::testing::{self, Encoding, Part, message};
use pec_scan::{ClamdEngine, Engine, EngineError, Limits, Verdict, YaraEngine, scan};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `infra/local/clamd.sh <command>` with `state` as PEC_CLAMD_DIR (None: the clone's).
fn clamd_sh(command: &str, state: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("infra/local/clamd.sh")).arg(command);
    if let Some(dir) = state {
        cmd.env("PEC_CLAMD_DIR", dir);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run infra/local/clamd.sh: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("infra/local/clamd.sh {command} failed:\n{text}"))
    }
}

fn socket_of(state: Option<&Path>) -> Result<PathBuf, String> {
    let env = clamd_sh("env", state)?;
    env.lines()
        .find_map(|l| l.strip_prefix("export PEC_CLAMD_SOCKET="))
        .map(PathBuf::from)
        .ok_or_else(|| format!("no socket in `clamd.sh env` output: {env}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn verdict(raw: &[u8], engines: &[&dyn Engine]) -> Verdict {
    scan(Arc::from(raw), engines, &Limits::default())
        .await
        .verdict
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), Failed> {
    if ok { Ok(()) } else { Err(message().into()) }
}

fn eicar_in_every_carrier(socket: &Path) -> Result<(), Failed> {
    let clamav = ClamdEngine::new(socket);
    runtime().block_on(async {
        for (name, raw, part) in testing::eicar_cases() {
            let v = verdict(&raw, &[&clamav]).await;
            check(
                matches!(&v, Verdict::Infected { engine, signature, part: p, .. }
                    if engine == "clamav" && signature.starts_with("PEC.Test.EICAR") && p == part),
                || format!("{name}: expected PEC.Test.EICAR at {part}, got {v:?}"),
            )?;
        }
        Ok(())
    })
}

fn chain_order_and_engine_specific_findings(socket: &Path) -> Result<(), Failed> {
    let clamav = ClamdEngine::new(socket);
    let yara = YaraEngine::builtin().map_err(|e| e.to_string())?;
    runtime().block_on(async {
        let chain: [&dyn Engine; 2] = [&clamav, &yara];
        // EICAR: both know it; engine 1 answers first.
        let raw = &testing::eicar_cases()[3].1;
        let v = verdict(raw, &chain).await;
        check(matches!(&v, Verdict::Infected { engine, .. } if engine == "clamav"), || format!("{v:?}"))?;
        // Only ClamAV knows the marker.
        let marker = message("m", "x", &[Part::attachment("application/octet-stream", "m.bin", Encoding::Base64, testing::clamav_only_marker())]);
        let v = verdict(&marker, &chain).await;
        check(matches!(&v, Verdict::Infected { engine, signature, .. } if engine == "clamav" && signature.starts_with("PEC.Test.ClamavOnlyMarker")), || format!("{v:?}"))?;
        // Only YARA knows executables in archives: clamd finds nothing, engine 2 does.
        let exe = message("exe", "x", &[Part::attachment("application/zip", "a.zip", Encoding::Base64, testing::zip(&[("setup.exe", &testing::pe_executable())]))]);
        let v = verdict(&exe, &chain).await;
        check(matches!(&v, Verdict::Infected { engine, .. } if engine == "yara"), || format!("{v:?}"))?;
        // Clean mail is clean for both.
        let clean = message("c", "x", &[Part::text("ciao"), Part::attachment("application/pdf", "a.pdf", Encoding::Base64, testing::pdf_like(200_000, 9))]);
        let v = verdict(&clean, &chain).await;
        check(v == Verdict::Clean, || format!("{v:?}"))
    })
}

fn clean_real_fixtures(socket: &Path) -> Result<(), Failed> {
    let samples = pec_testkit::fixtures::real_all();
    let clamav = ClamdEngine::new(socket);
    let yara = YaraEngine::builtin().map_err(|e| e.to_string())?;
    let mut seen = 0;
    runtime().block_on(async {
        for (name, raw) in &samples {
            for engines in [
                vec![&clamav as &dyn Engine],
                vec![&yara as &dyn Engine],
                vec![&clamav as &dyn Engine, &yara],
            ] {
                let v = verdict(raw, &engines).await;
                check(v == Verdict::Clean, || format!("{name}: {v:?}"))?;
            }
            seen += 1;
        }
        check(seen >= 6, || {
            format!("expected the six real fixtures, found {seen}")
        })
    })
}

/// A private clamd (own state directory), started and then stopped with the script: the scan
/// that follows must be an engine error, never clean.
fn stopped_clamd_is_an_engine_error() -> Result<(), Failed> {
    let state = std::env::temp_dir().join(format!("pec-scan-clamd-stop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    clamd_sh("start", Some(&state))?;
    let socket = socket_of(Some(&state))?;
    let clamav = ClamdEngine::new(&socket).with_call_timeout(Duration::from_secs(5));
    let raw = message("ok", "x", &[Part::text("ciao")]);
    let result = runtime().block_on(async {
        let before = verdict(&raw, &[&clamav]).await;
        check(before == Verdict::Clean, || format!("running clamd: {before:?}"))?;
        clamd_sh("stop", Some(&state))?;
        let started = Instant::now();
        let after = verdict(&raw, &[&clamav]).await;
        check(
            matches!(&after, Verdict::EngineError { engine, error } if engine == "clamav" && error.contains("unavailable")),
            || format!("stopped clamd must give an engine error, got {after:?}"),
        )?;
        check(started.elapsed() < Duration::from_secs(10), || "the failure must be quick".into())?;
        let ping = clamav.ping().await;
        check(matches!(ping, Err(EngineError::Unavailable { .. })), || format!("{ping:?}"))
    });
    let _ = clamd_sh("stop", Some(&state));
    let _ = std::fs::remove_dir_all(&state);
    result
}

fn main() {
    let args = Arguments::from_args();
    let was_running = clamd_sh("status", None).is_ok();
    let started = if was_running {
        Ok(String::new())
    } else {
        clamd_sh("start", None)
    };
    let socket = started.clone().and_then(|_| socket_of(None));
    let with_clamd = |name: &'static str, f: fn(&Path) -> Result<(), Failed>| {
        let socket = socket.clone();
        Trial::test(name, move || match &socket {
            Ok(s) => f(s),
            Err(e) => Err(format!("clamd is not available: {e}").into()),
        })
    };
    let trials = vec![
        with_clamd(
            "clamav_alone_finds_eicar_in_every_carrier",
            eicar_in_every_carrier,
        ),
        with_clamd(
            "chain_order_and_engine_specific_findings",
            chain_order_and_engine_specific_findings,
        ),
        with_clamd("clean_real_fixtures_scan_clean", clean_real_fixtures),
        Trial::test(
            "stopped_clamd_is_an_engine_error",
            stopped_clamd_is_an_engine_error,
        ),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    if !was_running && started.is_ok() {
        let _ = clamd_sh("stop", None);
    }
    conclusion.exit();
}
