//! What makes two events the same one: the one definition, used by the
//! source's replay dedup and by the checkpoint alike.
//!
//! Two events are the same when their time, type, raw action (with its
//! detail), actor and attributes are. The attributes count: two containers
//! connecting to one network in the same nanosecond are two `network.connect`
//! events that differ only in their `container` attribute.
//!
//! [`Event::fingerprint`] hashes those fields fast, seeded per process, for
//! the in-memory dedup window; [`Event::identity`] digests the same fields
//! with SHA-256, stable across processes, for `checkpoint.json`. It owns the
//! field walk both share; it must not decide what is a replay.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::Event;
use super::wire::Attributes;

/// Receives an event's identifying fields, in one fixed order.
trait Feed {
    fn word(&mut self, w: u64);
    /// A field of bytes; implementations mix in the length so field
    /// boundaries count.
    fn bytes(&mut self, b: &[u8]);
    /// The attributes: their count, then each key and value.
    fn attributes(&mut self, a: &Attributes) {
        self.word(a.len() as u64);
        for (k, v) in a.iter() {
            self.bytes(k.as_bytes());
            self.bytes(v.as_bytes());
        }
    }
}

/// The one list of what identifies an event.
fn walk(event: &Event, f: &mut impl Feed) {
    f.word(event.time_nano as u64);
    f.bytes(event.typ.as_bytes());
    f.bytes(event.action.as_bytes());
    match &event.detail {
        Some(d) => {
            f.word(1);
            f.bytes(d.as_bytes());
        }
        None => f.word(0),
    }
    f.bytes(event.actor_id.as_bytes());
    f.attributes(&event.attributes);
}

/// foldhash's fast hasher (the one hashbrown uses), seeded per process.
struct FastHash(foldhash::fast::FoldHasher<'static>);

impl Feed for FastHash {
    fn word(&mut self, w: u64) {
        self.0.write_u64(w);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.write_usize(b.len());
        self.0.write(b);
    }

    /// The same information in one pass (the dedup window hashes every
    /// event): each pair's key and value lengths, then all their bytes,
    /// which the attributes keep back to back.
    fn attributes(&mut self, a: &Attributes) {
        self.word(a.len() as u64);
        let (buf, spans) = a.raw();
        for (k, v, e) in spans {
            self.word(u64::from(v - k) << 32 | u64::from(e - v));
        }
        self.bytes(buf.as_bytes());
    }
}

impl Feed for Sha256 {
    fn word(&mut self, w: u64) {
        self.update(w.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.update((b.len() as u64).to_le_bytes());
        self.update(b);
    }
}

/// An event's identity across processes: the first 128 bits of a SHA-256
/// over its identifying fields, written as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity([u8; 16]);

impl Event {
    /// The event's identity within this process, for the dedup window:
    /// foldhash, seeded per process, so nobody who controls label text can
    /// aim a collision at a recent event.
    pub fn fingerprint(&self) -> u64 {
        static SEED: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
        let mut h = FastHash(SEED.get_or_init(Default::default).build_hasher());
        walk(self, &mut h);
        h.0.finish()
    }

    /// The event's identity across processes, for the checkpoint.
    pub fn identity(&self) -> Identity {
        let mut h = Sha256::new();
        walk(self, &mut h);
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Identity(id)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Identity {
    type Err = String;

    fn from_str(s: &str) -> Result<Identity, String> {
        let bad = || format!("not an event identity (32 hex digits): {s:?}");
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Identity(id))
    }
}

impl Serialize for Identity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Identity, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `connect("c-aaa")`'s identity as every release so far wrote it.
    const PINNED_CONNECT_IDENTITY: &str = "8c2c4cda40f2128214b006ddd285ee03";

    fn connect(container: &str) -> Event {
        let line = format!(
            r#"{{"Type":"network","Action":"connect","Actor":{{"ID":"net1","Attributes":{{"container":"{container}","name":"backend","type":"bridge"}}}},"scope":"local","timeNano":1700000000000000001}}"#
        );
        Event::decode(line.as_bytes()).expect("decodes")
    }

    #[test]
    fn two_connects_in_one_nanosecond_differing_only_in_container_are_two_events() {
        let (a, b) = (connect("c-aaa"), connect("c-bbb"));
        assert_eq!(a.time_nano, b.time_nano);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.identity(), b.identity());
        // The same event read twice is the same.
        assert_eq!(a.fingerprint(), connect("c-aaa").fingerprint());
        assert_eq!(a.identity(), connect("c-aaa").identity());
    }

    #[test]
    fn field_boundaries_count() {
        let line = |action: &str, id: &str| {
            format!(
                r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"{id}"}},"timeNano":5}}"#
            )
        };
        let a = Event::decode(line("exec_start: ab", "c").as_bytes()).expect("decodes");
        let b = Event::decode(line("exec_start: a", "bc").as_bytes()).expect("decodes");
        assert_ne!(a.identity(), b.identity());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn attribute_boundaries_count() {
        let line = |attrs: &str| {
            format!(
                r#"{{"Type":"container","Action":"start","Actor":{{"ID":"c","Attributes":{attrs}}},"timeNano":5}}"#
            )
        };
        let events: Vec<Event> = [
            r#"{"ab":"c"}"#,
            r#"{"a":"bc"}"#,
            r#"{"a":"b","c":""}"#,
            r#"{"a":"","bc":""}"#,
            r#"{"abc":""}"#,
            r#"{}"#,
        ]
        .iter()
        .map(|a| Event::decode(line(a).as_bytes()).expect("decodes"))
        .collect();
        for (i, a) in events.iter().enumerate() {
            for b in &events[i + 1..] {
                assert_ne!(a.fingerprint(), b.fingerprint(), "{a} vs {b}");
                assert_ne!(a.identity(), b.identity(), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn identity_is_stable_across_releases() {
        // `checkpoint.json` keeps identities: the digest of an event must
        // not change, or a restart after an upgrade misreads its anchor.
        assert_eq!(
            connect("c-aaa").identity().to_string(),
            PINNED_CONNECT_IDENTITY
        );
    }

    #[test]
    fn identity_is_stable_text_that_round_trips() {
        let id = connect("c-aaa").identity();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(text.parse::<Identity>(), Ok(id));
        let json = serde_json::to_string(&id).expect("encodes");
        assert_eq!(
            serde_json::from_str::<Identity>(&json).expect("decodes"),
            id
        );
        assert!("container|start|c1".parse::<Identity>().is_err());
    }
}
