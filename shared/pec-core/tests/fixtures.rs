//! Every real fixture in ../shared/fixtures/real/ classifies to its expected verdict.
mod common;

use common::fixture;
use pec_core::classify::{Anomaly, Kind, classify};
use pec_core::daticert::{Errore, Tipo, TipoDestinatario, TipoRicevuta};

#[test]
fn aruba_2018_accettazione() {
    let raw = fixture("aruba-2018-accettazione.eml");
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Accettazione);
    assert_eq!(c.anomalies, vec![], "a real, intact receipt has no anomaly");
    let d = c.daticert.as_ref().expect("daticert");
    assert_eq!(d.tipo, Tipo::Accettazione);
    assert_eq!(d.errore, Errore::Nessuno);
    assert_eq!(d.intestazione.mittente, "l.battistini@pec.it");
    assert_eq!(d.intestazione.destinatari.len(), 1);
    assert_eq!(
        d.intestazione.destinatari[0].tipo,
        TipoDestinatario::Certificato
    );
    assert_eq!(
        d.intestazione.oggetto.as_deref(),
        Some("IT03339130126_00009.xml")
    );
    assert_eq!(d.dati.gestore_emittente, "ARUBA PEC S.p.A.");
    assert_eq!(d.dati.data.giorno, "13/11/2018");
    assert_eq!(d.dati.data.ora, "16:39:26");
    assert_eq!(d.dati.data.zona, "+0100");
    assert_eq!(
        d.dati.identificativo,
        "opec288.20181113163926.01838.310.1.63@pec.aruba.it"
    );
    assert_eq!(
        d.dati.msgid.as_deref(),
        Some(
            "<1542123565.921546936035156.464602125997431-openerp-8-fatturapa.attachment.out@elbati-Vostro-3550>"
        )
    );
    assert_eq!(
        c.headers.x_riferimento_message_id.as_deref(),
        d.dati.msgid.as_deref()
    );
    let s = c.signed.as_ref().expect("signed");
    assert_eq!(s.protocol, "application/x-pkcs7-signature");
    assert_eq!(s.micalg.as_deref(), Some("sha1"));
    assert!(s.signature.is_some());
    assert!(c.postacert.is_none());
    assert_eq!(c.description(), "ricevuta di accettazione");
}

#[test]
fn aruba_2018_busta_trasporto_modified() {
    let raw = fixture("aruba-2018-busta-trasporto-modified.eml");
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::BustaTrasporto);
    // Structure is a valid envelope; the digest mismatch is for the verifier to find.
    assert_eq!(c.anomalies, vec![]);
    let d = c.daticert.as_ref().unwrap();
    assert_eq!(d.tipo, Tipo::PostaCertificata);
    assert_eq!(d.dati.ricevuta, Some(TipoRicevuta::Breve));
    assert_eq!(d.dati.gestore_emittente, "Sogei SpA");
    // `X-Tiporicevuta` in another case is still read.
    assert_eq!(c.headers.x_tipo_ricevuta.as_deref(), Some("breve"));
    let post = c.postacert.as_ref().expect("postacert.eml");
    assert!(post.starts_with(b"Received: from sdibe85p2.srv.sogei.it"));
    assert!(post.ends_with(b"------=_Part_115220_-1210040643.1544268377979--\n"));
    let inner = classify(post);
    assert_eq!(inner.kind, Kind::Ordinaria);
    assert_eq!(
        inner.headers.message_id.as_deref(),
        Some("<opec288.20181208122618.17535.2665.1.3@pcert.sogei.it>")
    );
}

#[test]
fn anon_accettazione() {
    let raw = fixture("anon-accettazione.eml");
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Accettazione);
    assert_eq!(c.daticert.as_ref().unwrap().tipo, Tipo::Accettazione);
    assert!(
        matches!(c.anomalies.as_slice(), [Anomaly::Signature { .. }]),
        "{:?}",
        c.anomalies
    );
    assert!(c.signed.as_ref().unwrap().signature.is_none());
}

#[test]
fn anon_errore_consegna() {
    let raw = fixture("anon-errore-consegna.eml");
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::ErroreConsegna);
    let d = c.daticert.as_ref().unwrap();
    assert_eq!(d.errore, Errore::NoDest);
    assert_eq!(
        d.dati.errore_esteso.as_deref(),
        Some("5.1.1 - FAKE Pec S.p.A. - indirizzo non valido")
    );
    assert_eq!(d.dati.consegna.as_deref(), Some("rec@fakepec.it"));
    assert_eq!(d.intestazione.oggetto.as_deref(), Some("Test PEC"));
    assert!(
        c.anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::Signature { .. }))
    );
    assert!(
        c.anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::Daticert { issue } if issue.contains("stray text"))),
        "{:?}",
        c.anomalies
    );
    assert_eq!(c.anomalies.len(), 2, "{:?}", c.anomalies);
    assert_eq!(c.description(), "avviso di mancata consegna");
}

#[test]
fn ordinary_mail() {
    for name in ["plain-mail.eml", "dsn-failure.eml"] {
        let raw = fixture(name);
        let c = classify(&raw);
        assert_eq!(c.kind, Kind::Ordinaria, "{name}");
        assert!(c.daticert.is_none(), "{name}");
        assert_eq!(c.anomalies, vec![], "{name}");
    }
}

#[test]
fn lf_and_crlf_classify_the_same() {
    for name in [
        "aruba-2018-accettazione.eml",
        "aruba-2018-busta-trasporto-modified.eml",
        "anon-accettazione.eml",
        "anon-errore-consegna.eml",
        "plain-mail.eml",
        "dsn-failure.eml",
    ] {
        let raw = fixture(name);
        let crlf = common::crlf(&raw);
        let (a, b) = (classify(&raw), classify(&crlf));
        assert_eq!(a.kind, b.kind, "{name}");
        assert_eq!(a.daticert, b.daticert, "{name}");
        assert_eq!(a.anomalies, b.anomalies, "{name}");
    }
}

#[test]
fn every_prefix_of_every_fixture_is_handled() {
    for name in [
        "aruba-2018-accettazione.eml",
        "anon-errore-consegna.eml",
        "aruba-2018-busta-trasporto-modified.eml",
    ] {
        let raw = fixture(name);
        for n in (0..raw.len()).step_by(53) {
            let _ = classify(&raw[..n]);
        }
    }
}
