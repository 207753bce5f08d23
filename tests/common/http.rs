//! Tiny HTTP/1.x client helpers (no extra crates): a one-shot `GET` over any
//! stream, and the pieces to read a streaming response by hand ([`ResponseHead`],
//! [`ChunkedReader`]), e.g. the engine's `/events`.

use std::io::{self, BufRead, BufReader, Read, Write};

/// Sends `GET path HTTP/1.0` on `stream` and reads the whole response (the
/// server closes the connection). Returns (status, body); a chunked body is
/// decoded.
pub fn http10_get<S: Read + Write>(
    stream: &mut S,
    host: &str,
    path: &str,
) -> io::Result<(u16, String)> {
    http10(stream, host, "GET", path, None)
}

/// Sends `POST path HTTP/1.0` with a JSON body on `stream`; as
/// [`http10_get`].
pub fn http10_post_json<S: Read + Write>(
    stream: &mut S,
    host: &str,
    path: &str,
    json: &str,
) -> io::Result<(u16, String)> {
    http10(stream, host, "POST", path, Some(json))
}

fn http10<S: Read + Write>(
    stream: &mut S,
    host: &str,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> io::Result<(u16, String)> {
    let head = json.map_or_else(String::new, |json| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            json.len()
        )
    });
    // One write: some servers read the request head in one go.
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: dockwarden-tests\r\n{head}\r\n{}",
        json.unwrap_or_default()
    );
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let mut reader = BufReader::new(&raw[..]);
    let head = read_response_head(&mut reader)?;
    let mut body = Vec::new();
    if head.is_chunked() {
        let mut chunks = ChunkedReader::new(reader);
        while let Some(chunk) = chunks.next_chunk()? {
            body.extend_from_slice(&chunk);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((head.status, String::from_utf8_lossy(&body).into_owned()))
}

/// Status line and headers of an HTTP response.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    /// Header (lower-cased name, value) pairs in order.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_crlf_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of an HTTP message",
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Reads an HTTP/1.x status line and headers (skipping `1xx` interim
/// responses other than `101`).
pub fn read_response_head<R: BufRead>(r: &mut R) -> io::Result<ResponseHead> {
    loop {
        let status_line = read_crlf_line(r)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| status_line.starts_with("HTTP/"))
            .ok_or_else(|| invalid(format!("not an HTTP status line: {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_crlf_line(r)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("malformed header line: {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        return Ok(ResponseHead { status, headers });
    }
}

/// Decodes an HTTP/1.1 `Transfer-Encoding: chunked` body one chunk at a time,
/// e.g. the engine's `/events` stream.
pub struct ChunkedReader<R> {
    inner: R,
    done: bool,
}

impl<R: BufRead> ChunkedReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, done: false }
    }

    /// The next chunk's data; `Ok(None)` after the final (zero-size) chunk.
    /// An I/O error (including `UnexpectedEof` when the connection is cut, or
    /// `WouldBlock`/`TimedOut` on a read timeout) is returned as is.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let line = read_crlf_line(&mut self.inner)?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size line: {line:?}")))?;
        if size == 0 {
            // Trailers up to the empty line.
            while !read_crlf_line(&mut self.inner)?.is_empty() {}
            self.done = true;
            return Ok(None);
        }
        let mut data = vec![0; size];
        self.inner.read_exact(&mut data)?;
        let end = read_crlf_line(&mut self.inner)?;
        if !end.is_empty() {
            return Err(invalid(format!(
                "chunk of {size} bytes not followed by CRLF but {end:?}"
            )));
        }
        Ok(Some(data))
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}
