//! A distribution list: a table (CSV or `.xlsx`, read by `pec_members::table`: BOM, `;` `,` or
//! tab separators, quoted cells spanning lines, the first sheet of a workbook) whose header row
//! names the columns. One column holds the recipient's address; every column becomes a template
//! parameter.
//!
//! A column's template name is its header with accents folded and anything else than ASCII
//! letters, digits and `_` turned into `_` (`Codice Fiscale` → `Codice_Fiscale`, `Località` →
//! `Localita`), so `{{ Codice_Fiscale }}` names it.
//!
//! Rows that cannot be sent are set aside with their reason, never dropped: an address that is
//! missing or not an address, a repeated address (sent once, to the first row), a cell holding
//! a control character other than a line break or tab.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use pec_members::table::TableError;

/// The most rows a list may have unless the caller says otherwise.
pub const DEFAULT_MAX_ROWS: usize = 100_000;

/// A column: its header as written and its name in templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub header: String,
    pub name: String,
}

/// A row that can be sent: its number in the file (1 = the header), the recipient, and every
/// column's value by template name (trimmed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub row: usize,
    pub address: String,
    pub values: BTreeMap<String, String>,
}

/// A row set aside, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub row: usize,
    /// The address as the row gives it (may be empty or malformed).
    pub address: String,
    pub reason: String,
}

/// A list as read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    pub columns: Vec<Column>,
    /// The header of the address column.
    pub address_column: String,
    pub rows: Vec<Row>,
    pub skipped: Vec<Skipped>,
}

/// How to read a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The address column's header (or template name); found by its name when `None`.
    pub address_column: Option<String>,
    /// More rows than this are refused (the cap is named in the error).
    pub max_rows: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            address_column: None,
            max_rows: DEFAULT_MAX_ROWS,
        }
    }
}

/// Why a list cannot be used at all (nothing is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("{0}")]
    Table(#[from] TableError),
    #[error("the list has a header row but no recipients")]
    NoRows,
    #[error("the list has {rows} rows; at most {cap} may be sent in one job")]
    TooMany { rows: usize, cap: usize },
    #[error(
        "no column holds the addresses: name one PEC, Email, Indirizzo or Destinatario, or say which (the header has: {header})"
    )]
    NoAddressColumn { header: String },
    #[error("two columns could hold the addresses, {0:?} and {1:?}: say which")]
    AmbiguousAddressColumn(String, String),
    #[error("no column {asked:?} (the header has: {header})")]
    UnknownAddressColumn { asked: String, header: String },
    #[error("column {0} has no name in the header row")]
    UnnamedColumn(usize),
    #[error("columns {0:?} and {1:?} have the same template name {2}")]
    DuplicateColumn(String, String, String),
}

/// A column's name in templates.
pub fn template_name(header: &str) -> String {
    let folded = deunicode::deunicode(header.trim());
    let mut name = String::with_capacity(folded.len());
    for c in folded.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(c == '_' && name.ends_with('_')) {
            name.push(c);
        }
    }
    let name = name.trim_matches('_').to_string();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{name}")
    } else {
        name
    }
}

/// Names of the address column, most specific first (compared as template names, lower case).
const ADDRESS_NAMES: [&[&str]; 3] = [
    &[
        "pec",
        "indirizzo_pec",
        "email_pec",
        "pec_email",
        "casella_pec",
    ],
    &[
        "email",
        "e_mail",
        "mail",
        "indirizzo_email",
        "indirizzo_e_mail",
        "email_address",
    ],
    &["indirizzo", "address", "destinatario", "recipient"],
];

fn address_column(columns: &[Column], asked: Option<&str>) -> Result<usize, ListError> {
    let header = || {
        columns
            .iter()
            .map(|c| c.header.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(asked) = asked {
        let want = asked.trim().to_lowercase();
        let want_name = template_name(asked).to_lowercase();
        return columns
            .iter()
            .position(|c| {
                c.header.trim().to_lowercase() == want || c.name.to_lowercase() == want_name
            })
            .ok_or_else(|| ListError::UnknownAddressColumn {
                asked: asked.to_string(),
                header: header(),
            });
    }
    for names in ADDRESS_NAMES {
        let found: Vec<usize> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| names.contains(&c.name.to_lowercase().as_str()))
            .map(|(i, _)| i)
            .collect();
        match found.as_slice() {
            [] => continue,
            [one] => return Ok(*one),
            [a, b, ..] => {
                return Err(ListError::AmbiguousAddressColumn(
                    columns[*a].header.clone(),
                    columns[*b].header.clone(),
                ));
            }
        }
    }
    Err(ListError::NoAddressColumn { header: header() })
}

/// The first control character of `v` other than line breaks and tabs.
pub(crate) fn bad_control(v: &str) -> Option<char> {
    v.chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// Reads and checks a list (`file_name`'s extension picks CSV or Excel).
pub fn read(file_name: &str, bytes: &[u8], options: &Options) -> Result<List, ListError> {
    let table = pec_members::table::read(file_name, bytes)?;
    from_table(table, options)
}

/// Checks a table already read.
pub fn from_table(table: pec_members::Table, options: &Options) -> Result<List, ListError> {
    let mut columns: Vec<Column> = Vec::with_capacity(table.header.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // Trailing unnamed columns of empty cells are common in exports: ignore them; an unnamed
    // column among named ones is an error only if some row fills it.
    for (i, h) in table.header.iter().enumerate() {
        let name = template_name(h);
        if name.is_empty() {
            if table
                .rows
                .iter()
                .any(|(_, r)| r.get(i).is_some_and(|c| !c.trim().is_empty()))
            {
                return Err(ListError::UnnamedColumn(i + 1));
            }
            columns.push(Column {
                header: String::new(),
                name: String::new(),
            });
            continue;
        }
        if let Some(&j) = by_name.get(&name.to_lowercase()) {
            return Err(ListError::DuplicateColumn(
                columns[j].header.clone(),
                h.trim().to_string(),
                name,
            ));
        }
        by_name.insert(name.to_lowercase(), i);
        columns.push(Column {
            header: h.trim().to_string(),
            name,
        });
    }
    let at = address_column(
        &columns
            .iter()
            .filter(|c| !c.name.is_empty())
            .cloned()
            .collect::<Vec<_>>(),
        options.address_column.as_deref(),
    )?;
    // `at` indexes the named columns: map it back.
    let at = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.name.is_empty())
        .nth(at)
        .map(|(i, _)| i)
        .unwrap_or(0);
    let rows: Vec<&(usize, Vec<String>)> = table
        .rows
        .iter()
        .filter(|(_, r)| r.iter().any(|c| !c.trim().is_empty()))
        .collect();
    if rows.is_empty() {
        return Err(ListError::NoRows);
    }
    if rows.len() > options.max_rows {
        return Err(ListError::TooMany {
            rows: rows.len(),
            cap: options.max_rows,
        });
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    let mut skipped = Vec::new();
    for (n, cells) in rows {
        let raw = cells.get(at).map(|s| s.trim()).unwrap_or_default();
        let skip = |reason: String| Skipped {
            row: *n,
            address: raw.to_string(),
            reason,
        };
        let address = raw
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_ascii_lowercase();
        if address.is_empty() {
            skipped.push(skip("no address".into()));
            continue;
        }
        if !pec_core::addr::is_addr_spec(&address) {
            skipped.push(skip(format!("{raw:?} is not an e-mail address")));
            continue;
        }
        let mut values = BTreeMap::new();
        let mut bad = None;
        for (c, v) in columns.iter().zip(cells.iter()) {
            if c.name.is_empty() {
                continue;
            }
            if let Some(ch) = bad_control(v) {
                bad = Some(format!(
                    "column {:?} holds the control character U+{:04X}",
                    c.header, ch as u32
                ));
                break;
            }
            values.insert(c.name.clone(), v.trim().to_string());
        }
        if let Some(reason) = bad {
            skipped.push(skip(reason));
            continue;
        }
        if let Some(first) = seen.get(&address) {
            skipped.push(skip(format!("the same address as row {first}: sent once")));
            continue;
        }
        seen.insert(address.clone(), *n);
        // Cells missing at the end of a short row are empty values.
        for c in columns.iter().filter(|c| !c.name.is_empty()) {
            values.entry(c.name.clone()).or_default();
        }
        out.push(Row {
            row: *n,
            address,
            values,
        });
    }
    let address_column = columns[at].header.clone();
    columns.retain(|c| !c.name.is_empty());
    Ok(List {
        columns,
        address_column,
        rows: out,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Result<List, ListError> {
        read("lista.csv", text.as_bytes(), &Options::default())
    }

    #[test]
    fn template_names() {
        assert_eq!(template_name(" Codice Fiscale "), "Codice_Fiscale");
        assert_eq!(template_name("Località"), "Localita");
        assert_eq!(template_name("Importo (€)"), "Importo_EUR");
        assert_eq!(template_name("2024"), "_2024");
        assert_eq!(template_name("  "), "");
    }

    #[test]
    fn italian_excel_export_with_bom_semicolons_and_quoted_newlines() {
        let l = csv("\u{feff}Cognome;Nome;PEC;Note\r\nRossi;Mario;Mario.Rossi@pec.it;\"due\r\nrighe\"\r\n\r\nBianchi;Anna;anna@pec.it;x\r\n").unwrap();
        assert_eq!(l.address_column, "PEC");
        assert_eq!(l.rows.len(), 2);
        assert_eq!(l.rows[0].address, "mario.rossi@pec.it");
        assert_eq!(l.rows[0].values["Note"], "due\r\nrighe");
        assert_eq!(l.rows[0].row, 2);
        // Numbered as a spreadsheet shows them: the two-line cell is one row, the blank line one.
        assert_eq!(l.rows[1].row, 4);
        assert!(l.skipped.is_empty());
    }

    #[test]
    fn bad_rows_are_set_aside_with_their_reason() {
        let l = csv(
            "email,nome\nA@x.it,a\n,b\nnot-an-address,c\na@x.it,d\nz@x.it,\"e\u{7}\"\nshort@x.it\n",
        )
        .unwrap();
        assert_eq!(
            l.rows
                .iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>(),
            ["a@x.it", "short@x.it"]
        );
        assert_eq!(l.rows[1].values["nome"], "");
        let reasons: Vec<(usize, &str)> = l
            .skipped
            .iter()
            .map(|s| (s.row, s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (3, "no address"),
                (4, "\"not-an-address\" is not an e-mail address"),
                (5, "the same address as row 2: sent once"),
                (6, "column \"nome\" holds the control character U+0007"),
            ]
        );
    }

    #[test]
    fn whole_list_errors() {
        assert_eq!(csv("pec;nome\n").unwrap_err(), ListError::NoRows);
        assert!(matches!(csv(""), Err(ListError::Table(_))));
        assert!(matches!(
            csv("nome;cognome\na;b\n"),
            Err(ListError::NoAddressColumn { .. })
        ));
        assert_eq!(
            csv("PEC;Nome;nome\na@x.it;b;c\n").unwrap_err(),
            ListError::DuplicateColumn("Nome".into(), "nome".into(), "nome".into())
        );
        assert_eq!(
            csv("Mail;Email\na@x.it;b@x.it\n").unwrap_err(),
            ListError::AmbiguousAddressColumn("Mail".into(), "Email".into())
        );
        let many = format!("pec\n{}", "a@x.it\n".repeat(3));
        assert_eq!(
            read(
                "l.csv",
                many.as_bytes(),
                &Options {
                    max_rows: 2,
                    ..Options::default()
                }
            )
            .unwrap_err(),
            ListError::TooMany { rows: 3, cap: 2 }
        );
        assert!(matches!(
            read("l.pdf", b"%PDF", &Options::default()),
            Err(ListError::Table(TableError::Format(_)))
        ));
    }

    #[test]
    fn an_excel_list_with_numbers() {
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        for (c, h) in ["Cognome", "Nome", "Indirizzo PEC", "Importo"]
            .iter()
            .enumerate()
        {
            sheet.write_string(0, c as u16, *h).unwrap();
        }
        sheet.write_string(1, 0, "D'Angelo").unwrap();
        sheet.write_string(1, 1, "Nicolò").unwrap();
        sheet
            .write_string(1, 2, "N.DAngelo@PEC.example.it")
            .unwrap();
        sheet.write_number(1, 3, 120.0).unwrap();
        sheet.write_number(2, 3, 7.5).unwrap();
        let bytes = book.save_to_buffer().unwrap();
        let l = read("Lista.XLSX", &bytes, &Options::default()).unwrap();
        assert_eq!(l.address_column, "Indirizzo PEC");
        assert_eq!(l.rows.len(), 1);
        assert_eq!(l.rows[0].address, "n.dangelo@pec.example.it");
        assert_eq!(l.rows[0].values["Nome"], "Nicolò");
        assert_eq!(l.rows[0].values["Importo"], "120");
        assert_eq!(l.skipped.len(), 1);
        assert_eq!(
            (l.skipped[0].row, l.skipped[0].reason.as_str()),
            (3, "no address")
        );
    }

    #[test]
    fn the_address_column_can_be_named() {
        let opts = Options {
            address_column: Some("secondaria".into()),
            ..Options::default()
        };
        let l = read("l.csv", b"PEC;Secondaria\na@x.it;b@x.it\n", &opts).unwrap();
        assert_eq!(l.rows[0].address, "b@x.it");
        let opts = Options {
            address_column: Some("altra".into()),
            ..Options::default()
        };
        assert!(matches!(
            read("l.csv", b"PEC;Secondaria\na@x.it;b@x.it\n", &opts),
            Err(ListError::UnknownAddressColumn { .. })
        ));
    }
}
