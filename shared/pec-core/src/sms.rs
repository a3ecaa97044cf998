//! The texts of the provider's SMS: the notice of a new PEC, the digest of a burst, the reset
//! link of a spam-locked mailbox.
//!
//! An SMS of at most 160 characters of the GSM 03.38 basic alphabet is one message; one
//! character outside it turns the whole text into UCS-2, where a message holds 70. So what
//! comes from mail (sender, subject) is folded to that alphabet first: transliterated to ASCII
//! (`deunicode`: `Città` -> `Citta`), control characters and line breaks made spaces, runs of
//! spaces collapsed, and the few ASCII characters the basic alphabet lacks replaced (`[` -> `(`,
//! `|` -> `/`...). Our own words use only the basic alphabet (the Italian accented letters
//! `àèéìòù` are in it). Then the notice is cut to [`SEGMENT`] characters on a character
//! boundary, the subject first, with `...` where it was cut. Nothing of a message's content but
//! its sender and subject ever goes into an SMS.
//!
//! The reset text is not cut: a link must arrive whole (it becomes a concatenated SMS).

use chrono::{DateTime, Utc};
use chrono_tz::Europe::Rome;

/// Characters of one SMS in the GSM 03.38 basic alphabet.
pub const SEGMENT: usize = 160;

/// The GSM 03.38 basic alphabet (3GPP TS 23.038 §6.2.1), except the escape to the extension
/// table, line feed and carriage return (never used here).
const GSM_BASIC: &str = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// Whether `c` is in the GSM 03.38 basic alphabet (one character of [`SEGMENT`]).
pub fn is_gsm_basic(c: char) -> bool {
    GSM_BASIC.contains(c)
}

/// Text from mail folded to the basic alphabet, on one line, trimmed.
pub fn fold(text: &str) -> String {
    let ascii = deunicode::deunicode_with_tofu(text, "?");
    let mut out = String::with_capacity(ascii.len());
    for c in ascii.chars() {
        let c = match c {
            '[' | '{' => '(',
            ']' | '}' => ')',
            '\\' | '|' => '/',
            '^' => '\'',
            '~' => '-',
            '`' => '\'',
            c if c.is_control() || c.is_whitespace() => ' ',
            c if is_gsm_basic(c) => c,
            _ => '?',
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// `text` in at most `max` characters: whole, or its first `max - 3` and `...`.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    if max <= 3 {
        return ".".repeat(max);
    }
    let mut out: String = text.chars().take(max - 3).collect();
    out.truncate(out.trim_end().len());
    out.push_str("...");
    out
}

/// Longest a mailbox or sender address may take in a notice before it is cut.
const ADDRESS_MAX: usize = 50;

/// The subject without links: whoever sends mail chooses it, and an SMS from the provider must
/// never carry a link someone else wrote (the reset SMS teaches people to open ours). A word
/// with `://`, one starting with `www.`, and a dotted name followed by a path become `(link)`.
fn without_links(subject: &str) -> String {
    subject
        .split(' ')
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            let link = lower.contains("://")
                || lower.starts_with("www.")
                || lower
                    .split_once('/')
                    .is_some_and(|(host, _)| host.contains('.') && !host.ends_with('.'));
            if link { "(link)" } else { word }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `head` + the subject cut to what is left of one SMS.
fn with_subject(head: String, subject: &str) -> String {
    let subject = without_links(&fold(subject));
    let subject = if subject.is_empty() {
        "(senza oggetto)".to_string()
    } else {
        subject
    };
    let room = SEGMENT.saturating_sub(head.chars().count());
    format!("{head}{}", cut(&subject, room))
}

/// The notice of one new PEC in `mailbox`: `PEC per <mailbox> da <sender>: <subject>`, one SMS.
pub fn new_pec(mailbox: &str, sender: &str, subject: &str) -> String {
    let head = format!(
        "PEC per {} da {}: ",
        cut(&fold(mailbox), ADDRESS_MAX),
        cut(&fold(sender), ADDRESS_MAX)
    );
    with_subject(head, subject)
}

/// The notice of ordinary (non-PEC) mail in `mailbox`, for a mailbox that asked for it.
pub fn new_ordinary(mailbox: &str, sender: &str, subject: &str) -> String {
    let head = format!(
        "Posta ordinaria per {} da {}: ",
        cut(&fold(mailbox), ADDRESS_MAX),
        cut(&fold(sender), ADDRESS_MAX)
    );
    with_subject(head, subject)
}

/// The digest of a burst: `count` messages (more than one) arrived in `mailbox` since `since`;
/// the last one is named. One SMS.
pub fn digest(
    mailbox: &str,
    count: usize,
    since: DateTime<Utc>,
    last_sender: &str,
    last_subject: &str,
) -> String {
    let head = format!(
        "{count} nuovi messaggi per {} dalle {}. L'ultimo da {}: ",
        cut(&fold(mailbox), ADDRESS_MAX),
        since.with_timezone(&Rome).format("%H:%M"),
        cut(&fold(last_sender), ADDRESS_MAX)
    );
    with_subject(head, last_subject)
}

/// The reset link of a spam-locked mailbox (`link` whole; more than one SMS when long).
pub fn reset_link(mailbox: &str, link: &str, expires_at: DateTime<Utc>) -> String {
    format!(
        "La casella PEC {} è stata bloccata perché ha inviato spam (password rubata?). \
         Scelga una nuova password entro il {}: {}",
        fold(mailbox),
        expires_at.with_timezone(&Rome).format("%d/%m/%Y %H:%M"),
        link
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn one_sms(text: &str) {
        assert!(
            text.chars().count() <= SEGMENT,
            "{} chars: {text}",
            text.chars().count()
        );
        assert!(text.chars().all(is_gsm_basic), "not GSM basic: {text}");
    }

    #[test]
    fn a_notice_is_one_sms_of_the_basic_alphabet() {
        let t = new_pec(
            "mario.rossi@pec.example.test",
            "ufficio@pec.comune.example.it",
            "Convocazione assemblea – città di Forlì [urgente] {prot. 12}",
        );
        assert_eq!(
            t,
            "PEC per mario.rossi@pec.example.test da ufficio@pec.comune.example.it: \
             Convocazione assemblea - citta di Forli (urgente) (prot. 12)"
        );
        one_sms(&t);
    }

    #[test]
    fn a_long_subject_is_cut_on_a_character_boundary() {
        let subject = "Ωmega ".repeat(60) + "€ 日本語 fine";
        let t = new_pec("a@b.it", "c@d.it", &subject);
        one_sms(&t);
        assert_eq!(t.chars().count(), SEGMENT);
        assert!(t.ends_with("..."), "{t}");
    }

    #[test]
    fn line_breaks_and_controls_never_reach_the_text() {
        let t = new_pec(
            "a@b.it",
            "c@d.it\r\nBcc: x",
            "uno\r\n\tdue\u{0}\u{7}tre   quattro",
        );
        assert_eq!(t, "PEC per a@b.it da c@d.it Bcc: x: uno due tre quattro");
        one_sms(&t);
        assert_eq!(
            new_pec("a@b.it", "c@d.it", " \r\n "),
            "PEC per a@b.it da c@d.it: (senza oggetto)"
        );
    }

    #[test]
    fn links_in_a_subject_never_reach_an_sms() {
        let t = new_pec(
            "a@b.it",
            "c@d.it",
            "Reimposta qui https://evil.example/reset o www.evil.example o evil.example/x Sig.ra Rossi",
        );
        assert_eq!(
            t,
            "PEC per a@b.it da c@d.it: Reimposta qui (link) o (link) o (link) Sig.ra Rossi"
        );
    }

    #[test]
    fn long_addresses_are_cut_and_the_subject_still_fits() {
        let long = format!("{}@{}.it", "x".repeat(120), "y".repeat(60));
        let t = new_ordinary(&long, &long, "oggetto");
        one_sms(&t);
        assert!(t.contains("oggetto"), "{t}");
    }

    #[test]
    fn digest_names_the_count_the_time_in_italy_and_the_last() {
        let since = Utc.with_ymd_and_hms(2026, 7, 1, 8, 5, 0).unwrap();
        let t = digest("a@b.it", 4, since, "c@d.it", "Ultimo");
        assert_eq!(
            t,
            "4 nuovi messaggi per a@b.it dalle 10:05. L'ultimo da c@d.it: Ultimo"
        );
        one_sms(&t);
    }

    #[test]
    fn the_reset_link_is_whole() {
        let link = format!("https://pec.example.test/attiva#{}", "A".repeat(43));
        let at = Utc.with_ymd_and_hms(2026, 12, 6, 21, 30, 0).unwrap();
        let t = reset_link("a@b.it", &link, at);
        assert!(t.ends_with(&link), "{t}");
        assert!(t.contains("entro il 06/12/2026 22:30"), "{t}");
        assert!(t.chars().all(is_gsm_basic), "{t}");
    }
}
