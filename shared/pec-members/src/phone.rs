//! Mobile numbers to E.164 (`+393331234567`), for SMS notifications.
//!
//! Accepted: the international form with `+` or `00`, with blanks, dots, dashes, slashes or
//! parentheses anywhere; an Italian mobile written nationally (`333 123 4567`: 9 or 10 digits
//! starting with 3) gets `+39`. Anything else is refused with the form to use.

/// Why a mobile number is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mobile {given:?} {reason}: write it as +<country code><number>, e.g. +393331234567")]
pub struct PhoneError {
    pub given: String,
    pub reason: &'static str,
}

/// The number in E.164.
pub fn mobile_e164(given: &str) -> Result<String, PhoneError> {
    let err = |reason| PhoneError {
        given: given.trim().to_string(),
        reason,
    };
    let compact: String = given
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '/' | '(' | ')' | '\u{a0}'))
        .collect();
    let (international, digits) = if let Some(rest) = compact.strip_prefix('+') {
        (true, rest.to_string())
    } else if let Some(rest) = compact.strip_prefix("00") {
        (true, rest.to_string())
    } else {
        (false, compact.clone())
    };
    if digits.is_empty() {
        return Err(err("is empty"));
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("has characters that are not digits"));
    }
    if !international {
        if digits.starts_with('3') && (9..=10).contains(&digits.len()) {
            return Ok(format!("+39{digits}"));
        }
        return Err(err("has no country code and is not an Italian mobile"));
    }
    if digits.starts_with('0') {
        return Err(err("has a country code starting with 0"));
    }
    if !(8..=15).contains(&digits.len()) {
        return Err(err("has too few or too many digits (E.164: at most 15)"));
    }
    Ok(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_forms_become_e164() {
        for (given, want) in [
            ("+39 333 123 4567", "+393331234567"),
            ("0039-333-1234567", "+393331234567"),
            ("333.123.4567", "+393331234567"),
            ("(+41) 79 123 45 67", "+41791234567"),
            ("3331234567", "+393331234567"),
            ("333123456", "+39333123456"),
        ] {
            assert_eq!(mobile_e164(given).as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn bad_numbers_say_why() {
        assert_eq!(
            mobile_e164("06 1234567").unwrap_err().to_string(),
            "mobile \"06 1234567\" has no country code and is not an Italian mobile: write it as \
             +<country code><number>, e.g. +393331234567"
        );
        assert!(
            mobile_e164("+39 333 12A 4567")
                .unwrap_err()
                .reason
                .contains("not digits")
        );
        assert!(mobile_e164("+1234").unwrap_err().reason.contains("too few"));
        assert!(mobile_e164("+0393331234567").is_err());
        assert!(mobile_e164("  ").is_err());
    }
}
