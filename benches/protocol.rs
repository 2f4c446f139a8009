//! Microbenchmarks of the request path around the log: decoding a Produce
//! request frame (header + body, the records kept as `Bytes`), the append
//! path's CPU work per batch (validation with CRC-32C, then the copy with
//! the assigned offset), and encoding a Fetch response as slices that
//! reference the cached batches. Run: `cargo bench --bench protocol`.

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tidelog::protocol::codec::parse;
use tidelog::protocol::fetch_encode::{FetchPartition, FetchTopic, encode};
use tidelog::storage::batch::{assign, encode_test_batch, validate_produced};
use tidelog::types::Offset;

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;

fn batch(records: usize, value_bytes: usize) -> Bytes {
    let value = vec![0x42u8; value_bytes];
    let values: Vec<&[u8]> = (0..records).map(|_| value.as_slice()).collect();
    encode_test_batch(&values, 1_700_000_000_000)
}

/// A Produce v9 frame (without its size prefix) for `partitions`
/// partitions, each with one batch.
fn produce_frame(partitions: i32, batch: &Bytes) -> Bytes {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("bench")))
                .with_partition_data(
                    (0..partitions)
                        .map(|index| {
                            PartitionProduceData::default()
                                .with_index(index)
                                .with_records(Some(batch.clone()))
                        })
                        .collect(),
                ),
        ]);
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench")))
        .encode(
            &mut frame,
            ApiKey::Produce.request_header_version(PRODUCE_VERSION),
        )
        .expect("header encodes");
    request
        .encode(&mut frame, PRODUCE_VERSION)
        .expect("request encodes");
    frame.freeze()
}

fn produce_request_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce_request_decode");
    for (partitions, records, value_bytes) in [(1, 1, 100), (1, 16, 1024), (16, 64, 1024)] {
        let frame = produce_frame(partitions, &batch(records, value_bytes));
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{partitions}p x {records}x{value_bytes}B")),
            &frame,
            |b, frame| b.iter(|| parse(black_box(frame.clone())).expect("parses")),
        );
    }
    group.finish();
}

fn append_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_path");
    for (records, value_bytes) in [(1usize, 100usize), (16, 1024), (64, 1024)] {
        let batch = batch(records, value_bytes);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{records}x{value_bytes}B")),
            &batch,
            |b, batch| {
                b.iter(|| {
                    validate_produced(black_box(batch), 16 << 20).expect("valid");
                    assign(black_box(batch), Offset(123_456), 0)
                })
            },
        );
    }
    group.finish();
}

fn fetch_response_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_response_encode");
    for (partitions, batches) in [(1usize, 1usize), (16, 4), (100, 1)] {
        let one = batch(16, 1024);
        let topics = vec![FetchTopic {
            name: "bench".into(),
            partitions: (0..partitions)
                .map(|index| FetchPartition {
                    partition_index: index as i32,
                    high_watermark: 1_000_000,
                    last_stable_offset: 1_000_000,
                    records: Some(vec![one.clone(); batches]),
                    ..FetchPartition::default()
                })
                .collect(),
        }];
        group.throughput(Throughput::Bytes((one.len() * batches * partitions) as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{partitions}p x {batches} batches of 16x1KiB")),
            &topics,
            |b, topics| b.iter(|| encode(7, FETCH_VERSION, black_box(topics))),
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    produce_request_decode,
    append_path,
    fetch_response_encode
);
criterion_main!(benches);
