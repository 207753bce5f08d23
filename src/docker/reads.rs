//! The engine's hot reads over the unix socket: a `GET` written and its
//! answer read in the calling task, on kept-alive connections.
//!
//! With the default rules every `exec_start` costs an exec inspect and
//! every `create` a container inspect. Through hyper's pooled client each
//! one is a pool checkout, a hand-off to the connection's own task and a
//! wake-up back, and hyper's general machinery (header maps, body frames):
//! at an offered 40 k events/s that was 30 % of the handlers' thread, more
//! than the reads' syscalls. Here a read takes an idle connection (or
//! connects), writes the request, reads the answer ([`super::http1`]) and
//! gives the connection back: no task, no channel.
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

use super::http1::{Body, Framing, parse_head};
use super::unix::{IDLE_TIMEOUT, MAX_IDLE};
use crate::lock::lock;

/// The most an answer may be: an inspect is a few KiB.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Kept-alive connections to one socket, for `GET`s.
pub struct Reads {
    path: Arc<PathBuf>,
    /// Idle connections, each with its read buffer, and when each went
    /// idle, the newest last.
    idle: Mutex<Vec<(Conn, Instant)>>,
    /// Reads in flight at once, no more than connections kept: past them
    /// every burst would connect again and close the surplus after it.
    turns: Semaphore,
}

/// A kept connection and the buffer its answers are read into, kept with
/// it: a new 8 KiB buffer for every read was 2 % of the handlers' thread.
struct Conn {
    stream: UnixStream,
    buf: BytesMut,
}

/// What a read buffer starts with, and takes again before every read.
const READ_CHUNK: usize = 8192;

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
            let conn = Conn {
                stream: UnixStream::connect(&*self.path).await?,
                buf: BytesMut::with_capacity(READ_CHUNK),
            };
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
    fn take_idle(&self) -> Option<Conn> {
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
    fn give_back(&self, answer: Answer, conn: Option<Conn>) -> Answer {
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
    mut conn: Conn,
    request: &[u8],
    reused: bool,
) -> Result<(Answer, Option<Conn>), Failed> {
    let fail = |e: io::Error| {
        if reused {
            Failed::Stale(e)
        } else {
            Failed::Other(e)
        }
    };
    conn.stream.write_all(request).await.map_err(fail)?;
    // Empty: a connection is kept only when nothing followed its answer.
    let mut buf = std::mem::take(&mut conn.buf);
    buf.clear();
    let head = loop {
        if read_more(&mut conn.stream, &mut buf).await.map_err(fail)? == 0 {
            return Err(fail(io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some(head) = parse_head(&buf).map_err(Failed::Other)? {
            break head;
        }
    };
    buf.advance(head.len);
    let mut data = match head.framing {
        Framing::Length(n) => BytesMut::with_capacity(n.min(MAX_ANSWER_BYTES)),
        _ => BytesMut::new(),
    };
    let mut body = Body::new(head.framing);
    while !body
        .take(&mut buf, &mut |d| data.extend_from_slice(d))
        .map_err(Failed::Other)?
    {
        if data.len() > MAX_ANSWER_BYTES {
            return Err(Failed::Other(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the engine's answer passed {MAX_ANSWER_BYTES} bytes"),
            )));
        }
        if read_more(&mut conn.stream, &mut buf).await.map_err(fail)? == 0 {
            body.at_eof().map_err(fail)?;
        }
    }
    // Bytes past the answer are not the engine's way: start afresh.
    let again = head.keep_alive && buf.is_empty();
    let answer = Answer {
        status: head.status,
        body: data.freeze(),
    };
    if !again {
        return Ok((answer, None));
    }
    // A buffer an outsized answer grew is not kept.
    if buf.capacity() <= 4 * READ_CHUNK {
        conn.buf = buf;
    }
    Ok((answer, Some(conn)))
}

/// Reads what `conn` has into `buf`: how many bytes (0 at its end).
async fn read_more(conn: &mut UnixStream, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    conn.read_buf(buf).await
}
