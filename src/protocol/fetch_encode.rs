//! Fetch responses written by hand, so record batches go from the tail
//! cache (or a disk read) to the socket without being copied: the response
//! is a list of slices, small encoded pieces between the batches' own
//! `Bytes`. Byte for byte what Kafka's FetchResponse v4–v12 spec says
//! (checked against the `kafka-protocol` crate's encoder in the tests).
//!
//! ```text
//! size i32 | correlation_id i32 | [v12: header tag buffer]
//! throttle_time_ms i32 | error_code i16 | session_id i32      (v7+ for the last two)
//! responses: array of
//!   topic: string
//!   partitions: array of
//!     partition_index i32 | error_code i16 | high_watermark i64
//!     last_stable_offset i64 | log_start_offset i64 (v5+)
//!     aborted_transactions: nullable array of (producer_id i64, first_offset i64)
//!     preferred_read_replica i32 (v11+)
//!     records: nullable bytes  <- the batches, by reference
//!     [v12: tag buffer]
//!   [v12: tag buffer]
//! [v12: tag buffer]
//! ```
//! v12 is flexible: arrays, strings and bytes carry unsigned-varint lengths
//! plus one, and every struct ends in an (empty) tag buffer.

use bytes::{BufMut, Bytes, BytesMut};

/// One partition's part of a fetch response.
#[derive(Debug, Clone, Default)]
pub struct FetchPartition {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// `None` encodes a null records field (an error partition).
    pub records: Option<Vec<Bytes>>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

/// Builds the response frame as slices, in order.
struct Slices {
    parts: Vec<Bytes>,
    current: BytesMut,
    total_bytes: usize,
}

impl Slices {
    fn new() -> Slices {
        Slices {
            parts: Vec::new(),
            current: BytesMut::with_capacity(512),
            total_bytes: 0,
        }
    }

    fn reference(&mut self, bytes: &Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.seal();
        self.total_bytes += bytes.len();
        self.parts.push(bytes.clone());
    }

    fn seal(&mut self) {
        if !self.current.is_empty() {
            let piece = self.current.split().freeze();
            self.total_bytes += piece.len();
            self.parts.push(piece);
        }
    }

    fn finish(mut self) -> (Vec<Bytes>, usize) {
        self.seal();
        (self.parts, self.total_bytes)
    }
}

fn put_unsigned_varint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// An array or string length: compact (length + 1, varint) when flexible.
fn put_length(buf: &mut BytesMut, flexible: bool, length: usize, string: bool) {
    if flexible {
        put_unsigned_varint(buf, u32::try_from(length + 1).unwrap_or(u32::MAX));
    } else if string {
        buf.put_i16(i16::try_from(length).unwrap_or(i16::MAX));
    } else {
        buf.put_i32(i32::try_from(length).unwrap_or(i32::MAX));
    }
}

/// Encodes a whole Fetch response frame (size prefix included) for
/// `version` (4..=12) as slices that reference the record batches.
pub fn encode(correlation_id: i32, version: i16, topics: &[FetchTopic]) -> Vec<Bytes> {
    assert!((4..=12).contains(&version), "fetch encoder covers v4-v12");
    let flexible = version >= 12;
    let mut out = Slices::new();
    out.current.put_i32(0); // size, patched below
    out.current.put_i32(correlation_id);
    if flexible {
        out.current.put_u8(0); // response header tag buffer
    }
    out.current.put_i32(0); // throttle_time_ms
    if version >= 7 {
        out.current.put_i16(0); // error_code
        out.current.put_i32(0); // session_id
    }
    put_length(&mut out.current, flexible, topics.len(), false);
    for topic in topics {
        put_length(&mut out.current, flexible, topic.name.len(), true);
        out.current.put_slice(topic.name.as_bytes());
        put_length(&mut out.current, flexible, topic.partitions.len(), false);
        for partition in &topic.partitions {
            let buf = &mut out.current;
            buf.put_i32(partition.partition_index);
            buf.put_i16(partition.error_code);
            buf.put_i64(partition.high_watermark);
            buf.put_i64(partition.last_stable_offset);
            if version >= 5 {
                buf.put_i64(partition.log_start_offset);
            }
            // aborted_transactions: empty (no transactions yet).
            put_length(buf, flexible, 0, false);
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            match &partition.records {
                None => {
                    if flexible {
                        put_unsigned_varint(buf, 0);
                    } else {
                        buf.put_i32(-1);
                    }
                }
                Some(batches) => {
                    let length: usize = batches.iter().map(Bytes::len).sum();
                    put_length(buf, flexible, length, false);
                    for batch in batches {
                        out.reference(batch);
                    }
                }
            }
            if flexible {
                out.current.put_u8(0); // partition tag buffer
            }
        }
        if flexible {
            out.current.put_u8(0); // topic tag buffer
        }
    }
    if flexible {
        out.current.put_u8(0); // response tag buffer
    }
    let (mut parts, total) = out.finish();
    let size = i32::try_from(total - 4).unwrap_or(i32::MAX);
    // The first piece always starts with the size placeholder.
    let mut first = BytesMut::from(&parts[0][..]);
    first[0..4].copy_from_slice(&size.to_be_bytes());
    parts[0] = first.freeze();
    parts
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::protocol::codec::encode_response;

    fn sample() -> Vec<FetchTopic> {
        vec![
            FetchTopic {
                name: "orders".into(),
                partitions: vec![
                    FetchPartition {
                        partition_index: 0,
                        error_code: 0,
                        high_watermark: 42,
                        last_stable_offset: 42,
                        log_start_offset: 0,
                        records: Some(vec![
                            Bytes::from_static(b"batch-one"),
                            Bytes::from_static(b"batch-two!"),
                        ]),
                    },
                    FetchPartition {
                        partition_index: 3,
                        error_code: 6,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        records: None,
                    },
                ],
            },
            FetchTopic {
                name: "empty".into(),
                partitions: vec![FetchPartition {
                    partition_index: 1,
                    high_watermark: 7,
                    last_stable_offset: 7,
                    records: Some(Vec::new()),
                    ..FetchPartition::default()
                }],
            },
        ]
    }

    /// The same response through the crate's generated encoder.
    fn reference(version: i16, topics: &[FetchTopic]) -> Bytes {
        let responses = topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let records = p.records.as_ref().map(|batches| {
                            let mut all = BytesMut::new();
                            for b in batches {
                                all.put_slice(b);
                            }
                            all.freeze()
                        });
                        PartitionData::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(p.error_code)
                            .with_high_watermark(p.high_watermark)
                            .with_last_stable_offset(p.last_stable_offset)
                            .with_log_start_offset(if version >= 5 {
                                p.log_start_offset
                            } else {
                                -1
                            })
                            .with_aborted_transactions(Some(Vec::new()))
                            .with_records(records)
                    })
                    .collect();
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_partitions(partitions)
            })
            .collect();
        let response = FetchResponse::default().with_responses(responses);
        encode_response(ApiKey::Fetch, version, 99, &ResponseKind::Fetch(response))
            .expect("encodes")
    }

    #[test]
    fn matches_the_generated_encoder_at_every_version() {
        let topics = sample();
        for version in 4..=12 {
            let slices = encode(99, version, &topics);
            let mut joined = BytesMut::new();
            for slice in &slices {
                joined.put_slice(slice);
            }
            assert_eq!(joined.freeze(), reference(version, &topics), "v{version}");
        }
    }

    #[test]
    fn record_batches_are_referenced_not_copied() {
        let batch = Bytes::from(vec![7u8; 1000]);
        let topics = vec![FetchTopic {
            name: "t".into(),
            partitions: vec![FetchPartition {
                records: Some(vec![batch.clone()]),
                ..FetchPartition::default()
            }],
        }];
        let slices = encode(1, 12, &topics);
        assert!(
            slices.iter().any(|s| s.as_ptr() == batch.as_ptr()),
            "the batch's own buffer is in the response"
        );
    }
}
