//! The one configuration reader of every function, the runner and the services.
//!
//! A function's configuration is its environment (template.yaml sets it; the local runner passes
//! each function its own template environment). One rule everywhere: **an empty value is a
//! missing value**. A missing required variable or a malformed one is a [`ConfigError`] naming
//! the variable, so a function that cannot start says exactly why.

use std::collections::BTreeMap;
use std::str::FromStr;

/// A variable is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set (or empty)")]
    Missing(String),
    #[error("environment variable {name}={value:?} is malformed: {reason}")]
    Malformed {
        name: String,
        value: String,
        reason: String,
    },
}

type Source<'a> = Box<dyn Fn(&str) -> Option<String> + Send + Sync + 'a>;

/// Where configuration values come from: the process environment, a map, or any function.
pub struct Env<'a> {
    source: Source<'a>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env<'static> {
    /// The process environment.
    pub fn process() -> Self {
        Env::from_fn(|name| std::env::var(name).ok())
    }
}

impl<'a> Env<'a> {
    /// Values from `source`.
    pub fn from_fn(source: impl Fn(&str) -> Option<String> + Send + Sync + 'a) -> Self {
        Env {
            source: Box::new(source),
        }
    }

    /// Values from a map (a function's template environment; tests).
    pub fn from_map(map: &'a BTreeMap<String, String>) -> Self {
        Env::from_fn(move |name| map.get(name).cloned())
    }

    /// The value, `None` when unset or empty.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.source)(name).filter(|v| !v.is_empty())
    }

    /// The value; an error naming the variable when unset or empty.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.optional(name)
            .ok_or_else(|| ConfigError::Missing(name.to_string()))
    }

    /// The value, or `default` when unset or empty.
    pub fn or(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_string())
    }

    /// The value parsed; `None` when unset or empty, an error naming it when malformed.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.optional(name)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|e: T::Err| ConfigError::Malformed {
                        name: name.to_string(),
                        reason: e.to_string(),
                        value,
                    })
            })
            .transpose()
    }

    /// A switch: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off` (any case); unset or empty is
    /// `false`; anything else is malformed.
    pub fn flag(&self, name: &str) -> Result<bool, ConfigError> {
        let Some(value) = self.optional(name) else {
            return Ok(false);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::Malformed {
                name: name.to_string(),
                value,
                reason: "expected 1/true/yes/on or 0/false/no/off".into(),
            }),
        }
    }

    /// This environment with `name` unset.
    pub fn without(self, name: &'a str) -> Env<'a> {
        Env::from_fn(move |n| if n == name { None } else { self.optional(n) })
    }

    /// This environment with `overrides` taking precedence where they have a value.
    pub fn overlay(self, overrides: Env<'a>) -> Env<'a> {
        Env::from_fn(move |name| overrides.optional(name).or_else(|| self.optional(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_is_missing_everywhere() {
        let map = env(&[("A", ""), ("B", "x")]);
        let e = Env::from_map(&map);
        assert_eq!(e.optional("A"), None);
        assert_eq!(e.required("A"), Err(ConfigError::Missing("A".into())));
        assert_eq!(e.or("A", "d"), "d");
        assert_eq!(e.parse::<u32>("A"), Ok(None));
        assert_eq!(e.flag("A"), Ok(false));
        assert_eq!(e.required("B").unwrap(), "x");
        assert_eq!(
            e.required("C").unwrap_err().to_string(),
            "environment variable C is not set (or empty)"
        );
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let map = env(&[("N", "12x"), ("F", "maybe"), ("G", " On ")]);
        let e = Env::from_map(&map);
        let err = e.parse::<u32>("N").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable N=\"12x\" is malformed")
        );
        assert!(e.flag("F").is_err());
        assert_eq!(e.flag("G"), Ok(true));
    }

    #[test]
    fn overlay_prefers_the_override_when_it_has_a_value() {
        let base = env(&[("A", "base"), ("B", "base")]);
        let over = env(&[("A", "over"), ("B", "")]);
        let e = Env::from_map(&base).overlay(Env::from_map(&over));
        assert_eq!(e.required("A").unwrap(), "over");
        assert_eq!(e.required("B").unwrap(), "base");
        let e = e.without("A");
        assert_eq!(e.optional("A"), None);
        assert_eq!(e.required("B").unwrap(), "base");
    }
}
