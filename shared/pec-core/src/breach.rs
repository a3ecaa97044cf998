//! Password protection (issue #18; plans with `password_protection`): a password is checked
//! against breach data when it is set or changed, by the **k-anonymity range method** of
//! Pwned Passwords (haveibeenpwned.com/API/v3, "Searching by range"): only the first five hex
//! digits of the password's SHA-1 leave the provider; the answer lists every known suffix of
//! that prefix with how often it was seen (`SUFFIX:COUNT`, one per line), and the match is
//! made here. This module is the pure part: the key, the parsing of a range, the count's band,
//! and the monthly report's text. The `BreachSource` port fetches a range
//! (`pec_ports::breach`).
//!
//! A range that cannot be read is an error, never "not found": a check that failed must not
//! pass a password as clean. Padding entries (count 0, from `Add-Padding: true`) are ignored.

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Europe::Rome;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// Hex digits of the SHA-1 that are sent (the range's prefix).
pub const PREFIX_LEN: usize = 5;
/// Hex digits of the SHA-1 matched locally.
pub const SUFFIX_LEN: usize = 40 - PREFIX_LEN;

/// The two halves of a password's SHA-1 (upper-case hex): the prefix that is asked for and
/// the suffix looked for in the answer.
#[derive(Clone, PartialEq, Eq)]
pub struct RangeKey {
    pub prefix: String,
    pub suffix: String,
}

impl std::fmt::Debug for RangeKey {
    // A breached password's SHA-1 is as good as the password: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RangeKey(..)")
    }
}

/// The range key of `password` (its UTF-8 bytes, as the list was hashed).
pub fn range_key(password: &str) -> RangeKey {
    let hex: String = Sha1::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    RangeKey {
        prefix: hex[..PREFIX_LEN].to_string(),
        suffix: hex[PREFIX_LEN..].to_string(),
    }
}

/// Why a range answer was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("the breach range is empty")]
    Empty,
    #[error("line {line} of the breach range is not SUFFIX:COUNT ({reason})")]
    Malformed { line: usize, reason: &'static str },
}

/// The entries of a range answer (`SUFFIX:COUNT` lines, CRLF or LF), suffixes upper-case,
/// padding (count 0) dropped. Blank lines are skipped; anything else malformed is an error,
/// and so is an answer with no entry at all (every real prefix has hundreds).
pub fn parse_range(body: &str) -> Result<Vec<(String, u64)>, RangeError> {
    let mut entries = Vec::new();
    let mut seen = 0usize;
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason| RangeError::Malformed {
            line: i + 1,
            reason,
        };
        let (suffix, count) = line.split_once(':').ok_or_else(|| bad("no colon"))?;
        if suffix.len() != SUFFIX_LEN || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the suffix is not 35 hex digits"));
        }
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a number"))?;
        seen += 1;
        if count > 0 {
            entries.push((suffix.to_ascii_uppercase(), count));
        }
    }
    if seen == 0 {
        return Err(RangeError::Empty);
    }
    Ok(entries)
}

/// How often the password of `key` was seen in the range `body` (0: not in it).
pub fn count_in(body: &str, key: &RangeKey) -> Result<u64, RangeError> {
    Ok(parse_range(body)?
        .into_iter()
        .find(|(suffix, _)| *suffix == key.suffix)
        .map_or(0, |(_, count)| count))
}

/// How often a password was seen, as recorded and reported: never the exact count (with the
/// prefix, an exact count can pin the hash down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Band {
    /// 1 to 9 times.
    #[serde(rename = "1-9")]
    Few,
    /// 10 to 999 times.
    #[serde(rename = "10-999")]
    Many,
    /// 1000 times or more.
    #[serde(rename = "1000+")]
    Common,
}

impl Band {
    /// The band of `count` (`None` for 0: not breached).
    pub fn of(count: u64) -> Option<Band> {
        match count {
            0 => None,
            1..=9 => Some(Band::Few),
            10..=999 => Some(Band::Many),
            _ => Some(Band::Common),
        }
    }

    /// Italian, for the report.
    pub fn it(self) -> &'static str {
        match self {
            Band::Few => "meno di 10 volte",
            Band::Many => "tra 10 e 999 volte",
            Band::Common => "1000 volte o più",
        }
    }

    /// English, for the report and API answers.
    pub fn en(self) -> &'static str {
        match self {
            Band::Few => "fewer than 10 times",
            Band::Many => "10 to 999 times",
            Band::Common => "1000 times or more",
        }
    }
}

/// Where a password was being set when the check found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// The tenant's administrator creating the mailbox (`POST /v1/mailboxes`).
    AdminCreate,
    /// The provider's operator (`pec mailbox create`).
    OperatorCreate,
    /// The member activating the mailbox with the one-time link.
    Activation,
    /// The member choosing a new password with the reset link of a spam lock.
    Reset,
}

impl Setting {
    /// Its name as stored (the serde name): part of a finding's key.
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::AdminCreate => "admin-create",
            Setting::OperatorCreate => "operator-create",
            Setting::Activation => "activation",
            Setting::Reset => "reset",
        }
    }

    fn it(self) -> &'static str {
        match self {
            Setting::AdminCreate => "scelta dall'amministratore alla creazione della casella",
            Setting::OperatorCreate => "scelta dal gestore alla creazione della casella",
            Setting::Activation => "scelta all'attivazione della casella",
            Setting::Reset => "scelta con il collegamento di ripristino dopo un blocco",
        }
    }

    fn en(self) -> &'static str {
        match self {
            Setting::AdminCreate => "chosen by the administrator when the mailbox was created",
            Setting::OperatorCreate => "chosen by the provider when the mailbox was created",
            Setting::Activation => "chosen when the mailbox was activated",
            Setting::Reset => "chosen with the reset link after a lock",
        }
    }
}

/// One refused password, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub at: DateTime<Utc>,
    pub setting: Setting,
    pub band: Band,
}

/// Italian month names (`chrono` formats English only).
const MESI: [&str; 12] = [
    "gennaio",
    "febbraio",
    "marzo",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "agosto",
    "settembre",
    "ottobre",
    "novembre",
    "dicembre",
];

/// Entries a report lists; more are summed up in one line (a link holder could pile up
/// refusals; the report stays readable and small).
pub const REPORT_MAX_ENTRIES: usize = 20;

/// The period a report covers: a whole month (Italian civil time), or a preview of the
/// current one up to a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The calendar month that starts at this instant (Europe/Rome).
    Month(DateTime<Utc>),
    /// From this month's start to `to`.
    Preview {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

impl Period {
    fn it(self) -> String {
        match self {
            Period::Month(start) => {
                let r = start.with_timezone(&Rome);
                format!("{} {}", MESI[r.month0() as usize], r.year())
            }
            Period::Preview { from, to } => format!(
                "dal {} al {} (rapporto provvisorio)",
                from.with_timezone(&Rome).format("%d/%m/%Y"),
                to.with_timezone(&Rome).format("%d/%m/%Y %H:%M")
            ),
        }
    }

    fn en(self) -> String {
        match self {
            Period::Month(start) => start.with_timezone(&Rome).format("%B %Y").to_string(),
            Period::Preview { from, to } => format!(
                "{} to {} (interim report)",
                from.with_timezone(&Rome).format("%d/%m/%Y"),
                to.with_timezone(&Rome).format("%d/%m/%Y %H:%M")
            ),
        }
    }
}

/// The report's subject.
pub fn report_subject(mailbox: &str, period: Period) -> String {
    match period {
        Period::Month(_) => format!(
            "Protezione password: rapporto di {} per {mailbox}",
            period.it()
        ),
        Period::Preview { .. } => {
            format!("Protezione password: rapporto provvisorio per {mailbox}")
        }
    }
}

/// The report's text (Italian, then English; CRLF): what was found in `period`, oldest first
/// (at most [`REPORT_MAX_ENTRIES`] listed), and the remediation steps. `findings` is never
/// empty.
pub fn report_text(mailbox: &str, provider: &str, period: Period, findings: &[Finding]) -> String {
    let when = |t: DateTime<Utc>| t.with_timezone(&Rome).format("%d/%m/%Y %H:%M").to_string();
    let n = findings.len();
    let listed = &findings[..n.min(REPORT_MAX_ENTRIES)];
    let rest = n - listed.len();
    let mut it = format!(
        "Rapporto di protezione password della casella PEC\r\n\r\n    {mailbox}\r\n\r\n\
         Periodo: {}.\r\n\r\nOgni password scelta per questa casella viene confrontata con gli \
         archivi di password trafugate in violazioni note (Pwned Passwords). Al servizio che \
         custodisce quegli archivi non arrivano né la password né la sua impronta completa: il \
         confronto usa il metodo k-anonymity, che invia solo le prime 5 cifre dell'impronta \
         SHA-1.\r\n\r\n{}\r\n\r\n",
        period.it(),
        if n == 1 {
            "Nel periodo è stata rifiutata 1 password perché già presente in quegli archivi:"
                .to_string()
        } else {
            format!(
                "Nel periodo sono state rifiutate {n} password perché già presenti in quegli archivi:"
            )
        },
    );
    for f in listed {
        it.push_str(&format!(
            "  - {} (ora italiana): password {}, presente {}\r\n",
            when(f.at),
            f.setting.it(),
            f.band.it()
        ));
    }
    if rest > 0 {
        it.push_str(&format!("  - e altri {rest} tentativi\r\n"));
    }
    it.push_str(
        "\r\nNessuna di queste password è stata accettata per la casella.\r\n\r\n\
         Cosa fare:\r\n\
         1. Se una di queste password è usata per altri servizi, la cambi subito anche lì: chi \
         l'ha trovata in una violazione può provarla ovunque.\r\n\
         2. Usi per la PEC una password lunga (almeno 12 caratteri, meglio una frase) che non usa \
         altrove; un programma per la gestione delle password (password manager) aiuta a \
         ricordarle.\r\n\
         3. Se non riconosce uno di questi tentativi, avvisi l'amministratore della casella e \
         controlli che il suo computer e il suo telefono siano puliti.\r\n\
         4. Non comunichi mai la password a nessuno: il gestore non la chiede, né per posta né \
         per telefono.\r\n\r\n\
         Messaggio inviato automaticamente: le risposte non vengono lette. Per assistenza si \
         rivolga all'amministratore della casella.\r\n",
    );
    let mut en = format!(
        "\r\n-- English --\r\n\r\nPassword-protection report of the PEC mailbox {mailbox}, \
         {}.\r\n\r\nEvery password chosen for this mailbox is compared with passwords exposed \
         in known data breaches (Pwned Passwords) by the k-anonymity range method: only the \
         first 5 hex digits of its SHA-1 are sent to that service.\r\n\r\n{}\r\n\r\n",
        period.en(),
        if n == 1 {
            "1 password was refused because it is in that data:".to_string()
        } else {
            format!("{n} passwords were refused because they are in that data:")
        },
    );
    for f in listed {
        en.push_str(&format!(
            "  - {} (Italian time): a password {}, seen {}\r\n",
            when(f.at),
            f.setting.en(),
            f.band.en()
        ));
    }
    if rest > 0 {
        en.push_str(&format!("  - and {rest} more attempts\r\n"));
    }
    en.push_str(
        "\r\nNone of these passwords was accepted for the mailbox.\r\n\r\n\
         What to do:\r\n\
         1. If you use one of these passwords anywhere else, change it there now.\r\n\
         2. Use a long password (12 characters or more, a phrase is best) for PEC alone; a \
         password manager helps.\r\n\
         3. If you do not recognise an attempt, tell the mailbox's administrator and check your \
         computer and phone.\r\n\
         4. Never give your password to anyone: the provider never asks for it.\r\n\r\n\
         This message is sent automatically: replies are not read. For help, ask the mailbox's \
         administrator.\r\n",
    );
    format!(
        "{it}{en}\r\n{provider}\r\nBreach data: Pwned Passwords (haveibeenpwned.com), CC BY 4.0.\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // SHA-1("password") = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8, the API's own example.
    #[test]
    fn the_key_splits_the_upper_case_sha1() {
        let k = range_key("password");
        assert_eq!(k.prefix, "5BAA6");
        assert_eq!(k.suffix, "1E4C9B93F3F0682250B6CF8331B7EE68FD8");
        assert_eq!(format!("{k:?}"), "RangeKey(..)");
    }

    #[test]
    fn a_range_is_read_with_its_padding_dropped() {
        let body = "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n\
                    1e4c9b93f3f0682250b6cf8331b7ee68fd8:10437277\r\n\
                    011053FD0102E94D6AE2F8B83D76FAF94F6:0\r\n";
        let k = range_key("password");
        assert_eq!(count_in(body, &k), Ok(10437277));
        assert_eq!(parse_range(body).unwrap().len(), 2);
        let other = range_key("a password nobody has used, 2026");
        assert_eq!(count_in(body, &other), Ok(0));
        // Padding alone: a real (if unlucky) answer, nothing found.
        assert_eq!(
            count_in("011053FD0102E94D6AE2F8B83D76FAF94F6:0\n", &k),
            Ok(0)
        );
    }

    #[test]
    fn a_range_that_cannot_be_read_is_an_error_not_clean() {
        let k = range_key("password");
        assert_eq!(count_in("", &k), Err(RangeError::Empty));
        assert_eq!(count_in("\r\n\r\n", &k), Err(RangeError::Empty));
        for (body, line) in [
            ("<html>rate limited</html>", 1),
            ("0018A45C4D1DEF81644B54AB7F969B88D65:1\nnot-hex:2", 2),
            ("0018A45C4D1DEF81644B54AB7F969B88D65:many", 1),
            ("0018A45C4D1DEF81644B54AB7F969B88D6:1", 1),
        ] {
            match count_in(body, &k) {
                Err(RangeError::Malformed { line: l, .. }) => assert_eq!(l, line, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn bands_hide_the_exact_count() {
        assert_eq!(Band::of(0), None);
        assert_eq!(Band::of(1), Some(Band::Few));
        assert_eq!(Band::of(9), Some(Band::Few));
        assert_eq!(Band::of(10), Some(Band::Many));
        assert_eq!(Band::of(999), Some(Band::Many));
        assert_eq!(Band::of(1000), Some(Band::Common));
        assert_eq!(serde_json::to_string(&Band::Common).unwrap(), "\"1000+\"");
        for setting in [
            Setting::AdminCreate,
            Setting::OperatorCreate,
            Setting::Activation,
            Setting::Reset,
        ] {
            assert_eq!(
                serde_json::to_string(&setting).unwrap(),
                format!("\"{}\"", setting.as_str())
            );
        }
    }

    #[test]
    fn the_report_lists_each_finding_and_the_remedies() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let october = Period::Month(at("2026-09-30T22:00:00Z"));
        let finding = |t: &str, setting, band| Finding {
            at: at(t),
            setting,
            band,
        };
        let text = report_text(
            "mario.rossi@pec.example.it",
            "PEC Example S.p.A.",
            october,
            &[
                finding("2026-10-05T08:30:00Z", Setting::Activation, Band::Common),
                finding("2026-10-30T23:15:00Z", Setting::Reset, Band::Few),
            ],
        );
        assert!(text.contains("Periodo: ottobre 2026."), "{text}");
        assert!(text.contains("October 2026"), "{text}");
        assert!(text.contains("sono state rifiutate 2 password"), "{text}");
        assert!(text.contains("05/10/2026 10:30 (ora italiana): password scelta all'attivazione della casella, presente 1000 volte o più"), "{text}");
        // 23:15 UTC on the 30th is the 31st in Rome (CET after the change).
        assert!(text.contains("31/10/2026 00:15"), "{text}");
        assert!(text.contains("Cosa fare:") && text.contains("What to do:"));
        assert!(text.contains("CC BY 4.0") && text.contains("le risposte non vengono lette"));
        assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
        assert!(text.lines().all(|l| l.len() < 400));
        assert_eq!(
            report_subject("mario.rossi@pec.example.it", october),
            "Protezione password: rapporto di ottobre 2026 per mario.rossi@pec.example.it"
        );
        // One finding: singular.
        let one = report_text(
            "a@b.it",
            "P",
            october,
            &[finding(
                "2026-10-05T08:30:00Z",
                Setting::AdminCreate,
                Band::Many,
            )],
        );
        assert!(
            one.contains("è stata rifiutata 1 password") && one.contains("1 password was refused"),
            "{one}"
        );
        // Many: at most REPORT_MAX_ENTRIES listed, the rest counted.
        let many: Vec<Finding> = (0..25)
            .map(|i| Finding {
                at: at("2026-10-05T08:30:00Z") + chrono::Duration::minutes(i),
                setting: Setting::Activation,
                band: Band::Few,
            })
            .collect();
        let long = report_text("a@b.it", "P", october, &many);
        assert_eq!(long.matches("(ora italiana)").count(), REPORT_MAX_ENTRIES);
        assert!(long.contains("e altri 5 tentativi") && long.contains("and 5 more attempts"));
        let preview = Period::Preview {
            from: at("2026-11-30T23:00:00Z"),
            to: at("2026-12-07T09:00:00Z"),
        };
        assert!(
            report_text("a@b.it", "P", preview, &many[..1])
                .contains("Periodo: dal 01/12/2026 al 07/12/2026 10:00 (rapporto provvisorio).")
        );
    }
}
