//! `pec inspect FILE [--json]`: say what a message is (transport envelope, each receipt and
//! notice kind, anomaly envelope, ordinary mail), with its daticert and the anomalies found.
//!
//! The signature is not verified here (use `pec verify`): only its framing is reported.
//!
//! Exit status: 0 when the file was classified (whatever it is, anomalies included), 1 when it
//! is not an e-mail message at all, 2 when it cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use pec_core::classify::{Anomaly, Classification, PecHeaders, classify};
use pec_core::daticert::Daticert;
use serde::Serialize;

/// Arguments of `pec inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The message (raw RFC 5322 bytes, e.g. an .eml file).
    pub file: PathBuf,
    /// Print the classification and daticert as JSON instead of a readable summary.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document printed by `pec inspect --json`.
#[derive(Serialize)]
struct Report<'a> {
    file: String,
    /// Machine name of the kind (`accettazione`, `busta-trasporto`, `ordinaria`, ...).
    #[serde(rename = "type")]
    kind: &'static str,
    /// Italian description.
    description: &'static str,
    pec: bool,
    headers: &'a PecHeaders,
    daticert: Option<&'a Daticert>,
    signed: Option<SignedReport>,
    postacert_bytes: Option<usize>,
    anomalies: Vec<AnomalyReport<'a>>,
}

#[derive(Serialize)]
struct SignedReport {
    protocol: String,
    micalg: Option<String>,
    content_bytes: usize,
    signature_bytes: Option<usize>,
    verified: bool,
}

#[derive(Serialize)]
struct AnomalyReport<'a> {
    message: String,
    #[serde(flatten)]
    detail: &'a Anomaly,
}

fn report<'a>(file: &str, c: &'a Classification<'_>) -> Report<'a> {
    Report {
        file: file.to_string(),
        kind: c.kind.as_str(),
        description: c.description(),
        pec: c.kind.is_pec(),
        headers: &c.headers,
        daticert: c.daticert.as_ref(),
        signed: c.signed.as_ref().map(|s| SignedReport {
            protocol: s.protocol.clone(),
            micalg: s.micalg.clone(),
            content_bytes: s.content.len(),
            signature_bytes: s.signature.as_ref().map(Vec::len),
            verified: false,
        }),
        postacert_bytes: c.postacert.as_ref().map(|p| p.len()),
        anomalies: c
            .anomalies
            .iter()
            .map(|a| AnomalyReport {
                message: a.to_string(),
                detail: a,
            })
            .collect(),
    }
}

fn opt(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

fn summary(file: &str, c: &Classification<'_>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "File:         {file}");
    let _ = writeln!(s, "Type:         {} ({})", c.kind.as_str(), c.description());
    let _ = writeln!(s, "Subject:      {}", opt(c.headers.subject.as_deref()));
    let _ = writeln!(s, "From:         {}", c.headers.from.join(", "));
    let _ = writeln!(s, "Message-ID:   {}", opt(c.headers.message_id.as_deref()));
    match &c.signed {
        Some(sig) => {
            let _ = writeln!(
                s,
                "Signed:       {}, micalg {}, signed part {} bytes, signature {} (not verified here: use `pec verify`)",
                sig.protocol,
                opt(sig.micalg.as_deref()),
                sig.content.len(),
                sig.signature
                    .as_ref()
                    .map_or("missing or damaged".to_string(), |d| format!(
                        "{} bytes",
                        d.len()
                    ))
            );
        }
        None => {
            let _ = writeln!(s, "Signed:       no");
        }
    }
    if let Some(d) = &c.daticert {
        let _ = writeln!(s, "Daticert:     tipo {}, errore {}", d.tipo, d.errore);
        let i = &d.intestazione;
        let _ = writeln!(s, "  mittente:       {}", i.mittente);
        for dest in &i.destinatari {
            let _ = writeln!(s, "  destinatario:   {} ({})", dest.indirizzo, dest.tipo);
        }
        let _ = writeln!(s, "  risposte:       {}", i.risposte);
        let _ = writeln!(s, "  oggetto:        {}", opt(i.oggetto.as_deref()));
        let x = &d.dati;
        let _ = writeln!(s, "  gestore:        {}", x.gestore_emittente);
        let _ = writeln!(
            s,
            "  data:           {} {} ({})",
            x.data.giorno, x.data.ora, x.data.zona
        );
        let _ = writeln!(s, "  identificativo: {}", x.identificativo);
        let _ = writeln!(s, "  msgid:          {}", opt(x.msgid.as_deref()));
        if let Some(r) = &x.ricevuta {
            let _ = writeln!(s, "  ricevuta:       {r}");
        }
        if let Some(v) = &x.consegna {
            let _ = writeln!(s, "  consegna:       {v}");
        }
        for r in &x.ricezione {
            let _ = writeln!(s, "  ricezione:      {r}");
        }
        if let Some(e) = &x.errore_esteso {
            let _ = writeln!(s, "  errore-esteso:  {e}");
        }
    } else {
        let _ = writeln!(s, "Daticert:     none");
    }
    if let Some(p) = &c.postacert {
        let _ = writeln!(s, "Postacert:    {} bytes (the original message)", p.len());
    }
    if c.anomalies.is_empty() {
        let _ = writeln!(s, "Anomalies:    none");
    } else {
        let _ = writeln!(s, "Anomalies:");
        for a in &c.anomalies {
            let _ = writeln!(s, "  - {a}");
        }
    }
    s
}

/// Run `pec inspect`.
pub fn run(args: InspectArgs) -> ExitCode {
    let file = args.file.display().to_string();
    let raw = match std::fs::read(&args.file) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("pec inspect: cannot read {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let c = classify(&raw);
    if args.json {
        match serde_json::to_string_pretty(&report(&file, &c)) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("pec inspect: cannot encode the report as JSON: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", summary(&file, &c));
    }
    if c.anomalies.contains(&Anomaly::Unparseable) {
        eprintln!("pec inspect: {file} is not an e-mail message (RFC 5322)");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
