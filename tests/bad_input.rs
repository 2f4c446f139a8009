//! Bad input over raw TCP: malformed, oversized and unknown requests close
//! only their own connection; bad batches get Kafka's error codes and
//! nothing of them is written; requests to the wrong shard are redirected.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use support::Broker;

const PRODUCE_VERSION: i16 = 9;

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

fn send_frame(stream: &mut TcpStream, body: &[u8]) {
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).expect("write");
}

fn request_bytes<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")))
        .encode(&mut buf, api.request_header_version(version))
        .expect("header");
    request.encode(&mut buf, version).expect("body");
    buf.to_vec()
}

/// Reads one response frame; `None` if the broker closed the connection.
fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

fn api_versions_ok(stream: &mut TcpStream) -> bool {
    send_frame(
        stream,
        &request_bytes(ApiKey::ApiVersions, 3, 77, &ApiVersionsRequest::default()),
    );
    let Some(mut frame) = read_frame(stream) else {
        return false;
    };
    let header = ResponseHeader::decode(&mut frame, 0).expect("header");
    let body = ApiVersionsResponse::decode(&mut frame, 3).expect("body");
    header.correlation_id == 77 && body.error_code == 0
}

fn produce(stream: &mut TcpStream, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    send_frame(
        stream,
        &request_bytes(ApiKey::Produce, PRODUCE_VERSION, 5, &request),
    );
    let mut frame = read_frame(stream).expect("produce response");
    ResponseHeader::decode(
        &mut frame,
        ApiKey::Produce.response_header_version(PRODUCE_VERSION),
    )
    .expect("header");
    let response = ProduceResponse::decode(&mut frame, PRODUCE_VERSION).expect("body");
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn create_topic(port: u16, name: &str, partitions: i32) {
    let mut stream = connect(port);
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ]);
    send_frame(
        &mut stream,
        &request_bytes(ApiKey::CreateTopics, 7, 1, &request),
    );
    let mut frame = read_frame(&mut stream).expect("create response");
    ResponseHeader::decode(&mut frame, 1).expect("header");
    let response = CreateTopicsResponse::decode(&mut frame, 7).expect("body");
    assert_eq!(
        response.topics[0].error_code, 0,
        "{:?}",
        response.topics[0].error_message
    );
}

/// A valid uncompressed v2 batch of `count` records of `value_bytes` each.
fn batch(count: i32, value_bytes: usize) -> BytesMut {
    fn varint(buf: &mut Vec<u8>, value: i64) {
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        while v >= 0x80 {
            buf.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }
    let mut records = Vec::new();
    for i in 0..count {
        let mut body = vec![0u8];
        varint(&mut body, 0);
        varint(&mut body, i64::from(i));
        varint(&mut body, -1);
        varint(&mut body, value_bytes as i64);
        body.extend(std::iter::repeat_n(b'v', value_bytes));
        varint(&mut body, 0);
        varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(count - 1).to_be_bytes());
    out.extend_from_slice(&1_000i64.to_be_bytes());
    out.extend_from_slice(&1_000i64.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&records);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    BytesMut::from(&out[..])
}

fn high_watermark(port: u16, topic: &str) -> i64 {
    let mut stream = connect(port);
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1),
                ]),
        ]);
    send_frame(
        &mut stream,
        &request_bytes(ApiKey::ListOffsets, 7, 3, &request),
    );
    let mut frame = read_frame(&mut stream).expect("list offsets response");
    ResponseHeader::decode(&mut frame, 1).expect("header");
    let response = ListOffsetsResponse::decode(&mut frame, 7).expect("body");
    response.topics[0].partitions[0].offset
}

#[test]
fn malformed_oversized_and_unknown_requests_close_only_their_connection() {
    let broker = Broker::start(&["--socket-request-max-bytes", "1048576"]);
    let mut bystander = connect(broker.port);
    assert!(api_versions_ok(&mut bystander));

    let mut garbage = connect(broker.port);
    send_frame(&mut garbage, &[0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff]);
    assert!(is_closed(&mut garbage), "garbage closes its connection");

    let mut oversized = connect(broker.port);
    oversized
        .write_all(&(200 * 1024 * 1024i32).to_be_bytes())
        .expect("write");
    assert!(
        is_closed(&mut oversized),
        "an oversized frame closes its connection"
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

    assert!(api_versions_ok(&mut bystander), "other connections go on");
    let mut fresh = connect(broker.port);
    assert!(api_versions_ok(&mut fresh), "the shard still accepts");
    assert!(
        broker.logs().contains("WARN"),
        "closures are logged at warn"
    );
}

#[test]
fn bad_batches_get_kafka_error_codes_and_write_nothing() {
    let broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "strict", 1);
    let mut stream = connect(broker.port);

    let good = batch(3, 10).freeze();
    assert_eq!(produce(&mut stream, "strict", 0, good.clone()), (0, 0));

    let mut corrupt = batch(3, 10);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    assert_eq!(
        produce(&mut stream, "strict", 0, corrupt.freeze()).0,
        2,
        "CORRUPT_MESSAGE"
    );

    let too_large = batch(2, 600_000).freeze();
    assert_eq!(
        produce(&mut stream, "strict", 0, too_large).0,
        10,
        "MESSAGE_TOO_LARGE"
    );

    let mut two = batch(1, 5);
    two.extend_from_slice(&batch(1, 5));
    assert_eq!(
        produce(&mut stream, "strict", 0, two.freeze()).0,
        87,
        "INVALID_RECORD"
    );

    assert_eq!(
        produce(&mut stream, "strict", 7, good.clone()).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        produce(&mut stream, "nope", 0, good.clone()).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    assert_eq!(
        high_watermark(broker.port, "strict"),
        3,
        "only the good batch was written"
    );
    assert_eq!(produce(&mut stream, "strict", 0, good).1, 3);
}

#[test]
fn a_partition_on_another_shard_gets_not_leader() {
    let broker = Broker::start_with(2, &[]);
    create_topic(broker.port, "spread", 2);
    // Placement: partition 0 on shard 0, partition 1 on shard 1.
    let mut shard0 = connect(broker.port);
    let mut shard1 = connect(broker.port + 1);
    let records = batch(1, 10).freeze();
    assert_eq!(
        produce(&mut shard0, "spread", 1, records.clone()).0,
        6,
        "NOT_LEADER_OR_FOLLOWER"
    );
    assert_eq!(
        produce(&mut shard1, "spread", 0, records.clone()).0,
        6,
        "NOT_LEADER_OR_FOLLOWER"
    );
    assert_eq!(produce(&mut shard0, "spread", 0, records.clone()).0, 0);
    assert_eq!(produce(&mut shard1, "spread", 1, records).0, 0);
}

#[test]
fn unknown_topics_are_not_created_when_auto_create_is_off() {
    let broker = Broker::start_with(1, &["--auto-create-topics", "false"]);
    let mut stream = connect(broker.port);
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("ghost")))),
            metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("bad/name")))),
        ]));
    send_frame(
        &mut stream,
        &request_bytes(ApiKey::Metadata, 12, 4, &request),
    );
    let mut frame = read_frame(&mut stream).expect("metadata response");
    ResponseHeader::decode(&mut frame, 1).expect("header");
    let response = MetadataResponse::decode(&mut frame, 12).expect("body");
    assert_eq!(
        response.topics[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(response.topics[1].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    let mut producer = connect(broker.port);
    assert_eq!(
        produce(&mut producer, "ghost", 0, batch(1, 1).freeze()).0,
        3
    );
}
