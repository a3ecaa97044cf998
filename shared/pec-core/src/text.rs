//! The Italian human-readable bodies (text/plain and text/html) of every provider message.
//!
//! The RT prescribes what the text must say, not its wording, and real providers word it
//! differently; this wording is ours and lives only here. Both forms are produced from the same
//! [`Notice`] so they never disagree. Values are HTML-escaped by quick-xml in the HTML form.

use quick_xml::escape::partial_escape;

use crate::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
use crate::time::PecTime;

/// A notice: a title and its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The heading (also the HTML title).
    pub title: String,
    /// The body lines; an empty string is a blank line.
    pub lines: Vec<String>,
}

impl Notice {
    /// The text/plain form (LF line ends; the MIME encoder makes them CRLF).
    pub fn plain(&self) -> String {
        let mut s = String::with_capacity(512);
        s.push_str(&self.title);
        s.push_str("\n\n");
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// The text/html form.
    pub fn html(&self) -> String {
        let title = partial_escape(self.title.as_str());
        let mut s = String::with_capacity(1024);
        s.push_str("<html>\n<head><meta charset=\"utf-8\"><title>");
        s.push_str(&title);
        s.push_str("</title></head>\n<body>\n<h3>");
        s.push_str(&title);
        s.push_str("</h3>\n<hr>\n<p>\n");
        for l in &self.lines {
            if l.is_empty() {
                s.push_str("</p>\n<p>\n");
            } else {
                s.push_str(&partial_escape(l.as_str()));
                s.push_str("<br>\n");
            }
        }
        s.push_str("</p>\n</body>\n</html>\n");
        s
    }
}

/// The data every notice mentions.
pub struct Facts<'a> {
    /// When the event happened.
    pub time: &'a PecTime,
    /// Original subject (empty if none).
    pub oggetto: &'a str,
    /// Original sender.
    pub mittente: &'a str,
    /// Original recipients.
    pub destinatari: &'a [Destinatario],
    /// The PEC identifier of the original.
    pub identificativo: &'a str,
}

fn kind_label(t: &TipoDestinatario) -> &'static str {
    match t {
        TipoDestinatario::Esterno => "posta ordinaria",
        _ => "posta certificata",
    }
}

/// `lead` is what follows the time: "il messaggio", "nel messaggio", ...
fn intro(f: &Facts<'_>, lead: &str) -> Vec<String> {
    let mut v = vec![
        format!(
            "Il giorno {} alle ore {} ({}) {lead}",
            f.time.giorno(),
            f.time.ora(),
            f.time.zona()
        ),
        format!("\"{}\" proveniente da \"{}\"", f.oggetto, f.mittente),
        "indirizzato a:".to_string(),
    ];
    for d in f.destinatari {
        v.push(format!("{} (\"{}\")", d.indirizzo, kind_label(&d.tipo)));
    }
    v
}

fn id_line(f: &Facts<'_>) -> String {
    format!("Identificativo messaggio: {}", f.identificativo)
}

/// Ricevuta di accettazione.
pub fn accettazione(f: &Facts<'_>) -> Notice {
    let mut lines = intro(f, "il messaggio");
    lines.push(String::new());
    lines.push("Il messaggio è stato accettato dal sistema ed inoltrato.".into());
    lines.push(id_line(f));
    lines.push("L'allegato daticert.xml contiene i dati di certificazione.".into());
    Notice {
        title: "Ricevuta di accettazione".into(),
        lines,
    }
}

/// Avviso di non accettazione (formal reason or virus).
pub fn non_accettazione(f: &Facts<'_>, reason: &str, virus: bool) -> Notice {
    let mut lines = intro(f, "nel messaggio");
    lines.push(String::new());
    if virus {
        lines.push(format!("è stato rilevato un virus: {reason}."));
    } else {
        lines.push(format!("è stato rilevato un problema: {reason}."));
    }
    lines.push("Il messaggio non è stato accettato e non è stato inoltrato.".into());
    lines.push(id_line(f));
    Notice {
        title: if virus {
            "Avviso di non accettazione per virus".into()
        } else {
            "Avviso di non accettazione".into()
        },
        lines,
    }
}

/// Busta di trasporto.
pub fn busta_trasporto(f: &Facts<'_>) -> Notice {
    let mut lines = intro(f, "è stato inviato il messaggio");
    lines.push(String::new());
    lines.push("Il messaggio originale è incluso in allegato (postacert.eml).".into());
    lines.push(id_line(f));
    Notice {
        title: "Messaggio di posta certificata".into(),
        lines,
    }
}

/// Ricevuta di presa in carico.
pub fn presa_in_carico(f: &Facts<'_>, gestore: &str, ricezione: &[String]) -> Notice {
    let mut lines = intro(f, "il messaggio");
    lines.push(String::new());
    lines.push(format!(
        "Il messaggio è stato preso in carico dal gestore {gestore} per i destinatari:"
    ));
    lines.extend(ricezione.iter().cloned());
    lines.push(id_line(f));
    Notice {
        title: "Ricevuta di presa in carico".into(),
        lines,
    }
}

/// Busta di anomalia.
pub fn anomalia(
    time: &PecTime,
    oggetto: &str,
    from: &str,
    to: &[String],
    security: bool,
) -> Notice {
    let mut lines = vec![
        format!(
            "Il giorno {} alle ore {} ({}) è stato ricevuto il messaggio",
            time.giorno(),
            time.ora(),
            time.zona()
        ),
        format!("\"{oggetto}\" proveniente da \"{from}\""),
        "indirizzato a:".to_string(),
    ];
    lines.extend(to.iter().cloned());
    lines.push(String::new());
    if security {
        lines.push(
            "Il messaggio non ha superato i controlli di sicurezza previsti per la posta \
             certificata (firma del gestore non valida o non verificabile)."
                .into(),
        );
    } else {
        lines.push("Il messaggio non è un messaggio di posta certificata valido.".into());
    }
    lines.push("Se ne verifichino provenienza e contenuto prima di farvi affidamento.".into());
    lines.push("Il messaggio originale è incluso in allegato (postacert.eml).".into());
    Notice {
        title: "Anomalia nel messaggio".into(),
        lines,
    }
}

/// Avviso di rilevazione virus.
pub fn rilevazione_virus(
    f: &Facts<'_>,
    gestore: &str,
    detail: &str,
    affected: &[String],
) -> Notice {
    let mut lines = intro(f, "nel messaggio");
    lines.push(String::new());
    lines.push(format!(
        "il gestore {gestore} ha rilevato un virus: {detail}."
    ));
    lines.push("Il messaggio non è stato consegnato ai destinatari:".into());
    lines.extend(affected.iter().cloned());
    lines.push(id_line(f));
    Notice {
        title: "Avviso di rilevazione virus".into(),
        lines,
    }
}

/// Ricevuta di avvenuta consegna.
pub fn avvenuta_consegna(f: &Facts<'_>, consegna: &str, form: &TipoRicevuta) -> Notice {
    let mut lines = intro(f, "il messaggio");
    lines.push(String::new());
    lines.push(format!(
        "Il messaggio è stato consegnato nella casella di destinazione \"{consegna}\"."
    ));
    lines.push(id_line(f));
    match form {
        TipoRicevuta::Completa => {
            lines.push("Il messaggio originale è incluso in allegato (postacert.eml).".into())
        }
        TipoRicevuta::Breve => lines.push(
            "Il messaggio originale è incluso in allegato (postacert.eml), con ogni allegato \
             sostituito dalla sua impronta SHA-256."
                .into(),
        ),
        _ => {}
    }
    Notice {
        title: "Ricevuta di avvenuta consegna".into(),
        lines,
    }
}

/// Avviso di mancata consegna (also for virus).
pub fn mancata_consegna(f: &Facts<'_>, consegna: &str, errore_esteso: &str, virus: bool) -> Notice {
    let mut lines = intro(f, "nel messaggio");
    lines.push(String::new());
    lines.push(format!("per il destinatario \"{consegna}\""));
    if virus {
        lines.push(format!("è stato rilevato un virus: {errore_esteso}"));
    } else {
        lines.push(format!(
            "è stato rilevato il seguente errore: {errore_esteso}"
        ));
    }
    lines.push("Il messaggio non è stato consegnato a questo destinatario.".into());
    lines.push(id_line(f));
    Notice {
        title: if virus {
            "Avviso di mancata consegna per virus".into()
        } else {
            "Avviso di mancata consegna".into()
        },
        lines,
    }
}

/// Avviso di mancata consegna per superamento dei tempi massimi.
pub fn mancata_consegna_tempo(
    f: &Facts<'_>,
    consegna: &str,
    final_notice: bool,
    errore_esteso: &str,
) -> Notice {
    let mut lines = intro(f, "il messaggio");
    lines.push(String::new());
    if final_notice {
        lines.push(format!(
            "Entro 24 ore dall'invio non è pervenuta la ricevuta di avvenuta consegna per il \
             destinatario \"{consegna}\": il messaggio è da considerarsi non consegnato."
        ));
    } else {
        lines.push(format!(
            "Entro 12 ore dall'invio non è pervenuta né la ricevuta di presa in carico né quella \
             di avvenuta consegna per il destinatario \"{consegna}\": il gestore del destinatario \
             potrebbe non essere in grado di consegnare il messaggio."
        ));
    }
    lines.push(format!("Dettaglio: {errore_esteso}"));
    lines.push(id_line(f));
    Notice {
        title: "Avviso di mancata consegna per superamento dei tempi massimi".into(),
        lines,
    }
}
