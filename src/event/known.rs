//! The fixed sets of event types and actions: metric labels that a raw
//! action string can never extend, and the shared static strings of every
//! known `type.action` key.
//!
//! Owns the table; it must not decode or match events.

use std::sync::OnceLock;

use super::Labels;

/// The label value for a type or action nobody knows.
pub const OTHER: &str = "other";

/// Event types and their actions as documented by the Engine API. Anything
/// else is labelled [`OTHER`] but still counted and dispatched.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "container",
        &[
            "attach",
            "commit",
            "copy",
            "create",
            "destroy",
            "detach",
            "die",
            "exec_create",
            "exec_detach",
            "exec_die",
            "exec_start",
            "export",
            "health_status",
            "kill",
            "oom",
            "pause",
            "prune",
            "rename",
            "resize",
            "restart",
            "start",
            "stop",
            "top",
            "unpause",
            "update",
        ],
    ),
    (
        "image",
        &[
            "create", "delete", "import", "load", "prune", "pull", "push", "save", "tag", "untag",
        ],
    ),
    (
        "network",
        &[
            "connect",
            "create",
            "destroy",
            "disconnect",
            "prune",
            "remove",
            "update",
        ],
    ),
    (
        "volume",
        &["create", "destroy", "mount", "prune", "unmount"],
    ),
    ("plugin", &["disable", "enable", "install", "remove"]),
    ("daemon", &["reload"]),
    ("service", &["create", "remove", "update"]),
    ("node", &["create", "remove", "update"]),
    ("secret", &["create", "remove", "update"]),
    ("config", &["create", "remove", "update"]),
    ("builder", &["prune"]),
    // dockwarden's own decisions, dispatched through the rules after the
    // engine event that caused them (see `internal_events`).
    (
        "dockwarden",
        &[
            "breaker_closed",
            "breaker_open",
            "exec",
            "raise_memory",
            "recreate",
            "restart",
            "resync",
            "started",
            "stop",
            "stream_lost",
            "stream_restored",
            "suppressed",
        ],
    ),
];

/// A known `(type, action)` with its static strings.
pub(super) struct Known {
    pub(super) typ: &'static str,
    pub(super) action: &'static str,
    pub(super) key: &'static str,
    pub(super) labels: Labels,
}

/// The static strings of a known `(type, action)`, built once.
pub(super) fn known(typ: &str, action: &str) -> Option<&'static Known> {
    type Table = foldhash::HashMap<&'static str, foldhash::HashMap<&'static str, Known>>;
    static TABLE: OnceLock<Table> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        KNOWN
            .iter()
            .map(|(t, actions)| {
                let by_action = actions
                    .iter()
                    .map(|a| {
                        let key: &'static str = Box::leak(format!("{t}.{a}").into_boxed_str());
                        let known = Known {
                            typ: t,
                            action: a,
                            key,
                            labels: Labels { typ: t, action: a },
                        };
                        (*a, known)
                    })
                    .collect();
                (*t, by_action)
            })
            .collect()
    });
    table.get(typ)?.get(action)
}

/// Maps a type and a normalised action onto the fixed label sets.
pub fn labels_for(typ: &str, action: &str) -> Labels {
    match KNOWN.iter().find(|(t, _)| *t == typ) {
        Some((t, actions)) => Labels {
            typ: t,
            action: actions
                .iter()
                .find(|a| **a == action)
                .copied()
                .unwrap_or(OTHER),
        },
        None => Labels {
            typ: OTHER,
            action: OTHER,
        },
    }
}

/// Every `(type, action)` label pair that can appear, for pre-registering
/// series and for tests.
pub fn known_labels() -> impl Iterator<Item = Labels> {
    KNOWN.iter().flat_map(|(t, actions)| {
        actions
            .iter()
            .copied()
            .chain(std::iter::once(OTHER))
            .map(move |a| Labels { typ: t, action: a })
    })
}
