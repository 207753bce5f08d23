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
    /// (key start, key end = value start, value end) in `buf`, in wire order.
    spans: Vec<(u32, u32, u32)>,
}

impl Attributes {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|&(k, v, e)| {
            let (k, v, e) = (k as usize, v as usize, e as usize);
            (&self.buf[k..v], &self.buf[v..e])
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Every key and value back to back, and their boundaries (key start,
    /// value start, value end) in wire order.
    pub(crate) fn raw(&self) -> (&str, &[(u32, u32, u32)]) {
        (&self.buf, &self.spans)
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
        if let (Ok(k), Ok(v), Ok(e)) = (u32::try_from(k), u32::try_from(v), u32::try_from(e)) {
            self.spans.push((k, v, e));
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

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut a = Attributes::default();
                while let Some((k, v)) =
                    map.next_entry::<MaybeBorrowed<'de>, MaybeBorrowed<'de>>()?
                {
                    a.push(&k.0, &v.0);
                }
                Ok(a)
            }
            fn visit_unit<E>(self) -> Result<Attributes, E> {
                Ok(Attributes::default())
            }
        }
        d.deserialize_any(V)
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
    pub(super) attributes: Option<Attributes>,
}
