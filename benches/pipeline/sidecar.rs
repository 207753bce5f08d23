//! dockwarden as a consumer process: the rules files it runs with (the
//! shipped default, or one that matches nothing), a free port for its HTTP
//! endpoint, and what its `/metrics` says it has read and dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// This build's dockwarden.
pub const BIN: &str = env!("CARGO_BIN_EXE_dockwarden");

/// `bin run --rules RULES --listen ADDR --dry-run --state-dir DIR/state`,
/// `RUST_LOG=info`, stdout and stderr to `log`. `bin` is [`BIN`], or
/// another dockwarden binary (`scripts/image`'s static one).
pub fn command(
    bin: &Path,
    rules: &Path,
    addr: SocketAddr,
    dir: &Path,
    log: File,
) -> Result<Command, String> {
    let err = log.try_clone().map_err(|e| format!("the log file: {e}"))?;
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--rules")
        .arg(rules)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--dry-run")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    Ok(cmd)
}

/// `rules/default.toml` as shipped, but with its audit log in the run's
/// directory (the state directory is `--state-dir`).
pub fn default_rules(audit: &Path) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/default.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let shipped = "path = \"/var/log/dockwarden/audit.jsonl\"";
    if !text.contains(shipped) {
        return Err(format!("{} no longer has `{shipped}`", path.display()));
    }
    Ok(text.replacen(
        shipped,
        &format!("path = {:?}", audit.display().to_string()),
        1,
    ))
}

/// One rule on a key no event of the stream has.
pub fn no_match_rules(audit: &Path) -> String {
    format!(
        "[audit]\npath = {:?}\n\n[[rule]]\nname = \"nothing\"\non = [\"plugin.enable\"]\nhandler = \"log\"\n",
        audit.display().to_string()
    )
}

pub fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

/// dockwarden's `/metrics`: engine events read (every type but its own
/// `dockwarden`, dropped ones included: they are counted when read), and
/// events dropped.
pub fn scrape(addr: SocketAddr) -> Result<(u64, u64), String> {
    let body = http_get(addr, "/metrics").map_err(|e| format!("GET /metrics: {e}"))?;
    let mut read = 0.0;
    let mut dropped = 0.0;
    for line in body.lines() {
        let value = |l: &str| -> f64 {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0.0)
        };
        if line.starts_with("dockwarden_events_total{") && !line.contains("type=\"dockwarden\"") {
            read += value(line);
        } else if line.starts_with("dockwarden_events_dropped_total ") {
            dropped = value(line);
        }
    }
    Ok((read as u64, dropped as u64))
}

/// `GET path` over HTTP/1.0 → the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("").to_owned(),
        ));
    }
    Ok(body.to_owned())
}
