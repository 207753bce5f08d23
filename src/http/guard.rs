//! The web config in force ([`Web`]) and the gate every request passes
//! through when `--web-config` is given: a client certificate where one is
//! required, then the basic-auth password.
//!
//! Like the exporter-toolkit, the file is read again on every request, and
//! the files it names on every new connection; a change is compiled and
//! swapped in. A file that cannot be used leaves the previous configuration
//! in force and is logged (once per distinct problem), with the file and
//! every problem. Two changes need a restart and are refused the same way
//! ([`restart_needed`]): TLS on or off, and basic auth off.
//!
//! Who passes (see README, "TLS and basic auth"):
//! * `/healthz` and `/readyz` with `--web-open-probes`: everyone who
//!   completed the TLS handshake;
//! * `/api/v1/…` and `/-/reload` carrying `Authorization: Bearer …`: on to
//!   the endpoint, which checks its own token (one `Authorization` header
//!   carries one credential, and basic auth never opens those two);
//! * everything else: a `basic_auth_users` password, if any users are set.
//!
//! bcrypt is slow (tens of ms at cost 10), so verdicts are kept
//! ([`super::passwords`]) under the SHA-256 of user, hash and password: the
//! cache holds no password, and a changed hash misses it. One verification
//! runs at a time, off the async workers, as in the toolkit; unlike it, the
//! turn goes round the clients that wait, so a client guessing passwords
//! cannot make the others wait behind its queue. Passwords are never
//! logged.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tracing::{debug, error, info};

use super::listen::Peer;
use super::passwords::{Check, Turns, Verdicts, cache_key, client_of};
use super::web_config::{self, WebConfig, WebConfigError};
use crate::lock::lock;

/// A file that was refused is tried again at most this often.
const RETRY: Duration = Duration::from_secs(1);

/// bcrypt("fakepassword"), the toolkit's: an unknown user costs as much
/// time as a known one.
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// The web config file in force, read again when it changes.
pub struct Web {
    path: PathBuf,
    open_probes: bool,
    live: Mutex<Live>,
    cache: Arc<Mutex<Verdicts>>,
    /// bcrypt's one turn, handed round the clients that wait.
    turns: Arc<Turns>,
}

struct Live {
    config: Arc<WebConfig>,
    /// The file's contents `config` was compiled from.
    bytes: Vec<u8>,
    /// The last refused change: its problems and when it was tried.
    refused: Option<(String, Instant)>,
}

impl Web {
    /// Reads `path`; every problem is in the error, as `FILE:LINE:COL: …`.
    pub fn load(path: PathBuf, open_probes: bool) -> Result<Arc<Web>, WebConfigError> {
        let (config, bytes) = web_config::load(&path, open_probes)?;
        info!(
            file = %path.display(),
            tls = config.tls.is_some(),
            client_cert = config.tls.as_ref().map_or("none", |t| {
                if t.cert_required_by_gate { "required (probes open)" } else { "as configured" }
            }),
            basic_auth_users = config.users.len(),
            open_probes,
            "Web config loaded."
        );
        Ok(Arc::new(Web {
            path,
            open_probes,
            live: Mutex::new(Live {
                config: Arc::new(config),
                bytes,
                refused: None,
            }),
            cache: Arc::new(Mutex::new(Verdicts::default())),
            turns: Arc::new(Turns::default()),
        }))
    }

    /// The configuration in force, after reading the file again (and, with
    /// `tls_files`, the PEM files it names) and taking in a change.
    pub fn current(&self, tls_files: bool) -> Arc<WebConfig> {
        let read = std::fs::read(&self.path);
        let mut live = lock(&self.live);
        let unchanged = match &read {
            Ok(bytes) => {
                *bytes == live.bytes
                    && !(tls_files
                        && live.config.tls.as_ref().is_some_and(|t| {
                            t.files
                                .iter()
                                .any(|(p, b)| std::fs::read(p).ok().as_ref() != Some(b))
                        }))
            }
            Err(_) => false,
        };
        if unchanged {
            // Only a full look (files too) clears a refusal: a bad
            // certificate file is not seen by a request's look.
            if tls_files {
                live.refused = None;
            }
            return live.config.clone();
        }
        if live
            .refused
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < RETRY)
        {
            return live.config.clone();
        }
        let file = self.path.display();
        let compiled = match read {
            // One log line: the problems joined by "; ".
            Ok(bytes) => web_config::compile(&self.path, &bytes, self.open_probes)
                .map(|c| (c, bytes))
                .map_err(|e| e.problems.join("; ")),
            Err(e) => Err(format!("{file}: cannot read the web config: {e}")),
        };
        let usable = compiled.and_then(|(new, bytes)| {
            let why = restart_needed(&live.config, &new);
            if why.is_empty() {
                Ok((new, bytes))
            } else {
                Err(why
                    .iter()
                    .map(|w| format!("{file}: {w}"))
                    .collect::<Vec<_>>()
                    .join("; "))
            }
        });
        let problem = match usable {
            Ok((new, bytes)) => {
                info!(
                    file = %file,
                    tls = new.tls.is_some(),
                    basic_auth_users = new.users.len(),
                    "Web config changed: reloaded."
                );
                web_config::warn_unchecked_ca(&new);
                live.config = Arc::new(new);
                live.bytes = bytes;
                live.refused = None;
                lock(&self.cache).clear();
                return live.config.clone();
            }
            Err(problem) => problem,
        };
        if live.refused.as_ref().map(|(p, _)| p) != Some(&problem) {
            error!(
                file = %file,
                problems = %problem,
                "The web config file changed and cannot be used; the previous one stays in force."
            );
        }
        live.refused = Some((problem, Instant::now()));
        live.config.clone()
    }

    /// Whether `password` is `user`'s in `config`, asked by `client`.
    async fn verify(
        &self,
        config: &WebConfig,
        user: &str,
        password: Vec<u8>,
        client: IpAddr,
    ) -> Check {
        let (hash, known) = match config.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (UNKNOWN_USER_HASH.to_owned(), false),
        };
        let verdict = |passed: bool| {
            if passed && known {
                Check::Pass
            } else {
                Check::Fail
            }
        };
        let key = cache_key(user, &hash, &password);
        if let Some(passed) = lock(&self.cache).get(&key) {
            return verdict(passed);
        }
        let Some(turn) = self.turns.take(client_of(client)).await else {
            return Check::Busy;
        };
        // Another request may have settled it while this one waited.
        if let Some(passed) = lock(&self.cache).get(&key) {
            return verdict(passed);
        }
        // The turn goes with the check, and the verdict is kept before the
        // turn is handed on: a request given up meanwhile does not hand
        // bcrypt on while this check runs, and the next with the same
        // password finds the verdict.
        let cache = self.cache.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let passed = bcrypt::verify(&password, &hash).unwrap_or(false);
            lock(&cache).insert(key, passed);
            passed
        })
        .await;
        // A failed task is not a verdict on the password.
        let Ok(passed) = checked else {
            return Check::Fail;
        };
        verdict(passed)
    }
}

/// What a change from `old` to `new` would do that only a restart may,
/// though `new` is a valid file. TLS on or off changes what the listener
/// speaks. Basic auth off would serve every request without a password, and
/// a file is empty for a moment when an editor or config management writes
/// it in place (truncate, then write), or for good if the write then fails:
/// taking that in would open `/metrics` and the API to anyone. At startup no
/// users is accepted: there is nothing to keep.
fn restart_needed(old: &WebConfig, new: &WebConfig) -> Vec<String> {
    let mut why = Vec::new();
    if new.tls.is_some() != old.tls.is_some() {
        why.push(format!(
            "tls_server_config {}: TLS cannot be turned on or off while dockwarden runs; restart it",
            if new.tls.is_some() {
                "was added"
            } else {
                "was removed"
            }
        ));
    }
    if new.users.is_empty() && !old.users.is_empty() {
        why.push(
            "basic_auth_users: the change removes every user, which would serve every request \
             without a password: refused, the users in force stay; to turn basic auth off, \
             restart dockwarden with no basic_auth_users in the file, or without --web-config"
                .to_owned(),
        );
    }
    why
}

/// The middleware: see the module's doc for who passes.
pub async fn gate(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let config = web.current(false);
    let path = request.uri().path();
    let probe = web.open_probes && matches!(path, "/healthz" | "/readyz");
    let token_endpoint = path.starts_with("/api/") || path == "/-/reload";
    let cert_missing =
        config.tls.as_ref().is_some_and(|t| t.cert_required_by_gate) && !peer.client_cert;
    let mut response = if probe {
        next.run(request).await
    } else if cert_missing {
        (StatusCode::FORBIDDEN, "a client certificate is required\n").into_response()
    } else if config.users.is_empty()
        || (token_endpoint && !super::api::bearer(request.headers()).is_empty())
    {
        next.run(request).await
    } else {
        match basic_credentials(request.headers()) {
            Some((user, password)) => {
                match web.verify(&config, &user, password, peer.addr.ip()).await {
                    Check::Pass => next.run(request).await,
                    Check::Fail => {
                        debug!(peer = %peer.addr, path, "Refused a request: wrong basic-auth user or password.");
                        unauthorized()
                    }
                    Check::Busy => {
                        debug!(peer = %peer.addr, path, "Refused a request: too many password checks waiting.");
                        busy()
                    }
                }
            }
            None => unauthorized(),
        }
    };
    for (name, value) in &config.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// 429: too many password checks of this client, or of all, wait.
fn busy() -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        "too many password checks waiting; try again\n",
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn unauthorized() -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"dockwarden\""),
    );
    r
}

/// `Authorization: Basic base64(user:password)`, as Go's `r.BasicAuth()`
/// reads it (scheme in any case, split at the first colon).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_as_go_reads_them() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_credentials(&h), None);
        // "user:pa:ss"
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bAsIc dXNlcjpwYTpzcw=="),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("user".into(), b"pa:ss".to_vec()))
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer dXNlcjpwYTpzcw=="),
        );
        assert_eq!(basic_credentials(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic bm9jb2xvbg=="),
        );
        assert_eq!(basic_credentials(&h), None);
    }

    fn web_with(text: &str) -> (Arc<Web>, PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dw-guard-{}-{n}.yml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        (Web::load(path.clone(), false).unwrap(), path)
    }

    /// A check of `user`'s `password`, asked from the loopback address.
    async fn check(web: &Web, config: &WebConfig, user: &str, password: &[u8]) -> Check {
        let local = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        web.verify(config, user, password.to_vec(), local).await
    }

    /// bcrypt("secret") and bcrypt("other"), cost 4.
    const SECRET: &str = "$2b$04$4chh5N.eIKibuqiQ.uC.JeTPneNIDyAYikrXKuIhOb2X3hMDoQIZ.";

    #[tokio::test]
    async fn verdicts_are_cached_and_a_new_hash_misses_the_cache() {
        let (web, path) = web_with(&format!("basic_auth_users:\n  u: {SECRET}\n"));
        let config = web.current(false);
        assert_eq!(check(&web, &config, "u", b"secret").await, Check::Pass);
        assert_eq!(check(&web, &config, "u", b"wrong").await, Check::Fail);
        assert_eq!(
            check(&web, &config, "nobody", b"fakepassword").await,
            Check::Fail
        );
        assert_eq!(lock(&web.cache).len(), 3);
        assert_eq!(check(&web, &config, "u", b"secret").await, Check::Pass);
        assert_eq!(lock(&web.cache).len(), 3);

        // A bad change keeps the old users; a good one replaces them.
        std::fs::write(&path, "basic_auth_users:\n  u: plain\n").unwrap();
        let still = web.current(false);
        assert!(Arc::ptr_eq(&still, &config));
        let other = bcrypt::hash("other", 4).unwrap();
        std::fs::write(&path, format!("basic_auth_users:\n  u: {other}\n")).unwrap();
        std::thread::sleep(RETRY);
        let new = web.current(false);
        assert!(!Arc::ptr_eq(&new, &config));
        assert!(lock(&web.cache).is_empty());
        assert_eq!(check(&web, &new, "u", b"secret").await, Check::Fail);
        assert_eq!(check(&web, &new, "u", b"other").await, Check::Pass);
        let _ = std::fs::remove_file(&path);
    }

    /// The problems of the last refused change, "" if none.
    fn refused(web: &Web) -> String {
        lock(&web.live)
            .refused
            .clone()
            .map(|(p, _)| p)
            .unwrap_or_default()
    }

    #[test]
    fn removing_every_user_while_running_is_refused() {
        let (web, path) = web_with(&format!("basic_auth_users:\n  u: {SECRET}\n"));
        let before = web.current(false);
        let wanted = format!(
            "{}: basic_auth_users: the change removes every user",
            path.display()
        );
        for text in [
            "",
            "basic_auth_users:\n",
            "basic_auth_users: {}\n",
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
        ] {
            // Past the retry delay of the previous refusal.
            std::thread::sleep(RETRY);
            std::fs::write(&path, text).unwrap();
            let now = web.current(false);
            assert!(Arc::ptr_eq(&now, &before), "{text:?} was taken in");
            assert_eq!(now.users.len(), 1);
            assert!(refused(&web).starts_with(&wanted), "{}", refused(&web));
            assert!(
                refused(&web).contains("restart dockwarden")
                    && refused(&web).contains("without --web-config"),
                "{}",
                refused(&web)
            );
        }
        let _ = std::fs::remove_file(&path);

        // Without users from the start, nothing is lost: a file with none
        // is taken in, and so are users added later.
        let (web, path) = web_with("");
        let before = web.current(false);
        std::fs::write(&path, "basic_auth_users: {}\n").unwrap();
        assert!(!Arc::ptr_eq(&web.current(false), &before));
        std::fs::write(&path, format!("basic_auth_users:\n  u: {SECRET}\n")).unwrap();
        assert_eq!(web.current(false).users.len(), 1);
        assert_eq!(refused(&web), "");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn turning_tls_on_while_running_is_refused() {
        use super::super::web_config::tests::{CERT, KEY};
        let (web, path) = web_with("basic_auth_users: {}\n");
        let before = web.current(false);
        std::fs::write(
            &path,
            "tls_server_config:\n  cert_file: /nonexistent\n  key_file: /nonexistent\n",
        )
        .unwrap();
        assert!(Arc::ptr_eq(&web.current(true), &before));
        assert!(
            refused(&web).contains("cannot read /nonexistent"),
            "{}",
            refused(&web)
        );
        let pem = |p: &str| p.lines().map(|l| format!("    {l}\n")).collect::<String>();
        std::fs::write(
            &path,
            format!(
                "tls_server_config:\n  cert: |\n{}  key: |\n{}",
                pem(CERT),
                pem(KEY)
            ),
        )
        .unwrap();
        std::thread::sleep(RETRY);
        assert!(Arc::ptr_eq(&web.current(true), &before));
        assert!(
            refused(&web).contains("tls_server_config was added"),
            "{}",
            refused(&web)
        );
        let _ = std::fs::remove_file(&path);
    }
}
