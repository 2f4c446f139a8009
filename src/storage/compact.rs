//! Record-level work of log compaction on whole v2 batches: walking the
//! records of a batch (decompressing when it is compressed), checking that
//! every record has a key, and filtering a batch down to the records the
//! cleaner keeps.
//!
//! A filtered batch keeps its header (base offset, last offset delta,
//! timestamps, producer id/epoch/sequence, attributes and codec); only the
//! record count, the length and the CRC change, and the kept records are
//! copied byte for byte. Offsets therefore stay exactly what they were, as
//! in Kafka's cleaner.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use super::StorageError;
use super::batch::{
    ATTRIBUTES_OFFSET, BATCH_LENGTH_OFFSET, BatchHeader, COMPRESSION_MASK, CRC_OFFSET,
    HEADER_BYTES, LOG_OVERHEAD_BYTES, RECORD_COUNT_OFFSET, read_varint,
};

/// Attribute bit of a control batch (transaction markers).
const CONTROL_FLAG: i16 = 1 << 5;
/// Attribute bit of a LogAppendTime batch.
const LOG_APPEND_TIME_FLAG: i16 = 1 << 3;

/// What the cleaner needs of one record.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    /// A null value: the key's tombstone.
    pub tombstone: bool,
}

/// A filtered batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every record kept: the batch stays as it is.
    Unchanged,
    /// No record kept: the batch goes.
    Empty,
    /// Some records kept: the new batch.
    Rewritten(Bytes),
}

pub fn is_control(header: &BatchHeader) -> bool {
    header.attributes & CONTROL_FLAG != 0
}

fn corrupt(why: impl Into<String>) -> StorageError {
    StorageError::CorruptMessage(why.into())
}

/// The batch's records section, decompressed.
fn records_section(batch: &[u8], header: &BatchHeader) -> Result<Bytes, StorageError> {
    let raw = batch
        .get(HEADER_BYTES..header.size_bytes())
        .ok_or_else(|| corrupt("batch shorter than its length"))?;
    let codec = header.attributes & COMPRESSION_MASK;
    let mut input = raw;
    let keep = |buf: &mut Bytes| Ok(std::mem::take(buf));
    let decompressed = match codec {
        0 => return Ok(Bytes::copy_from_slice(raw)),
        1 => Gzip::decompress(&mut input, keep),
        2 => Snappy::decompress(&mut input, keep),
        3 => Lz4::decompress(&mut input, keep),
        4 => Zstd::decompress(&mut input, keep),
        other => return Err(corrupt(format!("unknown compression codec {other}"))),
    };
    decompressed.map_err(|error| corrupt(format!("decompressing a batch: {error}")))
}

/// `records` compressed with the batch's codec.
fn compress(codec: i16, records: &[u8]) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::with_capacity(records.len());
    let put = |buf: &mut BytesMut| {
        buf.put_slice(records);
        Ok(())
    };
    let compressed = match codec {
        1 => Gzip::compress(&mut out, put),
        2 => Snappy::compress(&mut out, put),
        3 => Lz4::compress(&mut out, put),
        4 => Zstd::compress(&mut out, put),
        _ => {
            out.extend_from_slice(records);
            Ok(())
        }
    };
    compressed.map_err(|error| corrupt(format!("compressing a batch: {error}")))?;
    Ok(out)
}

/// One record of a records section: its view and its bytes (length
/// prefix included), and what follows it.
fn next_record<'a>(
    rest: &'a [u8],
    header: &BatchHeader,
) -> Result<(RecordView<'a>, &'a [u8], &'a [u8]), StorageError> {
    let bad = || corrupt("a record does not parse");
    let (length, used) = read_varint(rest).ok_or_else(bad)?;
    let end = usize::try_from(length)
        .ok()
        .and_then(|l| l.checked_add(used))
        .ok_or_else(bad)?;
    let body = rest.get(used..end).ok_or_else(bad)?;
    // attributes (1 byte), timestampDelta, offsetDelta, keyLength, key,
    // valueLength, value, headers
    let mut at = 1;
    let varint = |at: &mut usize| -> Result<i64, StorageError> {
        let (value, used) = read_varint(body.get(*at..).ok_or_else(bad)?).ok_or_else(bad)?;
        *at += used;
        Ok(value)
    };
    let timestamp_delta = varint(&mut at)?;
    let offset_delta = varint(&mut at)?;
    let key_length = varint(&mut at)?;
    let key = if key_length < 0 {
        None
    } else {
        let key_end = usize::try_from(key_length)
            .ok()
            .and_then(|l| l.checked_add(at))
            .ok_or_else(bad)?;
        let key = body.get(at..key_end).ok_or_else(bad)?;
        at = key_end;
        Some(key)
    };
    let value_length = varint(&mut at)?;
    let timestamp = if header.attributes & LOG_APPEND_TIME_FLAG != 0 {
        header.max_timestamp
    } else {
        header.base_timestamp.saturating_add(timestamp_delta)
    };
    let view = RecordView {
        offset: header.base_offset.saturating_add(offset_delta),
        timestamp,
        key,
        tombstone: value_length < 0,
    };
    Ok((view, &rest[..end], &rest[end..]))
}

/// Calls `visit` with every record of a data batch, in order.
pub fn for_each_record(
    batch: &[u8],
    header: &BatchHeader,
    mut visit: impl FnMut(&RecordView<'_>),
) -> Result<(), StorageError> {
    let section = records_section(batch, header)?;
    let mut rest = &section[..];
    for _ in 0..header.record_count.max(0) {
        let (view, _, after) = next_record(rest, header)?;
        visit(&view);
        rest = after;
    }
    Ok(())
}

/// Kafka refuses records without a key on a compacted topic.
pub fn require_keys(batch: &[u8], header: &BatchHeader) -> Result<(), StorageError> {
    if is_control(header) {
        return Ok(());
    }
    let mut keyless = false;
    for_each_record(batch, header, |record| keyless |= record.key.is_none())?;
    if keyless {
        return Err(StorageError::InvalidRecord(
            "Compacted topic cannot accept message without key".into(),
        ));
    }
    Ok(())
}

/// The batch with only the records `keep` accepts; the header stays as it
/// was but for the record count, the length and the CRC.
pub fn filter_batch(
    batch: &[u8],
    header: &BatchHeader,
    mut keep: impl FnMut(&RecordView<'_>) -> bool,
) -> Result<Filtered, StorageError> {
    let section = records_section(batch, header)?;
    let mut rest = &section[..];
    let mut kept = Vec::with_capacity(section.len());
    let mut kept_count: i32 = 0;
    let mut dropped = false;
    for _ in 0..header.record_count.max(0) {
        let (view, bytes, after) = next_record(rest, header)?;
        if keep(&view) {
            kept.extend_from_slice(bytes);
            kept_count += 1;
        } else {
            dropped = true;
        }
        rest = after;
    }
    if !dropped {
        return Ok(Filtered::Unchanged);
    }
    if kept_count == 0 {
        return Ok(Filtered::Empty);
    }
    let records = compress(header.attributes & COMPRESSION_MASK, &kept)?;
    let mut out = BytesMut::with_capacity(HEADER_BYTES + records.len());
    out.put_slice(&batch[..HEADER_BYTES]);
    out.put_slice(&records);
    let length = i32::try_from(out.len() - LOG_OVERHEAD_BYTES)
        .map_err(|_| corrupt("filtered batch too large"))?;
    out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    out[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&kept_count.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Filtered::Rewritten(out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{self, encode_test_batch};
    use crate::storage::record::{Record, encode_batch};
    use crate::types::Offset;

    fn keyed(pairs: &[(&str, Option<&str>)]) -> Bytes {
        let records: Vec<Record> = pairs
            .iter()
            .map(|(k, v)| Record {
                key: Some(Bytes::copy_from_slice(k.as_bytes())),
                value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            })
            .collect();
        batch::assign(&encode_batch(&records, 1_000), Offset(100), 0)
    }

    #[test]
    fn a_filtered_batch_keeps_offsets_header_and_crc() {
        let original = keyed(&[("a", Some("1")), ("b", Some("2")), ("a", Some("3"))]);
        let header = BatchHeader::parse(&original).expect("header");
        let Filtered::Rewritten(filtered) =
            filter_batch(&original, &header, |r| r.offset != 100).expect("filter")
        else {
            panic!("one record goes");
        };
        let new = BatchHeader::parse(&filtered).expect("header");
        assert!(batch::crc_matches(&filtered, &new));
        assert_eq!(new.base_offset, 100);
        assert_eq!(new.last_offset(), 102, "the last offset stays");
        assert_eq!(new.record_count, 2);
        let mut seen = Vec::new();
        for_each_record(&filtered, &new, |r| {
            seen.push((r.offset, r.key.map(<[u8]>::to_vec), r.tombstone))
        })
        .expect("records");
        assert_eq!(
            seen,
            vec![
                (101, Some(b"b".to_vec()), false),
                (102, Some(b"a".to_vec()), false)
            ]
        );
        assert_eq!(
            filter_batch(&original, &header, |_| true).expect("filter"),
            Filtered::Unchanged
        );
        assert_eq!(
            filter_batch(&original, &header, |_| false).expect("filter"),
            Filtered::Empty
        );
    }

    #[test]
    fn tombstones_and_missing_keys_are_seen() {
        let batch = keyed(&[("a", None)]);
        let header = BatchHeader::parse(&batch).expect("header");
        let mut tombstones = 0;
        for_each_record(&batch, &header, |r| tombstones += usize::from(r.tombstone))
            .expect("records");
        assert_eq!(tombstones, 1);
        assert!(require_keys(&batch, &header).is_ok());
        let keyless = encode_test_batch(&[b"v"], 5);
        let header = BatchHeader::parse(&keyless).expect("header");
        assert!(matches!(
            require_keys(&keyless, &header),
            Err(StorageError::InvalidRecord(_))
        ));
    }

    #[test]
    fn compressed_batches_are_filtered_and_stay_compressed() {
        let plain = keyed(&[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))]);
        let header = BatchHeader::parse(&plain).expect("header");
        for codec in 1..=4i16 {
            let records = compress(codec, &plain[HEADER_BYTES..]).expect("compress");
            let mut batch = BytesMut::from(&plain[..HEADER_BYTES]);
            batch.put_slice(&records);
            let length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
            batch[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4]
                .copy_from_slice(&length.to_be_bytes());
            let attributes = header.attributes | codec;
            batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2]
                .copy_from_slice(&attributes.to_be_bytes());
            let compressed = BatchHeader::parse(&batch).expect("header");
            let Filtered::Rewritten(filtered) =
                filter_batch(&batch, &compressed, |r| r.key != Some(b"b")).expect("filter")
            else {
                panic!("codec {codec}: b goes");
            };
            let new = BatchHeader::parse(&filtered).expect("header");
            assert_eq!(new.attributes & COMPRESSION_MASK, codec);
            let mut keys = Vec::new();
            for_each_record(&filtered, &new, |r| {
                keys.push((r.offset, r.key.map(<[u8]>::to_vec)))
            })
            .expect("records");
            assert_eq!(
                keys,
                vec![(100, Some(b"a".to_vec())), (102, Some(b"c".to_vec()))],
                "codec {codec}"
            );
        }
    }
}
