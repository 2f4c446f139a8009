//! Where consumers start (earliest, latest, a timestamp), and what a
//! restart keeps: topics, records, offsets, segments read back from disk.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    Broker, Outgoing, Record, TIMEOUT, consume_all, poll_records, produce_all, wait_at_end,
};
use rdkafka::Offset;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn produce(
    broker: &Broker,
    topic: &str,
    values: impl Iterator<Item = (String, i64)>,
) -> Vec<(i32, i64)> {
    let producer = broker.producer(&[("linger.ms", "2")]);
    produce_all(
        &producer,
        topic,
        values.map(|(value, timestamp)| Outgoing {
            key: value.clone(),
            value,
            timestamp: Some(timestamp),
        }),
    )
}

fn offset_for_time(consumer: &BaseConsumer, topic: &str, partition: i32, timestamp: i64) -> Offset {
    let mut query = rdkafka::TopicPartitionList::new();
    query
        .add_partition_offset(topic, partition, Offset::Offset(timestamp))
        .expect("query");
    let found = consumer
        .offsets_for_times(query, TIMEOUT)
        .expect("offsets_for_times");
    let element = found.find_partition(topic, partition).expect("partition");
    assert!(
        element.error().is_ok(),
        "offsets_for_times {topic}-{partition}: {:?}",
        element.error()
    );
    element.offset()
}

fn assign(consumer: &BaseConsumer, topic: &str, partitions: &[i32], offset: Offset) {
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in partitions {
        assignment
            .add_partition_offset(topic, *p, offset)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
}

#[test]
fn consume_from_earliest_latest_and_a_timestamp() {
    let broker = Broker::start(&[]);
    broker.create_topic("positions", 1);
    let base = 1_700_000_000_000i64;
    let positions = produce(
        &broker,
        "positions",
        (0..100).map(|i| (format!("old-{i}"), base + i * 1000)),
    );
    assert_eq!(positions, (0..100).map(|i| (0, i)).collect::<Vec<_>>());

    let consumer = broker.consumer(&[]);
    let earliest = consume_all(&consumer, "positions", 1, Offset::Beginning, TIMEOUT);
    let values: Vec<String> = earliest.iter().map(Record::value_str).collect();
    assert_eq!(
        values,
        (0..100).map(|i| format!("old-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(earliest[0].offset, 0);

    // Offsets for a timestamp: the first record at or after it.
    assert_eq!(
        offset_for_time(&consumer, "positions", 0, base + 41_500),
        Offset::Offset(42)
    );
    assert_eq!(
        offset_for_time(&consumer, "positions", 0, base + 10_000),
        Offset::Offset(10)
    );
    assert_eq!(
        offset_for_time(&consumer, "positions", 0, base - 5),
        Offset::Offset(0)
    );
    assert_eq!(
        offset_for_time(&consumer, "positions", 0, base + 99_000),
        Offset::Offset(99)
    );
    assert_eq!(
        offset_for_time(&consumer, "positions", 0, base + 99_001),
        Offset::End,
        "a timestamp after every record: no offset (-1)"
    );
    let after = consume_all(&consumer, "positions", 1, Offset::Offset(42), TIMEOUT);
    assert_eq!(after.len(), 58);
    assert_eq!(after[0].offset, 42);
    assert_eq!(after[0].value.as_deref(), Some(&b"old-42"[..]));

    // From the end: only what is produced afterwards.
    let (low, high) = consumer
        .fetch_watermarks("positions", 0, TIMEOUT)
        .expect("watermarks");
    assert_eq!((low, high), (0, 100));
    let latest = broker.consumer(&[]);
    assign(&latest, "positions", &[0], Offset::End);
    // End of partition means the consumer has resolved "latest" (offset
    // 100) and is waiting there: only then produce more.
    wait_at_end(&latest, &[0], TIMEOUT);
    produce(
        &broker,
        "positions",
        (0..5).map(|i| (format!("new-{i}"), base + 500_000 + i)),
    );
    let fresh = poll_records(&latest, 5, TIMEOUT);
    let summary: Vec<(i64, String)> = fresh.iter().map(|r| (r.offset, r.value_str())).collect();
    assert_eq!(
        summary,
        (0..5)
            .map(|i| (100 + i, format!("new-{i}")))
            .collect::<Vec<_>>()
    );
}

#[test]
fn latest_on_several_partitions_over_both_shards() {
    let broker = Broker::start(&[]);
    broker.create_topic("spread-latest", 4);
    produce(
        &broker,
        "spread-latest",
        (0..200).map(|i| (format!("old-{i}"), 1_000 + i)),
    );
    let latest = broker.consumer(&[]);
    assign(&latest, "spread-latest", &[0, 1, 2, 3], Offset::End);
    wait_at_end(&latest, &[0, 1, 2, 3], TIMEOUT);
    let positions = produce(
        &broker,
        "spread-latest",
        (0..40).map(|i| (format!("new-{i}"), 5_000 + i)),
    );
    let fresh = poll_records(&latest, 40, TIMEOUT);
    let mut got: Vec<(i32, i64, String)> = fresh
        .iter()
        .map(|r| (r.partition, r.offset, r.value_str()))
        .collect();
    got.sort();
    let mut expected: Vec<(i32, i64, String)> = positions
        .iter()
        .enumerate()
        .map(|(i, (p, o))| (*p, *o, format!("new-{i}")))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    // And nothing more arrives.
    assert!(
        latest
            .poll(Duration::from_millis(500))
            .is_none_or(|m| matches!(m, Err(rdkafka::error::KafkaError::PartitionEOF(_)))),
        "no record beyond the new ones"
    );
}

#[test]
fn topics_and_data_survive_a_clean_restart() {
    let mut broker = Broker::start(&["--default-partitions", "4"]);
    let first = produce(
        &broker,
        "kept",
        (0..1000).map(|i| (format!("v{i}"), 1_000 + i)),
    );
    broker.create_topic("dropped", 2);
    produce(
        &broker,
        "dropped",
        (0..10).map(|i| (format!("d{i}"), 1_000 + i)),
    );
    let results = common::block_on(
        broker
            .admin()
            .delete_topics(&["dropped"], &AdminOptions::new()),
    )
    .expect("delete");
    assert_eq!(results, vec![Ok("dropped".to_string())]);
    let leaders_before = broker.leaders("kept");

    let status = broker.sigterm_and_wait();
    assert!(
        status.success(),
        "SIGTERM exit status {status}:\n{}",
        broker.logs()
    );
    broker.restart();

    assert_eq!(broker.leaders("kept"), leaders_before, "placement kept");
    let consumer = broker.consumer(&[]);
    let metadata = consumer.fetch_metadata(None, TIMEOUT).expect("metadata");
    let names: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|name| !name.starts_with("__"))
        .collect();
    assert_eq!(names, vec!["kept"], "the deleted topic stays deleted");

    let records = consume_all(&consumer, "kept", 4, Offset::Beginning, TIMEOUT);
    assert_eq!(records.len(), 1000);
    for record in &records {
        let sent: usize = record.value_str()[1..].parse().expect("number");
        assert_eq!(
            first[sent],
            (record.partition, record.offset),
            "v{sent} where it was acknowledged"
        );
        assert_eq!(record.timestamp, Some(1_000 + sent as i64));
        assert_eq!(record.key.as_deref(), Some(record.value_str().as_bytes()));
    }
    // Offsets continue exactly where they were.
    let mut ends_before: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &first {
        let end = ends_before.entry(*p).or_insert(0);
        *end = (*end).max(o + 1);
    }
    let second = produce(
        &broker,
        "kept",
        (0..100).map(|i| (format!("w{i}"), 2_000 + i)),
    );
    let mut next = ends_before.clone();
    for (partition, offset) in second {
        let expected = next.entry(partition).or_insert(0);
        assert_eq!(
            offset, *expected,
            "partition {partition} continues at its end"
        );
        *expected += 1;
    }
}

#[test]
fn sigint_stops_cleanly_too() {
    let mut broker = Broker::start(&[]);
    produce(
        &broker,
        "interrupted",
        (0..10).map(|i| (format!("v{i}"), 1 + i)),
    );
    let status = broker.signal_and_wait(libc::SIGINT);
    assert!(
        status.success(),
        "SIGINT exit status {status}:\n{}",
        broker.logs()
    );
    broker.restart();
    let consumer = broker.consumer(&[]);
    assert_eq!(
        consume_all(&consumer, "interrupted", 1, Offset::Beginning, TIMEOUT).len(),
        10
    );
}

/// Many small segments and a tiny tail cache, so reads go to the segment
/// files and their indexes; then a clean restart and a crash, so they go
/// through recovery as well.
#[test]
fn rolled_segments_are_read_back_from_disk_after_restarts() {
    let mut broker = Broker::start_with(
        1,
        &["--segment-bytes", "65536", "--tail-cache-bytes", "65536"],
    );
    broker.create_topic("rolled", 1);
    let base = 1_600_000_000_000i64;
    let value = |i: i64| format!("{i:06}-{}", "r".repeat(80));
    // Small batches, so the 64 KiB segments roll many times (a batch never
    // splits across segments).
    let producer = broker.producer(&[("linger.ms", "2"), ("batch.size", "16384")]);
    let first = produce_all(
        &producer,
        "rolled",
        (0..6_000).map(|i| Outgoing {
            key: "k".into(),
            value: value(i),
            timestamp: Some(base + i * 10),
        }),
    );
    assert_eq!(first.last(), Some(&(0, 5_999)));
    let segments = broker.segment_files("rolled", 0);
    assert!(segments.len() > 5, "65 KiB segments rolled: {segments:?}");

    let check = |broker: &Broker, count: i64, tag: &str| {
        let consumer = broker.consumer(&[]);
        let records = consume_all(&consumer, "rolled", 1, Offset::Beginning, TIMEOUT);
        assert_eq!(records.len() as i64, count, "{tag}: everything");
        common::assert_contiguous_from_zero(&records);
        for record in &records {
            assert_eq!(
                record.value_str(),
                value(record.offset),
                "{tag}: at {}",
                record.offset
            );
            assert_eq!(record.timestamp, Some(base + record.offset * 10), "{tag}");
        }
        // Into the middle of old segments, by offset and by time.
        for start in [1, 777, 3_001, count - 1] {
            let from = consume_all(&consumer, "rolled", 1, Offset::Offset(start), TIMEOUT);
            assert_eq!(from.len() as i64, count - start, "{tag}: from {start}");
            assert_eq!(from[0].offset, start, "{tag}: first record from {start}");
            let by_time = offset_for_time(&consumer, "rolled", 0, base + start * 10 - 5);
            assert_eq!(
                by_time,
                Offset::Offset(start),
                "{tag}: timestamp just before {start}"
            );
        }
        // Raw fetches from the middle get the batch holding that offset.
        for start in [2_500, 4_321] {
            let mut stream = common::wire::connect(broker.port);
            let fetched = common::wire::fetch(&mut stream, "rolled", 0, start, 0, 0);
            assert_eq!(fetched.error_code, 0);
            assert_eq!(fetched.high_watermark, count);
            let batches = common::wire::parse_batches(&fetched.records);
            let first = batches
                .first()
                .unwrap_or_else(|| panic!("{tag}: no batch at {start}"));
            let last = first.base_offset + i64::from(first.last_offset_delta);
            assert!(
                first.base_offset <= start && start <= last,
                "{tag}: fetch at {start} began with batch {}..={last}",
                first.base_offset
            );
            assert!(batches.iter().all(|b| b.crc_ok()), "{tag}: CRCs hold");
        }
    };
    check(&broker, 6_000, "before restart");

    let status = broker.sigterm_and_wait();
    assert!(status.success(), "{status}");
    broker.restart();
    check(&broker, 6_000, "after SIGTERM");

    let second = produce(
        &broker,
        "rolled",
        (6_000..9_000).map(|i| (value(i), base + i * 10)),
    );
    assert_eq!(second.first(), Some(&(0, 6_000)));
    broker.sigkill();
    broker.restart();
    check(&broker, 9_000, "after SIGKILL");
    let third = produce(
        &broker,
        "rolled",
        std::iter::once((value(9_000), base + 90_000)),
    );
    assert_eq!(third, vec![(0, 9_000)]);
}

#[test]
fn an_empty_topic_survives_a_crash_and_reads_as_empty() {
    let mut broker = Broker::start(&[]);
    broker.create_topic("empty", 3);
    broker.sigkill();
    broker.restart();
    let consumer = broker.consumer(&[]);
    for partition in 0..3 {
        assert_eq!(
            consumer
                .fetch_watermarks("empty", partition, TIMEOUT)
                .expect("watermarks"),
            (0, 0)
        );
    }
    let deadline = Instant::now() + TIMEOUT;
    let records = consume_all(&consumer, "empty", 3, Offset::Beginning, TIMEOUT);
    assert!(records.is_empty());
    assert!(Instant::now() < deadline);
}
