//! Golden corpus of the real PEC samples: for every `../shared/fixtures/real/<name>.eml`, the
//! classifier's verdict and the signature verdict are compared with
//! `shared/pec-testkit/golden/real/<name>.json` (our output, in the repository; the sample itself
//! is read in place and never copied).
//!
//! The JSON holds what `pec inspect --json` and `pec verify --json` report: kind, anomalies,
//! the PEC headers, the whole daticert, the signed-part framing, the `postacert.eml` inside, and
//! pec-smime's `Verification`. Verification mirrors `pec verify`'s defaults: the system bundle
//! `/etc/ssl/certs/ca-certificates.crt` as trust anchors (it holds Actalis Authentication Root
//! CA, the Aruba root), no provider index, certificate validity judged at the signing time (so
//! the result does not change with today's date).
//!
//! Regenerate after an intended change (then review the diff against the fixtures README):
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p pec-testkit --test real_golden
//! ```

use pec_core::classify::{Classification, classify};
use pec_smime::{TrustAnchors, VerifyOptions, verify_message};
use pec_testkit::{fixtures, golden};
use serde_json::{Value, json};

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn system_anchors() -> TrustAnchors {
    let pem = std::fs::read(SYSTEM_BUNDLE).unwrap_or_else(|e| {
        panic!(
            "{SYSTEM_BUNDLE} is required (Debian ca-certificates: it holds Actalis \
             Authentication Root CA, the root of the Aruba sample): {e}"
        )
    });
    TrustAnchors::from_pem_bundle(&pem).expect("system CA bundle")
}

fn classification(c: &Classification<'_>) -> Value {
    json!({
        "kind": c.kind.as_str(),
        "description": c.description(),
        "pec": c.kind.is_pec(),
        "headers": &c.headers,
        "daticert": &c.daticert,
        "signed": c.signed.as_ref().map(|s| json!({
            "protocol": s.protocol,
            "micalg": s.micalg,
            "content_bytes": s.content.len(),
            "signature_bytes": s.signature.as_ref().map(Vec::len),
        })),
        "anomalies": c.anomalies.iter().map(|a| {
            let mut v = serde_json::to_value(a).expect("anomaly serialises");
            v["message"] = json!(a.to_string());
            v
        }).collect::<Vec<_>>(),
    })
}

fn report(name: &str, raw: &[u8], anchors: &TrustAnchors) -> Value {
    let c = classify(raw);
    let postacert = c.postacert.as_deref().map(|inner| {
        json!({
            "bytes": inner.len(),
            "classification": classification(&classify(inner)),
        })
    });
    let verification = verify_message(raw, anchors, None, &VerifyOptions::default());
    json!({
        "file": name,
        "classification": classification(&c),
        "postacert": postacert,
        "signature": verification,
    })
}

/// `(file name, report)` of every real sample.
fn reports() -> Vec<(String, Value)> {
    let anchors = system_anchors();
    fixtures::real_all()
        .into_iter()
        .map(|(name, raw)| {
            let r = report(&name, &raw, &anchors);
            (name, r)
        })
        .collect()
}

#[test]
fn every_real_sample_classifies_and_verifies_as_recorded() {
    let corpus = golden::Corpus::new(
        fixtures::workspace_root().join("shared/pec-testkit/golden/real"),
        "json",
    );
    corpus.check(reports().into_iter().map(|(name, report)| {
        let case = name.strip_suffix(".eml").expect("*.eml").to_string();
        (case, golden::json(&report))
    }));
}

/// The expected verdicts of `../shared/fixtures/real/README.md`, reviewed by hand: (sample,
/// kind, signature verdict). The golden files can be regenerated blindly with `UPDATE_GOLDEN=1`;
/// this table cannot, so an output that flips a verdict fails here even while regenerating.
const README_VERDICTS: &[(&str, &str, &str)] = &[
    // acceptance receipt; signature part truncated (cannot be parsed)
    ("anon-accettazione.eml", "accettazione", "malformed"),
    // non-delivery notice (no-dest) despite the stray text; signature unparseable
    ("anon-errore-consegna.eml", "errore-consegna", "malformed"),
    // signature valid at signing time (SHA-1, Aruba -> AgID CA1 -> Actalis root)
    ("aruba-2018-accettazione.eml", "accettazione", "valid"),
    // a valid envelope structure whose content was edited: digest mismatch
    (
        "aruba-2018-busta-trasporto-modified.eml",
        "busta-trasporto",
        "invalid_signature",
    ),
    // not PEC (ordinary bounce / ordinary mail): nothing S/MIME to verify
    ("dsn-failure.eml", "ordinaria", "malformed"),
    ("plain-mail.eml", "ordinaria", "malformed"),
];

#[test]
fn the_verdicts_agree_with_the_fixtures_readme() {
    let reports = reports();
    let samples: Vec<&str> = reports.iter().map(|(n, _)| n.as_str()).collect();
    let listed: Vec<&str> = README_VERDICTS.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(
        samples, listed,
        "every sample needs its README verdict here"
    );
    for ((name, report), (_, kind, verdict)) in reports.iter().zip(README_VERDICTS) {
        assert_eq!(report["classification"]["kind"], *kind, "{name}");
        assert_eq!(report["signature"]["verdict"], *verdict, "{name}");
        let pec = *kind != "ordinaria";
        assert_eq!(report["classification"]["pec"], pec, "{name}");
    }
}
