//! Produce and consume through librdkafka against the real broker: what
//! goes in comes back exactly, at the offsets the producer was told.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::{Broker, Outgoing, Record, TIMEOUT, block_on, consume_all, poll_records, produce_all};
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// One record to send, with everything a record can carry.
#[derive(Clone, Debug)]
struct Full {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Sends every record pipelined, then waits for the delivery reports;
/// returns `(partition, offset) -> record`.
fn send_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[Full],
) -> BTreeMap<(i32, i64), Full> {
    let futures: Vec<_> = records
        .iter()
        .map(|full| {
            let mut headers = OwnedHeaders::new();
            for (key, value) in &full.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                .timestamp(full.timestamp)
                .headers(headers);
            if let Some(key) = &full.key {
                record = record.key(key);
            }
            if let Some(value) = &full.value {
                record = record.payload(value);
            }
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued")
        })
        .collect();
    let mut delivered = BTreeMap::new();
    for (future, full) in futures.into_iter().zip(records) {
        let delivery = block_on(future)
            .expect("delivery report")
            .unwrap_or_else(|(e, _)| panic!("not delivered: {e}"));
        let previous = delivered.insert((delivery.partition, delivery.offset), full.clone());
        assert!(
            previous.is_none(),
            "two records acknowledged at {}:{}",
            delivery.partition,
            delivery.offset
        );
    }
    delivered
}

fn assert_same(delivered: &BTreeMap<(i32, i64), Full>, records: &[Record]) {
    assert_eq!(
        records.len(),
        delivered.len(),
        "as many records read as delivered"
    );
    for record in records {
        let full = delivered
            .get(&(record.partition, record.offset))
            .unwrap_or_else(|| {
                panic!(
                    "unexpected record at {}:{}",
                    record.partition, record.offset
                )
            });
        let at = format!("at {}:{}", record.partition, record.offset);
        assert_eq!(record.key, full.key, "key {at}");
        assert_eq!(record.value, full.value, "value {at}");
        assert_eq!(record.timestamp, Some(full.timestamp), "timestamp {at}");
        assert_eq!(record.headers, full.headers, "headers {at}");
    }
}

#[test]
fn keys_values_headers_and_timestamps_round_trip() {
    let broker = Broker::start(&[]);
    broker.create_topic("round-trip", 3);
    let mut records: Vec<Full> = (0..300i64)
        .map(|i| Full {
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(
                format!("value-{i}")
                    .repeat((i % 7 + 1) as usize)
                    .into_bytes(),
            ),
            timestamp: 1_700_000_000_000 + i,
            headers: vec![
                ("index".to_string(), Some(i.to_string().into_bytes())),
                ("empty".to_string(), None),
            ],
        })
        .collect();
    // The edges of the format.
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    records.extend([
        Full {
            key: None,
            value: Some(b"no key".to_vec()),
            timestamp: 1,
            headers: vec![],
        },
        Full {
            key: Some(b"tombstone".to_vec()),
            value: None,
            timestamp: 1_600_000_000_000,
            headers: vec![],
        },
        Full {
            key: Some(Vec::new()),
            value: Some(Vec::new()),
            timestamp: 32_503_680_000_000,
            headers: vec![("".to_string(), Some(Vec::new()))],
        },
        Full {
            key: Some(all_bytes.clone()),
            value: Some(all_bytes.repeat(4)),
            timestamp: 1_700_000_000_000,
            headers: vec![
                ("dup".to_string(), Some(b"first".to_vec())),
                ("dup".to_string(), Some(b"second".to_vec())),
                ("bytes".to_string(), Some(all_bytes.clone())),
                ("ünïcødé".to_string(), Some("värde".as_bytes().to_vec())),
            ],
        },
        Full {
            key: Some(b"big".to_vec()),
            value: Some((0..900_000u32).map(|i| (i * 7 % 251) as u8).collect()),
            timestamp: 1_700_000_000_001,
            headers: (0..50)
                .map(|h| (format!("h{h}"), Some(vec![h as u8; h])))
                .collect(),
        },
    ]);
    let producer = broker.producer(&[("linger.ms", "5")]);
    let delivered = send_all(&producer, "round-trip", &records);
    assert_eq!(delivered.len(), records.len());

    let consumer = broker.consumer(&[]);
    let read = consume_all(&consumer, "round-trip", 3, Offset::Beginning, TIMEOUT);
    assert_same(&delivered, &read);
    common::assert_contiguous_from_zero(&read);
}

#[test]
fn every_codec_round_trips_and_is_stored_as_sent() {
    use common::wire;
    let broker = Broker::start(&[]);
    for (codec, codec_id) in [
        ("none", 0),
        ("gzip", 1),
        ("snappy", 2),
        ("lz4", 3),
        ("zstd", 4),
    ] {
        let topic = format!("codec-{codec}");
        broker.create_topic(&topic, 2);
        let producer = broker.producer(&[("compression.type", codec), ("linger.ms", "20")]);
        let records: Vec<Full> = (0..500i64)
            .map(|i| Full {
                key: Some(format!("k{}", i % 10).into_bytes()),
                value: Some(
                    format!("{codec} record {i} {}", "x".repeat(i as usize % 50)).into_bytes(),
                ),
                timestamp: 1_700_000_000_000 + i,
                headers: vec![("codec".to_string(), Some(codec.as_bytes().to_vec()))],
            })
            .collect();
        let delivered = send_all(&producer, &topic, &records);
        let consumer = broker.consumer(&[]);
        let read = consume_all(&consumer, &topic, 2, Offset::Beginning, TIMEOUT);
        assert_same(&delivered, &read);

        // Stored as sent: the batches a fetch returns carry the producer's
        // codec (librdkafka sends a batch uncompressed when compressing
        // would not shrink it), and their CRCs still hold.
        let leaders = broker.leaders(&topic);
        let mut compressed_batches = 0;
        let mut shapes = Vec::new();
        for (partition, leader) in leaders {
            let port = broker.shard_port(leader as usize);
            for batch in wire::fetch_all_batches(port, &topic, partition, 0) {
                shapes.push((
                    partition,
                    batch.base_offset,
                    batch.record_count,
                    batch.codec(),
                ));
                assert!(
                    [0, codec_id].contains(&batch.codec()),
                    "{codec}: codec {} in batch at {partition}:{}",
                    batch.codec(),
                    batch.base_offset
                );
                assert!(
                    batch.crc_ok(),
                    "{codec}: CRC of batch at {partition}:{}",
                    batch.base_offset
                );
                if batch.codec() == codec_id && batch.record_count > 1 {
                    compressed_batches += 1;
                }
            }
        }
        // librdkafka compresses with LZ4 only for a broker that advertises
        // FindCoordinator (its RD_KAFKA_FEATURE_LZ4 dates LZ4 support by
        // that API); without it, it sends LZ4 batches uncompressed.
        let compresses = codec != "lz4" || advertises_find_coordinator(&broker);
        assert!(
            codec_id == 0 || !compresses || compressed_batches > 0,
            "{codec}: no batch stored compressed (partition, base offset, records, codec): {shapes:?}"
        );
        assert!(
            shapes.iter().any(|(_, _, records, _)| *records > 1),
            "{codec}: linger.ms batched records together: {shapes:?}"
        );
    }
}

fn advertises_find_coordinator(broker: &Broker) -> bool {
    use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
    let mut stream = common::wire::connect(broker.port);
    let response: ApiVersionsResponse = common::wire::call(
        &mut stream,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    response
        .api_keys
        .iter()
        .any(|api| api.api_key == ApiKey::FindCoordinator as i16)
}

/// An LZ4 batch reaches the log and a librdkafka consumer even when
/// librdkafka itself will not produce one (see above): built by hand.
#[test]
fn a_hand_built_lz4_batch_is_read_back_by_librdkafka() {
    use common::wire::{self, RawRecord};
    let broker = Broker::start_with(1, &[]);
    broker.create_topic("lz4", 1);
    let big = vec![b'z'; 100_000];
    let headers: &[(&str, Option<&[u8]>)] = &[("h", Some(b"v")), ("null", None)];
    let records = [
        RawRecord {
            key: Some(b"k0"),
            value: Some(b"first"),
            timestamp_delta: 0,
            headers,
        },
        RawRecord {
            key: None,
            value: Some(&big),
            timestamp_delta: 5,
            headers: &[],
        },
        RawRecord {
            key: Some(b"k2"),
            value: None,
            timestamp_delta: 9,
            headers: &[],
        },
    ];
    let mut stream = wire::connect(broker.port);
    let base_timestamp = 1_700_000_000_000;
    assert_eq!(
        wire::produce(
            &mut stream,
            "lz4",
            0,
            wire::lz4_batch_of(&records, base_timestamp).freeze()
        ),
        (0, 0)
    );
    assert_eq!(
        wire::produce(
            &mut stream,
            "lz4",
            0,
            wire::batch_with_values(&[b"plain"]).freeze()
        ),
        (0, 3)
    );
    let batches = wire::fetch_all_batches(broker.port, "lz4", 0, 0);
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].codec(), 3, "stored as sent");
    let consumer = broker.consumer(&[]);
    let read = consume_all(&consumer, "lz4", 1, Offset::Beginning, TIMEOUT);
    let summary: Vec<_> = read
        .iter()
        .map(|r| {
            (
                r.offset,
                r.key.clone(),
                r.value.clone(),
                r.timestamp,
                r.headers.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                0,
                Some(b"k0".to_vec()),
                Some(b"first".to_vec()),
                Some(base_timestamp),
                vec![
                    ("h".to_string(), Some(b"v".to_vec())),
                    ("null".to_string(), None)
                ]
            ),
            (1, None, Some(big.clone()), Some(base_timestamp + 5), vec![]),
            (
                2,
                Some(b"k2".to_vec()),
                None,
                Some(base_timestamp + 9),
                vec![]
            ),
            (3, None, Some(b"plain".to_vec()), Some(1_000), vec![]),
        ]
    );
}

#[test]
fn acks_zero_one_and_all_each_deliver() {
    let broker = Broker::start(&[]);
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        broker.create_topic(&topic, 2);
        let producer = broker.producer(&[("acks", acks), ("linger.ms", "2")]);
        let positions = produce_all(
            &producer,
            &topic,
            (0..400).map(|i| Outgoing {
                key: format!("k{i}"),
                value: format!("{acks}-{i}"),
                timestamp: None,
            }),
        );
        if acks != "0" {
            let unique: BTreeSet<_> = positions.iter().collect();
            assert_eq!(unique.len(), 400, "acks={acks}: distinct offsets");
        }
        // acks=0 has no answer to wait for: poll until all arrived.
        let consumer = broker.consumer(&[]);
        let mut assignment = rdkafka::TopicPartitionList::new();
        for p in 0..2 {
            assignment
                .add_partition_offset(&topic, p, Offset::Beginning)
                .expect("assignment");
        }
        consumer.assign(&assignment).expect("assign");
        let read = poll_records(&consumer, 400, TIMEOUT);
        let mut values: Vec<String> = read.iter().map(Record::value_str).collect();
        values.sort();
        let mut expected: Vec<String> = (0..400).map(|i| format!("{acks}-{i}")).collect();
        expected.sort();
        assert_eq!(values, expected, "acks={acks}");
        common::assert_contiguous_from_zero(&read);
        if acks != "0" {
            for record in &read {
                let sent: usize = record
                    .value_str()
                    .rsplit('-')
                    .next()
                    .expect("index")
                    .parse()
                    .expect("number");
                assert_eq!(
                    positions[sent],
                    (record.partition, record.offset),
                    "acks={acks}"
                );
            }
        }
    }
}

#[test]
fn per_key_order_over_twelve_partitions_on_two_shards() {
    let broker = Broker::start(&[]);
    broker.create_topic("ordered", 12);
    let leaders = broker.leaders("ordered");
    assert_eq!(leaders.len(), 12);
    let per_node = leaders.values().fold(BTreeMap::new(), |mut m, leader| {
        *m.entry(*leader).or_insert(0) += 1;
        m
    });
    assert_eq!(
        per_node,
        BTreeMap::from([(0, 6), (1, 6)]),
        "12 partitions, 6 led by each shard's node"
    );

    let producer = broker.producer(&[("linger.ms", "5")]);
    let positions = produce_all(
        &producer,
        "ordered",
        (0..10_000).map(|i| Outgoing {
            key: format!("key-{}", i % 100),
            value: format!("{i}"),
            timestamp: None,
        }),
    );
    let consumer = broker.consumer(&[]);
    let records = consume_all(&consumer, "ordered", 12, Offset::Beginning, TIMEOUT);
    assert_eq!(records.len(), 10_000);
    common::assert_contiguous_from_zero(&records);
    // Each record is where the producer was told it went.
    let by_position: HashMap<(i32, i64), &Record> = records
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    for (sent, position) in positions.iter().enumerate() {
        let record = by_position
            .get(position)
            .unwrap_or_else(|| panic!("record {sent} missing at {position:?}"));
        assert_eq!(record.value_str(), sent.to_string(), "at {position:?}");
    }
    // Per key: one partition, in send order.
    let mut sorted = records.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut last_per_key: HashMap<Vec<u8>, (i32, i64)> = HashMap::new();
    let mut partitions_used = BTreeSet::new();
    let mut nodes_used = BTreeSet::new();
    for record in sorted {
        partitions_used.insert(record.partition);
        nodes_used.insert(leaders[&record.partition]);
        let key = record.key.clone().expect("key");
        let seq: i64 = record.value_str().parse().expect("number");
        if let Some((partition, previous)) =
            last_per_key.insert(key.clone(), (record.partition, seq))
        {
            assert_eq!(partition, record.partition, "a key stays on one partition");
            assert!(seq > previous, "key {key:?}: {seq} after {previous}");
        }
    }
    assert!(
        partitions_used.len() > 6,
        "keys spread over partitions: {partitions_used:?}"
    );
    assert_eq!(nodes_used.len(), 2, "records on both shards");
}

#[test]
fn several_producers_share_partitions_without_losing_or_repeating_offsets() {
    // Concurrent appends to the same partitions from several connections:
    // group commit must give each record its own offset.
    let broker = Broker::start(&[]);
    broker.create_topic("shared", 4);
    let handles: Vec<_> = (0..4)
        .map(|producer_index| {
            let producer = broker.producer(&[("linger.ms", "1")]);
            std::thread::spawn(move || {
                produce_all(
                    &producer,
                    "shared",
                    (0..2_000).map(|i| Outgoing {
                        key: format!("k{}", i % 16),
                        value: format!("p{producer_index}-{i}"),
                        timestamp: None,
                    }),
                )
            })
        })
        .collect();
    let mut positions = Vec::new();
    for handle in handles {
        positions.extend(handle.join().expect("producer thread"));
    }
    let distinct: BTreeSet<_> = positions.iter().collect();
    assert_eq!(distinct.len(), 8_000, "every record its own offset");
    let consumer = broker.consumer(&[]);
    let records = consume_all(&consumer, "shared", 4, Offset::Beginning, TIMEOUT);
    assert_eq!(records.len(), 8_000);
    common::assert_contiguous_from_zero(&records);
    let consumed: BTreeSet<_> = records.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(consumed, distinct.into_iter().copied().collect());
}

#[test]
fn a_consumer_reading_while_records_are_produced_sees_each_once_in_order() {
    // The consumer follows the moving end of the log (long polls woken by
    // appends, reads from the tail cache) while the producer appends.
    let broker = Broker::start(&[]);
    broker.create_topic("live", 2);
    let consumer = broker.consumer(&[]);
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..2 {
        assignment
            .add_partition_offset("live", p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let producer = broker.producer(&[("linger.ms", "0"), ("batch.num.messages", "50")]);
    let writer = std::thread::spawn(move || {
        produce_all(
            &producer,
            "live",
            (0..20_000).map(|i| Outgoing {
                key: format!("k{}", i % 7),
                value: format!("{i}"),
                timestamp: None,
            }),
        )
    });
    let records = poll_records(&consumer, 20_000, TIMEOUT);
    let positions = writer.join().expect("producer thread");
    common::assert_contiguous_from_zero(&records);
    for record in &records {
        let sent: usize = record.value_str().parse().expect("number");
        assert_eq!(positions[sent], (record.partition, record.offset));
    }
    // Per partition, in offset order as delivered by the consumer.
    let mut last: HashMap<i32, i64> = HashMap::new();
    for record in &records {
        if let Some(previous) = last.insert(record.partition, record.offset) {
            assert!(
                record.offset > previous,
                "partition {} went back",
                record.partition
            );
        }
    }
}
