//! E-mail address helpers: a conservative `addr-spec` check and comparison.
//!
//! PEC addresses are plain ASCII `local@domain` (no internationalised addresses: PEC providers
//! do not offer SMTPUTF8). Builders refuse anything else rather than emit a header that a
//! receiver could read differently.

/// Whether `addr` is an ASCII `addr-spec` (RFC 5322 §3.4.1) with a dot-atom local part and a
/// domain that is a plausible DNS name.
pub fn is_addr_spec(addr: &str) -> bool {
    if addr.len() > 254 || !addr.is_ascii() {
        return false;
    }
    let Some(at) = addr.rfind('@') else {
        return false;
    };
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    local_ok(local) && crate::ids::is_domain(domain)
}

fn atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn local_ok(local: &str) -> bool {
    // Dot-atom only. Quoted local parts (`"a b"@x.it`) are legal RFC 5322, but common parsers
    // (mail-parser among them) do not read them back, and PEC mailboxes never use them: a
    // receipt naming such an address could be misread, so it is refused.
    !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|a| !a.is_empty() && a.bytes().all(atext))
}

/// Compare two addresses the way a PEC provider does: ASCII case-insensitively (the domain is
/// case-insensitive by definition; providers also treat local parts case-insensitively).
pub fn same_address(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The domain part of an address (after the last `@`), if any.
pub fn domain_of(addr: &str) -> Option<&str> {
    addr.rfind('@').map(|i| &addr[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_specs() {
        for ok in [
            "a@b.it",
            "nome.cognome@pec.example.it",
            "a+tag@x-y.it",
            "o'neil@x.it",
        ] {
            assert!(is_addr_spec(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "@b.it",
            "a@",
            "a..b@x.it",
            "a b@x.it",
            "a<b@x.it",
            "a@b.it>",
            "à@b.it",
            "a@b_c.it",
            "\"a\"b\"@x.it",
            "\"a b\"@x.it",
            "a@b.it\r\n",
        ] {
            assert!(!is_addr_spec(bad), "{bad}");
        }
        assert!(same_address("A@B.it", "a@b.IT"));
        assert_eq!(domain_of("a@b.it"), Some("b.it"));
    }
}
