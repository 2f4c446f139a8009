//! Partition storage: segments of Kafka v2 record batches, stored byte for
//! byte, with sparse offset and time indexes, written through O_DIRECT DMA
//! files, group-committed, and recovered after a crash.
//!
//! - `batch`: the record batch header, produce validation, offset assignment.
//! - `compact`: the records of a batch, filtered for log compaction.
//! - `segment`: one `.log` file, its staged bytes and its batch scanner.
//! - `offset_index`, `time_index`: the sparse indexes and their file formats.
//! - `log`: a partition's log: append, flush, read, timestamp lookup.
//! - `recovery`: rebuilding a log from its files at open.
//! - `foreground`: the shard's produce work in flight, which the cleaner
//!   waits out before each step.
//!
//! Durability in one line: `PartitionLog::append` stages in memory and is
//! never durable when it returns; `PartitionLog::flush` makes everything
//! appended before it started durable and only then moves the high
//! watermark, and readers see nothing above the high watermark. Unit tests
//! share `test_support` (a real-filesystem temporary directory, since
//! O_DIRECT needs one).

pub mod batch;
pub mod compact;
pub mod foreground;
pub mod log;
pub mod offset_index;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod time_index;

mod error;
#[cfg(test)]
pub(crate) mod test_support;

pub use batch::BatchHeader;
pub use error::StorageError;
pub use foreground::Foreground;
pub use log::{AppendInfo, CacheBudget, LogConfig, PartitionLog, ReadOutcome, TimestampHit};
