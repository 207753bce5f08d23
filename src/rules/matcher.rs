//! `[rule.match]`: the conditions on an event's container, compiled once
//! and checked for every event the rule's `on` matches. `name`, `image` and
//! `labels` hold for dockwarden's own events too (they carry the
//! container's); `severity` applies to `dockwarden.exec` only.

use globset::{GlobMatcher, GlobSet};
use toml::de::DeValue;

use super::compile::{glob, glob_reason, globs};
use crate::config::ExitCode;
use crate::config::table::{At, Table};
use crate::event::Event;

/// `[rule.match]`: every condition given must hold.
#[derive(Default)]
pub struct Matcher {
    name: Option<GlobSet>,
    image: Option<GlobSet>,
    labels: Vec<(String, LabelPattern)>,
    pub(super) exit_code: Option<ExitCode>,
    /// The handler checks `exit_code` against the engine: don't filter on
    /// the forgeable attribute here.
    pub(super) exit_code_by_handler: bool,
    status: Option<String>,
    /// `severity`: for `dockwarden.exec` only.
    severity: Option<Vec<String>>,
}

impl Matcher {
    /// Conditions on attributes come from the event. `exit_code` applies to
    /// `container.die` only and `status` to `container.health_status` only;
    /// other events are not constrained by them.
    pub fn matches(&self, event: &Event) -> bool {
        if let Some(names) = &self.name {
            match event.name() {
                Some(n) if names.is_match(n) => {}
                _ => return false,
            }
        }
        if let Some(images) = &self.image {
            match event.image() {
                Some(i) if images.is_match(i) => {}
                _ => return false,
            }
        }
        for (key, value) in &self.labels {
            match event.attr(key) {
                Some(v) if value.is_match(v) => {}
                _ => return false,
            }
        }
        if let Some(cond) = &self.exit_code
            && !self.exit_code_by_handler
            && event.key == "container.die"
            && !event.exit_code().is_some_and(|c| cond.matches(c))
        {
            return false;
        }
        if let Some(status) = &self.status
            && event.key == "container.health_status"
            && event.health_status() != Some(status.as_str())
        {
            return false;
        }
        if let Some(wanted) = &self.severity
            && event.key == "dockwarden.exec"
        {
            let severity = event
                .fields
                .as_ref()
                .and_then(|f| f.get("severity"))
                .and_then(|v| v.as_str());
            if !severity.is_some_and(|s| wanted.iter().any(|w| w == s)) {
                return false;
            }
        }
        true
    }
}

/// A label's wanted value: a glob, or, written `true` or `false`, a
/// boolean however the label spells it (`True`, `yes`, `1`; `no`, `0`).
enum LabelPattern {
    Glob(GlobMatcher),
    Bool(bool),
}

impl LabelPattern {
    fn is_match(&self, value: &str) -> bool {
        match self {
            LabelPattern::Glob(g) => g.is_match(value),
            LabelPattern::Bool(b) => crate::config::truthy(value) == Some(*b),
        }
    }
}

/// `true` or `false` in any case: a boolean pattern.
fn truthy_word(pat: &str) -> Option<bool> {
    if pat.eq_ignore_ascii_case("true") {
        Some(true)
    } else if pat.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// The grades of an audited exec, lowest first.
const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

pub(super) fn compile_matcher(mut m: Table<'_, '_>, on: Option<&GlobSet>) -> Option<Matcher> {
    let mut ok = true;
    let name = m.strings("name").map(|pats| {
        // Docker reports names without the leading "/"; accept it written either way.
        let pats: Vec<At<&str>> = pats
            .into_iter()
            .map(|(p, s)| (p.trim_start_matches('/'), s))
            .collect();
        globs(&m, &pats, "match.name")
    });
    let image = m
        .strings("image")
        .map(|pats| globs(&m, &pats, "match.image"));

    let mut labels = Vec::new();
    if let Some(value) = m.raw("labels") {
        match value.get_ref() {
            DeValue::Table(t) => {
                for (key, v) in t.iter() {
                    match v.get_ref() {
                        DeValue::String(pat) if truthy_word(pat).is_some() => labels.push((
                            key.get_ref().to_string(),
                            LabelPattern::Bool(truthy_word(pat).unwrap_or_default()),
                        )),
                        DeValue::String(pat) => match glob(pat) {
                            Ok(g) => labels.push((
                                key.get_ref().to_string(),
                                LabelPattern::Glob(g.compile_matcher()),
                            )),
                            Err(e) => {
                                ok = false;
                                m.error(
                                    v.span(),
                                    format!(
                                        "bad glob \"{pat}\" for label \"{}\": {}",
                                        key.get_ref(),
                                        glob_reason(&e)
                                    ),
                                );
                            }
                        },
                        other => {
                            ok = false;
                            m.error(
                                v.span(),
                                format!(
                                    "label \"{}\" in {} must be a string (\"*\" = present with any value), found {}",
                                    key.get_ref(),
                                    m.what(),
                                    other.type_str()
                                ),
                            );
                        }
                    }
                }
            }
            other => {
                ok = false;
                m.error(
                    value.span(),
                    format!(
                        "`labels` in {} must be a table of label = glob, found {}",
                        m.what(),
                        other.type_str()
                    ),
                );
            }
        }
    }

    let exit_code = match m.raw("exit_code") {
        None => None,
        Some(v) => {
            if on.is_some_and(|on| !on.is_match("container.die")) {
                m.error(
                    v.span(),
                    "`exit_code` applies to container.die only, which this rule's `on` never matches",
                );
            }
            let parsed = parse_exit_code(v.get_ref());
            if parsed.is_none() {
                ok = false;
                m.error(
                    v.span(),
                    "`exit_code` must be \"any\", \"nonzero\" or an array of exit codes (0-255) like [1, 137]",
                );
            }
            parsed
        }
    };

    let status = m.str("status").and_then(|(s, span)| {
        if on.is_some_and(|on| !on.is_match("container.health_status")) {
            m.error(
                span.clone(),
                "`status` applies to container.health_status only, which this rule's `on` never matches",
            );
        }
        match s {
            "healthy" | "unhealthy" | "starting" => Some(s.to_owned()),
            _ => {
                m.error(
                    span,
                    format!("`status` must be \"healthy\", \"unhealthy\" or \"starting\", found \"{s}\""),
                );
                None
            }
        }
    });
    let severity = m.strings("severity").and_then(|levels| {
        if let Some((_, first)) = levels.first()
            && on.is_some_and(|on| !on.is_match("dockwarden.exec"))
        {
            m.error(
                first.clone(),
                "`severity` applies to dockwarden.exec only, which this rule's `on` never matches",
            );
        }
        let mut out = Vec::new();
        for (level, span) in levels {
            if SEVERITIES.contains(&level) {
                out.push(level.to_owned());
            } else {
                m.error(
                    span,
                    format!(
                        "`severity` must list levels of {}, found \"{level}\"",
                        SEVERITIES.join(", ")
                    ),
                );
            }
        }
        (!out.is_empty()).then_some(out)
    });
    m.finish();

    let name = name.map(|g| g.ok_or(())).transpose();
    let image = image.map(|g| g.ok_or(())).transpose();
    match (name, image, ok) {
        (Ok(name), Ok(image), true) => Some(Matcher {
            name,
            image,
            labels,
            exit_code,
            exit_code_by_handler: false,
            status,
            severity,
        }),
        _ => None,
    }
}

fn parse_exit_code(v: &DeValue<'_>) -> Option<ExitCode> {
    match v {
        DeValue::String(s) if s.as_ref() == "any" => Some(ExitCode::Any),
        DeValue::String(s) if s.as_ref() == "nonzero" => Some(ExitCode::Nonzero),
        DeValue::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i.get_ref() {
                DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix())
                    .ok()
                    .filter(|c| (0..=255).contains(c)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(ExitCode::OneOf),
        _ => None,
    }
}
