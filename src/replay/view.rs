//! The container view, offline: what a running dockwarden learns from
//! inspects, replay learns from the events' attributes. A container's
//! `create` and `start` carry its name, its image as created and every
//! label; a label named like a daemon attribute (`exitCode`, `execID`,
//! `signal`) shows up there, where the daemon sets none, and marks that
//! attribute forgeable. The rest of the view's upkeep (`die`, `oom`,
//! `health_status`, `destroy`) is the live one, [`Containers::observe`],
//! given a Docker handle that never connects.
//!
//! What no event says (restart policy, user, healthcheck, memory limit)
//! stays unknown; the handlers name it as unverified.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::containers::{Container, Containers, Forgeable, plain_name};
use crate::docker::DockerHandle;
use crate::event::Event;

/// Attributes the daemon adds to container events; the others are labels.
const DAEMON_KEYS: &[&str] = &["name", "image", "exitCode", "signal", "execID", "oldName"];

/// Keeps `view` current with one event, as the dispatcher does before
/// observers and handlers run.
pub(super) fn observe(
    view: &Arc<Containers>,
    event: &Event,
    docker: &DockerHandle,
    tasks: &TaskTracker,
) {
    if event.typ != "container" || event.actor_id.is_empty() {
        return;
    }
    let id = event.actor_id.as_str();
    let known = view.get(id);
    match &*event.action {
        // These carry the labels and nothing of the daemon's own beyond
        // name and image (a rename adds oldName).
        "create" | "start" | "rename" => {
            let mut c = from_attributes(event, true);
            if let Some(old) = &known {
                c.state = old.state.clone();
            }
            if event.action == "start" {
                c.state.status = "running";
                c.state.running = true;
                c.state.oom_killed = false;
                c.state.started_at = crate::clock::rfc3339_nanos(event.time_nano);
            } else if known.is_none() {
                c.state.status = "created";
            }
            view.remember(id, c);
        }
        "destroy" => {}
        // First seen doing something else: it existed before the recording.
        _ if known.is_none() => {
            let mut c = from_attributes(event, false);
            c.state.status = "running";
            c.state.running = true;
            view.remember(id, c);
        }
        _ => {}
    }
    view.observe(event, docker, tasks);
}

/// A container as its event's attributes describe it. `labels_only`: the
/// event carries no daemon attribute beyond name and image, so one of
/// those names is a label that overwrites it.
fn from_attributes(event: &Event, labels_only: bool) -> Container {
    let mut labels = HashMap::new();
    for (k, v) in event.attributes.iter() {
        if !DAEMON_KEYS.contains(&k) {
            labels.insert(k.to_owned(), v.to_owned());
        }
    }
    let forgeable = if labels_only {
        let has = |k| event.attributes.contains_key(k);
        for k in ["exitCode", "execID", "signal"] {
            if let Some(v) = event.attr(k) {
                labels.insert(k.to_owned(), v.to_owned());
            }
        }
        Forgeable {
            exit_code: has("exitCode"),
            exec_id: has("execID"),
            signal: has("signal"),
        }
    } else {
        Forgeable::default()
    };
    Container {
        id: event.actor_id.clone(),
        name: plain_name(event.name().unwrap_or(&event.actor_id)).to_owned(),
        image: event.image().unwrap_or_default().to_owned(),
        labels,
        forgeable,
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_container_event as event;

    #[test]
    fn create_and_start_fill_the_view_and_die_updates_it() {
        let view = Arc::new(Containers::default());
        let docker = DockerHandle::default();
        let tasks = TaskTracker::new();
        let attrs = [
            ("dockwarden.heal", "true"),
            ("exitCode", "0"),
            ("image", "busybox"),
            ("name", "web-1"),
        ];
        observe(&view, &event("create", &attrs, 1), &docker, &tasks);
        let c = view.get("c1").expect("created");
        assert_eq!((c.name.as_str(), c.image.as_str()), ("web-1", "busybox"));
        assert_eq!(
            c.labels.get("dockwarden.heal").map(String::as_str),
            Some("true")
        );
        assert!(c.forgeable.exit_code && !c.forgeable.exec_id);
        assert_eq!(c.state.status, "created");
        observe(&view, &event("start", &attrs, 2), &docker, &tasks);
        assert!(view.get("c1").is_some_and(|c| c.state.running));
        let die = event("die", &[("exitCode", "3"), ("name", "web-1")], 3);
        observe(&view, &die, &docker, &tasks);
        let c = view.get("c1").expect("still known");
        assert!(!c.state.running);
        assert!(c.forgeable.exit_code, "a die keeps what the start showed");
        observe(&view, &event("destroy", &attrs, 4), &docker, &tasks);
        assert!(view.get("c1").is_none());
    }

    #[test]
    fn a_container_first_seen_later_is_taken_as_running() {
        let view = Arc::new(Containers::default());
        let sick = event(
            "health_status: unhealthy",
            &[("name", "/db"), ("team", "x")],
            1,
        );
        observe(&view, &sick, &DockerHandle::default(), &TaskTracker::new());
        let c = view.get("c1").expect("known");
        assert_eq!(c.name, "db");
        assert!(c.state.running);
        assert_eq!(c.state.health, "unhealthy");
        assert!(!c.forgeable.exit_code);
    }
}
