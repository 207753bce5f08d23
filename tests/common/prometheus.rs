//! A real `prometheus` server (Debian's package) for tests: started on a
//! free loopback port with a config file, asked over its HTTP API, and
//! stopped (SIGTERM, then SIGKILL) on drop, its log printed if the test is
//! failing.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::http10_get;
use super::sidecar::free_local_addr;

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `prometheus --config.file=CONFIG` with its data and log in
    /// `dir`.
    pub fn start(dir: &Path, config: &Path) -> Self {
        let addr = free_local_addr();
        let log = dir.join("prometheus.log");
        let out = fs::File::create(&log).expect("create the prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}"));
        Prometheus { child, addr, log }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str) -> io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        http10_get(&mut s, &self.addr.to_string(), path)
    }

    /// `GET /api/v1/PATH_AND_QUERY` → its `data`, or why not (`what` names
    /// the request in the error).
    pub fn api(&self, path_and_query: &str, what: &str) -> Result<Value, String> {
        let (status, body) = self
            .get(&format!("/api/v1/{path_and_query}"))
            .map_err(|e| format!("{what}: {e}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("{what}: {status}, not JSON ({e}): {body}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!("{what}: {status} {json}"));
        }
        Ok(json["data"].clone())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- prometheus log ----\n{}---- end of prometheus log ----",
                self.log()
            );
        }
    }
}
