//! The rules file: TOML → validated, compiled [`Config`]; and matching.
//!
//! Loading is parse → validate (collecting *every* problem with its line and
//! column) → compile. Nothing half-valid comes out: a file with one problem
//! yields [`Diagnostics`] and no config, so a running sidecar keeps its old
//! rules. Each rule's handler is built by the handler's own factory, looked
//! up in the [`Registry`], which validates its parameters; this module knows
//! handlers only through that registry.
//!
//! `sections` reads the non-rule sections, `compile` the rules, `matcher`
//! their `[rule.match]` conditions.
//!
//! This file is long because its tests load whole rules files through the
//! one entry point (`load`), a reload's included, beside it.

mod compile;
mod matcher;
mod on_keys;
pub mod sections;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use globset::GlobSet;
use toml::de::DeTable;

use crate::audit::AuditConfig;
pub use crate::config::ExitCode;
use crate::config::diag::Collector;
pub use crate::config::diag::{Diagnostic, Diagnostics};
use crate::event::Event;
use crate::handlers::{Handler, Observer, Registry};
use crate::metrics::{Metrics, RuleSeries};
use crate::notify::NotifyConfig;
pub use matcher::Matcher;
pub use on_keys::OnKeys;
pub use sections::{
    ApiConfig, DEFAULT_LISTEN, DispatchConfig, MIN_TOKEN_CHARS, ServerConfig, SourceConfig,
    StateConfig,
};

/// A loaded rules file.
pub struct Config {
    pub server: ServerConfig,
    pub source: SourceConfig,
    /// `[state]`: where the checkpoint lives.
    pub state: StateConfig,
    pub dispatch: DispatchConfig,
    /// `[audit]`: the sink of `exec_audit` and `network_audit`.
    pub audit: AuditConfig,
    /// `[api]`: limits of the status API.
    pub api: ApiConfig,
    /// `[notify.targets.*]`: where `notify` rules send.
    pub notify: NotifyConfig,
    /// `[engine]`: where the engine is, and TLS (the environment overrides it).
    pub engine: crate::docker::EngineConfig,
    pub rules: Arc<Ruleset>,
}

/// The compiled rules, in file order.
#[derive(Default)]
pub struct Ruleset {
    pub rules: Vec<Arc<Rule>>,
    /// The observers of the handler families in use, each once.
    pub observers: Vec<Arc<dyn Observer>>,
    /// Whether a rule's handler reads the container view, which then keeps
    /// every container inspected ([`crate::containers::Containers::keep_all`]).
    pub needs_view: bool,
    /// Which rules' `on` patterns match a dispatch key, found once per key.
    pub on_keys: OnKeys,
}

/// One `[[rule]]`.
pub struct Rule {
    pub name: Arc<str>,
    /// The `on` patterns as written, for logs.
    pub on_patterns: Vec<String>,
    on: GlobSet,
    pub handler_name: &'static str,
    pub handler: Arc<dyn Handler>,
    pub matcher: Matcher,
    /// Its metric series, looked up when first moved.
    series: OnceLock<RuleSeries>,
}

impl Rule {
    /// Its series in `metrics` (the first `metrics` asked: a rule serves
    /// one process).
    pub fn series(&self, metrics: &Metrics) -> &RuleSeries {
        self.series
            .get_or_init(|| metrics.rule_series(&self.name, self.handler_name))
    }

    /// Whether this rule fires for `event`.
    pub fn matches(&self, event: &Event) -> bool {
        self.on.is_match(&*event.key) && self.matcher.matches(event)
    }

    /// A rule with no `[rule.match]` conditions, built in code (tests, and
    /// callers that wire handlers without a file).
    pub fn new(
        name: &str,
        on: &[&str],
        handler_name: &'static str,
        handler: Arc<dyn Handler>,
    ) -> Result<Rule, globset::Error> {
        let mut set = globset::GlobSetBuilder::new();
        for pattern in on {
            set.add(compile::glob(pattern)?);
        }
        Ok(Rule {
            name: Arc::from(name),
            on_patterns: on.iter().map(|p| (*p).to_owned()).collect(),
            on: set.build()?,
            handler_name,
            handler,
            matcher: Matcher::default(),
            series: Default::default(),
        })
    }
}

impl Ruleset {
    /// The rules that fire for `event`, in file order.
    pub fn matching<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = &'a Arc<Rule>> + 'a {
        let on = self.on_keys.rules_for(&event.key, &self.rules);
        (0..on.len())
            .map(move |i| &self.rules[on[i]])
            .filter(move |r| r.matcher.matches(event))
    }

    /// Whether an observer wants this event.
    pub fn observed(&self, event: &Event) -> bool {
        self.observers.iter().any(|o| o.wants(event))
    }

    /// Handler names in use, sorted, for summaries.
    pub fn handlers_used(&self) -> BTreeSet<&'static str> {
        self.rules.iter().map(|r| r.handler_name).collect()
    }
}

impl Config {
    /// Reads and loads a rules file.
    pub fn load_file(path: &Path, registry: &Registry) -> Result<Config, Diagnostics> {
        let (display, source) = read(path)?;
        Config::load_str(&display, &source, registry)
    }

    /// Reads and loads a rules file to start the sidecar with: as
    /// [`Config::load_file`], and the token files `[server]` names must be
    /// usable, each problem at its line.
    pub fn start_file(path: &Path, registry: &Registry) -> Result<Config, Diagnostics> {
        let (display, source) = read(path)?;
        let tokens = sections::token_file_problems(&display, &source);
        Config::load_with(&display, &source, registry, tokens)
    }

    /// Reads and loads a rules file for the running sidecar (a reload):
    /// as [`Config::load_file`], and its rules may send only to the
    /// notify targets in `started_targets`, the ones with a sender (built
    /// at start). A rule naming another is an error at its `target`.
    pub fn reload_file(
        path: &Path,
        registry: &Registry,
        started_targets: &Arc<[String]>,
    ) -> Result<Config, Diagnostics> {
        let (display, source) = read(path)?;
        Config::load(&display, &source, registry, Some(started_targets))
    }

    /// `dockwarden check`: [`Config::load_file`], and also whether the
    /// certificate files `[engine]` names and the token files `[server]`
    /// names can be used, every problem in one list in file order.
    pub fn check_file(path: &Path, registry: &Registry) -> Result<Config, Diagnostics> {
        let (display, source) = read(path)?;
        let mut files = sections::engine_file_problems(&display, &source);
        files
            .items
            .extend(sections::token_file_problems(&display, &source).items);
        Config::load_with(&display, &source, registry, files)
    }

    /// [`Config::load_str`], failing also on `files`' problems (of the
    /// files the rules name), all of them in file order.
    fn load_with(
        display: &str,
        source: &str,
        registry: &Registry,
        mut files: Diagnostics,
    ) -> Result<Config, Diagnostics> {
        match Config::load_str(display, source, registry) {
            Ok(config) if files.items.is_empty() => Ok(config),
            Ok(_) => {
                files.items.sort_by_key(|d| (d.line, d.col));
                Err(files)
            }
            Err(mut all) => {
                all.items.extend(files.items);
                all.items.sort_by_key(|d| (d.line, d.col));
                Err(all)
            }
        }
    }

    /// Loads rules from text; `file` names it in diagnostics.
    pub fn load_str(file: &str, source: &str, registry: &Registry) -> Result<Config, Diagnostics> {
        Config::load(file, source, registry, None)
    }

    /// [`Config::load_str`]; on a reload, with the notify targets that
    /// have a sender.
    fn load(
        file: &str,
        source: &str,
        registry: &Registry,
        started_targets: Option<&Arc<[String]>>,
    ) -> Result<Config, Diagnostics> {
        let (root, syntax) = DeTable::parse_recoverable(source);
        let diags = RefCell::new(Collector::default());
        for err in &syntax {
            let span = err.span().unwrap_or(0..0);
            diags
                .borrow_mut()
                .error(span, format!("TOML syntax: {}", err.message().trim()));
        }
        let config = if syntax.is_empty() {
            compile::compile(
                source,
                root.get_ref(),
                root.span(),
                &diags,
                registry,
                started_targets,
            )
        } else {
            None
        };
        let diags = diags.into_inner();
        match config {
            Some(config) if diags.is_empty() => Ok(config),
            _ => Err(diags.finish(file, source)),
        }
    }
}

/// The rules file at `path`, with the name diagnostics give it.
fn read(path: &Path) -> Result<(String, String), Diagnostics> {
    let display = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => Ok((display, source)),
        Err(e) => Err(Diagnostics::whole_file(
            &display,
            format!("cannot read rules file: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<Config, Diagnostics> {
        Config::load_str("t.toml", src, &Registry::builtin())
    }

    fn event(json: &str) -> Event {
        Event::decode(json.as_bytes()).expect("test event decodes")
    }

    fn die(name: &str, code: i64, labels: &str) -> Event {
        event(&format!(
            r#"{{"Type":"container","Action":"die","Actor":{{"ID":"c1","Attributes":{{"name":"{name}","image":"nginx:1.25","exitCode":"{code}"{labels}}}}},"timeNano":1}}"#
        ))
    }

    fn names(config: &Config, ev: &Event) -> Vec<String> {
        config
            .rules
            .matching(ev)
            .map(|r| r.name.to_string())
            .collect()
    }

    #[test]
    fn defaults_apply_without_sections() {
        let c = load("").expect("empty file is valid");
        assert_eq!(c.server.listen, None);
        assert_eq!(c.server.shutdown_grace_secs, 10);
        assert_eq!(c.dispatch.queue_capacity, 8192);
        assert!(c.rules.rules.is_empty());
    }

    #[test]
    fn all_matching_rules_fire_in_file_order() {
        let c = load(
            r#"
[[rule]]
name = "everything"
on = ["*"]
handler = "log"
[[rule]]
name = "crashes"
on = ["container.die", "container.oom"]
handler = "log"
[rule.match]
exit_code = "nonzero"
[[rule]]
name = "networks"
on = "network.*"
handler = "log"
"#,
        )
        .expect("valid");
        assert_eq!(names(&c, &die("web", 3, "")), ["everything", "crashes"]);
        assert_eq!(names(&c, &die("web", 0, "")), ["everything"]);
        let net = event(r#"{"Type":"network","Action":"connect","Actor":{"ID":"n"},"timeNano":1}"#);
        assert_eq!(names(&c, &net), ["everything", "networks"]);
        let unknown = event(r#"{"Type":"gizmo","Action":"spin","timeNano":1}"#);
        assert_eq!(names(&c, &unknown), ["everything"]);
    }

    #[test]
    fn match_conditions_all_must_hold() {
        let c = load(
            r#"
[[rule]]
name = "r"
on = ["container.*"]
handler = "log"
[rule.match]
name = ["web-*", "/api"]
image = ["nginx:*"]
labels = { "dockwarden.heal" = "true", "team" = "*" }
exit_code = [1, 137]
"#,
        )
        .expect("valid");
        let labelled = r#","dockwarden.heal":"true","team":"core""#;
        assert_eq!(names(&c, &die("web-1", 137, labelled)), ["r"]);
        assert_eq!(names(&c, &die("api", 1, labelled)), ["r"]);
        assert!(names(&c, &die("db", 1, labelled)).is_empty(), "name");
        assert!(
            names(&c, &die("web-1", 2, labelled)).is_empty(),
            "exit code"
        );
        assert!(
            names(&c, &die("web-1", 1, r#","dockwarden.heal":"true""#)).is_empty(),
            "team missing"
        );
        assert!(
            names(
                &c,
                &die("web-1", 1, r#","dockwarden.heal":"false","team":"x""#)
            )
            .is_empty(),
            "label value"
        );
        // `true` matches a boolean however it is spelled.
        for spelled in ["True", "YES", "1", " yes "] {
            let labelled = format!(r#","dockwarden.heal":"{spelled}","team":"x""#);
            assert_eq!(names(&c, &die("web-1", 1, &labelled)), ["r"], "{spelled}");
        }
        assert!(
            names(
                &c,
                &die("web-1", 1, r#","dockwarden.heal":"No","team":"x""#)
            )
            .is_empty(),
            "No is false"
        );
        // exit_code does not constrain other events.
        let start = event(
            r#"{"Type":"container","Action":"start","Actor":{"ID":"c","Attributes":{"name":"web-2","image":"nginx:1","dockwarden.heal":"true","team":"a"}},"timeNano":1}"#,
        );
        assert_eq!(names(&c, &start), ["r"]);
    }

    #[test]
    fn status_matches_health_status_detail() {
        let c = load(
            r#"
[[rule]]
name = "sick"
on = ["container.health_status"]
handler = "log"
[rule.match]
status = "unhealthy"
"#,
        )
        .expect("valid");
        let sick = event(
            r#"{"Type":"container","Action":"health_status: unhealthy","Actor":{"ID":"c"},"timeNano":1}"#,
        );
        let well = event(
            r#"{"Type":"container","Action":"health_status: healthy","Actor":{"ID":"c"},"timeNano":1}"#,
        );
        assert_eq!(names(&c, &sick), ["sick"]);
        assert!(names(&c, &well).is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let src = "[[rule]]\nname = \"a\"\non = [\"container.die\"]\nhandler = \"nope\"\ncolour = 1\n\n[[rule]]\nname = \"a\"\non = [\"container.die\"]\nhandler = \"log\"\n[rule.match]\nexit_code = \"often\"\n";
        let d = load(src).err().expect("invalid");
        let lines: Vec<String> = d.to_string().lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 4, "{d}");
        assert!(
            lines[0].starts_with("t.toml:4:11: unknown handler \"nope\""),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("t.toml:5:1: unknown key `colour`"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("t.toml:8:8: duplicate rule name \"a\" (first used at line 2)"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].starts_with("t.toml:12:13: `exit_code` must be"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn wrong_types_and_syntax_errors_are_positioned() {
        let d = load("[[rule]]\nname = 3\non = [\"*\"]\nhandler = \"log\"\n")
            .err()
            .expect("invalid");
        assert!(
            d.to_string()
                .starts_with("t.toml:2:8: `name` in rule #1 must be a string, found integer"),
            "{d}"
        );
        let d = load("[[rule]\nname = \"x\"\n").err().expect("invalid");
        assert_eq!(d.items[0].line, 1, "{d}");
        assert!(d.items[0].message.starts_with("TOML syntax"), "{d}");
        let d = load("[dispatch]\nqueue_capacity = -1\n")
            .err()
            .expect("invalid");
        assert!(
            d.to_string()
                .contains("t.toml:2:18: `queue_capacity` in [dispatch] must be between"),
            "{d}"
        );
    }

    #[test]
    fn missing_required_keys() {
        let d = load("[[rule]]\nname = \"x\"\n").err().expect("invalid");
        let s = d.to_string();
        assert!(s.contains("rule \"x\" is missing required key `on`"), "{s}");
        assert!(
            s.contains("rule \"x\" is missing required key `handler`"),
            "{s}"
        );
    }

    fn own(action: &str, name: &str, fields: serde_json::Value) -> Event {
        let mut attrs = crate::event::Attributes::default();
        attrs.push("name", name);
        let mut e = Event::new("dockwarden", action, "c1".into(), attrs, 1);
        e.synthetic = true;
        e.fields = fields.as_object().cloned().map(std::sync::Arc::new);
        e
    }

    #[test]
    fn own_events_match_by_key_name_and_severity() {
        let c = load(
            r#"
[[rule]]
name = "tell-ops"
on = ["dockwarden.breaker_open", "dockwarden.exec"]
handler = "log"
[rule.match]
name = ["web-*"]
severity = ["high", "critical"]
"#,
        )
        .expect("valid");
        let high = serde_json::json!({"severity": "high"});
        let low = serde_json::json!({"severity": "low"});
        assert_eq!(names(&c, &own("exec", "web-1", high.clone())), ["tell-ops"]);
        assert!(names(&c, &own("exec", "web-1", low)).is_empty());
        assert!(names(&c, &own("exec", "db-1", high)).is_empty());
        // `severity` does not constrain other keys.
        let open = own("breaker_open", "web-1", serde_json::json!({}));
        assert_eq!(names(&c, &open), ["tell-ops"]);
    }

    #[test]
    fn healing_and_auditing_never_take_own_events() {
        let d = load("[[rule]]\nname = \"r\"\non = [\"*\"]\nhandler = \"restart\"\n")
            .err()
            .expect("a restart rule on every key would act on its own restarts");
        let s = d.to_string();
        assert!(
            s.starts_with("t.toml:3:7: handler \"restart\" never acts on dockwarden's own events, but \"*\" matches dockwarden."),
            "{s}"
        );
        load("[[rule]]\nname = \"r\"\non = [\"*\"]\nhandler = \"log\"\n").expect("log may");
    }

    #[test]
    fn severity_needs_dockwarden_exec_and_known_levels() {
        let d = load("[[rule]]\nname = \"r\"\non = [\"container.die\"]\nhandler = \"log\"\n[rule.match]\nseverity = [\"high\", \"urgent\"]\n")
            .err()
            .expect("invalid");
        let s = d.to_string();
        assert!(
            s.contains("t.toml:6:13: `severity` applies to dockwarden.exec only"),
            "{s}"
        );
        assert!(s.contains("t.toml:6:21: `severity` must list levels of low, medium, high, critical, found \"urgent\""), "{s}");
    }

    #[test]
    fn a_broken_target_is_reported_once_not_again_as_unknown() {
        let src = "[notify.targets.ops]\nkind = \"webhok\"\nurl = \"http://x/\"\n\n[[rule]]\nname = \"r\"\non = [\"dockwarden.*\"]\nhandler = \"notify\"\n[rule.with]\ntarget = [\"ops\", \"opz\"]\n";
        let d = load(src).err().expect("invalid");
        let lines: Vec<String> = d.to_string().lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 2, "{d}");
        assert!(
            lines[0].starts_with("t.toml:2:8: `kind` in [notify.targets.ops] must be one of"),
            "{d}"
        );
        assert!(
            lines[1].starts_with("t.toml:10:18: unknown notify target \"opz\" (defined: ops"),
            "{d}"
        );
    }

    #[test]
    fn a_reload_may_change_a_started_target_but_not_send_to_a_new_one() {
        let started: Arc<[String]> = vec!["ops".to_owned()].into();
        let reload = |src: &str| Config::load("t.toml", src, &Registry::builtin(), Some(&started));
        let target = |name: &str, url: &str| {
            format!("[notify.targets.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\n")
        };
        let rule = "[[rule]]\nname = \"r\"\non = [\"dockwarden.*\"]\nhandler = \"notify\"\n[rule.with]\ntarget = [\"ops\", \"pager\"]\n";
        // A new URL for ops, and pager declared but not named: validated only.
        let changed = format!(
            "{}{}",
            target("ops", "http://y/"),
            target("pager", "http://z/")
        );
        assert!(reload(&changed).is_ok());
        let d = reload(&format!("{changed}{rule}"))
            .err()
            .expect("pager has no sender");
        assert_eq!(
            d.to_string(),
            "t.toml:12:18: notify target \"pager\" was added after start (running: ops); [notify] takes effect at start, so restart dockwarden to send to it"
        );
        // Without a running sidecar (a start, `dockwarden check`) it is fine.
        assert!(load(&format!("{changed}{rule}")).is_ok());
    }
}
