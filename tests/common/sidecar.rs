//! The dockwarden binary under test: [`Dockwarden`] runs `dockwarden run` in
//! its own temp dir with its own rules file, port and log, and talks to its
//! HTTP endpoints.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::http::http10_get;
use super::process::{fresh_temp_dir, wait_until};
use super::prom::Metrics;

/// A running `dockwarden run` process with its own rules file, free port and
/// log file, all in a fresh temp dir that is removed on drop. Dropping it kills
/// the process if it is still running; if the test is panicking, the process's
/// log is printed first (it shows in the failed test's output).
pub struct Dockwarden {
    child: Child,
    status: Option<ExitStatus>,
    dir: PathBuf,
    rules_path: PathBuf,
    log_path: PathBuf,
    addr: SocketAddr,
}

impl Dockwarden {
    /// Starts `dockwarden run` with these rules and default settings.
    pub fn start(rules_toml: &str) -> Self {
        Self::start_with(rules_toml, &[], &[])
    }

    /// Starts `dockwarden run --rules <file> --listen 127.0.0.1:<port> ARGS...`
    /// with extra environment `env` (e.g. `("DOCKER_HOST", proxy.docker_host())`).
    /// `RUST_LOG` defaults to `info,dockwarden=debug` and `NO_COLOR` to `1`
    /// unless `env` sets them; everything else is inherited.
    pub fn start_with(rules_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = fresh_temp_dir("dockwarden");
        let rules_path = dir.join("rules.toml");
        fs::write(&rules_path, rules_toml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", rules_path.display()));
        let log_path = dir.join("dockwarden.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let log2 = log.try_clone().expect("cannot clone the log file handle");
        let addr = free_local_addr();
        let listen = addr.to_string();

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockwarden"));
        cmd.arg("run")
            .arg("--rules")
            .arg(&rules_path)
            .arg("--listen")
            .arg(&listen)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Each instance its own checkpoint, unless the test passes one (to
        // restart a sidecar where the last one stopped).
        if !args.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(dir.join("state"));
        }
        if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info,dockwarden=debug");
        }
        if !env.iter().any(|(k, _)| *k == "NO_COLOR") {
            cmd.env("NO_COLOR", "1");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_dockwarden")));
        Self {
            child,
            status: None,
            dir,
            rules_path,
            log_path,
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rules file it was started with (a test may rewrite it).
    pub fn rules_path(&self) -> &Path {
        &self.rules_path
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its temp dir (removed on drop): a place for other per-test files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything it has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    /// Waits until its log contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Its exit status if it has exited (does not block).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .expect("cannot query the dockwarden process");
        }
        self.status
    }

    /// Polls `/readyz` until it answers 200. Panics, showing the log, if it
    /// does not within `timeout` or if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(status) = self.try_status() {
                panic!(
                    "dockwarden exited ({status}) before /readyz answered 200 (last: {last}); log:\n{}",
                    self.log()
                );
            }
            match self.try_get("/readyz") {
                Ok((200, _)) => return,
                Ok((status, body)) => last = format!("{status} {body:?}"),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "dockwarden's /readyz did not answer 200 within {timeout:?} (last: {last}); log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path` on its HTTP listener → (status, body); an error connecting
    /// or reading is returned.
    pub fn try_get(&self, path: &str) -> io::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        http10_get(&mut stream, &self.addr.to_string(), path)
    }

    /// `GET path` → (status, body); panics (showing the log) if it cannot be
    /// reached.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path).unwrap_or_else(|e| {
            panic!(
                "GET http://{}{path} failed: {e}; dockwarden log:\n{}",
                self.addr,
                self.log()
            )
        })
    }

    /// Scrapes and parses `/metrics` (panics unless it answers 200).
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        if status != 200 {
            panic!("GET /metrics answered {status}: {body}");
        }
        Metrics::parse(&body)
    }

    /// Sends SIGTERM (`kill -TERM pid`).
    pub fn sigterm(&self) {
        let out = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .output()
            .expect("cannot run kill");
        assert!(
            out.status.success(),
            "kill -TERM {} failed: {}",
            self.pid(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits up to `timeout` for it to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .expect("cannot reap the dockwarden process");
        self.status = Some(status);
        status
    }
}

impl Drop for Dockwarden {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        if thread::panicking() {
            eprintln!(
                "---- dockwarden log ({}) ----\n{}---- end of dockwarden log ----",
                self.log_path.display(),
                self.log()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A free `127.0.0.1` port (bound then released).
pub fn free_local_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("cannot read the bound address")
}
