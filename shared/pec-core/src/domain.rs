//! The domain names a tenant may bring (custom PEC domains): checked strictly, with an error
//! that says what is wrong and what to type instead. Nothing is silently rewritten: the domain
//! goes into DNS records, SES identities, the provider index and every address of the tenant's
//! members, so `Ordine.Example.it.` is refused (with the spelling to use) rather than guessed at.
//!
//! Rules: ASCII LDH labels (RFC 1035, RFC 5890 A-labels `xn--…` accepted as typed), lower case,
//! no trailing dot, at least two labels, each 1..=63 octets, 253 in all, not starting or ending
//! with `-`, and an alphabetic top-level label (no IP-address look-alikes).

/// Why a domain is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the domain is empty")]
    Empty,
    #[error("{0:?} has blanks around or inside it")]
    Blank(String),
    #[error("{given:?} has capital letters: domains are registered in lower case ({lower})")]
    Uppercase { given: String, lower: String },
    #[error("{given:?} ends with a dot: give it without ({bare})")]
    TrailingDot { given: String, bare: String },
    #[error(
        "{0:?} is an internationalised (IDN) domain: PEC addresses, the provider index and the \
         certificates carry ASCII names only; register its ASCII form (the xn-- A-label)"
    )]
    Idn(String),
    #[error("{0:?} is longer than 253 characters")]
    TooLong(String),
    #[error("{domain:?}: the label {label:?} is longer than 63 characters")]
    LabelTooLong { domain: String, label: String },
    #[error("{0:?} has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel(String),
    #[error("{domain:?}: {character:?} is not allowed in a domain (letters, digits and '-' only)")]
    BadCharacter { domain: String, character: char },
    #[error("{domain:?}: the label {label:?} starts or ends with '-'")]
    Hyphen { domain: String, label: String },
    #[error("{0:?} is a single label: a domain needs at least a name and a top-level domain")]
    SingleLabel(String),
    #[error("{0:?} does not end in an alphabetic top-level domain")]
    NumericTld(String),
}

/// Checks a domain a tenant brings; `Ok` with the same string when it is acceptable as typed.
pub fn check(given: &str) -> Result<&str, DomainError> {
    let owned = || given.to_string();
    if given.is_empty() {
        return Err(DomainError::Empty);
    }
    if given.chars().any(char::is_whitespace) {
        return Err(DomainError::Blank(owned()));
    }
    if !given.is_ascii() {
        return Err(DomainError::Idn(owned()));
    }
    if let Some(bare) = given.strip_suffix('.')
        && !bare.is_empty()
    {
        return Err(DomainError::TrailingDot {
            given: owned(),
            bare: bare.to_ascii_lowercase(),
        });
    }
    if given.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(DomainError::Uppercase {
            given: owned(),
            lower: given.to_ascii_lowercase(),
        });
    }
    if given.len() > 253 {
        return Err(DomainError::TooLong(owned()));
    }
    let labels: Vec<&str> = given.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(DomainError::EmptyLabel(owned()));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(DomainError::BadCharacter {
                domain: owned(),
                character: c,
            });
        }
        if label.len() > 63 {
            return Err(DomainError::LabelTooLong {
                domain: owned(),
                label: label.to_string(),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(DomainError::Hyphen {
                domain: owned(),
                label: label.to_string(),
            });
        }
    }
    if labels.len() < 2 {
        return Err(DomainError::SingleLabel(owned()));
    }
    let tld = labels[labels.len() - 1];
    if !tld.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(DomainError::NumericTld(owned()));
    }
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_domains_pass_as_typed() {
        for d in [
            "ordine.example.test",
            "pec.ordineavvocati-roma.it",
            "xn--ordine-ingegneri-9jb.it",
            "a.b.c.d.e.it",
            "123.example.it",
        ] {
            assert_eq!(check(d), Ok(d), "{d}");
        }
        let longest_label = format!("{}.it", "a".repeat(63));
        assert!(check(&longest_label).is_ok());
    }

    #[test]
    fn each_mistake_has_its_own_error() {
        assert_eq!(check(""), Err(DomainError::Empty));
        assert_eq!(
            check("Ordine.Example.test").unwrap_err().to_string(),
            "\"Ordine.Example.test\" has capital letters: domains are registered in lower case \
             (ordine.example.test)"
        );
        assert_eq!(
            check("ordine.example.test.").unwrap_err().to_string(),
            "\"ordine.example.test.\" ends with a dot: give it without (ordine.example.test)"
        );
        assert!(
            matches!(check("Ordine.IT."), Err(DomainError::TrailingDot { bare, .. }) if bare == "ordine.it")
        );
        assert!(matches!(
            check("ordine-ingegneri-città.it"),
            Err(DomainError::Idn(_))
        ));
        assert!(matches!(check("ordine .it"), Err(DomainError::Blank(_))));
        assert!(matches!(check(" ordine.it"), Err(DomainError::Blank(_))));
        assert!(matches!(
            check("ordine..it"),
            Err(DomainError::EmptyLabel(_))
        ));
        assert!(matches!(
            check(".ordine.it"),
            Err(DomainError::EmptyLabel(_))
        ));
        assert!(matches!(check("."), Err(DomainError::EmptyLabel(_))));
        assert!(matches!(
            check("ordine_avvocati.it"),
            Err(DomainError::BadCharacter { character: '_', .. })
        ));
        assert!(matches!(
            check("-ordine.it"),
            Err(DomainError::Hyphen { .. })
        ));
        assert!(matches!(
            check("ordine-.it"),
            Err(DomainError::Hyphen { .. })
        ));
        assert!(matches!(
            check("localhost"),
            Err(DomainError::SingleLabel(_))
        ));
        assert!(matches!(
            check("192.168.1.1"),
            Err(DomainError::NumericTld(_))
        ));
        assert!(matches!(
            check(&format!("{}.it", "a".repeat(64))),
            Err(DomainError::LabelTooLong { .. })
        ));
        assert!(matches!(
            check(&format!("{}.it", "abcdefghi.".repeat(26))),
            Err(DomainError::TooLong(_))
        ));
    }
}
