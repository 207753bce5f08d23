//! What happened, for the status API: each container's lifecycle
//! ([`History::lifecycle`], by name, so it continues across a recreate and
//! outlives a `destroy` by `[api] history_keep_secs`) and the recent event
//! ring ([`History::recent`]), engine and dockwarden events alike.
//!
//! The dispatcher hands it every batch in stream order, own events after the
//! engine events that caused them, before any handler runs. It must not
//! decide or call the engine; it remembers what the events said.
//!
//! Memory is bounded by count and by size:
//! - the ring holds at most `event_ring` events; an event of more than
//!   [`RING_EVENT_BYTES`] of attributes is kept trimmed to that (most are
//!   shared with the pipeline, not copied);
//! - a lifecycle holds at most `history_per_container` compact entries
//!   ([`Entry`]: a time, a key, the container ID and a few small details;
//!   own events share their fields with the event);
//! - lifecycles of gone containers are dropped `history_keep_secs` after
//!   the container went (or a resync found it gone), and beyond
//!   [`MAX_GONE`] the oldest go first.
//!
//! What one event becomes (its entry, its copy in the ring) is `entry.rs`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::containers::{Containers, plain_name};
use crate::event::Event;
use crate::lock::lock;

mod entry;

use entry::{for_ring, lifecycle_entry, time_of};

/// Attribute bytes (keys and values) the ring keeps of one event.
pub const RING_EVENT_BYTES: usize = 2048;

/// The JSON text an entry's details take at most (about: a cut string is
/// marked with a 3-byte `…`).
pub const DETAILS_BYTES: usize = 384;

/// Lifecycles of gone containers kept at most, however recent.
pub const MAX_GONE: usize = 1000;

/// One step of a container's lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Unix nanoseconds of the event ([`time_of`]).
    pub time_nano: i64,
    /// `container.die`, `dockwarden.restart`, ...
    pub key: Cow<'static, str>,
    /// The container it happened to (a recreate changes it).
    pub id: Arc<str>,
    /// What it says beyond its key, as a JSON object (at most about
    /// [`DETAILS_BYTES`]): an engine event's few attributes worth keeping,
    /// an own event's fields.
    pub details: Box<str>,
}

/// The limits, from `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_container: usize,
    pub keep: Duration,
    pub ring: usize,
}

#[derive(Default)]
struct Lifecycle {
    /// The container that has the name now; None once it is gone.
    holder: Option<Arc<str>>,
    /// When the last holder went (destroyed or renamed away).
    gone_at: Option<Instant>,
    entries: VecDeque<Entry>,
}

#[derive(Default)]
struct Inner {
    /// Each with its [`time_of`].
    ring: VecDeque<(i64, Arc<Event>)>,
    names: HashMap<String, Lifecycle>,
    /// Names whose container went, in the order they went (may hold names
    /// since revived; checked against `gone_at`).
    gone: VecDeque<(Instant, String)>,
}

/// The lifecycles and the event ring.
pub struct History {
    limits: Limits,
    inner: Mutex<Inner>,
}

impl History {
    pub fn new(limits: Limits) -> Self {
        History {
            limits: Limits {
                per_container: limits.per_container.max(1),
                ring: limits.ring.max(1),
                keep: limits.keep,
            },
            inner: Mutex::default(),
        }
    }

    /// Records a batch of events, in order. `view` tells which attributes
    /// a container's labels can forge (those are not kept).
    pub fn record(&self, events: &[Arc<Event>], view: &Containers) {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        for event in events {
            inner.ring.push_back((time_of(event), for_ring(event)));
            if inner.ring.len() > self.limits.ring {
                inner.ring.pop_front();
            }
            if let Some(entry) = lifecycle_entry(event, view) {
                self.add(&mut inner, event, entry, now);
            }
        }
        self.expire(&mut inner, now);
    }

    fn add(&self, inner: &mut Inner, event: &Event, mut entry: Entry, now: Instant) {
        let Some(name) = event.name().filter(|n| !n.is_empty()) else {
            return;
        };
        let id = entry.id.clone();
        if event.key == "container.rename"
            && let Some(old) = event.attr("oldName").map(plain_name)
            && old != name
            && let Some(l) = inner.names.get_mut(old)
        {
            // The old name's story ends here (it may be a recreate's
            // rename aside; the name comes back with the new container).
            push(l, entry.clone(), self.limits.per_container);
            if l.holder.as_deref().is_none_or(|h| h == &*id) {
                l.holder = None;
                l.gone_at = Some(now);
                inner.gone.push_back((now, old.to_owned()));
            }
        }
        let l = inner.names.entry(name.to_owned()).or_default();
        // One copy of the ID per container, not one per entry.
        if let Some(holder) = l.holder.as_ref().filter(|h| ***h == *entry.id) {
            entry.id = holder.clone();
        }
        push(l, entry, self.limits.per_container);
        if event.key == "container.destroy" {
            if l.holder.as_deref().is_none_or(|h| h == &*id) {
                l.holder = None;
                l.gone_at = Some(now);
                inner.gone.push_back((now, name.to_owned()));
            }
        } else if event.typ == "container" {
            l.holder = Some(id);
            l.gone_at = None;
        }
    }

    /// Ends the lifecycles of containers not in `live` (the IDs a resync
    /// listed): they went while no stream told of it. They are kept
    /// `history_keep_secs` from now, like a destroyed container's.
    pub fn forget_missing(&self, live: &std::collections::HashSet<String>) {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let Inner { names, gone, .. } = &mut *inner;
        for (name, l) in names.iter_mut() {
            if l.holder.as_deref().is_some_and(|h| !live.contains(h)) {
                l.holder = None;
                l.gone_at = Some(now);
                gone.push_back((now, name.clone()));
            }
        }
        self.expire(&mut inner, now);
    }

    /// Drops lifecycles gone longer than `keep`, and the oldest gone ones
    /// beyond [`MAX_GONE`].
    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, name)) = inner.gone.front() {
            let too_many = inner.gone.len() > MAX_GONE;
            if !too_many && now.saturating_duration_since(*at) < self.limits.keep {
                break;
            }
            // Only if it is still gone, and went then (not revived since).
            let at = *at;
            if inner.names.get(name).is_some_and(|l| l.gone_at == Some(at))
                && let Some((_, name)) = inner.gone.pop_front()
            {
                inner.names.remove(&name);
            } else {
                inner.gone.pop_front();
            }
        }
    }

    /// The lifecycle of the container named `name`, oldest first: its last
    /// `limit` entries. None if the name is unknown, or its container went
    /// more than `history_keep_secs` ago.
    pub fn lifecycle(&self, name: &str, limit: usize) -> Option<Vec<Entry>> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        self.expire(&mut inner, now);
        let l = inner.names.get(plain_name(name))?;
        let skip = l.entries.len().saturating_sub(limit);
        Some(l.entries.iter().skip(skip).cloned().collect())
    }

    /// The names of gone containers whose lifecycle is still kept.
    pub fn gone(&self) -> Vec<String> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        self.expire(&mut inner, now);
        let mut names: Vec<String> = inner
            .names
            .iter()
            .filter(|(_, l)| l.holder.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// The newest `limit` events of the ring that `keep` admits (given
    /// each one's [`time_of`]), oldest first, with those times.
    pub fn recent(
        &self,
        limit: usize,
        keep: impl Fn(i64, &Event) -> bool,
    ) -> Vec<(i64, Arc<Event>)> {
        let inner = lock(&self.inner);
        let mut out: Vec<(i64, Arc<Event>)> = inner
            .ring
            .iter()
            .rev()
            .filter(|(t, e)| keep(*t, e))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// Adds `entry` in time order: an engine event can arrive just after the
/// own event it preceded (a restart's `restart`, told by the engine a
/// millisecond after dockwarden's own `dockwarden.restart`).
fn push(l: &mut Lifecycle, entry: Entry, cap: usize) {
    let at = l
        .entries
        .iter()
        .rposition(|e| e.time_nano <= entry.time_nano)
        .map_or(0, |i| i + 1);
    l.entries.insert(at, entry);
    while l.entries.len() > cap {
        l.entries.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Attributes;

    fn event(action: &str, id: &str, name: &str, extra: &[(&str, &str)], t: i64) -> Arc<Event> {
        let mut a = Attributes::default();
        a.push("name", name);
        for (k, v) in extra {
            a.push(k, v);
        }
        Arc::new(Event::new("container", action, id.into(), a, t))
    }

    fn limits(per_container: usize, keep: Duration, ring: usize) -> Limits {
        Limits {
            per_container,
            keep,
            ring,
        }
    }

    fn keys(h: &History, name: &str) -> Vec<String> {
        h.lifecycle(name, usize::MAX)
            .unwrap_or_default()
            .iter()
            .map(|e| format!("{}@{}", e.key, e.id))
            .collect()
    }

    #[test]
    fn a_lifecycle_continues_across_a_recreate_and_outlives_a_destroy() {
        let view = Containers::default();
        let h = History::new(limits(200, Duration::from_secs(3600), 100));
        h.record(
            &[
                event("create", "old", "web", &[("image", "busybox")], 1),
                event("start", "old", "web", &[], 2),
                event("die", "old", "web", &[("exitCode", "3")], 3),
                // A recreate: aside, new under the name, old destroyed.
                event("rename", "old", "web-aside", &[("oldName", "/web")], 4),
                event("create", "new", "web", &[], 5),
                event("start", "new", "web", &[], 6),
                event("destroy", "old", "web-aside", &[], 7),
                event("exec_start: sh", "new", "web", &[], 8),
            ],
            &view,
        );
        assert_eq!(
            keys(&h, "web"),
            [
                "container.create@old",
                "container.start@old",
                "container.die@old",
                "container.rename@old",
                "container.create@new",
                "container.start@new",
            ]
        );
        assert_eq!(
            keys(&h, "/web-aside"),
            ["container.rename@old", "container.destroy@old"]
        );
        assert_eq!(h.gone(), ["web-aside"]);
        assert_eq!(h.lifecycle("web", 2).map(|l| l.len()), Some(2));
        // The view never saw `old`: its exit code could have been forged.
        let die = &h.lifecycle("web", usize::MAX).unwrap_or_default()[2];
        assert_eq!(&*die.details, r#"{"exit_code":null}"#);
        assert_eq!(h.recent(100, |_, _| true).len(), 8);
    }

    #[test]
    fn gone_lifecycles_expire_and_a_new_holder_revives_one() {
        let view = Containers::default();
        let h = History::new(limits(200, Duration::ZERO, 100));
        h.record(&[event("destroy", "a", "job", &[], 1)], &view);
        assert_eq!(h.lifecycle("job", 10), None, "kept for zero seconds");
        let h = History::new(limits(200, Duration::from_secs(3600), 100));
        h.record(&[event("destroy", "a", "job", &[], 1)], &view);
        h.record(&[event("create", "b", "job", &[], 2)], &view);
        assert!(h.gone().is_empty());
        assert_eq!(keys(&h, "job").len(), 2);
    }

    #[test]
    fn a_resync_ends_the_lifecycles_of_containers_it_does_not_find() {
        let view = Containers::default();
        let h = History::new(limits(200, Duration::from_secs(3600), 100));
        h.record(
            &[
                event("start", "a", "kept", &[], 1),
                event("start", "b", "went", &[], 2),
            ],
            &view,
        );
        h.forget_missing(&["a".to_owned()].into_iter().collect());
        assert_eq!(h.gone(), ["went"]);
        assert_eq!(keys(&h, "went"), ["container.start@b"]);
    }

    #[test]
    fn details_are_bounded_and_say_so() {
        let long = "x".repeat(5000);
        let mut fields = serde_json::Map::new();
        fields.insert("user".into(), "root".into());
        fields.insert("command".into(), serde_json::json!(["sh", "-c", long]));
        let text = entry::bounded(fields.clone(), DETAILS_BYTES);
        assert!(text.len() <= DETAILS_BYTES, "{}", text.len());
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["user"], "root");
        assert_eq!(v["truncated"], true);
        assert!(v["command"][2].as_str().is_some_and(|c| c.ends_with('…')));
        let short = entry::bounded(serde_json::Map::new(), DETAILS_BYTES);
        assert_eq!(short, "{}");
    }

    #[test]
    fn everything_is_bounded() {
        let view = Containers::default();
        let h = History::new(limits(3, Duration::from_secs(3600), 5));
        for t in 0..10 {
            h.record(&[event("start", "a", "web", &[], t)], &view);
        }
        assert_eq!(keys(&h, "web").len(), 3);
        let ring = h.recent(100, |_, _| true);
        assert_eq!(
            ring.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            [5, 6, 7, 8, 9]
        );
        for i in 0..(MAX_GONE + 10) {
            h.record(
                &[event("destroy", &format!("c{i}"), &format!("n{i}"), &[], 1)],
                &view,
            );
        }
        assert_eq!(h.gone().len(), MAX_GONE);
        assert_eq!(h.lifecycle("n0", 10), None, "the oldest gone first");
        let big = "x".repeat(RING_EVENT_BYTES);
        h.record(
            &[event("start", "z", "big", &[("a", &big), ("b", "1")], 1)],
            &view,
        );
        let kept = &h.recent(1, |_, _| true)[0].1;
        assert_eq!(kept.attr("a"), None);
        assert_eq!(kept.attr("b"), Some("1"));
        assert_eq!(kept.attr("dockwarden.truncated"), Some("true"));
        assert_eq!(kept.name(), Some("big"));
    }
}
