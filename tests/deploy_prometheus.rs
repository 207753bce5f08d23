//! The Prometheus and Grafana files in `deploy/`, checked with the real
//! tools, as an operator would use them:
//!
//! * `promtool check config` / `check rules` on the shipped files, and
//!   `promtool test rules deploy/prometheus/alerts_test.yml`, which must
//!   hold a firing and a quiet case for every alert in `alerts.yml`;
//! * a real Prometheus started with the shipped `prometheus-file-sd.yml`,
//!   its targets file pointing at a real dockwarden, reports `up == 1`
//!   within 30 s and has loaded every alert;
//! * every PromQL expression of the Grafana dashboard (with its template
//!   variables resolved against that Prometheus, as Grafana would) is
//!   accepted by the query API, and every expression here and in
//!   `alerts.yml` names only metrics dockwarden exports.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool` on PATH;
//! `scripts/test` installs it) and, for the scrape, the Docker Engine. Fails,
//! never skips, when one is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Dockwarden, TempDir, require_docker, run_with_timeout};

/// The issue's bound: a real Prometheus reports the sidecar up within this.
const UP_WITHIN: Duration = Duration::from_secs(30);

/// Metrics Prometheus makes itself for every target.
const PROMETHEUS_BUILTINS: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

const LOG_ALL: &str = r#"
[[rule]]
name = "all"
on = ["*"]
handler = "log"
[rule.with]
level = "debug"
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

/// Fails the test, saying how to get it, unless `tool --version` runs.
fn require_tool(tool: &str) {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{tool} --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "{tool} is not installed (not on PATH). It comes with Debian's `prometheus` package: \
             run scripts/test, which installs it, or `sudo apt-get install --no-install-recommends prometheus`."
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

/// `promtool ARGS...` from the repository root, as the README gives it;
/// returns its stdout and stderr, failing the test unless it exits 0.
fn promtool_ok(args: &[&str]) -> String {
    require_tool("promtool");
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(repo());
    let out = run_with_timeout(cmd, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("promtool {}: {e}", args.join(" ")));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

/// The alerting rules of `alerts.yml`: name → expr.
fn alerts() -> BTreeMap<String, String> {
    let doc = yaml("deploy/prometheus/alerts.yml");
    let mut out = BTreeMap::new();
    for group in doc["groups"].as_array().expect("alerts.yml: groups") {
        for rule in group["rules"].as_array().expect("alerts.yml: rules") {
            let name = rule["alert"]
                .as_str()
                .expect("alerts.yml: only alerting rules");
            let expr = rule["expr"].as_str().expect("alerts.yml: expr");
            assert!(
                out.insert(name.to_string(), expr.to_string()).is_none(),
                "alerts.yml: alert {name} is defined twice"
            );
        }
    }
    assert!(!out.is_empty(), "alerts.yml has no alerts");
    out
}

#[test]
fn promtool_checks_the_shipped_config_and_rules() {
    let n = alerts().len();
    for config in [
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/prometheus-file-sd.yml",
    ] {
        let out = promtool_ok(&["check", "config", config]);
        assert!(
            out.contains(&format!("SUCCESS: {n} rules found")),
            "promtool check config {config} did not load the {n} alerts of alerts.yml:\n{out}"
        );
    }
    let out = promtool_ok(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let out = promtool_ok(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    println!("{out}");
}

/// promtool passes a case that names an alert `alerts.yml` lacks (nothing
/// fires, as `exp_alerts: []` expects), so coverage is checked here.
#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let alerts = alerts();
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().expect("alerts_test.yml: tests") {
        let cases = case["alert_rule_test"].as_array();
        for t in cases.into_iter().flatten() {
            let name = t["alertname"].as_str().expect("alertname").to_string();
            assert!(
                alerts.contains_key(&name),
                "alerts_test.yml tests {name}, which alerts.yml does not define ({:?})",
                case["name"]
            );
            match t["exp_alerts"].as_array() {
                Some(a) if !a.is_empty() => firing.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let missing: Vec<String> = alerts
        .keys()
        .flat_map(|a| {
            let f = (!firing.contains(a)).then(|| format!("{a}: no case where it fires"));
            let q = (!quiet.contains(a)).then(|| format!("{a}: no case where it stays quiet"));
            f.into_iter().chain(q)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/prometheus/alerts_test.yml lacks:\n{}",
        missing.join("\n")
    );
}

// ---------------------------------------------------------------------------
// PromQL: the metric names an expression reads
// ---------------------------------------------------------------------------

/// Words that are PromQL syntax, not metric names.
const KEYWORDS: [&str; 15] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    "start",
    "end",
];

/// Aggregation operators: `sum by (x) (…)` puts a word between the name
/// and its parenthesis.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names `expr` selects: identifiers outside label matchers,
/// ranges and strings that are not a function, an aggregation, a keyword or
/// a label in a `by (…)`-style list.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening char to its closing one, past quoted strings.
    let skip_block = |mut i: usize, close: char| -> usize {
        while i < chars.len() && chars[i] != close {
            if matches!(chars[i], '"' | '\'' | '`') {
                i = skip_string(&chars, i);
            } else {
                i += 1;
            }
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '{' {
            i = skip_block(i + 1, '}');
        } else if c == '[' {
            i = skip_block(i + 1, ']');
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_'))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = chars.get(j) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if call
                && [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&lower.as_str())
            {
                i = skip_block(j + 1, ')'); // a list of label names
            } else if !call
                && !KEYWORDS.contains(&lower.as_str())
                && !AGGREGATIONS.contains(&lower.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// From a quote at `i` to just past its closing quote.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        if chars[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

#[test]
fn metric_names_reads_only_selectors() {
    let e = r#"histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{job=~"$job", x="b{c} d"}[5m] offset 1h)))
        > 5 and on(job) group_left(version) max without (x) (b) or vector(0) * bool c_total / 1e3 + inf
        # comment names_nothing
        - count(up == 0) + sum(increase(d[$__range])) by (e) + sum by (instance) (f:g)"#;
    let got: Vec<String> = metric_names(e).into_iter().collect();
    assert_eq!(got, ["a_bucket", "b", "c_total", "d", "f:g", "up"]);
}

// ---------------------------------------------------------------------------
// The dashboard
// ---------------------------------------------------------------------------

/// One PromQL query of the dashboard: where it is, and the query.
struct Query {
    place: String,
    expr: String,
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dockwarden-dashboard.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/dockwarden-dashboard.json is not JSON: {e}"))
}

/// Every panel target's `expr`, rows' nested panels included. Fails the
/// test for a target with no expression or one not on `${DS_PROMETHEUS}`.
fn dashboard_queries(dash: &Value) -> Vec<Query> {
    fn walk(panels: &Value, out: &mut Vec<Query>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("(untitled)");
            for t in p["targets"].as_array().into_iter().flatten() {
                let place = format!("panel {title:?} target {}", t["refId"]);
                let ds = t["datasource"]["uid"]
                    .as_str()
                    .or(p["datasource"]["uid"].as_str());
                assert_eq!(ds, Some("${DS_PROMETHEUS}"), "{place}: data source");
                let expr = t["expr"].as_str().unwrap_or_default().trim();
                assert!(!expr.is_empty(), "{place} has no PromQL expression");
                out.push(Query {
                    place,
                    expr: expr.to_string(),
                });
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    assert!(!out.is_empty(), "the dashboard has no queries");
    out
}

/// The dashboard's query variables: (name, metric selector, label) of each
/// `label_values(SELECTOR, LABEL)`, in order.
fn dashboard_variables(dash: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for v in dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        let name = v["name"].as_str().expect("variable name").to_string();
        match v["type"].as_str() {
            Some("datasource") => continue,
            Some("query") => {}
            other => panic!("dashboard variable {name}: type {other:?} is not checked here"),
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .expect("variable query");
        let inner = q
            .trim()
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!("dashboard variable {name}: {q:?} is not label_values(SELECTOR, LABEL)")
            });
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("dashboard variable {name}: {q:?} has no metric selector"));
        out.push((name, selector.trim().to_string(), label.trim().to_string()));
    }
    out
}

/// Grafana's substitution: `$name`, `${name}` and `[[name]]`, plus the
/// built-in intervals. Fails the test if a `$` is left.
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = expr.to_string();
    let builtins = [
        ("__range", "1h"),
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
    ];
    let mut all: Vec<(&str, &str)> = builtins.to_vec();
    all.extend(values.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // Longest names first: a name that begins another (`$job`, `$jobs`)
    // must not replace part of it.
    all.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (k, v) in all {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("[[{k}]]"), v)
            .replace(&format!("${k}"), v);
    }
    assert!(
        !out.contains('$'),
        "unknown template variable left in {out:?} (from {expr:?})"
    );
    out
}

/// Grafana's escaping of one value of a multi-value variable inside a
/// PromQL regex string: regex metacharacters get a backslash, itself
/// escaped for the string.
fn grafana_regex_escape(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            '\\' | '^' | '$' | '*' | '+' | '?' | '.' | '(' | ')' | '|' | '[' | ']' | '{' | '}' => {
                format!("\\\\{c}")
            }
            c => c.to_string(),
        })
        .collect()
}

#[test]
fn dashboard_parses_and_every_target_has_a_query() {
    let dash = dashboard();
    let queries = dashboard_queries(&dash);
    let vars = dashboard_variables(&dash);
    let known: BTreeMap<String, String> = vars
        .iter()
        .map(|(n, _, _)| (n.clone(), ".*".into()))
        .collect();
    for q in &queries {
        substitute(&q.expr, &known);
        assert!(
            !metric_names(&q.expr).is_empty(),
            "{}: reads no metric: {}",
            q.place,
            q.expr
        );
    }
}

// ---------------------------------------------------------------------------
// A real Prometheus scraping a real dockwarden
// ---------------------------------------------------------------------------

/// Names dockwarden can export: every `dockwarden_*` name declared in
/// `src/metrics.rs` (with `_bucket`/`_sum`/`_count` for histograms), since
/// a vector with no child yet has no sample to scrape.
fn declared_metric_names() -> BTreeSet<String> {
    let src = read("src/metrics.rs");
    let mut names = BTreeSet::new();
    for (i, piece) in src.split('"').enumerate() {
        if i % 2 == 0
            || !piece.starts_with("dockwarden_")
            || !piece
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        // The declaration this literal is in: since the last `reg(`.
        let at = src
            .find(&format!("\"{piece}\""))
            .expect("the literal is in the file");
        let decl = &src[src[..at].rfind("reg(").unwrap_or(0)..at];
        names.insert(piece.to_string());
        if decl.contains("Histogram") {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{piece}{suffix}"));
            }
        }
    }
    assert!(
        names.len() > 20,
        "found only {names:?} in src/metrics.rs: has its layout changed?"
    );
    names
}

/// `prometheus` started on a free loopback port with the shipped
/// `prometheus-file-sd.yml` and `alerts.yml`, copied unchanged into a temp
/// dir whose `targets/dockwarden.yml` lists `target`. Stopped (SIGTERM,
/// then SIGKILL) and its dir removed on drop; its log is printed if the
/// test is failing.
struct Prometheus {
    server: common::prometheus::Prometheus,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        require_tool("prometheus");
        let dir = TempDir::new("prometheus");
        let d = dir.path();
        for f in ["prometheus-file-sd.yml", "alerts.yml"] {
            fs::copy(repo().join("deploy/prometheus").join(f), d.join(f))
                .expect("copy the shipped config");
        }
        fs::create_dir(d.join("targets")).expect("targets dir");
        fs::write(
            d.join("targets/dockwarden.yml"),
            format!("- targets: [\"{target}\"]\n  labels:\n    deployment: test\n"),
        )
        .expect("write the targets file");
        let server = common::prometheus::Prometheus::start(d, &d.join("prometheus-file-sd.yml"));
        Self { server, _dir: dir }
    }

    fn log(&self) -> String {
        self.server.log()
    }

    /// `GET /api/v1/PATH?PARAMS` (values URL-encoded) → its JSON, or why not.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect();
        // Errors show the parameters as written, not URL-encoded.
        let what = format!("GET /api/v1/{path} {params:?}");
        self.server
            .api(&format!("{path}?{}", query.join("&")), &what)
    }

    /// An instant query's result vector, or why it was refused.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", promql)])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    fn label_values(&self, label: &str, selector: &str) -> Vec<String> {
        let data = self
            .api(&format!("label/{label}/values"), &[("match[]", selector)])
            .unwrap_or_else(|e| panic!("{e}\nprometheus log:\n{}", self.log()));
        data.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_sidecar_and_accepts_every_dashboard_query() {
    require_tool("prometheus");
    require_docker();
    let mut dw = Dockwarden::start(LOG_ALL);
    dw.wait_ready(Duration::from_secs(20));
    let instance = dw.addr().to_string();

    // 1. `up == 1` for the sidecar within 30 s of starting Prometheus.
    let started = Instant::now();
    let prom = Prometheus::start(dw.addr());
    let mut last;
    loop {
        match prom.query(r#"up{job="dockwarden"}"#) {
            Ok(r)
                if r.iter().any(|s| {
                    s["metric"]["instance"] == instance.as_str() && s["value"][1] == "1"
                }) =>
            {
                break;
            }
            Ok(r) => last = format!("{r:?}"),
            Err(e) => last = e,
        }
        if started.elapsed() > UP_WITHIN {
            let targets = prom
                .api("targets", &[])
                .map(|t| t.to_string())
                .unwrap_or_else(|e| e);
            panic!(
                "Prometheus did not report up == 1 for dockwarden at {instance} within {UP_WITHIN:?}\n\
                 last up{{job=\"dockwarden\"}}: {last}\ntargets: {targets}\nprometheus log:\n{}",
                prom.log()
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
    println!("up == 1 after {:.1?}", started.elapsed());

    // 2. It loaded every alert of alerts.yml, none in error.
    let alerts = alerts();
    let rules = prom
        .api("rules", &[("type", "alert")])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut loaded = BTreeSet::new();
    for g in rules["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            assert_ne!(
                r["health"], "err",
                "alert {} does not evaluate: {}",
                r["name"], r["lastError"]
            );
            loaded.insert(r["name"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(
        loaded,
        alerts.keys().cloned().collect(),
        "alerts Prometheus loaded vs alerts.yml"
    );

    // 3. The names expressions may use: a real scrape, the declared ones
    //    that have no sample yet, and Prometheus's own.
    let mut exported: BTreeSet<String> = dw
        .metrics()
        .samples()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    exported.extend(declared_metric_names());
    exported.extend(PROMETHEUS_BUILTINS.map(String::from));

    // 4. The variables, resolved as Grafana would, then every query twice:
    //    with "All" selected (`.*`) and with this sidecar selected.
    let dash = dashboard();
    let mut all = BTreeMap::new();
    let mut one = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, selector, label) in dashboard_variables(&dash) {
        for n in metric_names(&selector) {
            if !exported.contains(&n) {
                problems.push(format!(
                    "variable {name}: {n} is not a metric dockwarden exports"
                ));
            }
        }
        let values = prom.label_values(&label, &substitute(&selector, &one));
        let want = match label.as_str() {
            "job" => "dockwarden",
            "instance" => instance.as_str(),
            other => panic!("variable {name}: no expected value for label {other}"),
        };
        assert!(
            values.iter().any(|v| v == want),
            "variable {name} = {selector} → {values:?}, without {want}"
        );
        all.insert(name.clone(), ".*".to_string());
        one.insert(name, grafana_regex_escape(want));
    }
    let queries = dashboard_queries(&dash);
    for q in &queries {
        for n in metric_names(&q.expr) {
            if !exported.contains(&n) {
                problems.push(format!(
                    "{}: {n} is not a metric dockwarden exports: {}",
                    q.place, q.expr
                ));
            }
        }
        for (which, values) in [("All", &all), ("this instance", &one)] {
            let promql = substitute(&q.expr, values);
            match prom.query(&promql) {
                Err(e) => problems.push(format!("{} ({which}): refused: {e}", q.place)),
                // A query with no range reads the last scrape: it must see it.
                Ok(r) if r.is_empty() && which != "All" && !promql.contains('[') => {
                    problems.push(format!("{} ({which}): no data: {promql}", q.place));
                }
                Ok(_) => {}
            }
        }
    }
    for (name, expr) in &alerts {
        for n in metric_names(expr) {
            if !exported.contains(&n) {
                problems.push(format!(
                    "alert {name}: {n} is not a metric dockwarden exports"
                ));
            }
        }
    }
    // A quiet case fed a misspelt series would pass for the wrong reason.
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    for case in tests["tests"].as_array().into_iter().flatten() {
        for series in case["input_series"].as_array().into_iter().flatten() {
            let s = series["series"].as_str().unwrap_or_default();
            let n = s.split('{').next().unwrap_or_default().trim();
            if !exported.contains(n) {
                problems.push(format!(
                    "alerts_test.yml {}: input series {s} is not a metric dockwarden exports",
                    case["name"]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) with deploy/grafana/dockwarden-dashboard.json or deploy/prometheus:\n{}",
        problems.len(),
        problems.join("\n")
    );
    println!(
        "{} dashboard queries accepted; total {:.1?}",
        queries.len(),
        started.elapsed()
    );
}
