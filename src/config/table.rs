//! A typed, span-aware view of one TOML table.
//!
//! The rules loader and every handler's `[rule.with]` validation read their
//! keys through [`Table`]: each getter records a problem (wrong type, missing,
//! out of range) at the value's position instead of stopping, and reading a key
//! declares it, so [`Table::finish`] reports every key nobody read as unknown.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::Collector;

/// A table of the rules file being read.
pub struct Table<'t, 'i> {
    table: Option<&'t DeTable<'i>>,
    span: Range<usize>,
    /// Where this table is, for messages: `[rule.with] of rule "x"`.
    what: String,
    read: BTreeSet<&'static str>,
    diags: &'t RefCell<Collector>,
}

/// A value with its position.
pub type At<T> = (T, Range<usize>);

impl<'t, 'i> Table<'t, 'i> {
    pub fn new(
        table: Option<&'t DeTable<'i>>,
        span: Range<usize>,
        what: impl Into<String>,
        diags: &'t RefCell<Collector>,
    ) -> Self {
        Table {
            table,
            span,
            what: what.into(),
            read: BTreeSet::new(),
            diags,
        }
    }

    /// Records a problem at `span`.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) {
        self.diags.borrow_mut().error(span, message);
    }

    /// Records a problem with the table as a whole.
    pub fn error_here(&self, message: impl Into<String>) {
        self.error(self.span.clone(), message);
    }

    /// Renames the table in later messages (a rule, once its name is known).
    pub fn set_what(&mut self, what: impl Into<String>) {
        self.what = what.into();
    }

    /// Where this table is, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The collector problems go to, for building sibling tables.
    pub fn collector(&self) -> &'t RefCell<Collector> {
        self.diags
    }

    /// The span of this table.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The raw value of `key`, declaring the key as known.
    pub fn raw(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.read.insert(key);
        let table = self.table?;
        table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    fn typed<T>(
        &mut self,
        key: &'static str,
        expected: &str,
        get: impl FnOnce(&'t DeValue<'i>) -> Option<T>,
    ) -> Option<At<T>> {
        let value = self.raw(key)?;
        match get(value.get_ref()) {
            Some(v) => Some((v, value.span())),
            None => {
                self.error(
                    value.span(),
                    format!(
                        "`{key}` in {} must be {expected}, found {}",
                        self.what,
                        value.get_ref().type_str()
                    ),
                );
                None
            }
        }
    }

    /// A string value.
    pub fn str(&mut self, key: &'static str) -> Option<At<&'t str>> {
        self.typed(key, "a string", |v| match v {
            DeValue::String(s) => Some(s.as_ref()),
            _ => None,
        })
    }

    /// A string value that must be present.
    pub fn required_str(&mut self, key: &'static str) -> Option<At<&'t str>> {
        let found = self.raw(key).is_some();
        if !found {
            self.error_here(format!("{} is missing required key `{key}`", self.what));
            return None;
        }
        self.str(key)
    }

    /// A boolean, or `default`.
    pub fn bool(&mut self, key: &'static str, default: bool) -> bool {
        self.typed(key, "a boolean (true or false)", DeValue::as_bool)
            .map_or(default, |(v, _)| v)
    }

    /// A non-negative integer within `range`, or `default`.
    pub fn u64_in(&mut self, key: &'static str, default: u64, range: Range<u64>) -> u64 {
        let Some((v, span)) = self.typed(key, "an integer", |v| match v {
            DeValue::Integer(i) => Some(i64::from_str_radix(i.as_str(), i.radix()).ok()),
            _ => None,
        }) else {
            return default;
        };
        match v.and_then(|v| u64::try_from(v).ok()) {
            Some(v) if range.contains(&v) => v,
            _ => {
                self.error(
                    span,
                    format!(
                        "`{key}` in {} must be between {} and {}",
                        self.what,
                        range.start,
                        range.end.saturating_sub(1)
                    ),
                );
                default
            }
        }
    }

    /// A number (integer or float) within `min..=max`, or `default`.
    pub fn f64_in(&mut self, key: &'static str, default: f64, min: f64, max: f64) -> f64 {
        let Some((v, span)) = self.typed(key, "a number", |v| match v {
            DeValue::Integer(i) => Some(
                i64::from_str_radix(i.as_str(), i.radix())
                    .ok()
                    .map(|i| i as f64),
            ),
            DeValue::Float(f) => Some(f.as_str().parse::<f64>().ok()),
            _ => None,
        }) else {
            return default;
        };
        match v {
            Some(v) if v.is_finite() && v >= min && v <= max => v,
            _ => {
                self.error(
                    span,
                    format!("`{key}` in {} must be between {min} and {max}", self.what),
                );
                default
            }
        }
    }

    /// One of `choices`, or `default`.
    pub fn choice(
        &mut self,
        key: &'static str,
        choices: &[&'static str],
        default: &'static str,
    ) -> &'static str {
        let Some((v, span)) = self.str(key) else {
            return default;
        };
        match choices.iter().find(|c| **c == v) {
            Some(c) => c,
            None => {
                self.error(
                    span,
                    format!(
                        "`{key}` in {} must be one of {}, found \"{v}\"",
                        self.what,
                        quoted(choices)
                    ),
                );
                default
            }
        }
    }

    /// A string or an array of strings, each with its position.
    pub fn strings(&mut self, key: &'static str) -> Option<Vec<At<&'t str>>> {
        let value = self.raw(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(vec![(s.as_ref(), value.span())]),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.as_ref(), item.span())),
                        other => self.error(
                            item.span(),
                            format!(
                                "`{key}` in {} must hold strings, found {}",
                                self.what,
                                other.type_str()
                            ),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.error(
                    value.span(),
                    format!(
                        "`{key}` in {} must be a string or an array of strings, found {}",
                        self.what,
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// A sub-table, viewed the same way.
    pub fn table(&mut self, key: &'static str, what: impl Into<String>) -> Option<Table<'t, 'i>> {
        let value = self.raw(key)?;
        match value.get_ref() {
            DeValue::Table(t) => Some(Table::new(Some(t), value.span(), what, self.diags)),
            other => {
                self.error(
                    value.span(),
                    format!(
                        "`{key}` in {} must be a table, found {}",
                        self.what,
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// An empty view standing in for a table that is absent, so defaults apply.
    pub fn absent(
        what: impl Into<String>,
        span: Range<usize>,
        diags: &'t RefCell<Collector>,
    ) -> Self {
        Table::new(None, span, what, diags)
    }

    /// The entries of the table, for maps with free keys (labels).
    pub fn entries(&self) -> Vec<(At<&'t str>, &'t Spanned<DeValue<'i>>)> {
        self.table
            .map(|t| {
                t.iter()
                    .map(|(k, v)| ((k.get_ref().as_ref(), k.span()), v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reports every key that no getter asked for.
    pub fn finish(self) {
        let Some(table) = self.table else { return };
        for (key, _) in table.iter() {
            let name = key.get_ref().as_ref();
            if !self.read.contains(name) {
                let expected: Vec<&str> = self.read.iter().copied().collect();
                let hint = if expected.is_empty() {
                    format!("{} takes no keys", self.what)
                } else {
                    format!("expected one of {}", quoted(&expected))
                };
                self.error(
                    key.span(),
                    format!("unknown key `{name}` in {}; {hint}", self.what),
                );
            }
        }
    }
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
