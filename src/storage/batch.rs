//! The Kafka v2 record batch ("magic 2") header: parsing, validation on
//! produce, and the two fields the broker rewrites.
//!
//! ```text
//! offset  size  field                    covered by the CRC
//!      0     8  base_offset              no  (assigned by the broker)
//!      8     4  batch_length             no  (bytes after this field)
//!     12     4  partition_leader_epoch   no  (set by the broker)
//!     16     1  magic (= 2)              no
//!     17     4  crc (CRC-32C)            no
//!     21     2  attributes               yes (bits 0-2: compression codec)
//!     23     4  last_offset_delta        yes
//!     27     8  base_timestamp           yes
//!     35     8  max_timestamp            yes
//!     43     8  producer_id              yes
//!     51     2  producer_epoch           yes
//!     53     4  base_sequence            yes
//!     57     4  record_count             yes
//!     61     …  records                  yes
//! ```
//! All integers big-endian.

use bytes::{BufMut, Bytes, BytesMut};

use super::StorageError;
use crate::types::Offset;

pub const BASE_OFFSET_OFFSET: usize = 0;
pub const BATCH_LENGTH_OFFSET: usize = 8;
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
pub const MAGIC_OFFSET: usize = 16;
pub const CRC_OFFSET: usize = 17;
pub const ATTRIBUTES_OFFSET: usize = 21;
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
pub const PRODUCER_ID_OFFSET: usize = 43;
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
pub const BASE_SEQUENCE_OFFSET: usize = 53;
pub const RECORD_COUNT_OFFSET: usize = 57;
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batch_length` counts: base offset and the length itself.
pub const LOG_OVERHEAD_BYTES: usize = 12;
pub const MAGIC_V2: i8 = 2;
/// Attribute bits that hold the compression codec.
pub const COMPRESSION_MASK: i16 = 0x07;

// Each field ends where the next begins; the header is 61 bytes.
const _: () = assert!(BASE_OFFSET_OFFSET + 8 == BATCH_LENGTH_OFFSET);
const _: () = assert!(BATCH_LENGTH_OFFSET + 4 == PARTITION_LEADER_EPOCH_OFFSET);
const _: () = assert!(BATCH_LENGTH_OFFSET + 4 == LOG_OVERHEAD_BYTES);
const _: () = assert!(PARTITION_LEADER_EPOCH_OFFSET + 4 == MAGIC_OFFSET);
const _: () = assert!(MAGIC_OFFSET + 1 == CRC_OFFSET);
const _: () = assert!(CRC_OFFSET + 4 == ATTRIBUTES_OFFSET);
const _: () = assert!(ATTRIBUTES_OFFSET + 2 == LAST_OFFSET_DELTA_OFFSET);
const _: () = assert!(LAST_OFFSET_DELTA_OFFSET + 4 == BASE_TIMESTAMP_OFFSET);
const _: () = assert!(BASE_TIMESTAMP_OFFSET + 8 == MAX_TIMESTAMP_OFFSET);
const _: () = assert!(MAX_TIMESTAMP_OFFSET + 8 == PRODUCER_ID_OFFSET);
const _: () = assert!(PRODUCER_ID_OFFSET + 8 == PRODUCER_EPOCH_OFFSET);
const _: () = assert!(PRODUCER_EPOCH_OFFSET + 2 == BASE_SEQUENCE_OFFSET);
const _: () = assert!(BASE_SEQUENCE_OFFSET + 4 == RECORD_COUNT_OFFSET);
const _: () = assert!(RECORD_COUNT_OFFSET + 4 == HEADER_BYTES);
const _: () = assert!(HEADER_BYTES == 61);

/// A parsed batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(raw)
}

impl BatchHeader {
    /// Parses the first [`HEADER_BYTES`] of `bytes`; `None` if too short.
    pub fn parse(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: i64_at(bytes, BASE_OFFSET_OFFSET),
            batch_length: i32_at(bytes, BATCH_LENGTH_OFFSET),
            partition_leader_epoch: i32_at(bytes, PARTITION_LEADER_EPOCH_OFFSET),
            magic: bytes[MAGIC_OFFSET] as i8,
            crc: u32::from_be_bytes([
                bytes[CRC_OFFSET],
                bytes[CRC_OFFSET + 1],
                bytes[CRC_OFFSET + 2],
                bytes[CRC_OFFSET + 3],
            ]),
            attributes: i16_at(bytes, ATTRIBUTES_OFFSET),
            last_offset_delta: i32_at(bytes, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp: i64_at(bytes, BASE_TIMESTAMP_OFFSET),
            max_timestamp: i64_at(bytes, MAX_TIMESTAMP_OFFSET),
            producer_id: i64_at(bytes, PRODUCER_ID_OFFSET),
            producer_epoch: i16_at(bytes, PRODUCER_EPOCH_OFFSET),
            base_sequence: i32_at(bytes, BASE_SEQUENCE_OFFSET),
            record_count: i32_at(bytes, RECORD_COUNT_OFFSET),
        })
    }

    /// The whole batch's size on disk and on the wire.
    pub fn size_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + usize::try_from(self.batch_length).unwrap_or(0)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn is_compressed(&self) -> bool {
        self.attributes & COMPRESSION_MASK != 0
    }
}

/// Whether the CRC-32C of `batch` (one whole batch) matches its header.
pub fn crc_matches(batch: &[u8], header: &BatchHeader) -> bool {
    batch.len() >= HEADER_BYTES && crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]) == header.crc
}

/// Checks a produced partition's records, as Kafka's LogValidator does:
/// exactly one whole v2 batch, within `max_message_bytes`, CRC intact,
/// offsets consistent. Nothing is decompressed.
pub fn validate_produced(
    records: &[u8],
    max_message_bytes: u32,
) -> Result<BatchHeader, StorageError> {
    let header = BatchHeader::parse(records).ok_or_else(|| {
        StorageError::CorruptMessage(format!(
            "record batch of {} bytes is shorter than a v2 batch header ({HEADER_BYTES} bytes)",
            records.len()
        ))
    })?;
    if header.magic != MAGIC_V2 {
        return Err(StorageError::InvalidRecord(format!(
            "record batch magic {} is not supported: produce requests must carry v2 record batches",
            header.magic
        )));
    }
    if header.batch_length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return Err(StorageError::CorruptMessage(format!(
            "batch length {} is smaller than a batch header",
            header.batch_length
        )));
    }
    let size = header.size_bytes();
    if size > records.len() {
        return Err(StorageError::CorruptMessage(format!(
            "record batch claims {size} bytes but {} were sent",
            records.len()
        )));
    }
    if size < records.len() {
        return Err(trailing_bytes_error(&records[size..]));
    }
    if size > max_message_bytes as usize {
        return Err(StorageError::MessageTooLarge {
            size,
            max: max_message_bytes,
        });
    }
    if !crc_matches(records, &header) {
        return Err(StorageError::CorruptMessage(format!(
            "record batch CRC mismatch (header says {:#010x})",
            header.crc
        )));
    }
    if header.record_count <= 0 || header.last_offset_delta != header.record_count - 1 {
        return Err(StorageError::InvalidRecord(format!(
            "record batch has {} records but a last offset delta of {}",
            header.record_count, header.last_offset_delta
        )));
    }
    Ok(header)
}

/// Bytes after the one batch of a produce: a whole second batch breaks the
/// one-batch-per-partition rule (Kafka's INVALID_RECORD); anything else is
/// a malformed record set.
fn trailing_bytes_error(trailing: &[u8]) -> StorageError {
    let whole_batch = BatchHeader::parse(trailing)
        .is_some_and(|h| h.batch_length > 0 && h.size_bytes() <= trailing.len());
    if whole_batch {
        StorageError::InvalidRecord(
            "produce requests must carry exactly one record batch per partition".into(),
        )
    } else {
        StorageError::CorruptMessage(format!(
            "{} bytes after the record batch are not a record batch",
            trailing.len()
        ))
    }
}

/// Attribute bit 3: the batch's timestamps are the broker's append time.
pub const TIMESTAMP_TYPE_BIT: i16 = 0x08;

/// Like [`assign`], for a topic with `message.timestamp.type=LogAppendTime`:
/// the timestamp-type bit is set and the max timestamp becomes the append
/// time (what consumers then see for every record), and the CRC is
/// recomputed over the changed fields.
pub fn assign_log_append_time(
    batch: &[u8],
    base_offset: Offset,
    leader_epoch: i32,
    append_time_ms: i64,
) -> Bytes {
    let mut copy = BytesMut::with_capacity(batch.len());
    copy.put_slice(batch);
    copy[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.0.to_be_bytes());
    copy[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
    let attributes = i16_at(&copy, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_BIT;
    copy[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    copy[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&append_time_ms.to_be_bytes());
    let crc = crc32c::crc32c(&copy[ATTRIBUTES_OFFSET..]);
    copy[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    copy.freeze()
}

/// A copy of `batch` with the broker's fields set: base offset and
/// partition leader epoch (both outside the CRC).
pub fn assign(batch: &[u8], base_offset: Offset, leader_epoch: i32) -> Bytes {
    let mut copy = BytesMut::with_capacity(batch.len());
    copy.put_slice(batch);
    copy[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.0.to_be_bytes());
    copy[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
    copy.freeze()
}

/// The smallest encoded record: length, attributes, timestamp delta, offset
/// delta, key length, value length, header count (one byte each).
const MIN_RECORD_BYTES: usize = 7;

/// Reads a zigzag varint; returns it and the bytes it took.
pub(super) fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (index, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((decoded, index + 1));
        }
    }
    None
}

/// The (offset delta, timestamp delta) of every record of an uncompressed
/// batch, in order; `None` if the records do not parse.
pub fn record_deltas(batch: &[u8]) -> Option<Vec<(i64, i64)>> {
    let header = BatchHeader::parse(batch)?;
    let mut rest = batch.get(HEADER_BYTES..)?;
    // The count is the sender's word: bound the allocation by the bytes.
    let capacity = usize::try_from(header.record_count)
        .unwrap_or(0)
        .min(batch.len() / MIN_RECORD_BYTES);
    let mut deltas = Vec::with_capacity(capacity);
    for _ in 0..header.record_count {
        let (length, used) = read_varint(rest)?;
        let end = used.checked_add(usize::try_from(length).ok()?)?;
        let body = rest.get(used..end)?;
        // attributes (1 byte), timestampDelta, offsetDelta
        let (timestamp_delta, t_used) = read_varint(body.get(1..)?)?;
        let (offset_delta, _) = read_varint(body.get(1 + t_used..)?)?;
        deltas.push((offset_delta, timestamp_delta));
        rest = &rest[end..];
    }
    Some(deltas)
}

/// The offset of the batch's record with the largest timestamp (the first
/// such record), as ListOffsets' MAX_TIMESTAMP and the time index name it.
/// Exact for uncompressed batches; a compressed batch is not decompressed,
/// so its last offset stands for it.
pub fn offset_of_max_timestamp(header: &BatchHeader, batch: &[u8]) -> i64 {
    if header.is_compressed() {
        return header.last_offset();
    }
    let Some(deltas) = record_deltas(batch) else {
        return header.last_offset();
    };
    let mut best: Option<(i64, i64)> = None;
    for (offset_delta, timestamp_delta) in deltas {
        if best.is_none_or(|(_, t)| timestamp_delta > t) {
            best = Some((offset_delta, timestamp_delta));
        }
    }
    best.map(|(offset_delta, _)| header.base_offset + offset_delta)
        .unwrap_or_else(|| header.last_offset())
}

/// Encodes a valid uncompressed v2 batch of `values`, each a record with
/// that value and no key or headers (for tests and benchmarks; a producer's
/// batches come from its client).
pub fn encode_test_batch(values: &[&[u8]], base_timestamp: i64) -> Bytes {
    fn put_varint(buf: &mut BytesMut, value: i64) {
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        loop {
            if v < 0x80 {
                buf.put_u8(v as u8);
                return;
            }
            buf.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
    }
    let mut records = BytesMut::new();
    for (index, value) in values.iter().enumerate() {
        let mut body = BytesMut::new();
        body.put_u8(0);
        put_varint(&mut body, index as i64); // timestamp delta
        put_varint(&mut body, index as i64); // offset delta
        put_varint(&mut body, -1); // null key
        put_varint(&mut body, value.len() as i64);
        body.put_slice(value);
        put_varint(&mut body, 0); // no headers
        put_varint(&mut records, body.len() as i64);
        records.put_slice(&body);
    }
    let count = values.len() as i32;
    let mut batch = BytesMut::new();
    batch.put_i64(0);
    batch.put_i32((HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32);
    batch.put_i32(-1);
    batch.put_i8(MAGIC_V2);
    batch.put_u32(0);
    batch.put_i16(0);
    batch.put_i32(count - 1);
    batch.put_i64(base_timestamp);
    batch.put_i64(base_timestamp + i64::from(count - 1));
    batch.put_i64(-1);
    batch.put_i16(-1);
    batch.put_i32(-1);
    batch.put_i32(count);
    batch.put_slice(&records);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_batch_passes_and_offsets_are_assigned() {
        let batch = encode_test_batch(&[b"a", b"bb", b"ccc"], 1000);
        let header = validate_produced(&batch, 1 << 20).expect("valid");
        assert_eq!(header.record_count, 3);
        let assigned = assign(&batch, Offset(42), 0);
        let parsed = BatchHeader::parse(&assigned).expect("parses");
        assert_eq!(parsed.base_offset, 42);
        assert_eq!(parsed.partition_leader_epoch, 0);
        assert!(
            crc_matches(&assigned, &parsed),
            "assigning must not break the CRC"
        );
        assert_eq!(record_deltas(&assigned), Some(vec![(0, 0), (1, 1), (2, 2)]));
    }

    /// Random damage to a valid batch: validation and record parsing never
    /// panic, and a batch that still passes has an intact CRC.
    #[test]
    fn damaged_batches_never_panic() {
        let mut rng = crate::storage::test_support::Rng::new(7);
        let values: Vec<Vec<u8>> = (0..5).map(|i| vec![b'x'; i * 40]).collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let good = encode_test_batch(&refs, 1_000);
        for _ in 0..20_000 {
            let mut damaged = BytesMut::from(&good[..]);
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(damaged.len() as u64) as usize;
                damaged[at] = rng.below(256) as u8;
            }
            let keep = if rng.below(4) == 0 {
                rng.below(damaged.len() as u64) as usize
            } else {
                damaged.len()
            };
            let bytes = &damaged[..keep];
            if let Ok(header) = validate_produced(bytes, 1 << 20) {
                assert!(crc_matches(bytes, &header));
            }
            let _ = record_deltas(bytes);
            if let Some(header) = BatchHeader::parse(bytes) {
                let _ = offset_of_max_timestamp(&header, bytes);
            }
        }
    }

    #[test]
    fn validation_table() {
        let good = encode_test_batch(&[b"value"], 1);
        let mut bad_crc = BytesMut::from(&good[..]);
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        let mut old_magic = BytesMut::from(&good[..]);
        old_magic[MAGIC_OFFSET] = 1;
        let mut two = BytesMut::from(&good[..]);
        two.put_slice(&good);
        let mut garbage = BytesMut::from(&good[..]);
        garbage.put_slice(b"xyz");
        let mut bad_count = BytesMut::from(&good[..]);
        bad_count[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4]
            .copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bad_count[ATTRIBUTES_OFFSET..]);
        bad_count[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let cases: Vec<(&str, &[u8], u32, &str)> = vec![
            ("short", &good[..20], 1 << 20, "corrupt"),
            ("truncated", &good[..good.len() - 1], 1 << 20, "corrupt"),
            ("bad crc", &bad_crc, 1 << 20, "corrupt"),
            ("old magic", &old_magic, 1 << 20, "invalid"),
            ("two batches", &two, 1 << 20, "invalid"),
            ("trailing garbage", &garbage, 1 << 20, "corrupt"),
            (
                "trailing partial batch",
                &two[..two.len() - 1],
                1 << 20,
                "corrupt",
            ),
            ("bad count", &bad_count, 1 << 20, "invalid"),
            ("too large", &good, 10, "too large"),
        ];
        for (name, bytes, max, expected) in cases {
            let got = match validate_produced(bytes, max) {
                Ok(_) => "ok",
                Err(StorageError::CorruptMessage(_)) => "corrupt",
                Err(StorageError::InvalidRecord(_)) => "invalid",
                Err(StorageError::MessageTooLarge { .. }) => "too large",
                Err(_) => "other",
            };
            assert_eq!(got, expected, "{name}");
        }
    }
}
