//! The read-only status API against the real engine: `/api/v1/containers`
//! agrees with `docker inspect`, its filters narrow the list, and only the
//! right bearer tokens read it.

mod common;

use std::time::Duration;

use common::api::{API_TOKEN, RELOAD_TOKEN, get_json, request, status_cli, with_tokens};
use common::{
    Cleanup, Dockwarden, TempDir, docker_ok, require_docker, require_test_image, test_image,
    unique, wait_until,
};
use serde_json::Value;

fn inspect(name: &str) -> Value {
    let text = docker_ok(&["inspect", name]);
    let all: Value = serde_json::from_str(&text).expect("inspect JSON");
    all[0].clone()
}

/// What the API and `docker inspect` must agree on, as the API names it.
fn engine_view(name: &str) -> Value {
    let i = inspect(name);
    let health = i["State"]["Health"]["Status"]
        .as_str()
        .unwrap_or("none")
        .to_owned();
    serde_json::json!({
        "name": name,
        "id": i["Id"],
        "state": i["State"]["Status"],
        "health": health,
        "exit_code": i["State"]["ExitCode"],
        "restart_count": i["RestartCount"],
    })
}

fn api_view(entry: &Value) -> Value {
    serde_json::json!({
        "name": entry["name"],
        "id": entry["id"],
        "state": entry["state"],
        "health": entry["health"],
        "exit_code": entry["exit_code"],
        "restart_count": entry["restart_count"],
    })
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn run(args: &[&str]) {
    docker_ok(&[&["run", "-d"], args].concat());
}

/// Acceptance 1 (reduced): running, exited with 3, crash-looping under a
/// restart rule, OOM-killed and unhealthy containers all read as
/// `docker inspect` says.
#[test]
fn containers_agree_with_docker_inspect() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("dwt-api");
    let tag = unique("api");
    let rule = format!(
        r#"
[[rule]]
name = "heal-api"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.api.heal" = "{tag}" }}
exit_code = "nonzero"
[rule.with]
max_restarts = 2
window_secs = 60
backoff_initial_ms = 200
then = "none"
"#
    );
    let dw = with_tokens(&dir, &rule);
    let image = test_image();
    let label = format!("dwt.api={tag}");
    let heal_label = format!("dwt.api.heal={tag}");
    let running = clean.container(unique("api-running"));
    let exited = clean.container(unique("api-exited"));
    let crashing = clean.container(unique("api-crashing"));
    let oom = clean.container(unique("api-oom"));
    let unhealthy = clean.container(unique("api-unhealthy"));
    run(&[
        "--name", &running, "--label", &label, &image, "sleep", "300",
    ]);
    run(&[
        "--name", &exited, "--label", &label, &image, "sh", "-c", "exit 3",
    ]);
    run(&[
        "--name",
        &crashing,
        "--label",
        &label,
        "--label",
        &heal_label,
        &image,
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    run(&[
        "--name",
        &oom,
        "--label",
        &label,
        "--memory",
        "8m",
        "--memory-swap",
        "8m",
        &image,
        "sh",
        "-c",
        "x=a; while :; do x=$x$x; done",
    ]);
    run(&[
        "--name",
        &unhealthy,
        "--label",
        &label,
        "--health-cmd",
        "false",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        &image,
        "sleep",
        "300",
    ]);
    // Settled: the OOM kill done, the probe failed, the crash loop given up
    // after its two restarts.
    assert!(
        wait_until(Duration::from_secs(60), || {
            inspect(&oom)["State"]["OOMKilled"] == true
                && inspect(&unhealthy)["State"]["Health"]["Status"] == "unhealthy"
                && inspect(&exited)["State"]["Status"] == "exited"
        }),
        "the containers did not reach their states"
    );
    let all = [&running, &exited, &crashing, &oom, &unhealthy];
    let path = format!("/api/v1/containers?label=dwt.api%3D{tag}");
    let mut last = (Value::Null, Value::Null);
    let agree = wait_until(Duration::from_secs(60), || {
        let list = get_json(&dw, &path);
        let mut api: Vec<Value> = list
            .as_array()
            .expect("a list")
            .iter()
            .map(api_view)
            .collect();
        api.sort_by_key(|v| v["name"].as_str().unwrap_or("").to_owned());
        let mut engine: Vec<Value> = all.iter().map(|n| engine_view(n)).collect();
        engine.sort_by_key(|v| v["name"].as_str().unwrap_or("").to_owned());
        let crash = inspect(&crashing);
        let settled = crash["State"]["Status"] == "exited" && engine == api;
        last = (Value::Array(api), Value::Array(engine));
        settled
            && dw.metrics().get(
                "dockwarden_container_restarts_total",
                &[("name", &crashing)],
            ) >= 2.0
    });
    assert!(
        agree,
        "the API and docker inspect disagree:\napi:    {}\nengine: {}",
        last.0, last.1
    );

    let one = |name: &str| get_json(&dw, &format!("/api/v1/containers/{name}"));
    let e = one(&exited);
    assert_eq!(e["exit_code"], 3, "{e}");
    assert_eq!(e["last_failure"]["kind"], "exit", "{e}");
    assert_eq!(e["last_failure"]["exit_code"], 3, "{e}");
    assert!(
        e["started_at"].is_string() && e["finished_at"].is_string(),
        "{e}"
    );
    let o = one(&oom);
    assert!(o["oom_kills"].as_u64().unwrap_or(0) >= 1, "{o}");
    let u = one(&unhealthy);
    assert_eq!(u["last_failure"]["kind"], "unhealthy", "{u}");
    let c = one(&crashing);
    assert_eq!(c["heal"]["last_action"]["kind"], "restart", "{c}");
    assert_eq!(c["heal"]["last_action"]["result"], "ok", "{c}");
    let r = one(&running);
    assert_eq!(
        (r["state"].as_str(), r["exit_code"].as_i64()),
        (Some("running"), Some(0)),
        "{r}"
    );
    assert!(
        r["finished_at"].is_null() && r["last_failure"].is_null(),
        "{r}"
    );
}

/// `?state=` and `?name=` narrow the list; containers that existed before
/// the sidecar started are in it.
#[test]
fn filters_narrow_the_list() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("dwt-api");
    let tag = unique("apif");
    let label = format!("dwt.api={tag}");
    let image = test_image();
    let up = clean.container(format!("{tag}-up"));
    let down = clean.container(format!("{tag}-down"));
    run(&["--name", &up, "--label", &label, &image, "sleep", "300"]);
    run(&["--name", &down, "--label", &label, &image, "true"]);
    assert!(wait_until(
        Duration::from_secs(20),
        || inspect(&down)["State"]["Status"] == "exited"
    ));
    let dw = with_tokens(&dir, "");
    let by_label = format!("/api/v1/containers?label=dwt.api%3D{tag}");
    let mut both = vec![up.clone(), down.clone()];
    both.sort();
    assert!(
        wait_until(Duration::from_secs(20), || names(&get_json(&dw, &by_label))
            == both),
        "{}",
        get_json(&dw, &by_label)
    );
    let list = |q: &str| names(&get_json(&dw, &format!("{by_label}&{q}")));
    assert_eq!(list("state=running"), vec![up.clone()]);
    assert_eq!(list("state=exited"), vec![down.clone()]);
    assert_eq!(list("state=paused"), Vec::<String>::new());
    assert_eq!(list(&format!("name={tag}-d*")), vec![down.clone()]);
    assert_eq!(list(&format!("name={tag}-u*&name={tag}-d*")), both);
    assert_eq!(list("label=dwt.api"), both);
    assert_eq!(list("label=dwt.nope"), Vec::<String>::new());
    // A die turns a running container exited with its code, from the event.
    docker_ok(&["kill", "-s", "KILL", &up]);
    assert!(
        wait_until(Duration::from_secs(20), || list("state=exited") == both),
        "{}",
        get_json(&dw, &by_label)
    );
    let u = get_json(&dw, &format!("/api/v1/containers/{up}"));
    assert_eq!(u["exit_code"], 137, "{u}");
}

/// Unknown names are 404, bad parameters 400 naming the parameter; a
/// container is found by name, full ID and a 12-character ID prefix.
#[test]
fn lookups_and_bad_parameters() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("dwt-api");
    let dw = with_tokens(&dir, "");
    let name = clean.container(unique("api-one"));
    run(&["--name", &name, &test_image(), "sleep", "300"]);
    let id = inspect(&name)["Id"].as_str().expect("id").to_owned();
    assert!(
        wait_until(Duration::from_secs(20), || {
            request(
                &dw,
                "GET",
                &format!("/api/v1/containers/{name}"),
                Some(API_TOKEN),
            )
            .0 == 200
        }),
        "{name} never appeared"
    );
    for key in [name.as_str(), id.as_str(), &id[..12]] {
        let c = get_json(&dw, &format!("/api/v1/containers/{key}"));
        assert_eq!(
            (c["name"].as_str(), c["id"].as_str()),
            (Some(&*name), Some(&*id)),
            "{key}"
        );
    }
    let (status, head, body) = request(
        &dw,
        "GET",
        "/api/v1/containers/no-such-thing",
        Some(API_TOKEN),
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("application/json"),
        "{head}"
    );
    let err: Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(err["error"], "no container \"no-such-thing\"");
    for (query, named) in [
        ("label==x", "`label`"),
        ("state=", "`state`"),
        ("name=a%5B", "`name`"),
        ("colour=red", "`colour`"),
    ] {
        let (status, _, body) = request(
            &dw,
            "GET",
            &format!("/api/v1/containers?{query}"),
            Some(API_TOKEN),
        );
        assert_eq!(status, 400, "{query}: {body}");
        let err: Value = serde_json::from_str(&body).expect("JSON error");
        assert!(
            err["error"].as_str().unwrap_or("").contains(named),
            "{query}: {body}"
        );
    }
}

/// Acceptance 5: 403 without `api_token_file`; 401 with a wrong token or
/// none; 200 with the API token or the reload token; the API token may not
/// reload.
#[test]
fn tokens_guard_the_api() {
    require_docker();
    require_test_image();
    let mut off = Dockwarden::start("");
    off.wait_ready(Duration::from_secs(20));
    let (status, _, body) = request(&off, "GET", "/api/v1/containers", Some(API_TOKEN));
    assert_eq!(status, 403, "{body}");
    let err: Value = serde_json::from_str(&body).expect("JSON error");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or("")
            .contains("api_token_file"),
        "{body}"
    );
    drop(off);

    let dir = TempDir::new("dwt-api");
    let dw = with_tokens(&dir, "");
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let (status, head, body) = request(&dw, "GET", "/api/v1/containers", token);
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
    }
    assert_eq!(
        request(&dw, "GET", "/api/v1/containers", Some(API_TOKEN)).0,
        200
    );
    assert_eq!(
        request(&dw, "GET", "/api/v1/containers", Some(RELOAD_TOKEN)).0,
        200
    );
    let (status, _, body) = request(&dw, "POST", "/-/reload", Some(API_TOKEN));
    assert_eq!(status, 401, "the API token reloaded: {body}");
    let (status, _, body) = request(&dw, "POST", "/-/reload", Some(RELOAD_TOKEN));
    assert_eq!(status, 200, "{body}");
    // The other endpoints stay open.
    assert_eq!(request(&dw, "GET", "/healthz", None).0, 200);
    assert_eq!(request(&dw, "GET", "/metrics", None).0, 200);
}

/// Acceptance 6 (the table; `api_history.rs` has the history):
/// `dockwarden status` prints a table with the running sidecar's view, one
/// container with NAME, the raw JSON with `--json`, and exits 1 with one
/// clear line when no sidecar answers or the token is wrong.
#[test]
fn status_prints_the_table_and_fails_in_one_line() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("dwt-api-status");
    let name = clean.container(unique("apistatus"));
    run(&["--name", &name, &test_image(), "sleep", "300"]);
    let dw = with_tokens(&dir, "");
    let url = dw.base_url();
    let token = dir.path().join("api.token");
    let token = token.to_str().expect("utf-8 path");
    assert!(
        wait_until(Duration::from_secs(20), || {
            status_cli(&["--url", &url, "--token-file", token])
                .1
                .contains(&name)
        }),
        "the container never showed in the table"
    );
    let (code, table, _) = status_cli(&["--url", &url, "--token-file", token]);
    assert_eq!(code, 0);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME")
            && header.contains("STATE")
            && header.contains("LAST ACTION")
            && header.ends_with("MEM"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..4], ["running", "none", "0"], "{row}");
    // One container, and the JSON.
    // (Its history, empty here as it started before the sidecar, follows
    // the row: `api_history.rs` checks what it says.)
    let (code, one, _) = status_cli(&["--url", &url, "--token-file", token, &name]);
    let lines: Vec<&str> = one.lines().collect();
    assert_eq!(code, 0, "{one}");
    assert!(
        lines.len() == 4
            && lines[0].starts_with("NAME")
            && lines[1].starts_with(&name)
            && lines[2].is_empty()
            && lines[3].starts_with("TIME"),
        "{one}"
    );
    let (code, json, _) = status_cli(&["--url", &url, "--token-file", token, "--json", &name]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(v["name"], name.as_str());
    assert_eq!(v["state"], "running");
    // Unknown container, wrong token, no sidecar: exit 1, one line each.
    let (code, _, e) = status_cli(&["--url", &url, "--token-file", token, "no-such-container"]);
    assert_eq!(code, 1);
    assert_eq!(
        e.trim(),
        format!(
            "dockwarden status: the sidecar at {url} answered 404: no container \"no-such-container\""
        )
    );
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token-at-all").expect("write");
    let (code, _, e) = status_cli(&[
        "--url",
        &url,
        "--token-file",
        wrong.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 1);
    assert!(
        e.trim().starts_with(&format!(
            "dockwarden status: the sidecar at {url} answered 401"
        )) && e.trim().lines().count() == 1,
        "{e}"
    );
    let dead = format!("http://{}", common::free_local_addr());
    let (code, _, e) = status_cli(&["--url", &dead]);
    assert_eq!(code, 1);
    assert!(
        e.trim().starts_with(&format!(
            "dockwarden status: no dockwarden answers at {dead}: "
        )) && e.contains("refused")
            && e.trim().lines().count() == 1,
        "{e}"
    );
}
