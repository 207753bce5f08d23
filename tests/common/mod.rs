//! Shared helpers for dockwarden's integration tests.
//!
//! Every integration test talks to the real Docker Engine (there is no mock):
//! call [`require_docker`] (and [`require_test_image`] if the test starts
//! containers) first, so a missing engine fails the test with a message that
//! says how to fix it instead of an obscure error. Integration tests run one at
//! a time (`scripts/test` passes `--test-threads=1`) because they all watch the
//! engine's one global event stream.
//!
//! Use it from a test file with `mod common;` (and `use common::proxy::FaultProxy;`
//! for the fault-injecting proxy in front of the engine socket). Everything in
//! the modules below except the proxy, the API helpers ([`api`]) and
//! [`deploy`] is re-exported here, so `common::docker_ok`
//! and `common::engine::docker_ok` are the same function:
//!
//! * [`api`]: the status API, each answer checked against `docs/api.yaml`;
//! * [`deploy`]: the dockwarden image and what every deployment test
//!   checks (published port, health, a heal);
//! * [`engine`]: the Docker Engine, the test image, the `docker` CLI, the
//!   engine's own events, [`Cleanup`];
//! * [`sidecar`]: [`Dockwarden`], the dockwarden binary under test;
//! * [`http`]: a tiny HTTP/1.x client;
//! * [`prom`]: Prometheus text-format parsing ([`Metrics`]);
//! * [`process`]: unique names, temp dirs, polling, commands with a timeout;
//! * [`proxy`]: [`proxy::FaultProxy`], which breaks the engine connection on
//!   purpose.
//! * [`tls`]: certificates made in the test and [`tls::Stunnel`], a real
//!   TLS terminator in front of the engine socket.
#![allow(dead_code)]

pub mod api;
pub mod deploy;
pub mod engine;
pub mod http;
pub mod process;
pub mod prom;
pub mod prometheus;
pub mod proxy;
pub mod receiver;
pub mod sidecar;
pub mod tls;

// Each test file uses only some of them.
#[allow(unused_imports)]
pub use {engine::*, http::*, process::*, prom::*, sidecar::*};
