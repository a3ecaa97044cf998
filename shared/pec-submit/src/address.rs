//! `MAIL FROM` / `RCPT TO` arguments: paths (RFC 5321 §4.1.2) and ESMTP parameters.
//!
//! The path is kept exactly as the client wrote it between the angle brackets (no case folding,
//! no normalisation); only an obsolete source route (`<@a,@b:user@d>`) is dropped, as RFC 5321
//! §4.1.1.3 allows. `SMTPUTF8` is not offered, so a path must be ASCII.

/// Longest path accepted, without the brackets (RFC 5321 §4.5.3.1.3: 256 octets with them).
const MAX_PATH: usize = 254;
/// RFC 5321 §4.5.3.1.1.
const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2.
const MAX_DOMAIN: usize = 255;

/// A parsed `MAIL FROM:` / `RCPT TO:` argument.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PathArg<'a> {
    /// The mailbox between the brackets; empty for the null path `<>`.
    pub path: &'a str,
    /// The `keyword[=value]` parameters after the path.
    pub params: Vec<(&'a str, Option<&'a str>)>,
}

/// Why an argument was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not `<path> [params]`, or the mailbox is not an RFC 5321 mailbox.
    Syntax,
    /// A parameter is not `keyword[=value]`.
    Param,
}

/// Parses what follows `MAIL FROM:` or `RCPT TO:` (leading spaces are tolerated, as most servers
/// do for `MAIL FROM: <a@b>`).
pub(crate) fn parse_path_arg(arg: &str) -> Result<PathArg<'_>, PathError> {
    let arg = arg.trim_start_matches(' ');
    let rest = arg.strip_prefix('<').ok_or(PathError::Syntax)?;
    let end = closing_bracket(rest).ok_or(PathError::Syntax)?;
    let inner = &rest[..end];
    let after = &rest[end + 1..];
    if !(after.is_empty() || after.starts_with(' ')) {
        return Err(PathError::Syntax);
    }
    let path = if inner.is_empty() {
        inner
    } else {
        let mailbox = strip_source_route(inner).ok_or(PathError::Syntax)?;
        if !is_mailbox(mailbox) {
            return Err(PathError::Syntax);
        }
        mailbox
    };
    let mut params = Vec::new();
    for p in after.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        };
        let key_ok = !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && k.as_bytes()[0].is_ascii_alphanumeric();
        let value_ok = v.is_none_or(|v| {
            !v.is_empty() && v.bytes().all(|b| (33..=126).contains(&b) && b != b'=')
        });
        if !key_ok || !value_ok {
            return Err(PathError::Param);
        }
        params.push((k, v));
    }
    Ok(PathArg { path, params })
}

/// Index of the `>` closing the path, skipping quoted strings (a quoted local part may hold `>`).
fn closing_bracket(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < b.len() {
        match (b[i], quoted) {
            (b'\\', true) => i += 1,
            (b'"', _) => quoted = !quoted,
            (b'>', false) => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Drops an `@a,@b:` source route; `None` if the route is malformed.
fn strip_source_route(inner: &str) -> Option<&str> {
    if !inner.starts_with('@') {
        return Some(inner);
    }
    let (route, mailbox) = inner.split_once(':')?;
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@')?;
        if !is_domain(domain) {
            return None;
        }
    }
    Some(mailbox)
}

/// RFC 5321 `Mailbox = Local-part "@" ( Domain / address-literal )`, ASCII only.
pub(crate) fn is_mailbox(s: &str) -> bool {
    if s.len() > MAX_PATH || !s.is_ascii() {
        return false;
    }
    let Some(at) = s.rfind('@') else {
        return false;
    };
    let (local, domain) = (&s[..at], &s[at + 1..]);
    is_local_part(local) && (is_domain(domain) || is_address_literal(domain))
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn is_local_part(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_LOCAL_PART {
        return false;
    }
    if let Some(q) = s.strip_prefix('"') {
        // Quoted-string: qtextSMTP / quoted-pairSMTP, closing quote last.
        let Some(body) = q.strip_suffix('"') else {
            return false;
        };
        let b = body.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => {
                    if i + 1 >= b.len() || !(32..=126).contains(&b[i + 1]) {
                        return false;
                    }
                    i += 2;
                }
                b'"' => return false,
                c if (32..=126).contains(&c) => i += 1,
                _ => return false,
            }
        }
        return true;
    }
    // Dot-string.
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

fn is_domain(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_DOMAIN {
        return false;
    }
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    })
}

/// `[` dcontent `]`, loosely (RFC 5321 §4.1.3): printable ASCII without `[`, `\`, `]`.
fn is_address_literal(s: &str) -> bool {
    s.len() > 2
        && s.starts_with('[')
        && s.ends_with(']')
        && s[1..s.len() - 1]
            .bytes()
            .all(|b| (33..=126).contains(&b) && !b"[\\]".contains(&b))
}

/// The `EHLO`/`HELO` argument. RFC 5321 asks for a domain or an address literal, but desktop
/// clients send NetBIOS-style names (`DESKTOP_1`): any printable ASCII word is accepted, since
/// the name is only recorded, never trusted.
pub(crate) fn is_helo_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_DOMAIN && s.bytes().all(|b| (33..=126).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(arg: &str) -> Result<&str, PathError> {
        parse_path_arg(arg).map(|p| p.path)
    }

    #[test]
    fn paths() {
        assert_eq!(path("<a@b.it>"), Ok("a@b.it"));
        assert_eq!(
            path(" <Mario.Rossi@Pec.Example.IT>"),
            Ok("Mario.Rossi@Pec.Example.IT")
        );
        assert_eq!(path("<>"), Ok(""));
        assert_eq!(path("<\"a b>c\"@x.it>"), Ok("\"a b>c\"@x.it"));
        assert_eq!(path("<@r1.it,@r2.it:u@d.it>"), Ok("u@d.it"));
        assert_eq!(path("<u@[127.0.0.1]>"), Ok("u@[127.0.0.1]"));
        for bad in [
            "a@b.it",
            "<a@b.it",
            "<a@b.it>x",
            "<a>",
            "<@b.it>",
            "<a@>",
            "<a..b@c.it>",
            "<.a@c.it>",
            "<a@-b.it>",
            "<a@b..it>",
            "<a b@c.it>",
            "<à@c.it>",
            "<\"a@c.it>",
            "<@x:u>",
            "",
            "<",
        ] {
            assert_eq!(path(bad), Err(PathError::Syntax), "{bad:?}");
        }
        let long = format!("<{}@b.it>", "a".repeat(65));
        assert_eq!(path(&long), Err(PathError::Syntax));
    }

    #[test]
    fn params() {
        let p = parse_path_arg("<a@b.it> SIZE=1000  BODY=8BITMIME").unwrap();
        assert_eq!(
            p.params,
            vec![("SIZE", Some("1000")), ("BODY", Some("8BITMIME"))]
        );
        assert_eq!(
            parse_path_arg("<a@b.it> SIZE=").map(|p| p.params),
            Err(PathError::Param)
        );
        assert_eq!(
            parse_path_arg("<a@b.it> =x").map(|p| p.params),
            Err(PathError::Param)
        );
    }

    #[test]
    fn helo() {
        assert!(is_helo_name("client.example.it"));
        assert!(is_helo_name("[127.0.0.1]"));
        assert!(is_helo_name("localhost"));
        assert!(is_helo_name("DESKTOP_1"));
        assert!(!is_helo_name("a b"));
        assert!(!is_helo_name("a\u{7f}"));
        assert!(!is_helo_name(""));
    }
}
