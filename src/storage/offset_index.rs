//! The sparse offset index of one segment, Kafka's `OffsetIndex`: an entry
//! every `index.interval.bytes` of log, mapping a batch's last offset
//! (relative to the segment base) to the file position where that batch
//! starts. Held in memory; written as a `.index` file when the segment is
//! closed, checked on open, rebuilt from the log when missing or wrong.
//!
//! ```text
//! .index file: N entries of 8 bytes, big-endian
//! 0        4         8
//! +--------+---------+
//! | rel u32| pos u32 |   rel = last offset - segment base offset
//! +--------+---------+
//! ```

use crate::types::{FilePosition, RelativeOffset};

pub const ENTRY_BYTES: usize = 8;
const RELATIVE_OFFSET_AT: usize = 0;
const POSITION_AT: usize = 4;
const _: () = assert!(POSITION_AT + 4 == ENTRY_BYTES);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(RelativeOffset, u32)>,
}

impl OffsetIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn size_bytes(&self) -> u64 {
        (self.entries.len() * ENTRY_BYTES) as u64
    }

    /// Appends an entry; offsets and positions only grow.
    pub fn append(&mut self, relative: RelativeOffset, position: FilePosition) {
        let position = u32::try_from(position.0).unwrap_or(u32::MAX);
        if let Some((last_relative, last_position)) = self.entries.last() {
            assert!(relative > *last_relative, "offset index offsets must grow");
            assert!(
                position > *last_position,
                "offset index positions must grow"
            );
        }
        self.entries.push((relative, position));
    }

    /// The position to start scanning from to find `relative` (Kafka's
    /// `largestLowerBoundSlotFor`): the entry with the largest offset at or
    /// below it, else the segment start. An entry's offset is the last
    /// offset of the batch at its position, so no batch before that
    /// position holds `relative`.
    pub fn lookup(&self, relative: RelativeOffset) -> FilePosition {
        let index = self.entries.partition_point(|(r, _)| *r <= relative);
        match index.checked_sub(1) {
            Some(i) => FilePosition(u64::from(self.entries[i].1)),
            None => FilePosition(0),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * ENTRY_BYTES);
        for (relative, position) in &self.entries {
            bytes.extend_from_slice(&relative.0.to_be_bytes());
            bytes.extend_from_slice(&position.to_be_bytes());
        }
        bytes
    }

    /// The largest indexed relative offset.
    pub fn last_relative(&self) -> Option<RelativeOffset> {
        self.entries.last().map(|(relative, _)| *relative)
    }

    /// Decodes an index file and sanity-checks it against its segment's
    /// size (Kafka's `OffsetIndex.sanityCheck`): whole entries, offsets and
    /// positions strictly growing, every position inside the segment.
    /// `None` means rebuild it.
    pub fn decode(bytes: &[u8], segment_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for entry in bytes.chunks_exact(ENTRY_BYTES) {
            let relative =
                u32::from_be_bytes(entry[RELATIVE_OFFSET_AT..POSITION_AT].try_into().ok()?);
            let position = u32::from_be_bytes(entry[POSITION_AT..ENTRY_BYTES].try_into().ok()?);
            if u64::from(position) >= segment_bytes {
                return None;
            }
            if let Some((last_relative, last_position)) = index.entries.last()
                && (relative <= last_relative.0 || position <= *last_position)
            {
                return None;
            }
            index.entries.push((RelativeOffset(relative), position));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_table() {
        let mut index = OffsetIndex::default();
        index.append(RelativeOffset(9), FilePosition(0));
        index.append(RelativeOffset(19), FilePosition(4100));
        index.append(RelativeOffset(29), FilePosition(8300));
        let cases = [
            (0, 0),
            (8, 0),
            (9, 0),
            (10, 0),
            (18, 0),
            (19, 4100),
            (20, 4100),
            (28, 4100),
            (29, 8300),
            (30, 8300),
            (1000, 8300),
        ];
        for (relative, position) in cases {
            assert_eq!(
                index.lookup(RelativeOffset(relative)),
                FilePosition(position),
                "{relative}"
            );
        }
    }

    #[test]
    fn decode_checks_sanity() {
        let mut index = OffsetIndex::default();
        index.append(RelativeOffset(3), FilePosition(100));
        index.append(RelativeOffset(7), FilePosition(5000));
        let bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 10_000), Some(index));
        assert_eq!(
            OffsetIndex::decode(&bytes, 4_000),
            None,
            "position past the segment"
        );
        assert_eq!(
            OffsetIndex::decode(&bytes[..7], 10_000),
            None,
            "partial entry"
        );
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert_eq!(
            OffsetIndex::decode(&swapped, 10_000),
            None,
            "offsets going down"
        );
    }
}
