//! Topic lifecycle against the real broker: retention by size and by time,
//! DeleteRecords, configs altered live (AlterConfigs,
//! IncrementalAlterConfigs) and read back, LogAppendTime.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::wire::{self, RawRecord, call};
use common::{Broker, TIMEOUT};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const OFFSET_OUT_OF_RANGE: i16 = 1;
const INVALID_CONFIG: i16 = 40;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Appends `count` single-record batches of `value_bytes` with timestamp
/// `timestamp`; returns the high watermark after.
fn fill(port: u16, topic: &str, count: usize, value_bytes: usize, timestamp: i64) -> i64 {
    let mut stream = wire::connect(port);
    let value = vec![b'x'; value_bytes];
    let mut last = -1;
    for _ in 0..count {
        let batch = wire::batch_of(
            &[RawRecord {
                key: None,
                value: Some(&value),
                timestamp_delta: 0,
                headers: &[],
            }],
            timestamp,
        );
        let (code, base) = wire::produce(&mut stream, topic, 0, batch.freeze());
        assert_eq!(code, 0, "produce");
        last = base;
    }
    last + 1
}

fn earliest(port: u16, topic: &str) -> i64 {
    let (code, offset) = wire::list_offset(port, topic, 0, -2);
    assert_eq!(code, 0);
    offset
}

fn log_files(broker: &Broker, topic: &str) -> usize {
    broker.segment_files(topic, 0).len()
}

/// Every offset from the log start to the end is there, in order.
fn assert_readable_without_gaps(port: u16, topic: &str) {
    let start = earliest(port, topic);
    let batches = wire::fetch_all_batches(port, topic, 0, start);
    let mut next = start;
    for batch in batches {
        assert!(
            batch.base_offset <= next,
            "gap: expected {next}, batch at {}",
            batch.base_offset
        );
        next = batch.base_offset + i64::from(batch.last_offset_delta) + 1;
    }
    assert_eq!(next, wire::high_watermark(port, topic, 0));
}

fn wait_until(what: &str, broker: &Broker, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}\n{}", broker.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn retention_by_size_deletes_whole_old_segments_only() {
    let broker = Broker::start(&["--log-retention-check-interval-ms", "200"]);
    let code = wire::create_topic_with(
        broker.port,
        "sized",
        1,
        &[("segment.bytes", "4096"), ("retention.bytes", "16384")],
    );
    assert_eq!(code, 0);
    let leader = broker.leaders("sized")[&0] as usize;
    let port = broker.shard_port(leader);
    let end = fill(port, "sized", 200, 500, now_ms());
    wait_until("retention by size never ran", &broker, || {
        earliest(port, "sized") > 0
    });
    // What is left is at most retention.bytes plus the segment that would
    // cross it, plus the active one.
    wait_until("the log stayed too large", &broker, || {
        log_files(&broker, "sized") <= 6
    });
    let start = earliest(port, "sized");
    assert!(start > 0 && start < end, "start {start}, end {end}");
    // The log starts at a segment boundary: a segment file is named by it.
    let first = broker.segment_files("sized", 0)[0].clone();
    let name = first.file_stem().and_then(|s| s.to_str()).expect("name");
    assert_eq!(name.parse::<i64>().expect("offset name"), start);
    assert_readable_without_gaps(port, "sized");
    // Below the start: OFFSET_OUT_OF_RANGE.
    let mut stream = wire::connect(port);
    let below = wire::fetch(&mut stream, "sized", 0, 0, 0, 0);
    assert_eq!(below.error_code, OFFSET_OUT_OF_RANGE);
}

#[test]
fn retention_by_time_never_deletes_the_active_segment() {
    let broker = Broker::start(&["--log-retention-check-interval-ms", "200"]);
    let code = wire::create_topic_with(
        broker.port,
        "aged",
        1,
        &[("segment.bytes", "4096"), ("retention.ms", "60000")],
    );
    assert_eq!(code, 0);
    let port = broker.shard_port(broker.leaders("aged")[&0] as usize);
    // Records stamped two hours ago: every closed segment is past
    // retention at once.
    let end = fill(port, "aged", 60, 500, now_ms() - 7_200_000);
    wait_until("retention by time never ran", &broker, || {
        log_files(&broker, "aged") == 1
    });
    let start = earliest(port, "aged");
    assert!(
        start > 0 && start < end,
        "the active segment stays: {start}..{end}"
    );
    assert_readable_without_gaps(port, "aged");
    // Fresh records are kept.
    let more = fill(port, "aged", 5, 100, now_ms());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(wire::high_watermark(port, "aged", 0), more);
    assert!(earliest(port, "aged") <= end);
}

fn delete_records(port: u16, topic: &str, offset: i64) -> (i16, i64) {
    let mut stream = wire::connect(port);
    let response: DeleteRecordsResponse = call(
        &mut stream,
        ApiKey::DeleteRecords,
        2,
        &DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(wire::topic_name(topic))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(offset),
                    ]),
            ]),
    );
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.low_watermark)
}

#[test]
fn delete_records_moves_the_log_start_durably() {
    let mut broker = Broker::start(&[]);
    assert_eq!(
        wire::create_topic_with(broker.port, "trimmed", 1, &[("segment.bytes", "4096")]),
        0
    );
    let port = broker.shard_port(broker.leaders("trimmed")[&0] as usize);
    let end = fill(port, "trimmed", 100, 300, now_ms());
    let segments_before = log_files(&broker, "trimmed");
    assert_eq!(delete_records(port, "trimmed", 37), (0, 37));
    assert_eq!(earliest(port, "trimmed"), 37);
    assert!(
        log_files(&broker, "trimmed") < segments_before,
        "whole segments below go"
    );
    let mut stream = wire::connect(port);
    assert_eq!(
        wire::fetch(&mut stream, "trimmed", 0, 36, 0, 0).error_code,
        OFFSET_OUT_OF_RANGE
    );
    let at = wire::fetch(&mut stream, "trimmed", 0, 37, 0, 0);
    assert_eq!(at.error_code, 0);
    // Past the end is refused; backwards is a no-op.
    assert_eq!(
        delete_records(port, "trimmed", end + 5).0,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(delete_records(port, "trimmed", 10), (0, 37));

    broker.sigkill();
    broker.restart();
    let port = broker.shard_port(broker.leaders("trimmed")[&0] as usize);
    assert_eq!(earliest(port, "trimmed"), 37, "the start survives a crash");
    assert_eq!(wire::high_watermark(port, "trimmed", 0), end);
    // -1: up to the high watermark.
    assert_eq!(delete_records(port, "trimmed", -1), (0, end));
    assert_eq!(earliest(port, "trimmed"), end);
}

/// The topic's configs that are not defaults, with their sources.
fn described(port: u16, topic: &str) -> BTreeMap<String, (String, i8)> {
    let mut stream = wire::connect(port);
    let response: DescribeConfigsResponse = call(
        &mut stream,
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.to_string())),
        ]),
    );
    let result = &response.results[0];
    assert_eq!(result.error_code, 0);
    result
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                (
                    c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    c.config_source,
                ),
            )
        })
        .collect()
}

fn incremental(port: u16, topic: &str, ops: &[(&str, i8, Option<&str>)]) -> (i16, String) {
    let mut stream = wire::connect(port);
    let response: IncrementalAlterConfigsResponse = call(
        &mut stream,
        ApiKey::IncrementalAlterConfigs,
        1,
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configs(
                    ops.iter()
                        .map(|(name, op, value)| {
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_string(name.to_string()))
                                .with_config_operation(*op)
                                .with_value(value.map(|v| StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                ),
        ]),
    );
    let r = &response.responses[0];
    (
        r.error_code,
        r.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn configs_change_live_and_survive_a_restart() {
    use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
    let mut broker = Broker::start(&[]);
    broker.create_topic("tuned", 1);
    // rdkafka's admin client (AlterConfigs).
    let alter = AlterConfig::new(ResourceSpecifier::Topic("tuned"))
        .set("retention.ms", "3600000")
        .set("message.timestamp.type", "LogAppendTime");
    let results = common::block_on(broker.admin().alter_configs(
        [&alter],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .expect("alter_configs");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let configs = described(broker.port, "tuned");
    assert_eq!(configs["retention.ms"], ("3600000".to_string(), 1));
    assert_eq!(
        configs["message.timestamp.type"],
        ("LogAppendTime".to_string(), 1)
    );
    assert_eq!(
        configs["retention.bytes"],
        ("-1".to_string(), 5),
        "a default"
    );

    // LogAppendTime: the broker's clock, not the producer's.
    let port = broker.shard_port(broker.leaders("tuned")[&0] as usize);
    let before = now_ms();
    fill(port, "tuned", 1, 10, 1_000);
    let batches = wire::fetch_all_batches(port, "tuned", 0, 0);
    assert_eq!(batches[0].attributes & 0x08, 0x08, "timestamp type bit");
    assert!(batches[0].crc_ok());
    let max_timestamp = i64::from_be_bytes(batches[0].bytes[35..43].try_into().expect("8 bytes"));
    assert!(
        max_timestamp >= before,
        "append time {max_timestamp} >= {before}"
    );

    // Incremental: SET, DELETE; a bad value is INVALID_CONFIG with why.
    assert_eq!(
        incremental(
            broker.port,
            "tuned",
            &[("retention.bytes", 0, Some("1048576"))]
        )
        .0,
        0
    );
    assert_eq!(
        incremental(broker.port, "tuned", &[("message.timestamp.type", 1, None)]).0,
        0
    );
    let (code, message) = incremental(broker.port, "tuned", &[("retention.ms", 0, Some("soon"))]);
    assert_eq!(code, INVALID_CONFIG);
    assert!(message.contains("retention.ms"), "{message}");
    let (code, message) = incremental(
        broker.port,
        "tuned",
        &[("cleanup.policy", 2, Some("sideways"))],
    );
    assert_eq!(code, INVALID_CONFIG);
    assert!(message.contains("cleanup.policy"), "{message}");
    // APPEND to a list config: the policy becomes delete,compact.
    assert_eq!(
        incremental(
            broker.port,
            "tuned",
            &[("cleanup.policy", 2, Some("compact"))]
        )
        .0,
        0
    );
    let configs = described(broker.port, "tuned");
    assert_eq!(configs["cleanup.policy"], ("delete,compact".to_string(), 1));
    assert_eq!(configs["retention.bytes"], ("1048576".to_string(), 1));
    assert_eq!(
        configs["message.timestamp.type"].1, 5,
        "back to the default"
    );
    assert_eq!(
        configs["retention.ms"],
        ("3600000".to_string(), 1),
        "unchanged"
    );

    broker.sigkill();
    broker.restart();
    let configs = described(broker.port, "tuned");
    assert_eq!(configs["retention.ms"], ("3600000".to_string(), 1));
    assert_eq!(configs["retention.bytes"], ("1048576".to_string(), 1));
    assert_eq!(configs["cleanup.policy"], ("delete,compact".to_string(), 1));
}

fn topic_cli(broker: &Broker, args: &[&str]) -> std::process::Output {
    common::tidelog_command()
        .arg("topic")
        .arg("--bootstrap-server")
        .arg(broker.bootstrap())
        .args(args)
        .output()
        .expect("run tidelog topic")
}

fn topic_ok(broker: &Broker, args: &[&str]) -> String {
    let output = topic_cli(broker, args);
    assert!(
        output.status.success(),
        "tidelog topic {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_topic_cli_creates_lists_describes_alters_and_deletes() {
    let broker = Broker::start(&[]);
    topic_ok(
        &broker,
        &[
            "create",
            "--topic",
            "cli-topic",
            "--partitions",
            "3",
            "--config",
            "retention.ms=120000",
        ],
    );
    let listed = topic_ok(&broker, &["list"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), vec!["cli-topic"]);
    let described = topic_ok(&broker, &["describe", "--topic", "cli-topic"]);
    assert!(described.contains("PartitionCount: 3"), "{described}");
    assert!(
        !described.contains("TopicId: 00000000-0000-0000-0000-000000000000"),
        "{described}"
    );
    assert!(described.contains("retention.ms=120000"), "{described}");
    assert_eq!(described.matches("\tPartition: ").count(), 3, "{described}");

    topic_ok(
        &broker,
        &[
            "alter",
            "--topic",
            "cli-topic",
            "--add-config",
            "retention.bytes=1048576",
            "--delete-config",
            "retention.ms",
            "--partitions",
            "4",
        ],
    );
    let described = topic_ok(&broker, &["describe", "--topic", "cli-topic"]);
    assert!(described.contains("PartitionCount: 4"), "{described}");
    assert!(described.contains("retention.bytes=1048576"), "{described}");
    assert!(!described.contains("retention.ms="), "{described}");

    // A bad value: one line naming the config, non-zero exit.
    let bad = topic_cli(
        &broker,
        &[
            "alter",
            "--topic",
            "cli-topic",
            "--add-config",
            "retention.ms=never",
        ],
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("InvalidConfig") && stderr.contains("retention.ms"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    topic_ok(&broker, &["delete", "--topic", "cli-topic"]);
    assert!(topic_ok(&broker, &["list"]).trim().is_empty());
}

#[test]
fn the_topic_cli_ends_quietly_when_its_reader_goes_away() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let broker = Broker::start_with(1, &[]);
    // About 100 KiB of description: more than a pipe holds, so the CLI is
    // still writing when the reader leaves.
    topic_ok(
        &broker,
        &["create", "--topic", "wide", "--partitions", "2000"],
    );
    let mut child = common::tidelog_command()
        .args(["topic", "--bootstrap-server", &broker.bootstrap()])
        .args(["describe", "--topic", "wide"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tidelog topic describe");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut first = [0u8; 64];
    stdout
        .read_exact(&mut first)
        .expect("the description begins");
    drop(stdout); // as `| head -c 64` does
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait for tidelog topic");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}: {stderr}");
}

#[test]
fn segment_ms_rolls_an_old_active_segment() {
    let broker = Broker::start(&[]);
    assert_eq!(
        wire::create_topic_with(broker.port, "timed", 1, &[("segment.ms", "300")]),
        0
    );
    let port = broker.shard_port(broker.leaders("timed")[&0] as usize);
    fill(port, "timed", 3, 10, now_ms());
    assert_eq!(log_files(&broker, "timed"), 1, "young segments do not roll");
    std::thread::sleep(Duration::from_millis(600));
    fill(port, "timed", 1, 10, now_ms());
    wait_until("no roll by segment.ms", &broker, || {
        log_files(&broker, "timed") == 2
    });
    assert_readable_without_gaps(port, "timed");
}

#[test]
fn a_config_file_sets_broker_defaults_and_flags_win() {
    let dir = common::scratch_dir();
    let path = dir.path().join("tidelog.toml");
    // cores = 2 is overridden by the harness's --cores 1 on the command line.
    std::fs::write(
        &path,
        "cores = 2\nnum.partitions = 3\n[log.retention]\nhours = 2\n",
    )
    .expect("write");
    let path_text = path.display().to_string();
    let broker = Broker::start_with(1, &["--config", &path_text]);
    // CreateTopics with -1 partitions takes the broker's num.partitions.
    assert_eq!(
        wire::create_topic_with(broker.port, "from-file", -1, &[]),
        0
    );
    let leaders = broker.leaders("from-file");
    assert_eq!(leaders.len(), 3, "num.partitions from the file");
    assert!(
        leaders.values().all(|node| *node == 0),
        "the command line's --cores 1 wins"
    );
    let configs = described(broker.port, "from-file");
    assert_eq!(
        configs["retention.ms"],
        ("7200000".to_string(), 5),
        "a default from the file"
    );
}
