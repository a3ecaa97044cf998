//! Templates: a subject and a body (text, HTML or both) in Jinja syntax (`{{ Nome }}`), rendered
//! per row with [`minijinja`]. The HTML body is auto-escaped (a value `<b>` arrives as `&lt;b&gt;`),
//! the subject and text are not; a name that is not a column of the list is refused before
//! anything is sent, and so is a row whose subject would not be one line.
//!
//! Templates are the tenant's text: rendering is bounded (fuel: no template can loop for ever)
//! and no template can read another (no `include`, `extends`, `import`).

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::list::{Column, Row, bad_control};

/// The longest subject (characters), as the API allows.
pub const MAX_SUBJECT_CHARS: usize = 900;
/// Instructions one rendering may run (a template of a few pages takes a few thousand).
const FUEL: u64 = 200_000;

const SUBJECT: &str = "subject.txt";
const TEXT: &str = "body.txt";
const HTML: &str = "body.html";

/// The templates of a job, as the sender wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Templates {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// One row's message text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Why the templates cannot be used with this list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the {part} template: {message}")]
    Syntax { part: &'static str, message: String },
    #[error(
        "the {part} template names {name:?}, which is not a column of the list (columns: {columns})"
    )]
    UnknownColumn {
        part: &'static str,
        name: String,
        columns: String,
    },
    #[error("the subject template is empty")]
    EmptySubject,
    #[error("give a text or an HTML body")]
    NoBody,
}

/// Templates checked against a list's columns, ready to render rows.
#[derive(Debug)]
pub struct Compiled {
    env: Environment<'static>,
    has_text: bool,
    has_html: bool,
    /// The template names of the columns any template uses.
    pub uses: BTreeSet<String>,
}

fn part(name: &str) -> &'static str {
    match name {
        SUBJECT => "subject",
        TEXT => "text",
        _ => "HTML",
    }
}

impl Compiled {
    pub fn new(t: &Templates, columns: &[Column]) -> Result<Self, TemplateError> {
        if t.subject.trim().is_empty() {
            return Err(TemplateError::EmptySubject);
        }
        if t.text.is_none() && t.html.is_none() {
            return Err(TemplateError::NoBody);
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_keep_trailing_newline(true);
        let mut parts = vec![(SUBJECT, t.subject.clone())];
        parts.extend(t.text.clone().map(|s| (TEXT, s)));
        parts.extend(t.html.clone().map(|s| (HTML, s)));
        let names: BTreeSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let list = columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut uses = BTreeSet::new();
        for (name, source) in parts {
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError::Syntax {
                    part: part(name),
                    message: e.to_string(),
                })?;
            let tmpl = env.get_template(name).map_err(|e| TemplateError::Syntax {
                part: part(name),
                message: e.to_string(),
            })?;
            for used in tmpl.undeclared_variables(false) {
                // Globals and functions (`range`, `loop`...) are the engine's, not columns.
                if names.contains(used.as_str()) {
                    uses.insert(used);
                } else if env.globals().all(|(g, _)| g != used) {
                    return Err(TemplateError::UnknownColumn {
                        part: part(name),
                        name: used,
                        columns: list,
                    });
                }
            }
        }
        Ok(Compiled {
            env,
            has_text: t.text.is_some(),
            has_html: t.html.is_some(),
            uses,
        })
    }

    fn one(&self, name: &str, row: &Row) -> Result<String, String> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| format!("the {} template: {e}", part(name)))?;
        tmpl.render(&row.values)
            .map_err(|e| format!("the {} template: {e}", part(name)))
    }

    /// Renders one row; `Err` says why this row cannot be sent (an empty value a template
    /// uses, a subject that is not one line, a template that failed on it).
    pub fn render(&self, row: &Row) -> Result<Rendered, String> {
        let empty: Vec<&str> = self
            .uses
            .iter()
            .filter(|c| row.values.get(*c).is_none_or(|v| v.is_empty()))
            .map(String::as_str)
            .collect();
        if !empty.is_empty() {
            return Err(format!(
                "no value for {} (used by the template)",
                empty.join(", ")
            ));
        }
        let subject = self.one(SUBJECT, row)?;
        if let Some(c) = subject.chars().find(|c| c.is_control()) {
            return Err(format!(
                "the subject would hold U+{:04X} (a line break or control character from a value): a subject is one line",
                c as u32
            ));
        }
        let subject = subject.trim().to_string();
        if subject.is_empty() {
            return Err("the subject comes out empty".into());
        }
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(format!(
                "the subject comes out longer than {MAX_SUBJECT_CHARS} characters"
            ));
        }
        let body = |name: &str| -> Result<String, String> {
            let b = self.one(name, row)?;
            match bad_control(&b) {
                Some(c) => Err(format!(
                    "the {} body would hold the control character U+{:04X}",
                    part(name),
                    c as u32
                )),
                None => Ok(b),
            }
        };
        Ok(Rendered {
            subject,
            text: self.has_text.then(|| body(TEXT)).transpose()?,
            html: self.has_html.then(|| body(HTML)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::{Options, read};

    fn list() -> crate::list::List {
        read(
            "l.csv",
            "PEC;Nome;Cognome;Importo (€);Note\na@x.it;Mario;Rossi;12,50;<b>urgente</b>\nb@x.it;Anna;;3;\"riga\r\naltra\"\n".as_bytes(),
            &Options::default(),
        )
        .unwrap()
    }

    fn t(subject: &str, text: Option<&str>, html: Option<&str>) -> Templates {
        Templates {
            subject: subject.into(),
            text: text.map(Into::into),
            html: html.map(Into::into),
        }
    }

    #[test]
    fn renders_rows_with_html_escaped_and_text_not() {
        let l = list();
        let c = Compiled::new(
            &t(
                "Avviso per {{ Nome }}",
                Some("Gentile {{ Nome }}, dovuti EUR {{ Importo_EUR }}. {{ Note }}\n"),
                Some("<p>{{ Note }}</p>"),
            ),
            &l.columns,
        )
        .unwrap();
        assert_eq!(
            c.uses.iter().map(String::as_str).collect::<Vec<_>>(),
            ["Importo_EUR", "Nome", "Note"]
        );
        let r = c.render(&l.rows[0]).unwrap();
        assert_eq!(r.subject, "Avviso per Mario");
        assert_eq!(
            r.text.as_deref(),
            Some("Gentile Mario, dovuti EUR 12,50. <b>urgente</b>\n")
        );
        assert_eq!(
            r.html.as_deref(),
            Some("<p>&lt;b&gt;urgente&lt;&#x2f;b&gt;</p>")
        );
    }

    #[test]
    fn a_value_cannot_break_the_subject() {
        let l = list();
        let c = Compiled::new(&t("{{ Note }}", Some("x"), None), &l.columns).unwrap();
        let e = c.render(&l.rows[1]).unwrap_err();
        assert!(e.contains("U+000D"), "{e}");
    }

    #[test]
    fn empty_values_a_template_uses_refuse_the_row() {
        let l = list();
        let c = Compiled::new(&t("Per {{ Cognome }}", Some("x"), None), &l.columns).unwrap();
        assert_eq!(
            c.render(&l.rows[1]).unwrap_err(),
            "no value for Cognome (used by the template)"
        );
        assert!(c.render(&l.rows[0]).is_ok());
    }

    #[test]
    fn template_errors_come_before_sending() {
        let l = list();
        assert!(matches!(
            Compiled::new(&t("{{ Name }}", Some("x"), None), &l.columns),
            Err(TemplateError::UnknownColumn { part: "subject", ref name, .. }) if name == "Name"
        ));
        assert!(matches!(
            Compiled::new(&t("x", Some("{{ Nome "), None), &l.columns),
            Err(TemplateError::Syntax { part: "text", .. })
        ));
        assert_eq!(
            Compiled::new(&t(" ", Some("x"), None), &l.columns).unwrap_err(),
            TemplateError::EmptySubject
        );
        assert_eq!(
            Compiled::new(&t("x", None, None), &l.columns).unwrap_err(),
            TemplateError::NoBody
        );
        // Engine globals are not columns.
        Compiled::new(
            &t(
                "x",
                Some("{% for i in range(3) %}{{ i }}{% endfor %}"),
                None,
            ),
            &l.columns,
        )
        .unwrap();
    }

    #[test]
    fn a_template_cannot_run_for_ever() {
        let l = list();
        let c = Compiled::new(
            &t(
                "x",
                Some("{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}"),
                None,
            ),
            &l.columns,
        )
        .unwrap();
        let e = c.render(&l.rows[0]).unwrap_err();
        assert!(e.contains("fuel"), "{e}");
    }
}
