//! The HTTP/1.x framing tracker behind [`FaultProxy`](super::FaultProxy):
//! [`HttpFramer`] follows one direction of a proxied connection, without
//! buffering or changing the bytes, so the proxy can inject data at a chunk
//! boundary.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::lock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a message head (start line + headers) into `line`.
    Head,
    /// A body of this many more bytes.
    Fixed(u64),
    /// Reading a chunk-size line into `line` (a boundary while `line` is empty).
    ChunkSize,
    /// This many more bytes of chunk data.
    ChunkData(u64),
    /// Reading the CRLF after chunk data into `line`.
    ChunkDataEnd,
    /// Reading trailer lines after the last chunk into `line`.
    Trailer,
    /// Unframed from here on (upgraded connection, body until EOF, or
    /// something this tracker does not understand).
    Raw,
}

const MAX_HEAD: usize = 1 << 20;

/// Follows the HTTP/1.x message framing of one direction of a connection,
/// without buffering or changing the bytes, to tell where chunk boundaries
/// are. (Public only so the harness can test it.)
pub struct HttpFramer {
    role: Role,
    state: State,
    line: Vec<u8>,
    /// For each request on the connection, in order: is it a HEAD request?
    /// The request side pushes, the response side pops.
    methods: Arc<Mutex<VecDeque<bool>>>,
}

impl HttpFramer {
    pub fn request(methods: Arc<Mutex<VecDeque<bool>>>) -> Self {
        Self {
            role: Role::Request,
            state: State::Head,
            line: Vec::new(),
            methods,
        }
    }

    pub fn response(methods: Arc<Mutex<VecDeque<bool>>>) -> Self {
        Self {
            role: Role::Response,
            state: State::Head,
            line: Vec::new(),
            methods,
        }
    }

    /// True between two chunks of a chunked body (including right after the
    /// head): an extra chunk may be inserted here.
    pub fn at_chunk_boundary(&self) -> bool {
        self.state == State::ChunkSize && self.line.is_empty()
    }

    /// True anywhere inside a chunked body before its last chunk.
    pub fn in_chunked_body(&self) -> bool {
        matches!(
            self.state,
            State::ChunkSize | State::ChunkData(_) | State::ChunkDataEnd
        )
    }

    /// True once the stream is no longer framed (upgrade, read-until-EOF body,
    /// or unparseable data).
    pub fn is_raw(&self) -> bool {
        self.state == State::Raw
    }

    /// Observes a prefix of `data` up to the next state change and returns its
    /// length (at least 1 if `data` is not empty).
    pub fn advance(&mut self, data: &[u8]) -> usize {
        if data.is_empty() {
            return 0;
        }
        match self.state {
            State::Raw => data.len(),
            State::Fixed(n) => {
                let k = n.min(data.len() as u64);
                self.state = if k == n {
                    State::Head
                } else {
                    State::Fixed(n - k)
                };
                k as usize
            }
            State::ChunkData(n) => {
                let k = n.min(data.len() as u64);
                self.state = if k == n {
                    State::ChunkDataEnd
                } else {
                    State::ChunkData(n - k)
                };
                k as usize
            }
            State::Head => {
                // Tolerate stray CRLFs between messages.
                if self.line.is_empty() && (data[0] == b'\r' || data[0] == b'\n') {
                    return 1;
                }
                for (i, &b) in data.iter().enumerate() {
                    self.line.push(b);
                    if b == b'\n'
                        && (self.line.ends_with(b"\r\n\r\n") || self.line.ends_with(b"\n\n"))
                    {
                        let head = std::mem::take(&mut self.line);
                        self.state = self.after_head(&head);
                        return i + 1;
                    }
                    if self.line.len() > MAX_HEAD {
                        self.line.clear();
                        self.state = State::Raw;
                        return i + 1;
                    }
                }
                data.len()
            }
            State::ChunkSize | State::ChunkDataEnd | State::Trailer => {
                let Some(i) = data.iter().position(|&b| b == b'\n') else {
                    self.line.extend_from_slice(data);
                    if self.line.len() > MAX_HEAD {
                        self.line.clear();
                        self.state = State::Raw;
                    }
                    return data.len();
                };
                self.line.extend_from_slice(&data[..=i]);
                let line = std::mem::take(&mut self.line);
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                self.state = match self.state {
                    State::ChunkSize => {
                        let size = text.split(';').next().unwrap_or("").trim();
                        match u64::from_str_radix(size, 16) {
                            Ok(0) => State::Trailer,
                            Ok(n) => State::ChunkData(n),
                            Err(_) => State::Raw,
                        }
                    }
                    State::ChunkDataEnd if text.is_empty() => State::ChunkSize,
                    State::ChunkDataEnd => State::Raw,
                    State::Trailer if text.is_empty() => State::Head,
                    other => other, // another trailer line
                };
                i + 1
            }
        }
    }

    fn after_head(&mut self, head: &[u8]) -> State {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.lines();
        let start = lines.next().unwrap_or("");
        let mut chunked = false;
        let mut length: Option<u64> = None;
        let mut upgrade = false;
        for l in lines {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_ascii_lowercase();
            match name.as_str() {
                "transfer-encoding" => chunked |= value.contains("chunked"),
                "content-length" => length = value.parse().ok(),
                "upgrade" => upgrade = true,
                "connection" => upgrade |= value.contains("upgrade"),
                _ => {}
            }
        }
        match self.role {
            Role::Request => {
                let method = start.split_whitespace().next().unwrap_or("");
                lock(&self.methods).push_back(method.eq_ignore_ascii_case("HEAD"));
                if upgrade || method.eq_ignore_ascii_case("CONNECT") {
                    State::Raw
                } else if chunked {
                    State::ChunkSize
                } else {
                    match length {
                        Some(n) if n > 0 => State::Fixed(n),
                        _ => State::Head,
                    }
                }
            }
            Role::Response => {
                let status: u16 = start
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if status == 101 {
                    return State::Raw;
                }
                if (100..200).contains(&status) {
                    return State::Head; // interim response; the real one follows
                }
                let head_request = lock(&self.methods).pop_front().unwrap_or(false);
                if head_request || status == 204 || status == 304 {
                    State::Head
                } else if chunked {
                    State::ChunkSize
                } else {
                    match length {
                        Some(0) => State::Head,
                        Some(n) => State::Fixed(n),
                        None => State::Raw, // body until the connection closes
                    }
                }
            }
        }
    }
}
