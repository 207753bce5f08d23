//! The status API as tests use it: a sidecar with both tokens
//! ([`with_tokens`]), raw requests ([`request`]) and JSON reads
//! ([`get_json`]). Every `/api/v1` response a test receives is checked
//! against the OpenAPI document `docs/api.yaml` ([`check_openapi`]): its
//! status must be documented for the path, and its body must validate
//! against that status's schema.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Dockwarden, TempDir};

pub const API_TOKEN: &str = "api-token-0123456789";
pub const RELOAD_TOKEN: &str = "reload-token-0123456789";

/// A sidecar with both tokens configured (token files live in `dir`),
/// then `rules`.
pub fn with_tokens(dir: &TempDir, rules: &str) -> Dockwarden {
    with_tokens_and(dir, "", rules)
}

/// As [`with_tokens`], with more `[server]`-free TOML before the rules
/// (an `[api]` section, say).
pub fn with_tokens_and(dir: &TempDir, sections: &str, rules: &str) -> Dockwarden {
    let api = dir.path().join("api.token");
    let reload = dir.path().join("reload.token");
    std::fs::write(&api, format!("{API_TOKEN}\n")).expect("write token");
    std::fs::write(&reload, RELOAD_TOKEN).expect("write token");
    let toml = format!(
        "[server]\napi_token_file = \"{}\"\ntoken_file = \"{}\"\n{sections}\n{rules}",
        api.display(),
        reload.display()
    );
    let mut dw = Dockwarden::start(&toml);
    dw.wait_ready(Duration::from_secs(20));
    dw
}

/// `METHOD path` with an optional bearer token → (status, head, body).
/// An `/api/v1` answer is checked against `docs/api.yaml`.
pub fn request(
    dw: &Dockwarden,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(dw.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n{auth}\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if method == "GET" && path.starts_with("/api/v1/") {
        check_openapi(path, status, head, body);
    }
    (status, head.to_owned(), body.to_owned())
}

/// `GET path` with the API token, expecting 200 and JSON.
pub fn get_json(dw: &Dockwarden, path: &str) -> Value {
    let (status, _, body) = request(dw, "GET", path, Some(API_TOKEN));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `dockwarden status ARGS…` as a person runs it → (exit code, stdout,
/// stderr).
pub fn status_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .arg("status")
        .args(args)
        .output()
        .expect("run dockwarden status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `docs/api.yaml` as JSON.
pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.yaml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
    })
}

/// The documented path template that `path` (query ignored) is an
/// instance of: `/api/v1/containers/web-1/history` →
/// `/api/v1/containers/{key}/history`.
pub fn template_of(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or(path);
    let want: Vec<&str> = path.split('/').collect();
    let paths = openapi()["paths"].as_object()?;
    paths
        .keys()
        .find(|t| {
            let have: Vec<&str> = t.split('/').collect();
            have.len() == want.len()
                && have.iter().zip(&want).all(|(h, w)| {
                    (h.starts_with('{') && h.ends_with('}') && !w.is_empty()) || h == w
                })
        })
        .cloned()
}

/// Panics unless `body`, answered with `status` to `GET path`, is what
/// `docs/api.yaml` documents.
pub fn check_openapi(path: &str, status: u16, head: &str, body: &str) {
    let doc = openapi();
    let template = template_of(path)
        .unwrap_or_else(|| panic!("GET {path}: no path of docs/api.yaml matches it"));
    let responses = &doc["paths"][&template]["get"]["responses"];
    let mut response = &responses[status.to_string()];
    assert!(
        response.is_object(),
        "GET {path} answered {status}, which docs/api.yaml does not document for {template}: {body}"
    );
    if let Some(r) = response["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or_default();
        response = &doc["components"]["responses"][name];
    }
    assert!(
        head.lines().any(|l| l
            .to_ascii_lowercase()
            .starts_with("content-type: application/json")),
        "GET {path}: not application/json:\n{head}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "docs/api.yaml: no JSON schema for {template} {status}"
    );
    // The schema with the document's components beside it, so that
    // `#/components/schemas/…` resolves.
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("docs/api.yaml: the schema of {template} {status}: {e}"));
    let instance: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}: {body}"));
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "GET {path} ({status}) does not match docs/api.yaml ({template}):\n{}\nbody: {body}",
        errors.join("\n")
    );
}
