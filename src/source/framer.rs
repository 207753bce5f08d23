//! From body bytes to lines, and from a line to an event: the engine writes
//! one JSON object and a newline per event, and HTTP chunk boundaries fall
//! anywhere.
//!
//! It owns the line buffer, its size limit, and the recovery of an event
//! from a line with garbage glued in front of it. It must not count, log,
//! deduplicate or enqueue: it hands lines to a [`Lines`] receiver (the
//! [`Sink`](super::Sink)) and says what it dropped.

use std::time::Instant;

use crate::event::Event;

/// Longest line the reader buffers while waiting for its newline. Real events
/// are a few KiB at most (labels included); anything longer is garbage.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Receives what the [`Framer`] cuts out of the stream.
pub trait Lines {
    /// A complete line, without its `\n`.
    fn line(&mut self, line: &[u8]);
    /// A line dropped for exceeding [`MAX_LINE_BYTES`].
    fn overflow(&mut self);
}

/// Splits the body into newline-terminated lines. The engine writes one JSON
/// object and a newline per event; chunk boundaries fall anywhere.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Inside an over-long line: skip to its newline.
    discarding: bool,
}

impl Framer {
    /// Feeds a chunk, handing every complete line to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut impl Lines) {
        while let Some(nl) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = chunk.split_at(nl);
            chunk = &rest[1..];
            if self.discarding {
                self.discarding = false;
                self.buf.clear();
                continue;
            }
            if self.buf.is_empty() {
                out.line(head);
            } else {
                self.buf.extend_from_slice(head);
                out.line(&self.buf);
                self.buf.clear();
            }
        }
        if self.discarding {
            return;
        }
        if self.buf.len() + chunk.len() > MAX_LINE_BYTES {
            self.buf.clear();
            self.discarding = true;
            out.overflow();
        } else {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// What is left when the stream ends: a truncated event, if anything.
    pub fn take_rest(&mut self) -> Option<Vec<u8>> {
        let discarding = std::mem::take(&mut self.discarding);
        let rest = std::mem::take(&mut self.buf);
        (!discarding && !rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// Decodes a line; if it is not an event, looks for one after garbage that
/// was glued in front of it. Returns the event, if any, and whether the line
/// was malformed.
pub fn decode_line(line: &[u8]) -> (Option<Event>, bool) {
    decode_line_read_at(line, Instant::now())
}

/// [`decode_line`], for a line read at `received`.
pub fn decode_line_read_at(line: &[u8], received: Instant) -> (Option<Event>, bool) {
    match Event::decode_read_at(line, received) {
        Ok(ev) => (Some(ev), false),
        Err(_) => {
            // An event object starts with one of these keys (legacy `status`
            // first on API ≤ 1.51, `Type` first without it). A few tries bound
            // the cost of a line full of braces.
            let starts = line
                .windows(2)
                .enumerate()
                .skip(1)
                .filter(|(_, w)| w == b"{\"")
                .map(|(i, _)| i)
                .take(8);
            for start in starts {
                if let Ok(ev) = Event::decode_read_at(&line[start..], received) {
                    return (Some(ev), true);
                }
            }
            (None, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        lines: Vec<Vec<u8>>,
        overflows: usize,
    }

    impl Lines for Collect {
        fn line(&mut self, line: &[u8]) {
            self.lines.push(line.to_vec());
        }
        fn overflow(&mut self) {
            self.overflows += 1;
        }
    }

    #[test]
    fn framer_handles_any_chunking() {
        let text = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        for cut in 0..text.len() {
            let mut f = Framer::default();
            let mut out = Collect::default();
            let (a, b) = text.split_at(cut);
            for part in [a, b] {
                f.push(part, &mut out);
            }
            assert_eq!(out.lines.len(), 3, "cut at {cut}");
            assert_eq!(out.lines[1], b"{\"b\":2}");
            assert_eq!(out.overflows, 0);
            assert!(f.take_rest().is_none());
        }
    }

    #[test]
    fn framer_keeps_truncated_rest_and_drops_overlong_lines() {
        let mut f = Framer::default();
        let mut out = Collect::default();
        f.push(b"{\"Type\":\"cont", &mut out);
        assert!(out.lines.is_empty());
        assert_eq!(f.take_rest().as_deref(), Some(&b"{\"Type\":\"cont"[..]));

        let big = vec![b'x'; MAX_LINE_BYTES + 1];
        f.push(&big, &mut out);
        f.push(b"yyy\n{}\n", &mut out);
        assert_eq!(out.overflows, 1);
        assert_eq!(out.lines, vec![b"{}".to_vec()]);
    }

    #[test]
    fn garbage_glued_before_an_event_is_malformed_but_the_event_survives() {
        let line =
            br#"garbage{"Type":"container","Action":"start","Actor":{"ID":"c"},"timeNano":9}"#;
        let (event, malformed) = decode_line(line);
        assert!(malformed);
        assert_eq!(
            event.map(|e| e.key.to_string()),
            Some("container.start".to_owned())
        );
        let (event, malformed) = decode_line(b"{{{{{{{{{{{{{{{{{{{{{\"\"\"");
        assert!(malformed && event.is_none());
    }
}
