//! Every shipped rules file parses, and `dockwarden check` reports problems
//! the way the README says. No Docker needed: `check` never touches it.

use std::path::Path;
use std::process::Command;

use dockwarden::handlers::Registry;
use dockwarden::rules::Config;

fn rules_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

#[test]
fn every_file_in_rules_loads() {
    let mut seen = 0;
    for entry in std::fs::read_dir(rules_dir()).expect("rules/ exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        seen += 1;
        if let Err(d) = Config::load_file(&path, &Registry::builtin()) {
            panic!("{} does not load:\n{d}", path.display());
        }
        let out = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
            .arg("check")
            .arg(&path)
            .output()
            .expect("run dockwarden check");
        assert!(
            out.status.success(),
            "check {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(": ok, ") && stdout.contains(" rules, handlers: "),
            "{stdout}"
        );
    }
    assert!(seen >= 1, "no rules files found in rules/");
}

#[test]
fn check_lists_every_problem_with_line_and_col_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("dw-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[rule]]\nname = \"x\"\non = [\"container.die\"]\nhandler = \"no_such_handler\"\ncolour = \"blue\"\n",
    )
    .expect("write rules");
    let out = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .arg("check")
        .arg(&file)
        .output()
        .expect("run dockwarden check");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = file.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{f}:4:11: unknown handler \"no_such_handler\"")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{f}:5:1: unknown key `colour`")),
        "{stderr}"
    );
}

/// The bearer token files of `[server]` are checked where they are named:
/// a missing one, or a token too short, is a problem at its line, and `run`
/// exits 2 as for any bad rules file (not 1 after starting).
#[test]
fn check_reads_the_token_files_and_says_where_they_fail() {
    let dir = std::env::temp_dir().join(format!("dw-check-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let short = dir.join("short-token");
    std::fs::write(&short, "0123456789\n").expect("write token");
    let file = dir.join("rules.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\ntoken_file = \"{}\"\napi_token_file = \"/nonexistent/api-token\"\n",
            short.display()
        ),
    )
    .expect("write rules");
    let f = file.display().to_string();
    for args in [vec!["check"], vec!["run", "--dry-run", "--rules"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
            .args(&args)
            .arg(&file)
            .output()
            .expect("run dockwarden");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{f}:2:14: the token in `token_file` \"{}\" must be at least 16 characters",
                short.display()
            )),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "{f}:3:18: cannot read `api_token_file` \"/nonexistent/api-token\""
            )),
            "{args:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .args(["check", "/nonexistent/rules.toml"])
        .output()
        .expect("run dockwarden check");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("/nonexistent/rules.toml:1:1: cannot read rules file:"),
        "{stderr}"
    );
}
