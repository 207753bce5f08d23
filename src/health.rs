//! `dockwarden health`: one probe of a running sidecar's `/readyz` (or
//! `/healthz`), for a container `HEALTHCHECK` in an image that has no curl.
//!
//! It owns the client side of the probe and its one-line verdict; it must not
//! read the engine or any state of its own: the sidecar's answer is the
//! verdict. It sits at the top of the layers and uses no other module.

use std::time::Duration;

/// Where the sidecar listens when `--url` is not given (the image's
/// `--listen 0.0.0.0:9477`, seen from inside the container).
pub const DEFAULT_URL: &str = "http://127.0.0.1:9477";

/// How long one probe may take: well under a `HEALTHCHECK --timeout`.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// What the probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET /readyz`: 200 once connected to the engine's event stream.
    Ready,
    /// `GET /healthz`: 200 while the process serves HTTP at all.
    Live,
}

impl Probe {
    /// The path this probe asks for.
    pub fn path(self) -> &'static str {
        match self {
            Probe::Ready => "/readyz",
            Probe::Live => "/healthz",
        }
    }
}

/// Why the sidecar is not healthy; each is one line.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("unhealthy: {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("unhealthy: no dockwarden answers at {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// Asks `base` + the probe's path once; on a 2xx, the line to print.
pub async fn probe(base: &str, probe: Probe) -> Result<String, HealthError> {
    probe_with(base, probe, false).await
}

/// [`probe`]; with `insecure`, an `https://` sidecar's certificate is not
/// checked (`--insecure`: a sidecar serving TLS under `--web-config`,
/// probed on its own loopback address, where its name cannot match).
pub async fn probe_with(base: &str, probe: Probe, insecure: bool) -> Result<String, HealthError> {
    let url = format!("{}{}", base.trim_end_matches('/'), probe.path());
    let unreachable = |e: &(dyn std::error::Error + 'static)| HealthError::Unreachable {
        url: url.clone(),
        reason: root_cause(e),
    };
    // no_proxy: an HTTP_PROXY set for webhooks must not carry the probe of
    // the sidecar's own loopback listener elsewhere.
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .danger_accept_invalid_certs(insecure)
        .build()
        .map_err(|e| unreachable(&e))?;
    let response = client.get(&url).send().await.map_err(|e| unreachable(&e))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| unreachable(&e))?;
    let body = first_line(&body);
    if (200..300).contains(&status) {
        Ok(format!("healthy: {url} answered {status}: {body}"))
    } else {
        Err(HealthError::Refused { url, status, body })
    }
}

/// The first line of a body, at most 200 characters.
fn first_line(body: &str) -> String {
    body.lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect()
}

/// The innermost error's text: "Connection refused (os error 111)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_of_the_body() {
        assert_eq!(first_line("ready: connected\nmore\n"), "ready: connected");
        assert_eq!(first_line(""), "");
        assert_eq!(first_line(&"x".repeat(500)).len(), 200);
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy_in_one_line() {
        // Bind then drop: a port that refuses.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let err = probe(&format!("http://127.0.0.1:{port}/"), Probe::Ready)
            .await
            .expect_err("nothing listens");
        let line = err.to_string();
        assert!(line.starts_with("unhealthy: no dockwarden answers at http://127.0.0.1:"));
        assert!(line.contains("/readyz"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[tokio::test]
    async fn a_503_is_unhealthy_and_a_200_healthy() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (answer, healthy) in [("503 Service Unavailable", false), ("200 OK", true)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.expect("read");
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let body = "not ready: event stream not connected\n";
                let reply = format!(
                    "HTTP/1.1 {answer}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).await.expect("write");
                head
            });
            let got = probe(&format!("http://{addr}"), Probe::Live).await;
            let head = server.await.expect("server");
            assert!(head.starts_with("GET /healthz "), "{head}");
            match got {
                Ok(line) => {
                    assert!(healthy, "{line}");
                    assert!(line.starts_with("healthy: "), "{line}");
                }
                Err(e) => {
                    assert!(!healthy, "{e}");
                    assert_eq!(
                        e.to_string(),
                        format!(
                            "unhealthy: http://{addr}/healthz answered 503: \
                             not ready: event stream not connected"
                        )
                    );
                }
            }
        }
    }
}
