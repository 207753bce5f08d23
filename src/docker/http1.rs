//! The little of HTTP/1.1 that dockwarden speaks to the engine by itself:
//! the head of an answer (parsed by `httparse`, the parser hyper uses) and
//! its body as the bytes arrive (a length, chunks, or up to the end of the
//! connection).
//!
//! The engine's hot reads ([`super::reads`]) and the event stream
//! (`crate::source`) use it instead of hyper's client: hyper hands every
//! answer and every chunk from a connection task of its own to the caller's
//! task, through a channel and a wake-up, as a frame of its own; for the
//! stream, one event per chunk, that was an eighth of the reader's thread.
//! Here the caller's task reads the socket and takes the body's data out
//! of its own buffer.
//!
//! It must not connect, decide what to send, or decode a body.

use std::io;

use bytes::{Buf, BytesMut};

/// Headers an answer may have; dockerd sends seven.
const MAX_HEADERS: usize = 64;
/// The longest head or chunk-size line waited for.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the head of an answer says.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Its length in bytes: the body starts after it.
    pub len: usize,
    pub framing: Framing,
    /// Whether the connection may carry another request after this answer.
    pub keep_alive: bool,
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    /// At the end of the connection (no length given).
    UntilEof,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The head of an answer to a `GET`, once `buf` holds all of it.
pub fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(invalid(format!(
                "the engine's answer has no end of head in {MAX_HEAD_BYTES} bytes"
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("the engine's answer: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    if status < 200 {
        return Err(invalid(format!("an interim answer ({status}) to a GET")));
    }
    let mut keep_alive = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("a Content-Length that is not a number"))?;
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
        (204 | 304, _, _) => Framing::Length(0),
        (_, true, _) => Framing::Chunked,
        (_, false, Some(n)) => Framing::Length(n),
        (_, false, None) => {
            keep_alive = false;
            Framing::UntilEof
        }
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive,
    }))
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes of it left.
    Data(usize),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last (empty) chunk: trailers, then an empty line.
    Trailers,
}

/// A body as its bytes arrive.
#[derive(Debug)]
pub struct Body {
    state: State,
}

#[derive(Debug)]
enum State {
    Length(usize),
    Chunked(Chunk),
    UntilEof,
    Done,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilEof => State::UntilEof,
        };
        Body { state }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Takes what `buf` holds of the body, handing its data to `out`
    /// (chunk by chunk, or part of one); true once the body is complete.
    /// What follows the body is left in `buf`.
    pub fn take(&mut self, buf: &mut BytesMut, out: &mut impl FnMut(&[u8])) -> io::Result<bool> {
        loop {
            match &mut self.state {
                State::Done => return Ok(true),
                State::UntilEof => {
                    if !buf.is_empty() {
                        out(buf);
                        buf.clear();
                    }
                    return Ok(false);
                }
                State::Length(left) => {
                    let n = (*left).min(buf.len());
                    if n > 0 {
                        out(&buf[..n]);
                        buf.advance(n);
                    }
                    *left -= n;
                    if *left > 0 {
                        return Ok(false);
                    }
                    self.state = State::Done;
                }
                State::Chunked(Chunk::Trailers) => {
                    // Trailers, if any, end with an empty line.
                    let end = if buf.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        memchr::memmem::find(buf, b"\r\n\r\n").map(|at| at + 4)
                    };
                    match end {
                        Some(end) => {
                            buf.advance(end);
                            self.state = State::Done;
                        }
                        None if buf.len() > MAX_HEAD_BYTES => {
                            return Err(invalid("trailers with no end"));
                        }
                        None => return Ok(false),
                    }
                }
                State::Chunked(chunk) => {
                    if !step(chunk, buf, out)? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// The connection ended: fine only for a body that ends with it.
    pub fn at_eof(&mut self) -> io::Result<()> {
        match self.state {
            State::Done => Ok(()),
            State::UntilEof => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the engine closed the connection before the end of its answer",
            )),
        }
    }
}

/// One step through a chunked body, before its trailers: false when `buf`
/// holds too little to go on.
fn step(chunk: &mut Chunk, buf: &mut BytesMut, out: &mut impl FnMut(&[u8])) -> io::Result<bool> {
    match *chunk {
        Chunk::Size => match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((len, 0))) => {
                buf.advance(len);
                *chunk = Chunk::Trailers;
                Ok(true)
            }
            Ok(httparse::Status::Complete((len, size))) => {
                buf.advance(len);
                let size = usize::try_from(size)
                    .map_err(|_| invalid(format!("a chunk of {size} bytes")))?;
                *chunk = Chunk::Data(size);
                Ok(true)
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                Err(invalid("a chunk-size line with no end"))
            }
            Ok(httparse::Status::Partial) => Ok(false),
            Err(_) => Err(invalid("a malformed chunk size")),
        },
        Chunk::Data(left) => {
            let n = left.min(buf.len());
            if n == 0 {
                return Ok(false);
            }
            out(&buf[..n]);
            buf.advance(n);
            *chunk = if n == left {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - n)
            };
            Ok(true)
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(false);
            }
            if &buf[..2] != b"\r\n" {
                return Err(invalid("a chunk not ended by CRLF"));
            }
            buf.advance(2);
            *chunk = Chunk::Size;
            Ok(true)
        }
        Chunk::Trailers => Ok(false),
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

    /// The body of `wire` fed to a [`Body`] in two parts cut at `cut`:
    /// its data, whether it ended, and what was left after it.
    fn feed(framing: Framing, wire: &[u8], cut: usize) -> io::Result<(Vec<u8>, bool, Vec<u8>)> {
        let mut body = Body::new(framing);
        let mut data = Vec::new();
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut done = body.take(&mut buf, &mut |d| data.extend_from_slice(d))?;
        buf.extend_from_slice(&wire[cut..]);
        if !done {
            done = body.take(&mut buf, &mut |d| data.extend_from_slice(d))?;
        }
        Ok((data, done, buf.to_vec()))
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
        assert_eq!((h.status, h.framing, h.len), (404, Framing::Length(38), 46));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless told otherwise");
        let h = head("HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilEof, false));
    }

    #[test]
    fn a_head_is_read_whole_or_refused() {
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Ok(None)
        ));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let endless = format!("HTTP/1.1 200 OK\r\nX: {}", "y".repeat(MAX_HEAD_BYTES));
        assert!(parse_head(endless.as_bytes()).is_err());
    }

    #[test]
    fn chunks_split_anywhere_make_the_same_body() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\n\r\nNEXT";
        for cut in 0..=wire.len() {
            let (data, done, rest) = feed(Framing::Chunked, wire, cut).expect("well formed");
            assert!(done, "cut at {cut}");
            assert_eq!(data, b"hello, world", "cut at {cut}");
            assert_eq!(rest, b"NEXT", "cut at {cut}");
        }
    }

    #[test]
    fn lengths_and_the_connections_end() {
        let wire = b"0123456789NEXT";
        for cut in 0..=wire.len() {
            let (data, done, rest) = feed(Framing::Length(10), wire, cut).expect("length");
            assert!(done);
            assert_eq!(
                (data.as_slice(), rest.as_slice()),
                (&b"0123456789"[..], &b"NEXT"[..])
            );
        }
        let (data, done, _) = feed(Framing::UntilEof, wire, 3).expect("until EOF");
        assert!(!done && data == wire);
        let mut body = Body::new(Framing::UntilEof);
        assert!(body.at_eof().is_ok() && body.is_done());
        let mut body = Body::new(Framing::Chunked);
        assert!(body.at_eof().is_err(), "a chunked body cut short");
        let mut body = Body::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"ab"[..]);
        assert!(!body.take(&mut buf, &mut |_| {}).expect("part"));
        assert!(body.at_eof().is_err(), "a body shorter than its length");
    }

    #[test]
    fn trailers_and_bad_chunks() {
        let (data, done, rest) =
            feed(Framing::Chunked, b"2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n", 9).expect("trailers");
        assert!(done && data == b"ok" && rest.is_empty());
        for bad in [&b"zz\r\nok\r\n"[..], b"2\r\nokXX0\r\n\r\n"] {
            assert!(feed(Framing::Chunked, bad, bad.len()).is_err(), "{bad:?}");
        }
        // A chunk that never ends waits for more; its data so far is out.
        let (data, done, _) = feed(Framing::Chunked, b"a\r\n01234", 8).expect("partial");
        assert!(!done && data == b"01234");
    }
}
