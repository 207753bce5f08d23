//! Handing dockwarden's own facts on: logged and counted, and for the
//! keyed ones (`dockwarden.restart`, `dockwarden.exec`, …) an event about
//! the container, routed through the rules.
//!
//! It owns what an own event says about its container: the view's name,
//! image and labels, as the container's engine events carry them (so
//! `match.name`, `image` and `labels` work alike). It must not decide
//! whether a fact happened; handlers do.

use std::sync::Arc;

use crate::containers::Containers;
use crate::event::{Attributes, Event};
use crate::internal_events::{InternalEvent, OwnEvents, own_event};
use crate::metrics::Metrics;

/// The container a fact is about.
#[derive(Debug, Clone, Copy)]
pub struct About<'a> {
    pub id: &'a str,
    /// Its name, for when the view no longer holds it (destroyed).
    pub name: &'a str,
    /// The engine event the fact answers. Its time stamps the own event,
    /// so a replay of that engine event (after a crash) gives an own event
    /// of the same identity, and a notification of the same id; its
    /// attributes stand in for the container view's when the view no longer
    /// holds the container (a `destroy`).
    pub cause: &'a Event,
}

/// Logs, counts and routes facts; cheap to clone into scheduled tasks.
#[derive(Clone)]
pub struct Emitter {
    metrics: Arc<Metrics>,
    containers: Arc<Containers>,
    own: Arc<dyn OwnEvents>,
}

impl Emitter {
    pub fn new(
        metrics: Arc<Metrics>,
        containers: Arc<Containers>,
        own: Arc<dyn OwnEvents>,
    ) -> Self {
        Emitter {
            metrics,
            containers,
            own,
        }
    }

    /// Logs and counts `fact`; if it has a key, publishes its event.
    pub fn emit(&self, fact: &dyn InternalEvent, about: Option<About<'_>>) {
        fact.emit(&self.metrics);
        if fact.key().is_none() {
            return;
        }
        let (id, attributes, time_nano) = match about {
            Some(a) => (a.id, self.attributes(a), a.cause.time_nano),
            None => ("", Attributes::default(), crate::clock::unix_nanos()),
        };
        if let Some(event) = own_event(fact, id, attributes, time_nano) {
            self.own.publish(event);
        }
    }

    /// `name` and `image` first, then the labels (a label named `name` or
    /// `image` cannot stand in for them, unlike in the engine's events).
    /// The name is the one the handler acted on: a recreate renames the old
    /// container aside before its fact is told, and the view may already
    /// hold the aside name.
    fn attributes(&self, about: About<'_>) -> Attributes {
        let mut a = Attributes::default();
        match self.containers.get(about.id) {
            Some(c) => {
                a.push("name", about.name);
                a.push("image", &c.image);
                let mut labels: Vec<(&String, &String)> = c
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "name" && *k != "image")
                    .collect();
                labels.sort();
                for (k, v) in labels {
                    a.push(k, v);
                }
            }
            // Gone from the view: the engine's event still names its
            // name, image and labels.
            None if about.cause.actor_id == about.id && about.cause.typ == "container" => {
                a.push("name", about.name);
                a.push("image", about.cause.image().unwrap_or_default());
                for (k, v) in about.cause.attributes.iter() {
                    if k != "name" && k != "image" {
                        a.push(k, v);
                    }
                }
            }
            None => a.push("name", about.name),
        }
        a
    }
}
