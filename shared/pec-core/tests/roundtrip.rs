//! Every emitted kind, framed as multipart/signed, classifies back to itself with identical
//! daticert fields and the embedded original byte for byte.
mod common;

use pec_core::classify::{Kind, classify};
use pec_core::daticert;
use pec_core::signed::{assemble_signed, split_signed};

#[test]
fn every_kind_classifies_back_to_itself() {
    for b in common::build_all() {
        let raw = assemble_signed(&b.message, common::DUMMY_SIGNATURE, "----=_SIG_roundtrip");
        let c = classify(&raw);
        assert_eq!(c.kind, b.kind, "{}", b.name);
        assert_eq!(
            c.anomalies,
            vec![],
            "{}: no anomaly in what we emit",
            b.name
        );
        assert_eq!(c.daticert, b.daticert, "{}: daticert fields", b.name);
        assert_eq!(
            c.postacert.as_deref(),
            b.postacert.as_deref(),
            "{}: embedded original",
            b.name
        );
        // The signed bytes are exactly the entity we produced.
        let s = c.signed.as_ref().expect("signed");
        assert_eq!(s.content, b.message.entity.as_slice(), "{}", b.name);
        assert_eq!(s.protocol, "application/pkcs7-signature");
        assert_eq!(s.micalg.as_deref(), Some("sha-256"));
        assert_eq!(s.signature.as_deref(), Some(common::DUMMY_SIGNATURE));
        let parts = split_signed(&raw).unwrap();
        assert_eq!(parts.content, b.message.entity.as_slice());
        // Header facts.
        if b.kind != Kind::BustaAnomalia {
            let d = b.daticert.as_ref().unwrap();
            assert_eq!(
                c.headers.x_riferimento_message_id.as_deref(),
                d.dati.msgid.as_deref(),
                "{}",
                b.name
            );
        }
    }
}

#[test]
fn emitted_daticert_parses_without_issues() {
    for b in common::build_all() {
        let raw = assemble_signed(&b.message, common::DUMMY_SIGNATURE, "----=_SIG_roundtrip");
        let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let Some(part) = m
            .attachments()
            .find(|p| mail_parser::MimeHeaders::attachment_name(*p) == Some("daticert.xml"))
        else {
            assert_eq!(b.kind, Kind::BustaAnomalia, "{}", b.name);
            continue;
        };
        let xml = part.contents();
        assert!(xml.starts_with(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<postacert tipo=\""));
        let parsed = daticert::parse(xml).unwrap();
        assert_eq!(parsed.issues, vec![], "{}", b.name);
        // Re-emitting gives the same bytes: the emitter is a function of the data.
        assert_eq!(parsed.daticert.to_xml().unwrap(), xml, "{}", b.name);
    }
}

#[test]
fn breve_keeps_structure_and_text() {
    let acc = common::accepted("breve");
    let breve = pec_core::original::breve(&acc.postacert);
    let a = mail_parser::MessageParser::default()
        .parse(&acc.postacert)
        .unwrap();
    let b = mail_parser::MessageParser::default().parse(&breve).unwrap();
    assert_eq!(a.body_text(0), b.body_text(0));
    assert_eq!(a.subject(), b.subject());
    assert_eq!(a.message_id(), b.message_id());
    assert_eq!(a.attachment_count(), b.attachment_count());
    for att in b.attachments() {
        let name = mail_parser::MimeHeaders::attachment_name(att).unwrap();
        assert!(name.ends_with(".sha256"), "{name}");
        let text = att.text_contents().unwrap();
        let (hex, file) = text.split_once("  ").unwrap();
        assert_eq!(hex.len(), 64);
        assert_eq!(format!("{file}.sha256"), name);
    }
}

/// Each formal-check failure becomes an avviso di non accettazione carrying its reason.
#[test]
fn each_formal_failure_becomes_a_precise_notice() {
    use pec_core::build::{self, Ctx, NonAcceptance};
    use pec_core::checks::{self, FormalError, Limits, Submission};
    use pec_core::daticert::Errore;
    use pec_core::ids::SequentialIds;

    let owned = vec!["studio@pec.example.it".to_string()];
    let rcpt = vec!["dest@pec.example.it".to_string()];
    type Case<'a> = (&'a [u8], &'a str, Vec<String>, fn(&FormalError) -> bool);
    let cases: Vec<Case<'_>> = vec![
        (b"To: dest@pec.example.it\r\nSubject: a\r\n\r\nx", "studio@pec.example.it", rcpt.clone(), |e| matches!(e, FormalError::FromMissing)),
        (b"From: studio@pec.example.it\r\nCc: dest@pec.example.it\r\nSubject: b\r\n\r\nx", "studio@pec.example.it", rcpt.clone(), |e| matches!(e, FormalError::ToMissing)),
        (b"From: studio@pec.example.it\r\nTo: dest@pec.example.it\r\nSubject: c\r\n\r\nx", "other@pec.example.it", rcpt.clone(), |e| matches!(e, FormalError::ReversePathMismatch { .. })),
        (b"From: studio@pec.example.it\r\nTo: dest@pec.example.it\r\nSubject: d\r\n\r\nx", "studio@pec.example.it", vec!["hidden@pec.example.it".into()], |e| matches!(e, FormalError::RecipientNotInHeaders(_))),
        (b"From: studio@pec.example.it\r\nTo: dest@pec.example.it\r\nBcc: h@x.it\r\nSubject: e\r\n\r\nx", "studio@pec.example.it", rcpt.clone(), |e| matches!(e, FormalError::BccNotEmpty)),
        (b"From: nobody@pec.example.it\r\nTo: dest@pec.example.it\r\nSubject: f\r\n\r\nx", "nobody@pec.example.it", rcpt.clone(), |e| matches!(e, FormalError::NotOwner(_))),
    ];
    let p = common::sender_provider();
    for (raw, rp, rc, expected) in cases {
        let s = Submission {
            raw,
            reverse_path: rp,
            recipients: &rc,
            owned_addresses: &owned,
        };
        let errors = checks::check_submission(&s, &Limits::default()).unwrap_err();
        assert!(errors.iter().any(expected), "{errors:?}");
        let reason = checks::refusal_reason(&errors);
        let c = checks::certified_for_refusal(&s, "1.t@pec.example.it", &common::tipo_of);
        let mut ids = SequentialIds::new("r");
        let mut ctx = Ctx {
            provider: &p,
            now: common::utc("2026-07-01T10:00:00Z"),
            ids: &mut ids,
        };
        let m = build::non_accettazione(
            &mut ctx,
            &c,
            &NonAcceptance::Formal(reason.clone()),
            "studio@pec.example.it",
        )
        .unwrap();
        assert_eq!(m.header("To"), Some("studio@pec.example.it"));
        let signed = assemble_signed(&m, common::DUMMY_SIGNATURE, "----=_SIG_r");
        let cl = classify(&signed);
        assert_eq!(cl.kind, Kind::NonAccettazione);
        assert_eq!(cl.anomalies, vec![]);
        let d = cl.daticert.unwrap();
        assert_eq!(d.errore, Errore::Altro);
        assert_eq!(d.dati.errore_esteso.as_deref(), Some(reason.as_str()));
    }
    // Size: over the limit.
    let raw = b"From: studio@pec.example.it\r\nTo: dest@pec.example.it\r\n\r\nxxxxxxxxxx";
    let s = Submission {
        raw,
        reverse_path: "studio@pec.example.it",
        recipients: &rcpt,
        owned_addresses: &owned,
    };
    let errors = checks::check_submission(
        &s,
        &Limits {
            max_total_bytes: 10,
        },
    )
    .unwrap_err();
    assert!(matches!(errors.as_slice(), [FormalError::TooLarge { .. }]));
}

/// `errore="altro"` on a non-delivery notice (what Aruba sends today for 5.1.1) classifies the
/// same as `no-dest`.
#[test]
fn non_delivery_with_altro() {
    use pec_core::build::{self, Ctx};
    use pec_core::daticert::Errore;
    use pec_core::ids::SequentialIds;
    use pec_core::policy::DeliveryFailure;
    let acc = common::accepted("completa");
    let p = common::recipient_provider();
    let mut ids = SequentialIds::new("x");
    let mut ctx = Ctx {
        provider: &p,
        now: common::utc("2026-07-01T10:00:00Z"),
        ids: &mut ids,
    };
    let m = build::mancata_consegna(
        &mut ctx,
        &acc.certified,
        "protocollo@pec.comune.example.it",
        &DeliveryFailure::MailboxFull,
    )
    .unwrap();
    let signed = assemble_signed(&m, common::DUMMY_SIGNATURE, "----=_SIG_x");
    let cl = classify(&signed);
    assert_eq!(cl.kind, Kind::ErroreConsegna);
    assert_eq!(cl.anomalies, vec![]);
    let d = cl.daticert.unwrap();
    assert_eq!(d.errore, Errore::Altro);
    assert_eq!(
        d.dati.errore_esteso.as_deref(),
        Some("5.2.2 - Comune Gestore PEC S.r.l. - casella piena")
    );
}
