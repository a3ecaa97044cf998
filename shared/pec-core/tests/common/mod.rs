//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Read a real fixture of `../shared/fixtures/real/` by file name; a missing folder or file
/// fails the test naming the path (the one loader of `pec-testkit`).
pub fn fixture(name: &str) -> Vec<u8> {
    pec_testkit::fixtures::real(name)
}

/// Convert bare LF line ends to CRLF.
pub fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A fixed scenario that builds every message kind (used by the golden and round-trip tests).
// ---------------------------------------------------------------------------------------------

use chrono::{DateTime, Utc};
use pec_core::UnsignedMessage;
use pec_core::build::{self, Ctx, NonAcceptance, Provider};
use pec_core::classify::Kind;
use pec_core::daticert::{Daticert, Errore, Tipo, TipoDestinatario, TipoRicevuta};
use pec_core::ids::SequentialIds;
use pec_core::original::{self, Accepted, Certified};
use pec_core::policy::{DeliveryFailure, RecipientRole, TimeoutNotice};
use pec_core::time::PecTime;

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid RFC 3339 literal")
        .with_timezone(&Utc)
}

pub fn sender_provider() -> Provider {
    Provider::new("Example PEC S.p.A.", "pec.example.it").unwrap()
}

pub fn recipient_provider() -> Provider {
    Provider::new("Comune Gestore PEC S.r.l.", "gestore-b.example.net").unwrap()
}

/// `mailReceipt` of the sender's provider (provider index).
pub const SENDER_MAIL_RECEIPT: &str = "ricevute@pec.example.it";

pub fn tipo_of(addr: &str) -> TipoDestinatario {
    if addr.ends_with("@pec.example.it") || addr.ends_with("@pec.comune.example.it") {
        TipoDestinatario::Certificato
    } else {
        TipoDestinatario::Esterno
    }
}

/// The user's message: non-ASCII and XML/MIME metacharacters in the subject, a To (PEC) and a
/// Cc (ordinary) recipient, two attachments.
pub fn original_message(form: &str) -> Vec<u8> {
    format!(
        "Received: from [192.0.2.10] (mua.example.it [192.0.2.10])\r\n\
         \tby smtp.pec.example.it with ESMTPSA; Sun, 29 Mar 2026 01:59:58 +0100\r\n\
         From: \"Studio Bianchi\" <studio.bianchi@pec.example.it>\r\n\
         To: Protocollo <protocollo@pec.comune.example.it>\r\n\
         Cc: amministrazione@example.com\r\n\
         Subject: =?utf-8?q?Messa_in_mora_=E2=80=93_pratica_2026/118_<urgente>_&_=22riservata=22_perch=C3=A9?=\r\n\
         Date: Sun, 29 Mar 2026 01:59:50 +0100\r\n\
         Message-ID: <5f0c2a9e-3b1d@mua.example.it>\r\n\
         X-TipoRicevuta: {form}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"=_mua_1\"\r\n\
         \r\n\
         --=_mua_1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Si trasmette la diffida in allegato. Cordiali saluti, Studio Bianchi — perché sì.\r\n\
         --=_mua_1\r\n\
         Content-Type: application/pdf; name=\"diffida.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"diffida.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoKdHJhaWxlcgo8\r\n\
         PC9Sb290IDEgMCBSPj4KJSVFT0YK\r\n\
         --=_mua_1\r\n\
         Content-Type: text/plain; name=\"note.txt\"\r\n\
         Content-Disposition: attachment; filename=\"note.txt\"\r\n\
         \r\n\
         nota allegata\r\n\
         --=_mua_1--\r\n"
    )
    .into_bytes()
}

/// What the access point accepted (identificativo fixed).
pub fn accepted(form: &str) -> Accepted {
    original::accept(
        &original_message(form),
        "20260329005959000.t0001@pec.example.it",
        "<20260329005959000.fb0001@pec.example.it>",
        &tipo_of,
    )
    .unwrap()
}

/// One built message and what the classifier must find in it.
pub struct Built {
    /// Golden file stem.
    pub name: &'static str,
    pub kind: Kind,
    pub message: UnsignedMessage,
    /// The daticert the message must carry (`None` for the anomaly envelope).
    pub daticert: Option<Daticert>,
    /// The original it must embed, byte for byte.
    pub postacert: Option<Vec<u8>>,
}

fn ctx<'a>(p: &'a Provider, now: &str, ids: &'a mut SequentialIds) -> Ctx<'a> {
    Ctx {
        provider: p,
        now: utc(now),
        ids,
    }
}

fn expected(c: &Certified, tipo: Tipo, errore: Errore, p: &Provider, now: &str) -> Daticert {
    c.daticert(tipo, errore, &p.name, &PecTime::new(utc(now)))
}

/// Build every kind for the fixed scenario. Acceptance at 00:59:59Z (+0100, the last second
/// of winter time); the receiving side works after the DST switch (+0200).
pub fn build_all() -> Vec<Built> {
    let a_prov = sender_provider();
    let b_prov = recipient_provider();
    let acc = accepted("completa");
    let c = &acc.certified;
    let mut out = Vec::new();
    let t_acc = "2026-03-29T00:59:59Z";
    let t_b = "2026-03-29T01:00:03Z";

    let mut ids = SequentialIds::new("acc");
    out.push(Built {
        name: "accettazione",
        kind: Kind::Accettazione,
        message: build::accettazione(&mut ctx(&a_prov, t_acc, &mut ids), c).unwrap(),
        daticert: Some(expected(
            c,
            Tipo::Accettazione,
            Errore::Nessuno,
            &a_prov,
            t_acc,
        )),
        postacert: None,
    });

    let mut ids = SequentialIds::new("nacc");
    let mut d = expected(c, Tipo::NonAccettazione, Errore::Altro, &a_prov, t_acc);
    let reason = pec_core::checks::refusal_reason(&[pec_core::checks::FormalError::BccNotEmpty]);
    d.dati.errore_esteso = Some(reason.clone());
    out.push(Built {
        name: "non-accettazione",
        kind: Kind::NonAccettazione,
        message: build::non_accettazione(
            &mut ctx(&a_prov, t_acc, &mut ids),
            c,
            &NonAcceptance::Formal(reason),
            "studio.bianchi@pec.example.it",
        )
        .unwrap(),
        daticert: Some(d),
        postacert: None,
    });

    let mut ids = SequentialIds::new("naccv");
    let mut d = expected(c, Tipo::NonAccettazione, Errore::Virus, &a_prov, t_acc);
    d.dati.errore_esteso = Some("virus rilevato: Eicar-Test-Signature".into());
    out.push(Built {
        name: "non-accettazione-virus",
        kind: Kind::NonAccettazione,
        message: build::non_accettazione(
            &mut ctx(&a_prov, t_acc, &mut ids),
            c,
            &NonAcceptance::Virus("Eicar-Test-Signature".into()),
            "studio.bianchi@pec.example.it",
        )
        .unwrap(),
        daticert: Some(d),
        postacert: None,
    });

    let mut ids = SequentialIds::new("env");
    let mut d = expected(c, Tipo::PostaCertificata, Errore::Nessuno, &a_prov, t_acc);
    d.dati.ricevuta = Some(TipoRicevuta::Completa);
    let envelope = build::busta_trasporto(&mut ctx(&a_prov, t_acc, &mut ids), &acc).unwrap();
    out.push(Built {
        name: "busta-trasporto",
        kind: Kind::BustaTrasporto,
        message: envelope,
        daticert: Some(d),
        postacert: Some(acc.postacert.clone()),
    });

    let mut ids = SequentialIds::new("pic");
    let mut d = expected(c, Tipo::PresaInCarico, Errore::Nessuno, &b_prov, t_b);
    d.dati.ricezione = vec!["protocollo@pec.comune.example.it".into()];
    out.push(Built {
        name: "presa-in-carico",
        kind: Kind::PresaInCarico,
        message: build::presa_in_carico(
            &mut ctx(&b_prov, t_b, &mut ids),
            c,
            &["protocollo@pec.comune.example.it".to_string()],
            SENDER_MAIL_RECEIPT,
        )
        .unwrap(),
        daticert: Some(d),
        postacert: None,
    });

    let ordinary = b"Received: from mx.example.com by mx.gestore-b.example.net; Sun, 29 Mar 2026 03:00:01 +0200\r\nFrom: Someone <someone@example.com>\r\nTo: protocollo@pec.comune.example.it\r\nSubject: Ciao\r\nMessage-ID: <plain-1@example.com>\r\nDate: Sun, 29 Mar 2026 02:59:00 +0200\r\n\r\nUn messaggio ordinario.\r\n".to_vec();
    let mut ids = SequentialIds::new("anom");
    out.push(Built {
        name: "busta-anomalia",
        kind: Kind::BustaAnomalia,
        message: build::busta_anomalia(&mut ctx(&b_prov, t_b, &mut ids), &ordinary, false).unwrap(),
        daticert: None,
        postacert: Some(ordinary.clone()),
    });

    let mut ids = SequentialIds::new("anoms");
    let tampered = original_message("completa");
    out.push(Built {
        name: "busta-anomalia-sicurezza",
        kind: Kind::BustaAnomalia,
        message: build::busta_anomalia(&mut ctx(&b_prov, t_b, &mut ids), &tampered, true).unwrap(),
        daticert: None,
        postacert: Some(tampered),
    });

    let mut ids = SequentialIds::new("rv");
    let mut d = expected(c, Tipo::RilevazioneVirus, Errore::Virus, &b_prov, t_b);
    d.dati.ricezione = vec!["protocollo@pec.comune.example.it".into()];
    d.dati.errore_esteso = Some("virus rilevato: Eicar-Test-Signature".into());
    out.push(Built {
        name: "rilevazione-virus",
        kind: Kind::RilevazioneVirus,
        message: build::rilevazione_virus(
            &mut ctx(&b_prov, t_b, &mut ids),
            c,
            &["protocollo@pec.comune.example.it".to_string()],
            "Eicar-Test-Signature",
            SENDER_MAIL_RECEIPT,
        )
        .unwrap(),
        daticert: Some(d),
        postacert: None,
    });

    for (name, form, role, effective) in [
        (
            "avvenuta-consegna-completa",
            "completa",
            RecipientRole::Primary,
            TipoRicevuta::Completa,
        ),
        (
            "avvenuta-consegna-breve",
            "breve",
            RecipientRole::Primary,
            TipoRicevuta::Breve,
        ),
        (
            "avvenuta-consegna-sintetica",
            "sintetica",
            RecipientRole::Primary,
            TipoRicevuta::Sintetica,
        ),
        (
            "avvenuta-consegna-cc",
            "completa",
            RecipientRole::Copy,
            TipoRicevuta::Sintetica,
        ),
    ] {
        let acc = accepted(form);
        let c = &acc.certified;
        let consegna = match role {
            RecipientRole::Primary => "protocollo@pec.comune.example.it",
            RecipientRole::Copy => "amministrazione@example.com",
        };
        let mut ids = SequentialIds::new("cons");
        let mut d = expected(c, Tipo::AvvenutaConsegna, Errore::Nessuno, &b_prov, t_b);
        d.dati.ricevuta = Some(effective.clone());
        d.dati.consegna = Some(consegna.into());
        let postacert = match effective {
            TipoRicevuta::Completa => Some(acc.postacert.clone()),
            TipoRicevuta::Breve => Some(original::breve(&acc.postacert)),
            _ => None,
        };
        out.push(Built {
            name,
            kind: Kind::AvvenutaConsegna,
            message: build::avvenuta_consegna(
                &mut ctx(&b_prov, t_b, &mut ids),
                c,
                consegna,
                role,
                &acc.postacert,
            )
            .unwrap(),
            daticert: Some(d),
            postacert,
        });
    }

    let mut ids = SequentialIds::new("mc");
    let mut d = expected(c, Tipo::ErroreConsegna, Errore::NoDest, &b_prov, t_b);
    d.dati.consegna = Some("protocollo@pec.comune.example.it".into());
    d.dati.errore_esteso = Some("5.1.1 - Comune Gestore PEC S.r.l. - indirizzo non valido".into());
    out.push(Built {
        name: "mancata-consegna",
        kind: Kind::ErroreConsegna,
        message: build::mancata_consegna(
            &mut ctx(&b_prov, t_b, &mut ids),
            c,
            "protocollo@pec.comune.example.it",
            &DeliveryFailure::UnknownUser,
        )
        .unwrap(),
        daticert: Some(d),
        postacert: None,
    });

    let mut ids = SequentialIds::new("mcv");
    let mut d = expected(c, Tipo::ErroreConsegna, Errore::Virus, &b_prov, t_b);
    d.dati.consegna = Some("protocollo@pec.comune.example.it".into());
    d.dati.errore_esteso = Some("virus rilevato: Eicar-Test-Signature".into());
    out.push(Built {
        name: "mancata-consegna-virus",
        kind: Kind::ErroreConsegna,
        message: build::mancata_consegna_virus(
            &mut ctx(&b_prov, t_b, &mut ids),
            c,
            "protocollo@pec.comune.example.it",
            "Eicar-Test-Signature",
        )
        .unwrap(),
        daticert: Some(d),
        postacert: None,
    });

    for (name, which, now, code) in [
        (
            "mancata-consegna-12h",
            TimeoutNotice::Hours12,
            "2026-03-29T12:59:59Z",
            "4.4.1 - Example PEC S.p.A. - nessuna ricevuta entro 12 ore dall'invio",
        ),
        (
            "mancata-consegna-24h",
            TimeoutNotice::Hours24,
            "2026-03-30T00:59:59Z",
            "5.4.1 - Example PEC S.p.A. - nessuna ricevuta di consegna entro 24 ore dall'invio",
        ),
    ] {
        let mut ids = SequentialIds::new("to");
        let mut d = expected(
            c,
            Tipo::PreavvisoErroreConsegna,
            Errore::Altro,
            &a_prov,
            now,
        );
        d.dati.consegna = Some("protocollo@pec.comune.example.it".into());
        d.dati.errore_esteso = Some(code.into());
        out.push(Built {
            name,
            kind: Kind::PreavvisoErroreConsegna,
            message: build::mancata_consegna_tempo(
                &mut ctx(&a_prov, now, &mut ids),
                c,
                "protocollo@pec.comune.example.it",
                which,
            )
            .unwrap(),
            daticert: Some(d),
            postacert: None,
        });
    }

    // A user message without Message-ID: the access point gives it one.
    let raw = b"From: studio.bianchi@pec.example.it\r\nTo: protocollo@pec.comune.example.it\r\nSubject: Senza Message-ID\r\n\r\nTesto.\r\n";
    let acc = original::accept(
        raw,
        "20260329005959000.t0002@pec.example.it",
        "<20260329005959000.fb0002@pec.example.it>",
        &tipo_of,
    )
    .unwrap();
    let mut ids = SequentialIds::new("nomid");
    let mut d = expected(
        &acc.certified,
        Tipo::PostaCertificata,
        Errore::Nessuno,
        &a_prov,
        t_acc,
    );
    d.dati.ricevuta = Some(TipoRicevuta::Completa);
    assert_eq!(
        d.dati.msgid.as_deref(),
        Some("<20260329005959000.fb0002@pec.example.it>")
    );
    out.push(Built {
        name: "busta-trasporto-senza-message-id",
        kind: Kind::BustaTrasporto,
        message: build::busta_trasporto(&mut ctx(&a_prov, t_acc, &mut ids), &acc).unwrap(),
        daticert: Some(d),
        postacert: Some(acc.postacert.clone()),
    });

    out
}

/// A syntactically complete (but cryptographically meaningless) DER signature, to frame
/// built messages as `multipart/signed` in tests.
pub const DUMMY_SIGNATURE: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x00];
