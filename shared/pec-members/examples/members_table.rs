//! Writes a members table (.xlsx) for benchmarks and demos: `ROWS` members with Italian names
//! (accents, apostrophes, two-word names; repeated names, so addresses collide), valid fiscal
//! codes (check character computed), contact addresses and mobiles.
//!
//!   cargo run -p pec-members --example members_table -- ROWS OUT.xlsx [TAG]
//!
//! TAG (default `socio`) goes into every contact address and seeds the fiscal codes, so tables
//! with different tags are different people.

use pec_members::fiscal::check_character;

const NOMI: [&str; 24] = [
    "Mario",
    "Anna",
    "Nicolò",
    "Maria Grazia",
    "Luca",
    "Giulia",
    "Francesco",
    "Chiara",
    "Alessandro",
    "Sofia",
    "Lorenzo",
    "Martina",
    "Matteo",
    "Sara",
    "Andrea",
    "Elena",
    "Davide",
    "Federica",
    "Gabriele",
    "Valentina",
    "Riccardo",
    "Alessia",
    "Tommaso",
    "Beatrice",
];
const COGNOMI: [&str; 24] = [
    "Rossi", "Bianchi", "D'Angelo", "De Luca", "Esposito", "Romano", "Colombo", "Ricci", "Marino",
    "Greco", "Bruno", "Gallo", "Conti", "Costa", "Giordano", "Mancini", "Rizzo", "Lombardi",
    "Moretti", "Barbieri", "Fontana", "Santoro", "Mariani", "Rinaldi",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(rows), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: members_table ROWS OUT.xlsx [TAG]");
        std::process::exit(2);
    };
    let rows: usize = rows.parse()?;
    let tag = args.get(2).map(String::as_str).unwrap_or("socio");
    let seed = tag.bytes().fold(7usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    }) % 200_000_000;
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in [
        "Nome",
        "Cognome",
        "Codice fiscale",
        "E-mail",
        "Cellulare",
        "Piano",
    ]
    .iter()
    .enumerate()
    {
        sheet.write_string(0, c as u16, *h)?;
    }
    for i in 0..rows {
        let row = (i + 1) as u32;
        // 24 x 24 names: from 576 rows on, names repeat and addresses get numbers.
        let nome = NOMI[i % NOMI.len()];
        let cognome = COGNOMI[(i / NOMI.len()) % COGNOMI.len()];
        // Six letters from the row number (unique), then a fixed birth date and a town code.
        let mut letters = String::new();
        let mut n = seed + i;
        for _ in 0..6 {
            letters.push(char::from(b'A' + (n % 26) as u8));
            n /= 26;
        }
        let first15 = format!("{letters}85T10A{:03}", i % 1000);
        let cf = format!("{first15}{}", check_character(&first15));
        sheet.write_string(row, 0, nome)?;
        sheet.write_string(row, 1, cognome)?;
        sheet.write_string(row, 2, &cf)?;
        sheet.write_string(row, 3, format!("{tag}.{i}@contatti.example.com"))?;
        sheet.write_number(row, 4, 3_200_000_000.0 + i as f64)?;
        sheet.write_string(row, 5, ["pro", "standard", "gold", ""][i % 4])?;
    }
    book.save(out)?;
    println!("{out}: {rows} members");
    Ok(())
}
