//! `tidelog bench compare A.json B.json`: two results side by side, with
//! the ratio B/A of each figure.

use std::fmt::Write as _;

use super::report::BenchResult;

/// The comparison table.
pub fn compare(a: &BenchResult, b: &BenchResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A: {} {:?} {} ({})",
        a.workload.name, a.driver, a.bootstrap, a.flush_policy
    );
    let _ = writeln!(
        out,
        "B: {} {:?} {} ({})",
        b.workload.name, b.driver, b.bootstrap, b.flush_policy
    );
    if a.workload != b.workload {
        let _ = writeln!(out, "note: the workloads differ");
    }
    let _ = writeln!(out, "{:<28} {:>14} {:>14} {:>9}", "", "A", "B", "B/A");
    let mut row = |name: &str, a: f64, b: f64, higher_is_better: bool| {
        let ratio = if a > 0.0 { b / a } else { f64::NAN };
        // Differences within 2% are noise on any real machine.
        let better = if !ratio.is_finite() || (ratio - 1.0).abs() <= 0.02 {
            ""
        } else if (ratio > 1.0) == higher_is_better {
            "  B better"
        } else {
            "  A better"
        };
        let _ = writeln!(out, "{name:<28} {a:>14.3} {b:>14.3} {ratio:>9.3}{better}");
    };
    row(
        "produce msg/s",
        a.produce.messages_per_second,
        b.produce.messages_per_second,
        true,
    );
    row(
        "produce MB/s",
        a.produce.megabytes_per_second,
        b.produce.megabytes_per_second,
        true,
    );
    row(
        "consume msg/s",
        a.consume.messages_per_second,
        b.consume.messages_per_second,
        true,
    );
    row(
        "consume MB/s",
        a.consume.megabytes_per_second,
        b.consume.megabytes_per_second,
        true,
    );
    for ((name, a_us), (_, b_us)) in a
        .produce_ack_latency
        .named()
        .into_iter()
        .zip(b.produce_ack_latency.named())
    {
        row(
            &format!("produce ack {name} (ms)"),
            a_us / 1000.0,
            b_us / 1000.0,
            false,
        );
    }
    if let (Some(a_e2e), Some(b_e2e)) = (&a.end_to_end_latency, &b.end_to_end_latency) {
        for ((name, a_us), (_, b_us)) in a_e2e.named().into_iter().zip(b_e2e.named()) {
            row(
                &format!("end to end {name} (ms)"),
                a_us / 1000.0,
                b_us / 1000.0,
                false,
            );
        }
    }
    let _ = writeln!(
        out,
        "verified: A {}, B {}",
        a.verification.verified, b.verification.verified
    );
    out
}
