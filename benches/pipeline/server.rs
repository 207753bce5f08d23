//! The replay server: a unix socket that speaks like dockerd 20.10 (HTTP/1.1
//! written by hand, dockerd's headers, keep-alive) and streams the events of
//! [`Shapes`] on the first `GET /events`, one chunk per event, as fast as
//! the client reads or at an offered rate.
//!
//! Besides `/events` it answers what the consumers call at startup and
//! while handling: `/_ping` (GET and HEAD), `/version`, `/containers/json`,
//! `/containers/{id}/json`, `/exec/{id}/json`, with or without a `/v1.NN`
//! prefix; anything else is a 404 with dockerd's message, counted so a run
//! shows what a consumer asked.
//!
//! The stream's response headers go out at once (a client is "connected"),
//! but events wait for [`Server::go`], so a consumer's startup is not
//! measured. A later `/events` (a reconnect) gets headers and nothing else;
//! one with `until` (dockwarden's idle probe) gets an empty body: this
//! server logged nothing but what it streamed.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use dockwarden::clock::{rfc3339_nanos, unix_nanos};

use super::shapes::{API_VERSION, ENGINE_VERSION, Object, Shapes};

/// A write to the stream that waits longer than this would get a
/// subscriber dropped by dockerd (its 1024-event buffer, then 100 ms).
const STALL: Duration = Duration::from_millis(100);

/// What the stream sends.
#[derive(Clone, Copy)]
pub struct Plan {
    pub events: u64,
    /// Offered events per second, for events/rate seconds; None: as fast
    /// as the client reads.
    pub rate: Option<f64>,
    /// End the body after the last event (else hold it open, as dockerd does).
    pub close_after: bool,
}

impl Plan {
    /// `events` as fast as the client reads them.
    pub fn fast(events: u64) -> Plan {
        Plan {
            events,
            rate: None,
            close_after: false,
        }
    }

    /// `rate` events/s for `secs` seconds.
    pub fn paced(rate: f64, secs: f64) -> Plan {
        Plan {
            events: (rate * secs) as u64,
            rate: Some(rate),
            close_after: false,
        }
    }
}

/// What the server saw.
#[derive(Clone, Default)]
pub struct Stats {
    /// When the first event was written, and the last.
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    pub written: u64,
    /// Writes of the stream that waited longer than [`STALL`].
    pub stalls: u64,
    pub max_stall: Duration,
    /// `/events` requests after the first, without `until` (reconnects).
    pub reconnects: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Requests by method and route.
    pub requests: BTreeMap<String, u64>,
}

struct Shared {
    shapes: Arc<Shapes>,
    plan: Plan,
    claimed: AtomicBool,
    connected: AtomicBool,
    go: Notify,
    stats: Mutex<Stats>,
    cancel: CancellationToken,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running server; dropping it stops it.
pub struct Server {
    pub socket: PathBuf,
    shared: Arc<Shared>,
}

impl Server {
    pub fn start(rt: &Runtime, socket: PathBuf, shapes: Arc<Shapes>, plan: Plan) -> Server {
        let shared = Arc::new(Shared {
            shapes,
            plan,
            claimed: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            go: Notify::new(),
            stats: Mutex::new(Stats::default()),
            cancel: CancellationToken::new(),
        });
        let listener = {
            let _rt = rt.enter();
            UnixListener::bind(&socket)
                .unwrap_or_else(|e| panic!("cannot bind {}: {e}", socket.display()))
        };
        let s = shared.clone();
        rt.spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = s.cancel.cancelled() => return,
                    c = listener.accept() => c,
                };
                let Ok((stream, _)) = conn else { continue };
                s.stats().connections += 1;
                let s = s.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = s.cancel.cancelled() => {}
                        _ = connection(stream, &s) => {}
                    }
                });
            }
        });
        Server { socket, shared }
    }

    /// Whether the stream's subscriber is connected (headers sent).
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Starts the events.
    pub fn go(&self) {
        self.shared.go.notify_one();
    }

    /// Events written so far, and whether that is all.
    pub fn written(&self) -> (u64, bool) {
        let st = self.shared.stats();
        (st.written, st.finished.is_some())
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What a request gets.
enum Reply {
    Body {
        status: &'static str,
        content_type: &'static str,
        body: Bytes,
        /// dockerd's extra headers for `_ping`.
        ping: bool,
    },
    Events {
        /// With `until`: what was logged, then the end.
        bounded: bool,
        /// The first unbounded request: the one that gets the events.
        first: bool,
    },
}

/// One keep-alive connection: requests until it closes or a stream ends.
async fn connection(mut stream: UnixStream, s: &Shared) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > 64 * 1024 || stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_owned();
        let target = first.next().unwrap_or_default().to_owned();
        let mut body_len = 0usize;
        let mut close = false;
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                body_len = v.parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        while buf.len() < head_end + body_len {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..head_end + body_len);

        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match route(s, &method, path, query) {
            Reply::Body {
                status,
                content_type,
                body,
                ping,
            } => {
                let head_only = method == "HEAD";
                let len = if head_only { 0 } else { body.len() };
                let mut out = headers(status, content_type, ping);
                out.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
                if !head_only {
                    out.extend_from_slice(&body);
                }
                stream.write_all(&out).await?;
            }
            Reply::Events { bounded, first } => {
                let mut out = headers("200 OK", "application/json", false);
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                if bounded {
                    // Nothing logged that the stream did not send.
                    out.extend_from_slice(b"0\r\n\r\n");
                    stream.write_all(&out).await?;
                } else {
                    stream.write_all(&out).await?;
                    if first {
                        s.connected.store(true, Ordering::Release);
                        return events(stream, s).await;
                    }
                    // A reconnect: headers, then nothing.
                    s.cancel.cancelled().await;
                    return Ok(());
                }
            }
        }
        if close {
            return Ok(());
        }
    }
}

/// Answers one request; counts it.
fn route(s: &Shared, method: &str, path: &str, query: &str) -> Reply {
    // `/v1.41/containers/json` → `/containers/json`.
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or("/", |at| &rest[at..])
        }
        _ => path,
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let json = |body: Bytes| Reply::Body {
        status: "200 OK",
        content_type: "application/json",
        body,
        ping: false,
    };
    let not_found = |message: String| Reply::Body {
        status: "404 Not Found",
        content_type: "application/json",
        body: format!("{{\"message\":{}}}\n", serde_json::Value::from(message)).into(),
        ping: false,
    };
    let (route, reply) = match (method, segments.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) => (
            "/_ping",
            Reply::Body {
                status: "200 OK",
                content_type: "text/plain; charset=utf-8",
                body: Bytes::from_static(b"OK"),
                ping: true,
            },
        ),
        ("GET", ["version"]) => ("/version", json(s.shapes.version.clone())),
        ("GET", ["events"]) => {
            let bounded = query.split('&').any(|kv| kv.starts_with("until="));
            let first = !bounded && !s.claimed.swap(true, Ordering::AcqRel);
            if !bounded && !first {
                s.stats().reconnects += 1;
            }
            ("/events", Reply::Events { bounded, first })
        }
        ("GET", ["containers", "json"]) => ("/containers/json", json(s.shapes.listing.clone())),
        ("GET", ["containers", id, "json"]) => (
            "/containers/{id}/json",
            match s.shapes.decode(id) {
                Some(Object::Container(slot)) => json(s.shapes.inspect(slot)),
                _ => not_found(format!("No such container: {id}")),
            },
        ),
        ("GET", ["exec", id, "json"]) => (
            "/exec/{id}/json",
            match s.shapes.decode(id) {
                Some(Object::Exec { slot, story, nth }) => {
                    json(s.shapes.exec_inspect(slot, story, nth))
                }
                _ => not_found(format!("No such exec instance: {id}")),
            },
        ),
        _ => ("(unknown, 404)", not_found("page not found".to_owned())),
    };
    let key = if route.starts_with('(') {
        format!("{method} {path} {route}")
    } else {
        format!("{method} {route}")
    };
    *s.stats().requests.entry(key).or_default() += 1;
    reply
}

/// dockerd's response headers up to (not including) the length.
fn headers(status: &str, content_type: &str, ping: bool) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status}\r\nApi-Version: {API_VERSION}\r\n");
    if ping {
        h.push_str("Cache-Control: no-cache, no-store, must-revalidate\r\n");
    }
    h.push_str(&format!(
        "Content-Type: {content_type}\r\nDocker-Experimental: false\r\nOstype: linux\r\n"
    ));
    if ping {
        h.push_str("Pragma: no-cache\r\n");
    }
    h.push_str(&format!(
        "Server: Docker/{ENGINE_VERSION} (linux)\r\nDate: {}\r\n",
        http_date()
    ));
    h.into_bytes()
}

/// The events of the plan on the stream (headers already sent).
async fn events(mut stream: UnixStream, s: &Shared) -> io::Result<()> {
    s.go.notified().await;
    let plan = s.plan;
    let started = Instant::now();
    s.stats().started = Some(started);
    let mut out = Vec::with_capacity(256 * 1024);
    let mut i = 0u64;
    let mut last_nano = 0i64;
    let mut stalls = (0u64, Duration::ZERO);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // An offered rate lasts events/rate seconds. What a slow reader has not
    // taken [`STALL`] after that is never delivered: dockerd waits that long
    // on a send before it drops it. (Without the grace, the last
    // millisecond's events counted as lost whenever this thread got its
    // turn on the CPU just after the end, however fast the reader.)
    let deadline = plan
        .rate
        .map(|rate| started + Duration::from_secs_f64(plan.events as f64 / rate) + STALL);
    'stream: while i < plan.events {
        let until = match plan.rate {
            None => plan.events,
            Some(rate) => {
                tick.tick().await;
                ((rate * started.elapsed().as_secs_f64()) as u64).min(plan.events)
            }
        };
        // Unique, increasing times near now: nothing is a duplicate.
        let now = unix_nanos();
        while i < until {
            out.clear();
            while i < until && out.len() < 64 * 1024 {
                last_nano = (last_nano + 1).max(now);
                s.shapes.chunk(i, last_nano, &mut out);
                i += 1;
            }
            let t = Instant::now();
            stream.write_all(&out).await?;
            let waited = t.elapsed();
            if waited > STALL {
                stalls.0 += 1;
            }
            stalls.1 = stalls.1.max(waited);
            {
                let mut st = s.stats();
                st.written = i;
                st.stalls = stalls.0;
                st.max_stall = stalls.1;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break 'stream;
            }
        }
    }
    s.stats().finished = Some(Instant::now());
    if plan.close_after {
        stream.write_all(b"0\r\n\r\n").await?;
        return Ok(());
    }
    s.cancel.cancelled().await;
    Ok(())
}

/// `Mon, 23 Nov 2026 14:07:23 GMT`, now.
fn http_date() -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let now = unix_nanos();
    // `2026-11-23T14:07:23.000000000Z`
    let rfc = rfc3339_nanos(now);
    let part = |r: std::ops::Range<usize>| rfc.get(r).unwrap_or_default();
    let month: usize = part(5..7).parse().unwrap_or(1);
    let day = now.div_euclid(86_400_000_000_000);
    format!(
        "{}, {} {} {} {} GMT",
        WEEKDAYS[day.rem_euclid(7) as usize],
        part(8..10),
        MONTHS[month.clamp(1, 12) - 1],
        part(0..4),
        part(11..19)
    )
}
