//! The Prometheus text format: [`Metrics`] parses an exposition such as
//! dockwarden's `/metrics` into [`Sample`]s and sums them by name and labels.

use std::fmt::Write as _;

/// One sample line of a Prometheus exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// True if every `(name, value)` pair is among its labels.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}

/// A parsed Prometheus text-format exposition (e.g. dockwarden's `/metrics`).
#[derive(Debug, Clone)]
pub struct Metrics {
    raw: String,
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the text format; panics naming the line if it is malformed.
    pub fn parse(text: &str) -> Self {
        Self::try_parse(text).unwrap_or_else(|e| panic!("{e}\nwhole exposition:\n{text}"))
    }

    pub fn try_parse(text: &str) -> Result<Self, String> {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line)
                .map_err(|e| format!("malformed metrics line {}: {e}: {line:?}", i + 1))?;
            samples.push(sample);
        }
        Ok(Self {
            raw: text.to_string(),
            samples,
        })
    }

    /// Sum of the values of the samples called `name` whose labels include
    /// every given pair; 0.0 if there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|s| s.value).sum()
    }

    /// The samples called `name` whose labels include every given pair.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.has_labels(labels))
    }

    /// True if any sample is called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices().peekable();
        loop {
            while chars
                .next_if(|(_, c)| c.is_whitespace() || *c == ',')
                .is_some()
            {}
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated label set".into());
            };
            if c == '}' {
                chars.next();
                rest = &after_brace[start + 1..];
                break;
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
                key.push(c);
            }
            if key.is_empty() {
                return Err("empty label name".into());
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('=') {
                return Err(format!("label {key:?} has no '='"));
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("value of label {key:?} is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated value of label {key:?}")),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("unterminated value of label {key:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            labels.push((key, value));
        }
    }
    let value_str = rest
        .split_whitespace()
        .next()
        .ok_or("no value after the name and labels")?;
    let value = match value_str {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse::<f64>()
            .map_err(|e| format!("bad value {v:?}: {e}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Renders samples back as text (handy in assertion messages).
pub fn describe_samples<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> String {
    let mut out = String::new();
    for s in samples {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let _ = writeln!(out, "{}{{{}}} {}", s.name, labels.join(","), s.value);
    }
    out
}
