//! The wire shape of an `/events` line and the compact [`Attributes`] map,
//! decoded borrowing from the input where it can.
//!
//! Owns the serde side of decoding; it must not normalise actions or pick
//! labels (that is `Event::new` and `known`).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

/// `Actor.Attributes`, compactly: every key and value in one string, with
/// their boundaries; two allocations however many labels a container has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes {
    buf: String,
    /// (key end = value start, value end) in `buf`, in wire order: a key
    /// starts where the pair before it ends. 8 bytes a pair, not 12 (with
    /// each key's start): every queued event holds a dozen or more.
    spans: Vec<(u32, u32)>,
}

impl Attributes {
    /// Handlers, rules and the view look up a few keys in every event: a
    /// key's length is compared before its bytes, and no slice is made of
    /// the pairs that cannot match.
    pub fn get(&self, key: &str) -> Option<&str> {
        let bytes = self.buf.as_bytes();
        self.triples()
            .find(|&(k, v, _)| {
                (v - k) as usize == key.len()
                    && bytes.get(k as usize..v as usize) == Some(key.as_bytes())
            })
            .and_then(|(_, v, e)| self.buf.get(v as usize..e as usize))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.triples().map(|(k, v, e)| {
            let (k, v, e) = (k as usize, v as usize, e as usize);
            (&self.buf[k..v], &self.buf[v..e])
        })
    }

    /// (key start, value start, value end) of each pair, in wire order.
    fn triples(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        self.spans.iter().scan(0, |start, &(v, e)| {
            let k = std::mem::replace(start, e);
            Some((k, v, e))
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Every key and value back to back, and their boundaries (key start,
    /// value start, value end) in wire order.
    pub(crate) fn raw(&self) -> (&str, impl Iterator<Item = (u32, u32, u32)> + '_) {
        (&self.buf, self.triples())
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Adds a pair (the engine's JSON object has unique keys).
    pub fn push(&mut self, key: &str, value: &str) {
        let k = self.buf.len();
        self.buf.push_str(key);
        let v = self.buf.len();
        self.buf.push_str(value);
        let e = self.buf.len();
        match (u32::try_from(v), u32::try_from(e)) {
            (Ok(v), Ok(e)) => self.spans.push((v, e)),
            // Past 4 GiB (never from a 16 MiB line): not kept, and the
            // buffer keeps only what the spans reach.
            _ => self.buf.truncate(k),
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

thread_local! {
    /// Where a decode collects an event's attributes before they are copied
    /// out at their exact size: grown pair by pair, the two buffers of every
    /// event would be reallocated a dozen times and held with up to half
    /// their capacity unused while the event waits in the queue.
    static SCRATCH: std::cell::RefCell<Attributes> = std::cell::RefCell::default();
}

/// A scratch buffer grown past this by an outsized event is not kept.
const SCRATCH_KEPT_BYTES: usize = 64 * 1024;

/// A string borrowed from the input when it has no escapes.
pub(super) struct MaybeBorrowed<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeBorrowed<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MaybeBorrowed<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut fill = |a: &mut Attributes| {
                    while let Some((k, v)) =
                        map.next_entry::<MaybeBorrowed<'de>, MaybeBorrowed<'de>>()?
                    {
                        a.push(&k.0, &v.0);
                    }
                    Ok(())
                };
                SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
                    Ok(mut a) => {
                        a.buf.clear();
                        a.spans.clear();
                        // A clone allocates exactly what it copies.
                        let decoded = fill(&mut a).map(|()| a.clone());
                        if a.buf.capacity() > SCRATCH_KEPT_BYTES {
                            *a = Attributes::default();
                        }
                        decoded
                    }
                    // Not reentrant, but never a panic if it were.
                    Err(_) => {
                        let mut a = Attributes::default();
                        fill(&mut a).map(|()| a)
                    }
                })
            }
            fn visit_unit<E>(self) -> Result<Attributes, E> {
                Ok(Attributes::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// The wire shape, borrowed from the input where it can be. Unknown fields
/// (the legacy `status`/`id`/`from`, and `scope`, which nothing reads) are
/// ignored.
#[derive(Deserialize)]
pub(super) struct Wire<'a> {
    // Not `Option<Cow<str>>`: serde borrows a `Cow` only when it is the
    // field's whole type, and allocated these three for every event.
    #[serde(rename = "Type", borrow, default)]
    pub(super) typ: Option<MaybeBorrowed<'a>>,
    #[serde(rename = "Action", borrow, default)]
    pub(super) action: Option<MaybeBorrowed<'a>>,
    #[serde(rename = "Actor", borrow, default)]
    pub(super) actor: Option<WireActor<'a>>,
    #[serde(default)]
    pub(super) time: Option<i64>,
    #[serde(rename = "timeNano", default)]
    pub(super) time_nano: Option<i64>,
}

#[derive(Deserialize)]
pub(super) struct WireActor<'a> {
    #[serde(rename = "ID", borrow, default)]
    pub(super) id: Option<MaybeBorrowed<'a>>,
    #[serde(rename = "Attributes", default)]
    pub(super) attributes: Option<Attributes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Attributes {
        serde_json::from_str(json).expect("a map of strings")
    }

    #[test]
    fn an_event_s_strings_are_borrowed_from_the_line_unless_escaped() {
        let line = r#"{"Type":"container","Action":"exec_start: sh \u003e f","Actor":{"ID":"abc","Attributes":{}},"scope":"local","timeNano":1}"#;
        let wire: Wire<'_> = serde_json::from_str(line).expect("an event");
        let borrowed = |m: &Option<MaybeBorrowed<'_>>| match m {
            Some(MaybeBorrowed(Cow::Borrowed(_))) => Some(true),
            Some(MaybeBorrowed(Cow::Owned(_))) => Some(false),
            None => None,
        };
        assert_eq!(borrowed(&wire.typ), Some(true));
        assert_eq!(borrowed(&wire.actor.and_then(|a| a.id)), Some(true));
        // An escape needs a copy (Go's encoder writes `>` as `\u003e`); it
        // is still the right text.
        assert_eq!(borrowed(&wire.action), Some(false));
        assert_eq!(
            wire.action.map(|a| a.0.into_owned()).as_deref(),
            Some("exec_start: sh > f")
        );
    }

    #[test]
    fn decoded_attributes_are_exact_and_independent_of_the_previous_decode() {
        let long = format!(
            r#"{{"name":"web-1","com.example.long":"{}"}}"#,
            "x".repeat(5000)
        );
        let big = decode(&long);
        assert_eq!(big.get("com.example.long").map(str::len), Some(5000));
        let small = decode(r#"{"image":"busybox","name":"db-\u0031"}"#);
        assert_eq!(
            small.iter().collect::<Vec<_>>(),
            [("image", "busybox"), ("name", "db-1")]
        );
        assert_eq!(small.get("name"), Some("db-1"));
        assert_eq!(small.get("nam"), None);
        assert_eq!(small.get("image"), Some("busybox"));
        assert_eq!(small.get("busybox"), None);
        assert_eq!(small.buf.capacity(), small.buf.len());
        assert_eq!(small.spans.capacity(), small.spans.len());
        // An outsized event is not kept as scratch: the next is still right.
        let huge = format!(r#"{{"k":"{}"}}"#, "y".repeat(SCRATCH_KEPT_BYTES + 1));
        assert_eq!(
            decode(&huge).get("k").map(str::len),
            Some(SCRATCH_KEPT_BYTES + 1)
        );
        assert_eq!(decode("{}"), Attributes::default());
        assert!(serde_json::from_str::<Attributes>(r#"{"a":"1","b":2}"#).is_err());
        assert_eq!(
            decode(r#"{"a":"1"}"#).iter().collect::<Vec<_>>(),
            [("a", "1")]
        );
    }
}
