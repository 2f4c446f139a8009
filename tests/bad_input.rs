//! Bad input over raw TCP: malformed, oversized and unknown requests close
//! only their own connection; bad batches get Kafka's error codes and
//! nothing of them is written; requests to the wrong shard are redirected.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::Broker;
use common::wire::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_RECORD: i16 = 87;

#[test]
fn malformed_oversized_and_unknown_requests_close_only_their_connection() {
    let broker = Broker::start(&["--socket-request-max-bytes", "1048576"]);
    let mut bystander = connect(broker.port);
    let mut other_shard = connect(broker.shard_port(1));
    assert!(api_versions_ok(&mut bystander));
    assert!(api_versions_ok(&mut other_shard));

    // A Metadata v12 header followed by bytes that decode as nothing.
    let mut garbage = connect(broker.port);
    send_frame(&mut garbage, &[0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff]);
    assert!(is_closed(&mut garbage), "garbage closes its connection");

    // Pure noise, no header at all.
    let mut noise = connect(broker.port);
    send_frame(&mut noise, &[0xde, 0xad]);
    assert!(
        is_closed(&mut noise),
        "a frame too short for a header closes its connection"
    );

    // Over the default limit (100 MiB) and over this broker's (1 MiB): the
    // broker must not wait for (or allocate) the announced bytes.
    let mut oversized = connect(broker.port);
    oversized
        .write_all(&(200 * 1024 * 1024i32).to_be_bytes())
        .expect("write");
    assert!(
        is_closed(&mut oversized),
        "an oversized frame closes its connection"
    );
    let mut just_over = connect(broker.port);
    just_over
        .write_all(&(1024 * 1024 + 1i32).to_be_bytes())
        .expect("write");
    assert!(
        is_closed(&mut just_over),
        "a frame one byte over --socket-request-max-bytes closes its connection"
    );

    let mut negative = connect(broker.port);
    negative.write_all(&(-5i32).to_be_bytes()).expect("write");
    assert!(
        is_closed(&mut negative),
        "a negative size closes its connection"
    );

    let mut unknown = connect(broker.port);
    let mut body = request_bytes(ApiKey::ApiVersions, 0, 9, &ApiVersionsRequest::default());
    body[0..2].copy_from_slice(&999i16.to_be_bytes());
    send_frame(&mut unknown, &body);
    assert!(
        is_closed(&mut unknown),
        "an unknown API key closes its connection"
    );

    let mut unsupported = connect(broker.port);
    let mut body = request_bytes(ApiKey::Produce, 3, 9, &ProduceRequest::default());
    body[2..4].copy_from_slice(&2i16.to_be_bytes());
    send_frame(&mut unsupported, &body);
    assert!(
        is_closed(&mut unsupported),
        "an unsupported version closes its connection"
    );

    // A client that dies half-way through a frame.
    {
        let mut truncated = connect(broker.port);
        truncated.write_all(&100i32.to_be_bytes()).expect("write");
        truncated.write_all(&[0, 18, 0, 3]).expect("write");
    }

    // The same on shard 1: its own connection closes, nobody else's.
    let mut garbage_on_1 = connect(broker.shard_port(1));
    send_frame(
        &mut garbage_on_1,
        &[0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff],
    );
    assert!(
        is_closed(&mut garbage_on_1),
        "garbage closes its connection on shard 1"
    );

    assert!(api_versions_ok(&mut bystander), "other connections go on");
    assert!(
        api_versions_ok(&mut other_shard),
        "other shards' connections go on"
    );
    for shard in 0..broker.cores {
        let mut fresh = connect(broker.shard_port(shard));
        assert!(api_versions_ok(&mut fresh), "shard {shard} still accepts");
    }
    // A request still works end to end after all that.
    create_topic(broker.port, "after-bad-input", 1);
    let mut producer = connect(broker.port);
    assert_eq!(
        produce(&mut producer, "after-bad-input", 0, batch(2, 8).freeze()),
        (0, 0)
    );
    assert!(
        broker.logs().contains("WARN"),
        "closures are logged at warn:\n{}",
        broker.logs()
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    // Kafka answers a connection's requests in the order they came.
    let broker = Broker::start_with(1, &[]);
    let mut stream = connect(broker.port);
    let mut frames = Vec::new();
    for correlation_id in 1..=20 {
        let body = request_bytes(
            ApiKey::ApiVersions,
            3,
            correlation_id,
            &ApiVersionsRequest::default(),
        );
        frames.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frames.extend_from_slice(&body);
    }
    stream.write_all(&frames).expect("write");
    for correlation_id in 1..=20 {
        let mut frame = read_frame(&mut stream).expect("response");
        use kafka_protocol::protocol::Decodable;
        let header = ResponseHeader::decode(&mut frame, 0).expect("header");
        assert_eq!(
            header.correlation_id, correlation_id,
            "responses in request order"
        );
    }
}

#[test]
fn bad_batches_get_kafka_error_codes_and_write_nothing() {
    let broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "strict", 1);
    let mut stream = connect(broker.port);

    let good = batch_with_values(&[b"one", b"two", b"three"]).freeze();
    assert_eq!(produce(&mut stream, "strict", 0, good.clone()), (0, 0));

    // One flipped bit in a record's value: the CRC no longer matches.
    let mut corrupt = batch_with_values(&[b"bad-1", b"bad-2", b"bad-3"]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    assert_eq!(
        produce(&mut stream, "strict", 0, corrupt.freeze()).0,
        CORRUPT_MESSAGE
    );
    // A flipped bit in a CRC-covered header field (attributes).
    let mut corrupt_header = batch_with_values(&[b"bad-4"]);
    corrupt_header[ATTRIBUTES_AT + 1] ^= 0x40;
    assert_eq!(
        produce(&mut stream, "strict", 0, corrupt_header.freeze()).0,
        CORRUPT_MESSAGE
    );

    let too_large = batch(2, 600_000).freeze();
    assert_eq!(
        produce(&mut stream, "strict", 0, too_large).0,
        MESSAGE_TOO_LARGE
    );

    let mut two = batch(1, 5);
    two.extend_from_slice(&batch(1, 5));
    assert_eq!(
        produce(&mut stream, "strict", 0, two.freeze()).0,
        INVALID_RECORD,
        "two batches in one produce (Kafka: INVALID_RECORD)"
    );

    assert_eq!(
        produce(&mut stream, "strict", 7, good.clone()).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        produce(&mut stream, "nope", 0, good.clone()).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );

    // Nothing of the rejected batches is visible: the high watermark, and
    // what a fetch returns, are the good batch alone.
    assert_eq!(high_watermark(broker.port, "strict", 0), 3);
    let batches = fetch_all_batches(broker.port, "strict", 0, 0);
    assert_eq!(batches.len(), 1, "only the good batch: {batches:?}");
    assert_eq!(batches[0].base_offset, 0);
    assert_eq!(batches[0].record_count, 3);
    assert!(batches[0].crc_ok(), "the stored batch's CRC still holds");
    assert_eq!(
        batches[0].values(),
        vec![
            Some(b"one".to_vec()),
            Some(b"two".to_vec()),
            Some(b"three".to_vec())
        ]
    );
    // The next good batch continues right after it.
    assert_eq!(produce(&mut stream, "strict", 0, good).1, 3);
}

#[test]
fn the_size_limit_is_max_message_bytes_per_topic() {
    let broker = Broker::start_with(1, &[]);
    assert_eq!(
        create_topic_with(broker.port, "small", 1, &[("max.message.bytes", "2000")]),
        0
    );
    create_topic(broker.port, "default", 1);
    let mut stream = connect(broker.port);
    let under = batch(1, 1_000).freeze();
    let over = batch(1, 3_000).freeze();
    assert_eq!(produce(&mut stream, "small", 0, under).0, 0);
    assert_eq!(
        produce(&mut stream, "small", 0, over.clone()).0,
        MESSAGE_TOO_LARGE
    );
    assert_eq!(high_watermark(broker.port, "small", 0), 1);
    // The default (1048588 bytes) takes it, and takes a batch of exactly
    // that size.
    assert_eq!(produce(&mut stream, "default", 0, over).0, 0);
    let exact_value_bytes = value_bytes_for_batch_of(1_048_588);
    let exact = batch(1, exact_value_bytes);
    assert_eq!(
        exact.len(),
        1_048_588,
        "a batch of exactly max.message.bytes"
    );
    assert_eq!(produce(&mut stream, "default", 0, exact.freeze()).0, 0);
    let one_more = batch(1, exact_value_bytes + 1);
    assert_eq!(one_more.len(), 1_048_589);
    assert_eq!(
        produce(&mut stream, "default", 0, one_more.freeze()).0,
        MESSAGE_TOO_LARGE
    );
    assert_eq!(high_watermark(broker.port, "default", 0), 2);
}

/// The value size that makes `batch(1, _)` exactly `total` bytes long.
fn value_bytes_for_batch_of(total: usize) -> usize {
    let mut value_bytes = total - BATCH_HEADER_BYTES;
    for _ in 0..10 {
        let length = batch(1, value_bytes).len();
        if length == total {
            return value_bytes;
        }
        value_bytes = value_bytes + total - length;
    }
    panic!("no value size gives a {total}-byte batch");
}

#[test]
fn a_partition_on_another_shard_gets_not_leader() {
    let broker = Broker::start_with(2, &[]);
    create_topic(broker.port, "spread", 2);
    // Placement: partition 0 on shard 0, partition 1 on shard 1.
    assert_eq!(
        broker.leaders("spread").into_iter().collect::<Vec<_>>(),
        vec![(0, 0), (1, 1)]
    );
    let mut shard0 = connect(broker.shard_port(0));
    let mut shard1 = connect(broker.shard_port(1));
    let records = batch(1, 10).freeze();
    assert_eq!(
        produce(&mut shard0, "spread", 1, records.clone()).0,
        NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        produce(&mut shard1, "spread", 0, records.clone()).0,
        NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        fetch(&mut shard0, "spread", 1, 0, 0, 0).error_code,
        NOT_LEADER_OR_FOLLOWER,
        "fetch from the wrong shard"
    );
    assert_eq!(produce(&mut shard0, "spread", 0, records.clone()), (0, 0));
    assert_eq!(produce(&mut shard1, "spread", 1, records), (0, 0));
    // Nothing was written by the refused requests.
    assert_eq!(high_watermark(broker.shard_port(0), "spread", 0), 1);
    assert_eq!(high_watermark(broker.shard_port(1), "spread", 1), 1);
}

#[test]
fn unknown_topics_are_not_created_when_auto_create_is_off() {
    let broker = Broker::start_with(1, &["--auto-create-topics", "false"]);
    let mut stream = connect(broker.port);
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name("ghost"))),
            metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("bad/name")))),
        ]));
    let response: MetadataResponse = call(&mut stream, ApiKey::Metadata, 12, &request);
    assert_eq!(response.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(response.topics[1].error_code, INVALID_TOPIC_EXCEPTION);
    let mut producer = connect(broker.port);
    assert_eq!(
        produce(&mut producer, "ghost", 0, batch(1, 1).freeze()).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    // Still unknown: neither request created it.
    let all: MetadataResponse = call(
        &mut stream,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    assert!(
        all.topics.is_empty(),
        "no topic was created: {:?}",
        all.topics
    );
}

#[test]
fn auto_create_makes_default_partitions_and_rejects_bad_names() {
    let broker = Broker::start_with(2, &["--default-partitions", "4"]);
    let mut stream = connect(broker.port);
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name("auto"))),
            metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic_name(&"x".repeat(250)))),
        ]));
    let response: MetadataResponse = call(&mut stream, ApiKey::Metadata, 12, &request);
    // Kafka answers a just-created topic with LEADER_NOT_AVAILABLE or with
    // its partitions; either way it exists by the next request.
    assert!(
        [0, 5].contains(&response.topics[0].error_code),
        "auto-create: {:?}",
        response.topics[0]
    );
    assert_eq!(
        response.topics[1].error_code, INVALID_TOPIC_EXCEPTION,
        "a 250-character name"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leaders = broker.leaders("auto");
        if leaders.len() == 4 {
            let on_shard_1 = leaders.values().filter(|l| **l == 1).count();
            assert_eq!(on_shard_1, 2, "balanced over both shards: {leaders:?}");
            break;
        }
        assert!(Instant::now() < deadline, "auto topic has {leaders:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_long_poll_fetch_returns_at_its_deadline_or_when_data_arrives() {
    let broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "polled", 1);

    // Nothing to read: the answer comes once max_wait_ms has passed (well
    // within the read timeout), empty.
    let mut stream = connect(broker.port);
    let fetched = fetch(&mut stream, "polled", 0, 0, 300, 1);
    assert_eq!(fetched.error_code, 0);
    assert!(fetched.records.is_empty());

    // A long poll waiting on an empty partition is woken by a produce on
    // another connection and returns the new batch, long before its
    // 10-second max wait ends.
    let port = broker.port;
    let waiter = std::thread::spawn(move || {
        let mut stream = connect(port);
        let started = Instant::now();
        let fetched = fetch(&mut stream, "polled", 0, 0, 10_000, 1);
        (fetched, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut producer = connect(broker.port);
    assert_eq!(
        produce(
            &mut producer,
            "polled",
            0,
            batch_with_values(&[b"wake"]).freeze()
        ),
        (0, 0)
    );
    let (fetched, waited) = waiter.join().expect("waiter");
    assert_eq!(fetched.error_code, 0);
    let batches = parse_batches(&fetched.records);
    assert_eq!(batches.len(), 1, "the long poll returned the new batch");
    assert_eq!(batches[0].values(), vec![Some(b"wake".to_vec())]);
    assert!(
        waited < Duration::from_secs(9),
        "the produce woke the long poll (waited {waited:?} of 10 s)"
    );
}
