//! The bare bollard loop, `PIPELINE_ROLE=bollard`: this bench binary run
//! again as its own process, the cheapest consumer of the event stream that
//! a few lines of Rust give. With `PIPELINE_ROLE=bollard-reads` the same
//! loop also makes the engine reads that the default rules cannot do
//! without: an exec inspect for every `exec_start` (what the audit verifies)
//! and a container inspect for every `create` (the view that tells a probe
//! from a person), each awaited in turn. It writes nothing and decides
//! nothing: a floor under what any consumer keeping those guarantees pays.
//! Its reads go over kept-alive connections ([`pooled`]): bollard's own
//! unix client connects again for every call, and the floor is of the
//! reads, not of connecting.

use std::io::{Read, Write};

/// `PIPELINE_ROLE=bollard`: the bare loop. Counts events by `type.action`
/// (the action before `: `) in a HashMap until `PIPELINE_EXPECT` events or
/// the end of the stream, prints `counted N keys K errors E`, and waits for
/// its stdin to close so that it is measured before it exits. With `reads`,
/// also inspects each `exec_start`'s exec and each created container
/// (a failed read counts as an error and ends the loop).
pub fn role(reads: bool) {
    use futures::StreamExt;
    use std::fmt::Write as _;

    let expect: u64 = std::env::var("PIPELINE_EXPECT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    // One thread: a loop that only reads needs no other, and a
    // multi-threaded runtime would pay a cross-thread wake-up per chunk
    // (measured: about 5× the CPU per event).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (total, keys, errors) = rt.block_on(async {
        let docker = bollard::Docker::connect_with_defaults()
            .expect("DOCKER_HOST")
            .negotiate_version()
            .await
            .expect("GET /version");
        let reader = reads.then(|| pooled(&docker));
        let mut events = docker.events(None::<bollard::query_parameters::EventsOptions>);
        let mut counts: std::collections::HashMap<String, u64> = Default::default();
        let mut key = String::new();
        let (mut total, mut errors) = (0u64, 0u64);
        while let Some(item) = events.next().await {
            match item {
                Ok(e) => {
                    if let Some(reader) = &reader
                        && let Err(e) = read_for(reader, &e).await
                    {
                        errors += 1;
                        eprintln!("bollard: {e}");
                        break;
                    }
                    key.clear();
                    if let Some(t) = e.typ {
                        let _ = write!(key, "{t}");
                    }
                    key.push('.');
                    let action = e.action.as_deref().unwrap_or_default();
                    key.push_str(action.split_once(": ").map_or(action, |(a, _)| a));
                    match counts.get_mut(key.as_str()) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert(key.clone(), 1);
                        }
                    }
                    total += 1;
                    if total >= expect {
                        break;
                    }
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("bollard: {e}");
                    break;
                }
            }
        }
        (total, counts.len(), errors)
    });
    println!("counted {total} keys {keys} errors {errors}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    drop(rt);
}

/// A client of the same socket as `docker` whose calls share kept-alive
/// connections: hyper's pool (over `docker::unix`'s connector) through
/// bollard's custom transport (bollard's unix client sets
/// `pool_max_idle_per_host(0)`).
fn pooled(docker: &bollard::Docker) -> bollard::Docker {
    use dockwarden::docker::unix::Connector;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::sync::Arc;

    let host = std::env::var("DOCKER_HOST").expect("DOCKER_HOST");
    let path = host.strip_prefix("unix://").expect("DOCKER_HOST=unix://…");
    let http = Arc::new(Client::builder(TokioExecutor::new()).build(Connector::new(path)));
    let transport = move |request: bollard::BollardRequest| {
        let http = http.clone();
        async move {
            http.request(request)
                .await
                .map_err(bollard::errors::Error::from)
        }
    };
    bollard::Docker::connect_with_custom_transport(
        transport,
        Some("http://docker.sock"),
        120,
        &docker.client_version(),
    )
    .expect("a custom transport")
}

/// The read the default rules make for `e`, if any.
async fn read_for(
    docker: &bollard::Docker,
    e: &bollard::models::EventMessage,
) -> Result<(), bollard::errors::Error> {
    use bollard::models::EventMessageTypeEnum as Type;
    if e.typ != Some(Type::CONTAINER) {
        return Ok(());
    }
    let action = e.action.as_deref().unwrap_or_default();
    let actor = e.actor.as_ref();
    if action.starts_with("exec_start") {
        let exec = actor
            .and_then(|a| a.attributes.as_ref())
            .and_then(|a| a.get("execID"));
        if let Some(id) = exec {
            docker.inspect_exec(id).await?;
        }
    } else if action == "create"
        && let Some(id) = actor.and_then(|a| a.id.as_deref())
    {
        docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await?;
    }
    Ok(())
}

/// `counted N keys K errors E` → N; a loop that ended on an error (the
/// stream's or a read's, written to its log) is a failed run, not one
/// that merely counted fewer events.
pub fn parse_count(line: &str) -> Result<u64, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["counted", n, "keys", _, "errors", e] => match (n.parse(), e.parse::<u64>()) {
            (Ok(n), Ok(0)) => Ok(n),
            (Ok(n), Ok(e)) => Err(format!(
                "the bollard loop ended on {e} error(s) after {n} events"
            )),
            _ => Err(format!("the bollard loop printed {line:?}")),
        },
        _ => Err(format!("the bollard loop printed {line:?}")),
    }
}
