//! The `dockwarden` command line: `run`, `check`, `replay`, `audit verify`,
//! `status`, `health` and `notify test`. Parsing
//! arguments and calling into the library only; no logic of its own.
//!
//! This file is long because clap's declarations of every subcommand and
//! its flags are the CLI's documentation, kept in one place (and the
//! allocator's options, which must be set before `main`, with their test).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// println!/eprintln! panic when the stream is a closed pipe
/// (`dockwarden check x | head -0`); a CLI must not. Output is best effort.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use dockwarden::app::{self, AppError, RunOptions};
use dockwarden::handlers::Registry;
use dockwarden::rules::Config;

/// The reader allocates events on one thread and the dispatcher frees them
/// on another; glibc's per-arena lock then stalls the reader under bursts
/// (benches/reader.rs: 0 events dropped with mimalloc, 6-18% without).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` and `purge_delay` (`mi_option_t` 4 and
/// 15 in its v2 and v3 headers; the crate exports no constants for them).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// See [`mimalloc_options`].
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Two of mimalloc's defaults keep pages dockwarden no longer uses:
/// - `arena_eager_commit` (2) commits its first arena eagerly on Linux, and
///   then frees pages back with `MADV_FREE`, which the kernel only takes
///   when short of memory: RSS keeps every page ever used (24.5 MB idle,
///   against 13.5 MB with 0);
/// - `purge_delay` (1 s in the mimalloc 3 the crate builds) keeps a page
///   whose blocks were all freed that long before giving it back; in a
///   burst the reader allocates events on its thread and the handlers free
///   them on another, so freed pages pile up. With 10 ms (mimalloc 2's
///   default) the peak at full rate is about 3 MB lower, and about 6 MB at
///   an offered 100 k events/s; CPU per event is the same at that rate and
///   0–7 % more at 40 k/s; 0 gives back under 1 MB more (README.md,
///   "Performance").
///
/// `mi_option_set_default` makes 0 and 10 ms the defaults: it changes an
/// option only while the environment has not set it
/// (`MIMALLOC_ARENA_EAGER_COMMIT`, `MIMALLOC_PURGE_DELAY`, in any case or
/// under their legacy names), so what the environment says wins, whether
/// mimalloc reads it before or after this runs.
///
/// It runs from `.init_array`, before `main`: before or after mimalloc's
/// own constructor (gcc builds that without a priority, clang with 101),
/// and before the first allocation of Rust's runtime, which creates the
/// arena.
extern "C" fn mimalloc_options() {
    // SAFETY: mimalloc's option functions are plain C with no
    // preconditions; nothing else runs yet (not thread safe, as documented).
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static MIMALLOC_OPTIONS: extern "C" fn() = mimalloc_options;

#[derive(Parser)]
#[command(
    name = "dockwarden",
    version,
    about = "Docker event stream → rules → handlers → /metrics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the engine's event stream and run the rules.
    Run {
        /// Rules file.
        #[arg(long, default_value = "rules/default.toml")]
        rules: PathBuf,
        /// HTTP address for /metrics, /healthz, /readyz (overrides [server] listen).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Decide and log, but call no mutating Docker API.
        #[arg(long)]
        dry_run: bool,
        /// Where the checkpoint lives (overrides [state] dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// TLS and basic auth for the HTTP endpoint: a Prometheus
        /// exporter-toolkit web configuration file (read again on change).
        #[arg(long, value_name = "FILE")]
        web_config: Option<PathBuf>,
        /// With --web-config: serve /healthz and /readyz without a password
        /// or client certificate (for orchestrator probes).
        #[arg(long, requires = "web_config")]
        web_open_probes: bool,
        /// Log line format (level filter: RUST_LOG, default "info").
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a rules file without touching Docker; exit 2 listing every problem.
    Check {
        /// Rules file.
        file: PathBuf,
    },
    /// Run recorded events (JSON lines, as `docker events --format '{{json .}}'`
    /// prints them) through a rules file offline, every handler in dry run.
    Replay {
        /// Recorded streams, read in order; `-` is stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Rules file.
        #[arg(long, default_value = "rules/default.toml")]
        rules: PathBuf,
        /// Print one JSON object (rules, decisions, totals) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The exec and network audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Ask a running sidecar what it sees: a table of every container, or
    /// one container with NAME. Exit 1 with one line if no sidecar answers.
    Status {
        /// The sidecar's HTTP address.
        #[arg(long, default_value = dockwarden::status::DEFAULT_URL)]
        url: String,
        /// A file holding the API token (`[server] api_token_file`).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// One container, by name or ID.
        name: Option<String>,
    },
    /// Probe a running sidecar once (a container HEALTHCHECK): GET /readyz,
    /// or /healthz with --live. Exit 0 on a 2xx, 1 otherwise; one line.
    Health {
        /// The sidecar's HTTP address (the environment variable lets the
        /// image's exec-form HEALTHCHECK, which has no shell, reach https).
        #[arg(long, env = "DOCKWARDEN_HEALTH_URL", default_value = dockwarden::health::DEFAULT_URL)]
        url: String,
        /// Ask /healthz (the process answers) instead of /readyz (connected
        /// to the engine's event stream).
        #[arg(long)]
        live: bool,
        /// With an https:// URL, do not check the sidecar's certificate
        /// (a probe of its own loopback address under --web-config).
        #[arg(
            long,
            env = "DOCKWARDEN_HEALTH_INSECURE",
            value_parser = clap::builder::BoolishValueParser::new()
        )]
        insecure: bool,
    },
    /// Notification targets.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Send a test message to each target; print its HTTP status or the
    /// error. Exit 0 if all answered 2xx, 1 otherwise, 2 for a bad rules file.
    Test {
        /// Rules file defining [notify.targets.NAME].
        #[arg(long, default_value = "rules/default.toml")]
        rules: PathBuf,
        /// Target names.
        #[arg(required = true)]
        targets: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain: exit 0 if intact, 1 naming the first broken record.
    Verify {
        /// Log files, oldest first, or a directory (its *.jsonl logs with
        /// their rotations, oldest first).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Replay { files, rules, json } => replay(files, rules, json),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => verify(&files),
        Command::Status {
            url,
            token_file,
            json,
            name,
        } => status(&url, token_file.as_deref(), json, name.as_deref()),
        Command::Health {
            url,
            live,
            insecure,
        } => health(&url, live, insecure),
        Command::Notify {
            command: NotifyCommand::Test { rules, targets },
        } => notify_test(&rules, &targets),
        Command::Run {
            rules,
            listen,
            dry_run,
            state_dir,
            web_config,
            web_open_probes,
            log_format,
        } => {
            init_logging(log_format);
            run(RunOptions {
                rules_path: rules,
                listen,
                dry_run,
                state_dir,
                web_config,
                web_open_probes,
            })
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match Config::check_file(file, &Registry::builtin()) {
        Ok(config) => {
            let handlers: Vec<&str> = config.rules.handlers_used().into_iter().collect();
            out!(
                "{}: ok, {} rules, handlers: {}",
                file.display(),
                config.rules.rules.len(),
                if handlers.is_empty() {
                    "none".to_owned()
                } else {
                    handlers.join(", ")
                }
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            err!("{diags}");
            ExitCode::from(2)
        }
    }
}

fn replay(inputs: Vec<PathBuf>, rules_path: PathBuf, json: bool) -> ExitCode {
    match dockwarden::replay::run(&dockwarden::replay::Options { inputs, rules_path }) {
        Err(e) => {
            err!("{e}");
            ExitCode::from(e.exit_code())
        }
        Ok(report) => {
            report.problems.iter().for_each(|p| err!("{p}"));
            out!("{}", report.render(json));
            ExitCode::from(report.exit_code())
        }
    }
}

fn verify(args: &[PathBuf]) -> ExitCode {
    use dockwarden::audit;
    let chains = match audit::chains(args) {
        Ok(chains) => chains,
        Err(e) => {
            err!("{e}");
            return ExitCode::from(1);
        }
    };
    // Several logs (a directory of two): each is its own chain, named.
    let named = chains.len() > 1;
    let mut intact = true;
    for files in &chains {
        let live = files.last().cloned();
        let name = match &live {
            Some(live) if named => format!("{}: ", live.display()),
            _ => String::new(),
        };
        // A batch being appended meanwhile can leave the live file's last
        // line half written for a moment; each look takes the chain of the
        // same live file anew (a rotation may follow).
        let again = || {
            let chains = audit::chains(args)?;
            Ok(chains
                .into_iter()
                .find(|c| c.last() == live.as_ref())
                .unwrap_or_default())
        };
        match audit::verify_settled(again, std::time::Duration::from_secs(2)) {
            (used, Ok((records, first_seq))) => {
                let note = if first_seq > 1 {
                    format!(" (starting at seq {first_seq}: older records were rotated away)")
                } else {
                    String::new()
                };
                out!(
                    "{name}{records} records in {} file(s), chain intact{note}",
                    used.len()
                );
            }
            (_, Err(problems)) => {
                problems.iter().for_each(|e| err!("{e}"));
                intact = false;
            }
        }
    }
    if chains.is_empty() {
        err!("{}", audit::VerifyError::Empty);
        intact = false;
    }
    if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn status(
    url: &str,
    token_file: Option<&std::path::Path>,
    json: bool,
    name: Option<&str>,
) -> ExitCode {
    let token = match token_file.map(dockwarden::status::read_token).transpose() {
        Ok(t) => t,
        Err(e) => {
            err!("dockwarden status: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err!("dockwarden status: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    use dockwarden::status::{container_path, fetch, history_lines, history_path, table};
    let token = token.as_deref();
    let answer = runtime.block_on(async {
        let Some(name) = name else {
            return fetch(url, token, &container_path(None))
                .await
                .map(|v| (v, None));
        };
        let history = fetch(url, token, &history_path(name)).await;
        // A destroyed container has a history but no entry.
        match fetch(url, token, &container_path(Some(name))).await {
            Ok(one) => Ok((one, history.ok())),
            Err(e) => match history {
                Ok(h) => Ok((serde_json::Value::Null, Some(h))),
                Err(_) => Err(e),
            },
        }
    });
    match answer {
        Ok((mut value, history)) if json => {
            if let Some(h) = history {
                if value.is_null() {
                    value = serde_json::json!({});
                }
                value["history"] = h;
            }
            out!("{value}");
            ExitCode::SUCCESS
        }
        Ok((value, history)) => {
            let entries = match value {
                serde_json::Value::Array(all) => all,
                serde_json::Value::Null => Vec::new(),
                one => vec![one],
            };
            if !entries.is_empty() {
                out!("{}", table(&entries).trim_end());
            }
            if let Some(h) = history {
                if !entries.is_empty() {
                    out!("");
                }
                out!("{}", history_lines(&h).trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            err!("dockwarden status: {e}");
            ExitCode::from(1)
        }
    }
}

fn health(url: &str, live: bool, insecure: bool) -> ExitCode {
    use dockwarden::health::{Probe, probe_with};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err!("unhealthy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let which = if live { Probe::Live } else { Probe::Ready };
    match runtime.block_on(probe_with(url, which, insecure)) {
        Ok(line) => {
            out!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            err!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn notify_test(rules: &std::path::Path, targets: &[String]) -> ExitCode {
    let config = match Config::load_file(rules, &Registry::builtin()) {
        Ok(c) => c,
        Err(diags) => {
            err!("{diags}");
            return ExitCode::from(2);
        }
    };
    let host = config
        .audit
        .host
        .clone()
        .unwrap_or_else(dockwarden::config::this_host);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err!("dockwarden: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results = runtime.block_on(dockwarden::notify::test_targets(
        &config.notify,
        targets,
        &host,
    ));
    let mut all_ok = true;
    for (name, result) in results {
        match result {
            Ok(status) if (200..300).contains(&status) => out!("{name}: HTTP {status}"),
            Ok(status) => {
                all_ok = false;
                out!("{name}: HTTP {status} (not 2xx)");
            }
            Err(reason) => {
                all_ok = false;
                out!("{name}: failed: {reason}");
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // A log line that cannot be written (stderr a closed pipe) is lost; the
    // default reports it with eprintln!, whose panic would take down the
    // task that logged: the signal handler, the stream reader.
    let builder = tracing_subscriber::fmt()
        .log_internal_errors(false)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(opts: RunOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // One worker: the stream reader has a thread of its own (app.rs),
        // and handlers mostly wait on the engine. A second worker only
        // added cross-thread wake-ups (benches/pipeline: 1.3x the CPU per
        // event with a rules file matching nothing).
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err!("dockwarden: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        match app::run(opts, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(AppError::Rules(diags)) => {
                err!("{diags}");
                ExitCode::from(2)
            }
            Err(AppError::WebConfig(problems)) => {
                err!("{problems}");
                ExitCode::from(2)
            }
            Err(e) => {
                tracing::error!(error = %e, "dockwarden cannot start.");
                ExitCode::FAILURE
            }
        }
    })
}

/// First SIGINT/SIGTERM: graceful shutdown. A second one: exit at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop with SIGKILL.");
        return;
    };
    let mut received = 0;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        received += 1;
        if received == 1 {
            tracing::info!(signal = name, "Shutdown requested.");
            shutdown.cancel();
        } else {
            tracing::warn!(signal = name, "Second signal: exiting now.");
            std::process::exit(130);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    unsafe extern "C" {
        /// Every option with its name and value, on stderr (the crate
        /// binds no such call).
        fn mi_options_print();
    }

    /// Not a test: what [`options_with`] starts this binary again for.
    #[test]
    #[ignore = "run by mimalloc_runs_with_dockwarden_s_defaults_unless_the_environment_sets_them"]
    fn print_mimalloc_options() {
        // SAFETY: plain C, no preconditions.
        unsafe { mi_options_print() };
    }

    /// What mimalloc says of its options in this test binary started again
    /// with `env` and no other `MIMALLOC_*` variable (in any case).
    fn options_with(env: &[(&str, &str)]) -> String {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--ignored",
            "--exact",
            "tests::print_mimalloc_options",
            "--nocapture",
        ]);
        for (key, _) in std::env::vars_os() {
            if key
                .to_string_lossy()
                .to_ascii_uppercase()
                .starts_with("MIMALLOC_")
            {
                cmd.env_remove(key);
            }
        }
        let out = cmd
            .envs(env.iter().copied())
            .output()
            .expect("run the test binary again");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The options are set by number (the crate exports no constants for
    /// them): mimalloc naming them shows the numbers are the right ones.
    #[test]
    fn mimalloc_runs_with_dockwarden_s_defaults_unless_the_environment_sets_them() {
        let text = options_with(&[]);
        assert!(text.contains("option 'arena_eager_commit': 0 "), "{text}");
        assert!(text.contains("option 'purge_delay': 10 "), "{text}");
        let text = options_with(&[
            ("MIMALLOC_ARENA_EAGER_COMMIT", "2"),
            ("mimalloc_purge_delay", "250"),
        ]);
        assert!(text.contains("option 'arena_eager_commit': 2 "), "{text}");
        assert!(text.contains("option 'purge_delay': 250 "), "{text}");
    }
}
