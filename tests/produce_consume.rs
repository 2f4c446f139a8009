//! Produce and consume through librdkafka against the real broker.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use support::{Broker, Outgoing, block_on, consume_all, produce_all};

const TIMEOUT: Duration = Duration::from_secs(30);

fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let admin = broker.admin();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results =
        block_on(admin.create_topics([&topic], &AdminOptions::new())).expect("create_topics");
    for result in results {
        result.expect("topic created");
    }
}

#[test]
fn keys_values_headers_and_timestamps_round_trip() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "round-trip", 3);
    let producer = broker.producer(&[]);
    let mut delivered = HashMap::new();
    for i in 0..300i64 {
        let key = format!("key-{i}");
        let value = format!("value-{i}").repeat((i % 7 + 1) as usize);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "index",
                value: Some(&i.to_string()),
            })
            .insert(Header {
                key: "empty",
                value: None::<&[u8]>,
            });
        let record = FutureRecord::to("round-trip")
            .key(&key)
            .payload(&value)
            .timestamp(1_700_000_000_000 + i)
            .headers(headers);
        let delivery = block_on(producer.send(record, TIMEOUT)).expect("delivered");
        delivered.insert(
            (delivery.partition, delivery.offset),
            (key, value, 1_700_000_000_000 + i),
        );
    }
    let consumer = broker.consumer(&[]);
    let records = consume_all(&consumer, "round-trip", 3, Offset::Beginning, TIMEOUT);
    assert_eq!(records.len(), 300);
    for record in records {
        let (key, value, timestamp) = delivered
            .get(&(record.partition, record.offset))
            .unwrap_or_else(|| {
                panic!(
                    "unexpected record at {}:{}",
                    record.partition, record.offset
                )
            });
        assert_eq!(record.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(record.value.as_deref(), Some(value.as_bytes()));
        assert_eq!(record.timestamp, Some(*timestamp));
        let index = key.trim_start_matches("key-").as_bytes().to_vec();
        assert_eq!(
            record.headers,
            vec![
                ("index".to_string(), Some(index)),
                ("empty".to_string(), None)
            ]
        );
    }
}

#[test]
fn every_codec_round_trips() {
    let broker = Broker::start(&[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&broker, &topic, 2);
        let producer = broker.producer(&[("compression.type", codec), ("linger.ms", "20")]);
        produce_all(
            &producer,
            &topic,
            (0..500).map(|i| Outgoing {
                key: "k".into(),
                value: format!("{codec} record {i} {}", "x".repeat(i % 50)),
                timestamp: None,
            }),
        );
        let consumer = broker.consumer(&[]);
        let records = consume_all(&consumer, &topic, 2, Offset::Beginning, TIMEOUT);
        assert_eq!(records.len(), 500, "{codec}");
        let mut values: Vec<_> = records
            .iter()
            .map(|r| r.value.clone().unwrap_or_default())
            .collect();
        values.sort();
        let mut expected: Vec<_> = (0..500)
            .map(|i| format!("{codec} record {i} {}", "x".repeat(i % 50)).into_bytes())
            .collect();
        expected.sort();
        assert_eq!(values, expected, "{codec}");
    }
}

#[test]
fn per_key_order_over_twelve_partitions_on_two_shards() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "ordered", 12);
    let consumer = broker.consumer(&[]);
    let metadata = consumer
        .fetch_metadata(Some("ordered"), TIMEOUT)
        .expect("metadata");
    let leaders: std::collections::BTreeSet<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.leader())
        .collect();
    assert_eq!(
        leaders.into_iter().collect::<Vec<_>>(),
        vec![0, 1],
        "partitions spread on both shards"
    );

    let producer = broker.producer(&[("linger.ms", "5")]);
    produce_all(
        &producer,
        "ordered",
        (0..10_000).map(|i| Outgoing {
            key: format!("key-{}", i % 100),
            value: format!("{i}"),
            timestamp: None,
        }),
    );
    let records = consume_all(&consumer, "ordered", 12, Offset::Beginning, TIMEOUT);
    assert_eq!(records.len(), 10_000);
    let mut sorted = records.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut last_per_key: HashMap<Vec<u8>, (i32, i64)> = HashMap::new();
    let mut partitions_used = std::collections::HashSet::new();
    for record in sorted {
        partitions_used.insert(record.partition);
        let key = record.key.clone().expect("key");
        let seq: i64 = String::from_utf8(record.value.clone().expect("value"))
            .expect("utf8")
            .parse()
            .expect("number");
        if let Some((partition, previous)) =
            last_per_key.insert(key.clone(), (record.partition, seq))
        {
            assert_eq!(partition, record.partition, "a key stays on one partition");
            assert!(seq > previous, "key {key:?}: {seq} after {previous}");
        }
    }
    assert!(partitions_used.len() > 6, "keys spread over partitions");
}
