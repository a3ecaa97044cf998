//! The walker, the bounds and the chain, with fake engines (no clamd, no YARA).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pec_scan::testing::{
    self, Encoding, FakeEngine, Part, RawEntry, eicar, message, nested_forwards, nested_zips,
    raw_zip, zip, zip_bomb,
};
use pec_scan::{Bound, Engine, Limits, Verdict, scan, walk};

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn paths(raw: &[u8]) -> Vec<String> {
    let w = walk(raw, &Limits::default(), deadline());
    assert_eq!(w.stopped, None);
    w.items.iter().map(|i| i.path.to_string()).collect()
}

async fn run(raw: &[u8], engines: &[&dyn Engine]) -> pec_scan::ScanReport {
    scan(Arc::from(raw), engines, &Limits::default()).await
}

#[test]
fn every_part_is_decoded_and_numbered_like_imap() {
    let e = eicar();
    for (name, raw, expected) in testing::eicar_cases() {
        let w = walk(&raw, &Limits::default(), deadline());
        assert_eq!(w.stopped, None, "{name}");
        let hit = w.items.iter().find(|i| i.data == e).unwrap_or_else(|| {
            panic!("{name}: no item holds the decoded EICAR: {:?}", paths(&raw))
        });
        assert_eq!(hit.path.to_string(), expected, "{name}");
    }
    let raw = message(
        "numbers",
        "x",
        &[
            Part::text("body"),
            Part::attachment(
                "application/zip",
                "a.zip",
                Encoding::Base64,
                zip(&[("x.txt", b"x"), ("y.txt", b"y")]),
            ),
            Part::forwarded(message(
                "in",
                "y",
                &[Part::text("inner"), Part::text("inner 2")],
            )),
        ],
    );
    // Entries come before their archive, so the innermost item is reported first.
    assert_eq!(paths(&raw), ["1", "2!x.txt", "2!y.txt", "2", "3.1", "3.2"]);
    let single = b"From: a@b.test\r\nSubject: s\r\n\r\nhello\r\n";
    assert_eq!(paths(single), ["1"]);
}

#[test]
fn text_parts_keep_their_bytes_after_transfer_decoding() {
    // A binary declared as UTF-8 text: a charset conversion would replace the invalid bytes.
    let binary: Vec<u8> = (0u8..=255).collect();
    let raw = message(
        "bin-as-text",
        "x",
        &[Part::attachment(
            "text/plain; charset=utf-8",
            "x.txt",
            Encoding::Base64,
            binary.clone(),
        )],
    );
    let w = walk(&raw, &Limits::default(), deadline());
    assert!(
        w.items.iter().any(|i| i.data == binary),
        "decoded bytes changed"
    );
    let qp = message(
        "qp-bin",
        "x",
        &[Part::attachment(
            "text/plain; charset=iso-8859-1",
            "x.txt",
            Encoding::QuotedPrintable,
            binary.clone(),
        )],
    );
    let w = walk(&qp, &Limits::default(), deadline());
    assert!(
        w.items.iter().any(|i| i.data == binary),
        "QP decoded bytes changed"
    );
}

#[test]
fn metadata_reaches_the_items() {
    let raw = message(
        "meta",
        "x",
        &[Part::attachment(
            "application/zip",
            "docs.zip",
            Encoding::Base64,
            zip(&[("a/b.exe", b"MZ")]),
        )],
    );
    let w = walk(&raw, &Limits::default(), deadline());
    let entry = &w.items[0];
    assert_eq!(entry.path.to_string(), "1!a/b.exe");
    assert_eq!(entry.filename, "a/b.exe");
    assert!(entry.in_archive);
    let container = &w.items[1];
    assert_eq!(container.filename, "docs.zip");
    assert_eq!(container.content_type, "application/zip");
    assert!(!container.in_archive);
    assert!(entry.depth > container.depth);
}

#[test]
fn not_a_message_is_scanned_as_bytes() {
    let w = walk(
        b"\x00\x01 no headers at all",
        &Limits::default(),
        deadline(),
    );
    assert_eq!(w.stopped, None);
    assert_eq!(w.items.len(), 1);
    assert_eq!(w.items[0].path.to_string(), "message");
}

#[tokio::test]
async fn zip_bomb_is_unscannable_quickly() {
    // 4 GiB of zeros in a 4 MB zip, attached to a message.
    let raw = message(
        "bomb",
        "bomba",
        &[Part::attachment(
            "application/zip",
            "bomb.zip",
            Encoding::Base64,
            zip_bomb(4095),
        )],
    );
    let started = Instant::now();
    let report = run(&raw, &[&FakeEngine::clean("fake")]).await;
    let elapsed = started.elapsed();
    match &report.verdict {
        Verdict::Unscannable(u) => {
            assert!(
                matches!(u.bound, Bound::ExpandedSize | Bound::Time),
                "{u:?}"
            );
            assert_eq!(u.part.as_deref(), Some("1!zeros.bin"));
        }
        other => panic!("a zip bomb must be unscannable, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    assert!(report.expanded_bytes <= Limits::default().max_expanded_bytes);
}

#[tokio::test]
async fn a_bomb_with_a_lying_size_is_bounded_too() {
    let data = testing::deflated_zeros(512);
    let lying = raw_zip(&[RawEntry {
        name: "small.txt",
        method: 8,
        flags: 0,
        data: &data,
        size: 10,
        crc: 0,
    }]);
    let limits = Limits {
        max_expanded_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    };
    let report = scan(
        Arc::from(lying.as_slice()),
        &[&FakeEngine::clean("fake")],
        &limits,
    )
    .await;
    // Either the reader honours the declared size (and the CRC then fails) or it inflates on and
    // hits the bound: never a clean pass.
    assert!(
        matches!(report.verdict, Verdict::Unscannable(_)),
        "{:?}",
        report.verdict
    );
}

#[tokio::test]
async fn hundred_level_nesting_is_unscannable_quickly() {
    for (name, raw) in [
        ("forwarded messages", nested_forwards(100, b"payload")),
        (
            "zips",
            message(
                "z",
                "zip",
                &[Part::attachment(
                    "application/zip",
                    "n.zip",
                    Encoding::Base64,
                    nested_zips(100, b"payload"),
                )],
            ),
        ),
    ] {
        let started = Instant::now();
        let report = run(&raw, &[&FakeEngine::clean("fake")]).await;
        let elapsed = started.elapsed();
        match &report.verdict {
            Verdict::Unscannable(u) => assert_eq!(u.bound, Bound::Depth, "{name}: {u:?}"),
            other => panic!("{name}: 100 levels must be unscannable, got {other:?}"),
        }
        assert!(
            elapsed < Duration::from_secs(20),
            "{name}: took {elapsed:?}"
        );
    }
    // Ten levels are fine.
    let report = run(
        &nested_forwards(10, b"payload"),
        &[&FakeEngine::clean("fake")],
    )
    .await;
    assert_eq!(report.verdict, Verdict::Clean);
}

#[tokio::test]
async fn deep_nesting_that_the_mime_parser_builds_is_refused_before_parsing() {
    // 20 000 levels of bare message/rfc822: refused by counting Content-Type headers, before the
    // MIME parser builds (and later drops, recursively) a 20 000-level tree.
    let mut raw = Vec::new();
    for _ in 0..20_000 {
        raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    raw.extend_from_slice(b"Subject: end\r\n\r\nend\r\n");
    let report = run(&raw, &[&FakeEngine::clean("fake")]).await;
    match &report.verdict {
        Verdict::Unscannable(u) => assert_eq!(u.bound, Bound::Entries, "{u:?}"),
        other => panic!("got {other:?}"),
    }
}

#[tokio::test]
async fn entry_count_encryption_method_and_corruption_are_unscannable() {
    let names: Vec<String> = (0..200).map(|i| format!("f{i}.txt")).collect();
    let many: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let limits = Limits {
        max_entries: 100,
        ..Limits::default()
    };
    let report = scan(
        Arc::from(zip(&many).as_slice()),
        &[&FakeEngine::clean("f")],
        &limits,
    )
    .await;
    assert!(
        matches!(&report.verdict, Verdict::Unscannable(u) if u.bound == Bound::Entries),
        "{:?}",
        report.verdict
    );

    let encrypted = raw_zip(&[RawEntry {
        name: "secret.pdf",
        method: 0,
        flags: 1,
        data: b"xxxxxxxxxxxxxxxx",
        size: 4,
        crc: 0,
    }]);
    let report = run(&encrypted, &[&FakeEngine::clean("f")]).await;
    assert!(
        matches!(&report.verdict, Verdict::Unscannable(u) if u.bound == Bound::Encrypted),
        "{:?}",
        report.verdict
    );

    let bzip2 = raw_zip(&[RawEntry {
        name: "a.txt",
        method: 12,
        flags: 0,
        data: b"BZh9",
        size: 4,
        crc: 0,
    }]);
    let report = run(&bzip2, &[&FakeEngine::clean("f")]).await;
    assert!(
        matches!(&report.verdict, Verdict::Unscannable(u) if u.bound == Bound::UnsupportedCompression),
        "{:?}",
        report.verdict
    );

    let mut corrupt = zip(&[("a.txt", b"hello hello hello hello")]);
    corrupt.truncate(30);
    let report = run(&corrupt, &[&FakeEngine::clean("f")]).await;
    assert!(
        matches!(&report.verdict, Verdict::Unscannable(u) if u.bound == Bound::CorruptArchive),
        "{:?}",
        report.verdict
    );
}

#[tokio::test]
async fn time_limit_is_a_verdict() {
    let limits = Limits {
        time_limit_ms: 300,
        ..Limits::default()
    };
    let started = Instant::now();
    let report = scan(
        Arc::from(&b"Subject: x\r\n\r\nbody\r\n"[..]),
        &[&FakeEngine::hanging("slow")],
        &limits,
    )
    .await;
    assert!(
        matches!(&report.verdict, Verdict::Unscannable(u) if u.bound == Bound::Time),
        "{:?}",
        report.verdict
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn chain_runs_in_order_and_stops_at_the_first_hit() {
    let raw = testing::eicar_cases().remove(2).1; // EICAR inside a zip
    let first = FakeEngine::detecting("one", &eicar(), "Sig-One");
    let second = FakeEngine::detecting("two", &eicar(), "Sig-Two");
    let report = run(&raw, &[&first, &second]).await;
    assert_eq!(
        report.verdict,
        Verdict::Infected {
            engine: "one".into(),
            signature: "Sig-One".into(),
            part: "2!eicar.com".into(),
            filename: Some("eicar.com".into()),
        }
    );
    assert_eq!(
        (first.calls(), second.calls()),
        (1, 0),
        "the second engine must not run"
    );
    assert_eq!(report.engines, ["one", "two"]);

    // Engine 1 finds nothing: engine 2 scans everything and finds it.
    let blind = FakeEngine::clean("one");
    let report = run(&raw, &[&blind, &second]).await;
    assert!(matches!(&report.verdict, Verdict::Infected { engine, .. } if engine == "two"));
    assert_eq!(blind.calls(), 1);
}

#[tokio::test]
async fn an_engine_that_is_down_never_lets_the_message_through() {
    let raw = message("ok", "ok", &[Part::text("nothing bad")]);
    for engines in [
        vec![FakeEngine::down("clamav"), FakeEngine::clean("yara")],
        vec![FakeEngine::clean("clamav"), FakeEngine::down("yara")],
    ] {
        let refs: Vec<&dyn Engine> = engines.iter().map(|e| e as &dyn Engine).collect();
        let report = run(&raw, &refs).await;
        assert!(
            matches!(report.verdict, Verdict::EngineError { .. }),
            "{:?}",
            report.verdict
        );
        assert_eq!(report.verdict.exit_code(), 2);
    }
    let report = run(&raw, &[]).await;
    assert!(
        matches!(report.verdict, Verdict::EngineError { .. }),
        "no engine must not mean clean"
    );
}

#[tokio::test]
async fn infection_found_before_a_bound_wins() {
    let raw = message(
        "both",
        "x",
        &[
            Part::attachment(
                "application/octet-stream",
                "eicar.com",
                Encoding::Base64,
                eicar(),
            ),
            Part::attachment(
                "application/zip",
                "bomb.zip",
                Encoding::Base64,
                zip_bomb(1024),
            ),
        ],
    );
    let limits = Limits {
        max_expanded_bytes: 32 * 1024 * 1024,
        ..Limits::default()
    };
    let report = scan(
        Arc::from(raw.as_slice()),
        &[&FakeEngine::detecting("f", &eicar(), "E")],
        &limits,
    )
    .await;
    assert!(
        matches!(&report.verdict, Verdict::Infected { part, .. } if part == "1"),
        "{:?}",
        report.verdict
    );
}

#[test]
fn verdicts_serialise_as_flat_json() {
    let v = Verdict::Infected {
        engine: "clamav".into(),
        signature: "X".into(),
        part: "2!a".into(),
        filename: None,
    };
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"verdict": "infected", "engine": "clamav", "signature": "X", "part": "2!a"})
    );
    let u = Verdict::Unscannable(pec_scan::Unscannable {
        bound: Bound::ExpandedSize,
        reason: "r".into(),
        part: None,
    });
    assert_eq!(
        serde_json::to_value(&u).unwrap(),
        serde_json::json!({"verdict": "unscannable", "bound": "expanded-size", "reason": "r"})
    );
    let back: Verdict = serde_json::from_value(json).unwrap();
    assert_eq!(back, v);
}
