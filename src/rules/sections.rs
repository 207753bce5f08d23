//! The sections of the rules file that are not rules: `[server]`,
//! `[source]`, `[state]`, `[dispatch]`, `[audit]`, `[api]`, `[notify]` (read by
//! `crate::notify::read`, secret files included) and `[engine]` (read by
//! `crate::docker::settings::read`; its certificate files are checked only by
//! [`engine_file_problems`], for `dockwarden check`), each read through a
//! [`Table`] with its defaults and ranges. They take effect at start; a
//! reload reads them only to validate the file.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::Range;

use crate::audit::{AuditConfig, Fsync};
use crate::config::diag::{Collector, Diagnostics};
use crate::config::table::Table;
use crate::docker::EngineConfig;
use crate::notify::NotifyConfig;

/// Listen address when neither the file nor `--listen` gives one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

/// `[server]`: the HTTP endpoint and process lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address for `/metrics`, `/healthz`, `/readyz`.
    pub listen: Option<SocketAddr>,
    /// How long running handlers get to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// A file holding the bearer token `POST /-/reload` requires; without
    /// it the endpoint refuses every request.
    pub token_file: Option<std::path::PathBuf>,
    /// A file holding the bearer token the read-only `/api/v1` requires
    /// (the reload token may read too); without it the API refuses.
    pub api_token_file: Option<std::path::PathBuf>,
}

/// `[api]`: the read-only status API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// How long one container's stats reading is reused.
    pub stats_cache_secs: u64,
    /// Lifecycle entries kept per container.
    pub history_per_container: usize,
    /// How long a destroyed container's history is still served.
    pub history_keep_secs: u64,
    /// Events the recent event ring holds.
    pub event_ring: usize,
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Directory of `checkpoint.json`.
    pub dir: std::path::PathBuf,
}

/// `[source]`: the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// Silence after which the engine is pinged; no answer → reconnect.
    pub idle_ping_secs: u64,
    /// Down this long, the stream is reported lost (`dockwarden.stream_lost`).
    pub lost_after_secs: u64,
}

/// `[dispatch]`: the queue between the stream reader and the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchConfig {
    /// Events the reader may queue before it starts dropping (and counting)
    /// them rather than stall the stream.
    pub queue_capacity: usize,
    /// Handler runs in flight at once, across all containers.
    pub max_concurrency: usize,
}

/// Every section but the rules.
pub struct Sections {
    pub server: ServerConfig,
    pub source: SourceConfig,
    pub state: StateConfig,
    pub dispatch: DispatchConfig,
    pub audit: AuditConfig,
    pub api: ApiConfig,
    /// `[notify.targets.NAME]`: where the `notify` handler sends.
    pub notify: NotifyConfig,
    /// `[engine]`: where the engine is, and TLS.
    pub engine: EngineConfig,
}

/// Reads the sections from the file's top table; problems go to `diags`.
pub fn read(top: &mut Table<'_, '_>, span: &Range<usize>, diags: &RefCell<Collector>) -> Sections {
    let mut server = top
        .table("server", "[server]")
        .unwrap_or_else(|| Table::absent("[server]", span.clone(), diags));
    let listen = server.str("listen").and_then(|(v, s)| match v.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            server.error(
                s,
                format!("`listen` in [server] must be an address like \"{DEFAULT_LISTEN}\", found \"{v}\""),
            );
            None
        }
    });
    let server_config = ServerConfig {
        listen,
        shutdown_grace_secs: server.u64_in("shutdown_grace_secs", 10, 0..3601),
        token_file: server.str("token_file").map(|(p, _)| p.into()),
        api_token_file: server.str("api_token_file").map(|(p, _)| p.into()),
    };
    server.finish();

    let mut source_table = top
        .table("source", "[source]")
        .unwrap_or_else(|| Table::absent("[source]", span.clone(), diags));
    let source_config = SourceConfig {
        idle_ping_secs: source_table.u64_in("idle_ping_secs", 30, 1..86_401),
        lost_after_secs: source_table.u64_in("lost_after_secs", 30, 1..86_401),
    };
    source_table.finish();

    let mut state_table = top
        .table("state", "[state]")
        .unwrap_or_else(|| Table::absent("[state]", span.clone(), diags));
    let state_config = StateConfig {
        dir: state_table
            .str("dir")
            .map_or_else(|| "/var/lib/dockwarden".into(), |(d, _)| d.into()),
    };
    state_table.finish();

    let mut dispatch = top
        .table("dispatch", "[dispatch]")
        .unwrap_or_else(|| Table::absent("[dispatch]", span.clone(), diags));
    let dispatch_config = DispatchConfig {
        queue_capacity: dispatch.u64_in("queue_capacity", 8192, 16..10_000_001) as usize,
        max_concurrency: dispatch.u64_in("max_concurrency", 64, 1..10_001) as usize,
    };
    dispatch.finish();

    let mut audit = top
        .table("audit", "[audit]")
        .unwrap_or_else(|| Table::absent("[audit]", span.clone(), diags));
    let defaults = AuditConfig::default();
    let audit_config = AuditConfig {
        path: match audit.str("path") {
            Some(("", s)) => {
                audit.error(
                    s,
                    "`path` in [audit] must not be empty (\"-\" means stdout)",
                );
                defaults.path
            }
            Some((p, _)) => p.into(),
            None => defaults.path,
        },
        max_bytes: audit.u64_in("max_bytes", defaults.max_bytes, 1024..(1u64 << 50)),
        keep: audit.u64_in("keep", u64::from(defaults.keep), 0..10_001) as u32,
        fsync: match audit.choice("fsync", &["always", "interval", "never"], "interval") {
            "always" => Fsync::Always,
            "never" => Fsync::Never,
            _ => Fsync::Interval,
        },
        buffer_records: audit.u64_in(
            "buffer_records",
            defaults.buffer_records as u64,
            1..100_000_001,
        ) as usize,
        host: audit.str("host").map(|(h, _)| h.to_owned()),
    };
    audit.finish();

    let mut api = top
        .table("api", "[api]")
        .unwrap_or_else(|| Table::absent("[api]", span.clone(), diags));
    let api_config = ApiConfig {
        stats_cache_secs: api.u64_in("stats_cache_secs", 2, 0..3601),
        history_per_container: api.u64_in("history_per_container", 200, 1..100_001) as usize,
        history_keep_secs: api.u64_in("history_keep_secs", 3600, 0..604_801),
        event_ring: api.u64_in("event_ring", 10_000, 1..10_000_001) as usize,
    };
    api.finish();

    let notify = crate::notify::read(top);
    let engine = crate::docker::settings::read(top, span);
    Sections {
        server: server_config,
        source: source_config,
        state: state_config,
        dispatch: dispatch_config,
        audit: audit_config,
        api: api_config,
        notify,
        engine,
    }
}

/// The certificate files `[engine]` names that cannot be used, as
/// diagnostics of `file` (whose text is `source`): `dockwarden check`
/// reports them; `run` does not refuse to start over them but keeps
/// retrying the engine, since a file may be mounted later.
pub fn engine_file_problems(file: &str, source: &str) -> Diagnostics {
    let mut found = Collector::default();
    read_top(source, |top, span| {
        let engine = crate::docker::settings::read(top, &span);
        for (span, message) in engine.file_problems() {
            found.error(span, message);
        }
    });
    found.finish(file, source)
}

/// Runs `read` on the top table of `source` and its span, for the problems
/// of the files it names only: its own problems are dropped (load_str
/// reports everything else).
fn read_top(source: &str, read: impl FnOnce(&mut Table<'_, '_>, std::ops::Range<usize>)) {
    let (root, _) = toml::de::DeTable::parse_recoverable(source);
    let scratch = RefCell::new(Collector::default());
    let mut top = Table::new(
        Some(root.get_ref()),
        root.span(),
        "the rules file",
        &scratch,
    );
    read(&mut top, root.span());
}

/// The shortest bearer token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The bearer token files `[server]` names that `run` could not use:
/// missing, unreadable or shorter than [`MIN_TOKEN_CHARS`], each at its
/// line. For `check` and for `run` at start, where they take effect; not a
/// reload (`[server]` waits for a restart, and a token file replaced
/// meanwhile must not refuse new rules) nor `replay` (offline, elsewhere).
pub fn token_file_problems(file: &str, source: &str) -> Diagnostics {
    let mut found = Collector::default();
    read_top(source, |top, _| {
        let Some(mut server) = top.table("server", "[server]") else {
            return;
        };
        for key in ["token_file", "api_token_file"] {
            let Some((path, span)) = server.str(key) else {
                continue;
            };
            match std::fs::read_to_string(path) {
                Ok(token) if token.trim().chars().count() >= MIN_TOKEN_CHARS => {}
                Ok(_) => found.error(
                    span,
                    format!(
                        "the token in `{key}` \"{path}\" must be at least {MIN_TOKEN_CHARS} characters"
                    ),
                ),
                Err(e) => found.error(span, format!("cannot read `{key}` \"{path}\": {e}")),
            }
        }
    });
    found.finish(file, source)
}

#[cfg(test)]
mod tests {
    use crate::handlers::Registry;
    use crate::rules::Config;

    fn load(src: &str) -> Result<Config, crate::rules::Diagnostics> {
        Config::load_str("t.toml", src, &Registry::builtin())
    }

    #[test]
    fn api_section_defaults_ranges_and_unknown_keys() {
        let c = load("").expect("empty file is valid");
        assert_eq!(
            (
                c.api.stats_cache_secs,
                c.api.history_per_container,
                c.api.history_keep_secs,
                c.api.event_ring
            ),
            (2, 200, 3600, 10_000)
        );
        assert_eq!(c.server.api_token_file, None);
        let token =
            crate::test_files::TempFile::new("sections", "api.token", Some(b"0123456789abcdef\n"));
        let c = load(&format!(
            "[server]\napi_token_file = \"{token}\"\n[api]\nevent_ring = 50\n"
        ))
        .expect("valid");
        assert_eq!(c.server.api_token_file, Some(token.to_path_buf()));
        assert_eq!(c.api.event_ring, 50);
        let d = load("[api]\nhistory_per_container = 0\ncolour = 1\n")
            .err()
            .expect("invalid");
        let text = d.to_string();
        assert!(text.contains("t.toml:2:25:"), "{text}");
        assert!(text.contains("history_per_container"), "{text}");
        assert!(text.contains("t.toml:3:1: unknown key `colour`"), "{text}");
    }

    #[test]
    fn engine_section_keys_and_file_problems() {
        let c = load("[engine]\nhost = \"tcp://h:2376\"\ntls_verify = true\ncert_path = \"/c\"\n")
            .expect("valid");
        assert_eq!(c.engine.host.as_deref(), Some("tcp://h:2376"));
        assert!(c.engine.tls_verify);
        assert_eq!(c.engine.cert_path.map(|p| p.path), Some("/c".into()));
        // A missing file is not a load error (run retries); check names it.
        let src = "[engine]\ntls_verify = true\nca_file = \"/nonexistent/ca.pem\"\nport = 2376\n";
        let d = load(src).err().expect("unknown key");
        assert_eq!(d.items.len(), 1, "{d}");
        assert!(
            d.to_string()
                .contains("t.toml:4:1: unknown key `port` in [engine]"),
            "{d}"
        );
        let files = super::engine_file_problems("t.toml", src).to_string();
        assert_eq!(
            files,
            "t.toml:3:11: `ca_file` in [engine]: cannot use the TLS CA certificate \
             /nonexistent/ca.pem: missing"
        );
    }
}
