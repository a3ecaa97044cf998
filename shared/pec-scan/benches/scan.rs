//! Throughput of the antivirus on a ~10 MB message with mixed attachments (text, HTML,
//! PDF-like, zip, forwarded message with its own PDF and zip): MB/s of raw message for the walker
//! alone, clamd alone, yara-x alone and the chain (clamd then yara-x).
//!
//!   cargo bench -p pec-scan --bench scan              (release; starts clamd with
//!                                                      infra/local/clamd.sh if needed)
//!   PEC_BENCH_MB=30 PEC_BENCH_ROUNDS=5 cargo bench -p pec-scan --bench scan
//!
//! Plain std::time, median of the rounds; one message at a time (as the scan function does).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pec_scan::testing::mixed_message;
use pec_scan::{ClamdEngine, Engine, Limits, Verdict, YaraEngine, scan, walk};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn clamd_sh(command: &str) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/local/clamd.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(command)
        .output()
        .map_err(|e| e.to_string())?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(name: &str, bytes: usize, times: Vec<Duration>) {
    let m = median(times);
    let mb = bytes as f64 / 1_000_000.0;
    println!(
        "{name:<28} {:>8.1} ms   {:>7.1} MB/s",
        m.as_secs_f64() * 1000.0,
        mb / m.as_secs_f64()
    );
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let megabytes = env_usize("PEC_BENCH_MB", 10);
    let rounds = env_usize("PEC_BENCH_ROUNDS", 5).max(1);
    let raw: Arc<[u8]> = Arc::from(mixed_message(megabytes));
    let limits = Limits::default();
    let w = walk(&raw, &limits, Instant::now() + Duration::from_secs(60));
    println!(
        "message: {:.1} MB raw, {} parts/entries, {:.1} MB once decoded and decompressed; {rounds} rounds, median",
        raw.len() as f64 / 1e6,
        w.items.len(),
        w.expanded_bytes as f64 / 1e6
    );
    let was_running = clamd_sh("status").is_ok();
    if !was_running && let Err(e) = clamd_sh("start") {
        eprintln!("cannot start clamd with infra/local/clamd.sh:\n{e}");
        std::process::exit(1);
    }
    let socket: PathBuf = clamd_sh("env")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("export PEC_CLAMD_SOCKET=")
                    .map(PathBuf::from)
            })
        })
        .expect("clamd.sh env prints the socket");
    let clamav = ClamdEngine::new(socket);
    let yara = YaraEngine::builtin().expect("rules compile");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let w = walk(&raw, &limits, Instant::now() + Duration::from_secs(60));
        times.push(t.elapsed());
        assert!(w.stopped.is_none());
    }
    report("walker only (decode+unzip)", raw.len(), times);

    let chains: [(&str, Vec<&dyn Engine>); 3] = [
        ("clamd alone (+walker)", vec![&clamav]),
        ("yara-x alone (+walker)", vec![&yara]),
        ("chain clamd -> yara-x", vec![&clamav, &yara]),
    ];
    for (name, engines) in chains {
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let r = rt.block_on(scan(raw.clone(), &engines, &limits));
            times.push(t.elapsed());
            assert_eq!(r.verdict, Verdict::Clean, "{name}: {:?}", r.verdict);
        }
        report(name, raw.len(), times);
    }
    if !was_running {
        let _ = clamd_sh("stop");
    }
}
