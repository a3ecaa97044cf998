//! Every fixed string of the PEC rules, and every choice this crate makes where the rules (as
//! far as they could be read: see `../shared/reference/pec-rules.md`) are silent. Keep them all
//! here, so that each can be changed in one place once the primary text (DM 2-11-2005 annex,
//! RFC 6109, AgID NOTA 12) is checked.
//!
//! # Choices where the rules are silent or unverified
//!
//! | Topic | Choice | Why |
//! |---|---|---|
//! | Identificativo syntax | `YYYYMMDDhhmmssmmm.<token>@<domain>`, UTC ([`crate::ids`]) | Sortable bytewise and across DST; unique by the caller's token; same `local@domain` shape as the real ones. |
//! | User message without `Message-ID` | The access point adds `<token@domain>` (RFC 6409 §8.3 lets a submission server add one), so `msgid`, `X-Riferimento-Message-ID` and every receipt stay well-formed. | A PEC message must be traceable by the user's id; an absent id would leave receipts without `X-Riferimento-Message-ID`. |
//! | Errore for formal non-acceptance | `altro`, with the Italian reason in `errore-esteso` ([`FORMAL_ERRORE`]) | The DTD has no specific value; `altro` + free text is what the DTD offers. |
//! | Delivery receipt for Cc recipients | `completa`/`breve` become `sintetica` ([`effective_receipt_form`]) | Provider guides: the original goes only to primary (To) recipients; the Cc receipt carries only the certification data. |
//! | Breve hash format | Each attachment replaced by `text/plain` `<name>.sha256` holding `<hex sha-256>  <name>` (the `sha256sum` line) — see [`BREVE_HASH_SUFFIX`] | The RT hash format could not be read; SHA-256 resists collisions (SHA-1 does not) and the line checks with `sha256sum -c`. |
//! | Non-delivery codes | [`DeliveryFailure`] table, NOTA 12 style `5.x.y - <provider> - <reason>` | Only `5.1.1 ... indirizzo non valido` was seen; the rest follow RFC 3463 enhanced status codes. |
//! | `errore` of non-delivery | `no-dest` (unknown user), `no-dominio` (unknown domain), `altro` otherwise | The DTD's own meaning of the values; Aruba 2026 sends `altro` for 5.1.1, which the parser accepts too. |
//! | A recipient at another provider refused for good over SMTP | `5.1.1` (or `550` at `RCPT` without an enhanced code) unknown user, `5.1.2`/`5.1.10`/NXDOMAIN unknown domain, `5.2.2` full, `5.2.1` disabled; any other: [`DeliveryFailure::Other`] with the MX's enhanced code (`5.0.0` without one) and [`REFUSED_BY_DESTINATION`]`: <code> <reply>` | RFC 3463 codes mapped onto the NOTA 12 groups; the MX's reply (cleaned, at most 200 chars) tells the sender what the other side said. |
//! | Timeout notices | Both `preavviso-errore-consegna`, `errore="altro"`; `errore-esteso` `4.4.1 - <provider> - ...12 ore` (warning) and `5.4.1 - <provider> - ...24 ore` (final) ([`TimeoutNotice`]) | pagoPA treats Aruba/Namirial `5.4.1` as final; a 4.x code marks the 12 h notice as temporary. |
//! | Presa in carico / rilevazione virus `To` | The sender provider's `mailReceipt` address, passed by the caller (from the provider index) | RFC 6109 / IGPEC schema: `mailReceipt` is where other providers send these. |
//! | Rilevazione virus daticert | `errore="virus"`, one `<ricezione>` per affected recipient, the virus name in `errore-esteso` | The DTD allows several `ricezione` but one `consegna`. |
//! | Anomaly envelope ids | `Message-ID` inherited from the wrapped message (a fresh one if it has none); `X-Riferimento-Message-ID` = the wrapped message's id | Same inheritance as the transport envelope (RT as recalled). |
//! | Subject of a security-failure anomaly | Same `ANOMALIA MESSAGGIO: ` prefix, plus `X-VerificaSicurezza: errore` | "PROBLEMA DI SICUREZZA" as a subject is unconfirmed; the header is the machine-readable signal. |
//! | `X-TipoRicevuta` | Always emitted on transport envelopes and delivery receipts | The RT lists it; receivers must still accept its absence (real receipts omit it). |
//! | Text bodies | UTF-8, quoted-printable, our own Italian wording in [`crate::text`] | Wording differs between providers; UTF-8 carries every subject. |
//! | Size limit | 30 MiB (31 457 280 bytes) for size × recipients ([`DEFAULT_MAX_TOTAL_BYTES`]) | RFC 6109 says 30 MB; MiB is the provider-friendly reading. Configurable. |
//! | Address comparison | ASCII case-insensitive on the whole address ([`crate::addr::same_address`]) | Providers treat mailboxes case-insensitively. |
//! | Subjects and other header text | Control characters (CR, LF, ...) replaced by a space and the result trimmed ([`clean_text`]) before use in headers and daticert | A single-line field; XML 1.0 cannot carry most controls. |

use crate::daticert::{Errore, TipoRicevuta};

/// `From` local part of every receipt, notice and envelope.
pub const POSTA_CERTIFICATA_LOCAL: &str = "posta-certificata";

/// Default limit for size × number of recipients: 30 MiB.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 30 * 1024 * 1024;

/// Header names.
pub mod header {
    /// Receipts and notices.
    pub const X_RICEVUTA: &str = "X-Ricevuta";
    /// Envelopes.
    pub const X_TRASPORTO: &str = "X-Trasporto";
    /// Requested delivery receipt form.
    pub const X_TIPO_RICEVUTA: &str = "X-TipoRicevuta";
    /// The user's original Message-ID.
    pub const X_RIFERIMENTO_MESSAGE_ID: &str = "X-Riferimento-Message-ID";
    /// Anomaly envelope after a failed security check.
    pub const X_VERIFICA_SICUREZZA: &str = "X-VerificaSicurezza";
}

/// Subject prefixes (each followed by the original subject).
pub mod subject {
    /// Ricevuta di accettazione.
    pub const ACCETTAZIONE: &str = "ACCETTAZIONE: ";
    /// Avviso di non accettazione (formal).
    pub const NON_ACCETTAZIONE: &str = "AVVISO DI NON ACCETTAZIONE: ";
    /// Avviso di non accettazione per virus.
    pub const NON_ACCETTAZIONE_VIRUS: &str = "AVVISO DI NON ACCETTAZIONE PER VIRUS: ";
    /// Busta di trasporto.
    pub const POSTA_CERTIFICATA: &str = "POSTA CERTIFICATA: ";
    /// Ricevuta di presa in carico.
    pub const PRESA_IN_CARICO: &str = "PRESA IN CARICO: ";
    /// Busta di anomalia.
    pub const ANOMALIA: &str = "ANOMALIA MESSAGGIO: ";
    /// Avviso di rilevazione virus.
    pub const RILEVAZIONE_VIRUS: &str = "AVVISO DI RILEVAZIONE VIRUS: ";
    /// Ricevuta di avvenuta consegna.
    pub const CONSEGNA: &str = "CONSEGNA: ";
    /// Avviso di mancata consegna.
    pub const MANCATA_CONSEGNA: &str = "AVVISO DI MANCATA CONSEGNA: ";
    /// Avviso di mancata consegna per virus.
    pub const MANCATA_CONSEGNA_VIRUS: &str = "AVVISO DI MANCATA CONSEGNA PER VIRUS: ";
    /// Avviso di mancata consegna per superamento dei tempi massimi (12 h and 24 h).
    pub const MANCATA_CONSEGNA_TEMPO: &str = "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ";
}

/// `errore` of a formal non-acceptance.
pub const FORMAL_ERRORE: Errore = Errore::Altro;

/// Whether a delivered recipient was a primary (`To`) or a copy (`Cc`) recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientRole {
    /// In `To`.
    Primary,
    /// In `Cc`.
    Copy,
}

/// The delivery receipt form actually sent to the sender for one recipient: copy (Cc)
/// recipients get only the certification data (`sintetica`); an unknown requested form falls
/// back to the default `completa`.
pub fn effective_receipt_form(requested: &TipoRicevuta, role: RecipientRole) -> TipoRicevuta {
    match (requested, role) {
        (TipoRicevuta::Sintetica, _) => TipoRicevuta::Sintetica,
        (_, RecipientRole::Copy) => TipoRicevuta::Sintetica,
        (TipoRicevuta::Breve, RecipientRole::Primary) => TipoRicevuta::Breve,
        (_, RecipientRole::Primary) => TipoRicevuta::Completa,
    }
}

/// File name suffix of an attachment replaced by its hash in a `breve` receipt.
pub const BREVE_HASH_SUFFIX: &str = ".sha256";
/// Name used for an attachment without a file name in a `breve` receipt.
pub const BREVE_UNNAMED: &str = "allegato";

/// Why a message could not be delivered to one recipient (NOTA 12 groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// User or mailbox unknown, invalid or revoked.
    UnknownUser,
    /// The recipient domain is not handled here.
    UnknownDomain,
    /// Mailbox temporarily disabled.
    MailboxDisabled,
    /// Mailbox cannot accept this message (e.g. it refuses ordinary mail, or the size).
    MailboxRefuses,
    /// Mailbox full.
    MailboxFull,
    /// Any other reason: an RFC 3463 code and an Italian description.
    Other {
        /// e.g. `5.3.0`.
        code: String,
        /// e.g. `errore di sistema`.
        text: String,
    },
}

impl DeliveryFailure {
    /// `(enhanced status code, Italian reason, errore)`.
    pub fn parts(&self) -> (&str, &str, Errore) {
        match self {
            DeliveryFailure::UnknownUser => ("5.1.1", "indirizzo non valido", Errore::NoDest),
            DeliveryFailure::UnknownDomain => ("5.1.2", "dominio non valido", Errore::NoDominio),
            DeliveryFailure::MailboxDisabled => ("5.2.1", "casella disabilitata", Errore::Altro),
            DeliveryFailure::MailboxRefuses => (
                "5.2.0",
                "casella non abilitata alla ricezione",
                Errore::Altro,
            ),
            DeliveryFailure::MailboxFull => ("5.2.2", "casella piena", Errore::Altro),
            DeliveryFailure::Other { code, text } => (code.as_str(), text.as_str(), Errore::Altro),
        }
    }

    /// The NOTA 12 `errore-esteso`: `<code> - <provider> - <reason>`.
    pub fn errore_esteso(&self, provider_name: &str) -> String {
        let (code, text, _) = self.parts();
        format!("{code} - {provider_name} - {text}")
    }
}

/// The reason of a non-delivery that another provider's MX refused for good without a more
/// specific NOTA 12 group (followed by `: <its code and reply>`).
pub const REFUSED_BY_DESTINATION: &str = "rifiutato dal server di destinazione";

/// Which "superamento dei tempi massimi" notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutNotice {
    /// No presa in carico nor delivery receipt 12 h after dispatch (warning).
    Hours12,
    /// No delivery receipt 24 h after dispatch (final).
    Hours24,
}

impl TimeoutNotice {
    /// The NOTA 12-style `errore-esteso`.
    pub fn errore_esteso(&self, provider_name: &str) -> String {
        match self {
            TimeoutNotice::Hours12 => {
                format!("4.4.1 - {provider_name} - nessuna ricevuta entro 12 ore dall'invio")
            }
            TimeoutNotice::Hours24 => format!(
                "5.4.1 - {provider_name} - nessuna ricevuta di consegna entro 24 ore dall'invio"
            ),
        }
    }
}

/// [`clean_text`] for text another server wrote (an SMTP reply quoted in `errore-esteso` and in
/// the notice): also drops what would change how the rest reads without being seen: format
/// characters (bidi overrides and isolates, zero-width joiners and spaces, the BOM), the line
/// and paragraph separators U+2028 and U+2029 (line breaks to a display), private-use,
/// surrogate and unassigned code points. A reply that reordered itself with U+202E could make
/// "5.1.1 user unknown" display as something else in the receipt a court reads.
pub fn clean_remote_text(s: &str) -> String {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    let visible: String = s
        .chars()
        .filter(|c| {
            !matches!(
                c.general_category(),
                GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
                    | GeneralCategory::PrivateUse
                    | GeneralCategory::Surrogate
                    | GeneralCategory::Unassigned
            )
        })
        .collect();
    clean_text(&visible)
}

/// Make free text safe for a single-line header and for daticert: every control character
/// (C0 including CR, LF and TAB, DEL, C1) and the XML non-characters U+FFFE/U+FFFF become a
/// space; runs of spaces are kept; the result is trimmed.
pub fn clean_text(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' {
                ' '
            } else {
                c
            }
        })
        .collect();
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_text_loses_what_cannot_be_seen() {
        assert_eq!(
            clean_remote_text(
                "5.1.1 user \u{202E}nwonknu\u{202C} x\u{200B}y\u{FEFF}\u{E000}\u{2028}\r\n"
            ),
            "5.1.1 user nwonknu xy"
        );
        // Letters of any script, punctuation and symbols stay.
        assert_eq!(
            clean_remote_text("casella già piena — 満杯"),
            "casella già piena — 満杯"
        );
    }

    #[test]
    fn forms() {
        use RecipientRole::*;
        use TipoRicevuta::*;
        assert_eq!(effective_receipt_form(&Completa, Primary), Completa);
        assert_eq!(effective_receipt_form(&Completa, Copy), Sintetica);
        assert_eq!(effective_receipt_form(&Breve, Primary), Breve);
        assert_eq!(effective_receipt_form(&Breve, Copy), Sintetica);
        assert_eq!(effective_receipt_form(&Sintetica, Primary), Sintetica);
        assert_eq!(
            effective_receipt_form(&Other("x".into()), Primary),
            Completa
        );
    }

    #[test]
    fn nota12() {
        assert_eq!(
            DeliveryFailure::UnknownUser.errore_esteso("ARUBA PEC S.p.A."),
            "5.1.1 - ARUBA PEC S.p.A. - indirizzo non valido"
        );
        assert_eq!(clean_text(" a\r\nb\tc\u{85} "), "a  b c");
    }
}
