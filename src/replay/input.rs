//! Where a replay's events come from: files of JSON lines, as `docker events
//! --format '{{json .}}'` prints them or as `GET /events` streams them (the
//! same Message object; the legacy `status`/`id`/`from` fields are ignored
//! by the decoder), or `-` for stdin; several inputs in the order given.
//!
//! Each line is judged by [`Event::decode`], the decoder the stream reader
//! uses, so replay accepts and refuses exactly what a running dockwarden
//! does. A line that is not an event is a [`Problem`] (`FILE:LINE: why`) and
//! skipped; an input that cannot be read is a problem naming it. Neither
//! stops the others.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::report::{Problem, Totals};
use crate::event::Event;

/// Reads every input in order and hands each event to `each`, counting the
/// lines in `totals` and recording what was wrong in `problems`.
pub(super) fn read_all(
    inputs: &[impl AsRef<Path>],
    totals: &mut Totals,
    problems: &mut Vec<Problem>,
    mut each: impl FnMut(Event),
) {
    for input in inputs {
        let path = input.as_ref();
        let name = path.display().to_string();
        let opened: std::io::Result<Box<dyn Read>> = if name == "-" {
            Ok(Box::new(std::io::stdin().lock()))
        } else {
            std::fs::File::open(path).map(|f| Box::new(f) as Box<dyn Read>)
        };
        match opened {
            Ok(r) => read_one(&name, BufReader::new(r), totals, problems, &mut each),
            Err(e) => {
                totals.unreadable += 1;
                problems.push(Problem {
                    input: name,
                    line: None,
                    error: format!("cannot read: {e}"),
                });
            }
        }
    }
}

/// One input, line by line (a line need not be UTF-8 to be judged).
fn read_one(
    name: &str,
    mut reader: impl BufRead,
    totals: &mut Totals,
    problems: &mut Vec<Problem>,
    each: &mut impl FnMut(Event),
) {
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                totals.unreadable += 1;
                problems.push(Problem {
                    input: name.to_owned(),
                    line: Some(number + 1),
                    error: format!("cannot read further: {e}"),
                });
                return;
            }
        }
        number += 1;
        totals.lines += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            totals.blank += 1;
            continue;
        }
        match Event::decode(text) {
            Ok(event) => {
                totals.events += 1;
                each(event);
            }
            Err(e) => {
                totals.malformed += 1;
                problems.push(Problem {
                    input: name.to_owned(),
                    line: Some(number),
                    error: e.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_named_and_the_rest_counts() {
        let text = concat!(
            r#"{"status":"die","id":"c1","from":"img","Type":"container","Action":"die","Actor":{"ID":"c1","Attributes":{"exitCode":"3","name":"a"}},"scope":"local","time":1,"timeNano":1000000001}"#,
            "\n\n",
            "not json\n",
            r#"{"Type":"container","Actor":{"ID":"c1"},"timeNano":5}"#,
            "\r\n",
            r#"{"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":"c1"}},"timeNano":7}"#,
        );
        let mut totals = Totals::default();
        let mut problems = Vec::new();
        let mut keys = Vec::new();
        read_one(
            "rec.jsonl",
            text.as_bytes(),
            &mut totals,
            &mut problems,
            &mut |e: Event| keys.push(e.key.to_string()),
        );
        assert_eq!(keys, ["container.die", "network.connect"]);
        assert_eq!(
            (totals.lines, totals.events, totals.malformed, totals.blank),
            (5, 2, 2, 1)
        );
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("rec.jsonl:3: not a JSON event object"),
            "{lines:?}"
        );
        assert_eq!(lines[1], "rec.jsonl:4: event has no Action");
    }

    #[test]
    fn a_missing_file_is_named_and_the_others_are_read() {
        let dir = std::env::temp_dir().join(format!("dw-replay-input-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let good = dir.join("good.jsonl");
        let line = r#"{"Type":"container","Action":"start","Actor":{"ID":"c1"},"timeNano":1}"#;
        assert!(std::fs::write(&good, format!("{line}\n")).is_ok());
        let missing = dir.join("missing.jsonl");
        let mut totals = Totals::default();
        let mut problems = Vec::new();
        let mut n = 0;
        read_all(&[&missing, &good], &mut totals, &mut problems, |_| n += 1);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((n, totals.unreadable), (1, 1));
        assert_eq!(problems[0].line, None);
        assert!(
            problems[0]
                .to_string()
                .contains("missing.jsonl: cannot read:")
        );
    }
}
