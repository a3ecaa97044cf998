//! Sign real pec-core builder outputs: every golden file pec-core commits is the exact
//! `UnsignedMessage::render()` of one builder (headers, `MIME-Version: 1.0`, then the entity).
//! OpenSSL and our verifier accept each signed message and reject it after one flipped byte.

mod common;

use std::path::PathBuf;

use common::*;
use der::Encode;
use pec_smime::{TrustAnchors, Verdict, VerifyOptions, verify_message};

/// Splits the golden render form back into (headers, entity).
fn split_render(raw: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let marker = b"MIME-Version: 1.0\r\n";
    let at = raw
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("render form has MIME-Version");
    let head = std::str::from_utf8(&raw[..at]).expect("ASCII headers");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("continuation after a header");
            last.1.push_str("\r\n");
            last.1.push_str(line);
        } else {
            let (n, v) = line.split_once(": ").expect("Name: value");
            headers.push((n.to_string(), v.to_string()));
        }
    }
    (headers, raw[at + marker.len()..].to_vec())
}

/// Toggles the case of a letter in the middle of the longest body line of the entity.
fn flip_in_body(message: &[u8], entity: &[u8]) -> Vec<u8> {
    let start = message
        .windows(entity.len())
        .position(|w| w == entity)
        .expect("entity verbatim in the message");
    let mut best = (0usize, 0usize);
    let mut pos = 0;
    for line in entity.split(|&b| b == b'\n') {
        let ok = !line.starts_with(b"--") && !line.contains(&b':') && line.len() > best.1;
        if ok {
            best = (pos, line.len());
        }
        pos += line.len() + 1;
    }
    let mut i = best.0 + best.1 / 2;
    while !entity[i].is_ascii_alphabetic() {
        i += 1;
    }
    let mut out = message.to_vec();
    out[start + i] ^= 0x20;
    out
}

#[test]
fn every_pec_core_builder_output_signs_and_verifies_in_openssl() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pec-core/tests/golden"
    ));
    assert!(
        dir.is_dir(),
        "pec-core golden folder {} is missing",
        dir.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected pec-core golden builder outputs in {}",
        dir.display()
    );

    let pki = pki();
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, pki.ca.certificate_pem().unwrap()).unwrap();
    let mut anchors = TrustAnchors::new();
    anchors
        .add_der(&pki.ca.certificate().to_der().unwrap())
        .unwrap();

    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let golden = std::fs::read(file).unwrap();
        let (headers, entity) = split_render(&golden);
        let signed = block_on(pec_smime::sign_message(
            &pki.key,
            &pki.identity,
            &headers,
            &entity,
            signing_time(),
        ))
        .unwrap_or_else(|e| panic!("{name}: {e}"));

        // Headers survive (decoded values equal) and the entity is carried verbatim.
        let original = mail_parser::MessageParser::default()
            .parse(&golden)
            .unwrap();
        let ours = mail_parser::MessageParser::default()
            .parse(&signed)
            .unwrap();
        assert_eq!(original.subject(), ours.subject(), "{name}");
        assert_eq!(original.message_id(), ours.message_id(), "{name}");
        assert_eq!(
            pec_core::signed::split_signed(&signed).unwrap().content,
            &entity[..],
            "{name}"
        );
        let text = String::from_utf8_lossy(&signed);
        let head_end = text.find("\r\n\r\n").unwrap();
        assert!(
            !text[..head_end].split("\r\n").any(|l| l.trim().is_empty()),
            "{name}: whitespace-only header line"
        );

        let v = verify_message(&signed, &anchors, None, &VerifyOptions::default());
        assert_eq!(v.verdict, Verdict::Valid, "{name}: {:?}", v.reason);

        let msg = tmp.path().join(&name);
        std::fs::write(&msg, &signed).unwrap();
        let out = openssl(&[
            "smime",
            "-verify",
            "-in",
            msg.to_str().unwrap(),
            "-CAfile",
            ca.to_str().unwrap(),
            "-purpose",
            "smimesign",
            "-attime",
            &signing_time().timestamp().to_string(),
            "-out",
            "/dev/null",
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let tampered = flip_in_body(&signed, &entity);
        std::fs::write(&msg, &tampered).unwrap();
        let out = openssl(&[
            "smime",
            "-verify",
            "-in",
            msg.to_str().unwrap(),
            "-CAfile",
            ca.to_str().unwrap(),
            "-purpose",
            "smimesign",
            "-attime",
            &signing_time().timestamp().to_string(),
            "-out",
            "/dev/null",
        ]);
        assert!(
            !out.status.success(),
            "{name}: OpenSSL accepted a tampered message"
        );
        let v = verify_message(&tampered, &anchors, None, &VerifyOptions::default());
        assert_eq!(
            v.verdict,
            Verdict::InvalidSignature,
            "{name}: {:?}",
            v.reason
        );
    }
}
