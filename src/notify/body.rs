//! One message as one HTTP request for one kind of target, in that
//! service's documented format:
//!
//! * `webhook`: a JSON object with `id`, `time` (RFC 3339), `host`, `key`,
//!   `severity`, `title`, `text`, `container` and `fields`;
//! * `slack` (incoming webhook): `{"text"}` in mrkdwn, `&`, `<`, `>` escaped;
//! * `discord` (execute webhook): `{"content"}` of at most 2000 characters,
//!   with `allowed_mentions` empty so a container name cannot ping anyone;
//! * `ntfy` (publish): the text as a plain body, with `Title`, `Priority`
//!   (1-5) and `Tags` headers, non-ASCII headers as RFC 2047 words;
//! * `gotify`: `{"title","message","priority"}` (0-10) POSTed to
//!   `<url>/message` with the app token in `X-Gotify-Key`.
//!
//! Every request carries `Idempotency-Key: <id>`. Pure functions: it owns
//! the shapes; it must not send, retry or decide what is sent.

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::config::{Kind, Secret, TargetConfig};
use super::{Message, Severity};
use crate::json::{EncodeError, encode};

/// The request for one message, ready for the client.
#[derive(Debug)]
pub struct Request {
    pub url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
    /// The target's token and header values: an answer that echoes one
    /// has it redacted before it is logged ([`super::client`]).
    pub secrets: Vec<Secret>,
}

/// Discord rejects a `content` longer than this.
pub const DISCORD_MAX_CHARS: usize = 2000;
/// Slack cuts a message's text beyond 40,000 characters; a notification
/// never needs that many, so stay well below.
const SLACK_MAX_CHARS: usize = 4000;
/// ntfy turns a body over 4,096 bytes into an attachment.
const NTFY_MAX_BYTES: usize = 4000;
const GOTIFY_MAX_CHARS: usize = 8000;

/// The request `target` gets for `msg`, sent from `host`.
pub fn render(target: &TargetConfig, msg: &Message, host: &str) -> Result<Request, EncodeError> {
    let mut headers = vec![(
        HeaderName::from_static("idempotency-key"),
        header_text(&msg.id),
    )];
    let mut url = target.url.expose().clone();
    let headline = format!("[{host}] {}", msg.title);
    let body = match target.kind {
        Kind::Webhook => {
            headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
            for (name, value) in &target.headers {
                // Checked when the file was read; skip rather than panic.
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value.expose()),
                ) {
                    headers.push((n, v));
                }
            }
            encode("notification", &webhook_body(msg, host))?
        }
        Kind::Slack => {
            headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
            let text = format!(
                "{} *{}*\n{}",
                emoji(msg.severity),
                slack_escape(&headline),
                slack_escape(&msg.text)
            );
            encode(
                "notification",
                &json!({ "text": truncate(&text, SLACK_MAX_CHARS) }),
            )?
        }
        Kind::Discord => {
            headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
            let content = format!(
                "{} **{}**\n{}",
                emoji(msg.severity),
                discord_escape(&headline),
                discord_escape(&msg.text)
            );
            encode(
                "notification",
                &json!({
                    "content": truncate(&content, DISCORD_MAX_CHARS),
                    "allowed_mentions": { "parse": [] },
                }),
            )?
        }
        Kind::Ntfy => {
            headers.push((
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ));
            headers.push((HeaderName::from_static("title"), header_text(&headline)));
            headers.push((
                HeaderName::from_static("priority"),
                HeaderValue::from(ntfy_priority(msg.severity)),
            ));
            let tags = format!("{},{}", ntfy_tag(msg.severity), msg.key);
            headers.push((HeaderName::from_static("tags"), header_text(&tags)));
            if let Some(token) = &target.token
                && let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            {
                headers.push((AUTHORIZATION, v));
            }
            truncate_bytes(&msg.text, NTFY_MAX_BYTES)
                .as_bytes()
                .to_vec()
        }
        Kind::Gotify => {
            headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
            if let Some(token) = &target.token
                && let Ok(v) = HeaderValue::from_str(token.expose())
            {
                headers.push((HeaderName::from_static("x-gotify-key"), v));
            }
            url = gotify_url(&url);
            encode(
                "notification",
                &json!({
                    "title": headline,
                    "message": truncate(&msg.text, GOTIFY_MAX_CHARS),
                    "priority": gotify_priority(msg.severity),
                }),
            )?
        }
    };
    Ok(Request {
        url,
        headers,
        body,
        secrets: target.secrets().cloned().collect(),
    })
}

/// The `webhook` body: every field of the message, plus the host.
pub fn webhook_body(msg: &Message, host: &str) -> Value {
    json!({
        "id": msg.id,
        "time": crate::clock::rfc3339_nanos(msg.time_nano),
        "host": host,
        "key": msg.key,
        "severity": msg.severity,
        "title": msg.title,
        "text": msg.text,
        "container": msg.container,
        "fields": msg.fields,
    })
}

/// ntfy's 1 (min) to 5 (max); 3 is its default.
pub fn ntfy_priority(s: Severity) -> u16 {
    match s {
        Severity::Info | Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// Gotify's 0-10: its Android app is silent below 4 and pops up from 8.
pub fn gotify_priority(s: Severity) -> u16 {
    match s {
        Severity::Info => 2,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// An ntfy tag that it shows as an emoji.
fn ntfy_tag(s: Severity) -> &'static str {
    match s {
        Severity::Info | Severity::Low => "information_source",
        Severity::Medium => "warning",
        Severity::High => "exclamation",
        Severity::Critical => "rotating_light",
    }
}

fn emoji(s: Severity) -> &'static str {
    match s {
        Severity::Info | Severity::Low => "ℹ️",
        Severity::Medium => "⚠️",
        Severity::High => "❗",
        Severity::Critical => "🚨",
    }
}

/// `<base>/message`, keeping a base path (`https://h/gotify` →
/// `https://h/gotify/message`); the query is dropped.
fn gotify_url(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/message", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url
}

/// Slack's three control characters, as its formatting docs require (and
/// HTML's, but for quotes).
pub(super) fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Discord markdown, backslash-escaped so names show as typed: emphasis,
/// code and spoiler marks anywhere, quote and heading marks where they
/// start a line.
fn discord_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut line_start = true;
    for c in s.chars() {
        let special = matches!(c, '\\' | '*' | '_' | '~' | '`' | '|')
            || (line_start && matches!(c, '>' | '#' | '-'));
        if special {
            out.push('\\');
        }
        out.push(c);
        line_start = c == '\n';
    }
    out
}

/// At most `max` characters, the last one `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A header value from free text: control characters become spaces, and
/// text that is not plain ASCII becomes an RFC 2047 word (ntfy decodes
/// those), so any title makes a valid header.
fn header_text(s: &str) -> HeaderValue {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_ascii()
        && let Ok(v) = HeaderValue::from_str(&clean)
    {
        return v;
    }
    let word = format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(clean.as_bytes())
    );
    HeaderValue::from_str(&word).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::ContainerRef;
    use crate::notify::config::Secret;

    fn msg(title: &str) -> Message {
        Message {
            id: "m-1".into(),
            time_nano: 1_700_000_000_123_456_789,
            key: "dockwarden.restart".into(),
            severity: Severity::High,
            title: title.into(),
            text: format!("{title} (exit 3)"),
            container: Some(ContainerRef {
                id: "c1".into(),
                name: "web-1".into(),
                image: "nginx".into(),
            }),
            fields: serde_json::Map::new(),
        }
    }

    fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.to_str().ok())
    }

    fn target(kind: Kind, url: &str) -> TargetConfig {
        TargetConfig::new("t", kind, url).expect("valid test URL")
    }

    #[test]
    fn gotify_posts_to_message_under_the_base_path_with_the_key_header() {
        let mut t = target(Kind::Gotify, "https://g.example/push/?x=1");
        t.token = Some(Secret::new("AppTok"));
        let r = render(&t, &msg("web-1 restarted"), "node-3").expect("renders");
        assert_eq!(r.url.as_str(), "https://g.example/push/message");
        assert_eq!(header(&r, "X-Gotify-Key"), Some("AppTok"));
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["priority"], 8);
        assert_eq!(v["title"], "[node-3] web-1 restarted");
    }

    #[test]
    fn ntfy_headers_survive_any_title() {
        let t = target(Kind::Ntfy, "https://n.example/topic");
        let r = render(&t, &msg("shell in café\nnow"), "h").expect("renders");
        let title = header(&r, "Title").expect("title");
        assert!(title.starts_with("=?UTF-8?B?"), "{title}");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&title[10..title.len() - 2])
            .expect("base64");
        assert_eq!(String::from_utf8_lossy(&decoded), "[h] shell in café now");
        assert_eq!(header(&r, "Priority"), Some("4"));
        assert_eq!(header(&r, "Tags"), Some("exclamation,dockwarden.restart"));
        assert_eq!(header(&r, "Idempotency-Key"), Some("m-1"));
    }

    #[test]
    fn chat_bodies_escape_and_fit() {
        let long = "x".repeat(3000);
        let d = render(
            &target(Kind::Discord, "https://d.example/w"),
            &msg(&long),
            "h",
        )
        .expect("renders");
        let v: Value = serde_json::from_slice(&d.body).expect("json");
        let content = v["content"].as_str().expect("content");
        assert_eq!(content.chars().count(), DISCORD_MAX_CHARS);
        assert!(content.ends_with('…'));
        assert_eq!(v["allowed_mentions"]["parse"], json!([]));
        let s = render(
            &target(Kind::Slack, "https://s.example/w"),
            &msg("a<b>&c"),
            "h",
        )
        .expect("renders");
        let v: Value = serde_json::from_slice(&s.body).expect("json");
        let text = v["text"].as_str().expect("text");
        assert!(text.contains("*[h] a&lt;b&gt;&amp;c*"), "{text}");
    }

    #[test]
    fn discord_marks_are_escaped_where_they_mean_something() {
        assert_eq!(discord_escape("web_1 *x* <a>"), "web\\_1 \\*x\\* <a>");
        assert_eq!(discord_escape("> q\n# h - i"), "\\> q\n\\# h - i");
    }

    #[test]
    fn webhook_has_every_field() {
        let mut t = target(Kind::Webhook, "https://w.example/");
        t.headers.push(("X-Team".into(), Secret::new("infra")));
        let r = render(&t, &msg("web-1 restarted"), "node-3").expect("renders");
        assert_eq!(header(&r, "X-Team"), Some("infra"));
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["severity"], "high");
        assert_eq!(v["container"]["name"], "web-1");
        assert_eq!(v["host"], "node-3");
    }

    #[test]
    fn a_non_ascii_id_still_makes_a_header() {
        let mut m = msg("t");
        m.id = "abc-règle".into();
        let r = render(&target(Kind::Slack, "https://s.example/"), &m, "h").expect("renders");
        assert!(header(&r, "Idempotency-Key").is_some_and(|v| v.starts_with("=?UTF-8?B?")));
    }
}
