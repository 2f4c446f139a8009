//! Partition storage: segments of Kafka v2 record batches, stored byte for
//! byte, with sparse offset and time indexes, written through O_DIRECT DMA
//! files, group-committed, and recovered after a crash.
//!
//! THE CONTRACT (what the rest of the broker relies on; see DESIGN.md):
//!
//! ```text
//! pub struct LogConfig { segment_bytes: u64, index_interval_bytes: u64,
//!                        segment_index_bytes: u64, max_message_bytes: u32 }
//!   impl Default (Kafka defaults: 1 GiB, 4096, 10 MiB, 1048588)
//!
//! pub struct CacheBudget   // one per shard, shared by that shard's logs (Rc)
//!   CacheBudget::new(limit_bytes: usize) -> Rc<CacheBudget>
//!
//! pub struct PartitionLog  // owned by exactly one shard, held as Rc<PartitionLog>
//!   async fn open(dir: PathBuf, config: LogConfig, cache: Rc<CacheBudget>)
//!         -> Result<PartitionLog, StorageError>          // creates or recovers
//!   fn append(&self, records: &Bytes, now_ms: i64) -> Result<AppendInfo, StorageError>
//!         // sync: validates, assigns offsets, stages in memory; NOT durable
//!   fn is_dirty(&self) -> bool                             // staged data not yet durable
//!   async fn flush(&self) -> Result<Offset, StorageError>  // write-out + fdatasync; returns high watermark
//!   fn log_start_offset(&self) -> Offset
//!   fn log_end_offset(&self) -> Offset                     // next offset to assign
//!   fn high_watermark(&self) -> Offset                     // durable end; readers see only below it
//!   async fn read(&self, offset: Offset, max_bytes: usize) -> Result<ReadOutcome, StorageError>
//!   async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<TimestampHit>, StorageError>
//!   fn max_timestamp(&self) -> Option<TimestampHit>
//!   async fn close(&self) -> Result<(), StorageError>      // clean shutdown: flush, write indexes
//!   fn dir(&self) -> &Path
//! ```

pub mod batch;
pub mod log;
pub mod offset_index;
pub mod recovery;
pub mod segment;
pub mod time_index;

pub use batch::BatchHeader;
pub use log::{AppendInfo, CacheBudget, LogConfig, PartitionLog, ReadOutcome, TimestampHit};

mod error;
pub use error::StorageError;
