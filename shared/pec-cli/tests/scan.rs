//! `pec scan FILE`, run as a user would: JSON verdict and exit codes, each engine alone and the
//! chain. The clamd checks start clamd with `infra/local/clamd.sh` (reusing a running one) and
//! stop it only if they started it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pec_scan::testing::{self, Encoding, Part, message, zip_bomb};

const PEC: &str = env!("CARGO_BIN_EXE_pec");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pec_scan(file: &Path, extra: &[&str], socket: Option<&Path>) -> Output {
    let mut cmd = Command::new(PEC);
    cmd.arg("scan").arg(file).args(extra);
    match socket {
        Some(s) => cmd.env("PEC_CLAMD_SOCKET", s),
        None => cmd.env_remove("PEC_CLAMD_SOCKET"),
    };
    cmd.output().expect("run pec")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn fixture(name: &str) -> PathBuf {
    pec_testkit::fixtures::real_path(name)
}

#[test]
fn yara_alone_verdicts_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let infected = write(dir.path(), "eicar.eml", &testing::eicar_cases()[3].1);
    let out = pec_scan(&infected, &["--engine", "yara"], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["verdict"], "infected");
    assert_eq!(v["engine"], "yara");
    assert_eq!(v["signature"], "PEC_EICAR_Test_File");
    assert_eq!(v["part"], "2.2!eicar.com");
    assert_eq!(v["engines"], serde_json::json!(["yara"]));

    let out = pec_scan(
        &fixture("aruba-2018-accettazione.eml"),
        &["--engine", "yara"],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["verdict"], "clean");

    let bomb = write(
        dir.path(),
        "bomb.eml",
        &message(
            "b",
            "x",
            &[Part::attachment(
                "application/zip",
                "b.zip",
                Encoding::Base64,
                zip_bomb(1024),
            )],
        ),
    );
    let out = pec_scan(&bomb, &["--engine", "yara"], None);
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert_eq!(v["verdict"], "unscannable");
    assert_eq!(v["bound"], "expanded-size");

    let out = pec_scan(&dir.path().join("missing.eml"), &["--engine", "yara"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn clamd_down_is_exit_2_engine_error() {
    let dir = tempfile::tempdir().unwrap();
    let clean = write(
        dir.path(),
        "clean.eml",
        &message("c", "x", &[Part::text("ciao")]),
    );
    let socket = dir.path().join("no-clamd.sock");
    for extra in [&["--engine", "clamav"][..], &[][..]] {
        let out = pec_scan(&clean, extra, Some(&socket));
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let v = json(&out);
        assert_eq!(v["verdict"], "engine-error");
        assert_eq!(v["engine"], "clamav");
    }
}

fn clamd_sh(command: &str) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(repo().join("infra/local/clamd.sh"))
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

#[test]
fn clamav_alone_and_the_chain_with_a_real_clamd() {
    let was_running = clamd_sh("status").is_ok();
    if !was_running {
        clamd_sh("start").unwrap_or_else(|e| {
            panic!(
                "infra/local/clamd.sh start failed (install: infra/local/install.sh clamav):\n{e}"
            )
        });
    }
    let socket = clamd_sh("env")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("export PEC_CLAMD_SOCKET=")
                    .map(PathBuf::from)
            })
        })
        .expect("clamd.sh env prints the socket");
    let result = std::panic::catch_unwind(|| {
        let dir = tempfile::tempdir().unwrap();
        for (i, (name, raw, part)) in testing::eicar_cases().into_iter().enumerate() {
            let file = write(dir.path(), &format!("case{i}.eml"), &raw);
            let out = pec_scan(&file, &["--engine", "clamav"], Some(&socket));
            assert_eq!(
                out.status.code(),
                Some(1),
                "{name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            let v = json(&out);
            assert_eq!(v["engine"], "clamav", "{name}");
            assert!(
                v["signature"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("PEC.Test.EICAR"),
                "{name}: {v}"
            );
            assert_eq!(v["part"], part, "{name}");
        }
        let exe = write(
            dir.path(),
            "exe.eml",
            &message(
                "e",
                "x",
                &[Part::attachment(
                    "application/zip",
                    "a.zip",
                    Encoding::Base64,
                    testing::zip(&[("setup.exe", &testing::pe_executable())]),
                )],
            ),
        );
        let out = pec_scan(&exe, &[], Some(&socket));
        assert_eq!(out.status.code(), Some(1));
        let v = json(&out);
        assert_eq!(v["engine"], "yara", "clamd finds nothing, YARA does: {v}");
        assert_eq!(v["engines"], serde_json::json!(["clamav", "yara"]));
        for name in [
            "aruba-2018-busta-trasporto-modified.eml",
            "plain-mail.eml",
            "dsn-failure.eml",
        ] {
            let out = pec_scan(&fixture(name), &[], Some(&socket));
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    });
    if !was_running {
        let _ = clamd_sh("stop");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
