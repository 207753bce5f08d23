//! The compact [`Attributes`] map of an event, and the sharing of a
//! container's attributes between its events.
//!
//! A container's events carry every one of its labels, its image and its
//! name, the same in each event, plus a few keys of their own (`execID`,
//! `exitCode`, `signal`). Those shared pairs are most of an event's memory
//! while it waits in the queue, so the reader keeps them once per container
//! ([`Interned`]) and each event holds them by reference, with only its own
//! pairs copied. What an event's attributes are does not depend on it:
//! lookups, iteration (in wire order), equality and identity are the same
//! as for the pairs copied whole.
//!
//! It owns the representation and the sharing; `wire` decodes into it.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Pairs as back-to-back keys and values in one string, with their
/// boundaries: two allocations however many there are.
#[derive(Debug, Clone, Default)]
pub(super) struct Pairs {
    buf: String,
    spans: Vec<Span>,
}

/// A pair's key start, key end (= value start) and value end in `buf`, and
/// its place among all the event's pairs (wire order).
#[derive(Debug, Clone, Copy)]
struct Span {
    k: u32,
    v: u32,
    e: u32,
    at: u32,
}

impl Pairs {
    fn pair(&self, s: &Span) -> (&str, &str) {
        let (k, v, e) = (s.k as usize, s.v as usize, s.e as usize);
        (
            self.buf.get(k..v).unwrap_or_default(),
            self.buf.get(v..e).unwrap_or_default(),
        )
    }

    /// Compares a key's length before its bytes: no slice is made of the
    /// pairs that cannot match.
    fn get(&self, key: &str) -> Option<&str> {
        let bytes = self.buf.as_bytes();
        self.spans
            .iter()
            .find(|s| {
                (s.v - s.k) as usize == key.len()
                    && bytes.get(s.k as usize..s.v as usize) == Some(key.as_bytes())
            })
            .and_then(|s| self.buf.get(s.v as usize..s.e as usize))
    }

    fn push(&mut self, key: &str, value: &str, at: usize) {
        let k = self.buf.len();
        self.buf.push_str(key);
        let v = self.buf.len();
        self.buf.push_str(value);
        let e = self.buf.len();
        if let (Ok(k), Ok(v), Ok(e), Ok(at)) = (
            u32::try_from(k),
            u32::try_from(v),
            u32::try_from(e),
            u32::try_from(at),
        ) {
            self.spans.push(Span { k, v, e, at });
        }
    }

    /// Adds a pair after the others.
    pub(super) fn add(&mut self, key: &str, value: &str) {
        self.push(key, value, self.spans.len());
    }

    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
    }

    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The pairs `keep` selects (by index), copied at their exact size,
    /// with their places; `at` numbers them from 0 if `renumber`.
    fn select(&self, keep: impl Fn(usize, &str) -> bool, renumber: bool) -> Pairs {
        let chosen = || {
            self.spans
                .iter()
                .enumerate()
                .filter(|(i, s)| keep(*i, self.pair(s).0))
        };
        let (n, bytes) = chosen().fold((0, 0), |(n, b), (_, s)| (n + 1, b + (s.e - s.k) as usize));
        let mut out = Pairs {
            buf: String::with_capacity(bytes),
            spans: Vec::with_capacity(n),
        };
        for (j, (i, s)) in chosen().enumerate() {
            let (k, v) = self.pair(s);
            out.push(k, v, if renumber { j } else { i });
        }
        out
    }
}

/// `Actor.Attributes`: the pairs shared with the actor's other events, if
/// any, and the event's own.
#[derive(Clone, Default)]
pub struct Attributes {
    shared: Option<Arc<Pairs>>,
    own: Pairs,
}

impl Attributes {
    /// Handlers, rules and the view look up a few keys in every event.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.own
            .get(key)
            .or_else(|| self.shared.as_deref().and_then(|s| s.get(key)))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every pair in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut own = self.own.spans.iter().peekable();
        let mut shared = self.shared.as_deref().map(|s| (s, s.spans.iter()));
        let mut at = 0u32;
        std::iter::from_fn(move || {
            let here = at;
            at += 1;
            if let Some(s) = own.next_if(|s| s.at == here) {
                return Some(self.own.pair(s));
            }
            match &mut shared {
                Some((pairs, spans)) => spans.next().map(|s| pairs.pair(s)),
                None => own.next().map(|s| self.own.pair(s)),
            }
        })
    }

    pub fn len(&self) -> usize {
        self.own.spans.len() + self.shared.as_ref().map_or(0, |s| s.spans.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a pair after the others (the engine's JSON object has unique
    /// keys).
    pub fn push(&mut self, key: &str, value: &str) {
        let at = self.len();
        self.own.push(key, value, at);
    }

    /// Whether some of the pairs are held by reference (for tests).
    #[cfg(test)]
    pub(super) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The event's own pairs: their bytes (for tests).
    #[cfg(test)]
    pub(super) fn own_bytes(&self) -> usize {
        self.own.buf.len()
    }

    /// Whether the event's own pairs take no more room than they need.
    #[cfg(test)]
    pub(super) fn is_exact(&self) -> bool {
        self.own.buf.capacity() == self.own.buf.len()
            && self.own.spans.capacity() == self.own.spans.len()
    }

    /// The pairs of one decode, copied whole at their exact size.
    pub(super) fn copied(pairs: &Pairs) -> Attributes {
        Attributes {
            shared: None,
            own: pairs.select(|_, _| true, false),
        }
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut a = Attributes::default();
        for (k, v) in pairs {
            a.push(k, v);
        }
        a
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Attributes {}

impl Hash for Attributes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for pair in self.iter() {
            pair.hash(state);
        }
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Keys a container's events do not share: what differs from one of its
/// events to the next.
const OWN_KEYS: [&str; 4] = ["execID", "exitCode", "signal", "oldName"];

/// Containers whose shared pairs are kept; past this the table starts over.
const MAX_INTERNED: usize = 4096;

/// The pairs each container's events share, by container ID: kept by the
/// reader (one per thread that decodes), forgotten at `destroy`.
#[derive(Default)]
pub(super) struct Interned {
    by_actor: HashMap<String, Arc<Pairs>>,
}

impl Interned {
    /// `pairs` (one decode, wire order) as an event of `actor`: the pairs it
    /// shares with the container's earlier events by reference, if every
    /// one of those is among them in the same order; else the pairs outside
    /// [`OWN_KEYS`] become what the container's events share from now on.
    pub(super) fn attributes(&mut self, actor: &str, pairs: &Pairs, forget: bool) -> Attributes {
        let attributes = match self.by_actor.get(actor) {
            Some(shared) => match own_beside(shared, pairs) {
                Some(own) => Attributes {
                    shared: Some(shared.clone()),
                    own: pairs.select(|i, _| own.binary_search(&i).is_ok(), false),
                },
                None => self.share(actor, pairs),
            },
            None => self.share(actor, pairs),
        };
        if forget {
            self.by_actor.remove(actor);
        }
        attributes
    }

    fn share(&mut self, actor: &str, pairs: &Pairs) -> Attributes {
        let shared = Arc::new(pairs.select(|_, k| !OWN_KEYS.contains(&k), true));
        if self.by_actor.len() >= MAX_INTERNED && !self.by_actor.contains_key(actor) {
            self.by_actor.clear();
        }
        self.by_actor.insert(actor.to_owned(), shared.clone());
        Attributes {
            shared: Some(shared),
            own: pairs.select(|_, k| OWN_KEYS.contains(&k), false),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_actor.len()
    }
}

/// The places in `pairs` of the pairs that are not `shared`'s, if all of
/// `shared`'s are there, in the same order.
fn own_beside(shared: &Pairs, pairs: &Pairs) -> Option<Vec<usize>> {
    let mut next = shared.spans.iter().peekable();
    let mut own = Vec::new();
    for (i, s) in pairs.spans.iter().enumerate() {
        let pair = pairs.pair(s);
        if next.next_if(|n| shared.pair(n) == pair).is_none() {
            own.push(i);
        }
    }
    next.peek().is_none().then_some(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    /// A container event as Engine 20.10 writes it: attributes in key order.
    fn line(action: &str, id: &str, extra: &[(&str, &str)], name: &str) -> String {
        let mut attrs: Vec<(String, String)> = [
            ("com.docker.compose.project", "shop"),
            ("com.docker.compose.service", "web"),
            ("image", "busybox:latest"),
            ("name", name),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        attrs.sort();
        let attrs = serde_json::Map::from_iter(
            attrs
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v))),
        );
        serde_json::json!({
            "Type": "container", "Action": action,
            "Actor": {"ID": id, "Attributes": attrs},
            "scope": "local", "time": 1_700_000_000, "timeNano": 1_700_000_000_123_456_789i64,
        })
        .to_string()
    }

    /// The same line's attributes copied whole, never shared.
    fn copied(line: &str) -> Attributes {
        #[derive(serde::Deserialize)]
        struct Line {
            #[serde(rename = "Actor")]
            actor: Actor,
        }
        #[derive(serde::Deserialize)]
        struct Actor {
            #[serde(rename = "Attributes")]
            attributes: Attributes,
        }
        let line: Line = serde_json::from_str(line).expect("an event line");
        line.actor.attributes
    }

    /// The event as decoded, checked to have the same attributes (pairs,
    /// order, lookups, identity) as if it shared nothing.
    fn decode_same(line: &str) -> Event {
        let event = Event::decode(line.as_bytes()).expect("an event");
        let whole = copied(line);
        assert_eq!(event.attributes, whole);
        assert_eq!(
            event.attributes.iter().collect::<Vec<_>>(),
            whole.iter().collect::<Vec<_>>()
        );
        assert_eq!(event.attributes.len(), whole.len());
        for (k, v) in whole.iter() {
            assert_eq!(event.attr(k), Some(v), "{k}");
        }
        assert_eq!(event.attr("nope"), None);
        let mut plain = event.clone();
        plain.attributes = whole;
        assert_eq!(event.identity(), plain.identity());
        assert_eq!(event.fingerprint(), plain.fingerprint());
        event
    }

    #[test]
    fn a_containers_events_share_its_labels_and_keep_their_own_keys() {
        let id = "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6abcd";
        let create = decode_same(&line("create", id, &[], "web-1"));
        assert!(create.attributes.is_shared());
        assert_eq!(create.attributes.own_bytes(), 0);
        // execID sorts between the labels and image: wire order is kept.
        let exec = decode_same(&line(
            "exec_start: sh -c date",
            id,
            &[("execID", "e0123")],
            "web-1",
        ));
        assert!(exec.attributes.is_shared());
        assert_eq!(exec.attributes.own_bytes(), "execIDe0123".len());
        assert!(exec.attributes.is_exact());
        let die = decode_same(&line(
            "die",
            id,
            &[("exitCode", "3"), ("execID", "x")],
            "web-1",
        ));
        assert_eq!(die.attributes.own_bytes(), "execIDxexitCode3".len());
        // A label the same as a shared pair's key cannot hide: a renamed
        // container's name differs, and its pairs are shared anew.
        let renamed = decode_same(&line("rename", id, &[("oldName", "/web-1")], "web-2"));
        assert_eq!(renamed.attributes.own_bytes(), "oldName/web-1".len());
        let after = decode_same(&line("start", id, &[], "web-2"));
        assert_eq!(after.attributes.own_bytes(), 0);
        // Other actors, and other orders, decode the same.
        decode_same(&line("start", "other", &[], "db-1"));
        let shuffled = format!(
            r#"{{"Type":"container","Action":"start","Actor":{{"ID":"{id}","Attributes":{{"name":"web-2","image":"busybox:latest","com.docker.compose.service":"web","com.docker.compose.project":"shop"}}}},"timeNano":7}}"#
        );
        decode_same(&shuffled);
        decode_same(&line("start", id, &[("com.example.new", "1")], "web-2"));
        decode_same(&line("start", id, &[], "web-2"));
        // Networks' events are not shared.
        let net = Event::decode(br#"{"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":"c","name":"front","type":"bridge"}},"timeNano":1}"#)
            .expect("an event");
        assert!(!net.attributes.is_shared());
        assert_eq!(net.attr("container"), Some("c"));
    }

    #[test]
    fn a_destroyed_containers_pairs_are_let_go_and_the_table_is_bounded() {
        let mut table = Interned::default();
        let mut pairs = Pairs::default();
        pairs.add("name", "x");
        for i in 0..MAX_INTERNED + 10 {
            table.attributes(&format!("c{i}"), &pairs, false);
        }
        assert!(table.len() <= MAX_INTERNED, "{}", table.len());
        let a = table.attributes("gone", &pairs, true);
        assert_eq!(a.get("name"), Some("x"));
        assert!(!table.by_actor.contains_key("gone"));
    }

    #[test]
    fn pushed_pairs_follow_shared_ones() {
        let mut table = Interned::default();
        let mut pairs = Pairs::default();
        pairs.add("execID", "e");
        pairs.add("name", "x");
        let mut a = table.attributes("c", &pairs, false);
        a.push("extra", "1");
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [("execID", "e"), ("name", "x"), ("extra", "1")]
        );
        assert_eq!(a.len(), 3);
        assert_eq!(a.get("extra"), Some("1"));
    }
}
