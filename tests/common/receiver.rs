//! A real HTTP/1.1 receiver on loopback, for notification tests: the
//! stand-in for a webhook, Slack, Discord, ntfy or Gotify server.
//!
//! It records every request (method, path with query, headers, body,
//! arrival time) and answers each from a script of [`Step`]s, then with
//! its default step (200 unless set): a status with headers (such as
//! `Retry-After`) and a body after a delay, a hang-up without an answer,
//! or a refusal (it stops listening for a while, so connections are
//! refused). [`Receiver::down`] and [`Receiver::up`] stop and resume
//! listening on the same port by hand; [`Receiver::start_down`] reserves a
//! port that refuses connections until `up`.
//!
//! Plain threads and `std::net`, so it works the same from sync and async
//! tests (from an async test, poll [`Receiver::count`] rather than block
//! in [`Receiver::wait_for`] on a single-threaded runtime).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path with query, as sent: `/hooks/abc?x=1`.
    pub path: String,
    /// (name as sent, value) pairs in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its body had been read.
    pub at: Instant,
}

impl Received {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body_str()))
    }
}

/// An answer: status, headers, body, after a delay.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.to_owned();
        self
    }

    /// Answer only after `delay` (longer than the client's timeout: a
    /// receiver too slow to wait for).
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// What the receiver does with one request.
#[derive(Debug, Clone)]
pub enum Step {
    Reply(Reply),
    /// Read the request, then close the connection without an answer.
    Hangup,
    /// Close the connection without an answer and stop listening for this
    /// long: connections are refused meanwhile.
    Refuse(Duration),
}

impl From<Reply> for Step {
    fn from(r: Reply) -> Step {
        Step::Reply(r)
    }
}

struct Accepting {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Shared {
    requests: Mutex<Vec<Received>>,
    arrived: Condvar,
    script: Mutex<VecDeque<Step>>,
    default: Mutex<Step>,
    accepting: Mutex<Option<Accepting>>,
    conns: Mutex<Vec<TcpStream>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A loopback HTTP receiver; stops listening when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Listening on a free loopback port, answering 200.
    pub fn start() -> Receiver {
        let r = Receiver::start_down();
        r.up();
        r
    }

    /// A free loopback port that refuses connections until [`Receiver::up`].
    pub fn start_down() -> Receiver {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = probe.local_addr().expect("local addr");
        drop(probe);
        Receiver {
            addr,
            shared: Arc::new(Shared {
                requests: Mutex::new(Vec::new()),
                arrived: Condvar::new(),
                script: Mutex::new(VecDeque::new()),
                default: Mutex::new(Step::Reply(Reply::status(200))),
                accepting: Mutex::new(None),
                conns: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Appends steps to the script; each request takes the next one.
    pub fn script<S: Into<Step>>(&self, steps: impl IntoIterator<Item = S>) {
        lock(&self.shared.script).extend(steps.into_iter().map(Into::into));
    }

    /// What every request gets once the script is used up.
    pub fn set_default(&self, step: impl Into<Step>) {
        *lock(&self.shared.default) = step.into();
    }

    /// Listens again on the same port (no-op if listening).
    pub fn up(&self) {
        up(&self.shared, self.addr);
    }

    /// Stops listening and closes open connections: from when this
    /// returns, connections are refused.
    pub fn down(&self) {
        down(&self.shared);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.shared.requests).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Blocks until `n` requests arrived or `timeout` passed; returns them
    /// all either way.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut got = lock(&self.shared.requests);
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            got = self
                .shared
                .arrived
                .wait_timeout(got, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        got.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

fn up(shared: &Arc<Shared>, addr: SocketAddr) {
    let mut accepting = lock(&shared.accepting);
    if accepting.is_some() {
        return;
    }
    // std sets SO_REUSEADDR, so the port can be taken again at once.
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("re-bind {addr}: {e}"));
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stop, shared) = (stop.clone(), shared.clone());
        thread::spawn(move || accept_loop(listener, stop, shared, addr))
    };
    *accepting = Some(Accepting { stop, thread });
}

fn down(shared: &Shared) {
    let accepting = lock(&shared.accepting).take();
    if let Some(a) = accepting {
        a.stop.store(true, Ordering::SeqCst);
        let _ = a.thread.join();
    }
    for c in lock(&shared.conns).drain(..) {
        let _ = c.shutdown(Shutdown::Both);
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    addr: SocketAddr,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                if let Ok(clone) = stream.try_clone() {
                    lock(&shared.conns).push(clone);
                }
                let shared = shared.clone();
                thread::spawn(move || serve(stream, shared, addr));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
    // The listener is dropped here: the port refuses connections.
}

/// Serves requests on one connection until it closes.
fn serve(stream: TcpStream, shared: Arc<Shared>, addr: SocketAddr) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(stream);
    while let Some((req, close)) = read_request(&mut reader) {
        {
            let mut got = lock(&shared.requests);
            got.push(req);
            shared.arrived.notify_all();
        }
        let step = lock(&shared.script)
            .pop_front()
            .unwrap_or_else(|| lock(&shared.default).clone());
        match step {
            Step::Hangup => {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            Step::Refuse(d) => {
                let _ = out.shutdown(Shutdown::Both);
                let shared = shared.clone();
                // Not from this thread's own connection bookkeeping: a
                // helper takes the port down and back up.
                thread::spawn(move || {
                    down(&shared);
                    thread::sleep(d);
                    up(&shared, addr);
                });
                return;
            }
            Step::Reply(r) => {
                thread::sleep(r.delay);
                let mut head = format!(
                    "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
                    r.status,
                    reason(r.status),
                    r.body.len()
                );
                for (n, v) in &r.headers {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                if close {
                    head.push_str("Connection: close\r\n");
                }
                head.push_str("\r\n");
                head.push_str(&r.body);
                if out.write_all(head.as_bytes()).is_err() || close {
                    return;
                }
            }
        }
    }
}

/// Reads one request; None at EOF or on garbage. The bool: the client
/// asked to close after it.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(Received, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; len.min(16 << 20)];
        r.read_exact(&mut body).ok()?;
    }
    let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Some((
        Received {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
        },
        close,
    ))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
