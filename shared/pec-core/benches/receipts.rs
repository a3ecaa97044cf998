//! How many full receipt sets one core builds per second: for a 100 KB message with two
//! attachments, one set is what the providers emit for one recipient —
//! the access point's `accept` (postacert.eml rewrite) + acceptance receipt + transport
//! envelope, and the recipient provider's delivery receipt (completa, with the original).
//! Unsigned: signing is measured by the signing crate's benchmark.
//!
//! Run: `cargo bench -p pec-core --bench receipts` (plain std::time, no criterion: a warm-up,
//! then several timed rounds; the median and best rounds are printed).

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use pec_core::build::{self, Ctx, Provider};
use pec_core::classify::classify;
use pec_core::daticert::TipoDestinatario;
use pec_core::ids::SequentialIds;
use pec_core::original;
use pec_core::policy::RecipientRole;
use pec_core::signed::assemble_signed;

/// Deterministic pseudo-random bytes (xorshift), so attachments do not compress to nothing.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn b64_lines(data: &[u8]) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(s.len() + s.len() / 76 * 2 + 2);
    for chunk in s.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// A ~100 KB message: a text body and two attachments (about 44 KB and 29 KB before base64).
fn message() -> Vec<u8> {
    let pdf = b64_lines(&noise(44_000, 0x9e37_79b9_7f4a_7c15));
    let xml = b64_lines(&noise(29_000, 0xdead_beef_cafe_f00d));
    format!(
        "From: \"Studio Bianchi\" <studio.bianchi@pec.example.it>\r\n\
         To: protocollo@pec.comune.example.it\r\n\
         Subject: Fattura elettronica e allegati - perché\r\n\
         Date: Wed, 02 Dec 2026 09:41:00 +0100\r\n\
         Message-ID: <bench-1@mua.example.it>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n\
         --=_b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n\
         --=_b\r\nContent-Type: application/pdf; name=\"fattura.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"fattura.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{pdf}\
         --=_b\r\nContent-Type: application/xml; name=\"fattura.xml\"\r\n\
         Content-Disposition: attachment; filename=\"fattura.xml\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{xml}\
         --=_b--\r\n",
        "Si trasmettono fattura e metadati. ".repeat(20)
    )
    .into_bytes()
}

fn tipo_of(a: &str) -> TipoDestinatario {
    if a.ends_with("@pec.comune.example.it") {
        TipoDestinatario::Certificato
    } else {
        TipoDestinatario::Esterno
    }
}

/// One full set; returns the total bytes produced (so nothing is optimised away).
fn receipt_set(raw: &[u8], a: &Provider, b: &Provider, now: DateTime<Utc>, n: u64) -> usize {
    let ident = format!("20261202084100000.t{n}@pec.example.it");
    let acc = original::accept(raw, &ident, "<fallback@pec.example.it>", &tipo_of).expect("accept");
    let mut ids = SequentialIds::new("a");
    let mut ctx = Ctx {
        provider: a,
        now,
        ids: &mut ids,
    };
    let r1 = build::accettazione(&mut ctx, &acc.certified).expect("accettazione");
    let r2 = build::busta_trasporto(&mut ctx, &acc).expect("busta");
    let mut ids = SequentialIds::new("b");
    let mut ctx = Ctx {
        provider: b,
        now,
        ids: &mut ids,
    };
    let r3 = build::avvenuta_consegna(
        &mut ctx,
        &acc.certified,
        "protocollo@pec.comune.example.it",
        RecipientRole::Primary,
        &acc.postacert,
    )
    .expect("consegna");
    r1.entity.len() + r2.entity.len() + r3.entity.len()
}

/// Run `f` repeatedly for `d`; return the number of calls per second.
fn rate(d: Duration, mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < d {
        f(n);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn report(label: &str, mut rounds: Vec<f64>) {
    rounds.sort_by(|a, b| a.total_cmp(b));
    let median = rounds[rounds.len() / 2];
    let best = rounds[rounds.len() - 1];
    let worst = rounds[0];
    println!(
        "{label}: median {median:.0}/s, best {best:.0}/s, worst {worst:.0}/s over {} rounds ({:.2} ms each at the median)",
        rounds.len(),
        1000.0 / median
    );
}

fn main() {
    let raw = message();
    let a = Provider::new("Example PEC S.p.A.", "pec.example.it").expect("provider");
    let b = Provider::new("Comune Gestore PEC S.r.l.", "gestore-b.example.net").expect("provider");
    let now = DateTime::parse_from_rfc3339("2026-12-02T08:41:07Z")
        .expect("time")
        .with_timezone(&Utc);
    let out = receipt_set(&raw, &a, &b, now, 0);
    println!(
        "message: {} bytes, 2 attachments; one set = accept + accettazione + busta di trasporto + avvenuta consegna (completa) = {} bytes of entities",
        raw.len(),
        out
    );

    let rounds = 7;
    let round = Duration::from_millis(1500);
    // Warm-up.
    rate(Duration::from_secs(1), |n| {
        black_box(receipt_set(black_box(&raw), &a, &b, now, n));
    });
    let sets: Vec<f64> = (0..rounds)
        .map(|_| {
            rate(round, |n| {
                black_box(receipt_set(black_box(&raw), &a, &b, now, n));
            })
        })
        .collect();
    report("receipt sets per second (one core)", sets);

    // For reference: classifying the delivery receipt as received (signed framing).
    let acc = original::accept(&raw, "1.t@pec.example.it", "<f@pec.example.it>", &tipo_of)
        .expect("accept");
    let mut ids = SequentialIds::new("c");
    let mut ctx = Ctx {
        provider: &b,
        now,
        ids: &mut ids,
    };
    let receipt = build::avvenuta_consegna(
        &mut ctx,
        &acc.certified,
        "protocollo@pec.comune.example.it",
        RecipientRole::Primary,
        &acc.postacert,
    )
    .expect("consegna");
    let signed = assemble_signed(&receipt, &[0x30, 0x03, 0x02, 0x01, 0x00], "----=_SIG_bench");
    rate(Duration::from_millis(500), |_| {
        black_box(classify(black_box(&signed)));
    });
    let cls: Vec<f64> = (0..rounds)
        .map(|_| {
            rate(round, |_| {
                black_box(classify(black_box(&signed)));
            })
        })
        .collect();
    report(
        &format!(
            "classify of a {} byte delivery receipt per second (one core)",
            signed.len()
        ),
        cls,
    );
}
