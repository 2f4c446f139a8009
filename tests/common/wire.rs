//! The Kafka protocol by hand over raw TCP (`kafka-protocol` for request
//! and response bodies, record batches built and parsed here), for
//! requests a real client never sends and answers it never shows.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub const PRODUCE_VERSION: i16 = 9;
pub const FETCH_VERSION: i16 = 12;
pub const LIST_OFFSETS_VERSION: i16 = 7;
pub const CREATE_TOPICS_VERSION: i16 = 7;

/// Byte offsets in a v2 record batch header (61 bytes).
pub const BATCH_LENGTH_AT: usize = 8;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
pub const ATTRIBUTES_AT: usize = 21;
pub const RECORD_COUNT_AT: usize = 57;
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batch_length`'s count starts (base offset + the length).
pub const BATCH_LOG_OVERHEAD: usize = 12;

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(15)))
        .expect("write timeout");
    stream
}

/// Writes `body` with its 4-byte size prefix.
pub fn send_frame(stream: &mut TcpStream, body: &[u8]) {
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).expect("write");
}

/// Request header and body, ready for `send_frame`.
pub fn request_bytes<R: Encodable>(
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

/// Reads one response frame; `None` if the broker closed the connection
/// (or sent nothing within the read timeout).
pub fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let size = i32::from_be_bytes(size);
    assert!(
        (0..=256 * 1024 * 1024).contains(&size),
        "response frame size {size}"
    );
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

/// True when the broker closed the connection: EOF or reset, not a read
/// timeout (a broker that ignores the request and keeps the connection
/// open must fail the check).
pub fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Sends one request and decodes its response, checking the correlation id.
pub fn call<Req: Encodable, Resp: Decodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    let correlation_id = 4242;
    send_frame(
        stream,
        &request_bytes(api, version, correlation_id, request),
    );
    let mut frame = read_frame(stream).unwrap_or_else(|| panic!("no {api:?} v{version} response"));
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .expect("response header");
    assert_eq!(header.correlation_id, correlation_id);
    let response = Resp::decode(&mut frame, version).expect("response body");
    assert_eq!(frame.remaining(), 0, "{api:?} v{version}: trailing bytes");
    response
}

/// ApiVersions v3 answered with no error: the connection (and shard) live.
pub fn api_versions_ok(stream: &mut TcpStream) -> bool {
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

/// Produce with `acks`; returns the partition's `(error_code, base_offset)`.
pub fn produce_acks(
    stream: &mut TcpStream,
    acks: i16,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    let response: ProduceResponse = call(stream, ApiKey::Produce, PRODUCE_VERSION, &request);
    assert_eq!(response.responses.len(), 1, "one topic answered");
    assert_eq!(
        response.responses[0].partition_responses.len(),
        1,
        "one partition answered"
    );
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(answer.index, partition);
    (answer.error_code, answer.base_offset)
}

/// Produce with `acks=all`; returns the partition's `(error_code, base_offset)`.
pub fn produce(stream: &mut TcpStream, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    produce_acks(stream, -1, topic, partition, records)
}

/// CreateTopics; returns the topic's error code.
pub fn create_topic_with(port: u16, name: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
    let mut stream = connect(port);
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(key, value)| {
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(key.to_string()))
                                .with_value(Some(StrBytes::from_string(value.to_string())))
                        })
                        .collect(),
                ),
        ]);
    let response: CreateTopicsResponse = call(
        &mut stream,
        ApiKey::CreateTopics,
        CREATE_TOPICS_VERSION,
        &request,
    );
    response.topics[0].error_code
}

pub fn create_topic(port: u16, name: &str, partitions: i32) {
    assert_eq!(
        create_topic_with(port, name, partitions, &[]),
        0,
        "create {name}"
    );
}

/// ListOffsets for one partition: `timestamp` -1 latest, -2 earliest.
/// Returns `(error_code, offset)`.
pub fn list_offset(port: u16, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
    let mut stream = connect(port);
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let response: ListOffsetsResponse = call(
        &mut stream,
        ApiKey::ListOffsets,
        LIST_OFFSETS_VERSION,
        &request,
    );
    let answer = &response.topics[0].partitions[0];
    (answer.error_code, answer.offset)
}

/// The high watermark (ListOffsets latest) of a partition.
pub fn high_watermark(port: u16, topic: &str, partition: i32) -> i64 {
    let (error, offset) = list_offset(port, topic, partition, -1);
    assert_eq!(error, 0, "ListOffsets {topic}-{partition}");
    offset
}

/// One partition's Fetch answer.
#[derive(Debug)]
pub struct Fetched {
    pub error_code: i16,
    pub high_watermark: i64,
    pub records: Bytes,
}

/// Fetch one partition from `offset`, waiting up to `max_wait_ms` for
/// `min_bytes`.
pub fn fetch(
    stream: &mut TcpStream,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> Fetched {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(64 * 1024 * 1024)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(16 * 1024 * 1024),
                ]),
        ]);
    let response: FetchResponse = call(stream, ApiKey::Fetch, FETCH_VERSION, &request);
    assert_eq!(response.error_code, 0, "fetch top-level error");
    let answer = &response.responses[0].partitions[0];
    assert_eq!(answer.partition_index, partition);
    Fetched {
        error_code: answer.error_code,
        high_watermark: answer.high_watermark,
        records: answer.records.clone().unwrap_or_default(),
    }
}

/// A record for `batch_of`.
pub struct RawRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp_delta: i64,
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

fn put_varint(buf: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(bytes) => {
            put_varint(buf, bytes.len() as i64);
            buf.extend_from_slice(bytes);
        }
    }
}

/// A valid uncompressed v2 record batch (base offset 0, no producer id),
/// drawn as Kafka's `DefaultRecordBatch`:
///
/// ```text
///  0 base_offset i64        8 batch_length i32     12 leader_epoch i32
/// 16 magic i8 (2)          17 crc u32 (CRC-32C of bytes 21..)
/// 21 attributes i16        23 last_offset_delta i32
/// 27 base_timestamp i64    35 max_timestamp i64
/// 43 producer_id i64       51 producer_epoch i16  53 base_sequence i32
/// 57 record_count i32      61 records (varint-framed)
/// ```
pub fn batch_of(records: &[RawRecord<'_>], base_timestamp: i64) -> BytesMut {
    assemble_batch(records, base_timestamp, 0, encode_records(records))
}

/// The same batch with its records in an LZ4 frame (codec 3), built
/// without a compressor: LZ4 frames may hold blocks stored as they are.
pub fn lz4_batch_of(records: &[RawRecord<'_>], base_timestamp: i64) -> BytesMut {
    assemble_batch(
        records,
        base_timestamp,
        3,
        lz4_frame_stored(&encode_records(records)),
    )
}

fn encode_records(records: &[RawRecord<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (delta, record) in records.iter().enumerate() {
        let mut one = vec![0u8];
        put_varint(&mut one, record.timestamp_delta);
        put_varint(&mut one, delta as i64);
        put_bytes(&mut one, record.key);
        put_bytes(&mut one, record.value);
        put_varint(&mut one, record.headers.len() as i64);
        for (key, value) in record.headers {
            put_bytes(&mut one, Some(key.as_bytes()));
            put_bytes(&mut one, *value);
        }
        put_varint(&mut body, one.len() as i64);
        body.extend_from_slice(&one);
    }
    body
}

fn assemble_batch(
    records: &[RawRecord<'_>],
    base_timestamp: i64,
    attributes: i16,
    payload: Vec<u8>,
) -> BytesMut {
    let count = records.len() as i32;
    let max_timestamp =
        base_timestamp + records.iter().map(|r| r.timestamp_delta).max().unwrap_or(0);
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + payload.len());
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(
        &((BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD + payload.len()) as i32).to_be_bytes(),
    );
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&(count - 1).to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    assert_eq!(out.len(), BATCH_HEADER_BYTES);
    out.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    BytesMut::from(&out[..])
}

/// An LZ4 frame (lz4's frame format v1.6) whose blocks are stored
/// uncompressed: magic, FLG (version 1, independent blocks), BD (64 KiB
/// blocks), header checksum, blocks with the "uncompressed" bit, end mark.
fn lz4_frame_stored(data: &[u8]) -> Vec<u8> {
    const BLOCK_BYTES_MAX: usize = 64 * 1024;
    let mut frame = 0x184D_2204u32.to_le_bytes().to_vec();
    let descriptor = [0x60u8, 0x40];
    frame.extend_from_slice(&descriptor);
    frame.push((xxh32(&descriptor, 0) >> 8) as u8);
    for block in data.chunks(BLOCK_BYTES_MAX) {
        frame.extend_from_slice(&(block.len() as u32 | 0x8000_0000).to_le_bytes());
        frame.extend_from_slice(block);
    }
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame
}

/// xxHash32, for the LZ4 frame header checksum (inputs under 16 bytes).
fn xxh32(input: &[u8], seed: u32) -> u32 {
    const PRIME1: u32 = 2_654_435_761;
    const PRIME2: u32 = 2_246_822_519;
    const PRIME3: u32 = 3_266_489_917;
    const PRIME4: u32 = 668_265_263;
    const PRIME5: u32 = 374_761_393;
    assert!(input.len() < 16, "short-input xxh32 only");
    let mut hash = seed.wrapping_add(PRIME5).wrapping_add(input.len() as u32);
    let mut words = input.chunks_exact(4);
    for word in &mut words {
        let word = u32::from_le_bytes(word.try_into().expect("4 bytes"));
        hash = hash.wrapping_add(word.wrapping_mul(PRIME3));
        hash = hash.rotate_left(17).wrapping_mul(PRIME4);
    }
    for byte in words.remainder() {
        hash = hash.wrapping_add(u32::from(*byte).wrapping_mul(PRIME5));
        hash = hash.rotate_left(11).wrapping_mul(PRIME1);
    }
    hash ^= hash >> 15;
    hash = hash.wrapping_mul(PRIME2);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(PRIME3);
    hash ^= hash >> 16;
    hash
}

/// A valid batch of `count` keyless records of `value_bytes` bytes each.
pub fn batch(count: i32, value_bytes: usize) -> BytesMut {
    let value = vec![b'v'; value_bytes];
    let records: Vec<RawRecord<'_>> = (0..count)
        .map(|_| RawRecord {
            key: None,
            value: Some(&value),
            timestamp_delta: 0,
            headers: &[],
        })
        .collect();
    batch_of(&records, 1_000)
}

/// A batch whose records' values are `values` (keyless, no headers).
pub fn batch_with_values(values: &[&[u8]]) -> BytesMut {
    let records: Vec<RawRecord<'_>> = values
        .iter()
        .map(|value| RawRecord {
            key: None,
            value: Some(value),
            timestamp_delta: 0,
            headers: &[],
        })
        .collect();
    batch_of(&records, 1_000)
}

/// One record batch as found in a Fetch response.
#[derive(Debug, Clone)]
pub struct FetchedBatch {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub attributes: i16,
    pub record_count: i32,
    /// The whole batch, header included, as the broker sent it.
    pub bytes: Bytes,
}

impl FetchedBatch {
    pub fn crc_ok(&self) -> bool {
        let stored = u32::from_be_bytes(
            self.bytes[CRC_AT..ATTRIBUTES_AT]
                .try_into()
                .expect("4 bytes"),
        );
        stored == crc32c::crc32c(&self.bytes[ATTRIBUTES_AT..])
    }

    /// Codec bits of `attributes`: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn codec(&self) -> i16 {
        self.attributes & 0x7
    }

    /// Values of an uncompressed batch's records.
    pub fn values(&self) -> Vec<Option<Vec<u8>>> {
        assert_eq!(self.codec(), 0, "values() reads uncompressed batches only");
        let mut buf = &self.bytes[BATCH_HEADER_BYTES..];
        let mut values = Vec::new();
        for _ in 0..self.record_count {
            let length = get_varint(&mut buf) as usize;
            let mut record = &buf[..length];
            buf = &buf[length..];
            record = &record[1..]; // attributes
            get_varint(&mut record); // timestamp delta
            get_varint(&mut record); // offset delta
            let key_length = get_varint(&mut record);
            if key_length > 0 {
                record = &record[key_length as usize..];
            }
            let value_length = get_varint(&mut record);
            values.push((value_length >= 0).then(|| record[..value_length as usize].to_vec()));
        }
        values
    }
}

fn get_varint(buf: &mut &[u8]) -> i64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = buf[0];
        *buf = &buf[1..];
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Splits a Fetch response's record bytes into batches; a partial batch at
/// the end (a fetch may cut one off at the size limit) is dropped.
pub fn parse_batches(mut records: &[u8]) -> Vec<FetchedBatch> {
    let mut batches = Vec::new();
    while records.len() >= BATCH_HEADER_BYTES {
        let length = i32::from_be_bytes(
            records[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        assert!(length > 0, "batch length {length}");
        let total = BATCH_LOG_OVERHEAD + length as usize;
        if records.len() < total {
            break;
        }
        let bytes = Bytes::copy_from_slice(&records[..total]);
        assert_eq!(bytes[MAGIC_AT], 2, "magic");
        batches.push(FetchedBatch {
            base_offset: i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes")),
            last_offset_delta: i32::from_be_bytes(bytes[23..27].try_into().expect("4 bytes")),
            attributes: i16::from_be_bytes(bytes[21..23].try_into().expect("2 bytes")),
            record_count: i32::from_be_bytes(
                bytes[RECORD_COUNT_AT..BATCH_HEADER_BYTES]
                    .try_into()
                    .expect("4 bytes"),
            ),
            bytes,
        });
        records = &records[total..];
    }
    batches
}

/// Every batch of a partition from `offset` up to its high watermark,
/// fetched in as many requests as needed (bounded).
pub fn fetch_all_batches(port: u16, topic: &str, partition: i32, offset: i64) -> Vec<FetchedBatch> {
    let mut stream = connect(port);
    let mut batches = Vec::new();
    let mut next = offset;
    for _ in 0..10_000 {
        let fetched = fetch(&mut stream, topic, partition, next, 0, 0);
        assert_eq!(fetched.error_code, 0, "fetch {topic}-{partition} at {next}");
        if next >= fetched.high_watermark {
            return batches;
        }
        let got = parse_batches(&fetched.records);
        assert!(
            !got.is_empty(),
            "fetch at {next} below the high watermark returned no batch"
        );
        next = got
            .last()
            .map(|b| b.base_offset + i64::from(b.last_offset_delta) + 1)
            .expect("a batch");
        batches.extend(got);
    }
    panic!("fetching {topic}-{partition} did not reach the high watermark");
}
