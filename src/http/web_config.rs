//! `--web-config FILE`: the Prometheus exporter-toolkit's web configuration
//! (<https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>),
//! parsed, checked (every problem, each as `FILE:LINE:COL: message`) and
//! compiled into a [`WebConfig`]: the TLS configuration ([`super::tls`]),
//! the basic-auth users and the extra response headers.
//!
//! Supported as the toolkit does: `tls_server_config` (`cert_file`,
//! `key_file`, `cert`, `key`, `client_ca_file`, `client_ca`,
//! `client_auth_type`, `min_version`, `max_version`, `cipher_suites`,
//! `prefer_server_cipher_suites`, `curve_preferences`), `basic_auth_users`
//! (bcrypt), `http_server_config.headers`; `http_server_config.http2` is
//! accepted and has no effect (HTTP/1.1 only). Refused with a message:
//! `client_allowed_sans`, `rate_limit`, TLS 1.0 and 1.1, suites and curves
//! ring lacks. Unknown keys are errors, as in the toolkit.
//!
//! It reads one file (and the PEM it names) when asked; when to read it
//! again, and what a request needs to pass, belong to [`super::guard`].

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::tls::{self, ClientAuth, Pem, Tls, TlsSpec};

/// A compiled web configuration.
pub struct WebConfig {
    pub tls: Option<Tls>,
    /// User name → bcrypt hash. Empty: no basic auth.
    pub users: BTreeMap<String, String>,
    /// Added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why a web config file cannot be used: every problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct WebConfigError {
    pub problems: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    client_allowed_sans: Option<serde::de::IgnoredAny>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[allow(dead_code)] // accepted for compatibility; HTTP/1.1 only
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The headers the toolkit lets a file set, with their allowed values
/// (empty: any).
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Collects problems, each located in the file.
struct Problems<'a> {
    file: String,
    text: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    /// A problem at the key `path` (e.g. `["tls_server_config", "cert_file"]`),
    /// or at the nearest enclosing key written (a missing key's section).
    fn at(&mut self, path: &[&str], message: impl std::fmt::Display) {
        let found = (1..=path.len())
            .rev()
            .find_map(|n| locate(self.text, &path[..n], 0));
        let place = match found {
            Some((line, col)) => format!("{}:{line}:{col}", self.file),
            None => self.file.clone(),
        };
        self.list
            .push(format!("{place}: {}: {message}", path.join(".")));
    }
}

/// Reads, checks and compiles `path`. Relative file names in it are
/// relative to its directory, as in the toolkit. `open_probes`: the
/// handshake must let a probe without a client certificate through.
pub fn load(path: &Path, open_probes: bool) -> Result<(WebConfig, Vec<u8>), WebConfigError> {
    let bytes = std::fs::read(path).map_err(|e| WebConfigError {
        problems: vec![format!(
            "{}: cannot read the web config: {e}",
            path.display()
        )],
    })?;
    let config = compile(path, &bytes, open_probes)?;
    warn_unchecked_ca(&config);
    Ok((config, bytes))
}

/// Warns, once `config` is taken, of a client CA it does not check.
pub fn warn_unchecked_ca(config: &WebConfig) {
    if let Some((ca, auth)) = config.tls.as_ref().and_then(|t| t.unchecked_ca.as_ref()) {
        // The type that checks what `auth` takes.
        let checking = [ClientAuth::VerifyIfGiven, ClientAuth::RequireAndVerify];
        tracing::warn!(
            client_ca = %ca,
            "The client CA is only named to clients: {} takes any certificate without \
             checking it against the CA (Go's meaning); {} checks it.",
            auth.name(),
            checking[usize::from(auth.required())].name()
        );
    }
}

/// Checks and compiles the contents `bytes` of the file `path`.
pub fn compile(path: &Path, bytes: &[u8], open_probes: bool) -> Result<WebConfig, WebConfigError> {
    let file = path.display().to_string();
    let text = std::str::from_utf8(bytes).map_err(|e| WebConfigError {
        problems: vec![format!("{file}: not UTF-8 text: {e}")],
    })?;
    let raw: RawFile = if text.trim().is_empty() {
        RawFile::default()
    } else {
        // Through a Value first: it refuses a key given twice (a user, a
        // file), which a struct or map would let the last one win.
        serde_norway::from_str::<serde_norway::Value>(text)
            .and_then(|_| serde_norway::from_str(text))
            .map_err(|e| WebConfigError {
                problems: vec![yaml_problem(&file, text, &e)],
            })?
    };
    let mut p = Problems {
        file,
        text,
        list: Vec::new(),
    };
    if raw.rate_limit.is_some() {
        p.at(
            &["rate_limit"],
            "not supported by dockwarden; rate-limit in a reverse proxy in front of it",
        );
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = raw
        .tls_server_config
        .and_then(|t| tls_spec(t, dir, open_probes, &mut p));
    let users = raw.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        if let Err(why) = check_hash(hash) {
            p.at(&["basic_auth_users", user], why);
        }
    }
    let mut headers = Vec::new();
    for (name, value) in raw
        .http_server_config
        .and_then(|h| h.headers)
        .unwrap_or_default()
    {
        let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
            p.at(
                &["http_server_config", "headers", &name],
                format!("this header cannot be set; one of {}", names.join(", ")),
            );
            continue;
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            p.at(
                &["http_server_config", "headers", &name],
                format!("expected one of {allowed:?}, found \"{value}\""),
            );
            continue;
        }
        match (HeaderName::try_from(&name), HeaderValue::try_from(&value)) {
            (Ok(n), Ok(v)) if !value.is_empty() => headers.push((n, v)),
            (Ok(_), Ok(_)) => {} // blank: unset, as in the toolkit
            _ => p.at(
                &["http_server_config", "headers", &name],
                "not a valid header value",
            ),
        }
    }
    let tls = match tls {
        Some(spec) if p.list.is_empty() => match tls::build(&spec) {
            Ok(built) => Some(built),
            Err(problem) => {
                p.at(&["tls_server_config", problem.key], problem.message);
                None
            }
        },
        _ => None,
    };
    if !p.list.is_empty() {
        return Err(WebConfigError { problems: p.list });
    }
    Ok(WebConfig {
        tls,
        users,
        headers,
    })
}

/// A bcrypt hash the toolkit would take (`$2a$`, `$2b$`, `$2x$`, `$2y$`,
/// cost 4 to 31).
fn check_hash(hash: &str) -> Result<(), String> {
    let parts: bcrypt::HashParts = hash.parse().map_err(|e| {
        format!("not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")
    })?;
    if !(4..=31).contains(&parts.get_cost()) {
        return Err(format!(
            "bcrypt cost {} is outside 4..=31",
            parts.get_cost()
        ));
    }
    Ok(())
}

/// The checked TLS section; None if TLS is off or a problem was found.
fn tls_spec(raw: RawTls, dir: &Path, open_probes: bool, p: &mut Problems) -> Option<TlsSpec> {
    let at = |key: &'static str| ["tls_server_config", key];
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    // The toolkit's test: any of these set turns TLS on.
    let enabled = [
        &raw.cert,
        &raw.key,
        &raw.client_ca,
        &raw.cert_file,
        &raw.key_file,
        &raw.client_ca_file,
        &raw.client_auth_type,
    ]
    .into_iter()
    .any(set);
    let before = p.list.len();
    if raw.client_allowed_sans.is_some() {
        p.at(
            &at("client_allowed_sans"),
            "not supported by dockwarden; use RequireAndVerifyClientCert with a client CA that signs only the clients you allow",
        );
    }
    let mut pem = |inline: &Option<String>, file: &Option<String>, keys: [&'static str; 2]| match (
        set(inline),
        set(file),
    ) {
        (true, true) => {
            p.at(
                &at(keys[0]),
                format!("give {} or {}, not both", keys[0], keys[1]),
            );
            None
        }
        (true, false) => inline.clone().map(Pem::Inline),
        (false, true) => file.as_deref().map(|f| Pem::File(dir.join(f))),
        (false, false) => None,
    };
    let cert = pem(&raw.cert, &raw.cert_file, ["cert_file", "cert"]);
    let key = pem(&raw.key, &raw.key_file, ["key_file", "key"]);
    let client_ca = pem(
        &raw.client_ca,
        &raw.client_ca_file,
        ["client_ca_file", "client_ca"],
    );
    if !enabled {
        return None;
    }
    if cert.is_none() && !set(&raw.cert) {
        p.at(&at("cert_file"), "missing: TLS needs cert_file (or cert)");
    }
    if key.is_none() && !set(&raw.key) {
        p.at(&at("key_file"), "missing: TLS needs key_file (or key)");
    }
    let client_auth = match ClientAuth::parse(raw.client_auth_type.as_deref().unwrap_or("")) {
        Ok(c) => c,
        Err(why) => {
            p.at(&at("client_auth_type"), why);
            ClientAuth::None
        }
    };
    if client_ca.is_some() && client_auth == ClientAuth::None && set(&raw.client_auth_type) {
        p.at(
            &at("client_ca_file"),
            "a client CA is given but client_auth_type is NoClientCert",
        );
    } else if client_ca.is_some() && client_auth == ClientAuth::None {
        p.at(
            &at("client_ca_file"),
            "a client CA is given without client_auth_type (RequireAndVerifyClientCert checks clients against it)",
        );
    }
    if client_auth.verifies() && client_ca.is_none() {
        p.at(
            &at("client_auth_type"),
            "checking client certificates needs client_ca_file (or client_ca)",
        );
    }
    let mut version = |key: &'static str, default: &'static str| match tls::parse_version(
        raw_version(&raw, key).unwrap_or(default),
    ) {
        Ok(v) => Some(v),
        Err(why) => {
            p.at(&at(key), why);
            None
        }
    };
    let min = version("min_version", "TLS12");
    let max = version("max_version", "TLS13");
    let versions = match (min, max) {
        (Some(min), Some(max)) => {
            let all = [&rustls::version::TLS12, &rustls::version::TLS13];
            let rank = |v| all.iter().position(|a| std::ptr::eq(*a, v)).unwrap_or(0);
            if rank(min) > rank(max) {
                p.at(&at("min_version"), "is above max_version");
            }
            all[rank(min)..=rank(max).max(rank(min))].to_vec()
        }
        _ => Vec::new(),
    };
    let mut tls12_suites = None;
    if let Some(names) = &raw.cipher_suites {
        let mut suites = Vec::new();
        for name in names {
            match tls::parse_cipher(name) {
                Ok(Some(s)) => suites.push(s),
                Ok(None) => {}
                Err(why) => p.at(&at("cipher_suites"), why),
            }
        }
        if !names.is_empty() {
            tls12_suites = Some(suites);
        }
    }
    let mut kx_groups = None;
    if let Some(names) = raw.curve_preferences.as_ref().filter(|n| !n.is_empty()) {
        let mut groups = Vec::new();
        for name in names {
            match tls::parse_curve(name) {
                Ok(g) => groups.push(g),
                Err(why) => p.at(&at("curve_preferences"), why),
            }
        }
        kx_groups = Some(groups);
    }
    if p.list.len() > before {
        return None;
    }
    Some(TlsSpec {
        cert: cert?,
        key: key?,
        client_ca,
        client_auth,
        versions,
        tls12_suites,
        kx_groups,
        prefer_server_order: raw.prefer_server_cipher_suites.unwrap_or(true),
        open_probes,
    })
}

fn raw_version<'a>(raw: &'a RawTls, key: &str) -> Option<&'a str> {
    let v = if key == "min_version" {
        &raw.min_version
    } else {
        &raw.max_version
    };
    v.as_deref().filter(|s| !s.is_empty())
}

/// serde_norway's error as `FILE:LINE:COL: message`. Its location is the
/// start of the mapping at fault; an unknown or repeated key is located
/// on its own line instead.
fn yaml_problem(file: &str, text: &str, e: &serde_norway::Error) -> String {
    let full = e.to_string();
    let message = match e.location() {
        Some(l) => {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
        }
        None => full,
    };
    let (section, what) = match message.split_once(": ") {
        Some((section, what)) if !section.contains(' ') => (Some(section), what),
        _ => (None, message.as_str()),
    };
    let key = |prefix: &str, close: char| {
        let rest = what.strip_prefix(prefix)?;
        Some(rest[..rest.find(close)?].to_owned())
    };
    let found = key("unknown field `", '`')
        .map(|k| (k, 0))
        .or_else(|| key("duplicate entry with key \"", '"').map(|k| (k, 1)));
    let refined = found.and_then(|(k, nth)| {
        let mut path: Vec<&str> = section.map(|s| s.split('.').collect()).unwrap_or_default();
        path.push(&k);
        locate(text, &path, nth)
    });
    match refined.or(e.location().map(|l| (l.line(), l.column()))) {
        Some((line, col)) => format!("{file}:{line}:{col}: {message}"),
        None => format!("{file}: {message}"),
    }
}

/// Line and column (1-based) of the `nth` occurrence of the key `path`
/// (nested block-mapping keys) in YAML `text`; None if it is not written
/// in block style there (flow style, or absent).
fn locate(text: &str, path: &[&str], nth: usize) -> Option<(usize, usize)> {
    let mut depth = 0;
    let mut parent_indent: Option<usize> = None;
    let mut child_indent: Option<usize> = None;
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(parent) = parent_indent {
            if indent <= parent {
                return None; // left the parent's block
            }
            if *child_indent.get_or_insert(indent) != indent {
                continue; // deeper than the keys looked at
            }
        } else if indent != 0 {
            continue;
        }
        if key_of(trimmed).as_deref() != Some(path[depth]) {
            continue;
        }
        if depth + 1 == path.len() {
            if seen == nth {
                return Some((i + 1, indent + 1));
            }
            seen += 1;
        } else {
            depth += 1;
            parent_indent = Some(indent);
            child_indent = None;
        }
    }
    None
}

/// The key of a `key: value` line (plain, "double" or 'single' quoted).
fn key_of(line: &str) -> Option<String> {
    let quoted = |q: char| {
        let rest = line.strip_prefix(q)?;
        let end = rest.find(q)?;
        rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_owned())
    };
    if line.starts_with('"') {
        return quoted('"');
    }
    if line.starts_with('\'') {
        return quoted('\'');
    }
    if line.starts_with("- ") {
        return None;
    }
    let end = line
        .find(": ")
        .or_else(|| line.ends_with(':').then(|| line.len() - 1))?;
    Some(line[..end].trim_end().to_owned())
}

#[cfg(test)]
#[path = "web_config_tests.rs"]
pub(super) mod tests;
