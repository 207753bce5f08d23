//! Problems found in a rules file, each pinned to a place in it.
//!
//! Loading collects every problem instead of stopping at the first, so an
//! operator fixes a file in one pass. Positions are byte spans while parsing
//! and become `LINE:COL` (both 1-based, columns in characters) for display.

use std::fmt;
use std::ops::Range;

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// A problem with the file as a whole (unreadable, say).
    pub fn whole_file(file: &str, message: String) -> Self {
        Diagnostics {
            file: file.to_owned(),
            items: vec![Diagnostic {
                line: 1,
                col: 1,
                message,
            }],
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, d.line, d.col, d.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Collects problems as byte spans while a file is walked.
#[derive(Debug, Default)]
pub struct Collector {
    items: Vec<(Range<usize>, String)>,
}

impl Collector {
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.items.push((span, message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Resolves spans to lines and columns, sorted by position.
    pub fn finish(mut self, file: &str, source: &str) -> Diagnostics {
        self.items.sort_by_key(|(span, _)| span.start);
        let items = self
            .items
            .into_iter()
            .map(|(span, message)| {
                let (line, col) = line_col(source, span.start);
                Diagnostic { line, col, message }
            })
            .collect();
        Diagnostics {
            file: file.to_owned(),
            items,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_in_chars() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        // "é" is two bytes; the "=" after it is the 4th character.
        assert_eq!(line_col(src, 10), (2, 4));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn display_is_file_line_col_message() {
        let mut c = Collector::default();
        c.error(6..7, "second");
        c.error(0..1, "first");
        let d = c.finish("r.toml", "a = 1\nb = 2\n");
        assert_eq!(d.to_string(), "r.toml:1:1: first\nr.toml:2:1: second");
    }
}
