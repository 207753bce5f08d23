//! Reading `[notify]` from the rules file through the span-aware
//! [`Table`], so `dockwarden check` pins every problem to `FILE:LINE:COL`:
//! an unknown kind or key, a missing or malformed URL, an unreadable
//! secret file, a header or token that cannot be sent.
//!
//! Secrets (`url_file`, `token_file`, `header_files`) are read here, at
//! parse time, so `check` catches an unreadable file; their contents never
//! appear in a message. It owns the mapping from TOML to [`TargetConfig`];
//! it must not send anything.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use toml::de::DeValue;

use super::config::{
    DEFAULT_BACKOFF_INITIAL_MS, DEFAULT_BACKOFF_MAX_SECS, DEFAULT_BREAKER_COOLDOWN_SECS,
    DEFAULT_BREAKER_FAILURES, DEFAULT_MAX_PER_MINUTE, DEFAULT_QUEUE, DEFAULT_TIMEOUT_SECS, Kind,
    NotifyConfig, Secret, TargetConfig, TargetUrl,
};
use crate::config::table::Table;

/// Headers dockwarden sets itself; a `headers` entry may not replace them.
const RESERVED_HEADERS: [&str; 5] = [
    "idempotency-key",
    "content-length",
    "content-type",
    "host",
    "transfer-encoding",
];

/// Reads `[notify]` from the file's top table; problems go to the
/// collector behind `top`.
pub fn read(top: &mut Table<'_, '_>) -> NotifyConfig {
    let Some(mut notify) = top.table("notify", "[notify]") else {
        return NotifyConfig::default();
    };
    let mut targets = Vec::new();
    let mut declared = Vec::new();
    if let Some(table) = notify.table("targets", "[notify.targets]") {
        for ((name, name_span), value) in table.entries() {
            declared.push(name.to_owned());
            let what = format!("[notify.targets.{name}]");
            let DeValue::Table(t) = value.get_ref() else {
                table.error(
                    value.span(),
                    format!(
                        "{what} must be a table, found {}",
                        value.get_ref().type_str()
                    ),
                );
                continue;
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                table.error(
                    name_span.clone(),
                    format!("target name \"{name}\" may hold only letters, digits, `-` and `_` (it names a spool file and a metric label)"),
                );
            }
            let t = Table::new(Some(t), value.span(), what, table.collector());
            if let Some(target) = read_target(name, t) {
                targets.push(target);
            }
        }
        // Its keys are target names, all read above: no `finish`.
    }
    notify.finish();
    NotifyConfig { targets, declared }
}

fn read_target(name: &str, mut t: Table<'_, '_>) -> Option<TargetConfig> {
    let what = t.what().to_owned();
    let kind = t.required_str("kind").and_then(|(k, span)| {
        let kind = Kind::parse(k);
        if kind.is_none() {
            t.error(
                span,
                format!(
                    "`kind` in {what} must be one of {}, found \"{k}\"",
                    Kind::NAMES.join(", ")
                ),
            );
        }
        kind
    });

    let url = match (t.str("url"), t.str("url_file")) {
        (Some(_), Some((_, span))) => {
            t.error(span, format!("{what} takes `url` or `url_file`, not both"));
            None
        }
        (None, None) => {
            t.error_here(format!("{what} needs `url` or `url_file`"));
            None
        }
        // The URL may hold a token: say what is wrong, never echo it.
        (Some((u, span)), None) => TargetUrl::parse(u)
            .map_err(|why| t.error(span, format!("`url` in {what} {why}")))
            .ok(),
        (None, Some((path, span))) => {
            secret_file(&t, "url_file", path, span.clone()).and_then(|u| {
                TargetUrl::parse(u.expose())
                    .map_err(|why| t.error(span, format!("the URL in `url_file` of {what} {why}")))
                    .ok()
            })
        }
    };

    let mut headers = Vec::new();
    for (key, from_file) in [("headers", false), ("header_files", true)] {
        let Some(h) = t.table(key, format!("`{key}` of {what}")) else {
            continue;
        };
        if kind.is_some_and(|k| k != Kind::Webhook) {
            h.error_here(format!(
                "`{key}` in {what} applies to kind \"webhook\" only"
            ));
        }
        for ((hname, hspan), v) in h.entries() {
            let DeValue::String(s) = v.get_ref() else {
                h.error(
                    v.span(),
                    format!("`{key}` in {what} must map names to strings"),
                );
                continue;
            };
            if HeaderName::from_bytes(hname.as_bytes()).is_err() {
                h.error(hspan, format!("\"{hname}\" is not a valid header name"));
                continue;
            }
            if RESERVED_HEADERS.contains(&hname.to_ascii_lowercase().as_str()) {
                h.error(hspan, format!("header \"{hname}\" is set by dockwarden"));
                continue;
            }
            let value = if from_file {
                secret_file(&h, "header_files", s, v.span())
            } else {
                Some(Secret::new(s.as_ref()))
            };
            if let Some(value) = value {
                if HeaderValue::from_str(value.expose()).is_err() {
                    h.error(
                        v.span(),
                        format!("the value of header \"{hname}\" holds characters a header cannot"),
                    );
                } else {
                    headers.push((hname.to_owned(), value));
                }
            }
        }
    }

    let token = match (t.str("token"), t.str("token_file")) {
        (Some(_), Some((_, span))) => {
            t.error(
                span,
                format!("{what} takes `token` or `token_file`, not both"),
            );
            None
        }
        (Some((tok, span)), None) => Some((Secret::new(tok.trim()), span)),
        (None, Some((path, span))) => {
            secret_file(&t, "token_file", path, span.clone()).map(|s| (s, span))
        }
        (None, None) => None,
    };
    if let (Some(k), Some((_, span))) = (kind, &token)
        && !matches!(k, Kind::Ntfy | Kind::Gotify)
    {
        t.error(
            span.clone(),
            format!("a token in {what} applies to kinds \"ntfy\" and \"gotify\" only (a webhook takes `headers`)"),
        );
    }
    if let Some((tok, span)) = &token
        && HeaderValue::from_str(tok.expose()).is_err()
    {
        t.error(
            span.clone(),
            format!("the token of {what} holds characters a header cannot"),
        );
    }
    if kind == Some(Kind::Gotify) && token.is_none() {
        t.error_here(format!(
            "{what} of kind \"gotify\" needs `token` or `token_file` (an application token)"
        ));
    }

    let timeout = Duration::from_secs(t.u64_in("timeout_secs", DEFAULT_TIMEOUT_SECS, 1..301));
    let max_per_minute = t.u64_in("max_per_minute", DEFAULT_MAX_PER_MINUTE, 1..10_001) as u32;
    let queue = t.u64_in("queue", DEFAULT_QUEUE, 1..1_000_001) as usize;
    let breaker_failures = t.u64_in("breaker_failures", DEFAULT_BREAKER_FAILURES, 1..1001) as u32;
    let breaker_cooldown = Duration::from_secs(t.u64_in(
        "breaker_cooldown_secs",
        DEFAULT_BREAKER_COOLDOWN_SECS,
        1..86_401,
    ));
    let backoff_initial = Duration::from_millis(t.u64_in(
        "backoff_initial_ms",
        DEFAULT_BACKOFF_INITIAL_MS,
        10..600_001,
    ));
    let backoff_max =
        Duration::from_secs(t.u64_in("backoff_max_secs", DEFAULT_BACKOFF_MAX_SECS, 1..86_401));
    t.finish();
    Some(TargetConfig {
        name: name.to_owned(),
        kind: kind?,
        url: url?,
        headers,
        token: token.map(|(s, _)| s),
        timeout,
        max_per_minute,
        rate_window: Duration::from_secs(60),
        queue,
        breaker_failures,
        breaker_cooldown,
        backoff_initial: backoff_initial.min(backoff_max),
        backoff_max,
    })
}

/// The trimmed contents of a secret file; an unreadable or empty file is
/// a problem at `span`. The contents never appear in a message.
fn secret_file(
    t: &Table<'_, '_>,
    key: &str,
    path: &str,
    span: std::ops::Range<usize>,
) -> Option<Secret> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => {
            t.error(span, format!("`{key}` \"{path}\" is empty"));
            None
        }
        Ok(s) => Some(Secret::new(s.trim())),
        Err(e) => {
            t.error(span, format!("cannot read `{key}` \"{path}\": {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use toml::de::DeTable;

    use crate::test_files::TempFile;

    use super::*;
    use crate::config::diag::Collector;

    /// Reads `src` and returns the config and `t.toml:LINE:COL: message` lines.
    fn load(src: &str) -> (NotifyConfig, Vec<String>) {
        let root = DeTable::parse(src).expect("test TOML is valid syntax");
        let diags = RefCell::new(Collector::default());
        let mut top = Table::new(Some(root.get_ref()), root.span(), "the rules file", &diags);
        let config = read(&mut top);
        let d = diags.into_inner().finish("t.toml", src);
        (config, d.to_string().lines().map(str::to_owned).collect())
    }

    fn secret_path(name: &str, contents: Option<&str>) -> TempFile {
        TempFile::new("notify-cfg", name, contents.map(str::as_bytes))
    }

    #[test]
    fn a_full_target_with_defaults() {
        let url_file = secret_path("url-ok", Some("https://hooks.example/T0/B0/xyz\n"));
        let hdr = secret_path("hdr-ok", Some("Bearer abc\n"));
        let src = format!(
            "[notify.targets.ops]\nkind = \"webhook\"\nurl_file = \"{url_file}\"\nheaders = {{ \"X-Team\" = \"infra\" }}\nheader_files = {{ \"Authorization\" = \"{hdr}\" }}\n\n[notify.targets.phone]\nkind = \"ntfy\"\nurl = \"https://ntfy.example/alerts\"\ntoken = \"tk_1\"\ntimeout_secs = 2\nmax_per_minute = 3\nqueue = 10\nbreaker_failures = 2\nbreaker_cooldown_secs = 7\n"
        );
        let (c, errors) = load(&src);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.names(), ["ops", "phone"]);
        let ops = c.target("ops").expect("ops");
        assert_eq!(ops.kind, Kind::Webhook);
        assert_eq!(ops.url.expose().as_str(), "https://hooks.example/T0/B0/xyz");
        assert_eq!(ops.headers[0].0, "X-Team");
        assert_eq!(ops.headers[1].1.expose(), "Bearer abc");
        assert_eq!(ops.timeout, Duration::from_secs(5));
        assert_eq!((ops.max_per_minute, ops.queue), (20, 1000));
        let phone = c.target("phone").expect("phone");
        assert_eq!(phone.token.as_ref().map(Secret::expose), Some("tk_1"));
        assert_eq!(
            (phone.max_per_minute, phone.queue, phone.breaker_failures),
            (3, 10, 2)
        );
        assert_eq!(phone.breaker_cooldown, Duration::from_secs(7));
        // Nothing secret in Debug.
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("xyz") && !debug.contains("abc") && !debug.contains("tk_1"),
            "{debug}"
        );
        assert!(debug.contains("hooks.example"), "{debug}");
    }

    #[test]
    fn every_problem_has_its_place() {
        let missing = secret_path("missing", None);
        let src = format!(
            "[notify.targets.a]\nkind = \"pager\"\nurl = \"https://x.example/\"\n\n[notify.targets.b]\nkind = \"slack\"\n\n[notify.targets.c]\nkind = \"gotify\"\nurl_file = \"{missing}\"\ncolour = 1\n\n[notify.targets.d]\nkind = \"discord\"\nurl = \"ftp://x.example/\"\nheaders = {{ \"X-A\" = \"1\" }}\n"
        );
        let (c, e) = load(&src);
        assert!(c.targets.is_empty());
        assert!(e[0].starts_with("t.toml:2:8: `kind` in [notify.targets.a] must be one of webhook, slack, discord, ntfy, gotify, found \"pager\""), "{e:#?}");
        assert!(
            e[1].starts_with("t.toml:5:1: [notify.targets.b] needs `url` or `url_file`"),
            "{e:#?}"
        );
        assert!(
            e[2].starts_with("t.toml:8:1: [notify.targets.c] of kind \"gotify\" needs `token`"),
            "{e:#?}"
        );
        assert!(
            e[3].starts_with(&format!(
                "t.toml:10:12: cannot read `url_file` \"{missing}\": "
            )),
            "{e:#?}"
        );
        assert!(
            e[4].starts_with("t.toml:11:1: unknown key `colour` in [notify.targets.c]"),
            "{e:#?}"
        );
        assert!(
            e[5].starts_with(
                "t.toml:15:7: `url` in [notify.targets.d] must be an http:// or https:// URL"
            ),
            "{e:#?}"
        );
        assert!(
            e[6].starts_with(
                "t.toml:16:11: `headers` in [notify.targets.d] applies to kind \"webhook\" only"
            ),
            "{e:#?}"
        );
        assert_eq!(e.len(), 7, "{e:#?}");
    }

    #[test]
    fn secrets_and_names_are_checked_without_echoing_them() {
        let empty = secret_path("empty", Some("\n"));
        let src = format!(
            "[notify.targets.\"a b\"]\nkind = \"ntfy\"\nurl = \"https://n.example/t\"\ntoken_file = \"{empty}\"\n\n[notify.targets.w]\nkind = \"webhook\"\nurl = \"not a url with sekrit\"\ntoken = \"x\"\n[notify]\nextra = 1\n"
        );
        let (_, e) = load(&src);
        let all = e.join("\n");
        assert!(
            all.contains("t.toml:1:17: target name \"a b\" may hold only"),
            "{all}"
        );
        assert!(
            all.contains(&format!("t.toml:4:14: `token_file` \"{empty}\" is empty")),
            "{all}"
        );
        assert!(
            all.contains("t.toml:8:7: `url` in [notify.targets.w] is not a valid URL"),
            "{all}"
        );
        assert!(
            all.contains("applies to kinds \"ntfy\" and \"gotify\" only"),
            "{all}"
        );
        assert!(
            all.contains("t.toml:11:1: unknown key `extra` in [notify]"),
            "{all}"
        );
        assert!(!all.contains("sekrit"), "{all}");
    }
}
