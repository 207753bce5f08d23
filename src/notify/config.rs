//! A notification target's settings (`[notify.targets.NAME]`) and their
//! defaults, as `parse` reads them from the rules file.
//!
//! A target holds its URL and secrets behind types whose `Debug` prints no
//! secret ([`Secret`], [`TargetUrl`]). It owns the settings; it must not
//! read files or send anything.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

/// `[notify]`: the notification targets. The default has none.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// In file order.
    pub targets: Vec<TargetConfig>,
    /// Every name under `[notify.targets]`, in file order, including those
    /// whose table has errors (already reported): a rule naming one is not
    /// told the target is unknown as well.
    pub declared: Vec<String>,
}

impl NotifyConfig {
    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The targets' names, in file order (every one declared).
    pub fn names(&self) -> Vec<String> {
        if self.declared.is_empty() {
            self.targets.iter().map(|t| t.name.clone()).collect()
        } else {
            self.declared.clone()
        }
    }
}

/// The service a target is, which decides the request's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON object with every field of the message.
    Webhook,
    /// A Slack incoming webhook: `{"text"}` in mrkdwn.
    Slack,
    /// A Discord webhook: `{"content"}`.
    Discord,
    /// An ntfy topic URL: a plain body with `Title`, `Priority`, `Tags`.
    Ntfy,
    /// A Gotify server: `{"title","message","priority"}` to `/message`.
    Gotify,
}

impl Kind {
    pub const NAMES: [&'static str; 5] = ["webhook", "slack", "discord", "ntfy", "gotify"];

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "webhook" => Kind::Webhook,
            "slack" => Kind::Slack,
            "discord" => Kind::Discord,
            "ntfy" => Kind::Ntfy,
            "gotify" => Kind::Gotify,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        Kind::NAMES[self as usize]
    }
}

/// A value that must never reach a log line: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A target's URL. Its path and query often hold the secret (a Slack or
/// Discord webhook token, an ntfy topic), so only [`TargetUrl::host`] may
/// be logged; `Debug` prints just that.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetUrl(Url);

impl TargetUrl {
    /// Parses an `http://` or `https://` URL with a host.
    pub fn parse(s: &str) -> Result<TargetUrl, &'static str> {
        let url = Url::parse(s.trim()).map_err(|_| "is not a valid URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http:// or https:// URL");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host");
        }
        Ok(TargetUrl(url))
    }

    /// `host` or `host:port`: what log lines and errors may show.
    pub fn host(&self) -> String {
        host_of(&self.0)
    }

    /// The URL itself, for the request only.
    pub fn expose(&self) -> &Url {
        &self.0
    }
}

impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/***", self.0.scheme(), self.host())
    }
}

/// `host` or `host:port` of `url`: the only part of a target's URL that a
/// log line or an error may show.
pub fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// One `[notify.targets.NAME]`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// The table's name: what rules name in `target`, and the metric label.
    pub name: String,
    pub kind: Kind,
    /// `url`, or the contents of `url_file`.
    pub url: TargetUrl,
    /// `headers` and `header_files` (webhook only), checked to be valid.
    pub headers: Vec<(String, Secret)>,
    /// `token` or `token_file`: ntfy's bearer token, Gotify's app token.
    pub token: Option<Secret>,
    /// `timeout_secs`: one request, connect to last byte.
    pub timeout: Duration,
    /// `max_per_minute`: requests per [`TargetConfig::rate_window`].
    pub max_per_minute: u32,
    /// The rate limit's window: a minute from the file; tests shorten it.
    pub rate_window: Duration,
    /// `queue`: messages waiting for this target before new ones are dropped.
    pub queue: usize,
    /// `breaker_failures`: consecutive failed attempts that open the breaker.
    pub breaker_failures: u32,
    /// `breaker_cooldown_secs`: how long it stays open before one probe.
    pub breaker_cooldown: Duration,
    /// `backoff_initial_ms`: the first retry's backoff ceiling.
    pub backoff_initial: Duration,
    /// `backoff_max_secs`: the largest backoff ceiling.
    pub backoff_max: Duration,
}

impl TargetConfig {
    /// Its secret values: the token and every header's value (`headers`
    /// and `header_files` are one list, and the latter hold credentials).
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.token
            .iter()
            .chain(self.headers.iter().map(|(_, value)| value))
    }
}

/// Defaults, also for README.
pub const DEFAULT_TIMEOUT_SECS: u64 = 5;
pub const DEFAULT_MAX_PER_MINUTE: u64 = 20;
pub const DEFAULT_QUEUE: u64 = 1000;
pub const DEFAULT_BREAKER_FAILURES: u64 = 5;
pub const DEFAULT_BREAKER_COOLDOWN_SECS: u64 = 30;
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 1000;
pub const DEFAULT_BACKOFF_MAX_SECS: u64 = 300;

impl TargetConfig {
    /// A target with every default, for code that builds one without a
    /// file (tests, tools).
    pub fn new(name: &str, kind: Kind, url: &str) -> Result<TargetConfig, &'static str> {
        Ok(TargetConfig {
            name: name.to_owned(),
            kind,
            url: TargetUrl::parse(url)?,
            headers: Vec::new(),
            token: None,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            max_per_minute: DEFAULT_MAX_PER_MINUTE as u32,
            rate_window: Duration::from_secs(60),
            queue: DEFAULT_QUEUE as usize,
            breaker_failures: DEFAULT_BREAKER_FAILURES as u32,
            breaker_cooldown: Duration::from_secs(DEFAULT_BREAKER_COOLDOWN_SECS),
            backoff_initial: Duration::from_millis(DEFAULT_BACKOFF_INITIAL_MS),
            backoff_max: Duration::from_secs(DEFAULT_BACKOFF_MAX_SECS),
        })
    }
}
