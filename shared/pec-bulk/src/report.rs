//! The job's report: one line per row of the list (sent or set aside), as CSV, whole or only
//! the failures. The state of each recipient is computed by the pipeline from the message's
//! records (as `GET /v1/messages/{id}` does); here it is only put in words.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Where one row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Set aside before sending (the list or the template).
    Skipped,
    /// Not submitted yet (the job is running or paused).
    Waiting,
    /// Submitted; the access point has not answered yet.
    Pending,
    /// Not accepted by our access point (avviso di non accettazione).
    Rejected,
    /// Not accepted: a virus (avviso di non accettazione per virus).
    Virus,
    /// Sent on to the recipient's provider; nothing back yet.
    Dispatched,
    /// The recipient's provider took it in charge.
    TakenInCharge,
    /// No delivery receipt after 12 hours (not final).
    Timeout12h,
    /// No delivery receipt after 24 hours (final).
    Timeout24h,
    Delivered,
    NotDelivered,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Skipped => "skipped",
            State::Waiting => "waiting",
            State::Pending => "pending",
            State::Rejected => "rejected",
            State::Virus => "virus",
            State::Dispatched => "dispatched",
            State::TakenInCharge => "taken-in-charge",
            State::Timeout12h => "timeout-12h",
            State::Timeout24h => "timeout-24h",
            State::Delivered => "delivered",
            State::NotDelivered => "not-delivered",
        }
    }

    /// Ended without delivery.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            State::Skipped
                | State::Rejected
                | State::Virus
                | State::Timeout24h
                | State::NotDelivered
        )
    }

    /// No later receipt changes it.
    pub fn is_final(self) -> bool {
        self.is_failure() || self == State::Delivered
    }
}

/// The recipient's kind, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Pec,
    Ordinary,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub row: usize,
    pub address: String,
    pub kind: Option<Kind>,
    pub submission: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub state: State,
    /// A reason code (`unknown-user`, `mailbox-full`...) or, for a row set aside, the reason.
    pub reason: Option<String>,
    /// When `state` was reached.
    pub at: Option<DateTime<Utc>>,
}

/// A failure's reason in words, as the sender reads it.
pub fn in_words(state: State, reason: Option<&str>) -> String {
    let code = reason.unwrap_or_default();
    match (state, code) {
        (State::Skipped, r) => format!("non inviato: {r}"),
        (State::Virus, _) => "virus: messaggio non accettato".into(),
        (State::Rejected, "") => "messaggio non accettato".into(),
        (State::Rejected, r) => format!("messaggio non accettato: {r}"),
        (State::Timeout24h, _) => {
            "tempo massimo superato: nessuna ricevuta di consegna in 24 ore".into()
        }
        (State::Timeout12h, _) => "nessuna ricevuta di consegna dopo 12 ore (in attesa)".into(),
        (State::NotDelivered, "unknown-user") => "indirizzo errato: casella inesistente".into(),
        (State::NotDelivered, "unknown-domain") => "indirizzo errato: dominio inesistente".into(),
        (State::NotDelivered, "mailbox-full") => "casella piena".into(),
        (State::NotDelivered, "mailbox-disabled") => "casella disattivata".into(),
        (State::NotDelivered, "refused") => "rifiutato dal server del destinatario".into(),
        (State::NotDelivered, "reported-by-provider") => {
            "mancata consegna segnalata dal gestore del destinatario".into()
        }
        (State::NotDelivered, "virus") => "virus: mancata consegna".into(),
        (State::NotDelivered, "") => "mancata consegna".into(),
        (State::NotDelivered, r) => format!("mancata consegna: {r}"),
        _ => String::new(),
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The report as CSV (UTF-8, `,`, a header row), every line or only the failures.
pub fn to_csv(lines: &[Line], failures_only: bool) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "row",
        "address",
        "kind",
        "submission_id",
        "submitted_at",
        "accepted_at",
        "outcome",
        "reason",
        "outcome_at",
    ];
    // Writing into a Vec cannot fail.
    let _ = w.write_record(header);
    for l in lines
        .iter()
        .filter(|l| !failures_only || l.state.is_failure())
    {
        let kind = match l.kind {
            Some(Kind::Pec) => "pec",
            Some(Kind::Ordinary) => "ordinary",
            None => "",
        };
        let _ = w.write_record([
            l.row.to_string().as_str(),
            &l.address,
            kind,
            l.submission.as_deref().unwrap_or_default(),
            &time(l.submitted_at),
            &time(l.accepted_at),
            l.state.as_str(),
            &in_words(l.state, l.reason.as_deref()),
            &time(l.at),
        ]);
    }
    w.into_inner().unwrap_or_default()
}

/// Counts by state, for progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub rows: usize,
    pub skipped: usize,
    pub submitted: usize,
    pub delivered: usize,
    pub failed: usize,
    /// Rows whose state is final (delivered or failed, skipped included).
    pub settled: usize,
}

pub fn totals(lines: &[Line]) -> Totals {
    let mut t = Totals {
        rows: lines.len(),
        ..Totals::default()
    };
    for l in lines {
        match l.state {
            State::Skipped => t.skipped += 1,
            State::Waiting => {}
            _ => t.submitted += 1,
        }
        if l.state == State::Delivered {
            t.delivered += 1;
        }
        if l.state.is_failure() && l.state != State::Skipped {
            t.failed += 1;
        }
        if l.state.is_final() {
            t.settled += 1;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(row: usize, state: State, reason: Option<&str>) -> Line {
        Line {
            row,
            address: format!("r{row}@x.it"),
            kind: Some(Kind::Pec),
            submission: Some(format!("id-{row}")),
            submitted_at: Some(DateTime::<Utc>::UNIX_EPOCH),
            accepted_at: None,
            state,
            reason: reason.map(Into::into),
            at: None,
        }
    }

    #[test]
    fn csv_whole_and_failures_only() {
        let lines = [
            line(2, State::Delivered, None),
            line(3, State::NotDelivered, Some("mailbox-full")),
            line(4, State::Skipped, Some("\"x\" is not an e-mail address")),
            line(5, State::Timeout24h, None),
        ];
        let all = String::from_utf8(to_csv(&lines, false)).unwrap();
        assert_eq!(all.lines().count(), 5);
        assert!(all.starts_with("row,address,kind,submission_id,"));
        let failed = String::from_utf8(to_csv(&lines, true)).unwrap();
        let rows: Vec<&str> = failed.lines().skip(1).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].contains("casella piena"));
        assert!(rows[1].contains("\"non inviato: \"\"x\"\" is not an e-mail address\""));
        assert!(rows[2].contains("tempo massimo superato"));
        let t = totals(&lines);
        assert_eq!(
            t,
            Totals {
                rows: 4,
                skipped: 1,
                submitted: 3,
                delivered: 1,
                failed: 2,
                settled: 4
            }
        );
    }
}
