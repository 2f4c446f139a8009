//! Records inside an uncompressed v2 batch: encoding the broker's own
//! batches (the consumer-offsets log) and decoding them back.
//!
//! ```text
//! record (every integer a zigzag varint unless noted)
//!   length            bytes after this field
//!   attributes        1 byte, unused (0)
//!   timestamp_delta   from the batch's base timestamp
//!   offset_delta      from the batch's base offset
//!   key_length        -1 for a null key
//!   key
//!   value_length      -1 for a null value (a tombstone)
//!   value
//!   header_count      followed by that many headers
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::{
    ATTRIBUTES_OFFSET, BatchHeader, CRC_OFFSET, HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2,
};

/// One record as the broker writes it: no headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// A decoded record with its offset in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

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

/// Reads a zigzag varint; returns it and the bytes it took.
fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
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

fn put_nullable(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(bytes) => {
            put_varint(buf, bytes.len() as i64);
            buf.put_slice(bytes);
        }
    }
}

/// Encodes `records` as one valid uncompressed v2 batch with base offset 0
/// (the log assigns the real one), every record stamped `timestamp_ms`.
pub fn encode_batch(records: &[Record], timestamp_ms: i64) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = BytesMut::new();
    let mut encoded = BytesMut::new();
    for (index, record) in records.iter().enumerate() {
        body.clear();
        body.put_u8(0);
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, index as i64); // offset delta
        put_nullable(&mut body, record.key.as_deref());
        put_nullable(&mut body, record.value.as_deref());
        put_varint(&mut body, 0); // no headers
        put_varint(&mut encoded, body.len() as i64);
        encoded.put_slice(&body);
    }
    let count = i32::try_from(records.len()).expect("record count fits a batch");
    let mut batch = BytesMut::with_capacity(HEADER_BYTES + encoded.len());
    batch.put_i64(0);
    batch.put_i32(
        i32::try_from(HEADER_BYTES - LOG_OVERHEAD_BYTES + encoded.len())
            .expect("batch length fits i32"),
    );
    batch.put_i32(-1);
    batch.put_i8(MAGIC_V2);
    batch.put_u32(0);
    batch.put_i16(0);
    batch.put_i32(count - 1);
    batch.put_i64(timestamp_ms);
    batch.put_i64(timestamp_ms);
    batch.put_i64(-1);
    batch.put_i16(-1);
    batch.put_i32(-1);
    batch.put_i32(count);
    batch.put_slice(&encoded);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

/// The records of one uncompressed batch, with their offsets; `None` if the
/// batch is compressed or its records do not parse.
pub fn decode_batch(batch: &Bytes) -> Option<Vec<StoredRecord>> {
    let header = BatchHeader::parse(batch)?;
    if header.is_compressed() {
        return None;
    }
    let end = header.size_bytes().min(batch.len());
    let mut position = HEADER_BYTES;
    let mut records = Vec::new();
    for _ in 0..header.record_count {
        let (length, used) = read_varint(batch.get(position..end)?)?;
        let body_start = position + used;
        let body_end = body_start.checked_add(usize::try_from(length).ok()?)?;
        if body_end > end {
            return None;
        }
        let mut at = body_start + 1; // attributes
        let (_, n) = read_varint(batch.get(at..body_end)?)?; // timestamp delta
        at += n;
        let (offset_delta, n) = read_varint(batch.get(at..body_end)?)?;
        at += n;
        let (key, next) = read_nullable(batch, at, body_end)?;
        let (value, _) = read_nullable(batch, next, body_end)?;
        records.push(StoredRecord {
            offset: header.base_offset + offset_delta,
            key,
            value,
        });
        position = body_end;
    }
    Some(records)
}

fn read_nullable(batch: &Bytes, at: usize, end: usize) -> Option<(Option<Bytes>, usize)> {
    let (length, used) = read_varint(batch.get(at..end)?)?;
    let start = at + used;
    if length < 0 {
        return Some((None, start));
    }
    let stop = start.checked_add(usize::try_from(length).ok()?)?;
    if stop > end {
        return None;
    }
    Some((Some(batch.slice(start..stop)), stop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::validate_produced;

    #[test]
    fn encoded_batches_validate_and_decode_back() {
        let records = vec![
            Record {
                key: Some(Bytes::from_static(b"k1")),
                value: Some(Bytes::from(vec![7u8; 300])),
            },
            Record {
                key: Some(Bytes::from_static(b"k2")),
                value: None,
            },
            Record {
                key: None,
                value: Some(Bytes::new()),
            },
        ];
        let batch = encode_batch(&records, 1_700_000_000_000);
        validate_produced(&batch, 1 << 20).expect("valid batch");
        let decoded = decode_batch(&batch).expect("decodes");
        assert_eq!(decoded.len(), 3);
        for (index, (stored, record)) in decoded.iter().zip(&records).enumerate() {
            assert_eq!(stored.offset, index as i64);
            assert_eq!(stored.key, record.key);
            assert_eq!(stored.value, record.value);
        }
    }

    #[test]
    fn truncated_batches_do_not_decode() {
        let batch = encode_batch(
            &[Record {
                key: Some(Bytes::from_static(b"key")),
                value: Some(Bytes::from_static(b"value")),
            }],
            0,
        );
        for cut in HEADER_BYTES..batch.len() {
            let mut short = batch.slice(..cut).to_vec();
            // Keep the header's length honest so only the records are short.
            let length = (cut - LOG_OVERHEAD_BYTES) as i32;
            short[8..12].copy_from_slice(&length.to_be_bytes());
            assert_eq!(decode_batch(&Bytes::from(short)), None, "cut at {cut}");
        }
    }
}
