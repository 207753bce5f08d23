//! The engine's hot reads over the unix socket: a `GET` written and its
//! answer read in the calling task, on kept-alive connections.
//!
//! With the default rules every `exec_start` costs an exec inspect and
//! every `create` a container inspect. Through hyper's pooled client each
//! one is a pool checkout, a hand-off to the connection's own task and a
//! wake-up back, and hyper's general machinery (header maps, body frames):
//! at an offered 40 k events/s that was 30 % of the handlers' thread, more
//! than the reads' syscalls. Here a read takes an idle connection (or
//! connects), writes the request, parses the answer with `httparse` (the
//! parser hyper uses) and gives the connection back: no task, no channel.
//!
//! Only `GET`s, which are safe to send again: a kept connection that fails
//! before its answer is complete (the engine, or a socket proxy, closed it
//! while idle) is dropped and the request sent once more on a new one.
//! Everything else goes through bollard and hyper ([`super::engine`]).
//!
//! It must not decide what to read, nor decode a body: [`super::Engine`]
//! does.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use super::unix::{IDLE_TIMEOUT, MAX_IDLE};
use crate::lock::lock;

/// Headers an answer may have; dockerd sends seven.
const MAX_HEADERS: usize = 64;
/// The most an answer may be: an inspect is a few KiB.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Kept-alive connections to one socket, for `GET`s.
pub struct Reads {
    path: Arc<PathBuf>,
    /// Idle connections and when each went idle, the newest last.
    idle: Mutex<Vec<(UnixStream, Instant)>>,
    /// Reads in flight at once, no more than connections kept: past them
    /// every burst would connect again and close the surplus after it.
    turns: Semaphore,
}

/// One answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// How an exchange failed.
enum Failed {
    /// Before the answer was complete, on a connection that had served
    /// before: it may have been closed while idle.
    Stale(io::Error),
    /// Anything else.
    Other(io::Error),
}

impl Reads {
    pub fn new(path: Arc<PathBuf>) -> Reads {
        Reads {
            path,
            idle: Mutex::new(Vec::new()),
            turns: Semaphore::new(MAX_IDLE),
        }
    }

    /// `GET target` (origin form, `/v1.41/exec/…/json`), within `timeout`.
    pub async fn get(&self, target: &str, timeout: Duration) -> io::Result<Answer> {
        // Never closed: it lives as long as the connections.
        let _turn = self.turns.acquire().await;
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: dockwarden/{}\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        let exchange = async {
            if let Some(conn) = self.take_idle() {
                match exchange(conn, request.as_bytes(), true).await {
                    Ok((answer, conn)) => return Ok(self.give_back(answer, conn)),
                    Err(Failed::Stale(_)) => {}
                    Err(Failed::Other(e)) => return Err(e),
                }
            }
            let conn = UnixStream::connect(&*self.path).await?;
            match exchange(conn, request.as_bytes(), false).await {
                Ok((answer, conn)) => Ok(self.give_back(answer, conn)),
                Err(Failed::Stale(e) | Failed::Other(e)) => Err(e),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from the engine in {} s", timeout.as_secs()),
                ))
            })
    }

    /// The newest idle connection that has not idled too long.
    fn take_idle(&self) -> Option<UnixStream> {
        let mut idle = lock(&self.idle);
        // The oldest are first: those past the timeout are all at the front.
        let expired = idle
            .iter()
            .take_while(|(_, since)| since.elapsed() >= IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        idle.pop().map(|(conn, _)| conn)
    }

    /// Keeps `conn` for the next read if it may serve one.
    fn give_back(&self, answer: Answer, conn: Option<UnixStream>) -> Answer {
        if let Some(conn) = conn {
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE {
                idle.push((conn, Instant::now()));
            }
        }
        answer
    }
}

/// Writes `request` on `conn` and reads its answer; gives the connection
/// back if it may serve another request.
async fn exchange(
    mut conn: UnixStream,
    request: &[u8],
    reused: bool,
) -> Result<(Answer, Option<UnixStream>), Failed> {
    let fail = |e: io::Error| {
        if reused {
            Failed::Stale(e)
        } else {
            Failed::Other(e)
        }
    };
    conn.write_all(request).await.map_err(fail)?;
    let mut buf = BytesMut::with_capacity(8192);
    let head = loop {
        read_more(&mut conn, &mut buf).await.map_err(fail)?;
        if let Some(head) = parse_head(&buf).map_err(Failed::Other)? {
            break head;
        }
    };
    buf.advance(head.len);
    let body = match head.framing {
        Framing::Length(n) => {
            while buf.len() < n {
                read_more(&mut conn, &mut buf).await.map_err(fail)?;
            }
            buf.split_to(n).freeze()
        }
        Framing::Chunked => {
            let mut body = BytesMut::new();
            while !dechunk(&mut buf, &mut body).map_err(Failed::Other)? {
                read_more(&mut conn, &mut buf).await.map_err(fail)?;
            }
            body.freeze()
        }
        Framing::None => Bytes::new(),
    };
    // Bytes past the answer are not the engine's way: start afresh.
    let again = head.keep_alive && buf.is_empty();
    let answer = Answer {
        status: head.status,
        body,
    };
    Ok((answer, again.then_some(conn)))
}

/// Reads what `conn` has into `buf`; its end is an error (the answer is
/// not complete yet when this is called).
async fn read_more(conn: &mut UnixStream, buf: &mut BytesMut) -> io::Result<()> {
    if buf.len() >= MAX_ANSWER_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the engine's answer passed {MAX_ANSWER_BYTES} bytes"),
        ));
    }
    buf.reserve(8192);
    if conn.read_buf(buf).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// How the body of an answer ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// No body (`204`, `304`, `Content-Length: 0`).
    None,
}

/// What the head of an answer says.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Its length in bytes.
    len: usize,
    framing: Framing,
    keep_alive: bool,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The head of an answer, once `buf` holds all of it.
fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("the engine's answer: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("a Content-Length that is not a number"))?;
            if n > MAX_ANSWER_BYTES {
                return Err(invalid(format!("an answer of {n} bytes")));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.trim() != "chunked" {
                return Err(invalid(format!("Transfer-Encoding {v:?}")));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                keep_alive = false;
            }
        }
    }
    let framing = match (status, chunked, length) {
        (100..=199 | 204 | 304, _, _) => Framing::None,
        (_, true, _) => Framing::Chunked,
        (_, false, Some(0)) => Framing::None,
        (_, false, Some(n)) => Framing::Length(n),
        // Up to the connection's end: not for an API answer.
        (_, false, None) => return Err(invalid("an answer with no length")),
    };
    if status < 200 {
        return Err(invalid(format!("an interim answer ({status}) to a GET")));
    }
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive,
    }))
}

/// Moves the complete chunks at the front of `buf` into `body`; true once
/// the last chunk (and the end of its trailers) has been read.
fn dechunk(buf: &mut BytesMut, body: &mut BytesMut) -> io::Result<bool> {
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(_) => return Err(invalid("a malformed chunk size")),
        };
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| body.len() + s <= MAX_ANSWER_BYTES)
            .ok_or_else(|| invalid(format!("a chunk of {size} bytes")))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let rest = &buf[size_len..];
            if rest.starts_with(b"\r\n") {
                buf.advance(size_len + 2);
                return Ok(true);
            }
            return match memchr::memmem::find(rest, b"\r\n\r\n") {
                Some(end) => {
                    buf.advance(size_len + end + 4);
                    Ok(true)
                }
                None => Ok(false),
            };
        }
        if buf.len() < size_len + size + 2 {
            return Ok(false);
        }
        if &buf[size_len + size..size_len + size + 2] != b"\r\n" {
            return Err(invalid("a chunk not ended by CRLF"));
        }
        body.extend_from_slice(&buf[size_len..size_len + size]);
        buf.advance(size_len + size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()) {
            Ok(Some(h)) => h,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn heads_as_dockerd_writes_them() {
        let h = head(
            "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n\
             Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24 (linux)\r\n\
             Date: Sun, 06 Dec 2026 03:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (200, Framing::Chunked, true)
        );
        let h = head("HTTP/1.1 404 Not Found\r\nContent-Length: 38\r\n\r\n");
        assert_eq!((h.status, h.framing), (404, Framing::Length(38)));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless told otherwise");
        let h = head("HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(h.framing, Framing::None);
    }

    #[test]
    fn a_head_is_read_whole_or_refused() {
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Ok(None)
        ));
        for bad in [
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunks_split_anywhere_make_the_same_body() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\n\r\n";
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut body = BytesMut::new();
            let done = dechunk(&mut buf, &mut body).expect("well formed");
            assert_eq!(done, cut == wire.len(), "cut at {cut}");
            if !done {
                buf.extend_from_slice(&wire[cut..]);
                assert!(
                    dechunk(&mut buf, &mut body).expect("well formed"),
                    "cut at {cut}"
                );
            }
            assert_eq!(&body[..], b"hello, world");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn trailers_and_bad_chunks() {
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n"[..]);
        let mut body = BytesMut::new();
        assert!(dechunk(&mut buf, &mut body).expect("trailers"));
        assert_eq!(&body[..], b"ok");
        for bad in [&b"zz\r\nok\r\n"[..], b"2\r\nokXX0\r\n\r\n"] {
            let mut buf = BytesMut::from(bad);
            assert!(dechunk(&mut buf, &mut BytesMut::new()).is_err(), "{bad:?}");
        }
    }
}
