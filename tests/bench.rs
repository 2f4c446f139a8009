//! `tidelog bench` end to end: each driver runs a short workload against a
//! real broker, and the JSON result says every record was acknowledged,
//! consumed once and in order. No timing is asserted.

mod common;

use std::path::{Path, PathBuf};

use common::{Broker, scratch_dir, tidelog_command};

/// Runs `tidelog bench` with `args` against `broker`; returns the JSON
/// result file it wrote.
fn bench(broker: &Broker, out_dir: &Path, args: &[&str]) -> PathBuf {
    let output = tidelog_command()
        .arg("bench")
        .arg("--bootstrap")
        .arg(broker.bootstrap())
        .arg("--out-dir")
        .arg(out_dir)
        .arg("--quiet")
        .args(args)
        .output()
        .expect("run tidelog bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tidelog bench {args:?} failed ({}):\n{stdout}\n{stderr}\n{}",
        output.status,
        broker.logs()
    );
    assert!(stdout.contains("latency (ms)"), "no table:\n{stdout}");
    let json = stdout
        .lines()
        .find_map(|line| line.strip_prefix("result"))
        .map(|path| PathBuf::from(path.trim()))
        .unwrap_or_else(|| panic!("no result line:\n{stdout}"));
    let svg = json.with_extension("svg");
    let chart = std::fs::read_to_string(&svg).expect("chart written");
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    json
}

fn read_result(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("result file")).expect("JSON")
}

/// The checks both drivers must pass.
fn assert_verified(result: &serde_json::Value, driver: &str) {
    let context = serde_json::to_string_pretty(&result["verification"]).unwrap_or_default();
    assert_eq!(result["driver"], driver);
    assert_eq!(result["verification"]["verified"], true, "{context}");
    assert_eq!(result["produce_errors"], 0, "{context}");
    assert_eq!(result["consume_errors"], 0, "{context}");
    let sent = result["sent"].as_u64().expect("sent");
    assert!(sent > 0, "nothing sent");
    assert_eq!(
        result["acked"].as_u64(),
        Some(sent),
        "every record acknowledged"
    );
    assert_eq!(result["verification"]["in_log"].as_u64(), Some(sent));
    let sets = result["verification"]["sets"].as_array().expect("sets");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0]["received"].as_u64(), Some(sent), "{context}");
    for problem in [
        "missing",
        "extra",
        "duplicates",
        "out_of_order",
        "unreadable",
    ] {
        assert_eq!(sets[0][problem], 0, "{problem}: {context}");
    }
    assert!(result["produce_ack_latency"]["count"].as_u64() > Some(0));
    assert!(result["end_to_end_latency"]["count"].as_u64() > Some(0));
    assert_p99_by_second(result);
    assert!(
        result["flush_policy"]
            .as_str()
            .is_some_and(|p| p.starts_with("durable")),
        "tidelog's flush policy is named"
    );
}

/// Every measured second of the timeline has its own ack p99, none of
/// the warm-up's, each within the whole run's slowest acknowledgement.
fn assert_p99_by_second(result: &serde_json::Value) {
    let warmup = result["workload"]["warmup_seconds"]
        .as_u64()
        .expect("warm-up");
    let duration = result["workload"]["duration_seconds"]
        .as_u64()
        .expect("duration");
    let max_ms = result["produce_ack_latency"]["max_us"]
        .as_f64()
        .expect("max")
        / 1000.0;
    let timeline = result["timeline"].as_array().expect("timeline");
    let mut measured = 0;
    for second in timeline {
        let at = second["second"].as_u64().expect("second");
        let p99 = second.get("ack_p99_ms").and_then(|p| p.as_f64());
        if at < warmup {
            assert_eq!(p99, None, "a warm-up second has no p99: {second}");
        } else if at < warmup + duration {
            let p99 = p99.unwrap_or_else(|| panic!("a measured second has its p99: {second}"));
            // Two significant digits per second: within 1% of the exact max.
            assert!(
                p99 > 0.0 && p99 <= max_ms * 1.01,
                "{p99} ms, max {max_ms} ms"
            );
            measured += 1;
        }
    }
    assert_eq!(measured, duration, "{timeline:?}");
}

/// With `--timeline-histograms`, the measured seconds' histograms hold
/// every measured acknowledgement once, and each second's p99 is its own
/// histogram's.
fn assert_histograms_by_second(result: &serde_json::Value) {
    let timeline = result["timeline"].as_array().expect("timeline");
    let mut total = 0;
    let mut seconds = 0;
    for second in timeline {
        let Some(buckets) = second.get("ack_histogram").and_then(|h| h.as_array()) else {
            continue;
        };
        let buckets: Vec<(u64, u64)> = buckets
            .iter()
            .map(|b| (b[0].as_u64().expect("ns"), b[1].as_u64().expect("count")))
            .collect();
        let count: u64 = buckets.iter().map(|(_, c)| c).sum();
        let mut seen = 0;
        let p99_ns = buckets
            .iter()
            .find(|(_, c)| {
                seen += c;
                seen * 100 >= count * 99
            })
            .map(|(ns, _)| *ns)
            .expect("a non-empty second");
        let p99_ms = second["ack_p99_ms"].as_f64().expect("its p99");
        assert!(
            (p99_ns as f64 / 1e6 - p99_ms).abs() <= p99_ms * 0.01,
            "{p99_ns} ns against {p99_ms} ms: {second}"
        );
        total += count;
        seconds += 1;
    }
    assert_eq!(
        seconds,
        result["workload"]["duration_seconds"]
            .as_u64()
            .expect("duration")
    );
    assert_eq!(
        total,
        result["produce_ack_latency"]["count"]
            .as_u64()
            .expect("count")
    );
}

/// Milliseconds since the Unix epoch, now.
fn unix_ms_now() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit in u64")
}

/// The run's timeline starts while the run was going on, early enough for
/// its warm-up and measured seconds to end before the process did: what
/// a script lining the timeline up with its own clock relies on.
fn assert_started_between(result: &serde_json::Value, launched_ms: u64, ended_ms: u64) {
    let started_ms = result["started_unix_ms"].as_u64().expect("started ms");
    let workload = &result["workload"];
    let run_ms = 1000
        * (workload["warmup_seconds"].as_u64().expect("warm-up")
            + workload["duration_seconds"].as_u64().expect("duration"));
    assert!(
        launched_ms <= started_ms && started_ms + run_ms <= ended_ms,
        "started at {started_ms} ms, a {run_ms} ms run, launched at {launched_ms}, ended at {ended_ms}"
    );
    assert_eq!(
        started_ms / 1000,
        result["started_unix_seconds"].as_u64().expect("started s")
    );
}

const SHORT_RUN: &[&str] = &[
    "--partitions",
    "6",
    "--message-bytes",
    "200",
    "--rate",
    "2000",
    "--warmup-seconds",
    "1",
    "--duration-seconds",
    "2",
    "--key-distribution",
    "uniform",
];

#[test]
fn both_drivers_verify_what_they_consume_and_compare() {
    let broker = Broker::start(&[]);
    let out = scratch_dir();
    let launched_ms = unix_ms_now();
    let native = bench(
        &broker,
        out.path(),
        &[
            SHORT_RUN,
            &[
                "--driver",
                "native",
                "--topic",
                "bench-native",
                "--timeline-histograms",
            ],
        ]
        .concat(),
    );
    let ended_ms = unix_ms_now();
    assert_verified(&read_result(&native), "native");
    assert_histograms_by_second(&read_result(&native));
    assert_started_between(&read_result(&native), launched_ms, ended_ms);
    let rdkafka = bench(
        &broker,
        out.path(),
        &[
            SHORT_RUN,
            &[
                "--driver",
                "rdkafka",
                "--topic",
                "bench-rdkafka",
                "--producers",
                "2",
            ],
        ]
        .concat(),
    );
    assert_verified(&read_result(&rdkafka), "rdkafka");

    let compared = tidelog_command()
        .args(["bench", "compare"])
        .arg(&native)
        .arg(&rdkafka)
        .output()
        .expect("run compare");
    let table = String::from_utf8_lossy(&compared.stdout);
    assert!(compared.status.success(), "{table}");
    assert!(table.contains("produce msg/s"), "{table}");
    assert!(table.contains("end to end p99 (ms)"), "{table}");
}

#[test]
fn workload_files_run_including_fan_out_to_four_consumer_groups() {
    let broker = Broker::start(&[]);
    let out = scratch_dir();
    let workload = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/workloads/acks-1.toml");
    let json = bench(
        &broker,
        out.path(),
        &[
            "--workload",
            workload.to_str().expect("utf-8 path"),
            "--rate",
            "2000",
            "--warmup-seconds",
            "1",
            "--duration-seconds",
            "1",
        ],
    );
    let result = read_result(&json);
    assert_eq!(result["workload"]["acks"], 1);
    assert_eq!(result["workload"]["partitions"], 16);
    assert_eq!(result["verification"]["verified"], true);

    // Four consumer groups of two members each, through librdkafka.
    let fanout = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/workloads/fanout-4-groups.toml");
    let json = bench(
        &broker,
        out.path(),
        &[
            "--workload",
            fanout.to_str().expect("utf-8 path"),
            "--driver",
            "rdkafka",
            "--rate",
            "2000",
            "--warmup-seconds",
            "1",
            "--duration-seconds",
            "2",
        ],
    );
    let result = read_result(&json);
    let context = serde_json::to_string_pretty(&result["verification"]).unwrap_or_default();
    assert_eq!(result["workload"]["consumer_mode"], "group");
    assert_eq!(result["verification"]["verified"], true, "{context}");
    let sent = result["sent"].as_u64().expect("sent");
    let sets = result["verification"]["sets"].as_array().expect("sets");
    assert_eq!(sets.len(), 4);
    for set in sets {
        assert_eq!(set["received"].as_u64(), Some(sent), "{context}");
    }
}
