//! The wire shape of an `/events` line, decoded borrowing from the input
//! where it can, and its attributes decoded into [`Attributes`].
//!
//! Owns the serde side of decoding; it must not normalise actions or pick
//! labels (that is `Event::new` and `known`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use super::attributes::{Attributes, Interned, Pairs};

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

thread_local! {
    /// Where a decode collects an event's attributes before they are copied
    /// out at their exact size: grown pair by pair, the two buffers of every
    /// event would be reallocated a dozen times and held with up to half
    /// their capacity unused while the event waits in the queue.
    static SCRATCH: RefCell<Pairs> = RefCell::default();
    /// The pairs each container's events share, for the events this thread
    /// decodes (the reader's).
    static INTERNED: RefCell<Interned> = RefCell::default();
}

/// A scratch buffer grown past this by an outsized event is not kept.
const SCRATCH_KEPT_BYTES: usize = 64 * 1024;

/// A string borrowed from the input when it has no escapes.
struct MaybeBorrowed<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MaybeBorrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeBorrowed<'de>;
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
        d.deserialize_str(V)
    }
}

/// Decodes a map of strings into the thread's scratch pairs, and makes
/// attributes of them with `finish` (or of a fresh buffer, were the scratch
/// in use: `finish` is told which).
fn decode_map<'de, A: MapAccess<'de>, T>(
    mut map: A,
    finish: fn(&Pairs, bool) -> T,
) -> Result<T, A::Error> {
    let mut fill = |a: &mut Pairs| {
        while let Some((k, v)) = map.next_entry::<MaybeBorrowed<'de>, MaybeBorrowed<'de>>()? {
            a.add(&k.0, &v.0);
        }
        Ok(())
    };
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut a) => {
            // An outsized event's buffer is let go at the next decode (the
            // one before may still be read from the scratch).
            if a.capacity() > SCRATCH_KEPT_BYTES {
                *a = Pairs::default();
            }
            a.clear();
            fill(&mut a).map(|()| finish(&a, true))
        }
        // Not reentrant, but never a panic if it were.
        Err(_) => {
            let mut a = Pairs::default();
            fill(&mut a).map(|()| finish(&a, false))
        }
    })
}

/// A map of strings, or null (no attributes), for `T`.
struct MapOf<T>(fn(&Pairs, bool) -> T, T);

impl<'de, T> Visitor<'de> for MapOf<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        decode_map(map, self.0)
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(self.1)
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MapOf(
            |pairs, _| Attributes::copied(pairs),
            Attributes::default(),
        ))
    }
}

/// An actor's attributes as decoded: left in the thread's scratch pairs
/// until [`finish`](ActorAttributes::finish) knows whose they are.
pub(super) enum ActorAttributes {
    InScratch,
    Copied(Attributes),
}

impl<'de> Deserialize<'de> for ActorAttributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Copied only when the scratch was in use, and for null.
        d.deserialize_any(MapOf(
            |pairs, in_scratch| match in_scratch {
                true => ActorAttributes::InScratch,
                false => ActorAttributes::Copied(Attributes::copied(pairs)),
            },
            ActorAttributes::Copied(Attributes::default()),
        ))
    }
}

impl ActorAttributes {
    /// The attributes, shared with the container's earlier events where
    /// they are the same when `container` is the container's ID (and
    /// forgotten after, if `last`: it was destroyed).
    pub(super) fn finish(self, container: Option<&str>, last: bool) -> Attributes {
        match self {
            ActorAttributes::Copied(a) => a,
            ActorAttributes::InScratch => SCRATCH.with(|scratch| {
                let Ok(pairs) = scratch.try_borrow() else {
                    return Attributes::default();
                };
                match container {
                    Some(id) => INTERNED.with(|interned| match interned.try_borrow_mut() {
                        Ok(mut interned) => interned.attributes(id, &pairs, last),
                        Err(_) => Attributes::copied(&pairs),
                    }),
                    None => Attributes::copied(&pairs),
                }
            }),
        }
    }
}

/// The wire shape, borrowed from the input where it can be. Unknown fields
/// (the legacy `status`/`id`/`from`) are ignored.
#[derive(Deserialize)]
pub(super) struct Wire<'a> {
    #[serde(rename = "Type", borrow, default)]
    pub(super) typ: Option<Cow<'a, str>>,
    #[serde(rename = "Action", borrow, default)]
    pub(super) action: Option<Cow<'a, str>>,
    #[serde(rename = "Actor", borrow, default)]
    pub(super) actor: Option<WireActor<'a>>,
    #[serde(borrow, default)]
    pub(super) scope: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) time: Option<i64>,
    #[serde(rename = "timeNano", default)]
    pub(super) time_nano: Option<i64>,
}

#[derive(Deserialize)]
pub(super) struct WireActor<'a> {
    #[serde(rename = "ID", borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(rename = "Attributes", default)]
    pub(super) attributes: Option<ActorAttributes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Attributes {
        serde_json::from_str(json).expect("a map of strings")
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
        assert!(small.is_exact());
        // An outsized event is not kept as scratch: the next is still right.
        let huge = format!(r#"{{"k":"{}"}}"#, "y".repeat(SCRATCH_KEPT_BYTES + 1));
        assert_eq!(
            decode(&huge).get("k").map(str::len),
            Some(SCRATCH_KEPT_BYTES + 1)
        );
        assert_eq!(decode(r#"{"k":"z"}"#).get("k"), Some("z"));
        assert_eq!(decode("{}"), Attributes::default());
        assert!(serde_json::from_str::<Attributes>(r#"{"a":"1","b":2}"#).is_err());
        assert_eq!(
            decode(r#"{"a":"1"}"#).iter().collect::<Vec<_>>(),
            [("a", "1")]
        );
    }
}
