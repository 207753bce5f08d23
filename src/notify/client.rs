//! One HTTP attempt at a target, and what its failure means.
//!
//! The client is reqwest over rustls (ring, bundled webpki roots: no
//! OpenSSL, no system CA store, so a static binary works). Redirects are
//! not followed: a webhook that moved is a configuration problem, and
//! following one would carry the token to another host. The proxy
//! variables (`HTTPS_PROXY`, `NO_PROXY`) are honoured.
//!
//! It owns the classification of a failure (retry or give up, and how long
//! the receiver asked to wait); it must not decide when to retry. Error
//! texts never hold the URL: only the target's host is ever shown. A
//! refusing answer's body is kept with the URL's path and query and the
//! target's secrets redacted, since receivers echo them ("Cannot POST
//! /hooks/<key>"), or a part of them ("no such topic <topic>", "invalid
//! token <key>"), or escape them for HTML.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::body::Request;
use super::config::host_of;

/// Bytes of a refusing answer's body kept for the log line.
const BODY_PREFIX: usize = 200;

/// What a secret in a kept body is replaced with.
const REDACTED: &str = "[redacted]";

/// The shortest path segment or query value redacted on its own: shorter
/// ones are words such as `hooks` or `api`; keys, tokens and topics that
/// stand for one are longer.
const MIN_ECHOED_PART: usize = 10;

/// Longest `Retry-After` honoured; a larger one is treated as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why an attempt did not get a 2xx.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    #[error("no answer within {after:?}")]
    Timeout { after: Duration },
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("request to {host} failed: {reason}")]
    Network { host: String, reason: String },
    #[error("{host} answered HTTP {status}: {body:?}")]
    Status {
        host: String,
        status: u16,
        /// `Retry-After` in seconds, on a 429 or 503.
        retry_after: Option<Duration>,
        /// The first bytes of the body, lossily decoded.
        body: String,
    },
}

impl AttemptError {
    /// A fixed word for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            AttemptError::Timeout { .. } => "timeout",
            AttemptError::Connect { .. } => "connect",
            AttemptError::Network { .. } => "network",
            AttemptError::Status { .. } => "status",
        }
    }

    /// Network errors, timeouts, 5xx and 429 may succeed later; any other
    /// status (a 4xx, a 3xx) will not.
    pub fn retryable(&self) -> bool {
        match self {
            AttemptError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => true,
        }
    }

    /// How long the receiver asked us to wait (429 and 503 only).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The one client of the process, shared by every target (each request
/// carries its target's timeout).
pub fn build() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("dockwarden/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| reason(&e.without_url()))
}

/// POSTs `req`; Ok(status) for a 2xx.
pub async fn attempt(
    client: &reqwest::Client,
    req: &Request,
    timeout: Duration,
) -> Result<u16, AttemptError> {
    let host = host_of(&req.url);
    let mut builder = client
        .post(req.url.clone())
        .timeout(timeout)
        .body(req.body.clone());
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    let mut response = match builder.send().await {
        Ok(r) => r,
        Err(e) => return Err(network(e, host, timeout)),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let retry_after =
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
        } else {
            None
        };
    // The first bytes only: a refusing receiver may send a page of HTML.
    // Read further by the longest secret, so one that starts in the bytes
    // kept is read whole, and so redacted whole.
    let secrets = echoable(req);
    let read = BODY_PREFIX + secrets.first().map_or(0, String::len);
    let mut body = Vec::new();
    while body.len() < read {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(read);
    Err(AttemptError::Status {
        host,
        status: status.as_u16(),
        retry_after,
        body: redacted_prefix(&String::from_utf8_lossy(&body), &secrets, BODY_PREFIX),
    })
}

/// What an answer may echo of `req` that must not reach a log: the URL's
/// path (unless just `/`) and query, each of their segments and values and
/// the URL's user name of [`MIN_ECHOED_PART`] bytes or more, its password,
/// and the target's secrets; each as sent, percent-decoded and escaped for
/// HTML. Longest first, so where one holds another (a path ending in the
/// token) the longer is replaced whole.
fn echoable(req: &Request) -> Vec<String> {
    let path = Some(req.url.path()).filter(|p| *p != "/");
    let query = req.url.query();
    let segments = path.into_iter().flat_map(|p| p.split('/'));
    let values = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .map(|pair| pair.split_once('=').map_or(pair, |(_, value)| value));
    let parts = segments
        .chain(values)
        .chain(Some(req.url.username()))
        .filter(|part| part.len() >= MIN_ECHOED_PART);
    let whole = path.into_iter().chain(query).chain(req.url.password());
    let mut found: Vec<String> = Vec::new();
    for part in whole.chain(parts) {
        found.push(part.to_owned());
        if let Ok(decoded) = percent_encoding::percent_decode_str(part).decode_utf8() {
            found.push(decoded.into_owned());
        }
    }
    found.extend(req.secrets.iter().map(|s| s.expose().to_owned()));
    let escaped: Vec<String> = found.iter().flat_map(|s| html_escaped(s)).collect();
    found.extend(escaped);
    // An empty needle would match everywhere.
    found.retain(|s| !s.is_empty());
    found.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    found.dedup();
    found
}

/// `text` as an HTML page shows it, where that differs: as escape-html
/// escapes it (Express's error page), and as Go's `html.EscapeString` does
/// (`"` as `&#34;`).
fn html_escaped(text: &str) -> Vec<String> {
    let escaped = super::body::slack_escape(text).replace('\'', "&#39;");
    let mut all: Vec<String> = ["&quot;", "&#34;"]
        .into_iter()
        .map(|quote| escaped.replace('"', quote))
        .filter(|e| e != text)
        .collect();
    all.dedup();
    all
}

/// The first `keep` bytes of `text` (whole characters), with each of
/// `secrets` (longest first) that starts in them replaced whole by
/// [`REDACTED`]. Text past `keep` never shows, even when a replacement
/// is shorter than what it replaced.
fn redacted_prefix(text: &str, secrets: &[String], keep: usize) -> String {
    let mut out = String::with_capacity(keep.min(text.len()));
    let mut at = 0;
    while at < keep {
        let rest = &text[at..];
        if let Some(secret) = secrets.iter().find(|s| rest.starts_with(s.as_str())) {
            out.push_str(REDACTED);
            at += secret.len();
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        out.push(c);
        at += c.len_utf8();
    }
    out
}

/// `Retry-After` in its seconds form (`2`, or `1.5` as Discord sends);
/// the HTTP-date form is not honoured (the backoff applies instead).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

fn network(e: reqwest::Error, host: String, timeout: Duration) -> AttemptError {
    let e = e.without_url();
    if e.is_timeout() {
        AttemptError::Timeout { after: timeout }
    } else if e.is_connect() {
        AttemptError::Connect {
            host,
            reason: reason(&e),
        }
    } else {
        AttemptError::Network {
            host,
            reason: reason(&e),
        }
    }
}

/// The error's causes, outermost first, without repeats: "client error
/// (Connect): tcp connect error: Connection refused (os error 111)".
fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Secret;

    #[test]
    fn retry_after_seconds_and_what_is_retried() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        let status = |status| AttemptError::Status {
            host: "h".into(),
            status,
            retry_after: None,
            body: String::new(),
        };
        assert!(status(500).retryable() && status(503).retryable() && status(429).retryable());
        assert!(!status(400).retryable() && !status(404).retryable() && !status(301).retryable());
        assert!(
            AttemptError::Timeout {
                after: Duration::from_secs(1)
            }
            .retryable()
        );
    }

    #[test]
    fn an_echoed_path_query_or_secret_is_redacted_whole() {
        let request = |url: &str, secrets: &[&str]| Request {
            url: reqwest::Url::parse(url).expect("test URL"),
            headers: Vec::new(),
            body: Vec::new(),
            secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
        };
        let req = request("http://h/hooks/a%20b?k=v", &["tok", ""]);
        let secrets = echoable(&req);
        assert_eq!(secrets, ["/hooks/a%20b", "/hooks/a b", "k=v", "tok"]);
        let redact = |text: &str, keep| redacted_prefix(text, &secrets, keep);
        assert_eq!(
            redact("Cannot POST /hooks/a%20b?k=v", 200),
            "Cannot POST [redacted]?[redacted]"
        );
        assert_eq!(
            redact("no route /hooks/a b; tok", 200),
            "no route [redacted]; [redacted]"
        );
        // One that starts in the bytes kept goes whole; nothing past them shows.
        assert_eq!(redact("abctok and more", 4), "abc[redacted]");
        assert_eq!(redact("tok abc", 4), "[redacted] ");
        assert_eq!(redact("héllo", 2), "hé");
        // `/` alone is not a secret: it would eat every slash.
        assert_eq!(echoable(&request("http://h/", &[])), Vec::<String>::new());
    }

    #[test]
    fn a_part_of_the_url_echoed_alone_or_escaped_for_html_is_redacted() {
        let req = Request {
            url: reqwest::Url::parse(
                "http://hook-user-name:pw%40secret@h/services/T0/B0/XyZ123secret456?token=gotify-tok-1&a=b&c=d&q=%22x%22",
            )
            .expect("test URL"),
            headers: Vec::new(),
            body: Vec::new(),
            secrets: Vec::new(),
        };
        let secrets = echoable(&req);
        let redact = |text: &str| redacted_prefix(text, &secrets, 200);
        assert_eq!(
            redact("invalid key XyZ123secret456 for services"),
            "invalid key [redacted] for services"
        );
        assert_eq!(redact("bad token gotify-tok-1"), "bad token [redacted]");
        assert_eq!(
            redact("user hook-user-name, password pw@secret or pw%40secret"),
            "user [redacted], password [redacted] or [redacted]"
        );
        let query = "token=gotify-tok-1&amp;a=b&amp;c=d&amp;q=";
        assert_eq!(
            redact(&format!(
                "Cannot POST /services/T0/B0/XyZ123secret456?{query}&quot;x&quot;"
            )),
            "Cannot POST [redacted]?[redacted]"
        );
        assert_eq!(
            redact(&format!("bad query {query}&#34;x&#34;")),
            "bad query [redacted]"
        );
        // Short words of the path stay readable.
        assert!(
            !secrets.iter().any(|s| s == "services" || s == "T0"),
            "{secrets:?}"
        );
    }
}
