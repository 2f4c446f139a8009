//! A run's result: the JSON document, the table printed at the end, the
//! progress line and the per-second throughput timeline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{BenchError, DriverOutcome, Plan, RunOptions, Workload, latency_histogram};

/// Bumped when a field changes meaning.
pub const RESULT_FORMAT_VERSION: u32 = 1;

/// Percentiles reported, as fractions.
const QUANTILES: [(f64, &str); 5] = [
    (0.50, "p50"),
    (0.90, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
];

/// A latency distribution's summary, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub p99_99_us: f64,
    pub max_us: f64,
    /// (percentile, µs) points from p0 to p99.999 and max, for charts.
    pub curve: Vec<(f64, f64)>,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1_000.0;
        let at = |q: f64| us(histogram.value_at_quantile(q));
        let mut curve = Vec::new();
        // Evenly spaced in "nines": 0, 90, 99, 99.9 ... with steps between.
        for step in 0..=50 {
            let nines = f64::from(step) / 10.0;
            let q = 1.0 - 10f64.powf(-nines);
            curve.push((q * 100.0, at(q)));
        }
        curve.push((100.0, us(histogram.max())));
        Percentiles {
            count: histogram.len(),
            mean_us: histogram.mean() / 1_000.0,
            p50_us: at(QUANTILES[0].0),
            p90_us: at(QUANTILES[1].0),
            p99_us: at(QUANTILES[2].0),
            p99_9_us: at(QUANTILES[3].0),
            p99_99_us: at(QUANTILES[4].0),
            max_us: us(histogram.max()),
            curve,
        }
    }

    /// (name, µs) in report order.
    pub fn named(&self) -> [(&'static str, f64); 7] {
        [
            ("p50", self.p50_us),
            ("p90", self.p90_us),
            ("p99", self.p99_us),
            ("p99.9", self.p99_9_us),
            ("p99.99", self.p99_99_us),
            ("max", self.max_us),
            ("mean", self.mean_us),
        ]
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since producing started; the first `warmup_seconds` are warm-up.
    pub second: u64,
    pub sent: u64,
    pub acked: u64,
    pub acked_bytes: u64,
    pub consumed: u64,
    pub consumed_bytes: u64,
    pub errors: u64,
    /// The slowest acknowledgement in this second, ms (measured records only).
    #[serde(default)]
    pub ack_max_ms: f64,
    /// The slowest end-to-end latency in this second, ms.
    #[serde(default)]
    pub end_to_end_max_ms: f64,
    /// p99 of the acknowledgement latency of the records due to be sent in
    /// this second, ms (measured seconds only): latency over time that one
    /// slow moment does not hide, as it does a whole run's p99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_p99_ms: Option<f64>,
    /// With `--timeline-histograms`: that second's acknowledgement
    /// latencies, as `[highest latency of the bucket in ns, count]` for
    /// every non-empty bucket (2 significant digits), so seconds can be
    /// pooled into any span's percentiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_histogram: Option<Vec<[u64; 2]>>,
}

/// Throughput over the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub messages: u64,
    pub messages_per_second: f64,
    pub megabytes_per_second: f64,
}

/// What the consumers of one consumer set received.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetCheck {
    pub set: usize,
    pub received: u64,
    /// Records the partitions gained during the run (their offsets moved).
    pub expected: u64,
    pub missing: u64,
    pub extra: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub unreadable: u64,
    pub errors: u64,
    /// Consumer groups only: records delivered again after a rebalance
    /// (at-least-once delivery; skipped, not counted as received).
    #[serde(default)]
    pub redelivered: u64,
}

/// Whether what was consumed is what was produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Every set received every record of the run once, in order per
    /// partition and producer, and every acknowledged record was in the log.
    pub verified: bool,
    pub summary: String,
    pub acked: u64,
    /// Records the partitions gained during the run (latest offsets).
    pub in_log: Option<u64>,
    pub sets: Vec<SetCheck>,
}

/// The machine the load generator ran on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub cpus_online: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// /proc/loadavg when the run ended: other work sharing the machine.
    #[serde(default)]
    pub load_average: String,
}

impl Machine {
    pub fn here() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        Machine {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            cpus_online: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            load_average: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// One run's result, written as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub format_version: u32,
    pub command: String,
    pub started_unix_seconds: u64,
    /// When second 0 of the timeline began, in ms since the Unix epoch: to
    /// line the timeline up with what happened around the run.
    #[serde(default)]
    pub started_unix_ms: u64,
    pub driver: super::Driver,
    pub bootstrap: String,
    /// How the broker makes acknowledged records durable, where known.
    pub flush_policy: String,
    pub machine: Machine,
    pub workload: Workload,
    pub measured_seconds: f64,
    pub sent: u64,
    pub acked: u64,
    pub produce_errors: u64,
    pub first_produce_error: Option<String>,
    pub consume_errors: u64,
    pub first_consume_error: Option<String>,
    /// Acknowledged records in the measured window.
    pub produce: Throughput,
    /// Records received in the measured window, over all consumer sets.
    pub consume: Throughput,
    pub produce_ack_latency: Percentiles,
    pub end_to_end_latency: Option<Percentiles>,
    pub verification: Verification,
    pub timeline: Vec<Second>,
}

/// The broker's flush policy from the topic's `flush.messages` and
/// `flush.ms` (Kafka and tidelog both name them), else from the broker's
/// `log.flush.*`, else from what tidelog's broker configs look like.
pub fn flush_policy(topic: &[(String, String)], broker: &[(String, String)]) -> String {
    let find = |configs: &[(String, String)], name: &str| {
        configs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let tidelog = looks_like_tidelog(broker);
    if let Some(messages) = find(topic, "flush.messages") {
        let ms = find(topic, "flush.ms").unwrap_or_else(|| "unset".into());
        return match (messages.as_str(), tidelog) {
            ("1", true) => "durable: group commit, fdatasync before every acks=1/all answer (tidelog, flush.messages=1)".into(),
            ("1", false) => "durable: flush.messages=1 (a flush after every message)".into(),
            (_, true) => format!(
                "relaxed: flush.messages={messages}, flush.ms={ms} (tidelog: acknowledged before fdatasync)"
            ),
            (_, false) => format!(
                "flush.messages={messages}, flush.ms={ms} (Kafka: page cache, flushed by the OS unless these are set)"
            ),
        };
    }
    let configs = broker;
    if let Some(messages) = find(configs, "log.flush.interval.messages") {
        let ms = find(configs, "log.flush.interval.ms").unwrap_or_else(|| "null".into());
        return format!(
            "log.flush.interval.messages={messages}, log.flush.interval.ms={ms} (Kafka: page cache, flushed by the OS unless these are set)"
        );
    }
    if tidelog {
        "durable: group commit, fdatasync before every acks=1/all answer (tidelog default)".into()
    } else {
        "unknown (pass --flush-policy)".into()
    }
}

/// tidelog's broker configs: few, with `socket.request.max.bytes`, and
/// none of Kafka's hundreds (`num.network.threads` is in every Kafka).
fn looks_like_tidelog(broker: &[(String, String)]) -> bool {
    broker.iter().any(|(n, _)| n == "socket.request.max.bytes")
        && !broker.iter().any(|(n, _)| n == "num.network.threads")
}

/// Samples the live counters once a second until the run finishes,
/// printing a progress line each time; returns the timeline.
pub fn sample_every_second(plan: &Plan, progress: bool) -> Vec<Second> {
    let live = &plan.live;
    let read = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let totals = || {
        [
            read(&live.sent),
            read(&live.acked),
            read(&live.acked_bytes),
            read(&live.consumed),
            read(&live.consumed_bytes),
            read(&live.errors),
        ]
    };
    let mut timeline = Vec::new();
    let mut before = totals();
    let mut tick = plan.started;
    let warmup = plan.workload.warmup_seconds;
    loop {
        tick += Duration::from_secs(1);
        while Instant::now() < tick {
            if plan.finished.load(Ordering::Acquire) {
                return timeline;
            }
            std::thread::sleep(Duration::from_millis(10).min(tick - Instant::now()));
        }
        let now = totals();
        let delta: Vec<u64> = now.iter().zip(before).map(|(n, b)| n - b).collect();
        before = now;
        let take_ms = |c: &std::sync::atomic::AtomicU64| c.swap(0, Ordering::Relaxed) as f64 / 1e6;
        let second = Second {
            second: timeline.len() as u64,
            sent: delta[0],
            acked: delta[1],
            acked_bytes: delta[2],
            consumed: delta[3],
            consumed_bytes: delta[4],
            errors: delta[5],
            ack_max_ms: take_ms(&live.ack_max_ns),
            end_to_end_max_ms: take_ms(&live.end_to_end_max_ns),
            ack_p99_ms: None,
            ack_histogram: None,
        };
        if progress {
            let phase = if second.second < warmup {
                "warm-up"
            } else if Instant::now() <= plan.produce_until + Duration::from_millis(500) {
                "measure"
            } else {
                "drain"
            };
            eprintln!(
                "[{:>4}s {phase:>7}] sent {:>10} msg/s  acked {:>10} msg/s {:>8.1} MB/s  consumed {:>10} msg/s {:>8.1} MB/s  max ack {:.1} ms e2e {:.1} ms  errors {}",
                second.second + 1,
                thousands(second.sent),
                thousands(second.acked),
                second.acked_bytes as f64 / 1e6,
                thousands(second.consumed),
                second.consumed_bytes as f64 / 1e6,
                second.ack_max_ms,
                second.end_to_end_max_ms,
                second.errors,
            );
        }
        timeline.push(second);
    }
}

/// 1234567 as "1,234,567".
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

impl BenchResult {
    pub fn new(
        plan: &Plan,
        options: &RunOptions,
        flush_policy: String,
        outcome: DriverOutcome,
        mut timeline: Vec<Second>,
    ) -> BenchResult {
        let workload = &plan.workload;
        let mut by_second: Vec<Histogram<u64>> = Vec::new();
        for tally in &outcome.producers {
            for (second, histogram) in tally.ack_latency_by_second.iter().enumerate() {
                match by_second.get_mut(second) {
                    Some(merged) => {
                        let _ = merged.add(histogram);
                    }
                    None => by_second.push(histogram.clone()),
                }
            }
        }
        let measured_from = usize::try_from(workload.warmup_seconds).unwrap_or(usize::MAX);
        for (second, histogram) in by_second.iter().enumerate() {
            if let Some(entry) = timeline.get_mut(measured_from.saturating_add(second))
                && !histogram.is_empty()
            {
                entry.ack_p99_ms = Some(histogram.value_at_quantile(0.99) as f64 / 1e6);
                if options.timeline_histograms {
                    entry.ack_histogram = Some(
                        histogram
                            .iter_recorded()
                            .map(|bucket| [bucket.value_iterated_to(), bucket.count_at_value()])
                            .collect(),
                    );
                }
            }
        }
        let mut ack_latency = latency_histogram();
        let mut acked_per_partition = vec![0u64; workload.partitions as usize];
        let (mut sent, mut produce_errors, mut first_produce_error) = (0, 0, None);
        for tally in &outcome.producers {
            let _ = ack_latency.add(&tally.ack_latency);
            for (total, acked) in acked_per_partition
                .iter_mut()
                .zip(&tally.acked_per_partition)
            {
                *total += acked;
            }
            sent += tally.sent;
            produce_errors += tally.errors;
            first_produce_error = first_produce_error.or(tally.first_error.clone());
        }
        let acked: u64 = acked_per_partition.iter().sum();
        let mut end_to_end = latency_histogram();
        let mut sets: BTreeMap<usize, (super::record::Verifier, u64, u64)> = BTreeMap::new();
        let (mut consume_errors, mut first_consume_error) = (0, None);
        for tally in outcome.consumers {
            let _ = end_to_end.add(&tally.end_to_end_latency);
            consume_errors += tally.errors;
            first_consume_error = first_consume_error.or(tally.first_error);
            let set = sets.entry(tally.set).or_default();
            set.0.merge(tally.verifier);
            set.1 += tally.errors;
            set.2 += tally.redelivered;
        }
        let in_log_per_partition: Option<Vec<u64>> = plan
            .stop_offsets
            .get()
            .filter(|stops| stops.len() == plan.start_offsets.len())
            .map(|stops| {
                stops
                    .iter()
                    .zip(&plan.start_offsets)
                    .map(|(stop, start)| (stop - start).max(0) as u64)
                    .collect()
            });
        let verification = verify(
            workload,
            &acked_per_partition,
            in_log_per_partition.as_deref(),
            produce_errors,
            sets,
        );
        let window = workload.warmup_seconds..workload.warmup_seconds + workload.duration_seconds;
        let measured: Vec<&Second> = timeline
            .iter()
            .filter(|s| window.contains(&s.second))
            .collect();
        let measured_seconds = measured.len().max(1) as f64;
        let throughput = |messages: u64, bytes: u64| Throughput {
            messages,
            messages_per_second: messages as f64 / measured_seconds,
            megabytes_per_second: bytes as f64 / 1e6 / measured_seconds,
        };
        let produce = throughput(
            measured.iter().map(|s| s.acked).sum(),
            measured.iter().map(|s| s.acked_bytes).sum(),
        );
        let consume = throughput(
            measured.iter().map(|s| s.consumed).sum(),
            measured.iter().map(|s| s.consumed_bytes).sum(),
        );
        BenchResult {
            format_version: RESULT_FORMAT_VERSION,
            command: options.command.clone(),
            started_unix_seconds: plan.clock.epoch_ns(plan.started) / 1_000_000_000,
            started_unix_ms: plan.clock.epoch_ns(plan.started) / 1_000_000,
            driver: options.driver,
            bootstrap: options.bootstrap.clone(),
            flush_policy,
            machine: Machine::here(),
            workload: workload.clone(),
            measured_seconds,
            sent,
            acked,
            produce_errors,
            first_produce_error,
            consume_errors,
            first_consume_error,
            produce,
            consume,
            produce_ack_latency: Percentiles::of(&ack_latency),
            end_to_end_latency: workload.consumes().then(|| Percentiles::of(&end_to_end)),
            verification,
            timeline,
        }
    }

    /// Writes the JSON document.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Result {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(|source| BenchError::Io {
            op: "write result",
            path: path.display().to_string(),
            source,
        })
    }

    pub fn read_json(path: &Path) -> Result<BenchResult, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
            op: "read result",
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| BenchError::Result {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let w = &self.workload;
        let mut out = String::new();
        let rate = if w.rate_per_second == 0 {
            "max rate".to_string()
        } else {
            format!("{} msg/s target", thousands(w.rate_per_second))
        };
        let _ = writeln!(
            out,
            "workload     {} ({}): {} partitions, {} producer(s), {} consumer set(s) x {} consumer(s) [{:?}], {} B messages, acks={}, compression={}, linger.ms={}, batch {} B, {rate}, {} s warm-up + {} s",
            w.name,
            self.bootstrap,
            w.partitions,
            w.producers,
            w.consumer_sets,
            w.consumers,
            w.consumer_mode,
            w.message_bytes,
            w.acks,
            w.compression,
            w.linger_ms,
            w.batch_bytes,
            w.warmup_seconds,
            w.duration_seconds
        );
        let _ = writeln!(out, "driver       {:?}", self.driver);
        let _ = writeln!(out, "flush policy {}", self.flush_policy);
        let _ = writeln!(
            out,
            "machine      {} ({} CPUs, {}, Linux {}; load average {})",
            self.machine.hostname,
            self.machine.cpus_online,
            self.machine.cpu_model,
            self.machine.kernel,
            self.machine.load_average
        );
        let _ = writeln!(
            out,
            "produce      {:>12} msg/s {:>10.1} MB/s  (acknowledged, {} s measured; sent {}, acked {}, errors {})",
            thousands(self.produce.messages_per_second as u64),
            self.produce.megabytes_per_second,
            self.measured_seconds,
            thousands(self.sent),
            thousands(self.acked),
            self.produce_errors
        );
        if w.consumes() {
            let _ = writeln!(
                out,
                "consume      {:>12} msg/s {:>10.1} MB/s  (all sets together; errors {})",
                thousands(self.consume.messages_per_second as u64),
                self.consume.megabytes_per_second,
                self.consume_errors
            );
        }
        let _ = writeln!(out);
        let _ = write!(out, "latency (ms) {:>10}", "count");
        for (name, _) in self.produce_ack_latency.named() {
            let _ = write!(out, " {name:>9}");
        }
        let _ = writeln!(out);
        let mut row = |label: &str, p: &Percentiles| {
            let _ = write!(out, "{label:<12} {:>10}", p.count);
            for (_, us) in p.named() {
                let _ = write!(out, " {:>9.3}", us / 1_000.0);
            }
            let _ = writeln!(out);
        };
        row("produce ack", &self.produce_ack_latency);
        if let Some(e2e) = &self.end_to_end_latency {
            row("end to end", e2e);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "verification {}: {}",
            if self.verification.verified {
                "PASSED"
            } else {
                "FAILED"
            },
            self.verification.summary
        );
        if let Some(error) = &self.first_produce_error {
            let _ = writeln!(out, "first produce error: {error}");
        }
        if let Some(error) = &self.first_consume_error {
            let _ = writeln!(out, "first consume error: {error}");
        }
        out
    }
}

/// Compares what each consumer set received with what the partitions
/// gained and what the producers had acknowledged.
fn verify(
    workload: &Workload,
    acked_per_partition: &[u64],
    in_log_per_partition: Option<&[u64]>,
    produce_errors: u64,
    sets: BTreeMap<usize, (super::record::Verifier, u64, u64)>,
) -> Verification {
    let acked: u64 = acked_per_partition.iter().sum();
    let in_log = in_log_per_partition.map(|p| p.iter().sum::<u64>());
    let mut problems = Vec::new();
    if let Some(in_log_per_partition) = in_log_per_partition {
        let lost: u64 = acked_per_partition
            .iter()
            .zip(in_log_per_partition)
            .map(|(acked, in_log)| acked.saturating_sub(*in_log))
            .sum();
        if lost > 0 {
            problems.push(format!("{lost} acknowledged records are not in the log"));
        }
    } else if workload.consumes() {
        problems.push("the partitions' latest offsets could not be read after producing".into());
    }
    let expected_per_partition: Vec<u64> = match in_log_per_partition {
        Some(in_log) => in_log.to_vec(),
        None => acked_per_partition.to_vec(),
    };
    let mut checks = Vec::new();
    if workload.consumes() {
        for set in 0..workload.consumer_sets {
            let (verifier, errors, redelivered) = sets.get(&set).cloned().unwrap_or_default();
            let mut check = SetCheck {
                set,
                received: verifier.received(),
                expected: expected_per_partition.iter().sum(),
                duplicates: verifier.duplicates,
                out_of_order: verifier.gaps,
                unreadable: verifier.unreadable,
                errors,
                redelivered,
                ..SetCheck::default()
            };
            for (partition, expected) in expected_per_partition.iter().enumerate() {
                let received = verifier
                    .received_per_partition
                    .get(&(partition as i32))
                    .copied()
                    .unwrap_or(0);
                check.missing += expected.saturating_sub(received);
                check.extra += received.saturating_sub(*expected);
            }
            if check.missing
                + check.extra
                + check.duplicates
                + check.out_of_order
                + check.unreadable
                > 0
            {
                problems.push(format!(
                    "set {set}: received {} of {} (missing {}, extra {}, duplicates {}, out of order {}, unreadable {})",
                    check.received,
                    check.expected,
                    check.missing,
                    check.extra,
                    check.duplicates,
                    check.out_of_order,
                    check.unreadable
                ));
            }
            checks.push(check);
        }
    }
    if produce_errors > 0 {
        problems.push(format!("{produce_errors} records failed to produce"));
    }
    let redelivered: u64 = checks.iter().map(|c| c.redelivered).sum();
    let verified = problems.is_empty();
    let summary = if !verified {
        problems.join("; ")
    } else if workload.consumes() {
        format!(
            "{} consumer set(s) each received all {} records once, in order per partition and producer; every acknowledged record was in the log",
            workload.consumer_sets,
            thousands(expected_per_partition.iter().sum())
        )
    } else {
        format!(
            "no consumers; all {} acknowledged records are in the log",
            thousands(acked)
        )
    };
    let summary = if redelivered > 0 {
        format!(
            "{summary}; {redelivered} records delivered again after group rebalances were skipped"
        )
    } else {
        summary
    };
    Verification {
        verified,
        summary,
        acked,
        in_log,
        sets: checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn flush_policy_names_kafka_and_tidelog() {
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        let kafka = vec![
            pair("log.flush.interval.messages", "9223372036854775807"),
            pair("socket.request.max.bytes", "1"),
            pair("num.network.threads", "3"),
        ];
        assert!(flush_policy(&[], &kafka).starts_with("log.flush.interval.messages="));
        let kafka_topic = vec![pair("flush.messages", "9223372036854775807")];
        assert!(flush_policy(&kafka_topic, &kafka).starts_with("flush.messages="));
        let tidelog = vec![pair("socket.request.max.bytes", "1")];
        assert!(flush_policy(&[], &tidelog).starts_with("durable"));
        let durable_topic = vec![pair("flush.messages", "1")];
        assert!(flush_policy(&durable_topic, &tidelog).starts_with("durable: group commit"));
        let relaxed_topic = vec![pair("flush.messages", "1000"), pair("flush.ms", "5")];
        assert!(flush_policy(&relaxed_topic, &tidelog).starts_with("relaxed"));
        assert!(flush_policy(&[], &[]).starts_with("unknown"));
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut histogram = latency_histogram();
        for us in 1..=1000u64 {
            histogram.record(us * 1_000).expect("in range");
        }
        let p = Percentiles::of(&histogram);
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() < 2.0, "{}", p.p50_us);
        assert!((p.max_us - 1000.0).abs() < 2.0, "{}", p.max_us);
        assert_eq!(p.curve.last().map(|c| c.0), Some(100.0));
    }
}
