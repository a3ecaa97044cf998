//! Engine 2 alone: the committed YARA rules through yara-x, on generated samples and on the
//! clean real fixtures.

use std::sync::Arc;

use pec_scan::testing::{self, Encoding, Part, eicar, message, pe_executable, zip};
use pec_scan::{Engine, Limits, Verdict, YaraEngine, scan};

fn yara() -> YaraEngine {
    YaraEngine::builtin().expect("the committed rules compile")
}

async fn verdict(raw: &[u8]) -> Verdict {
    let engine = yara();
    scan(
        Arc::from(raw),
        &[&engine as &dyn Engine],
        &Limits::default(),
    )
    .await
    .verdict
}

fn infected(v: &Verdict) -> (&str, &str) {
    match v {
        Verdict::Infected {
            signature, part, ..
        } => (signature.as_str(), part.as_str()),
        other => panic!("expected infected, got {other:?}"),
    }
}

#[tokio::test]
async fn eicar_in_every_carrier() {
    for (name, raw, part) in testing::eicar_cases() {
        let v = verdict(&raw).await;
        let (signature, found_in) = infected(&v);
        assert_eq!(signature, "PEC_EICAR_Test_File", "{name}");
        assert_eq!(found_in, part, "{name}");
    }
}

#[tokio::test]
async fn executables_and_scripts_hidden_in_archives() {
    for (entry, data) in [
        ("setup.exe", pe_executable()),
        ("fattura.pdf", pe_executable()), // a PE whatever its name
        ("run.js", b"WScript.Echo('x')".to_vec()),
        ("a/b/install.bat", b"@echo off".to_vec()),
    ] {
        let raw = message(
            "exe",
            "x",
            &[Part::attachment(
                "application/zip",
                "documenti.zip",
                Encoding::Base64,
                zip(&[("leggimi.txt", b"ok"), (entry, &data)]),
            )],
        );
        let v = verdict(&raw).await;
        let (signature, part) = infected(&v);
        assert_eq!(signature, "PEC_Executable_In_Archive", "{entry}");
        assert_eq!(part, format!("1!{entry}"));
    }
    // The same PE attached directly is not this rule's business.
    let raw = message(
        "exe-direct",
        "x",
        &[Part::attachment(
            "application/octet-stream",
            "tool.exe",
            Encoding::Base64,
            pe_executable(),
        )],
    );
    assert_eq!(verdict(&raw).await, Verdict::Clean);
}

#[tokio::test]
async fn double_extensions() {
    for name in [
        "fattura.pdf.exe",
        "Documento.DOCX.js",
        "scansione.jpg   .scr",
        "contratto.p7m.bat",
        "fattura\u{202E}fdp.exe",
    ] {
        let raw = message(
            "dbl",
            "x",
            &[Part::attachment(
                "application/octet-stream",
                name,
                Encoding::Base64,
                b"payload".to_vec(),
            )],
        );
        let v = verdict(&raw).await;
        assert_eq!(infected(&v).0, "PEC_Double_Extension", "{name}");
    }
    for name in ["fattura.pdf", "archivio.tar.gz", "relazione.v2.docx"] {
        let raw = message(
            "ok",
            "x",
            &[Part::attachment(
                "application/octet-stream",
                name,
                Encoding::Base64,
                b"payload".to_vec(),
            )],
        );
        assert_eq!(verdict(&raw).await, Verdict::Clean, "{name}");
    }
}

#[tokio::test]
async fn macro_enabled_office_documents() {
    let docm = zip(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("word/document.xml", b"<w:document/>"),
        ("word/vbaProject.bin", b"\xD0\xCF\x11\xE0"),
    ]);
    let raw = message(
        "docm",
        "x",
        &[Part::attachment(
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "relazione.docx",
            Encoding::Base64,
            docm,
        )],
    );
    assert_eq!(infected(&verdict(&raw).await).0, "PEC_Office_Macro_OOXML");

    let raw = message(
        "xlsm",
        "x",
        &[Part::attachment(
            "application/octet-stream",
            "conti.xlsm",
            Encoding::Base64,
            b"anything".to_vec(),
        )],
    );
    assert_eq!(infected(&verdict(&raw).await).0, "PEC_Office_Macro_OOXML");

    let mut ole = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    ole.resize(512, 0);
    ole.extend("_VBA_PROJECT".encode_utf16().flat_map(|u| u.to_le_bytes()));
    let raw = message(
        "doc",
        "x",
        &[Part::attachment(
            "application/msword",
            "vecchio.doc",
            Encoding::Base64,
            ole.clone(),
        )],
    );
    assert_eq!(infected(&verdict(&raw).await).0, "PEC_Office_Macro_OLE");

    // A plain docx and an OLE file without VBA are clean.
    let docx = zip(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("word/document.xml", b"<w:document/>"),
    ]);
    let mut plain_ole = ole;
    plain_ole.truncate(512);
    let raw = message(
        "docx",
        "x",
        &[
            Part::attachment(
                "application/octet-stream",
                "relazione.docx",
                Encoding::Base64,
                docx,
            ),
            Part::attachment(
                "application/msword",
                "vecchio.doc",
                Encoding::Base64,
                plain_ole,
            ),
        ],
    );
    assert_eq!(verdict(&raw).await, Verdict::Clean);
}

#[tokio::test]
async fn html_smuggling() {
    let smuggler = r#"<html><body><script>
        var b64 = "UEsDBBQAAAAIAA==";
        var bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        var blob = new Blob([bytes], {type: "application/zip"});
        var a = document.createElement("a");
        a.href = window.URL.createObjectURL(blob);
        a.download = "fattura.zip";
        a.click();
    </script></body></html>"#;
    let raw = message(
        "smuggle",
        "x",
        &[Part::attachment(
            "text/html; charset=utf-8",
            "fattura.html",
            Encoding::QuotedPrintable,
            smuggler.as_bytes().to_vec(),
        )],
    );
    assert_eq!(infected(&verdict(&raw).await).0, "PEC_HTML_Smuggling");
    let ordinary = "<html><body><p>Gentile cliente, in allegato la fattura.</p><script>console.log(1)</script></body></html>";
    let raw = message(
        "html-ok",
        "x",
        &[Part::attachment(
            "text/html",
            "nota.html",
            Encoding::QuotedPrintable,
            ordinary.as_bytes().to_vec(),
        )],
    );
    assert_eq!(verdict(&raw).await, Verdict::Clean);
}

#[tokio::test]
async fn clean_mail_and_the_clamav_only_marker_are_clean_for_yara() {
    let raw = message(
        "clean",
        "x",
        &[
            Part::text("nulla da segnalare"),
            Part::attachment(
                "application/pdf",
                "a.pdf",
                Encoding::Base64,
                testing::pdf_like(100_000, 1),
            ),
        ],
    );
    assert_eq!(verdict(&raw).await, Verdict::Clean);
    let raw = message(
        "marker",
        "x",
        &[Part::attachment(
            "application/octet-stream",
            "m.bin",
            Encoding::Base64,
            testing::clamav_only_marker(),
        )],
    );
    assert_eq!(verdict(&raw).await, Verdict::Clean);
    assert!(!eicar().is_empty());
}

/// The real PEC fixtures beside the repository (`../shared/fixtures/real/`).
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let out = pec_testkit::fixtures::real_all();
    assert!(out.len() >= 6, "expected the six real fixtures");
    out
}

#[tokio::test]
async fn clean_real_fixtures_scan_clean() {
    for (name, raw) in fixtures() {
        assert_eq!(verdict(&raw).await, Verdict::Clean, "{name}");
    }
}

#[test]
fn rules_from_s3_are_compiled_with_the_same_externals_and_bad_rules_are_refused() {
    let custom = YaraEngine::from_source(
        "s3://bucket/rules.yar",
        "rule Custom { condition: in_archive and filename contains \"x\" }",
    )
    .unwrap();
    assert_eq!(custom.rule_count(), 1);
    let err = YaraEngine::from_source("s3://bucket/bad.yar", "rule { nope").unwrap_err();
    assert!(err.to_string().contains("s3://bucket/bad.yar"), "{err}");
    assert!(YaraEngine::from_source("empty.yar", "// nothing").is_err());
    assert!(yara().rule_count() >= 6);
}
