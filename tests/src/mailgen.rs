//! Realistic generated mail for tests and benchmarks: messages of 5–50 KB (plain text, text +
//! HTML, an attachment, PEC transport envelopes with daticert.xml, postacert.eml and a
//! signature), each a function of a seed and its index only, and their Maildir files (LF line
//! ends, as Dovecot's own delivery writes them; flags as info letters; mtime = INTERNALDATE) for
//! Dovecot. `benches/imap_fill.rs` fills our store with them; the transfer-in test and
//! `benches/imap.sh` serve the same from Dovecot.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use pec_ports::mailstore::Flags;

const WORDS: &[&str] = &[
    "della",
    "posta",
    "certificata",
    "ricevuta",
    "consegna",
    "contratto",
    "fattura",
    "allegato",
    "comunicazione",
    "ufficio",
    "protocollo",
    "pratica",
    "richiesta",
    "documento",
    "termine",
    "giorni",
    "cordiali",
    "saluti",
    "gentile",
    "dottore",
    "avvocato",
    "comune",
    "agenzia",
    "entrate",
    "notifica",
    "atto",
    "udienza",
    "tribunale",
    "pagamento",
    "scadenza",
    "versamento",
    "il",
    "la",
    "di",
    "che",
    "per",
    "con",
    "una",
    "nel",
    "sono",
    "questa",
    "come",
    "alla",
    "dal",
    "più",
    "anche",
    "ai",
    "sensi",
    "dell'art.",
    "decreto",
    "è",
    "perché",
    "città",
    "attività",
    "già",
    "entro",
    "presente",
    "si",
    "trasmette",
    "copia",
    "firmata",
    "digitalmente",
    "relativa",
    "al",
    "procedimento",
    "n.",
    "prot.",
    "riferimento",
    "vostra",
    "nota",
    "del",
    "cui",
    "sopra",
];
const FIRST: &[&str] = &[
    "Mario",
    "Giulia",
    "Luca",
    "Francesca",
    "Giuseppe",
    "Chiara",
    "Antonio",
    "Sara",
    "Marco",
    "Elena",
    "Nicolò",
    "Lucia",
    "Paolo",
    "Martina",
    "Andrea",
    "Federica",
];
const LAST: &[&str] = &[
    "Rossi", "Bianchi", "Esposito", "Ricci", "Romano", "Colombo", "Marino", "Greco", "Bruno",
    "Gallo", "Conti", "De Luca", "Mancini", "Costa", "Giordano", "Rizzo",
];
const DOMAINS: &[&str] = &[
    "pec.example.test",
    "legalmail.example.it",
    "pec.comune.example.it",
    "cert.studio.example.it",
    "postacert.example.it",
    "pec.ordineavvocati.example.it",
];
const SUBJECTS: &[&str] = &[
    "Fattura n. {n} del {d}",
    "Convocazione riunione del {d}",
    "Re: richiesta documentazione pratica {n}",
    "Notifica atto n. {n}/2025",
    "Sollecito di pagamento – scadenza {d}",
    "Trasmissione verbale attività ispettiva prot. {n}",
    "Fwd: contratto di fornitura rif. {n}",
    "Comunicazione esito istanza n. {n}",
];

/// One generated message: CRLF bytes as stored, its flags and INTERNALDATE.
pub struct Message {
    pub bytes: Vec<u8>,
    pub flags: Flags,
    pub date: DateTime<Utc>,
}

fn pick<'a>(rng: &mut fastrand::Rng, from: &[&'a str]) -> &'a str {
    from[rng.usize(..from.len())]
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 38 + 8);
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n"); // 76 characters a line
        }
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.push_str("\r\n");
    out
}

/// Quoted-printable (RFC 2045) of UTF-8 text whose lines end in CRLF.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split("\r\n") {
        let mut width = 0;
        for &b in line.as_bytes() {
            let piece = if b == b'=' || b >= 0x7f || (b < 0x20 && b != b'\t') {
                format!("={b:02X}")
            } else {
                (b as char).to_string()
            };
            if width + piece.len() > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            width += piece.len();
            out.push_str(&piece);
        }
        out.push_str("\r\n");
    }
    out.truncate(out.len() - 2);
    out
}

/// RFC 2047 Q-encoding of a header value that is not plain ASCII (encoded words of at most 75
/// characters, folded).
fn header_text(value: &str) -> String {
    if value.is_ascii() {
        return value.to_owned();
    }
    let mut words = Vec::new();
    let mut word = String::new();
    for c in value.chars() {
        let mut piece = String::new();
        let mut buf = [0u8; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            match b {
                b' ' => piece.push('_'),
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b',' | b'-' => {
                    piece.push(b as char)
                }
                _ => piece.push_str(&format!("={b:02X}")),
            }
        }
        if word.len() + piece.len() > 75 - 12 {
            words.push(std::mem::take(&mut word));
        }
        word.push_str(&piece);
    }
    words.push(word);
    words
        .iter()
        .map(|w| format!("=?UTF-8?Q?{w}?="))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// A display name: quoted if ASCII, an encoded word otherwise.
fn quoted_name(name: &str) -> String {
    if name.is_ascii() {
        format!("\"{name}\"")
    } else {
        header_text(name)
    }
}

/// Paragraphs of text of about `bytes` bytes, lines under 76 characters, CRLF.
fn prose(rng: &mut fastrand::Rng, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 100);
    let mut line = String::new();
    let mut words_in_paragraph = 0;
    while out.len() + line.len() < bytes {
        let w = pick(rng, WORDS);
        if line.len() + w.len() + 1 > 72 {
            out.push_str(&line);
            out.push_str("\r\n");
            line.clear();
            if words_in_paragraph > 40 + rng.usize(..80) {
                out.push_str("\r\n");
                words_in_paragraph = 0;
            }
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
        words_in_paragraph += 1;
    }
    out.push_str(&line);
    out.push_str("\r\n");
    out
}

fn html(text: &str) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"></head>\r\n<body style=\"font-family: Arial, sans-serif; font-size: 11pt\">\r\n",
    );
    for p in text.split("\r\n\r\n") {
        out.push_str("<p>");
        out.push_str(&p.replace("\r\n", " "));
        out.push_str("</p>\r\n");
    }
    out.push_str("</body></html>\r\n");
    out
}

fn person(rng: &mut fastrand::Rng) -> (String, String) {
    let (f, l) = (pick(rng, FIRST), pick(rng, LAST));
    let local =
        format!("{}.{}", f.to_lowercase(), l.to_lowercase().replace(' ', "")).replace('ò', "o");
    (
        format!("{f} {l}"),
        format!("{local}@{}", pick(rng, DOMAINS)),
    )
}

fn text_part(body: &str) -> String {
    format!(
        "Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n",
        quoted_printable(body)
    )
}

fn html_part(body: &str) -> String {
    format!(
        "Content-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n",
        quoted_printable(&html(body))
    )
}

fn attachment(rng: &mut fastrand::Rng, kind: &str, name: &str, bytes: usize) -> String {
    let mut data = vec![0u8; bytes];
    rng.fill(&mut data);
    format!(
        "Content-Type: {kind}; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n{}",
        base64(&data)
    )
}

fn multipart(kind: &str, boundary: &str, parts: &[String]) -> String {
    let mut out = format!(
        "Content-Type: multipart/{kind}; boundary=\"{boundary}\"\r\n\r\nThis is a multi-part message in MIME format.\r\n"
    );
    for p in parts {
        out.push_str(&format!("--{boundary}\r\n{p}"));
        if !p.ends_with("\r\n") {
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// Message `index` of the sequence `seed`: 5–50 KB (or about `big` bytes).
pub fn message(seed: u64, index: usize, big: Option<usize>) -> Message {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
    let target = big.unwrap_or_else(|| rng.usize(5_500..=48_500));
    let base = Utc.with_ymd_and_hms(2025, 1, 7, 8, 0, 0).unwrap();
    let date = base + chrono::Duration::seconds(index as i64 * 2_777 + rng.i64(0..600));
    let (from_name, from) = person(&mut rng);
    let (to_name, to) = person(&mut rng);
    let n = 1000 + rng.usize(..90_000);
    let subject = pick(&mut rng, SUBJECTS)
        .replace("{n}", &n.to_string())
        .replace("{d}", &date.format("%d/%m/%Y").to_string());
    let boundary = |tag: &str| format!("----=_Part_{index}_{tag}_{:08x}", rng_u32(seed, index));
    let kind = if big.is_some() { 70 } else { rng.u8(..100) };
    let pec = kind >= 85;
    let mut headers = format!(
        "Return-Path: <{from}>\r\nReceived: from mx.example.test (mx.example.test [192.0.2.{}])\r\n\tby pec.example.test with ESMTPS id {index:08x}\r\n\tfor <{to}>; {}\r\nDate: {}\r\nFrom: {}\r\nTo: {} <{to}>\r\nSubject: {}\r\nMessage-ID: <{index}.{seed}.{n}@{}>\r\nMIME-Version: 1.0\r\n",
        1 + index % 250,
        date.to_rfc2822(),
        date.to_rfc2822(),
        if pec {
            format!("\"Per conto di: {from}\" <posta-certificata@pec.example.test>")
        } else {
            format!("{} <{from}>", quoted_name(&from_name))
        },
        quoted_name(&to_name),
        header_text(&if pec {
            format!("POSTA CERTIFICATA: {subject}")
        } else {
            subject.clone()
        }),
        from.split('@').nth(1).unwrap_or("example.test"),
    );
    if pec {
        headers.push_str(&format!(
            "X-Riferimento-Message-ID: <{index}.{n}@{}>\r\nX-Trasporto: posta-certificata\r\nX-TipoRicevuta: completa\r\n",
            from.split('@').nth(1).unwrap_or("example.test")
        ));
    }
    let left = |used: usize| target.saturating_sub(headers.len() + used).max(200);
    let body = match kind {
        0..40 => {
            let text = prose(&mut rng, left(120));
            text_part(&text)
        }
        40..65 => {
            // text + HTML carry the same words: each about half the size.
            let text = prose(&mut rng, left(900) * 4 / 10);
            multipart(
                "alternative",
                &boundary("alt"),
                &[text_part(&text), html_part(&text)],
            )
        }
        65..85 => {
            let words = 300 + rng.usize(..1500);
            let text = prose(&mut rng, words);
            let name = format!("documento_{n}.pdf");
            let raw = left(text.len() + 700) * 3 / 4;
            multipart(
                "mixed",
                &boundary("mix"),
                &[
                    text_part(&text),
                    attachment(&mut rng, "application/pdf", &name, raw),
                ],
            )
        }
        _ => {
            // A PEC transport envelope: the provider's text, daticert.xml, the original message,
            // the provider's signature.
            let notice = format!(
                "Messaggio di posta certificata\r\n\r\nIl giorno {} alle ore {} ({}) il messaggio\r\n\"{subject}\" è stato inviato da \"{from}\"\r\nindirizzato a:\r\n{to}\r\nIl messaggio originale è incluso in allegato.\r\nIdentificativo messaggio: opec-{index:08x}@pec.example.test\r\n",
                date.format("%d/%m/%Y"),
                date.format("%H:%M:%S"),
                "+0100"
            );
            let daticert = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<postacert tipo=\"posta-certificata\" errore=\"nessuno\">\r\n<intestazione><mittente>{from}</mittente><destinatari tipo=\"certificato\">{to}</destinatari><risposte>{from}</risposte><oggetto>{subject}</oggetto></intestazione>\r\n<dati><gestore-emittente>PEC Example</gestore-emittente><data zona=\"+0100\"><giorno>{}</giorno><ora>{}</ora></data><identificativo>opec-{index:08x}@pec.example.test</identificativo><msgid>&lt;{index}.{n}@example.test&gt;</msgid></dati>\r\n</postacert>\r\n",
                date.format("%d/%m/%Y"),
                date.format("%H:%M:%S")
            );
            let inner_text = prose(&mut rng, left(9_000));
            let inner = format!(
                "Content-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\nDate: {}\r\nFrom: {from}\r\nTo: {to}\r\nSubject: {}\r\nMessage-ID: <{index}.{n}@example.test>\r\nMIME-Version: 1.0\r\n{}",
                date.to_rfc2822(),
                header_text(&subject),
                text_part(&inner_text)
            );
            let signed = multipart(
                "mixed",
                &boundary("env"),
                &[
                    text_part(&notice),
                    format!(
                        "Content-Type: application/xml; name=\"daticert.xml\"\r\nContent-Disposition: inline; filename=\"daticert.xml\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{daticert}"
                    ),
                    inner,
                ],
            );
            let mut sig = vec![0u8; 2_500 + rng.usize(..1_500)];
            rng.fill(&mut sig);
            let b = boundary("sig");
            format!(
                "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{b}\"\r\n\r\nThis is an S/MIME signed message\r\n--{b}\r\n{signed}\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n{}--{b}--\r\n",
                base64(&sig)
            )
        }
    };
    let bytes = format!("{headers}{body}").into_bytes();
    let mut flags = Flags::new();
    if big.is_none() {
        if rng.u8(..100) < 75 {
            flags.insert("\\Seen".into());
        }
        if rng.u8(..100) < 8 {
            flags.insert("\\Answered".into());
        }
        if rng.u8(..100) < 5 {
            flags.insert("\\Flagged".into());
        }
    }
    Message {
        bytes,
        flags,
        date: date + chrono::Duration::seconds(3),
    }
}

fn rng_u32(seed: u64, index: usize) -> u32 {
    fastrand::Rng::with_seed(seed ^ (index as u64).rotate_left(17)).u32(..)
}

/// The message as a Maildir file in `dir/cur`: LF line ends, `S=` its size, `W=` the CRLF size
/// (what RFC822.SIZE reports), the flags as info letters, mtime = INTERNALDATE.
/// The keywords [`write_maildir`] can write (letters a, b, ... in this order), listed for
/// Dovecot by [`make_maildir`].
pub const KEYWORDS: [&str; 2] = ["$Forwarded", "$PecArchiviato"];

/// A Maildir folder (`cur`, `new`, `tmp`) at `dir` with Dovecot's keyword list ([`KEYWORDS`]).
pub fn make_maildir(dir: &Path) -> Result<()> {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("{}", dir.display()))?;
    }
    let list: String = KEYWORDS
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{i} {k}\n"))
        .collect();
    std::fs::write(dir.join("dovecot-keywords"), list)?;
    Ok(())
}

pub fn write_maildir(dir: &Path, index: usize, m: &Message) -> Result<()> {
    let lf: Vec<u8> = {
        let mut v = Vec::with_capacity(m.bytes.len());
        let mut i = 0;
        while i < m.bytes.len() {
            if m.bytes[i] == b'\r' && m.bytes.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            v.push(m.bytes[i]);
            i += 1;
        }
        v
    };
    let mut letters: Vec<char> = m
        .flags
        .iter()
        .filter_map(|f| match f.as_str() {
            "\\Draft" => Some('D'),
            "\\Flagged" => Some('F'),
            "\\Answered" => Some('R'),
            "\\Seen" => Some('S'),
            "\\Deleted" => Some('T'),
            k => KEYWORDS
                .iter()
                .position(|kw| *kw == k)
                .map(|i| char::from(b'a' + i as u8)),
        })
        .collect();
    // Upper-case system letters, then keyword letters: the order Dovecot writes.
    letters.sort_unstable();
    let name = format!(
        "{}.M{index:06}P{}.pecbench,S={},W={}:2,{}",
        m.date.timestamp(),
        std::process::id(),
        lf.len(),
        m.bytes.len(),
        letters.into_iter().collect::<String>()
    );
    let path = dir.join("cur").join(name);
    let mut f = std::fs::File::create(&path).with_context(|| format!("{}", path.display()))?;
    f.write_all(&lf)?;
    f.set_modified(SystemTime::from(m.date))?;
    Ok(())
}
