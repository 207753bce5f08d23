//! The bare bollard loop, `PIPELINE_ROLE=bollard`: this bench binary run
//! again as its own process, the cheapest consumer of the event stream that
//! a few lines of Rust give.

use std::io::{Read, Write};

/// `PIPELINE_ROLE=bollard`: the bare loop. Counts events by `type.action`
/// (the action before `: `) in a HashMap until `PIPELINE_EXPECT` events or
/// the end of the stream, prints `counted N keys K errors E`, and waits for
/// its stdin to close so that it is measured before it exits.
pub fn role() {
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
        let mut events = docker.events(None::<bollard::query_parameters::EventsOptions>);
        let mut counts: std::collections::HashMap<String, u64> = Default::default();
        let mut key = String::new();
        let (mut total, mut errors) = (0u64, 0u64);
        while let Some(item) = events.next().await {
            match item {
                Ok(e) => {
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

/// `counted N …` → N.
pub fn parse_count(line: &str) -> Result<u64, String> {
    line.strip_prefix("counted ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("the bollard loop printed {line:?}"))
}
