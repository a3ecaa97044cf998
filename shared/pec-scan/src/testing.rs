//! Samples for tests and the benchmark, generated at run time (no sample file is committed):
//! EICAR, zips (well-formed, bombs, encrypted, unsupported), MIME messages that carry them in
//! every way the issue lists, deep nestings, and a ~10 MB mixed message. Feature `testing`.

use std::io::Write;

/// The EICAR test file, assembled from two halves so that this source file does not itself
/// look like the test virus to a scanner reading the repository.
pub fn eicar() -> Vec<u8> {
    let mut v = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR".to_vec();
    v.extend_from_slice(b"-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

/// A marker only the project's ClamAV database knows (`PEC.Test.ClamavOnlyMarker`): proves
/// which engine of a chain found something.
pub fn clamav_only_marker() -> Vec<u8> {
    let mut v = b"PEC-CLAMAV-ONLY".to_vec();
    v.extend_from_slice(b"-TEST-MARKER-5d1e");
    v
}

/// A minimal PE header: `MZ`, `e_lfanew` = 0x40, `PE\0\0`.
pub fn pe_executable() -> Vec<u8> {
    let mut v = vec![0u8; 0x200];
    v[0] = b'M';
    v[1] = b'Z';
    v[0x3C] = 0x40;
    v[0x40..0x44].copy_from_slice(b"PE\0\0");
    v
}

/// A zip of `entries` (deflate), written with the zip crate.
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, options).expect("zip entry");
        w.write_all(data).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}

/// One entry of a hand-made zip (for shapes the zip writer refuses to make).
pub struct RawEntry<'a> {
    /// Entry name.
    pub name: &'a str,
    /// Compression method (0 stored, 8 deflate, 12 bzip2, ...).
    pub method: u16,
    /// General-purpose flags (bit 0: encrypted).
    pub flags: u16,
    /// The stored (compressed) bytes.
    pub data: &'a [u8],
    /// Declared uncompressed size.
    pub size: u32,
    /// Declared CRC-32.
    pub crc: u32,
}

/// A zip written byte by byte: local headers, data, central directory, end record.
pub fn raw_zip(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let name = e.name.as_bytes();
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&e.method.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
        out.extend_from_slice(&e.crc.to_le_bytes());
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(e.data);

        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&e.flags.to_le_bytes());
        central.extend_from_slice(&e.method.to_le_bytes());
        central.extend_from_slice(&[0, 0, 0x21, 0]);
        central.extend_from_slice(&e.crc.to_le_bytes());
        central.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        central.extend_from_slice(&e.size.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attrs
        central.extend_from_slice(&0u32.to_le_bytes()); // external attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A raw deflate stream that inflates to `mebibytes` MiB of zeros, built fast: one MiB of zeros
/// is compressed once with a full flush (a self-contained, byte-aligned run of blocks) and
/// repeated, then a final empty block closes the stream.
pub fn deflated_zeros(mebibytes: u32) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let zeros = vec![0u8; 1024 * 1024];
    let mut c = Compress::new(Compression::best(), false);
    let mut block = Vec::with_capacity(16 * 1024);
    c.compress_vec(&zeros, &mut block, FlushCompress::Full)
        .expect("deflate");
    let mut tail = Vec::with_capacity(64);
    c.compress_vec(&[], &mut tail, FlushCompress::Finish)
        .expect("deflate finish");
    let mut out = Vec::with_capacity(block.len() * mebibytes as usize + tail.len());
    for _ in 0..mebibytes {
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&tail);
    out
}

/// A zip bomb: one entry that inflates to `mebibytes` MiB (declared honestly, CRC not computed:
/// a scanner must stop long before it could check it).
pub fn zip_bomb(mebibytes: u32) -> Vec<u8> {
    let data = deflated_zeros(mebibytes);
    raw_zip(&[RawEntry {
        name: "zeros.bin",
        method: 8,
        flags: 0,
        data: &data,
        size: mebibytes.saturating_mul(1024 * 1024),
        crc: 0,
    }])
}

/// How an attachment travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Base64, 76 columns.
    Base64,
    /// Quoted-printable with every non-alphanumeric byte escaped and soft breaks every 20
    /// columns (so a signature is split across lines and must really be decoded).
    QuotedPrintable,
    /// As is (7bit/8bit).
    Identity,
}

/// One MIME part for [`message`].
pub struct Part {
    /// Content-Type value (with parameters if wanted).
    pub content_type: String,
    /// Filename, if an attachment.
    pub filename: Option<String>,
    /// Transfer encoding.
    pub encoding: Encoding,
    /// The body before encoding.
    pub body: Vec<u8>,
}

impl Part {
    /// A text/plain body part.
    pub fn text(text: &str) -> Self {
        Part {
            content_type: "text/plain; charset=utf-8".into(),
            filename: None,
            encoding: Encoding::Identity,
            body: text.as_bytes().to_vec(),
        }
    }

    /// An attachment.
    pub fn attachment(
        content_type: &str,
        filename: &str,
        encoding: Encoding,
        body: Vec<u8>,
    ) -> Self {
        Part {
            content_type: content_type.into(),
            filename: Some(filename.into()),
            encoding,
            body,
        }
    }

    /// A forwarded message (`message/rfc822`, 7bit, as PEC envelopes carry postacert.eml).
    pub fn forwarded(eml: Vec<u8>) -> Self {
        Part {
            content_type: "message/rfc822".into(),
            filename: Some("forwarded.eml".into()),
            encoding: Encoding::Identity,
            body: eml,
        }
    }
}

/// Base64 with CRLF every 76 columns.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(text.len() + text.len() / 38 + 2);
    for line in text.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn quoted_printable(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut column = 0;
    for &b in data {
        let piece = if b.is_ascii_alphanumeric() {
            vec![b]
        } else {
            format!("={b:02X}").into_bytes()
        };
        if column + piece.len() > 20 {
            out.extend_from_slice(b"=\r\n");
            column = 0;
        }
        column += piece.len();
        out.extend_from_slice(&piece);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A multipart/mixed message from `from` with `subject` and `parts`. `tag` makes the boundary
/// unique per nesting level.
pub fn message(tag: &str, subject: &str, parts: &[Part]) -> Vec<u8> {
    let boundary = format!("=_pec-scan-{tag}");
    let mut out = format!(
        "From: mittente@pec.example.test\r\nTo: destinatario@pec.example.test\r\n\
         Subject: {subject}\r\nMessage-ID: <{tag}@pec.example.test>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         This is a multi-part message in MIME format.\r\n"
    )
    .into_bytes();
    for part in parts {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: {}", part.content_type).as_bytes(),
        );
        if let Some(name) = &part.filename {
            out.extend_from_slice(format!("; name=\"{name}\"").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        let (cte, body) = match part.encoding {
            Encoding::Base64 => ("base64", base64_lines(&part.body)),
            Encoding::QuotedPrintable => ("quoted-printable", quoted_printable(&part.body)),
            Encoding::Identity => ("7bit", part.body.clone()),
        };
        out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
        if let Some(name) = &part.filename {
            out.extend_from_slice(
                format!("Content-Disposition: attachment; filename=\"{name}\"\r\n").as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        if !body.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// The EICAR cases of the issue: (name, message, expected part path of the detection).
pub fn eicar_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let e = eicar();
    let zipped = zip(&[("readme.txt", b"nothing here"), ("eicar.com", &e)]);
    let inner = message(
        "inner",
        "documenti",
        &[
            Part::text("vedi allegato"),
            Part::attachment(
                "application/zip",
                "eicar.zip",
                Encoding::Base64,
                zipped.clone(),
            ),
        ],
    );
    vec![
        (
            "plain attachment, base64",
            message(
                "plain",
                "eicar",
                &[
                    Part::text("allegato"),
                    Part::attachment(
                        "application/octet-stream",
                        "eicar.com",
                        Encoding::Base64,
                        e.clone(),
                    ),
                ],
            ),
            "2",
        ),
        (
            "attachment, quoted-printable",
            message(
                "qp",
                "eicar qp",
                &[
                    Part::text("allegato"),
                    Part::attachment(
                        "text/plain; charset=us-ascii",
                        "eicar.txt",
                        Encoding::QuotedPrintable,
                        e.clone(),
                    ),
                ],
            ),
            "2",
        ),
        (
            "inside a zip",
            message(
                "zip",
                "eicar zip",
                &[
                    Part::text("allegato"),
                    Part::attachment("application/zip", "eicar.zip", Encoding::Base64, zipped),
                ],
            ),
            "2!eicar.com",
        ),
        (
            "inside a zip inside a forwarded message/rfc822",
            message(
                "fwd",
                "I: documenti",
                &[Part::text("inoltro"), Part::forwarded(inner.clone())],
            ),
            "2.2!eicar.com",
        ),
        (
            "inside a zip inside a base64 message/rfc822",
            message(
                "fwd64",
                "I: documenti",
                &[
                    Part::text("inoltro"),
                    Part {
                        content_type: "message/rfc822".into(),
                        filename: Some("forwarded.eml".into()),
                        encoding: Encoding::Base64,
                        body: inner,
                    },
                ],
            ),
            "2.2!eicar.com",
        ),
    ]
}

/// `levels` forwarded messages inside each other (multipart/mixed with a text part and a
/// `message/rfc822` part at every level), the innermost carrying `payload` as an attachment.
pub fn nested_forwards(levels: usize, payload: &[u8]) -> Vec<u8> {
    let mut m = message(
        "level-0",
        "fondo",
        &[
            Part::text("ultimo livello"),
            Part::attachment(
                "application/octet-stream",
                "payload.bin",
                Encoding::Base64,
                payload.to_vec(),
            ),
        ],
    );
    for level in 1..=levels {
        m = message(
            &format!("level-{level}"),
            &format!("I: livello {level}"),
            &[Part::text("inoltro"), Part::forwarded(m)],
        );
    }
    m
}

/// `levels` zips inside each other, the innermost holding `payload` as `payload.bin`.
pub fn nested_zips(levels: usize, payload: &[u8]) -> Vec<u8> {
    let mut z = zip(&[("payload.bin", payload)]);
    for level in 1..=levels {
        let name = format!("level-{level}.zip");
        z = zip(&[(name.as_str(), &z)]);
    }
    z
}

/// A deterministic pseudo-random byte stream (xorshift), for incompressible test data.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Italian-looking text of about `len` bytes.
pub fn prose(len: usize) -> String {
    const WORDS: &[&str] = &[
        "gentile",
        "cliente",
        "si",
        "trasmette",
        "in",
        "allegato",
        "la",
        "fattura",
        "relativa",
        "al",
        "mese",
        "di",
        "novembre",
        "come",
        "da",
        "accordi",
        "cordiali",
        "saluti",
        "ufficio",
        "amministrazione",
        "posta",
        "elettronica",
        "certificata",
        "documento",
        "protocollo",
    ];
    let mut out = String::with_capacity(len + 16);
    let mut i = 7usize;
    while out.len() < len {
        i = i.wrapping_mul(31).wrapping_add(17);
        out.push_str(WORDS[i % WORDS.len()]);
        out.push(if i.is_multiple_of(13) { '\n' } else { ' ' });
    }
    out.truncate(len);
    out
}

/// A PDF-looking file: header, text objects with compressible content, binary streams.
pub fn pdf_like(len: usize, seed: u64) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut n = 1;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "{n} 0 obj\n<< /Type /Page /Contents {} 0 R >>\nstream\n",
                n + 1
            )
            .as_bytes(),
        );
        out.extend_from_slice(&noise(16 * 1024, seed + n));
        out.extend_from_slice(b"\nendstream\nendobj\n");
        out.extend_from_slice(prose(4 * 1024).as_bytes());
        n += 1;
    }
    out.extend_from_slice(b"\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
    out
}

/// A ~`megabytes` MB message with mixed attachments, for the benchmark: a text body, an HTML
/// part, a PDF-like attachment, a zip of text and binary files, and a forwarded message (with
/// its own PDF and zip). About half the bytes are incompressible.
pub fn mixed_message(megabytes: usize) -> Vec<u8> {
    let mb = 1024 * 1024;
    // Sized so that the raw message (base64 and quoted-printable included) is ~`megabytes` MB.
    let share = megabytes * mb / 7;
    let body = prose(64 * 1024);
    let html = format!("<html><body><p>{}</p></body></html>", prose(128 * 1024));
    let zipped = zip(&[
        ("fatture/elenco.csv", prose(share).as_bytes()),
        ("fatture/scansione.jpg", &noise(share, 11)),
        ("leggimi.txt", prose(16 * 1024).as_bytes()),
    ]);
    let inner = message(
        "bench-inner",
        "documenti",
        &[
            Part::text(&prose(32 * 1024)),
            Part::attachment(
                "application/pdf",
                "contratto.pdf",
                Encoding::Base64,
                pdf_like(share, 5),
            ),
            Part::attachment(
                "application/zip",
                "allegati.zip",
                Encoding::Base64,
                zip(&[
                    ("nota.txt", prose(share / 2).as_bytes()),
                    ("dati.bin", &noise(share / 2, 7)),
                ]),
            ),
        ],
    );
    message(
        "bench",
        "Fattura novembre",
        &[
            Part::text(&body),
            Part {
                content_type: "text/html; charset=utf-8".into(),
                filename: None,
                encoding: Encoding::QuotedPrintable,
                body: html.into_bytes(),
            },
            Part::attachment(
                "application/pdf",
                "fattura.pdf",
                Encoding::Base64,
                pdf_like(2 * share, 3),
            ),
            Part::attachment("application/zip", "fatture.zip", Encoding::Base64, zipped),
            Part::forwarded(inner),
        ],
    )
}

/// A fake engine for tests: finds `needle` in items, or is down, or is slow; counts its calls.
pub struct FakeEngine {
    /// Its name in verdicts.
    pub name: String,
    /// What it detects (`None`: detects nothing).
    pub needle: Option<Vec<u8>>,
    /// Reported signature.
    pub signature: String,
    /// Behaviour.
    pub mode: FakeMode,
    /// Calls to [`crate::Engine::scan`].
    pub calls: std::sync::atomic::AtomicUsize,
    /// Items seen over all calls.
    pub items_seen: std::sync::atomic::AtomicUsize,
}

/// How a [`FakeEngine`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeMode {
    /// Scans.
    Working,
    /// Answers every call with [`crate::EngineError::Unavailable`].
    Down,
    /// Never answers (until the deadline).
    Hanging,
}

impl FakeEngine {
    /// An engine named `name` that reports `signature` wherever `needle` occurs.
    pub fn detecting(name: &str, needle: &[u8], signature: &str) -> Self {
        Self {
            name: name.into(),
            needle: Some(needle.to_vec()),
            signature: signature.into(),
            mode: FakeMode::Working,
            calls: Default::default(),
            items_seen: Default::default(),
        }
    }

    /// An engine that finds nothing.
    pub fn clean(name: &str) -> Self {
        Self {
            needle: None,
            ..Self::detecting(name, b"", "")
        }
    }

    /// An engine that is down.
    pub fn down(name: &str) -> Self {
        Self {
            mode: FakeMode::Down,
            ..Self::clean(name)
        }
    }

    /// An engine that never answers.
    pub fn hanging(name: &str) -> Self {
        Self {
            mode: FakeMode::Hanging,
            ..Self::clean(name)
        }
    }

    /// Calls so far.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl crate::Engine for FakeEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn scan<'a>(
        &'a self,
        items: &'a [std::sync::Arc<crate::Item>],
        deadline: std::time::Instant,
    ) -> crate::BoxFuture<'a, Result<Option<crate::Detection>, crate::EngineError>> {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match self.mode {
                FakeMode::Down => {
                    return Err(crate::EngineError::Unavailable {
                        engine: self.name.clone(),
                        detail: "connection refused (fake)".into(),
                    });
                }
                FakeMode::Hanging => {
                    tokio::time::sleep_until(deadline.into()).await;
                    return Err(crate::EngineError::DeadlineExceeded);
                }
                FakeMode::Working => {}
            }
            for (index, item) in items.iter().enumerate() {
                self.items_seen.fetch_add(1, Ordering::SeqCst);
                if let Some(needle) = &self.needle
                    && !needle.is_empty()
                    && item
                        .data
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice())
                {
                    return Ok(Some(crate::Detection {
                        index,
                        signature: self.signature.clone(),
                    }));
                }
            }
            Ok(None)
        })
    }
}
