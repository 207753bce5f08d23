//! Histories and the event ring of the status API against the real
//! engine: a crash loop's story through restarts, a recreate and the
//! breaker; a destroyed container's history, kept for a while and then
//! gone; `/api/v1/events` and its filters; `dockwarden status NAME`.
//! Every answer is checked against `docs/api.yaml` (`common::api`).

mod common;

use std::time::Duration;

use common::api::{API_TOKEN, get_json, request, status_cli, with_tokens, with_tokens_and};
use common::{
    Cleanup, TempDir, docker_ok, require_docker, require_test_image, test_image, unique, wait_until,
};
use serde_json::Value;

fn entries(history: &Value) -> Vec<Value> {
    history["entries"].as_array().cloned().unwrap_or_default()
}

fn inspect_id(name: &str) -> String {
    docker_ok(&["inspect", "--format", "{{.Id}}", name])
        .trim()
        .to_owned()
}

/// Acceptance 2 and 6: after a crash loop that ends in a recreate and an
/// open breaker, the history shows every die with its exit code, each
/// restart with its attempt, the recreate (and the history going on under
/// the new ID), and the breaker opening, in order; `dockwarden status
/// NAME` prints it; `/api/v1/events` filters the same story.
#[test]
fn a_crash_loop_reads_in_order_across_the_recreate() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("dwt-hist");
    let tag = unique("hist");
    let rule = format!(
        r#"
[[rule]]
name = "heal-hist"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.hist" = "{tag}" }}
exit_code = "nonzero"
[rule.with]
max_restarts = 3
window_secs = 60
then = "recreate"
backoff_initial_ms = 200
backoff_max_secs = 1
"#
    );
    let dw = with_tokens(&dir, &rule);
    let since = dockwarden::clock::rfc3339_nanos(dockwarden::clock::unix_nanos());
    let name = clean.container(unique("hist-loop"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("dwt.hist={tag}"),
        &test_image(),
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    let old_id = inspect_id(&name);
    let path = format!("/api/v1/containers/{name}/history");
    assert!(
        wait_until(Duration::from_secs(60), || {
            entries(&get_json(&dw, &path))
                .iter()
                .any(|e| e["key"] == "dockwarden.breaker_open")
        }),
        "the breaker never opened: {}",
        get_json(&dw, &path)
    );
    let new_id = inspect_id(&name);
    assert_ne!(old_id, new_id, "recreated");
    let history = get_json(&dw, &path);
    assert_eq!(history["id"], new_id.as_str(), "{history}");
    assert_eq!(history["gone"], false);
    let all = entries(&history);
    let story: Vec<String> = all
        .iter()
        .filter(|e| {
            matches!(
                e["key"].as_str(),
                Some(
                    "container.die"
                        | "dockwarden.restart"
                        | "dockwarden.recreate"
                        | "dockwarden.breaker_open"
                )
            )
        })
        .map(|e| {
            let d = &e["details"];
            let who = if e["id"] == old_id.as_str() {
                "old"
            } else if e["id"] == new_id.as_str() {
                "new"
            } else {
                "?"
            };
            match e["key"].as_str().unwrap_or_default() {
                "container.die" => format!("die {} {who}", d["exit_code"]),
                "dockwarden.restart" => format!("restart {} {}", d["attempt"], d["result"]),
                "dockwarden.recreate" => format!("recreate {}", d["result"]),
                other => other.to_owned(),
            }
        })
        .collect();
    assert_eq!(
        story,
        [
            "die 3 old",
            "restart 1 \"ok\"",
            "die 3 old",
            "restart 2 \"ok\"",
            "die 3 old",
            "restart 3 \"ok\"",
            "die 3 old",
            "recreate \"ok\"",
            "die 3 new",
            "dockwarden.breaker_open",
        ],
        "{history}"
    );
    // The history goes on under the new ID: its create and start.
    let new_ones: Vec<&str> = all
        .iter()
        .filter(|e| e["id"] == new_id.as_str())
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert!(
        new_ones.starts_with(&["container.create", "container.start"]),
        "{new_ones:?}"
    );
    // Times never go backwards.
    let times: Vec<&str> = all.iter().filter_map(|e| e["time"].as_str()).collect();
    let parsed: Vec<i64> = times
        .iter()
        .map(|t| dockwarden::clock::parse_rfc3339(t).expect("RFC 3339"))
        .collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // `limit` keeps the newest.
    let last2 = get_json(&dw, &format!("{path}?limit=2"));
    assert_eq!(entries(&last2), all[all.len() - 2..].to_vec());

    // The container's entry agrees: the rule, the open breaker, the last
    // action.
    let one = get_json(&dw, &format!("/api/v1/containers/{name}"));
    assert_eq!(one["heal"]["rule"], "heal-hist", "{one}");
    assert_eq!(one["heal"]["breaker"], "open", "{one}");
    assert_eq!(one["heal"]["last_action"]["kind"], "recreate", "{one}");

    // `dockwarden status NAME`: the row, then the history, newest last.
    let token = dir.path().join("api.token");
    let url = dw.base_url();
    let (code, out, err) = status_cli(&[
        "--url",
        &url,
        "--token-file",
        token.to_str().expect("utf-8"),
        &name,
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("TIME"))
        .unwrap_or_else(|| panic!("no history in:\n{out}"));
    let printed: Vec<&str> = lines[header + 1..]
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let keys: Vec<&str> = all.iter().filter_map(|e| e["key"].as_str()).collect();
    assert_eq!(printed, keys, "{out}");
    assert!(
        out.contains("exit_code=3") && out.contains("attempt=2"),
        "{out}"
    );
    assert!(
        lines[header + 1..]
            .last()
            .is_some_and(|l| l.contains("dockwarden.breaker_open")),
        "newest last:\n{out}"
    );

    // The event ring: the same dies, filtered by key and time.
    let dies = get_json(
        &dw,
        &format!("/api/v1/events?since={since}&key=container.die"),
    );
    let ours: Vec<&Value> = dies
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["attributes"]["name"] == name.as_str())
        .collect();
    assert_eq!(ours.len(), 5, "{dies}");
    assert!(
        ours.iter()
            .all(|e| e["key"] == "container.die" && e["attributes"]["exitCode"] == "3")
    );
    let own = get_json(
        &dw,
        &format!("/api/v1/events?since={since}&key=dockwarden.re*&limit=2"),
    );
    let own: Vec<&Value> = own.as_array().expect("a list").iter().collect();
    assert_eq!(
        own.iter()
            .map(|e| e["key"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["dockwarden.restart", "dockwarden.recreate"],
        "the newest two, oldest first"
    );
    assert_eq!(own[0]["fields"]["attempt"], 3);
    let later = get_json(&dw, "/api/v1/events?since=2999-01-01T00:00:00Z");
    assert_eq!(later, Value::Array(Vec::new()));
    for (query, named) in [
        ("since=yesterday", "`since`"),
        ("limit=0", "`limit`"),
        ("key=", "`key`"),
        ("colour=red", "`colour`"),
    ] {
        let (status, _, body) = request(
            &dw,
            "GET",
            &format!("/api/v1/events?{query}"),
            Some(API_TOKEN),
        );
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(named), "{query}: {body}");
    }
    let (status, _, body) = request(&dw, "GET", &format!("{path}?limit=x"), Some(API_TOKEN));
    assert!(status == 400 && body.contains("`limit`"), "{body}");
}

/// Acceptance 3: a destroyed container's history is still served (by
/// name, marked gone), and is gone after `history_keep_secs`.
#[test]
fn a_destroyed_containers_history_is_kept_then_dropped() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("dwt-hist");
    let dw = with_tokens_and(&dir, "[api]\nhistory_keep_secs = 6\n", "");
    let name = clean.container(unique("hist-gone"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        &test_image(),
        "sh",
        "-c",
        "exit 7",
    ]);
    let id = inspect_id(&name);
    let path = format!("/api/v1/containers/{name}/history");
    let keys = |h: &Value| -> Vec<String> {
        entries(h)
            .iter()
            .filter_map(|e| e["key"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || keys(&get_json(&dw, &path))
            .contains(&"container.die".to_owned())),
        "{}",
        get_json(&dw, &path)
    );
    docker_ok(&["rm", &name]);
    let mut history = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            history = get_json(&dw, &path);
            history["gone"] == true
        }),
        "{history}"
    );
    assert_eq!(
        keys(&history),
        [
            "container.create",
            "container.start",
            "container.die",
            "container.destroy"
        ],
        "{history}"
    );
    assert!(history["id"].is_null());
    assert!(entries(&history).iter().all(|e| e["id"] == id.as_str()));
    assert_eq!(entries(&history)[2]["details"]["exit_code"], 7);
    // Its entry is gone from the list; by name, its history still answers.
    let (status, _, _) = request(
        &dw,
        "GET",
        &format!("/api/v1/containers/{name}"),
        Some(API_TOKEN),
    );
    assert_eq!(status, 404);
    let token = dir.path().join("api.token");
    let (code, out, err) = status_cli(&[
        "--url",
        &dw.base_url(),
        "--token-file",
        token.to_str().expect("utf-8"),
        &name,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("TIME") && out.contains("container.destroy"),
        "{out}"
    );
    // After history_keep_secs: gone, 404 with a reason.
    assert!(
        wait_until(Duration::from_secs(20), || request(
            &dw,
            "GET",
            &path,
            Some(API_TOKEN)
        )
        .0 == 404),
        "still served"
    );
    let (_, _, body) = request(&dw, "GET", &path, Some(API_TOKEN));
    assert!(body.contains("no kept history"), "{body}");
}
