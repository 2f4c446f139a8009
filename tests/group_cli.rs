//! `tidelog group` against a real broker: list, describe, reset-offsets and
//! delete, checked through a librdkafka consumer's view of the group.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Broker, Outgoing, TIMEOUT, produce_all, tidelog_command};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn group_cli(broker: &Broker, args: &[&str]) -> Output {
    tidelog_command()
        .arg("group")
        .arg("--bootstrap-server")
        .arg(broker.bootstrap())
        .args(args)
        .output()
        .expect("run tidelog group")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ok(broker: &Broker, args: &[&str]) -> String {
    let output = group_cli(broker, args);
    assert!(
        output.status.success(),
        "tidelog group {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        stdout(&output)
    );
    stdout(&output)
}

fn consumer(broker: &Broker, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

fn committed(broker: &Broker, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer = consumer(broker, group);
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    consumer
        .committed_offsets(list, TIMEOUT)
        .expect("committed")
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (e.partition(), offset)
        })
        .collect()
}

#[test]
fn list_describe_reset_and_delete_a_group() {
    let broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    broker.create_topic("cli", 3);
    let producer = broker.producer(&[]);
    let placed = produce_all(
        &producer,
        "cli",
        (0..300).map(|i| Outgoing {
            key: format!("k{i}"),
            value: format!("v{i}"),
            timestamp: None,
        }),
    );
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &placed {
        let end = ends.entry(*p).or_insert(0);
        *end = (*end).max(o + 1);
    }

    let member = consumer(&broker, "cli-group");
    member.subscribe(&["cli"]).expect("subscribe");
    let deadline = Instant::now() + TIMEOUT;
    let mut read = 0;
    while read < 300 {
        assert!(Instant::now() < deadline, "read {read} of 300");
        if let Some(message) = member.poll(Duration::from_millis(100)) {
            message.expect("message");
            read += 1;
        }
    }
    member
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");

    let listed = ok(&broker, &["list"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with("cli-group "))
        .unwrap_or_else(|| panic!("cli-group not listed:\n{listed}"));
    assert!(
        line.contains("Stable") && line.contains("consumer"),
        "{line}"
    );

    let described = ok(&broker, &["describe", "--group", "cli-group"]);
    assert!(described.contains("is Stable with 1 member"), "{described}");
    for (partition, end) in &ends {
        let row = described
            .lines()
            .find(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() >= 6 && cols[1] == "cli" && cols[2] == partition.to_string()
            })
            .unwrap_or_else(|| panic!("no row for partition {partition}:\n{described}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[3], end.to_string(), "current offset: {row}");
        assert_eq!(cols[4], end.to_string(), "log end offset: {row}");
        assert_eq!(cols[5], "0", "lag: {row}");
        assert!(cols[6].starts_with("rdkafka-"), "consumer id: {row}");
    }

    // An active group's offsets are not reset.
    let refused = group_cli(
        &broker,
        &[
            "reset-offsets",
            "--group",
            "cli-group",
            "--topic",
            "cli",
            "--to-earliest",
            "--execute",
        ],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("inactive"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    drop(member);
    // A dry run changes nothing.
    let plan = ok(
        &broker,
        &[
            "reset-offsets",
            "--group",
            "cli-group",
            "--topic",
            "cli",
            "--to-earliest",
        ],
    );
    assert!(plan.contains("dry run"), "{plan}");
    assert_eq!(committed(&broker, "cli-group", "cli", 3), ends);

    ok(
        &broker,
        &[
            "reset-offsets",
            "--group",
            "cli-group",
            "--topic",
            "cli",
            "--to-earliest",
            "--execute",
        ],
    );
    let zeros: BTreeMap<i32, i64> = (0..3).map(|p| (p, 0)).collect();
    assert_eq!(committed(&broker, "cli-group", "cli", 3), zeros);

    ok(
        &broker,
        &[
            "reset-offsets",
            "--group",
            "cli-group",
            "--topic",
            "cli:1",
            "--to-offset",
            "40",
            "--execute",
        ],
    );
    let mut expected = zeros.clone();
    expected.insert(1, 40.min(ends[&1]));
    assert_eq!(committed(&broker, "cli-group", "cli", 3), expected);

    ok(
        &broker,
        &[
            "reset-offsets",
            "--group",
            "cli-group",
            "--all-topics",
            "--to-latest",
            "--execute",
        ],
    );
    assert_eq!(committed(&broker, "cli-group", "cli", 3), ends);

    // By time: every record was written before now, so "now" is the end.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    ok(
        &broker,
        &[
            "reset-offsets",
            "--group",
            "cli-group",
            "--topic",
            "cli",
            "--to-timestamp",
            "0",
            "--execute",
        ],
    );
    assert_eq!(committed(&broker, "cli-group", "cli", 3), zeros);
    ok(
        &broker,
        &[
            "reset-offsets",
            "--group",
            "cli-group",
            "--topic",
            "cli",
            "--to-timestamp",
            &now_ms,
            "--execute",
        ],
    );
    assert_eq!(committed(&broker, "cli-group", "cli", 3), ends);

    ok(&broker, &["delete", "--group", "cli-group"]);
    let listed = ok(&broker, &["list"]);
    assert!(!listed.contains("cli-group"), "{listed}");
    let missing = group_cli(&broker, &["describe", "--group", "cli-group"]);
    assert!(
        !missing.status.success(),
        "a deleted group is not described"
    );
}

#[test]
fn an_unreachable_broker_is_one_clear_line() {
    let port = common::free_ports(1);
    let output = tidelog_command()
        .args([
            "group",
            "--bootstrap-server",
            &format!("127.0.0.1:{port}"),
            "list",
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
