//! Inputs that once broke something (found by fuzzing) and other hostile shapes: the
//! classifier, split_signed, the daticert parser and the formal checks return, never panic.

use pec_core::checks::{Limits, Submission, check_submission};
use pec_core::classify::{Anomaly, Kind, classify};
use pec_core::daticert;
use pec_core::signed::split_signed;

/// `classify` fuzz target, minimised: triggers a `debug_assert!` inside mail-parser 0.11
/// ("Invalid part ID, could not find multipart").
const MAIL_PARSER_DEBUG_ASSERT: &[u8] = b"Content-Type: multipart/mied; boundary=\"---=_PEC_cons0002\"\rQ\n\r\n------=_PEC_cons0002\r\nContent-Type: message/rfc822;te\r\n\r\n-\nContent-Type: message/rfc822;bit\r\n\r\n\n\r\n------=_PEC_cons0002--";

#[test]
fn mail_parser_debug_assert_input() {
    let c = classify(MAIL_PARSER_DEBUG_ASSERT);
    assert_eq!(c.kind, Kind::Ordinaria);
    // With debug assertions the parse is abandoned (Unparseable); in release mail-parser
    // returns a best-effort parse. Either way: a result, not a crash.
    if cfg!(debug_assertions) {
        assert_eq!(c.anomalies, vec![Anomaly::Unparseable]);
    }
    let _ = split_signed(MAIL_PARSER_DEBUG_ASSERT);
    let _ = check_submission(
        &Submission {
            raw: MAIL_PARSER_DEBUG_ASSERT,
            reverse_path: "a@b.it",
            recipients: &[],
            owned_addresses: &[],
        },
        &Limits::default(),
    );
}

#[test]
fn hostile_shapes() {
    let deep: Vec<u8> = (0..2000)
        .flat_map(|i| {
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                .into_bytes()
        })
        .collect();
    let many_headers: Vec<u8> = (0..20000)
        .flat_map(|_| b"X-Ricevuta: accettazione\r\n".to_vec())
        .collect();
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\r\n\r\n".to_vec(),
        b"X-Ricevuta: accettazione\r\n\r\n".to_vec(),
        b"X-Trasporto: posta-certificata\r\nContent-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n--x--".to_vec(),
        b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--x--\r\n".to_vec(),
        deep,
        many_headers,
        vec![0u8; 10000],
        vec![0xFFu8; 10000],
    ];
    for raw in &inputs {
        let c = classify(raw);
        let _ = c.description();
        let _ = split_signed(raw);
        let _ = daticert::parse(raw);
    }
}

/// Mail from outside with headers no signed envelope can carry (raw 8-bit text, a
/// whitespace-only folded line, a 1,000-octet line): its anomaly envelope leaves those values
/// out (the original travels whole inside), so the signer never refuses it (issue 11, the
/// receiving-point side of defect 1).
#[test]
fn an_anomaly_envelope_is_always_signable() {
    use chrono::TimeZone;
    use pec_core::build::{self, Ctx, Provider};
    use pec_core::ids::SequentialIds;
    use pec_core::message::UnsignedMessage;

    let provider = Provider::new("Example Gestore PEC S.p.A.", "pec.example.test").unwrap();
    let mut ids = SequentialIds::new("t");
    let mut ctx = Ctx {
        provider: &provider,
        now: chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 9, 30, 0)
            .unwrap(),
        ids: &mut ids,
    };
    let mut raw = "From: amico@ordinaria.test\r\nTo: \"Ànna\" <anna@pec.example.test>\r\n\
                   Cc: anna@pec.example.test,\r\n \r\n anna@pec.example.test\r\n"
        .as_bytes()
        .to_vec();
    raw.extend_from_slice(format!("Reply-To: \"{}\" <a@x.test>\r\n", "x".repeat(1000)).as_bytes());
    raw.extend_from_slice(b"Received: from mx by \xe9vil\r\nSubject: ciao\r\n\r\ntesto\r\n");
    let anomaly = build::busta_anomalia(&mut ctx, &raw, false).unwrap();
    for (name, value) in &anomaly.headers {
        assert!(value.is_ascii(), "{name}: {value:?}");
        assert!(
            !["To", "Cc", "Received"].contains(&name.as_str()),
            "{name}: {value:?}"
        );
        if name == "Reply-To" {
            assert_eq!(
                value, "amico@ordinaria.test",
                "the sender instead of the unusable value"
            );
        }
    }
    let back = UnsignedMessage::from_rendered(&anomaly.render()).unwrap();
    assert_eq!(back, anomaly);
}
