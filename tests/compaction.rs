//! Log compaction against the real broker, read back with librdkafka: the
//! latest value per key at its original offset, tombstones gone after
//! `delete.retention.ms`, keyless records refused, and SIGKILL while the
//! cleaner works leaves a log that reads back intact.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::wire::{self, RawRecord};
use common::{Broker, Outgoing, block_on, consume_all, produce_all};
use rdkafka::producer::{FutureProducer, FutureRecord};

const INVALID_RECORD: i16 = 87;

/// offset -> (key, value); `None` for a tombstone.
type Log = BTreeMap<i64, (String, Option<String>)>;

fn compacted_topic(broker: &Broker, topic: &str, extra: &[(&str, &str)]) {
    let mut configs = vec![
        ("cleanup.policy", "compact"),
        ("segment.bytes", "65536"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "3000"),
    ];
    configs.extend_from_slice(extra);
    assert_eq!(
        wire::create_topic_with(broker.port, topic, 1, &configs),
        0,
        "create {topic}"
    );
}

fn produce_updates(
    producer: &FutureProducer,
    topic: &str,
    log: &mut Log,
    updates: Vec<(String, String)>,
) {
    let landed = produce_all(
        producer,
        topic,
        updates.iter().map(|(key, value)| Outgoing {
            key: key.clone(),
            value: value.clone(),
            timestamp: None,
        }),
    );
    for ((partition, offset), (key, value)) in landed.into_iter().zip(updates) {
        assert_eq!(partition, 0);
        log.insert(offset, (key, Some(value)));
    }
}

fn produce_tombstones(producer: &FutureProducer, topic: &str, log: &mut Log, keys: &[String]) {
    for key in keys {
        let record: FutureRecord<'_, String, [u8]> = FutureRecord::to(topic).key(key);
        let delivery = block_on(producer.send(record, Duration::from_secs(20)))
            .unwrap_or_else(|(e, _)| panic!("tombstone not delivered: {e}"));
        assert_eq!(delivery.partition, 0);
        log.insert(delivery.offset, (key.clone(), None));
    }
}

/// What a fully compacted log holds: each key's latest record, without
/// tombstones once they expired.
fn latest_per_key(log: &Log, keep_tombstones: bool) -> Log {
    let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
    for (offset, (key, _)) in log {
        latest.insert(key, *offset);
    }
    latest
        .values()
        .map(|offset| (*offset, log[offset].clone()))
        .filter(|(_, (_, value))| keep_tombstones || value.is_some())
        .collect()
}

fn read_back(broker: &Broker, topic: &str) -> Log {
    let consumer = broker.consumer(&[]);
    consume_all(
        &consumer,
        topic,
        1,
        rdkafka::Offset::Beginning,
        Duration::from_secs(60),
    )
    .into_iter()
    .map(|r| {
        let key = String::from_utf8(r.key.expect("every record has a key")).expect("utf-8");
        let value = r.value.map(|v| String::from_utf8(v).expect("utf-8"));
        (r.offset, (key, value))
    })
    .collect()
}

/// Every record read is the one produced at that offset, and every key's
/// latest record is there: what a log must be whether compaction ran,
/// ran part-way, or did not run.
fn assert_intact(read: &Log, produced: &Log) {
    for (offset, record) in read {
        assert_eq!(
            produced.get(offset),
            Some(record),
            "offset {offset} reads back as something never produced there"
        );
    }
    for (offset, record) in latest_per_key(produced, true) {
        if record.1.is_some() {
            assert_eq!(
                read.get(&offset),
                Some(&record),
                "latest record of {} lost",
                record.0
            );
        }
    }
}

fn wait_for(what: &str, broker: &Broker, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}\n{}", broker.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_compacted_topic_reads_back_as_the_last_value_per_key_at_its_offset() {
    let broker = Broker::start(&["--log-cleaner-backoff-ms", "200"]);
    let topic = "compacted";
    compacted_topic(&broker, topic, &[("segment.ms", "1500")]);
    let producer = broker.producer(&[("linger.ms", "5")]);
    let mut produced = Log::new();
    let updates: Vec<(String, String)> = (0..100_000)
        .map(|i| (format!("key-{:04}", i % 1_000), format!("update-{i}")))
        .collect();
    produce_updates(&producer, topic, &mut produced, updates);
    let deleted: Vec<String> = (0..50).map(|k| format!("key-{:04}", k * 20)).collect();
    produce_tombstones(&producer, topic, &mut produced, &deleted);
    // One more record after segment.ms closes the segment holding the last
    // updates, so all of them can be compacted.
    std::thread::sleep(Duration::from_millis(1_600));
    produce_updates(
        &producer,
        topic,
        &mut produced,
        vec![("roll".to_string(), "closes the segment".to_string())],
    );
    assert_eq!(produced.len(), 100_051);

    let expected = latest_per_key(&produced, false);
    assert_eq!(expected.len(), 1_000 - 50 + 1);
    let mut read = Log::new();
    wait_for(
        "the topic compacted, tombstones gone",
        &broker,
        Duration::from_secs(90),
        || {
            read = read_back(&broker, topic);
            assert_intact(&read, &produced);
            read == expected
        },
    );
    for key in &deleted {
        assert!(!read.values().any(|(k, _)| k == key), "{key} was deleted");
    }
    assert!(broker.logs().contains("log compacted"));

    // Records without a key are refused on a compacted topic, as Kafka does.
    let batch = wire::batch_of(
        &[RawRecord {
            key: None,
            value: Some(b"no key"),
            timestamp_delta: 0,
            headers: &[],
        }],
        0,
    );
    let (code, _) = wire::produce(&mut wire::connect(broker.port), topic, 0, batch.freeze());
    assert_eq!(code, INVALID_RECORD);
}

/// Whether the cleaner is part-way through rewriting a segment of the
/// partition: its `.cleaned` file exists.
fn cleaner_mid_rewrite(broker: &Broker, topic: &str) -> bool {
    let dir = broker.data_dir.join(format!("{topic}-0"));
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "cleaned"))
        })
        .unwrap_or(false)
}

#[test]
fn sigkill_while_the_cleaner_works_leaves_an_intact_log() {
    let mut broker = Broker::start(&["--log-cleaner-backoff-ms", "50"]);
    let topic = "killed-while-cleaning";
    // The lag keeps the cleaner off a round's records until the round is
    // produced, so a whole pass starts after it, for the kill to land in.
    compacted_topic(
        &broker,
        topic,
        &[
            ("segment.bytes", "262144"),
            ("min.compaction.lag.ms", "3000"),
        ],
    );
    let mut produced = Log::new();
    let padding = "p".repeat(200);
    for round in 0..3 {
        let producer = broker.producer(&[("linger.ms", "5")]);
        let updates: Vec<(String, String)> = (0..20_000)
            .map(|i| {
                (
                    format!("key-{:03}", i % 300),
                    format!("round-{round}-update-{i}-{padding}"),
                )
            })
            .collect();
        produce_updates(&producer, topic, &mut produced, updates);
        drop(producer);
        // Killed the moment the cleaner is seen rewriting a segment.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cleaner_mid_rewrite(&broker, topic) {
            assert!(
                Instant::now() < deadline,
                "the cleaner never started\n{}",
                broker.logs()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        broker.sigkill();
        broker.restart();
        let read = read_back(&broker, topic);
        assert_intact(&read, &produced);
    }
    // Left alone, the cleaner finishes: below the active segment only each
    // key's latest record stays.
    wait_for(
        "compacted after the kills",
        &broker,
        Duration::from_secs(60),
        || {
            let read = read_back(&broker, topic);
            assert_intact(&read, &produced);
            read.len() < produced.len() / 4
        },
    );
}

/// More keys than the cleaner's map may hold (1 MiB of
/// `log.cleaner.dedupe.buffer.size` over 2 shards: 14,336 keys a pass):
/// the log is compacted over several passes and ends the same.
#[test]
fn more_keys_than_the_cleaner_map_holds_compact_over_several_passes() {
    let broker = Broker::start(&[
        "--log-cleaner-backoff-ms",
        "200",
        "--log-cleaner-dedupe-buffer-size",
        "1048576",
    ]);
    let topic = "many-keys";
    compacted_topic(
        &broker,
        topic,
        &[("segment.bytes", "262144"), ("segment.ms", "1500")],
    );
    let producer = broker.producer(&[("linger.ms", "5")]);
    let mut produced = Log::new();
    for round in 0..2 {
        let updates: Vec<(String, String)> = (0..40_000)
            .map(|k| (format!("key-{k:05}"), format!("round-{round}")))
            .collect();
        produce_updates(&producer, topic, &mut produced, updates);
    }
    std::thread::sleep(Duration::from_millis(1_600));
    produce_updates(
        &producer,
        topic,
        &mut produced,
        vec![("roll".to_string(), "closes the segment".to_string())],
    );
    let expected = latest_per_key(&produced, false);
    assert_eq!(expected.len(), 40_001);
    wait_for(
        "compacted over several passes",
        &broker,
        Duration::from_secs(90),
        || {
            let read = read_back(&broker, topic);
            assert_intact(&read, &produced);
            read == expected
        },
    );
    let passes: Vec<usize> = broker
        .logs()
        .lines()
        .filter(|line| line.contains("log compacted") && line.contains(topic))
        .filter_map(|line| line.split("keys=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(passes.len() >= 3, "passes: {passes:?}\n{}", broker.logs());
    assert!(
        passes.iter().all(|keys| *keys <= 14_336),
        "passes: {passes:?}"
    );
}
