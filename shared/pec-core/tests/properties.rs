//! Property tests: hostile subjects and addresses (CRLF, `<`, `&`, quotes, non-ASCII, very
//! long) never break the MIME or XML structure: what we emit parses back to what we meant.
mod common;

use pec_core::addr::is_addr_spec;
use pec_core::build::{self, BuildError, Ctx};
use pec_core::classify::{Kind, classify};
use pec_core::daticert::{
    self, Data, Dati, Daticert, Destinatario, Errore, Intestazione, Tipo, TipoDestinatario,
    TipoRicevuta,
};
use pec_core::ids::SequentialIds;
use pec_core::original;
use pec_core::policy::{RecipientRole, clean_text, subject};
use pec_core::signed::assemble_signed;
use proptest::prelude::*;

/// Characters that stress MIME and XML.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => Just(' '),
        1 => Just('\r'),
        1 => Just('\n'),
        1 => Just('\t'),
        1 => Just('<'),
        1 => Just('>'),
        1 => Just('&'),
        1 => Just('"'),
        1 => Just('\''),
        1 => Just('='),
        1 => Just('?'),
        1 => Just('_'),
        1 => Just('é'),
        1 => Just('€'),
        1 => Just('\u{a0}'),
        1 => Just('\u{0}'),
        1 => Just('-'),
        2 => proptest::char::range('a', 'z'),
    ]
}

fn nasty_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(nasty_char(), 0..max).prop_map(|v| v.into_iter().collect())
}

/// Subjects: usually short, sometimes very long.
fn subject_strategy() -> impl Strategy<Value = String> {
    prop_oneof![4 => nasty_string(80), 1 => nasty_string(3000)]
}

/// Addresses: valid dot-atom, valid quoted local parts with specials, and garbage.
fn address_strategy() -> impl Strategy<Value = String> {
    let atom = "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}";
    prop_oneof![
        3 => (atom, atom).prop_map(|(a, b)| format!("{a}.{b}@pec.example.it")),
        2 => "[ a-zA-Z0-9<>&'(),.:;@\\[\\]-]{1,20}".prop_map(|l| format!("\"{l}\"@pec.example.it")),
        2 => nasty_string(40).prop_map(|s| format!("{s}@pec.example.it")),
        1 => nasty_string(40),
    ]
}

fn base_daticert() -> Daticert {
    Daticert {
        tipo: Tipo::AvvenutaConsegna,
        errore: Errore::Nessuno,
        intestazione: Intestazione {
            mittente: "a@pec.example.it".into(),
            destinatari: vec![Destinatario {
                tipo: TipoDestinatario::Certificato,
                indirizzo: "b@pec.example.it".into(),
            }],
            risposte: "a@pec.example.it".into(),
            oggetto: Some("x".into()),
        },
        dati: Dati {
            gestore_emittente: "G".into(),
            data: Data {
                zona: "+0100".into(),
                giorno: "01/01/2026".into(),
                ora: "00:00:00".into(),
            },
            identificativo: "1.t@pec.example.it".into(),
            msgid: Some("<m@x>".into()),
            ricevuta: Some(TipoRicevuta::Completa),
            consegna: Some("b@pec.example.it".into()),
            ricezione: vec![],
            errore_esteso: None,
        },
    }
}

/// A user message with the given From, To and Subject, written by mail-builder.
fn user_message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    mail_builder::MessageBuilder::new()
        .from(from)
        .to(to)
        .subject(subject)
        .message_id("orig.1@mua.example.it")
        .date(1_774_745_990_i64)
        .text_body("Testo del messaggio.")
        .write_to_vec()
        .unwrap()
}

proptest! {
    // 96 cases by default; `PROPTEST_CASES=5000 cargo test -p pec-core --test properties --release`
    // for a long run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
    ))]

    /// Any text in every daticert field: either refused by the strict emitter, or read back
    /// identically. Cleaned text is never refused.
    #[test]
    fn daticert_text_round_trips(s in subject_strategy(), a in address_strategy()) {
        let mut d = base_daticert();
        d.intestazione.oggetto = Some(s.clone());
        d.intestazione.mittente = a.clone();
        d.dati.msgid = Some(format!("<{a}>"));
        d.dati.errore_esteso = Some(s.clone());
        match d.to_xml() {
            Ok(xml) => {
                let back = daticert::parse(&xml).unwrap();
                prop_assert_eq!(back.issues, vec![]);
                prop_assert_eq!(back.daticert, d);
            }
            Err(daticert::DaticertError::NotEmittable { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
        let mut d = base_daticert();
        let clean = clean_text(&s);
        d.intestazione.oggetto = Some(clean.clone());
        d.dati.errore_esteso = (!clean.is_empty()).then(|| clean.clone());
        let xml = d.to_xml().unwrap();
        prop_assert_eq!(daticert::parse(&xml).unwrap().daticert, d);
    }

    /// Hostile subjects through accept → acceptance / envelope / delivery receipt → signed
    /// framing → classifier: the right kind, no anomaly, the subject intact in daticert and
    /// in the Subject header, the original intact in postacert.eml.
    #[test]
    fn hostile_subjects_survive_every_builder(s in subject_strategy()) {
        let raw = user_message("studio@pec.example.it", "dest@pec.example.it", &s);
        let acc = original::accept(&raw, "1.t@pec.example.it", "<f@pec.example.it>", &common::tipo_of).unwrap();
        let expected_oggetto = acc.certified.oggetto.clone().unwrap_or_default();
        prop_assert_eq!(&expected_oggetto, &clean_text(&expected_oggetto));
        let p = common::sender_provider();
        let mut ids = SequentialIds::new("p");
        let mut ctx = Ctx { provider: &p, now: common::utc("2026-07-01T10:00:00Z"), ids: &mut ids };
        let built = [
            (Kind::Accettazione, subject::ACCETTAZIONE, build::accettazione(&mut ctx, &acc.certified).unwrap()),
            (Kind::BustaTrasporto, subject::POSTA_CERTIFICATA, build::busta_trasporto(&mut ctx, &acc).unwrap()),
            (Kind::AvvenutaConsegna, subject::CONSEGNA, build::avvenuta_consegna(&mut ctx, &acc.certified, "dest@pec.example.it", RecipientRole::Primary, &acc.postacert).unwrap()),
        ];
        for (kind, prefix, m) in built {
            // Header values never carry a bare line break.
            for (name, value) in &m.headers {
                let v = value.replace("\r\n ", "").replace("\r\n\t", "");
                prop_assert!(!v.contains('\r') && !v.contains('\n'), "{}: {:?}", name, value);
                prop_assert!(value.is_ascii(), "{}: {:?}", name, value);
            }
            let signed = assemble_signed(&m, common::DUMMY_SIGNATURE, "----=_SIG_prop");
            let c = classify(&signed);
            prop_assert_eq!(c.kind, kind);
            prop_assert_eq!(&c.anomalies, &vec![]);
            let d = c.daticert.unwrap();
            prop_assert_eq!(d.intestazione.oggetto.as_deref(), Some(expected_oggetto.as_str()));
            let header_subject = c.headers.subject.unwrap_or_default();
            let expected_subject = format!("{prefix}{expected_oggetto}");
            prop_assert_eq!(header_subject.trim_end(), expected_subject.trim_end());
            if kind != Kind::Accettazione {
                prop_assert_eq!(c.postacert.as_deref(), Some(acc.postacert.as_slice()));
            }
        }
    }

    /// Hostile addresses: a valid addr-spec reads back identically from every header and
    /// from daticert; anything else is refused with a clean error, never emitted.
    #[test]
    fn hostile_addresses_are_round_tripped_or_refused(a in address_strategy()) {
        let c = original::Certified {
            mittente: a.clone(),
            destinatari: vec![Destinatario { tipo: TipoDestinatario::Certificato, indirizzo: "dest@pec.example.it".into() }],
            risposte: a.clone(),
            oggetto: Some("Oggetto".into()),
            identificativo: "1.t@pec.example.it".into(),
            msgid: Some("<m@x>".into()),
            ricevuta: TipoRicevuta::Completa,
        };
        let p = common::sender_provider();
        let mut ids = SequentialIds::new("p");
        let mut ctx = Ctx { provider: &p, now: common::utc("2026-07-01T10:00:00Z"), ids: &mut ids };
        match build::accettazione(&mut ctx, &c) {
            Ok(m) => {
                prop_assert!(is_addr_spec(&a));
                let signed = assemble_signed(&m, common::DUMMY_SIGNATURE, "----=_SIG_prop");
                let cl = classify(&signed);
                prop_assert_eq!(cl.kind, Kind::Accettazione);
                prop_assert_eq!(&cl.anomalies, &vec![]);
                prop_assert_eq!(&cl.headers.to, &vec![a.clone()]);
                prop_assert_eq!(&cl.daticert.unwrap().intestazione.mittente, &a);
            }
            Err(BuildError::InvalidAddress { .. }) => prop_assert!(!is_addr_spec(&a)),
            Err(BuildError::Daticert(_)) => prop_assert!(!is_addr_spec(&a)),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
        // As the sender of a user message, through the envelope's "Per conto di".
        if is_addr_spec(&a) {
            let raw = user_message(&a, "dest@pec.example.it", "s");
            if let Ok(acc) = original::accept(&raw, "1.t@pec.example.it", "<f@pec.example.it>", &common::tipo_of) {
                prop_assert_eq!(&acc.certified.mittente, &a);
                let m = build::busta_trasporto(&mut ctx, &acc).unwrap();
                let signed = assemble_signed(&m, common::DUMMY_SIGNATURE, "----=_SIG_prop");
                let parsed = mail_parser::MessageParser::default().parse(&signed).unwrap();
                let from = parsed.from().and_then(|f| f.first()).unwrap();
                let display = format!("Per conto di: {a}");
                prop_assert_eq!(from.name.as_deref(), Some(display.as_str()));
                prop_assert_eq!(from.address.as_deref(), Some("posta-certificata@pec.example.it"));
                let cl = classify(&signed);
                prop_assert_eq!(cl.kind, Kind::BustaTrasporto);
                prop_assert_eq!(&cl.anomalies, &vec![]);
            }
        }
    }
}
