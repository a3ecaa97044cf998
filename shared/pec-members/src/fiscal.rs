//! The codice fiscale of a natural person: 16 characters, `CCCNNNYYMDDZZZZK` — six letters of
//! surname and name, year, month letter, day (+40 for women), the birthplace code, and a check
//! character computed over the first fifteen (DM 12/03/1974, Agenzia delle Entrate). Digits of
//! the numeric positions may be replaced by the letters `LMNPQRSTUV` (omocodia).
//!
//! Accepted as typed in any case and with blanks around; returned upper case.

/// Why a fiscal code is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FiscalCodeError {
    #[error("fiscal code {0:?}: 16 characters expected, {1} given")]
    Length(String, usize),
    #[error("fiscal code {code:?}: character {position} ({found:?}) should be {expected}")]
    Character {
        code: String,
        position: usize,
        found: char,
        expected: &'static str,
    },
    #[error("fiscal code {code:?}: the check character is {found}, it should be {expected}")]
    Check {
        code: String,
        found: char,
        expected: char,
    },
}

const MONTHS: &str = "ABCDEHLMPRST";
const OMOCODIA: &str = "LMNPQRSTUV";
/// Values of characters in odd positions (1st, 3rd, ...), for 0-9 then A-Z.
const ODD: [u32; 36] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, // 0-9
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
    23, // A-Z
];

fn index(c: char) -> u32 {
    match c {
        '0'..='9' => c as u32 - '0' as u32,
        _ => 10 + (c as u32 - 'A' as u32),
    }
}

/// The check character of the first fifteen characters (upper case, already well formed).
pub fn check_character(first15: &str) -> char {
    let sum: u32 = first15
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                ODD[index(c) as usize]
            } else {
                // Even positions: a digit is its value, a letter its place in the alphabet.
                if c.is_ascii_digit() {
                    index(c)
                } else {
                    index(c) - 10
                }
            }
        })
        .sum();
    char::from(b'A' + (sum % 26) as u8)
}

/// Checks a fiscal code; the code upper case.
pub fn fiscal_code(given: &str) -> Result<String, FiscalCodeError> {
    let code = given.trim().to_ascii_uppercase();
    let n = code.chars().count();
    if n != 16 {
        return Err(FiscalCodeError::Length(given.trim().to_string(), n));
    }
    let letter = |c: char| c.is_ascii_uppercase();
    let digit = |c: char| c.is_ascii_digit() || OMOCODIA.contains(c);
    for (i, c) in code.chars().enumerate() {
        let (ok, expected) = match i {
            0..=5 | 11 => (letter(c), "a letter"),
            8 => (
                MONTHS.contains(c),
                "a month letter (A B C D E H L M P R S T)",
            ),
            6 | 7 | 9 | 10 | 12..=14 => (digit(c), "a digit (or L M N P Q R S T U V)"),
            _ => (letter(c), "a letter (the check character)"),
        };
        if !ok {
            return Err(FiscalCodeError::Character {
                code,
                position: i + 1,
                found: c,
                expected,
            });
        }
    }
    let expected = check_character(&code[..15]);
    let found = code.chars().nth(15).unwrap_or('?');
    if found != expected {
        return Err(FiscalCodeError::Check {
            code,
            found,
            expected,
        });
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_pass_in_any_case() {
        for cf in [
            "RSSMRA85T10A562S",
            "BNCNNA80A41H501R",
            "VRDGPP90E15F205V",
            // omocodia: the last digit of the town code replaced by N
            "RSSMRA85T10A56NH",
        ] {
            assert_eq!(fiscal_code(cf).as_deref(), Ok(cf));
            assert_eq!(
                fiscal_code(&format!(" {} ", cf.to_lowercase())).as_deref(),
                Ok(cf)
            );
        }
    }

    #[test]
    fn each_mistake_is_named() {
        assert_eq!(
            fiscal_code("RSSMRA85T10A562X").unwrap_err().to_string(),
            "fiscal code \"RSSMRA85T10A562X\": the check character is X, it should be S"
        );
        assert_eq!(
            fiscal_code("RSSMRA85T10A562").unwrap_err(),
            FiscalCodeError::Length("RSSMRA85T10A562".into(), 15)
        );
        assert!(matches!(
            fiscal_code("RSSMRA85Z10A562S"),
            Err(FiscalCodeError::Character {
                position: 9,
                found: 'Z',
                ..
            })
        ));
        assert!(matches!(
            fiscal_code("RSS1RA85T10A562S"),
            Err(FiscalCodeError::Character { position: 4, .. })
        ));
        assert!(matches!(
            fiscal_code("RSSMRA85T10A5É2S"),
            Err(FiscalCodeError::Character { .. }) | Err(FiscalCodeError::Length(..))
        ));
        assert!(fiscal_code("").is_err());
    }
}
