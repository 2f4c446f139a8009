//! Partition storage: segments of Kafka v2 record batches, stored byte for
//! byte, with sparse offset and time indexes, written through O_DIRECT DMA
//! files, group-committed, and recovered after a crash.
//!
//! - `batch`: the record batch header, produce validation, offset assignment.
//! - `segment`: one `.log` file, its staged bytes and its batch scanner.
//! - `offset_index`, `time_index`: the sparse indexes and their file formats.
//! - `log`: a partition's log: append, flush, read, timestamp lookup.
//! - `recovery`: rebuilding a log from its files at open.

pub mod batch;
pub mod log;
pub mod offset_index;
pub mod recovery;
pub mod segment;
pub mod time_index;

mod error;

pub use batch::BatchHeader;
pub use error::StorageError;
pub use log::{AppendInfo, CacheBudget, LogConfig, PartitionLog, ReadOutcome, TimestampHit};
