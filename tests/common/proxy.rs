//! A fault-injecting proxy in front of the real Docker Engine socket.
//!
//! [`FaultProxy`] listens on a fresh unix socket and forwards every connection
//! byte for byte to the engine's socket. Point dockwarden at it with
//! `DOCKER_HOST=<proxy.docker_host()>`, then break things on purpose:
//!
//! * [`FaultProxy::cut_all`] — every live connection is shut down at once
//!   (engine restart / socket closed); new connections still work.
//! * [`FaultProxy::set_refuse`] — while set, new connections are accepted and
//!   closed at once (engine down).
//! * [`FaultProxy::stall_all`] — live connections stop forwarding in both
//!   directions but stay open (half-open connection) until cut or dropped.
//! * [`FaultProxy::inject_to_client`] — extra body data (e.g. garbage that is
//!   not JSON) in the middle of a chunked response such as `/events`, framed as
//!   its own chunk so the client's HTTP layer delivers it as body data.
//!
//! To inject at a chunk boundary, the proxy follows the HTTP/1.1 framing of
//! both directions (request methods, `Content-Length`, chunked encoding,
//! upgrades) with an [`HttpFramer`]. The framing is only observed: bytes are
//! always forwarded as they arrive, unchanged.
#![allow(dead_code)]

mod framer;

pub use framer::HttpFramer;

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// See the module docs.
pub struct FaultProxy {
    dir: PathBuf,
    socket_path: PathBuf,
    upstream: PathBuf,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    refuse: AtomicBool,
    /// Milliseconds a connection's first bytes from the engine wait for
    /// what follows them (0: forwarded as they come).
    gather_ms: AtomicU64,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

struct Conn {
    id: u64,
    client: UnixStream,
    upstream: UnixStream,
    stalled: AtomicBool,
    closed: AtomicBool,
    finished_threads: AtomicU8,
    /// Server→client state; held while anything is written to the client, so
    /// an injection never lands inside an upstream chunk.
    to_client: Mutex<ToClient>,
}

struct ToClient {
    framer: HttpFramer,
    /// Injections waiting for the next chunk boundary.
    pending: Vec<Vec<u8>>,
}

impl FaultProxy {
    /// A proxy in front of the engine socket: the path in `DOCKER_HOST` if it
    /// is `unix://…`, else `/var/run/docker.sock`.
    pub fn start() -> Self {
        let upstream = super::docker_socket_path().unwrap_or_else(|| {
            panic!(
                "FaultProxy needs a unix socket engine, but DOCKER_HOST is {}",
                super::endpoint()
            )
        });
        Self::start_with_upstream(&upstream)
    }

    /// A proxy in front of the unix socket `upstream`.
    pub fn start_with_upstream(upstream: &Path) -> Self {
        let dir = super::fresh_temp_dir("proxy");
        let socket_path = dir.join("docker.sock");
        let listener = UnixListener::bind(&socket_path)
            .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", socket_path.display()));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            gather_ms: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        });
        let accept_thread = {
            let shared = Arc::clone(&shared);
            let upstream = upstream.to_path_buf();
            thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || accept_loop(listener, upstream, shared))
                .expect("cannot spawn the proxy's accept thread")
        };
        Self {
            dir,
            socket_path,
            upstream: upstream.to_path_buf(),
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// `unix://<socket_path>`, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket_path.display())
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    pub fn upstream(&self) -> &Path {
        &self.upstream
    }

    /// Number of live proxied connections.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Shuts down (both directions, both sides) every live connection now.
    /// New connections are still accepted afterwards.
    pub fn cut_all(&self) {
        let conns: Vec<Arc<Conn>> = lock(&self.shared.conns).drain().map(|(_, c)| c).collect();
        for c in conns {
            c.close();
        }
    }

    /// While `true`, new connections are accepted and closed at once, as if
    /// the engine were down. Live connections are not touched (see
    /// [`cut_all`](Self::cut_all)).
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// While set, the first bytes the engine sends on each new connection
    /// (the head of the answer) wait `gather` for what follows them (the
    /// start of its body), and reach the client in one write: as a client
    /// reads them when the engine is quick, in one read.
    pub fn set_gather(&self, gather: Duration) {
        let ms = u64::try_from(gather.as_millis()).unwrap_or(u64::MAX);
        self.shared.gather_ms.store(ms, Ordering::SeqCst);
    }

    /// Every live connection stops forwarding in both directions but stays
    /// open, until [`cut_all`](Self::cut_all) or drop. Connections made later
    /// are not affected. Returns how many connections were stalled.
    pub fn stall_all(&self) -> usize {
        let conns = lock(&self.shared.conns);
        for c in conns.values() {
            c.stalled.store(true, Ordering::SeqCst);
        }
        conns.len()
    }

    /// Sends `bytes` to the client of every live connection that is in the
    /// middle of a chunked response (such as `/events`), as one extra chunk
    /// placed between upstream chunks (at once if the stream is between
    /// chunks, else right after the current chunk). Connections that are not
    /// inside a chunked body, or are stalled, are skipped. Returns how many
    /// connections got (or will get) it.
    pub fn inject_to_client(&self, bytes: &[u8]) -> usize {
        assert!(!bytes.is_empty(), "an empty chunk would end the response");
        let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(b"\r\n");
        self.inject_raw_to_client(&framed)
    }

    /// Like [`inject_to_client`](Self::inject_to_client) but writes `bytes`
    /// as they are, without chunk framing, at a chunk boundary: use it to
    /// corrupt the HTTP framing itself.
    pub fn inject_raw_to_client(&self, bytes: &[u8]) -> usize {
        let conns: Vec<Arc<Conn>> = lock(&self.shared.conns).values().cloned().collect();
        let mut count = 0;
        for c in conns {
            if c.stalled.load(Ordering::SeqCst) || c.closed.load(Ordering::SeqCst) {
                continue;
            }
            let mut st = lock(&c.to_client);
            if !st.framer.in_chunked_body() {
                continue;
            }
            count += 1;
            if st.framer.at_chunk_boundary() {
                if (&c.client).write_all(bytes).is_err() {
                    drop(st);
                    c.close();
                }
            } else {
                st.pending.push(bytes.to_vec());
            }
        }
        count
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.socket_path);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        self.cut_all();
        let _ = fs::remove_file(&self.socket_path);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Conn {
    /// Shuts down both sockets in both directions (wakes the forwarding
    /// threads, which then exit).
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    /// Blocks a stalled forwarding thread until the connection is closed.
    fn hold_while_stalled(&self, shared: &Shared) {
        while !self.closed.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn accept_loop(listener: UnixListener, upstream: PathBuf, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = stream else { continue };
        if shared.refuse.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(up) = UnixStream::connect(&upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let (Ok(client2), Ok(up2), Ok(client3)) =
            (client.try_clone(), up.try_clone(), client.try_clone())
        else {
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let methods = Arc::new(Mutex::new(VecDeque::new()));
        let conn = Arc::new(Conn {
            id,
            client,
            upstream: up,
            stalled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            finished_threads: AtomicU8::new(0),
            to_client: Mutex::new(ToClient {
                framer: HttpFramer::response(Arc::clone(&methods)),
                pending: Vec::new(),
            }),
        });
        lock(&shared.conns).insert(id, Arc::clone(&conn));

        let (c1, s1) = (Arc::clone(&conn), Arc::clone(&shared));
        let spawned = thread::Builder::new()
            .name(format!("fault-proxy-c2s-{id}"))
            .spawn(move || {
                client_to_server(&c1, &s1, client2, HttpFramer::request(methods));
                finish(&c1, &s1);
            });
        let (c2, s2) = (Arc::clone(&conn), Arc::clone(&shared));
        let spawned2 = thread::Builder::new()
            .name(format!("fault-proxy-s2c-{id}"))
            .spawn(move || {
                server_to_client(&c2, &s2, up2, client3);
                finish(&c2, &s2);
            });
        if spawned.is_err() || spawned2.is_err() {
            conn.close();
            lock(&shared.conns).remove(&id);
        }
    }
}

/// Called by each forwarding thread when it ends; the second one retires the
/// connection.
fn finish(conn: &Conn, shared: &Shared) {
    if conn.finished_threads.fetch_add(1, Ordering::SeqCst) == 1 {
        conn.close();
        lock(&shared.conns).remove(&conn.id);
    }
}

fn client_to_server(conn: &Conn, shared: &Shared, mut from: UnixStream, mut framer: HttpFramer) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                // Client half-closed: pass the half-close on.
                let _ = conn.upstream.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                conn.close();
                return;
            }
        };
        if conn.stalled.load(Ordering::SeqCst) {
            conn.hold_while_stalled(shared);
            return;
        }
        // Record request methods before the request reaches the engine, so
        // the response side knows e.g. that a HEAD response has no body.
        let mut off = 0;
        while off < n {
            off += framer.advance(&buf[off..n]);
        }
        if (&conn.upstream).write_all(&buf[..n]).is_err() {
            conn.close();
            return;
        }
    }
}

fn server_to_client(conn: &Conn, shared: &Shared, mut from: UnixStream, mut to: UnixStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = true;
    loop {
        let mut n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = conn.client.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                conn.close();
                return;
            }
        };
        let gather = shared.gather_ms.load(Ordering::SeqCst);
        if std::mem::take(&mut first) && gather > 0 {
            n += gathered(&mut from, &mut buf[n..], Duration::from_millis(gather));
        }
        if conn.stalled.load(Ordering::SeqCst) {
            conn.hold_while_stalled(shared);
            return;
        }
        let mut st = lock(&conn.to_client);
        if forward_with_injections(&mut st, &buf[..n], &mut to).is_err() {
            drop(st);
            conn.close();
            return;
        }
    }
}

/// What `from` sends within `wait`, read into `buf`: its byte count.
fn gathered(from: &mut UnixStream, buf: &mut [u8], wait: Duration) -> usize {
    thread::sleep(wait);
    // Only this thread reads the engine's side: a read timeout there
    // leaves the other direction alone.
    if from
        .set_read_timeout(Some(Duration::from_millis(5)))
        .is_err()
    {
        return 0;
    }
    let mut n = 0;
    while n < buf.len() {
        match from.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(more) => n += more,
        }
    }
    let _ = from.set_read_timeout(None);
    n
}

fn forward_with_injections(st: &mut ToClient, data: &[u8], to: &mut UnixStream) -> io::Result<()> {
    let mut start = 0;
    let mut off = 0;
    while off < data.len() {
        off += st.framer.advance(&data[off..]);
        if !st.pending.is_empty() {
            if st.framer.at_chunk_boundary() {
                to.write_all(&data[start..off])?;
                start = off;
                for p in st.pending.drain(..) {
                    to.write_all(&p)?;
                }
            } else if !st.framer.in_chunked_body() {
                // The response ended before a boundary: nothing to inject into.
                st.pending.clear();
            }
        }
    }
    to.write_all(&data[start..])
}
