//! What a benchmark record carries, and the v2 record batches the native
//! driver builds and reads.
//!
//! A value starts with a stamp; the rest is filler:
//!
//! ```text
//! offset  size  field
//!      0     8  intended send time, ns since the UNIX epoch (u64, BE)
//!      8     4  producer index (u32, BE)
//!     12     8  sequence of this producer on this partition (u64, BE)
//!     20     …  filler
//! ```
//!
//! The intended send time is when the record was due under the target
//! rate, not when it left: measuring from it corrects for coordinated
//! omission. The producer and sequence let a consumer check that each
//! partition delivers every producer's records once and in order.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::workload::KeyDistribution;
use crate::storage::batch::{
    ATTRIBUTES_OFFSET, BatchHeader, CRC_OFFSET, HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2,
};

pub const STAMP_BYTES: usize = 20;
const SEQUENCE_AT: usize = 12;
const PRODUCER_AT: usize = 8;
const _: () = assert!(PRODUCER_AT + 4 == SEQUENCE_AT);
const _: () = assert!(SEQUENCE_AT + 8 == STAMP_BYTES);

/// The stamp at the start of every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueStamp {
    pub intended_ns: u64,
    pub producer: u32,
    pub sequence: u64,
}

impl ValueStamp {
    /// Writes the stamp over the first [`STAMP_BYTES`] of `value`.
    pub fn write(&self, value: &mut [u8]) {
        assert!(value.len() >= STAMP_BYTES, "value shorter than its stamp");
        value[..PRODUCER_AT].copy_from_slice(&self.intended_ns.to_be_bytes());
        value[PRODUCER_AT..SEQUENCE_AT].copy_from_slice(&self.producer.to_be_bytes());
        value[SEQUENCE_AT..STAMP_BYTES].copy_from_slice(&self.sequence.to_be_bytes());
    }

    /// The stamp of a value; `None` when it is too short to hold one.
    pub fn read(value: &[u8]) -> Option<ValueStamp> {
        let stamp = value.get(..STAMP_BYTES)?;
        let mut intended = [0u8; 8];
        intended.copy_from_slice(&stamp[..PRODUCER_AT]);
        let mut producer = [0u8; 4];
        producer.copy_from_slice(&stamp[PRODUCER_AT..SEQUENCE_AT]);
        let mut sequence = [0u8; 8];
        sequence.copy_from_slice(&stamp[SEQUENCE_AT..]);
        Some(ValueStamp {
            intended_ns: u64::from_be_bytes(intended),
            producer: u32::from_be_bytes(producer),
            sequence: u64::from_be_bytes(sequence),
        })
    }
}

/// Picks each record's key and partition, the same way in both drivers.
pub struct KeyChooser {
    distribution: KeyDistribution,
    keys: u64,
    partitions: u32,
    next: u64,
    rng: fastrand::Rng,
}

impl KeyChooser {
    /// `seed` differs per producer, so producers do not move in step.
    pub fn new(distribution: KeyDistribution, keys: u64, partitions: i32, seed: u64) -> Self {
        assert!(partitions > 0, "a topic has partitions");
        KeyChooser {
            distribution,
            keys: keys.max(1),
            partitions: partitions as u32,
            next: seed,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The next record's key index (`None`: no key) and partition.
    pub fn pick(&mut self) -> (Option<u64>, i32) {
        let (key, spread) = match self.distribution {
            KeyDistribution::None => (None, self.next),
            KeyDistribution::Uniform => {
                let key = self.rng.u64(..self.keys);
                (Some(key), key)
            }
            KeyDistribution::Sequential => {
                let key = self.next % self.keys;
                (Some(key), key)
            }
        };
        self.next = self.next.wrapping_add(1);
        (key, (spread % u64::from(self.partitions)) as i32)
    }
}

/// The bytes of key index `key`.
pub fn key_bytes(key: u64) -> [u8; 16] {
    let mut bytes = *b"key-000000000000";
    let digits = format!("{:012}", key % 1_000_000_000_000);
    bytes[4..].copy_from_slice(digits.as_bytes());
    bytes
}

/// Filler for values: random bytes, so a codec sees no free gains.
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn put_varint(buf: &mut BytesMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn varint_len(value: i64) -> usize {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while v >= 0x80 {
        v >>= 7;
        len += 1;
    }
    len
}

/// Reads a zigzag varint; `(value, bytes used)`.
fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (index, byte) in bytes.iter().take(10).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), index + 1));
        }
    }
    None
}

/// Builds one uncompressed v2 record batch for one partition (Kafka's
/// `DefaultRecordBatch`, the layout drawn in `storage::batch`): no
/// producer id, timestamps in ms relative to the first record's.
pub struct BatchBuilder {
    records: BytesMut,
    count: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchBuilder {
    pub fn new(capacity_bytes: usize) -> Self {
        BatchBuilder {
            records: BytesMut::with_capacity(capacity_bytes),
            count: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// The batch's size if finished now.
    pub fn size_bytes(&self) -> usize {
        HEADER_BYTES + self.records.len()
    }

    /// Appends a record with `key`, `value` and timestamp `timestamp_ms`.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp_ms: i64) {
        if self.count == 0 {
            self.base_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let timestamp_delta = timestamp_ms - self.base_timestamp_ms;
        let offset_delta = i64::from(self.count);
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let body_len = 1
            + varint_len(timestamp_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map_or(0, <[u8]>::len)
            + varint_len(value.len() as i64)
            + value.len()
            + 1;
        put_varint(&mut self.records, body_len as i64);
        self.records.put_u8(0);
        put_varint(&mut self.records, timestamp_delta);
        put_varint(&mut self.records, offset_delta);
        put_varint(&mut self.records, key_len);
        if let Some(key) = key {
            self.records.put_slice(key);
        }
        put_varint(&mut self.records, value.len() as i64);
        self.records.put_slice(value);
        put_varint(&mut self.records, 0);
        self.count += 1;
    }

    /// The finished batch, CRC-32C set; the builder is empty again.
    pub fn finish(&mut self) -> Bytes {
        assert!(self.count > 0, "an empty batch is never sent");
        let mut batch = BytesMut::with_capacity(HEADER_BYTES + self.records.len());
        batch.put_i64(0);
        batch.put_i32((HEADER_BYTES - LOG_OVERHEAD_BYTES + self.records.len()) as i32);
        batch.put_i32(-1);
        batch.put_i8(MAGIC_V2);
        batch.put_u32(0);
        batch.put_i16(0);
        batch.put_i32(self.count - 1);
        batch.put_i64(self.base_timestamp_ms);
        batch.put_i64(self.max_timestamp_ms);
        batch.put_i64(-1);
        batch.put_i16(-1);
        batch.put_i32(-1);
        batch.put_i32(self.count);
        batch.put_slice(&self.records);
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        self.records.clear();
        self.count = 0;
        batch.freeze()
    }
}

/// Why fetched records could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseProblem {
    /// A compressed batch: the native consumer does not decompress.
    Compressed,
    /// A record inside a whole batch does not parse.
    Malformed,
}

/// Calls `each(offset, value)` for every record of the whole batches in
/// `records` (a Fetch answer's record set; a partial batch at the end is
/// skipped, as Kafka allows). Returns the offset after the last record.
pub fn for_each_record(
    mut records: &[u8],
    mut each: impl FnMut(i64, &[u8]),
) -> Result<Option<i64>, ParseProblem> {
    let mut next_offset = None;
    while let Some(header) = BatchHeader::parse(records) {
        let size = header.size_bytes();
        let Some(batch) = records.get(..size) else {
            break;
        };
        if header.is_compressed() {
            return Err(ParseProblem::Compressed);
        }
        let mut rest = &batch[HEADER_BYTES..];
        for _ in 0..header.record_count {
            let (length, used) = read_varint(rest).ok_or(ParseProblem::Malformed)?;
            let end = usize::try_from(length)
                .ok()
                .and_then(|l| l.checked_add(used))
                .ok_or(ParseProblem::Malformed)?;
            let body = rest.get(used..end).ok_or(ParseProblem::Malformed)?;
            let (offset_delta, value) = record_value(body).ok_or(ParseProblem::Malformed)?;
            each(header.base_offset + offset_delta, value);
            rest = &rest[end..];
        }
        next_offset = Some(header.last_offset() + 1);
        records = &records[size..];
    }
    Ok(next_offset)
}

/// A record body's offset delta and value.
fn record_value(body: &[u8]) -> Option<(i64, &[u8])> {
    let mut at = 1; // attributes
    let (_, used) = read_varint(body.get(at..)?)?; // timestamp delta
    at += used;
    let (offset_delta, used) = read_varint(body.get(at..)?)?;
    at += used;
    let (key_len, used) = read_varint(body.get(at..)?)?;
    at += used + usize::try_from(key_len.max(0)).ok()?;
    let (value_len, used) = read_varint(body.get(at..)?)?;
    at += used;
    let value = body.get(at..at + usize::try_from(value_len.max(0)).ok()?)?;
    Some((offset_delta, value))
}

/// Checks what one consumer set receives: every producer's records on
/// every partition once each and in order.
#[derive(Debug, Default, Clone)]
pub struct Verifier {
    /// (partition, producer) -> next expected sequence.
    next_sequence: HashMap<(i32, u32), u64>,
    pub received_per_partition: HashMap<i32, u64>,
    pub duplicates: u64,
    /// Records that skipped ahead of the next expected sequence.
    pub gaps: u64,
    /// Values without a stamp.
    pub unreadable: u64,
}

impl Verifier {
    /// Checks one record; returns its stamp when it has one.
    pub fn check(&mut self, partition: i32, value: &[u8]) -> Option<ValueStamp> {
        let Some(stamp) = ValueStamp::read(value) else {
            self.unreadable += 1;
            return None;
        };
        *self.received_per_partition.entry(partition).or_default() += 1;
        let expected = self
            .next_sequence
            .entry((partition, stamp.producer))
            .or_default();
        if stamp.sequence < *expected {
            self.duplicates += 1;
        } else {
            if stamp.sequence > *expected {
                self.gaps += 1;
            }
            *expected = stamp.sequence + 1;
        }
        Some(stamp)
    }

    /// Adds another consumer's findings (of the same consumer set).
    pub fn merge(&mut self, other: Verifier) {
        self.next_sequence.extend(other.next_sequence);
        for (partition, count) in other.received_per_partition {
            *self.received_per_partition.entry(partition).or_default() += count;
        }
        self.duplicates += other.duplicates;
        self.gaps += other.gaps;
        self.unreadable += other.unreadable;
    }

    pub fn received(&self) -> u64 {
        self.received_per_partition.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::validate_produced;

    #[test]
    fn a_stamp_round_trips() {
        let stamp = ValueStamp {
            intended_ns: 1_700_000_000_123_456_789,
            producer: 7,
            sequence: 42,
        };
        let mut value = vec![0u8; 100];
        stamp.write(&mut value);
        assert_eq!(ValueStamp::read(&value), Some(stamp));
        assert_eq!(ValueStamp::read(&value[..10]), None);
    }

    #[test]
    fn built_batches_pass_the_brokers_validation_and_read_back() {
        let mut builder = BatchBuilder::new(4096);
        let mut values = Vec::new();
        for sequence in 0..5u64 {
            let mut value = vec![0x5a; 64];
            ValueStamp {
                intended_ns: 1_000_000 * sequence,
                producer: 1,
                sequence,
            }
            .write(&mut value);
            let key = key_bytes(sequence);
            builder.push(Some(&key), &value, 1_700_000_000_000 + sequence as i64);
            values.push(value);
        }
        assert_eq!(builder.record_count(), 5);
        let batch = builder.finish();
        assert!(builder.is_empty());
        validate_produced(&batch, 1 << 20).expect("the broker accepts it");
        let mut read = Vec::new();
        let next = for_each_record(&batch, |offset, value| read.push((offset, value.to_vec())))
            .expect("parses");
        assert_eq!(next, Some(5));
        assert_eq!(read.len(), 5);
        for (index, (offset, value)) in read.iter().enumerate() {
            assert_eq!(*offset, index as i64);
            assert_eq!(value, &values[index]);
        }
        // A partial batch at the end is skipped, not an error.
        let next = for_each_record(&batch[..batch.len() - 3], |_, _| {}).expect("parses");
        assert_eq!(next, None);
    }

    #[test]
    fn the_verifier_counts_duplicates_and_gaps() {
        let mut verifier = Verifier::default();
        let mut value = vec![0u8; STAMP_BYTES];
        for sequence in [0u64, 1, 1, 3, 4] {
            ValueStamp {
                intended_ns: 0,
                producer: 0,
                sequence,
            }
            .write(&mut value);
            verifier.check(2, &value);
        }
        assert_eq!(verifier.received(), 5);
        assert_eq!(verifier.duplicates, 1);
        assert_eq!(verifier.gaps, 1);
    }

    #[test]
    fn keys_pick_partitions_the_same_way_every_time() {
        let mut a = KeyChooser::new(KeyDistribution::Sequential, 10, 4, 0);
        let picks: Vec<_> = (0..5).map(|_| a.pick()).collect();
        assert_eq!(
            picks,
            vec![
                (Some(0), 0),
                (Some(1), 1),
                (Some(2), 2),
                (Some(3), 3),
                (Some(4), 0)
            ]
        );
        let mut none = KeyChooser::new(KeyDistribution::None, 10, 3, 1);
        assert_eq!(none.pick(), (None, 1));
        assert_eq!(none.pick(), (None, 2));
        assert_eq!(none.pick(), (None, 0));
        assert_eq!(&key_bytes(42), b"key-000000000042");
    }
}
