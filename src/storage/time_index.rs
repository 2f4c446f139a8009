//! The sparse time index of one segment, Kafka's `TimeIndex`: entries of
//! (largest timestamp so far, the offset it belongs to, relative), appended
//! only when the timestamp grows. Its last entry is the segment's largest
//! timestamp. Written as a `.timeindex` file when the segment is closed.
//!
//! ```text
//! .timeindex file: N entries of 12 bytes, big-endian
//! 0                 8        12
//! +-----------------+--------+
//! | timestamp i64   | rel u32|
//! +-----------------+--------+
//! ```

use crate::types::RelativeOffset;

pub const ENTRY_BYTES: usize = 12;
const TIMESTAMP_AT: usize = 0;
const RELATIVE_OFFSET_AT: usize = 8;
const _: () = assert!(RELATIVE_OFFSET_AT + 4 == ENTRY_BYTES);
const _: () = assert!(TIMESTAMP_AT + 8 == RELATIVE_OFFSET_AT);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, RelativeOffset)>,
}

impl TimeIndex {
    pub fn last(&self) -> Option<(i64, RelativeOffset)> {
        self.entries.last().copied()
    }

    pub fn size_bytes(&self) -> u64 {
        (self.entries.len() * ENTRY_BYTES) as u64
    }

    /// Appends an entry if `timestamp` is larger than the last one.
    pub fn maybe_append(&mut self, timestamp: i64, relative: RelativeOffset) {
        match self.entries.last() {
            Some((last, last_relative)) if timestamp <= *last || relative < *last_relative => {}
            _ => self.entries.push((timestamp, relative)),
        }
    }

    /// An offset from which scanning finds the first record with a
    /// timestamp >= `timestamp`: the offset of the last entry whose
    /// timestamp is below it (everything up to that offset is older).
    pub fn scan_from(&self, timestamp: i64) -> Option<RelativeOffset> {
        let index = self.entries.partition_point(|(t, _)| *t < timestamp);
        index.checked_sub(1).map(|i| self.entries[i].1)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * ENTRY_BYTES);
        for (timestamp, relative) in &self.entries {
            bytes.extend_from_slice(&timestamp.to_be_bytes());
            bytes.extend_from_slice(&relative.0.to_be_bytes());
        }
        bytes
    }

    /// Decodes and sanity-checks a `.timeindex` file; `None` means rebuild.
    pub fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex::default();
        for entry in bytes.chunks_exact(ENTRY_BYTES) {
            let timestamp =
                i64::from_be_bytes(entry[TIMESTAMP_AT..RELATIVE_OFFSET_AT].try_into().ok()?);
            let relative =
                u32::from_be_bytes(entry[RELATIVE_OFFSET_AT..ENTRY_BYTES].try_into().ok()?);
            if let Some((last, last_relative)) = index.entries.last()
                && (timestamp <= *last || relative < last_relative.0)
            {
                return None;
            }
            index.entries.push((timestamp, RelativeOffset(relative)));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_growing_timestamps_are_kept() {
        let mut index = TimeIndex::default();
        index.maybe_append(100, RelativeOffset(0));
        index.maybe_append(90, RelativeOffset(5));
        index.maybe_append(200, RelativeOffset(10));
        assert_eq!(index.last(), Some((200, RelativeOffset(10))));
        assert_eq!(index.scan_from(50), None);
        assert_eq!(index.scan_from(150), Some(RelativeOffset(0)));
        assert_eq!(index.scan_from(250), Some(RelativeOffset(10)));
        assert_eq!(TimeIndex::decode(&index.encode()), Some(index));
    }
}
