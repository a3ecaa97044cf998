//! Mailbox addresses from a tenant's pattern: `nome.cognome` by default; also `cognome.nome`,
//! `n.cognome` (initial), `nome_cognome`, `cognome`... — the words `nome`, `cognome`, `n`, `c`
//! joined by `.`, `-` or `_`.
//!
//! Names are transliterated to ASCII (`deunicode`: `Nicolò` → `nicolo`, `Müller` → `muller`),
//! lower-cased, and everything but letters and digits dropped (apostrophes, blanks, hyphens:
//! `D'Angelo` → `dangelo`, `De Luca` → `deluca`, `Anna Maria` → `annamaria`). A taken address gets
//! the next free number: `mario.rossi`, `mario.rossi2`, `mario.rossi3`.

use std::fmt;
use std::str::FromStr;

/// Why a pattern or an address cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "address pattern {0:?}: use the words nome, cognome, n (initial of the name) and c \
         (initial of the surname), joined by '.', '-' or '_' (e.g. nome.cognome)"
    )]
    Pattern(String),
    #[error("{what} {given:?} has no letter or digit to make an address from")]
    Empty { what: &'static str, given: String },
    #[error("the address {0:?} would be longer than 64 characters before the @")]
    TooLong(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Nome,
    Cognome,
    NomeInitial,
    CognomeInitial,
    Sep(char),
}

/// A tenant's address pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPattern {
    parts: Vec<Part>,
    text: String,
}

impl Default for AddressPattern {
    fn default() -> Self {
        "nome.cognome".parse().expect("the default pattern parses")
    }
}

impl fmt::Display for AddressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for AddressPattern {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        let bad = || AddressError::Pattern(s.to_string());
        let mut parts = Vec::new();
        let mut word = String::new();
        let flush = |word: &mut String, parts: &mut Vec<Part>| -> Result<(), AddressError> {
            let part = match word.as_str() {
                "nome" => Part::Nome,
                "cognome" => Part::Cognome,
                "n" => Part::NomeInitial,
                "c" => Part::CognomeInitial,
                _ => return Err(bad()),
            };
            parts.push(part);
            word.clear();
            Ok(())
        };
        for ch in s.trim().chars() {
            match ch {
                '.' | '-' | '_' => {
                    flush(&mut word, &mut parts)?;
                    parts.push(Part::Sep(ch));
                }
                'a'..='z' => word.push(ch),
                _ => return Err(bad()),
            }
        }
        flush(&mut word, &mut parts)?;
        let words: Vec<&Part> = parts
            .iter()
            .filter(|p| !matches!(p, Part::Sep(_)))
            .collect();
        let surname = words
            .iter()
            .any(|p| matches!(p, Part::Cognome | Part::CognomeInitial));
        if !surname || words.len() > 2 {
            return Err(bad());
        }
        Ok(AddressPattern {
            parts,
            text: s.trim().to_string(),
        })
    }
}

/// Letters and digits of `text` in lower-case ASCII.
pub fn slug(text: &str) -> String {
    deunicode::deunicode(text)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl AddressPattern {
    /// The local part for a member (before any collision number).
    pub fn local_part(&self, nome: &str, cognome: &str) -> Result<String, AddressError> {
        let (n, c) = (slug(nome), slug(cognome));
        for (what, given, s) in [("name", nome, &n), ("surname", cognome, &c)] {
            let used = self.parts.iter().any(|p| match what {
                "name" => matches!(p, Part::Nome | Part::NomeInitial),
                _ => matches!(p, Part::Cognome | Part::CognomeInitial),
            });
            if used && s.is_empty() {
                return Err(AddressError::Empty {
                    what,
                    given: given.to_string(),
                });
            }
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Nome => out.push_str(&n),
                Part::Cognome => out.push_str(&c),
                Part::NomeInitial => out.extend(n.chars().next()),
                Part::CognomeInitial => out.extend(c.chars().next()),
                Part::Sep(s) => out.push(*s),
            }
        }
        // 62 leaves room for a two-digit collision number.
        if out.len() > 62 {
            return Err(AddressError::TooLong(out));
        }
        Ok(out)
    }

    /// The `attempt`-th candidate (0: the plain address, then `2`, `3`, ...).
    pub fn candidate(local: &str, attempt: usize, domain: &str) -> String {
        match attempt {
            0 => format!("{local}@{domain}"),
            n => format!("{local}{}@{domain}", n + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_addresses() {
        let p = AddressPattern::default();
        for (nome, cognome, want) in [
            ("Mario", "Rossi", "mario.rossi"),
            ("Nicolò", "D'Angelo", "nicolo.dangelo"),
            ("Anna Maria", "De Luca", "annamaria.deluca"),
            ("José", "Müller-Lüdenscheidt", "jose.mullerludenscheidt"),
            ("  Ľudmila ", "Šťastná", "ludmila.stastna"),
            ("Zoë", "O’Brien", "zoe.obrien"),
        ] {
            assert_eq!(
                p.local_part(nome, cognome).as_deref(),
                Ok(want),
                "{nome} {cognome}"
            );
        }
        let initial: AddressPattern = "n.cognome".parse().unwrap();
        assert_eq!(initial.local_part("Mario", "Rossi").unwrap(), "m.rossi");
        let reverse: AddressPattern = "cognome_nome".parse().unwrap();
        assert_eq!(reverse.local_part("Mario", "Rossi").unwrap(), "rossi_mario");
        assert_eq!(
            AddressPattern::candidate("mario.rossi", 0, "o.it"),
            "mario.rossi@o.it"
        );
        assert_eq!(
            AddressPattern::candidate("mario.rossi", 1, "o.it"),
            "mario.rossi2@o.it"
        );
        assert_eq!(
            AddressPattern::candidate("mario.rossi", 2, "o.it"),
            "mario.rossi3@o.it"
        );
    }

    #[test]
    fn bad_patterns_and_names_are_refused() {
        for bad in [
            "",
            "nome",
            "nome.nome.cognome",
            "first.last",
            "nome..",
            "nome+cognome",
            "NOME.COGNOME",
        ] {
            assert!(bad.parse::<AddressPattern>().is_err(), "{bad:?}");
        }
        let p = AddressPattern::default();
        assert_eq!(
            p.local_part("Mario", "'' ").unwrap_err().to_string(),
            "surname \"'' \" has no letter or digit to make an address from"
        );
        assert!(matches!(
            p.local_part(&"a".repeat(70), "b"),
            Err(AddressError::TooLong(_))
        ));
    }
}
