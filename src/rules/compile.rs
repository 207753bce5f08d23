//! Compiling a parsed rules file: the sections, then each `[[rule]]` with
//! its `on` globs, its matcher and its handler, built by the handler's own
//! factory from `[rule.with]`. Every problem is recorded with its place;
//! nothing half-valid is returned.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use toml::de::{DeTable, DeValue};

use super::matcher::{Matcher, compile_matcher};
use super::{Config, Rule, Ruleset, sections};
use crate::config::diag::{self, Collector};
use crate::config::table::{At, Table};
use crate::handlers::{Registry, RuleSpec};

pub(super) fn compile(
    source: &str,
    root: &DeTable<'_>,
    span: std::ops::Range<usize>,
    diags: &RefCell<Collector>,
    registry: &Registry,
    started_targets: Option<&Arc<[String]>>,
) -> Option<Config> {
    let mut top = Table::new(Some(root), span.clone(), "the rules file", diags);

    let sections::Sections {
        server: server_config,
        source: source_config,
        state: state_config,
        dispatch: dispatch_config,
        audit: audit_config,
        api: api_config,
        notify: notify_config,
        engine: engine_config,
    } = sections::read(&mut top, &span, diags);
    let notify_targets: Arc<[String]> = notify_config.names().into();

    let mut rules: Vec<Arc<Rule>> = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    match top.raw("rule").map(|v| (v.get_ref(), v.span())) {
        None => {}
        Some((DeValue::Array(items), _)) => {
            for (i, item) in items.iter().enumerate() {
                let DeValue::Table(t) = item.get_ref() else {
                    top.error(
                        item.span(),
                        format!(
                            "each `rule` must be a table ([[rule]]), found {}",
                            item.get_ref().type_str()
                        ),
                    );
                    continue;
                };
                let what = format!("rule #{}", i + 1);
                let table = Table::new(Some(t), item.span(), what, diags);
                if let Some(rule) = compile_rule(
                    table,
                    registry,
                    &mut names,
                    source,
                    &notify_targets,
                    started_targets,
                ) {
                    rules.push(Arc::new(rule));
                }
            }
        }
        Some((other, s)) => top.error(
            s,
            format!(
                "`rule` must be an array of tables ([[rule]]), found {}",
                other.type_str()
            ),
        ),
    }
    top.finish();

    let observers = registry.observers_for(rules.iter().map(|r| r.handler_name));
    let needs_view = registry.reads_view(rules.iter().map(|r| r.handler_name));
    Some(Config {
        server: server_config,
        source: source_config,
        state: state_config,
        dispatch: dispatch_config,
        audit: audit_config,
        api: api_config,
        notify: notify_config,
        engine: engine_config,
        rules: Arc::new(Ruleset {
            rules,
            observers,
            needs_view,
            on_keys: Default::default(),
        }),
    })
}

fn compile_rule(
    mut t: Table<'_, '_>,
    registry: &Registry,
    names: &mut BTreeMap<String, usize>,
    source: &str,
    notify_targets: &Arc<[String]>,
    started_targets: Option<&Arc<[String]>>,
) -> Option<Rule> {
    let name = t.required_str("name");
    if let Some((n, span)) = &name {
        if n.trim().is_empty() {
            t.error(
                span.clone(),
                format!("`name` of {} must not be empty", t.what()),
            );
        } else if let Some(first) = names.get(*n) {
            let (line, _) = diag::line_col(source, *first);
            t.error(
                span.clone(),
                format!("duplicate rule name \"{n}\" (first used at line {line})"),
            );
        } else {
            names.insert((*n).to_owned(), span.start);
        }
    }
    let label = match &name {
        Some((n, _)) => format!("rule \"{n}\""),
        None => t.what().to_owned(),
    };
    t.set_what(label.clone());

    let on = match t.raw("on") {
        None => {
            t.error_here(format!("{label} is missing required key `on`"));
            None
        }
        Some(_) => t.strings("on"),
    };
    let on_set = on.as_ref().and_then(|patterns| {
        if patterns.is_empty() {
            t.error(
                t.span(),
                format!("`on` of {label} must list at least one event key"),
            );
            return None;
        }
        for (p, s) in patterns {
            check_event_key(&t, p, s.clone());
        }
        globs(&t, patterns, "on")
    });

    let handler = t.required_str("handler");
    let factory = handler.as_ref().and_then(|(h, span)| {
        let f = registry.get(h);
        if f.is_none() {
            t.error(
                span.clone(),
                format!(
                    "unknown handler \"{h}\" in {label}; registered handlers: {}",
                    registry.names().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        f
    });

    if let (Some(f), Some(patterns), Some(accepted)) =
        (factory, &on, factory.and_then(|f| f.events()))
    {
        for (p, span) in patterns {
            if glob(p).is_ok_and(|g| {
                let g = g.compile_matcher();
                !accepted.iter().any(|k| g.is_match(k))
            }) {
                t.error(
                    span.clone(),
                    format!(
                        "handler \"{}\" acts on {} only; \"{p}\" matches none of them",
                        f.name(),
                        accepted.join(", ")
                    ),
                );
            }
        }
    }

    if let (Some(f), Some(patterns)) = (factory, &on)
        && !f.own_events()
    {
        for (p, span) in patterns {
            let own = glob(p).ok().and_then(|g| {
                let g = g.compile_matcher();
                crate::event::known_labels()
                    .filter(|l| l.typ == "dockwarden" && l.action != crate::event::OTHER)
                    .map(|l| format!("{}.{}", l.typ, l.action))
                    .find(|k| g.is_match(k))
            });
            if let Some(key) = own {
                t.error(
                    span.clone(),
                    format!(
                        "handler \"{}\" never acts on dockwarden's own events, but \"{p}\" matches {key}; name the engine's events (e.g. \"container.*\")",
                        f.name()
                    ),
                );
            }
        }
    }

    let matcher = match t.table("match", format!("[rule.match] of {label}")) {
        Some(m) => compile_matcher(m, on_set.as_ref()),
        None => Some(Matcher::default()),
    }
    .map(|mut m| {
        m.exit_code_by_handler = factory.is_some_and(|f| f.verifies_exit_code());
        m
    });

    let with_what = format!("[rule.with] of {label}");
    let mut with = t
        .table("with", with_what.clone())
        .unwrap_or_else(|| Table::absent(with_what, t.span(), t.collector()));
    let spec = RuleSpec {
        name: Arc::from(name.as_ref().map_or("", |(n, _)| *n)),
        exit_code: matcher.as_ref().and_then(|m| m.exit_code.clone()),
        notify_targets: notify_targets.clone(),
        started_targets: started_targets.cloned(),
    };
    let built = factory.map(|f| f.build(&spec, &mut with));
    // Parameters of an unknown handler cannot be judged: don't report them.
    if factory.is_some() {
        with.finish();
    }
    t.finish();

    name?;
    Some(Rule {
        name: spec.name,
        on_patterns: on?.iter().map(|(p, _)| (*p).to_owned()).collect(),
        on: on_set?,
        handler_name: factory?.name(),
        handler: built?,
        matcher: matcher?,
        series: Default::default(),
    })
}

/// A literal `on` key whose type is known but whose action is not is almost
/// certainly a typo (`container.dei`): say so rather than never firing.
fn check_event_key(t: &Table<'_, '_>, pattern: &str, span: std::ops::Range<usize>) {
    if pattern.contains(['*', '?', '[', '{']) {
        return;
    }
    let Some((typ, action)) = pattern.split_once('.') else {
        t.error(
            span,
            format!("event key \"{pattern}\" must be <type>.<action>, like \"container.die\", or a glob like \"network.*\""),
        );
        return;
    };
    let labels = crate::event::labels_for(typ, action);
    if labels.typ != crate::event::OTHER && labels.action == crate::event::OTHER {
        let known: Vec<&str> = crate::event::known_labels()
            .filter(|l| l.typ == labels.typ && l.action != crate::event::OTHER)
            .map(|l| l.action)
            .collect();
        t.error(
            span,
            format!(
                "unknown action \"{action}\" for type \"{typ}\" in \"{pattern}\"; known: {}",
                known.join(", ")
            ),
        );
    }
}

pub(super) fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(false).build()
}

pub(super) fn glob_reason(e: &globset::Error) -> String {
    e.kind().to_string()
}

pub(super) fn globs(t: &Table<'_, '_>, patterns: &[At<&str>], what: &str) -> Option<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    let mut ok = true;
    for (p, span) in patterns {
        match glob(p) {
            Ok(g) => {
                builder.add(g);
            }
            Err(e) => {
                ok = false;
                t.error(
                    span.clone(),
                    format!("bad glob \"{p}\" in `{what}`: {}", glob_reason(&e)),
                );
            }
        }
    }
    if !ok {
        return None;
    }
    match builder.build() {
        Ok(set) => Some(set),
        Err(e) => {
            t.error(t.span(), format!("cannot compile `{what}`: {e}"));
            None
        }
    }
}
