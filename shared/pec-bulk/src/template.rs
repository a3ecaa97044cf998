//! Templates: a subject and a body (text, HTML or both) in Jinja syntax (`{{ Nome }}`), rendered
//! per row with [`minijinja`]. The HTML body is auto-escaped (a value `<b>` arrives as `&lt;b&gt;`),
//! the subject and text are not; a name that is not a column of the list is refused before
//! anything is sent, and so is a row whose subject would not be one line.
//!
//! Templates are the tenant's text, so they get a small part of Jinja: `{{ expressions }}` with
//! the columns, literals and the filters `upper`, `lower`, `title`, `capitalize`, `trim`,
//! `default`, `escape`, `round`, `int`, `float`, `abs`, `length`; `{% if %}` / `{% elif %}` /
//! `{% else %}` / `{% endif %}`. No loops, no assignments, no functions, no other templates, and
//! neither `*` nor `~` (a string repeated or joined to itself grows without bound): what a row
//! renders is about as long as the template and its values. Rendering is also bounded by fuel,
//! and each part by [`MAX_RENDERED_BYTES`].

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::list::{Column, Row, bad_control};

/// The longest subject (characters), as the API allows.
pub const MAX_SUBJECT_CHARS: usize = 900;
/// Instructions one rendering may run (a template of a few pages takes a few thousand).
const FUEL: u64 = 200_000;
/// The longest template part (octets).
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// The longest rendered part (octets); a row whose text comes out longer is set aside.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

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
    #[error(
        "the {part} template uses {what}, which mass-sending templates do not allow ({{{{ columns, literals, filters }}}} and {{% if %}} only)"
    )]
    NotAllowed { part: &'static str, what: String },
    #[error("the {part} template is longer than {MAX_TEMPLATE_BYTES} octets")]
    TooLong { part: &'static str },
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
        let mut env = Environment::empty();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        {
            use minijinja::{filters, tests};
            env.add_filter("upper", filters::upper);
            env.add_filter("lower", filters::lower);
            env.add_filter("title", filters::title);
            env.add_filter("capitalize", filters::capitalize);
            env.add_filter("trim", filters::trim);
            env.add_filter("default", filters::default);
            env.add_filter("d", filters::default);
            env.add_filter("escape", filters::escape);
            env.add_filter("e", filters::escape);
            env.add_filter("round", filters::round);
            env.add_filter("int", filters::int);
            env.add_filter("float", filters::float);
            env.add_filter("abs", filters::abs);
            env.add_filter("length", filters::length);
            env.add_test("defined", tests::is_defined);
            env.add_test("undefined", tests::is_undefined);
            env.add_test("none", tests::is_none);
        }
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
            if source.len() > MAX_TEMPLATE_BYTES {
                return Err(TemplateError::TooLong { part: part(name) });
            }
            restricted(part(name), &source)?;
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
        let out = tmpl
            .render(&row.values)
            .map_err(|e| format!("the {} template: {e}", part(name)))?;
        if out.len() > MAX_RENDERED_BYTES {
            return Err(format!(
                "the {} comes out longer than {MAX_RENDERED_BYTES} octets",
                part(name)
            ));
        }
        Ok(out)
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

/// The part of Jinja mass-sending templates may use (see the module's documentation): every
/// `{{ }}` and `{% %}` is read, string literals skipped, for `*`, `~` and block tags other
/// than `if`, `elif`, `else`, `endif`. Syntax errors are left to the engine.
fn restricted(part: &'static str, source: &str) -> Result<(), TemplateError> {
    let not_allowed = |what: String| TemplateError::NotAllowed { part, what };
    let b = source.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        let close: &[u8] = match (b[i], b[i + 1]) {
            (b'{', b'{') => b"}}",
            (b'{', b'%') => b"%}",
            (b'{', b'#') => {
                // A comment: to its end.
                match source[i + 2..].find("#}") {
                    Some(end) => {
                        i += 2 + end + 2;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let start = i + 2;
        let mut j = start;
        let mut quote: Option<u8> = None;
        loop {
            let Some(&c) = b.get(j) else {
                // Unclosed: the engine reports it.
                return Ok(());
            };
            match quote {
                Some(_) if c == b'\\' => j += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if b[j..].starts_with(close) => break,
                None if c == b'*' || c == b'~' => {
                    return Err(not_allowed(format!("the operator {}", c as char)));
                }
                None => {}
            }
            j += 1;
        }
        if close == b"%}" {
            let tag = source[start..j]
                .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace())
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .next()
                .unwrap_or_default();
            if !matches!(tag, "if" | "elif" | "else" | "endif") {
                return Err(not_allowed(format!("{{% {tag} %}}")));
            }
        }
        i = j + 2;
    }
    Ok(())
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
        // Conditions and the allowed filters.
        let c = Compiled::new(
            &t(
                "{{ Nome|upper }}",
                Some("{% if Cognome %}Sig. {{ Cognome|title }}{% else %}Gentile cliente{% endif %}, {{ Note|default('-') }}"),
                None,
            ),
            &l.columns,
        )
        .unwrap();
        let r = c.render(&l.rows[0]).unwrap();
        assert_eq!(r.subject, "MARIO");
        assert_eq!(r.text.unwrap(), "Sig. Rossi, <b>urgente</b>");
        // No engine globals: a function is an unknown name.
        assert!(matches!(
            Compiled::new(&t("x", Some("{{ range(3) }}"), None), &l.columns),
            Err(TemplateError::UnknownColumn { ref name, .. }) if name == "range"
        ));
    }

    #[test]
    fn a_template_cannot_grow_without_bound_or_loop() {
        let l = list();
        let refused = |text: &str| match Compiled::new(&t("x", Some(text), None), &l.columns) {
            Err(TemplateError::NotAllowed { what, .. }) => what,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(refused("{{ Nome * 100000000 }}"), "the operator *");
        assert_eq!(refused("{{ \"}}\" * 100000000 }}"), "the operator *");
        assert_eq!(refused("{{ Nome ~ Nome }}"), "the operator ~");
        assert_eq!(refused("{% for i in [1] %}x{% endfor %}"), "{% for %}");
        assert_eq!(refused("{%- set a = 1 -%}"), "{% set %}");
        assert_eq!(refused("{% include 'subject.txt' %}"), "{% include %}");
        assert_eq!(refused("{% macro m() %}{% endmacro %}"), "{% macro %}");
        // A filter outside the list is unknown to the engine.
        let unknown = Compiled::new(
            &t("x", Some("{{ Nome|replace('', Nome) }}"), None),
            &l.columns,
        )
        .map(|c| c.render(&l.rows[0]));
        assert!(!matches!(unknown, Ok(Ok(_))), "{unknown:?}");
        // In text, comments and string literals, * and ~ are only characters.
        let c = Compiled::new(
            &t("**{{ '~*' }}**", Some("{# a * b ~ c #}*** ~ ***"), None),
            &l.columns,
        )
        .unwrap();
        let r = c.render(&l.rows[0]).unwrap();
        assert_eq!(r.subject, "**~***");
        assert_eq!(r.text.unwrap(), "*** ~ ***");
        assert!(matches!(
            Compiled::new(
                &t("x", Some(&"a".repeat(MAX_TEMPLATE_BYTES + 1)), None),
                &l.columns
            ),
            Err(TemplateError::TooLong { part: "text" })
        ));
    }
}
