//! Reading a members table: CSV (UTF-8, `;`, `,` or tab separated, as Excel and LibreOffice
//! export it) or Excel `.xlsx` (the first sheet, read with `calamine`), with a header row naming
//! the columns in Italian or English, then validating every row into a [`Member`] or a
//! [`RowError`] that lists everything wrong with that row.
//!
//! Columns (case and blanks ignored): `nome`/`name`, `cognome`/`surname`, `codice fiscale`/
//! `fiscal code`/`cf`, `email`/`e-mail`/`contact email`, optionally `cellulare`/`mobile` and
//! `piano`/`plan`. Blank rows are skipped.

use std::collections::HashMap;
use std::io::Cursor;

use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
use pec_core::plan::{self, Plan};

use crate::{Member, RowError, fiscal_code, mobile_e164};

/// A table as read: the header and each row with its number in the file (1 = the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

/// Why a table cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("{0}: not a .csv or .xlsx file")]
    Format(String),
    #[error("CSV: {0}")]
    Csv(String),
    #[error("row {0} is not UTF-8: export the table as \"CSV UTF-8\"")]
    NotUtf8(usize),
    #[error("Excel: {0}")]
    Xlsx(String),
    #[error("the table has no header row")]
    Empty,
    #[error("no {0} column (the header has: {1})")]
    MissingColumn(&'static str, String),
    #[error("two columns are {0}: {1:?} and {2:?}")]
    DuplicateColumn(&'static str, String, String),
}

/// Reads a table by its file name's extension (`.csv`, `.xlsx`).
pub fn read(file_name: &str, bytes: &[u8]) -> Result<Table, TableError> {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".xlsx") {
        read_xlsx(bytes)
    } else if lower.ends_with(".csv") || lower.ends_with(".txt") {
        read_csv(bytes)
    } else {
        Err(TableError::Format(file_name.to_string()))
    }
}

fn read_csv(bytes: &[u8]) -> Result<Table, TableError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let delimiter = [b';', b',', b'\t']
        .into_iter()
        .max_by_key(|d| first_line.iter().filter(|b| *b == d).count())
        .unwrap_or(b',');
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes);
    let mut rows = Vec::new();
    // Rows are numbered as a spreadsheet shows them, the header being 1: a blank line is a
    // row (the reader skips it, its line number does not), a quoted cell spanning lines is not.
    let mut inside = 0;
    for (i, record) in reader.byte_records().enumerate() {
        let record = record.map_err(|e| TableError::Csv(e.to_string()))?;
        // The reader's position is where it started reading: before the blank lines it skipped.
        let line = record
            .position()
            .map(|p| {
                let mut start = (p.byte() as usize).min(bytes.len());
                while matches!(bytes.get(start), Some(b'\r' | b'\n')) {
                    start += 1;
                }
                let before = bytes[..start].iter().filter(|b| **b == b'\n').count();
                before + 1 - inside.min(before)
            })
            .unwrap_or(i + 1);
        inside += record.iter().flatten().filter(|b| **b == b'\n').count();
        let mut fields = Vec::with_capacity(record.len());
        for f in record.iter() {
            fields.push(String::from_utf8(f.to_vec()).map_err(|_| TableError::NotUtf8(line))?);
        }
        rows.push((line, fields));
    }
    split_header(rows)
}

fn cell(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) => s.clone(),
        // Numbers typed into cells (mobiles, codes) come back as floats: no ".0".
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        other => other.to_string(),
    }
}

fn read_xlsx(bytes: &[u8]) -> Result<Table, TableError> {
    let mut book: Xlsx<_> = open_workbook_from_rs(Cursor::new(bytes))
        .map_err(|e: calamine::XlsxError| TableError::Xlsx(e.to_string()))?;
    let range = book
        .worksheet_range_at(0)
        .ok_or(TableError::Empty)?
        .map_err(|e| TableError::Xlsx(e.to_string()))?;
    let first_row = range.start().map(|(r, _)| r as usize).unwrap_or(0);
    let rows = range
        .rows()
        .enumerate()
        .map(|(i, r)| (first_row + i + 1, r.iter().map(cell).collect()))
        .collect();
    split_header(rows)
}

fn split_header(mut rows: Vec<(usize, Vec<String>)>) -> Result<Table, TableError> {
    rows.retain(|(_, r)| r.iter().any(|c| !c.trim().is_empty()));
    if rows.is_empty() {
        return Err(TableError::Empty);
    }
    let (_, header) = rows.remove(0);
    Ok(Table { header, rows })
}

/// The column roles and the names each is known by (compared without case, blanks, `_`, `-`).
const COLUMNS: [(&str, &[&str]); 6] = [
    ("nome", &["nome", "name", "firstname", "givenname"]),
    ("cognome", &["cognome", "surname", "lastname", "familyname"]),
    (
        "codice fiscale",
        &["codicefiscale", "cf", "fiscalcode", "taxcode"],
    ),
    (
        "email",
        &[
            "email",
            "mail",
            "emaildicontatto",
            "contactemail",
            "emailcontatto",
        ],
    ),
    (
        "cellulare",
        &[
            "cellulare",
            "mobile",
            "cell",
            "telefono",
            "phone",
            "mobilephone",
        ],
    ),
    ("piano", &["piano", "plan"]),
];

/// Columns a table may leave out (and may name twice: the more specific name is used).
const OPTIONAL: [&str; 2] = ["cellulare", "piano"];

fn key(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Validates every row: the members, and the rows refused with their reasons (a duplicate
/// fiscal code refuses the later row). `default_plan` for rows without a plan.
pub fn members(
    table: &Table,
    default_plan: Plan,
) -> Result<(Vec<Member>, Vec<RowError>), TableError> {
    let mut at: HashMap<&str, usize> = HashMap::new();
    // The place of a header's name in its role's list: the more specific name wins when an
    // optional column appears twice (`Telefono` and `Cellulare`: the mobile is `Cellulare`).
    let rank = |role: &str, header: &str| {
        COLUMNS
            .iter()
            .find(|(r, _)| *r == role)
            .and_then(|(_, names)| names.iter().position(|n| *n == key(header)))
            .unwrap_or(usize::MAX)
    };
    for (i, name) in table.header.iter().enumerate() {
        let k = key(name);
        let Some((role, _)) = COLUMNS
            .iter()
            .find(|(_, names)| names.contains(&k.as_str()))
        else {
            continue;
        };
        match at.get(role).copied() {
            None => {
                at.insert(role, i);
            }
            Some(prev) if OPTIONAL.contains(role) => {
                if rank(role, name) < rank(role, &table.header[prev]) {
                    at.insert(role, i);
                }
            }
            Some(prev) => {
                return Err(TableError::DuplicateColumn(
                    role,
                    table.header[prev].clone(),
                    name.clone(),
                ));
            }
        }
    }
    for role in ["nome", "cognome", "codice fiscale", "email"] {
        if !at.contains_key(role) {
            return Err(TableError::MissingColumn(role, table.header.join(", ")));
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (row, cells) in &table.rows {
        let get = |role: &str| {
            at.get(role)
                .and_then(|i| cells.get(*i))
                .map(|c| c.trim().to_string())
                .unwrap_or_default()
        };
        let mut reasons = Vec::new();
        let (nome, cognome) = (get("nome"), get("cognome"));
        if nome.is_empty() {
            reasons.push("the name is empty".to_string());
        }
        if cognome.is_empty() {
            reasons.push("the surname is empty".to_string());
        }
        let cf = match fiscal_code(&get("codice fiscale")) {
            Ok(cf) => {
                if let Some(first) = seen.get(&cf) {
                    reasons.push(format!("fiscal code {cf} is also on row {first}"));
                } else {
                    seen.insert(cf.clone(), *row);
                }
                cf
            }
            Err(e) => {
                reasons.push(e.to_string());
                String::new()
            }
        };
        let email = contact_email(&get("email")).unwrap_or_else(|e| {
            reasons.push(e);
            String::new()
        });
        let mobile = match get("cellulare") {
            m if m.is_empty() => None,
            m => match mobile_e164(&m) {
                Ok(m) => Some(m),
                Err(e) => {
                    reasons.push(e.to_string());
                    None
                }
            },
        };
        let plan = match get("piano") {
            p if p.is_empty() => default_plan,
            p => match plan::parse_plan(&p) {
                Ok(p) => p,
                Err(e) => {
                    reasons.push(e.to_string());
                    default_plan
                }
            },
        };
        if reasons.is_empty() {
            good.push(Member {
                row: *row,
                nome,
                cognome,
                fiscal_code: cf,
                email,
                mobile,
                plan,
            });
        } else {
            bad.push(RowError { row: *row, reasons });
        }
    }
    Ok((good, bad))
}

/// A contact address mail can reach: an addr-spec whose domain is a real domain name (two
/// labels at least); the domain lower-cased.
fn contact_email(given: &str) -> Result<String, String> {
    let bad = || format!("contact e-mail {given:?} is not an e-mail address");
    let (local, domain) = given.rsplit_once('@').ok_or_else(bad)?;
    let address = format!("{local}@{}", domain.to_ascii_lowercase());
    if !pec_core::addr::is_addr_spec(&address)
        || pec_core::domain::check(&domain.to_ascii_lowercase()).is_err()
    {
        return Err(bad());
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\u{feff}Nome;Cognome;Codice Fiscale;E-mail;Cellulare;Piano\r\n\
        Mario;Rossi;rssmra85t10a562s;mario@example.com;333 123 4567;\r\n\
        ;;;;;\r\n\
        Anna;Bianchi;BNCNNA80A41H501R;anna@example.com;;gold\r\n\
        Luigi;Verdi;RSSMRA85T10A562S;luigi@example;06 123;platinum\r\n\
        Gianni;;XXXXXX;gianni@example.com;;\r\n";

    /// Row numbers as a spreadsheet shows the file: blank lines count, a quoted cell over two
    /// lines does not.
    #[test]
    fn csv_rows_are_numbered_as_a_spreadsheet_shows_them() {
        let csv = "Nome;Cognome;Codice fiscale;E-mail\n\n\nMario;Rossi;X;m@example.com\n\
            \"Anna\nMaria\";Bianchi;Y;a@example.com\n\nLuigi;Verdi;Z;l@example.com\n";
        let t = read("soci.csv", csv.as_bytes()).unwrap();
        let rows: Vec<(usize, &str)> = t.rows.iter().map(|(n, r)| (*n, r[1].as_str())).collect();
        assert_eq!(rows, [(4, "Rossi"), (5, "Bianchi"), (7, "Verdi")]);
    }

    #[test]
    fn csv_rows_become_members_or_reasons() {
        let t = read("soci.csv", CSV.as_bytes()).unwrap();
        assert_eq!(t.header[0], "Nome");
        let (good, bad) = members(&t, Plan::Standard).unwrap();
        assert_eq!(
            good,
            vec![
                Member {
                    row: 2,
                    nome: "Mario".into(),
                    cognome: "Rossi".into(),
                    fiscal_code: "RSSMRA85T10A562S".into(),
                    email: "mario@example.com".into(),
                    mobile: Some("+393331234567".into()),
                    plan: Plan::Standard,
                },
                Member {
                    row: 4,
                    nome: "Anna".into(),
                    cognome: "Bianchi".into(),
                    fiscal_code: "BNCNNA80A41H501R".into(),
                    email: "anna@example.com".into(),
                    mobile: None,
                    plan: Plan::Gold,
                },
            ]
        );
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].row, 5);
        let luigi = bad[0].to_string();
        for part in [
            "fiscal code RSSMRA85T10A562S is also on row 2",
            "contact e-mail \"luigi@example\" is not an e-mail address",
            "mobile \"06 123\"",
            "unknown plan \"platinum\"",
        ] {
            assert!(luigi.contains(part), "{luigi}");
        }
        assert_eq!(bad[1].row, 6);
        assert!(bad[1].to_string().contains("the surname is empty"));
        assert!(bad[1].to_string().contains("16 characters expected"));
    }

    #[test]
    fn whole_table_problems() {
        assert_eq!(
            read("soci.ods", b"x"),
            Err(TableError::Format("soci.ods".into()))
        );
        assert_eq!(read("soci.csv", b"\n\n"), Err(TableError::Empty));
        assert_eq!(
            read("soci.csv", b"nome,cognome\n\xff\xfe,x\n"),
            Err(TableError::NotUtf8(2))
        );
        let t = read("soci.csv", b"name,surname,email\nA,B,a@b.it\n").unwrap();
        assert_eq!(
            members(&t, Plan::Base).unwrap_err().to_string(),
            "no codice fiscale column (the header has: name, surname, email)"
        );
        let t = read("soci.csv", b"nome,name,cf,email\n").unwrap();
        assert!(matches!(
            members(&t, Plan::Base),
            Err(TableError::DuplicateColumn("nome", ..))
        ));
        assert!(matches!(
            read("soci.xlsx", b"not a zip"),
            Err(TableError::Xlsx(_))
        ));
    }

    #[test]
    fn xlsx_reads_like_csv() {
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        for (c, h) in ["Name", "Surname", "Fiscal code", "Contact email", "Mobile"]
            .iter()
            .enumerate()
        {
            sheet.write_string(0, c as u16, *h).unwrap();
        }
        sheet.write_string(1, 0, "Nicolò").unwrap();
        sheet.write_string(1, 1, "D'Angelo").unwrap();
        sheet.write_string(1, 2, "RSSMRA85T10A562S").unwrap();
        sheet.write_string(1, 3, "n@example.com").unwrap();
        sheet.write_number(1, 4, 3331234567.0).unwrap();
        let bytes = book.save_to_buffer().unwrap();
        let t = read("Soci.XLSX", &bytes).unwrap();
        let (good, bad) = members(&t, Plan::Pro).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good[0].row, 2);
        assert_eq!(good[0].nome, "Nicolò");
        assert_eq!(good[0].mobile.as_deref(), Some("+393331234567"));
        assert_eq!(good[0].plan, Plan::Pro);
    }
}
