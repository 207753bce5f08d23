//! The stats arithmetic checked on bodies captured from Engine 20.10, and
//! the reader's cache, limit and errors (in a file of their own to keep
//! `stats.rs` short).

use super::*;

use bollard::models::ContainerCpuUsage;

/// `stream=false` of `sh -c 'while :; do :; done'` with `--memory 64m`,
/// Engine 20.10.24, cgroup v1, 2 CPUs; `docker stats` said 99.77%,
/// `524KiB / 64MiB`, 0.80% a moment before.
const BUSY: &str = include_str!("../../../tests/data/stats-engine-20.10-cgroup1-busy.json");
/// `stream=false` of a created, never started container.
const STOPPED: &str = include_str!("../../../tests/data/stats-engine-20.10-stopped.json");

fn parse(body: &str) -> ContainerStatsResponse {
    serde_json::from_str(body).expect("a captured engine body parses")
}

fn cpu(total: u64, system: u64, online: Option<u32>, percpu: usize) -> ContainerCpuStats {
    ContainerCpuStats {
        cpu_usage: Some(ContainerCpuUsage {
            total_usage: Some(total),
            percpu_usage: Some(vec![0; percpu]),
            ..Default::default()
        }),
        system_cpu_usage: Some(system),
        online_cpus: online,
        ..Default::default()
    }
}

fn memory(usage: u64, stats: &[(&str, u64)]) -> ContainerMemoryStats {
    ContainerMemoryStats {
        usage: Some(usage),
        stats: Some(stats.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
        ..Default::default()
    }
}

#[test]
fn a_captured_busy_sample_reads_as_the_cli_shows_it() {
    let stats = Stats::from_response(&parse(BUSY));
    // (4066755498 - 3067117179) / (1378780000000 - 1376790000000) × 2 × 100
    assert!(
        (stats.cpu_percent - 100.466_162_7).abs() < 1e-6,
        "{stats:?}"
    );
    // usage 2142208 - total_inactive_file 1605632
    assert_eq!(stats.memory_usage_bytes, 536_576);
    assert_eq!(stats.memory_limit_bytes, 64 << 20);
    assert_eq!(
        Reading::Ok(stats).to_json(),
        json!({
            "cpu_percent": 100.47,
            "memory_usage_bytes": 536_576,
            "memory_limit_bytes": 67_108_864,
            "memory_percent": 0.8,
            "memory_usage": "524KiB",
        })
    );
    assert_eq!(bytes_size(stats.memory_limit_bytes as f64), "64MiB");
}

#[test]
fn a_stopped_container_reads_as_zeros_like_docker_stats() {
    let stats = Stats::from_response(&parse(STOPPED));
    assert_eq!(stats, Stats::default());
    assert_eq!(Reading::Ok(stats).to_json()["memory_usage"], "0B");
}

#[test]
fn cpu_is_the_share_of_host_time_times_online_cpus() {
    let pre = cpu(1_000, 10_000, Some(4), 0);
    // 2500 of 10000 ns of host time, on 4 CPUs.
    assert_eq!(cpu_percent(&cpu(3_500, 20_000, Some(4), 8), &pre), 100.0);
    // No online_cpus: the length of percpu_usage.
    assert_eq!(cpu_percent(&cpu(3_500, 20_000, None, 2), &pre), 50.0);
    assert_eq!(cpu_percent(&cpu(3_500, 20_000, Some(0), 3), &pre), 75.0);
    // Either delta not positive: 0.
    assert_eq!(cpu_percent(&cpu(1_000, 20_000, Some(4), 0), &pre), 0.0);
    assert_eq!(cpu_percent(&cpu(3_500, 10_000, Some(4), 0), &pre), 0.0);
    assert_eq!(cpu_percent(&cpu(500, 5_000, Some(4), 0), &pre), 0.0);
    let none = ContainerCpuStats::default();
    assert_eq!(cpu_percent(&none, &none), 0.0);
}

#[test]
fn memory_leaves_out_the_inactive_page_cache() {
    const V1: &str = "total_inactive_file";
    const V2: &str = "inactive_file";
    let no_cache = |usage, stats: &[(&str, u64)]| memory_usage_no_cache(&memory(usage, stats));
    assert_eq!(no_cache(1_000, &[(V1, 300), (V2, 100)]), 700); // cgroup v1
    assert_eq!(no_cache(1_000, &[(V1, 1_000), (V2, 100)]), 900); // v1, ≥ usage
    assert_eq!(no_cache(1_000, &[(V2, 400)]), 600); // cgroup v2
    assert_eq!(no_cache(1_000, &[(V2, 2_000)]), 1_000);
    assert_eq!(no_cache(1_000, &[]), 1_000);
    assert_eq!(memory_percent(512, 2_048), 25.0);
    assert_eq!(memory_percent(512, 0), 0.0);
}

#[test]
fn sizes_are_written_as_go_units_bytes_size() {
    const KIB: f64 = 1024.0;
    const MIB: f64 = KIB * 1024.0;
    const GIB: f64 = MIB * 1024.0;
    const PIB: f64 = GIB * 1024.0 * 1024.0;
    // go-units' own TestBytesSize.
    assert_eq!(bytes_size(KIB), "1KiB");
    assert_eq!(bytes_size(MIB), "1MiB");
    assert_eq!(bytes_size(2.0 * MIB), "2MiB");
    assert_eq!(bytes_size(3.42 * GIB), "3.42GiB");
    assert_eq!(bytes_size(5.372 * GIB * 1024.0), "5.372TiB");
    assert_eq!(bytes_size(2.22 * PIB), "2.22PiB");
    assert_eq!(bytes_size(KIB.powi(5) * PIB), "1.049e+06YiB");
    // Four significant digits, no trailing zeros.
    assert_eq!(bytes_size(0.0), "0B");
    assert_eq!(bytes_size(1023.0), "1023B");
    assert_eq!(bytes_size(12.3 * MIB), "12.3MiB");
    assert_eq!(bytes_size(1.02 * GIB), "1.02GiB");
    assert_eq!(bytes_size(25_275_486_208.0), "23.54GiB");
    assert_eq!(bytes_size(MIB - 1.0), "1024KiB");
    // An exact tie rounds half to even, as Go's does: 1.0625 → 1.062.
    assert_eq!(bytes_size(1088.0), "1.062KiB");
    assert_eq!(go_g4(0.000_123_45), "0.0001234");
    assert_eq!(go_g4(0.000_012_345), "1.234e-05");
}

#[tokio::test]
async fn without_an_engine_every_entry_says_so() {
    fn send<T: Send>(_: &T) {} // the API's handlers need a Send future
    let reader = StatsReader::new(DockerHandle::default(), Duration::from_secs(2), 0);
    let ids = vec!["a".to_owned(), "b".to_owned()];
    let reading = reader.read(&ids);
    send(&reading);
    let readings = reading.await;
    assert_eq!(readings.len(), 2);
    for r in &readings {
        assert_eq!(r.to_json(), json!({"error": "Docker is not connected yet"}));
    }
    assert_eq!(reader.engine_reads(), 0);
    // Errors are not cached: nothing is left behind.
    assert!(lock(&reader.slots).is_empty());
}
