//! `pec inspect` on every real fixture prints the expected type.

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    pec_testkit::fixtures::real_path(name)
}

fn pec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pec"))
}

const EXPECTED: [(&str, &str, &str); 6] = [
    (
        "aruba-2018-accettazione.eml",
        "accettazione",
        "ricevuta di accettazione",
    ),
    (
        "aruba-2018-busta-trasporto-modified.eml",
        "busta-trasporto",
        "busta di trasporto",
    ),
    (
        "anon-accettazione.eml",
        "accettazione",
        "ricevuta di accettazione",
    ),
    (
        "anon-errore-consegna.eml",
        "errore-consegna",
        "avviso di mancata consegna",
    ),
    ("plain-mail.eml", "ordinaria", "posta ordinaria (non PEC)"),
    ("dsn-failure.eml", "ordinaria", "posta ordinaria (non PEC)"),
];

#[test]
fn json_type_of_every_fixture() {
    for (name, kind, _) in EXPECTED {
        let out = pec()
            .arg("inspect")
            .arg("--json")
            .arg(fixture(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: not JSON ({e})"));
        assert_eq!(v["type"], kind, "{name}");
        assert_eq!(v["pec"], kind != "ordinaria", "{name}");
        if kind != "ordinaria" {
            assert_eq!(
                v["daticert"]["tipo"],
                if kind == "busta-trasporto" {
                    "posta-certificata"
                } else {
                    kind
                },
                "{name}"
            );
        }
    }
}

#[test]
fn readable_summary_of_every_fixture() {
    for (name, kind, description) in EXPECTED {
        let out = pec().arg("inspect").arg(fixture(name)).output().unwrap();
        assert!(out.status.success(), "{name}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!("Type:         {kind} ({description})")),
            "{name}: {text}"
        );
    }
}

#[test]
fn details_in_json() {
    let out = pec()
        .args(["inspect", "--json"])
        .arg(fixture("anon-errore-consegna.eml"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["daticert"]["errore"], "no-dest");
    assert_eq!(
        v["daticert"]["dati"]["errore-esteso"],
        "5.1.1 - FAKE Pec S.p.A. - indirizzo non valido"
    );
    let anomalies = v["anomalies"].as_array().unwrap();
    assert!(anomalies.iter().any(|a| a["anomaly"] == "signature"));
    assert!(anomalies.iter().any(|a| a["anomaly"] == "daticert"));
}

#[test]
fn unreadable_input_fails_clearly() {
    let out = pec()
        .args(["inspect", "/nonexistent/definitely-missing.eml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read /nonexistent/definitely-missing.eml"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("pec-inspect-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.eml");
    std::fs::write(&empty, b"").unwrap();
    let out = pec()
        .args(["inspect", "--json"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an e-mail message"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "ordinaria");
    // A directory cannot be read as a file.
    let out = pec().arg("inspect").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
