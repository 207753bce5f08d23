//! dockwarden: a sidecar that reads the Docker Engine's event stream and
//! dispatches each event, by its `type.action` key, to handlers wired by a
//! TOML rules file.
//!
//! The pipeline, in the order an event travels:
//! [`source`] (the one `/events` reader) → [`event`] (decode, normalise) →
//! [`dispatch`] (match [`rules`], order per container, keep [`containers`]
//! current) → [`handlers`] (act; the `notify` handler hands messages to
//! [`notify`], which delivers them) — with [`internal_events`] logging and
//! counting dockwarden's own decisions in [`metrics`], and [`http`] serving
//! them. [`app`] wires it together; [`replay`] runs a recorded stream
//! through the rules offline; `main.rs` is the CLI.
//!
//! Layers, bottom to top (a module uses only those below it; checked by
//! `tests/layering.rs`): `clock`, `lock`, `json`, `event`, `config`, `mem` → `metrics`,
//! `docker` → `internal_events` → `audit`, `containers`, `notify`, `progress` →
//! `handlers` → `rules` → `dispatch` → `resync`, `source`, `reload` → `http`
//! → `app`, `status`, `health`, `replay`.

pub mod app;
pub mod audit;
pub mod clock;
pub mod config;
pub mod containers;
pub mod dispatch;
pub mod docker;
pub mod event;
pub mod handlers;
pub mod health;
pub mod history;
pub mod http;
pub mod internal_events;
pub mod json;
pub mod lock;
/// The static (musl) build's memcpy and friends; see the module.
#[cfg(target_arch = "x86_64")]
pub mod mem;
pub mod metrics;
pub mod notify;
pub mod progress;
pub mod reload;
pub mod replay;
pub mod resync;
pub mod rules;
pub mod source;
pub mod status;
/// Temp files for unit tests.
#[cfg(test)]
mod test_files;
