//! The module layering of `src/`, checked: every `crate::` path points down
//! the layers below, so no two modules import each other, and handlers
//! never know the rules module. A new top-level module must be given a
//! layer here. Also: no source file over 500 lines unless its top comment
//! says why ("This file is long because …").

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use the modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &[
        "clock",
        "lock",
        "json",
        "event",
        "config",
        "mem",
        "test_files",
    ],
    &["metrics", "docker"],
    &["internal_events"],
    &["audit", "containers", "notify", "progress"],
    &["history"],
    &["handlers"],
    &["rules"],
    &["dispatch"],
    &["resync", "source", "reload"],
    &["http"],
    &["app", "status", "health", "replay"],
];

const MAX_LINES: usize = 500;

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/heal/mod.rs` → `heal`; `src/app.rs` → `app`; None for the crate
/// roots (`lib.rs`, `main.rs`), which sit above everything.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src/");
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The top-level modules a file names with `crate::…`, outside comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn every_use_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let mut problems = Vec::new();
    let mut edges = 0;
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(mine) = layer(&module) else {
            problems.push(format!(
                "{}: module `{module}` has no layer in tests/layering.rs",
                file.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).expect("readable source");
        for used in uses(&text) {
            if used == module {
                continue;
            }
            edges += 1;
            match layer(&used) {
                Some(theirs) if theirs < mine => {}
                Some(theirs) => problems.push(format!(
                    "{}: `{module}` (layer {mine}) uses `crate::{used}` (layer {theirs}): not below it",
                    file.display()
                )),
                None => problems.push(format!(
                    "{}: uses `crate::{used}`, which has no layer",
                    file.display()
                )),
            }
        }
    }
    assert!(
        edges > 30,
        "only {edges} cross-module uses found: is the scan broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn long_files_say_why() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("readable source");
        let lines = text.lines().count();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join(" ");
        if !header.contains("//!") {
            problems.push(format!("{}: no `//!` comment at the top", file.display()));
        }
        if lines > MAX_LINES && !header.contains("This file is long because") {
            problems.push(format!(
                "{}: {lines} lines (over {MAX_LINES}) and its top comment does not say why",
                file.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scan_sees_uses_and_skips_comments() {
    let text = "use crate::event::Event;\n// crate::app is only named here\nlet x = crate::clock::unix_nanos(); // crate::http\n";
    let got: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(got, ["clock", "event"]);
}
