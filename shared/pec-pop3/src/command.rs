//! The POP3 command line grammar (RFC 1939 §3, RFC 2449, RFC 2595, RFC 5034), by hand: a
//! keyword, case-insensitive, and at most two arguments. No IO; never panics.

/// One parsed command line.
#[derive(PartialEq, Eq)]
pub(crate) enum Command {
    Capa,
    Stls,
    Quit,
    /// `USER name`.
    User(String),
    /// `PASS string`: everything after the first space, spaces included (RFC 1939 §7).
    Pass(String),
    /// `AUTH [mechanism [initial-response]]`.
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    /// `APOP name digest`: recognised to be refused (it needs clear-text passwords stored).
    Apop,
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    Dele(u32),
    /// `TOP msg n`: the headers and `n` lines of the body.
    Top(u32, u64),
    Noop,
    Rset,
}

impl std::fmt::Debug for Command {
    /// Credentials are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Pass(_) => f.write_str("Pass(<redacted>)"),
            Command::Auth { mechanism, initial } => f
                .debug_struct("Auth")
                .field("mechanism", mechanism)
                .field("initial", &initial.as_ref().map(|_| "<redacted>"))
                .finish(),
            Command::User(u) => f.debug_tuple("User").field(u).finish(),
            Command::List(n) => f.debug_tuple("List").field(n).finish(),
            Command::Uidl(n) => f.debug_tuple("Uidl").field(n).finish(),
            Command::Retr(n) => f.debug_tuple("Retr").field(n).finish(),
            Command::Dele(n) => f.debug_tuple("Dele").field(n).finish(),
            Command::Top(n, k) => f.debug_tuple("Top").field(n).field(k).finish(),
            other => f.write_str(other.name()),
        }
    }
}

impl Command {
    /// The keyword, upper case (for logs).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Quit => "QUIT",
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Auth { .. } => "AUTH",
            Command::Apop => "APOP",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Uidl(_) => "UIDL",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Top(..) => "TOP",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
        }
    }
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not UTF-8.
    NotUtf8,
    /// Empty, or a keyword this server does not know.
    Unknown,
    /// A known keyword with missing, extra or malformed arguments; the keyword.
    Syntax(&'static str),
}

impl ParseError {
    /// The text after `-ERR `.
    pub(crate) fn text(&self) -> String {
        match self {
            ParseError::NotUtf8 => "Commands must be UTF-8".to_owned(),
            ParseError::Unknown => "Unknown command".to_owned(),
            ParseError::Syntax(name) => format!("Syntax error in {name}"),
        }
    }
}

/// Parses one command line (without its line ending).
pub(crate) fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    // The keyword ends at the first space; arguments are separated by single spaces (RFC 1939
    // §3), but runs of spaces and tabs are tolerated, except inside PASS.
    let (keyword, rest) = match line.split_once(' ') {
        Some((k, r)) => (k, Some(r)),
        None => (line, None),
    };
    let keyword = keyword.trim_matches(|c| c == '\t' || c == ' ');
    if keyword.is_empty() || keyword.len() > 8 {
        return Err(ParseError::Unknown);
    }
    let keyword = keyword.to_ascii_uppercase();
    let args: Vec<&str> = rest
        .map(|r| r.split_ascii_whitespace().collect())
        .unwrap_or_default();
    let syntax = |name| Err(ParseError::Syntax(name));
    let command = match keyword.as_str() {
        "CAPA" | "STLS" | "QUIT" | "STAT" | "NOOP" | "RSET" => {
            if !args.is_empty() {
                return syntax(name_of(&keyword));
            }
            match keyword.as_str() {
                "CAPA" => Command::Capa,
                "STLS" => Command::Stls,
                "QUIT" => Command::Quit,
                "STAT" => Command::Stat,
                "NOOP" => Command::Noop,
                _ => Command::Rset,
            }
        }
        "USER" => match args.as_slice() {
            [name] => Command::User((*name).to_owned()),
            _ => return syntax("USER"),
        },
        "PASS" => match rest {
            // Passwords may hold spaces: the argument is the rest of the line as sent.
            Some(password) if !password.is_empty() => Command::Pass(password.to_owned()),
            _ => return syntax("PASS"),
        },
        "APOP" => Command::Apop,
        "AUTH" => match args.as_slice() {
            [] => Command::Auth {
                mechanism: None,
                initial: None,
            },
            [mechanism] => Command::Auth {
                mechanism: Some(mechanism.to_ascii_uppercase()),
                initial: None,
            },
            [mechanism, initial] => Command::Auth {
                mechanism: Some(mechanism.to_ascii_uppercase()),
                initial: Some((*initial).to_owned()),
            },
            _ => return syntax("AUTH"),
        },
        "LIST" | "UIDL" => {
            let n = match args.as_slice() {
                [] => None,
                [n] => Some(number(n).ok_or(ParseError::Syntax(name_of(&keyword)))?),
                _ => return syntax(name_of(&keyword)),
            };
            if keyword == "LIST" {
                Command::List(n)
            } else {
                Command::Uidl(n)
            }
        }
        "RETR" | "DELE" => {
            let [n] = args.as_slice() else {
                return syntax(name_of(&keyword));
            };
            let n = number(n).ok_or(ParseError::Syntax(name_of(&keyword)))?;
            if keyword == "RETR" {
                Command::Retr(n)
            } else {
                Command::Dele(n)
            }
        }
        "TOP" => {
            let [n, lines] = args.as_slice() else {
                return syntax("TOP");
            };
            let n = number(n).ok_or(ParseError::Syntax("TOP"))?;
            let lines = lines_count(lines).ok_or(ParseError::Syntax("TOP"))?;
            Command::Top(n, lines)
        }
        _ => return Err(ParseError::Unknown),
    };
    Ok(command)
}

/// The static spelling of a known keyword.
fn name_of(keyword: &str) -> &'static str {
    match keyword {
        "CAPA" => "CAPA",
        "STLS" => "STLS",
        "QUIT" => "QUIT",
        "STAT" => "STAT",
        "NOOP" => "NOOP",
        "RSET" => "RSET",
        "LIST" => "LIST",
        "UIDL" => "UIDL",
        "RETR" => "RETR",
        "DELE" => "DELE",
        _ => "command",
    }
}

/// A message number: decimal digits only (no sign, no spaces). Numbers too large for a `u32`
/// cannot name a message; they parse as `u32::MAX`, which never does either.
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u32>().unwrap_or(u32::MAX))
}

/// TOP's line count: decimal digits; a huge count means the whole body.
fn lines_count(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(parse(b"capa"), Ok(Command::Capa));
        assert_eq!(parse(b"StLs"), Ok(Command::Stls));
        assert_eq!(parse(b"QUIT"), Ok(Command::Quit));
        assert_eq!(parse(b"noop"), Ok(Command::Noop));
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse(b"USER mario@x.it"),
            Ok(Command::User("mario@x.it".into()))
        );
        assert_eq!(parse(b"LIST"), Ok(Command::List(None)));
        assert_eq!(parse(b"LIST 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse(b"uidl 12"), Ok(Command::Uidl(Some(12))));
        assert_eq!(parse(b"RETR 1"), Ok(Command::Retr(1)));
        assert_eq!(parse(b"DELE 0"), Ok(Command::Dele(0)));
        assert_eq!(parse(b"TOP 2 0"), Ok(Command::Top(2, 0)));
        assert_eq!(
            parse(b"TOP 2 99999999999999999999999"),
            Ok(Command::Top(2, u64::MAX))
        );
        assert_eq!(parse(b"RETR 99999999999"), Ok(Command::Retr(u32::MAX)));
        assert_eq!(
            parse(b"AUTH plain dGVzdA=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("dGVzdA==".into())
            })
        );
        assert_eq!(
            parse(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
    }

    #[test]
    fn passwords_keep_their_spaces() {
        assert_eq!(
            parse(b"PASS correct horse  battery "),
            Ok(Command::Pass("correct horse  battery ".into()))
        );
        assert_eq!(parse(b"PASS"), Err(ParseError::Syntax("PASS")));
        assert_eq!(parse(b"PASS "), Err(ParseError::Syntax("PASS")));
        let debug = format!("{:?}", parse(b"PASS secret").unwrap());
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(parse(b""), Err(ParseError::Unknown));
        assert_eq!(parse(b"   "), Err(ParseError::Unknown));
        assert_eq!(parse(b"HELO x"), Err(ParseError::Unknown));
        assert_eq!(parse(b"\x00\xff\xfe"), Err(ParseError::NotUtf8));
        assert_eq!(parse(b"RETR"), Err(ParseError::Syntax("RETR")));
        assert_eq!(parse(b"RETR -1"), Err(ParseError::Syntax("RETR")));
        assert_eq!(parse(b"RETR +1"), Err(ParseError::Syntax("RETR")));
        assert_eq!(parse(b"RETR 1 2"), Err(ParseError::Syntax("RETR")));
        assert_eq!(parse(b"RETR x"), Err(ParseError::Syntax("RETR")));
        assert_eq!(parse(b"TOP 1"), Err(ParseError::Syntax("TOP")));
        assert_eq!(parse(b"LIST 1 2"), Err(ParseError::Syntax("LIST")));
        assert_eq!(parse(b"STAT now"), Err(ParseError::Syntax("STAT")));
        assert_eq!(parse(b"USER"), Err(ParseError::Syntax("USER")));
        assert_eq!(parse(b"USER a b"), Err(ParseError::Syntax("USER")));
        assert_eq!(parse(b"AUTH a b c"), Err(ParseError::Syntax("AUTH")));
        assert_eq!(
            parse("RETR \u{0661}".as_bytes()),
            Err(ParseError::Syntax("RETR"))
        );
    }

    #[test]
    fn never_panics_on_any_short_input() {
        let alphabet = [b'a', b'R', b' ', b'\t', b'1', b'0', 0xff, 0xc3, 0xa9, b'.'];
        let mut line = Vec::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for d in alphabet {
                        line.clear();
                        line.extend_from_slice(b"RETR");
                        line.extend_from_slice(&[a, b, c, d]);
                        let _ = parse(&line);
                        let _ = parse(&line[4..]);
                    }
                }
            }
        }
    }
}
