//! The containers that follow a healed one.
//!
//! - A container in another's network namespace (`network_mode:
//!   container:<X>`, compose's `service:x`) loses its network when X is
//!   restarted (the namespace is new) and points at nothing when X is
//!   recreated. After X is restarted it is restarted; after X is recreated
//!   it is recreated into the new X's namespace.
//! - A container labelled `dockwarden.depends_on=a,b` is restarted after `a`
//!   or `b` is healed.
//!
//! Both follow transitively, breadth first, each level in name order, each
//! container once per heal. Only running containers follow (a stopped one
//! was stopped by someone), and none labelled `dockwarden.heal=false`. A container that leads back to one already on
//! the path is a cycle: logged, not followed. Their restarts are dockwarden's
//! own (their events are not failures) and are not counted against their own
//! breaker; each is a `dockwarden.restart` or `dockwarden.recreate` event with
//! `cause = "depends on X"`.

use std::collections::HashSet;
use std::sync::Arc;

use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptions;
use tracing::{info, warn};

use super::action;
use super::book::Healer;
use super::labels::{DEPENDS_ON, Overrides, depends_on};
use crate::containers::{Containers, plain_name};
use crate::docker::Engine;
use crate::docker::calls::Call;
use crate::event::Event;
use crate::handlers::{About, Emitter, HandlerError};
use crate::internal_events::denied::CallDenied;
use crate::internal_events::heal::{Acted, ActionResult};

/// A container dockwarden just restarted or recreated.
#[derive(Debug, Clone)]
pub struct Healed {
    pub name: String,
    pub old_id: String,
    /// The new container's ID after a recreate.
    pub new_id: Option<String>,
}

/// A running container as the listing shows it.
#[derive(Debug, Clone, PartialEq)]
struct Running {
    id: String,
    name: String,
    /// The container whose namespace it joins (ID or name), if any.
    netns_of: Option<String>,
    depends_on: Vec<String>,
    stop_timeout: Option<u32>,
    /// Labelled `dockwarden.heal=false`: never touched.
    opted_out: bool,
}

impl Running {
    fn from_summary(s: &ContainerSummary) -> Option<Running> {
        let name = plain_name(s.names.as_ref()?.first()?).to_owned();
        let labels = s.labels.clone().unwrap_or_default();
        let netns_of = s
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            .and_then(|m| m.strip_prefix("container:"))
            .map(str::to_owned);
        let (overrides, _) = Overrides::read(&labels);
        Some(Running {
            id: s.id.clone()?,
            name,
            netns_of,
            depends_on: labels
                .get(DEPENDS_ON)
                .map(|v| depends_on(v).into_iter().map(str::to_owned).collect())
                .unwrap_or_default(),
            stop_timeout: overrides.stop_timeout(),
            opted_out: overrides.heal == Some(false),
        })
    }

    /// Whether it shares the network namespace of `node`.
    fn in_netns_of(&self, node: &Node) -> bool {
        self.netns_of
            .as_deref()
            .is_some_and(|x| node.ids.iter().any(|id| id == x) || x == node.name)
    }
}

/// A container the cascade has reached.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    /// Its IDs (before and after a recreate).
    ids: Vec<String>,
    recreated: bool,
    /// The names from the healed container to it.
    path: Vec<String>,
}

/// What to do to a dependent.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Restart,
    /// Recreate it in the namespace of this container.
    RecreateInto(String),
}

/// A dependent found, what to do to it, and the node it depends on.
type Found = (Running, Step, Node);

/// The next level: the running containers that depend on a node of
/// `level` and were not reached yet, in name order, each with what to do
/// and the node it depends on; and the cycles found, as paths.
fn next_level(
    running: &[Running],
    level: &[Node],
    reached: &mut HashSet<String>,
) -> (Vec<Found>, Vec<Vec<String>>) {
    let mut found: Vec<Found> = Vec::new();
    let mut cycles = Vec::new();
    for node in level {
        for c in running {
            let netns = c.in_netns_of(node);
            if !netns && !c.depends_on.contains(&node.name) {
                continue;
            }
            if node.path.contains(&c.name) {
                let mut cycle = node.path.clone();
                cycle.push(c.name.clone());
                cycles.push(cycle);
                continue;
            }
            if !reached.insert(c.name.clone()) {
                continue;
            }
            if c.opted_out {
                info!(container = %c.name, depends_on = %node.name, "Not following a dependent labelled dockwarden.heal=false.");
                continue;
            }
            let step = match (netns, node.recreated, node.ids.last()) {
                (true, true, Some(new_id)) => Step::RecreateInto(new_id.clone()),
                _ => Step::Restart,
            };
            found.push((c.clone(), step, node.clone()));
        }
    }
    found.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    (found, cycles)
}

/// Everything a cascade needs from the healing task.
pub(super) struct Cascade<'a> {
    pub docker: &'a Engine,
    pub healer: &'a Healer,
    pub emitter: &'a Emitter,
    pub containers: &'a Arc<Containers>,
    pub rule: &'a str,
    /// The healed container's failure, in few words.
    pub failure: &'a str,
    /// The rule's stop timeout (a dependent's own label overrides it).
    pub stop_timeout: u32,
    /// The failure event that started it.
    pub event: &'a Arc<Event>,
}

impl Cascade<'_> {
    /// Restarts or recreates, level by level, what depends on `healed`.
    pub async fn run(&self, healed: Healed) {
        let mut reached = HashSet::from([healed.name.clone()]);
        let mut ids = vec![healed.old_id];
        ids.extend(healed.new_id.clone());
        let mut level = vec![Node {
            path: vec![healed.name.clone()],
            name: healed.name,
            ids,
            recreated: healed.new_id.is_some(),
        }];
        let mut reported: HashSet<Vec<String>> = HashSet::new();
        while !level.is_empty() {
            let running = match self.running().await {
                Some(r) => r,
                None => return,
            };
            let (found, cycles) = next_level(&running, &level, &mut reached);
            for cycle in cycles {
                if reported.insert(cycle.clone()) {
                    warn!(cycle = %cycle.join(" → "), "Dependency cycle: {}; not followed.", cycle.join(" → "));
                }
            }
            let mut next = Vec::new();
            for (c, step, on) in found {
                if let Some(node) = self.follow(&c, &step, &on).await {
                    next.push(node);
                }
            }
            level = next;
        }
    }

    /// The running containers, or None (logged) if they cannot be listed.
    async fn running(&self) -> Option<Vec<Running>> {
        match self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                ..Default::default()
            }))
            .await
        {
            Ok(list) => Some(list.iter().filter_map(Running::from_summary).collect()),
            Err(e) => {
                let err = HandlerError::engine(Call::ContainerList, "listing dependents", e);
                for (call, message) in err.denials() {
                    self.emitter.emit(
                        &CallDenied {
                            call,
                            during: "finding the containers that depend on a healed one",
                            message,
                        },
                        None,
                    );
                }
                warn!(error = %err, "Cannot list the containers that depend on a healed one; they are not restarted.");
                None
            }
        }
    }

    /// Restarts or recreates dependent `c` of `on`; the node it becomes if
    /// that worked.
    async fn follow(&self, c: &Running, step: &Step, on: &Node) -> Option<Node> {
        let cause = format!("depends on {}", on.name);
        let stop_timeout = c.stop_timeout.unwrap_or(self.stop_timeout);
        let docker = crate::docker::outliving_stop(self.docker, stop_timeout);
        let started = std::time::Instant::now();
        let (action, result) = match step {
            Step::Restart => ("restart", self.restart(&docker, c, stop_timeout).await),
            Step::RecreateInto(x) => (
                "recreate",
                self.recreate_into(&docker, c, x, stop_timeout).await,
            ),
        };
        let done = Acted {
            container: &c.name,
            rule: self.rule,
            action,
            failure: self.failure,
            attempt: 0,
            max_restarts: 0,
            backoff: std::time::Duration::ZERO,
            why: Vec::new(),
            cause: Some(&cause),
            result: match &result {
                Ok((text, _)) => ActionResult::Ok(text.clone()),
                Err(e) => ActionResult::Error {
                    error: e.to_string(),
                    kind: e.kind(),
                },
            },
            reaction: started.elapsed(),
            latency: crate::clock::since_nanos(self.event.time_nano),
        };
        if let Err(e) = &result {
            let during = format!("{action} {} ({cause})", c.name);
            for (call, message) in e.denials() {
                self.emitter.emit(
                    &CallDenied {
                        call,
                        during: &during,
                        message,
                    },
                    None,
                );
            }
        }
        let id = match &result {
            Ok((_, Some(new_id))) => new_id.as_str(),
            _ => c.id.as_str(),
        };
        self.emitter.emit(
            &done,
            Some(About {
                id,
                name: &c.name,
                cause: self.event,
            }),
        );
        self.containers
            .record_action(id, action, done.result_label());
        self.healer
            .note_action(&c.name, action, done.result_label());
        let (_, new_id) = result.ok()?;
        let mut ids = vec![c.id.clone()];
        ids.extend(new_id.clone());
        let mut path = on.path.clone();
        path.push(c.name.clone());
        Some(Node {
            name: c.name.clone(),
            ids,
            recreated: new_id.is_some(),
            path,
        })
    }

    async fn restart(
        &self,
        docker: &Engine,
        c: &Running,
        stop_timeout: u32,
    ) -> Result<(String, Option<String>), HandlerError> {
        action::restart_container(docker, self.healer, (&c.name, &c.id), stop_timeout).await?;
        Ok((format!("Restarted {}.", c.name), None))
    }

    /// Recreates `c` with `network_mode: container:<x>`.
    async fn recreate_into(
        &self,
        docker: &Engine,
        c: &Running,
        x: &str,
        stop_timeout: u32,
    ) -> Result<(String, Option<String>), HandlerError> {
        let (text, new_id) = action::recreate_as(
            docker,
            self.healer,
            (&c.name, &c.id),
            stop_timeout,
            |info| {
                if let Some(host) = info.host_config.as_mut() {
                    host.network_mode = Some(format!("container:{x}"));
                }
            },
        )
        .await?;
        info!(container = %c.name, namespace_of = %x, "Recreated into the new namespace.");
        Ok((text, Some(new_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str, netns_of: Option<&str>, depends: &[&str]) -> Running {
        Running {
            id: format!("{name}-id"),
            name: name.to_owned(),
            netns_of: netns_of.map(str::to_owned),
            depends_on: depends.iter().map(|d| (*d).to_owned()).collect(),
            stop_timeout: None,
            opted_out: false,
        }
    }

    fn root(name: &str, recreated: bool) -> Node {
        Node {
            name: name.to_owned(),
            ids: if recreated {
                vec![format!("{name}-id"), format!("{name}-new")]
            } else {
                vec![format!("{name}-id")]
            },
            recreated,
            path: vec![name.to_owned()],
        }
    }

    fn names(found: &[Found]) -> Vec<(&str, &Step)> {
        found.iter().map(|(c, s, _)| (c.name.as_str(), s)).collect()
    }

    #[test]
    fn namespace_sharers_follow_a_restart_and_a_recreate() {
        let all = [
            running("y", Some("x-id"), &[]),
            running("z", Some("x"), &[]),
            running("w", None, &["x"]),
            running("other", Some("q-id"), &["q"]),
        ];
        let mut reached = HashSet::from(["x".to_owned()]);
        let (found, cycles) = next_level(&all, &[root("x", false)], &mut reached);
        assert!(cycles.is_empty());
        assert_eq!(
            names(&found),
            [
                ("w", &Step::Restart),
                ("y", &Step::Restart),
                ("z", &Step::Restart)
            ]
        );
        let mut reached = HashSet::from(["x".to_owned()]);
        let (found, _) = next_level(&all, &[root("x", true)], &mut reached);
        let into = Step::RecreateInto("x-new".into());
        assert_eq!(
            names(&found),
            [("w", &Step::Restart), ("y", &into), ("z", &into)]
        );
    }

    #[test]
    fn a_chain_goes_level_by_level_and_a_cycle_stops() {
        let all = [
            running("b", None, &["a"]),
            running("c", None, &["b", "a"]),
            running("a", None, &["b"]),
        ];
        let mut reached = HashSet::from(["a".to_owned()]);
        let (first, cycles) = next_level(&all, &[root("a", false)], &mut reached);
        assert!(cycles.is_empty());
        assert_eq!(
            names(&first),
            [("b", &Step::Restart), ("c", &Step::Restart)]
        );
        // b's level: a (the root, on the path) is a cycle; c was reached.
        let b = Node {
            path: vec!["a".into(), "b".into()],
            ..root("b", false)
        };
        let (second, cycles) = next_level(&all, &[b], &mut reached);
        assert!(second.is_empty());
        assert_eq!(cycles, [vec!["a".to_owned(), "b".into(), "a".into()]]);
    }
}
