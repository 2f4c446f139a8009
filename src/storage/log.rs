//! A partition's log: its segments, offsets, tail cache and flush.
//!
//! Contract:
//! - `append` is synchronous: it validates a produced batch, assigns its
//!   offsets and stages it in memory. Nothing is durable when it returns.
//! - `flush` writes every staged byte (O_DIRECT) and fdatasyncs; when it
//!   returns `Ok`, everything appended before it started is durable and
//!   below the high watermark. At most one flush per log may be in flight
//!   (the shard's group commit guarantees it; asserted here).
//! - Readers see only data below the high watermark, which is always on
//!   stable storage.
//! - No `RefCell` borrow is held across an `.await`: each async method
//!   takes what it needs, awaits, then re-borrows and re-checks.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::StorageError;
use super::batch::{self, BatchHeader};
use super::offset_index;
use super::recovery;
use super::segment::{self, Segment, Visit};
use super::time_index;
use crate::types::Offset;

mod cleaner;
pub use cleaner::{CLEANED_SUFFIX, COMPACTED_MARKER, CleanOutcome, OffsetMap, Throttle};

/// The one partition leader epoch of a single-node partition.
pub const LEADER_EPOCH: i32 = 0;

/// Kafka's `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Per-topic storage settings (Kafka's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogConfig {
    /// `cleanup.policy` has `delete`: retention deletes old segments.
    pub cleanup_delete: bool,
    /// `cleanup.policy` has `compact`: the cleaner keeps the latest record
    /// per key.
    pub cleanup_compact: bool,
    /// `min.cleanable.dirty.ratio`: the share of the cleanable log not yet
    /// compacted at which the cleaner runs.
    pub min_cleanable_dirty_ratio: f64,
    /// `delete.retention.ms`: how long a tombstone stays after its record's
    /// timestamp once it is the latest record of its key.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: a segment whose newest record is younger
    /// than this is not compacted yet.
    pub min_compaction_lag_ms: i64,
    /// `segment.bytes`: a segment rolls before it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: a segment whose first append is older than this rolls
    /// at the next append.
    pub segment_ms: i64,
    /// `retention.ms`: closed segments whose newest record is older than
    /// this are deleted; -1 keeps them forever.
    pub retention_ms: i64,
    /// `retention.bytes`: the oldest closed segments are deleted while the
    /// log is larger than this; -1 for no bound.
    pub retention_bytes: i64,
    /// `message.timestamp.type`: keep the producer's timestamps, or stamp
    /// each batch with the time it was appended.
    pub timestamp_type: TimestampType,
    /// `flush.messages`: fdatasync once this many records are written and
    /// not yet synced. 1 (the default) syncs every flush round: durable.
    pub flush_messages: i64,
    /// `flush.ms`: fdatasync once the last sync is this old (checked at
    /// flush rounds and by the shard's flush timer).
    pub flush_ms: i64,
    /// `index.interval.bytes`: log bytes between offset index entries.
    pub index_interval_bytes: u64,
    /// `segment.index.bytes`: a full offset index rolls the segment.
    pub segment_index_bytes: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            cleanup_delete: true,
            cleanup_compact: false,
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            timestamp_type: TimestampType::CreateTime,
            flush_messages: 1,
            flush_ms: i64::MAX,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            max_message_bytes: 1_048_588,
        }
    }
}

/// The bound on tail-cache memory of one shard, shared by its logs.
#[derive(Debug)]
pub struct CacheBudget {
    limit_bytes: usize,
    used_bytes: Cell<usize>,
}

impl CacheBudget {
    pub fn new(limit_bytes: usize) -> Rc<CacheBudget> {
        Rc::new(CacheBudget {
            limit_bytes,
            used_bytes: Cell::new(0),
        })
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes.get()
    }

    fn over(&self) -> bool {
        self.used_bytes.get() > self.limit_bytes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub batch_count: usize,
    pub size_bytes: usize,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// Whole batches, in offset order.
    pub batches: Vec<Bytes>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampHit {
    pub offset: Offset,
    pub timestamp_ms: i64,
}

#[derive(Debug)]
struct CachedBatch {
    base_offset: Offset,
    last_offset: Offset,
    bytes: Bytes,
}

#[derive(Debug)]
struct LogState {
    segments: BTreeMap<Offset, Segment>,
    log_start: Offset,
    next_offset: Offset,
    high_watermark: Offset,
    /// Recently appended batches, oldest first, all below `next_offset`.
    tail: VecDeque<CachedBatch>,
}

impl LogState {
    fn active(&mut self) -> &mut Segment {
        match self.segments.last_entry() {
            Some(entry) => entry.into_mut(),
            None => unreachable!("a log always has an active segment"),
        }
    }
}

/// One partition's log, owned by one shard.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    /// Changed live by AlterConfigs; read afresh by every operation.
    config: Cell<LogConfig>,
    cache: Rc<CacheBudget>,
    state: RefCell<LogState>,
    flushing: Cell<bool>,
    /// Held by a flush and by the flush timer's sync, so a group-commit
    /// flush waits for a timed sync of the same files to end (and the timer
    /// skips a log that is flushing).
    io_turn: glommio::sync::Semaphore,
    /// Held while segments are deleted (retention, DeleteRecords) and while
    /// the cleaner swaps a rewritten segment in.
    segments_turn: glommio::sync::Semaphore,
    /// Held by the one writer of closed segments' index files, and by a
    /// delete or a swap (taken after `segments_turn`), so index files are
    /// never written for a segment that is going or being replaced.
    index_turn: glommio::sync::Semaphore,
    /// When an index writer last failed (ms): the next waits a second.
    index_failed_ms: Cell<i64>,
    /// A writer was started and has not taken the turn yet.
    index_writer_queued: Cell<bool>,
    /// Set when the topic is deleted: no index file is written any more.
    retired: Cell<bool>,
    /// The cleaner's state: running now, the first offset not yet cleaned,
    /// and when the earliest kept tombstone may go.
    cleaning: Cell<bool>,
    cleaned_to: Cell<Offset>,
    tombstone_deadline: Cell<Option<i64>>,
    /// Bytes the pass in progress read from files and from the tail cache.
    cleaner_reads: Cell<(u64, u64)>,
    /// Time the pass in progress spent in its steps (reading and
    /// filtering batches; not its waits for a turn, its rests, syncs or
    /// swaps), counted at each rest: a segment's last step, which no rest
    /// follows, is left out.
    cleaner_stepping: Cell<std::time::Duration>,
    /// `.log` files of segments the cleaner merged into an earlier one that
    /// a failure left on disk (the log no longer holds them). Removed
    /// before the next swap or delete: recovery reads such a file as the
    /// older copy of what the merged segment holds only while that merged
    /// segment is the one that replaced it.
    merged_away: RefCell<Vec<PathBuf>>,
    /// A directory sync after a rename or a removal failed: a retry may
    /// report success without that change on disk, so no more files are
    /// removed (merged away or by retention) until a restart, and what is
    /// left stays for recovery.
    removals_stuck: Cell<bool>,
    /// The relaxed flush policy's state: records written since the last
    /// fdatasync, when that was, and the files written but not synced.
    unsynced_records: Cell<i64>,
    last_sync_ms: Cell<i64>,
    unsynced_files: RefCell<Vec<(PathBuf, Rc<DmaFile>)>>,
}

/// Marks a flush in flight for as long as it lives.
struct FlushInFlight<'a>(&'a Cell<bool>);

impl Drop for FlushInFlight<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Waits for `turn` (a semaphore of one that is never closed, so the
/// error cannot happen; it is still reported, not unwrapped).
async fn take_turn<'a>(
    turn: &'a glommio::sync::Semaphore,
    waiting_for: &'static str,
    dir: &Path,
) -> Result<glommio::sync::Permit<'a>, StorageError> {
    turn.acquire_permit(1)
        .await
        .map_err(StorageError::glommio(waiting_for, dir))
}

/// Whether `segment` is closed and durable but its index files are not
/// written yet.
fn lacks_index_files(segment: &Segment) -> bool {
    segment.closed && !segment.indexes_written && segment.durable_bytes >= segment.size_bytes
}

/// A closed segment's index files, encoded and ready to write.
struct IndexFiles {
    base_offset: Offset,
    index_path: PathBuf,
    index: Vec<u8>,
    time_index_path: PathBuf,
    time_index: Vec<u8>,
}

/// One segment's share of a flush.
struct FlushJob {
    base_offset: Offset,
    path: PathBuf,
    file: Option<Rc<DmaFile>>,
    write_at: u64,
    /// The staged bytes, copied once into an aligned buffer and
    /// zero-padded to a whole block; `None` when nothing is staged.
    buffer: Option<DmaBuffer>,
    end: u64,
    closed: bool,
    /// The segment's largest timestamp over the bytes this job writes.
    max_timestamp: Option<(i64, Offset)>,
}

/// Copies a segment's staged chunks into one aligned, zero-padded buffer.
fn staged_buffer(segment: &Segment) -> Option<DmaBuffer> {
    let length = segment.staged_len();
    if length == 0 {
        return None;
    }
    let padded = segment::align_up(length as u64) as usize;
    let mut buffer = glommio::allocate_dma_buffer(padded);
    let target = buffer.as_bytes_mut();
    segment.copy_staged(&mut target[..length]);
    target[length..].fill(0);
    Some(buffer)
}

impl PartitionLog {
    /// Opens the log in `dir`, creating it or recovering what is there.
    pub async fn open(
        dir: PathBuf,
        config: LogConfig,
        cache: Rc<CacheBudget>,
    ) -> Result<PartitionLog, StorageError> {
        recovery::create_dir(&dir).await?;
        probe_polled_io(&dir).await?;
        let mut segments = recovery::recover(&dir, &config).await?;
        if let Some(active) = segments.values_mut().last()
            && active.size_bytes > 0
        {
            active.first_append_ms = Some(crate::types::now_ms());
        }
        let first_base = segments.keys().next().copied().unwrap_or_default();
        let next = segments
            .values()
            .last()
            .map(|s| s.next_offset)
            .unwrap_or_default();
        // DeleteRecords may have moved the start inside the first segment.
        let log_start = read_offset_checkpoint(&dir, LOG_START_CHECKPOINT)
            .await?
            .map_or(first_base, |checkpoint| checkpoint.clamp(first_base, next));
        // How far the cleaner got; never past what recovery kept.
        let cleaned_to = read_offset_checkpoint(&dir, cleaner::CLEANER_CHECKPOINT)
            .await?
            .map_or(Offset(0), |checkpoint| checkpoint.clamp(Offset(0), next));
        let next_offset = segments
            .values()
            .last()
            .map(|s| s.next_offset)
            .unwrap_or_default();
        let log = PartitionLog {
            dir,
            config: Cell::new(config),
            cache,
            state: RefCell::new(LogState {
                segments,
                log_start,
                next_offset,
                high_watermark: next_offset,
                tail: VecDeque::new(),
            }),
            flushing: Cell::new(false),
            io_turn: glommio::sync::Semaphore::new(1),
            segments_turn: glommio::sync::Semaphore::new(1),
            index_turn: glommio::sync::Semaphore::new(1),
            index_failed_ms: Cell::new(i64::MIN),
            index_writer_queued: Cell::new(false),
            retired: Cell::new(false),
            cleaning: Cell::new(false),
            cleaned_to: Cell::new(cleaned_to),
            cleaner_reads: Cell::new((0, 0)),
            cleaner_stepping: Cell::new(std::time::Duration::ZERO),
            merged_away: RefCell::new(Vec::new()),
            removals_stuck: Cell::new(false),
            // Unknown after a restart: the first look goes through the
            // tombstones once to learn when the next one is due.
            tombstone_deadline: Cell::new((cleaned_to > Offset(0)).then_some(0)),
            unsynced_records: Cell::new(0),
            last_sync_ms: Cell::new(crate::types::now_ms()),
            unsynced_files: RefCell::new(Vec::new()),
        };
        log.write_missing_indexes().await?;
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.get()
    }

    /// Applies changed topic configs; the next append, roll and retention
    /// check use them.
    pub fn set_config(&self, config: LogConfig) {
        self.config.set(config);
    }

    pub fn log_start_offset(&self) -> Offset {
        self.state.borrow().log_start
    }

    pub fn log_end_offset(&self) -> Offset {
        self.state.borrow().next_offset
    }

    pub fn high_watermark(&self) -> Offset {
        self.state.borrow().high_watermark
    }

    pub fn is_dirty(&self) -> bool {
        let state = self.state.borrow();
        state.next_offset > state.high_watermark
    }

    /// Validates, assigns offsets to and stages one produced batch.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<AppendInfo, StorageError> {
        let config = self.config.get();
        let header = batch::validate_produced(records, config.max_message_bytes)?;
        if config.cleanup_compact {
            super::compact::require_keys(records, &header)?;
        }
        let mut state = self.state.borrow_mut();
        let base_offset = state.next_offset;
        let last_offset = Offset(base_offset.0 + i64::from(header.last_offset_delta));
        if should_roll(&config, state.active(), records.len(), last_offset, now_ms) {
            let active = state.active();
            active.closed = true;
            active.seal_time_index();
            state
                .segments
                .insert(base_offset, Segment::new(&self.dir, base_offset));
        }
        let (assigned, header) = match config.timestamp_type {
            TimestampType::CreateTime => {
                (batch::assign(records, base_offset, LEADER_EPOCH), header)
            }
            TimestampType::LogAppendTime => (
                batch::assign_log_append_time(records, base_offset, LEADER_EPOCH, now_ms),
                BatchHeader {
                    attributes: header.attributes | batch::TIMESTAMP_TYPE_BIT,
                    max_timestamp: now_ms,
                    ..header
                },
            ),
        };
        let assigned_header = BatchHeader {
            base_offset: base_offset.0,
            partition_leader_epoch: LEADER_EPOCH,
            ..header
        };
        let active = state.active();
        if active.size_bytes == 0 {
            active.first_append_ms = Some(now_ms);
        }
        active.stage(&assigned, &assigned_header, config.index_interval_bytes);
        state.next_offset = last_offset.next();
        self.unsynced_records
            .set(self.unsynced_records.get() + i64::from(header.record_count.max(0)));
        self.cache
            .used_bytes
            .set(self.cache.used_bytes.get() + assigned.len());
        state.tail.push_back(CachedBatch {
            base_offset,
            last_offset,
            bytes: assigned,
        });
        self.evict(&mut state);
        Ok(AppendInfo {
            base_offset,
            last_offset,
            batch_count: 1,
            size_bytes: records.len(),
            max_timestamp: header.max_timestamp,
        })
    }

    /// Drops this log's oldest durable cached batches while the shard is
    /// over its cache budget.
    fn evict(&self, state: &mut LogState) {
        while self.cache.over() {
            let evictable = state
                .tail
                .front()
                .is_some_and(|b| b.last_offset < state.high_watermark);
            if !evictable {
                break;
            }
            self.drop_oldest_cached(state);
        }
    }

    fn sync_due(&self, config: &LogConfig, now_ms: i64) -> bool {
        // flush.messages=1, the default: every round syncs.
        config.flush_messages <= 1
            || self.unsynced_records.get() >= config.flush_messages
            || now_ms.saturating_sub(self.last_sync_ms.get()) >= config.flush_ms
    }

    fn remember_unsynced(&self, path: &Path, file: &Rc<DmaFile>) {
        let mut files = self.unsynced_files.borrow_mut();
        if !files.iter().any(|(p, _)| p == path) {
            files.push((path.to_path_buf(), file.clone()));
        }
    }

    /// Syncs every file written but not synced under a relaxed policy;
    /// `records` of the unsynced count are then synced.
    async fn sync_remembered(&self, records: i64) -> Result<(), StorageError> {
        let files = std::mem::take(&mut *self.unsynced_files.borrow_mut());
        for (path, file) in &files {
            if let Err(error) = file.fdatasync().await {
                // Keep them for the next try.
                self.unsynced_files
                    .borrow_mut()
                    .extend(files.iter().cloned());
                return Err(StorageError::glommio("syncing", path)(error));
            }
        }
        self.unsynced_records
            .set(self.unsynced_records.get().saturating_sub(records).max(0));
        self.last_sync_ms.set(crate::types::now_ms());
        Ok(())
    }

    /// Records appended and not yet written (staged in memory).
    fn staged_records(&self) -> i64 {
        let state = self.state.borrow();
        state.next_offset.0 - state.high_watermark.0
    }

    /// Whether written bytes await a sync (a relaxed flush policy).
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced_files.borrow().is_empty()
    }

    /// The flush timer: syncs written bytes once `flush.ms` has passed.
    /// Skipped while a flush runs (that flush syncs if it is due).
    pub async fn sync_if_due(&self, now_ms: i64) -> Result<bool, StorageError> {
        if self.flushing.get() || !self.has_unsynced() {
            return Ok(false);
        }
        if !self.sync_due(&self.config.get(), now_ms) {
            return Ok(false);
        }
        let Ok(_turn) = self.io_turn.try_acquire_permit(1) else {
            return Ok(false);
        };
        // Only what was written is synced; staged records stay counted.
        let written = self.unsynced_records.get() - self.staged_records();
        self.sync_remembered(written).await?;
        Ok(true)
    }

    /// Holds the log's I/O turn, as a timed sync does: its flushes wait
    /// until the permit is dropped.
    #[cfg(test)]
    pub(crate) fn hold_io_turn(&self) -> glommio::sync::Permit<'_> {
        self.io_turn
            .try_acquire_permit(1)
            .expect("the I/O turn is free")
    }

    /// Writes out and fdatasyncs everything staged; returns the new high
    /// watermark.
    pub async fn flush(&self) -> Result<Offset, StorageError> {
        assert!(!self.flushing.replace(true), "one flush per log at a time");
        // Cleared on drop too, so a cancelled flush does not wedge the log;
        // its staged bytes stay staged and the next flush writes them.
        let _in_flight = FlushInFlight(&self.flushing);
        // A timed sync may be running: the flush starts when it ends. The
        // semaphore is never closed, so acquiring cannot fail.
        let _turn = take_turn(&self.io_turn, "waiting for the timed sync of", &self.dir).await?;
        self.flush_staged().await
    }

    async fn flush_staged(&self) -> Result<Offset, StorageError> {
        let (jobs, target) = {
            let state = self.state.borrow();
            let jobs: Vec<FlushJob> = state
                .segments
                .values()
                .filter(|s| s.size_bytes > s.durable_bytes || (s.closed && !s.trimmed))
                .map(|s| FlushJob {
                    base_offset: s.base_offset,
                    path: s.log_path.clone(),
                    file: s.file.clone(),
                    write_at: s.staged_start,
                    buffer: staged_buffer(s),
                    end: s.size_bytes,
                    closed: s.closed,
                    max_timestamp: s.max_timestamp,
                })
                .collect();
            (jobs, state.next_offset)
        };
        let config = self.config.get();
        // Durable unless the topic relaxed its flush policy and no sync is
        // due: then the bytes are written (the high watermark moves) and a
        // later round or the flush timer syncs them.
        let sync = self.sync_due(&config, crate::types::now_ms());
        let counted = self.unsynced_records.get();
        let mut created = Vec::new();
        let mut jobs = jobs;
        for job in &mut jobs {
            let file = match &job.file {
                Some(file) => file.clone(),
                None => {
                    let file = Rc::new(create_segment_file(&job.path).await?);
                    sync_dir(&self.dir).await?;
                    created.push((job.base_offset, file.clone()));
                    file
                }
            };
            if let Some(buffer) = job.buffer.take() {
                write_block_aligned(&file, &job.path, job.write_at, buffer).await?;
            }
            if job.closed {
                // A closed segment's file ends at its last batch, not padding.
                file.truncate(job.end)
                    .await
                    .map_err(StorageError::glommio("truncating", &job.path))?;
            }
            if sync {
                file.fdatasync()
                    .await
                    .map_err(StorageError::glommio("syncing", &job.path))?;
            } else {
                self.remember_unsynced(&job.path, &file);
            }
        }
        if sync {
            self.sync_remembered(counted).await?;
        }
        let high_watermark = {
            let mut state = self.state.borrow_mut();
            for (base_offset, file) in created {
                if let Some(segment) = state.segments.get_mut(&base_offset) {
                    segment.file = Some(file);
                }
            }
            for job in &jobs {
                if let Some(segment) = state.segments.get_mut(&job.base_offset) {
                    segment.flushed(job.end);
                    segment.durable_max_timestamp = job.max_timestamp;
                    if job.closed {
                        segment.trimmed = true;
                        // The kept partial block may pin a whole batch's
                        // buffer; a closed segment never rewrites it.
                        segment.staged.clear();
                    }
                }
            }
            state.high_watermark = state.high_watermark.max(target);
            self.evict(&mut state);
            state.high_watermark
        };
        // A segment closed by this flush gets its index files from
        // `write_missing_indexes`, off the acknowledgement's path.
        Ok(high_watermark)
    }

    /// The topic is being deleted: completes once no index writer is at
    /// work in the log's directory, and none starts again.
    pub async fn retire(&self) -> Result<(), StorageError> {
        self.retired.set(true);
        let _turn = take_turn(&self.index_turn, "retiring", &self.dir).await?;
        Ok(())
    }

    /// Whether a closed, durable segment lacks its index files.
    pub fn index_files_pending(&self) -> bool {
        self.state.borrow().segments.values().any(lacks_index_files)
    }

    /// Whether a closed, durable segment lacks its index files and no
    /// writer is on its way (nor failed in the last second); if so, the
    /// caller is to run [`Self::write_missing_indexes`] (the group commit
    /// after a round, in the background; retention's check as a backstop
    /// for a log that went idle after a failure).
    pub fn claim_index_writer(&self, now_ms: i64) -> bool {
        let wanted = !self.retired.get()
            && !self.index_writer_queued.get()
            && now_ms.saturating_sub(self.index_failed_ms.get()) >= 1_000
            && self.index_files_pending();
        if wanted {
            self.index_writer_queued.set(true);
        }
        wanted
    }

    /// Writes the index files of closed, fully durable segments that lack
    /// them, until none does: segments closed or swapped in meanwhile are
    /// written too. One writer at a time (a delete or a swap in progress is
    /// waited for). Not needed for durability (recovery rebuilds a missing
    /// index), so the acknowledgements of a flush do not wait for it.
    pub async fn write_missing_indexes(&self) -> Result<(), StorageError> {
        let _turn = take_turn(
            &self.index_turn,
            "waiting to write the indexes of",
            &self.dir,
        )
        .await?;
        // From here on this writer picks up every segment that closes.
        self.index_writer_queued.set(false);
        if self.retired.get() {
            return Ok(());
        }
        let written = self.write_pending_indexes().await;
        if written.is_err() {
            self.index_failed_ms.set(crate::types::now_ms());
        }
        written
    }

    async fn write_pending_indexes(&self) -> Result<(), StorageError> {
        loop {
            let pending: Vec<IndexFiles> = self
                .state
                .borrow()
                .segments
                .values()
                .filter(|s| lacks_index_files(s))
                .map(|s| IndexFiles {
                    base_offset: s.base_offset,
                    index_path: s.index_path(),
                    index: s.index.encode(),
                    time_index_path: s.time_index_path(),
                    time_index: s.time_index.encode(),
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            // One directory sync for all of them.
            let bases: Vec<Offset> = pending.iter().map(|files| files.base_offset).collect();
            let contents = pending
                .into_iter()
                .flat_map(|files| {
                    [
                        (files.index_path, files.index),
                        (files.time_index_path, files.time_index),
                    ]
                })
                .collect();
            write_index_files(self.dir.clone(), contents).await?;
            // No delete or swap ran meanwhile (they take the turn held
            // here): each segment is the one encoded.
            let mut state = self.state.borrow_mut();
            for base in bases {
                if let Some(segment) = state.segments.get_mut(&base) {
                    segment.indexes_written = true;
                }
            }
        }
    }

    /// Whole batches from the one containing `offset`, up to `max_bytes`
    /// (at least one batch when any is available).
    pub async fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<ReadOutcome, StorageError> {
        let (high_watermark, log_start) = {
            let state = self.state.borrow();
            (state.high_watermark, state.log_start)
        };
        let outcome = |batches| ReadOutcome {
            batches,
            high_watermark,
            log_start_offset: log_start,
        };
        if offset < log_start || offset > high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start,
                high_watermark,
            });
        }
        if offset == high_watermark {
            return Ok(outcome(Vec::new()));
        }
        if let Some(batches) = self.read_cached(offset, max_bytes, high_watermark) {
            return Ok(outcome(batches));
        }
        let mut from_segment = offset;
        loop {
            let location = {
                let state = self.state.borrow();
                let segment = state
                    .segments
                    .range(..=from_segment)
                    .next_back()
                    .or_else(|| state.segments.range(from_segment..).next())
                    .map(|(_, s)| s);
                segment.and_then(|s| {
                    let file = s.file.clone()?;
                    let position = s.index.lookup(s.relative(offset)).0;
                    Some((
                        s.next_offset,
                        file,
                        s.log_path.clone(),
                        position,
                        s.durable_bytes,
                    ))
                })
            };
            let Some((segment_end, file, path, position, end)) = location else {
                return Ok(outcome(Vec::new()));
            };
            let mut batches = Vec::new();
            let mut total = 0usize;
            segment::scan(&file, &path, position, end, false, |_, header, bytes| {
                if header.last_offset() < offset.0 {
                    return Visit::Continue;
                }
                if header.base_offset >= high_watermark.0 {
                    return Visit::Stop;
                }
                if !batches.is_empty() && total + bytes.len() > max_bytes {
                    return Visit::Stop;
                }
                total += bytes.len();
                batches.push(Bytes::copy_from_slice(bytes));
                Visit::Continue
            })
            .await?;
            if !batches.is_empty() {
                return Ok(outcome(batches));
            }
            // Nothing here at or after `offset`: go on from where this
            // segment ended. (By offset, not by the next segment in the map:
            // a cleaner's swap during the scan may have merged the segments
            // after this one into one that starts where this one did.)
            let next = if segment_end > from_segment {
                Some(segment_end)
            } else {
                // Segments are contiguous; this only guards the loop.
                let state = self.state.borrow();
                state
                    .segments
                    .range(from_segment.next()..)
                    .next()
                    .map(|(base, _)| *base)
            };
            match next {
                Some(next) if next < high_watermark => from_segment = next,
                _ => return Ok(outcome(Vec::new())),
            }
        }
    }

    fn read_cached(
        &self,
        offset: Offset,
        max_bytes: usize,
        high_watermark: Offset,
    ) -> Option<Vec<Bytes>> {
        let state = self.state.borrow();
        let first = state.tail.front()?;
        if first.base_offset > offset {
            return None;
        }
        let start = state.tail.partition_point(|b| b.last_offset < offset);
        let mut batches = Vec::new();
        let mut total = 0usize;
        for cached in state.tail.range(start..) {
            if cached.base_offset >= high_watermark {
                break;
            }
            if !batches.is_empty() && total + cached.bytes.len() > max_bytes {
                break;
            }
            total += cached.bytes.len();
            batches.push(cached.bytes.clone());
        }
        Some(batches)
    }

    /// The first offset whose timestamp is at or after `timestamp_ms`
    /// (record-exact in uncompressed batches, batch-level in compressed).
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampHit>, StorageError> {
        let (candidates, high_watermark) = {
            let state = self.state.borrow();
            let candidates: Vec<_> = state
                .segments
                .values()
                .filter(|s| s.max_timestamp.is_some_and(|(t, _)| t >= timestamp_ms))
                .filter_map(|s| {
                    let file = s.file.clone()?;
                    let position = match s.time_index.scan_from(timestamp_ms) {
                        Some(relative) => s.index.lookup(relative).0,
                        None => 0,
                    };
                    Some((file, s.log_path.clone(), position, s.durable_bytes))
                })
                .collect();
            (candidates, state.high_watermark)
        };
        for (file, path, position, end) in candidates {
            let mut hit = None;
            segment::scan(&file, &path, position, end, false, |_, header, bytes| {
                if header.base_offset >= high_watermark.0 {
                    return Visit::Stop;
                }
                if header.max_timestamp < timestamp_ms {
                    return Visit::Continue;
                }
                hit = first_record_at_or_after(header, bytes, timestamp_ms);
                if hit.is_some() {
                    Visit::Stop
                } else {
                    Visit::Continue
                }
            })
            .await?;
            if hit.is_some() {
                return Ok(hit);
            }
        }
        Ok(None)
    }

    /// The largest timestamp below the high watermark and the offset of
    /// its record (of the first such record; for a compressed batch, the
    /// batch's last offset).
    pub fn max_timestamp(&self) -> Option<TimestampHit> {
        let state = self.state.borrow();
        let mut best: Option<(i64, Offset)> = None;
        for (timestamp, offset) in state
            .segments
            .values()
            .filter_map(|s| s.durable_max_timestamp)
        {
            if best.is_none_or(|(t, _)| timestamp > t) {
                best = Some((timestamp, offset));
            }
        }
        best.map(|(timestamp_ms, offset)| TimestampHit {
            offset,
            timestamp_ms,
        })
    }

    /// Bytes of the log on disk (every segment, staged bytes included).
    pub fn size_bytes(&self) -> u64 {
        self.state
            .borrow()
            .segments
            .values()
            .map(|s| s.size_bytes)
            .sum()
    }

    /// Retention (`retention.ms`, `retention.bytes`): deletes the oldest
    /// closed segments whose newest record is older than `retention.ms`, or
    /// while the log without them would still be larger than
    /// `retention.bytes`. Never the active segment; the log start moves
    /// first (see [`PartitionLog::delete_segments_before`]). Returns how
    /// many segments went.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let config = self.config.get();
        if !config.cleanup_delete {
            return Ok(0);
        }
        let cutoff = {
            let state = self.state.borrow();
            let total: u64 = state.segments.values().map(|s| s.size_bytes).sum();
            let mut excess = u64::try_from(config.retention_bytes)
                .map(|limit| total.saturating_sub(limit))
                .unwrap_or(0);
            let expired_before =
                (config.retention_ms >= 0).then(|| now_ms.saturating_sub(config.retention_ms));
            let mut cutoff = None;
            let closed = state.segments.len().saturating_sub(1);
            for segment in state.segments.values().take(closed) {
                let by_time = match (expired_before, segment.max_timestamp) {
                    (Some(limit), Some((newest, _))) => newest < limit,
                    _ => false,
                };
                let by_size = excess > 0 && excess >= segment.size_bytes;
                if !by_time && !by_size {
                    break;
                }
                excess = excess.saturating_sub(segment.size_bytes);
                cutoff = Some(segment.next_offset);
            }
            cutoff
        };
        match cutoff {
            Some(offset) => self.delete_segments_before(offset).await,
            None => Ok(0),
        }
    }

    /// DeleteRecords: the log starts at `offset` from now on (an offset at
    /// most the high watermark; records below it are no longer served) and
    /// whole segments below it are deleted. The new start is made durable
    /// (a checkpoint file) before anything is deleted. Returns the log
    /// start.
    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset, StorageError> {
        let (log_start, high_watermark) = {
            let state = self.state.borrow();
            (state.log_start, state.high_watermark)
        };
        if offset > high_watermark || offset.0 < 0 {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start,
                high_watermark,
            });
        }
        if offset <= log_start {
            return Ok(log_start);
        }
        write_offset_checkpoint(&self.dir, LOG_START_CHECKPOINT, offset).await?;
        self.state.borrow_mut().log_start = offset;
        self.delete_segments_before(offset).await?;
        Ok(self.log_start_offset())
    }

    /// How many segments the log has (the active one included).
    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Deletes the oldest segments whose every offset is below `offset`:
    /// only closed, trimmed, fully durable ones, oldest first, never the
    /// active segment. The log then starts at the first remaining segment.
    /// Returns how many were deleted.
    ///
    /// Oldest first, each segment's index files, then its `.log`, then a
    /// directory sync before the next segment: a crash part-way leaves a
    /// log that starts later, never a hole (metadata reaches the disk in
    /// any order between syncs), and recovery rebuilds any index it lacks.
    pub async fn delete_segments_before(&self, offset: Offset) -> Result<usize, StorageError> {
        // Not while the cleaner swaps a segment in.
        let _turn = take_turn(
            &self.segments_turn,
            "waiting to delete segments of",
            &self.dir,
        )
        .await?;
        let _indexing =
            take_turn(&self.index_turn, "waiting to delete segments of", &self.dir).await?;
        self.remove_merged_away().await?;
        let (doomed, evicted): (Vec<Segment>, Vec<Bytes>) = {
            let mut state = self.state.borrow_mut();
            let mut doomed = Vec::new();
            while state.segments.len() > 1 {
                let Some(first) = state.segments.values().next() else {
                    break;
                };
                let deletable = first.closed
                    && first.trimmed
                    && first.staged.is_empty()
                    && first.durable_bytes == first.size_bytes
                    && first.next_offset <= offset
                    && first.next_offset <= state.high_watermark;
                if !deletable {
                    break;
                }
                if let Some((_, segment)) = state.segments.pop_first() {
                    doomed.push(segment);
                }
            }
            if let Some(first) = state.segments.keys().next().copied() {
                state.log_start = state.log_start.max(first);
            }
            let log_start = state.log_start;
            let evicted = self.evict_tail_below(&mut state, log_start);
            (doomed, evicted)
        };
        free_in_steps(evicted).await;
        if doomed.is_empty() {
            return Ok(0);
        }
        let count = doomed.len();
        let files: Vec<[PathBuf; 3]> = doomed
            .iter()
            .map(|s| [s.index_path(), s.time_index_path(), s.log_path.clone()])
            .collect();
        // Reads in flight keep their own handles on the files.
        drop(doomed);
        for paths in files {
            let held = glommio::executor()
                .spawn_blocking(move || remove_files(&paths))
                .await?;
            release_later(held);
            self.sync_before_removal().await?;
        }
        Ok(count)
    }

    /// Removes the `.log` files of segments the cleaner merged away (see
    /// `merged_away`), oldest first, after a directory sync (the rename
    /// that put the merged segment in their place must be on disk first),
    /// and with a sync after each: a crash leaves only the oldest of them
    /// removed, which recovery reads right (it cuts the merged segment at
    /// the first one left; with a later one removed and an earlier one left,
    /// the later one's records would be nowhere). Fails, removing nothing,
    /// once a sync failed (`removals_stuck`). Call with `segments_turn`
    /// held, before any other rename or removal.
    async fn remove_merged_away(&self) -> Result<(), StorageError> {
        self.check_removals_unstuck()?;
        if self.merged_away.borrow().is_empty() {
            return Ok(());
        }
        self.sync_before_removal().await?;
        loop {
            let Some(path) = self.merged_away.borrow().first().cloned() else {
                return Ok(());
            };
            let removing = [path.clone()];
            let held = glommio::executor()
                .spawn_blocking(move || remove_files(&removing))
                .await?;
            release_later(held);
            self.sync_before_removal().await?;
            self.merged_away.borrow_mut().remove(0);
        }
    }

    fn check_removals_unstuck(&self) -> Result<(), StorageError> {
        if self.removals_stuck.get() {
            return Err(StorageError::SyncFailedBefore {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Syncs the log directory, so the renames and removals before are on
    /// disk before the next removal; a failed sync (not a failed open)
    /// stops removals, see `removals_stuck`.
    async fn sync_before_removal(&self) -> Result<(), StorageError> {
        let directory = open_dir(&self.dir).await?;
        let synced = directory
            .sync()
            .await
            .map_err(StorageError::glommio("syncing directory", &self.dir));
        if synced.is_err() {
            self.removals_stuck.set(true);
        }
        synced
    }

    /// The cached batches of the segment `[base, next)` of `size` bytes,
    /// when the tail cache holds all of them (each a clone of the cached
    /// buffer); `None` otherwise.
    fn cached_segment(&self, base: Offset, next: Offset, size: u64) -> Option<Vec<Bytes>> {
        let batches = self.read_cached(base, usize::MAX, next)?;
        let starts_at_base = batches
            .first()
            .and_then(|first| BatchHeader::parse(first))
            .is_some_and(|header| header.base_offset == base.0);
        let total: u64 = batches.iter().map(|batch| batch.len() as u64).sum();
        // The same bytes as the file's (a rewritten segment's batches are
        // never cached: its swap evicts them).
        (starts_at_base && total == size).then_some(batches)
    }

    /// Takes the cached batches that end below `offset` out of the cache
    /// and gives their bytes back to the budget. The caller frees them
    /// with [`free_in_steps`]: a segment's worth is thousands of buffers.
    #[must_use = "free the evicted batches with free_in_steps"]
    fn evict_tail_below(&self, state: &mut LogState, offset: Offset) -> Vec<Bytes> {
        let below = state
            .tail
            .iter()
            .take_while(|batch| batch.last_offset < offset)
            .count();
        let evicted: Vec<Bytes> = state.tail.drain(..below).map(|b| b.bytes).collect();
        let freed: usize = evicted.iter().map(Bytes::len).sum();
        let used = self.cache.used_bytes.get().saturating_sub(freed);
        self.cache.used_bytes.set(used);
        evicted
    }

    /// Drops the oldest cached batch and gives its bytes back to the budget.
    fn drop_oldest_cached(&self, state: &mut LogState) {
        if let Some(batch) = state.tail.pop_front() {
            let used = self
                .cache
                .used_bytes
                .get()
                .saturating_sub(batch.bytes.len());
            self.cache.used_bytes.set(used);
        }
    }

    fn has_untrimmed_segments(&self) -> bool {
        self.state
            .borrow()
            .segments
            .values()
            .any(|s| s.closed && !s.trimmed)
    }

    /// Clean shutdown: flush, then write the active segment's indexes so a
    /// restart finds them.
    pub async fn close(&self) -> Result<(), StorageError> {
        // A group-commit round may still be flushing this log: let it end.
        while self.flushing.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        if self.is_dirty() || self.has_untrimmed_segments() {
            self.flush().await?;
        }
        // A relaxed policy's written bytes are synced before the log closes,
        // after any timed sync still running.
        let turn = take_turn(&self.io_turn, "waiting for the timed sync of", &self.dir).await?;
        self.sync_remembered(self.unsynced_records.get()).await?;
        drop(turn);
        self.write_missing_indexes().await?;
        let active = {
            let state = self.state.borrow();
            state
                .segments
                .values()
                .last()
                .filter(|s| s.file.is_some())
                .map(|s| {
                    let mut time_index = s.time_index.clone();
                    if let Some((timestamp, offset)) = s.max_timestamp {
                        time_index.maybe_append(timestamp, s.relative(offset));
                    }
                    (
                        s.index_path(),
                        s.index.encode(),
                        s.time_index_path(),
                        time_index.encode(),
                    )
                })
        };
        if let Some((index_path, index, time_path, time_index)) = active {
            write_index_files(
                self.dir.clone(),
                vec![(index_path, index), (time_path, time_index)],
            )
            .await?;
        }
        Ok(())
    }
}

impl Drop for PartitionLog {
    /// Gives this log's cached bytes back to the shard's budget.
    fn drop(&mut self) {
        let cached: usize = self
            .state
            .get_mut()
            .tail
            .iter()
            .map(|b| b.bytes.len())
            .sum();
        let used = self.cache.used_bytes.get().saturating_sub(cached);
        self.cache.used_bytes.set(used);
    }
}

/// Kafka's `LogSegment.shouldRoll`: the one place that decides a roll.
fn should_roll(
    config: &LogConfig,
    active: &Segment,
    batch_bytes: usize,
    last_offset: Offset,
    now_ms: i64,
) -> bool {
    if active.size_bytes == 0 {
        return false;
    }
    let aged = active
        .first_append_ms
        .is_some_and(|first| now_ms.saturating_sub(first) > config.segment_ms);
    let new_size_bytes = active.size_bytes + batch_bytes as u64;
    let full = new_size_bytes > config.segment_bytes;
    let index_full =
        active.index.size_bytes() + offset_index::ENTRY_BYTES as u64 > config.segment_index_bytes;
    let time_index_full = active.time_index.size_bytes() + time_index::ENTRY_BYTES as u64
        > config.segment_index_bytes;
    // Index entries hold 4-byte relative offsets and file positions.
    let offset_overflow = last_offset.0 - active.base_offset.0 > i64::from(i32::MAX);
    let position_overflow = new_size_bytes > u64::from(u32::MAX);
    full || aged || index_full || time_index_full || offset_overflow || position_overflow
}

fn first_record_at_or_after(
    header: &BatchHeader,
    bytes: &[u8],
    timestamp_ms: i64,
) -> Option<TimestampHit> {
    let whole_batch = TimestampHit {
        offset: Offset(header.base_offset),
        timestamp_ms: header.max_timestamp,
    };
    if header.is_compressed() {
        return Some(whole_batch);
    }
    // Records that do not parse are answered at batch level, like a
    // compressed batch: the header's max timestamp says the batch matches.
    let Some(deltas) = batch::record_deltas(bytes) else {
        return Some(whole_batch);
    };
    deltas
        .into_iter()
        .find_map(|(offset_delta, timestamp_delta)| {
            let timestamp = header.base_timestamp + timestamp_delta;
            (timestamp >= timestamp_ms).then_some(TimestampHit {
                offset: Offset(header.base_offset + offset_delta),
                timestamp_ms: timestamp,
            })
        })
}

thread_local! {
    static POLLED_IO_PROBED: Cell<bool> = const { Cell::new(false) };
}

/// glommio decides, once per thread and device, whether reads may use the
/// polled io_uring ring, by reading the first block of the first DMA file it
/// opens there. If that file is empty the read "succeeds" at end of file and
/// glommio wrongly enables polled reads, which then fail with EOPNOTSUPP on
/// devices without polling. So before any segment is opened, let it probe a
/// file that has a block of data.
async fn probe_polled_io(dir: &Path) -> Result<(), StorageError> {
    if POLLED_IO_PROBED.with(Cell::get) {
        return Ok(());
    }
    let path = dir.join(
        format!(".tidelog-io-probe-{:?}", std::thread::current().id()).replace(['(', ')'], ""),
    );
    // Written and synced, so the block is allocated on the device: a read
    // of a hole or of cached pages would not reach the device's queue.
    std::fs::File::create(&path)
        .and_then(|mut file| {
            use std::io::Write;
            use std::os::fd::AsRawFd;
            file.write_all(&[0x5a; segment::BLOCK_BYTES as usize])?;
            file.sync_all()?;
            // Drop the cached pages too, so the probe's direct read goes to
            // the device rather than being answered from memory.
            // SAFETY: fadvise on a descriptor we own; it only takes a hint.
            let rc =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::from_raw_os_error(rc))
            }
        })
        .map_err(StorageError::io("writing", &path))?;
    let opened = DmaFile::open(&path)
        .await
        .map_err(StorageError::glommio("opening", &path));
    let removed = std::fs::remove_file(&path).map_err(StorageError::io("removing", &path));
    let file = opened?;
    removed?;
    file.close()
        .await
        .map_err(StorageError::glommio("closing", &path))?;
    POLLED_IO_PROBED.with(|probed| probed.set(true));
    Ok(())
}

async fn create_segment_file(path: &Path) -> Result<DmaFile, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await
        .map_err(StorageError::glommio("creating", path))
}

/// Writes an aligned, padded buffer at the aligned position `position`.
async fn write_block_aligned(
    file: &DmaFile,
    path: &Path,
    position: u64,
    buffer: DmaBuffer,
) -> Result<(), StorageError> {
    assert_eq!(
        position % segment::BLOCK_BYTES,
        0,
        "O_DIRECT writes start on a block"
    );
    let length = buffer.len();
    let written = file
        .write_at(buffer, position)
        .await
        .map_err(StorageError::glommio("writing", path))?;
    if written != length {
        return Err(StorageError::Io {
            op: "writing (short write)",
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("{written} of {length} bytes"),
            ),
        });
    }
    Ok(())
}

/// The file that keeps a log start moved by DeleteRecords: the offset in
/// decimal ASCII, replaced atomically.
pub const LOG_START_CHECKPOINT: &str = "log-start-offset";

/// An offset checkpoint file of the log directory (`LOG_START_CHECKPOINT`,
/// `CLEANER_CHECKPOINT`); `None` when there is none or it does not parse.
async fn read_offset_checkpoint(dir: &Path, name: &str) -> Result<Option<Offset>, StorageError> {
    let path = dir.join(name);
    glommio::executor()
        .spawn_blocking(move || match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse::<i64>().ok().map(Offset)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("reading", path)(e)),
        })
        .await
}

/// Replaces an offset checkpoint file of the log directory atomically and
/// durably (read back by [`read_offset_checkpoint`]).
pub(super) async fn write_offset_checkpoint(
    dir: &Path,
    name: &str,
    offset: Offset,
) -> Result<(), StorageError> {
    write_index_files(
        dir.to_path_buf(),
        vec![(dir.join(name), offset.0.to_string().into_bytes())],
    )
    .await
}

/// Removes each file that exists (blocking: for glommio's blocking pool),
/// returning a handle on each, opened just before, for [`release_later`].
fn remove_files(paths: &[PathBuf]) -> Result<Vec<std::fs::File>, StorageError> {
    let mut held = Vec::new();
    for path in paths {
        held.extend(std::fs::File::open(path).ok());
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("removing", path)(e)),
        }
    }
    Ok(held)
}

/// How long [`release_later`] holds a removed file open: longer than any
/// read or cleaner pass that still holds the shard's own handle on it.
const REMOVED_FILE_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// Cached batches freed at once between two yields. Freeing a segment's
/// worth of cached batches (about 3,000) in one go held a shard for about
/// 1 ms, long enough to show in produce p99 while the cleaner worked; 256
/// at a time still held it 0.12-0.28 ms (perf/RESULTS.md, 2026-12-07).
const FREE_PER_STEP: usize = 64;

/// Frees `batches` [`FREE_PER_STEP`] at a time, letting the shard's other
/// task queues (produce, fetch) run between.
pub(super) async fn free_in_steps(mut batches: Vec<Bytes>) {
    while batches.len() > FREE_PER_STEP {
        batches.truncate(batches.len() - FREE_PER_STEP);
        glommio::executor().yield_task_queue_now().await;
    }
}

/// Closes `held` (handles on files that were unlinked or renamed over) on
/// the blocking pool after [`REMOVED_FILE_HOLD`], so the last close of each
/// is not the shard's: that close frees the file's blocks, and with the
/// `discard` mount option ext4 issues the discards right then and waits
/// for them, stalling the thread that closes (measured: a shard stalled
/// 3 ms or more 2.2 times a second while compacting, against 0.2).
fn release_later(held: Vec<std::fs::File>) {
    if held.is_empty() {
        return;
    }
    glommio::spawn_local(async move {
        glommio::timer::sleep(REMOVED_FILE_HOLD).await;
        glommio::executor().spawn_blocking(move || drop(held)).await;
    })
    .detach();
}

async fn open_dir(dir: &Path) -> Result<glommio::io::Directory, StorageError> {
    glommio::io::Directory::open(dir)
        .await
        .map_err(StorageError::glommio("opening directory", dir))
}

pub(super) async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let directory = open_dir(dir).await?;
    directory
        .sync()
        .await
        .map_err(StorageError::glommio("syncing directory", dir))
}

/// Replaces index files atomically and durably: each is written to a
/// temporary name and synced, then renamed over the old one, then the
/// directory is synced. A crash leaves the old file or the new one, never a
/// half-written one (recovery removes stray temporary files). Blocking
/// std I/O on glommio's blocking thread pool; index files are small and
/// written once per segment roll.
pub(super) async fn write_index_files(
    dir: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
) -> Result<(), StorageError> {
    glommio::executor()
        .spawn_blocking(move || -> Result<(), StorageError> {
            use std::io::Write;
            for (path, bytes) in &files {
                let mut temporary = path.clone().into_os_string();
                temporary.push(".");
                temporary.push(recovery::TEMPORARY_SUFFIX);
                let temporary = PathBuf::from(temporary);
                std::fs::File::create(&temporary)
                    .and_then(|mut file| {
                        file.write_all(bytes)?;
                        file.sync_all()
                    })
                    .map_err(StorageError::io("writing", &temporary))?;
                std::fs::rename(&temporary, path).map_err(StorageError::io("renaming", path))?;
            }
            std::fs::File::open(&dir)
                .and_then(|directory| directory.sync_all())
                .map_err(StorageError::io("syncing directory", &dir))
        })
        .await
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use futures_lite::future;

    use super::*;
    use crate::storage::batch::{ATTRIBUTES_OFFSET, CRC_OFFSET, encode_test_batch};
    use crate::storage::test_support::{
        Rng, assigned, fill, numbered_batch, open, open_with_cache, read_all, read_all_batches,
        run, small_segments,
    };

    #[test]
    fn append_assigns_offsets_and_reads_return_the_assigned_bytes() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            let a = encode_test_batch(&[b"a", b"b", b"c"], 100);
            let b = encode_test_batch(&[b"d"], 200);
            let info = log.append(&a, 0).expect("append");
            assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(2)));
            assert_eq!((info.batch_count, info.size_bytes), (1, a.len()));
            assert_eq!(info.max_timestamp, 102);
            let info = log.append(&b, 0).expect("append");
            assert_eq!((info.base_offset, info.last_offset), (Offset(3), Offset(3)));
            assert!(log.is_dirty());
            assert_eq!(log.log_end_offset(), Offset(4));
            assert_eq!(log.high_watermark(), Offset(0), "nothing durable yet");
            assert!(
                log.read(Offset(0), 1 << 20)
                    .await
                    .expect("read")
                    .batches
                    .is_empty()
            );
            assert_eq!(log.flush().await.expect("flush"), Offset(4));
            assert!(!log.is_dirty());
            let expected = assigned(&[a, b], Offset(0));
            let outcome = log.read(Offset(0), 1 << 20).await.expect("read");
            assert_eq!(outcome.batches, expected, "from the tail cache");
            assert_eq!(
                (outcome.high_watermark, outcome.log_start_offset),
                (Offset(4), Offset(0))
            );
            assert_eq!(
                log.read(Offset(3), 1 << 20).await.expect("read").batches,
                expected[1..]
            );
            log.close().await.expect("close");
            drop(log);
            let log = open(&dir, LogConfig::default()).await;
            let outcome = log.read(Offset(1), 1 << 20).await.expect("read");
            assert_eq!(outcome.batches, expected, "from disk");
        });
    }

    #[test]
    fn round_trip_across_segments_and_reopen() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            let produced = fill(&log, 40, 1_000).await;
            assert_eq!(log.high_watermark(), Offset(80));
            let expected: Vec<i64> = (0..40).map(|i| i * 2).collect();
            assert_eq!(read_all(&log).await, expected);
            log.close().await.expect("close");
            drop(log);
            let logs = crate::storage::test_support::files_with(&dir, "log");
            assert!(
                logs.len() >= 4,
                "small segments roll: {} segments",
                logs.len()
            );
            for (position, path) in logs.iter().enumerate() {
                // Closed segments are cut to their batches; the active one
                // may end in zero padding.
                if position + 1 < logs.len() {
                    assert!(std::fs::metadata(path).expect("stat").len() <= 1000);
                }
                assert!(path.with_extension("index").exists(), "{}", path.display());
                assert!(path.with_extension("timeindex").exists());
            }

            let log = open(&dir, small_segments()).await;
            assert_eq!(log.log_end_offset(), Offset(80));
            assert_eq!(read_all_batches(&log).await, assigned(&produced, Offset(0)));
            fill(&log, 5, 5_000).await;
            assert_eq!(log.high_watermark(), Offset(90));
            assert_eq!(read_all(&log).await.len(), 45);
        });
    }

    #[test]
    fn old_segments_are_deleted_as_a_prefix_and_stay_deleted() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            fill(&log, 40, 1_000).await;
            let before = log.segment_count();
            assert!(before >= 4, "{before} segments");
            // Nothing below the first segment's end: nothing goes.
            assert_eq!(
                log.delete_segments_before(Offset(1)).await.expect("delete"),
                0
            );
            let deleted = log
                .delete_segments_before(Offset(40))
                .await
                .expect("delete");
            assert!(deleted >= 1, "some segments wholly below 40");
            let start = log.log_start_offset();
            assert!(start > Offset(0) && start <= Offset(40), "{start:?}");
            assert_eq!(log.segment_count(), before - deleted);
            assert!(matches!(
                log.read(Offset(0), 1 << 20).await,
                Err(StorageError::OffsetOutOfRange { .. })
            ));
            let rest = read_all(&log).await;
            assert_eq!(rest.first().copied(), Some(start.0));
            assert_eq!(rest.last().copied(), Some(78));
            // The active segment always stays.
            log.delete_segments_before(Offset(1_000))
                .await
                .expect("delete");
            assert!(log.segment_count() >= 1);
            let start = log.log_start_offset();
            log.close().await.expect("close");
            drop(log);
            let log = open(&dir, small_segments()).await;
            assert_eq!(
                log.log_start_offset(),
                start,
                "the deletion survives a restart"
            );
            assert_eq!(log.log_end_offset(), Offset(80));
        });
    }

    #[test]
    fn a_relaxed_flush_policy_syncs_by_count_and_time() {
        run(|dir| async move {
            // The default is durable: every flush round syncs.
            let log = open(&dir.join("durable"), LogConfig::default()).await;
            log.append(&encode_test_batch(&[b"a"], 1), 1)
                .expect("append");
            log.flush().await.expect("flush");
            assert!(!log.has_unsynced());
            log.append(&encode_test_batch(&[b"b"], 2), 2)
                .expect("append");
            log.flush().await.expect("flush");
            assert!(!log.has_unsynced(), "a second round syncs too");

            let relaxed = LogConfig {
                flush_messages: 5,
                flush_ms: i64::MAX,
                ..LogConfig::default()
            };
            let log = open(&dir.join("relaxed"), relaxed).await;
            log.append(&encode_test_batch(&[b"a", b"b"], 1), 1)
                .expect("append");
            log.flush().await.expect("flush");
            assert_eq!(log.high_watermark(), Offset(2), "written and readable");
            assert!(log.has_unsynced(), "2 of 5 records: no sync yet");
            assert!(
                !log.sync_if_due(crate::types::now_ms())
                    .await
                    .expect("timer")
            );
            log.append(&encode_test_batch(&[b"c", b"d", b"e"], 2), 2)
                .expect("append");
            log.flush().await.expect("flush");
            assert!(!log.has_unsynced(), "5 records: synced");

            log.set_config(LogConfig {
                flush_ms: 50,
                ..relaxed
            });
            log.append(&encode_test_batch(&[b"f"], 3), 3)
                .expect("append");
            log.flush().await.expect("flush");
            assert!(log.has_unsynced());
            let later = crate::types::now_ms() + 100;
            assert!(
                log.sync_if_due(later).await.expect("timer"),
                "flush.ms passed"
            );
            assert!(!log.has_unsynced());
            log.append(&encode_test_batch(&[b"g"], 4), 4)
                .expect("append");
            log.set_config(relaxed);
            log.flush().await.expect("flush");
            assert!(log.has_unsynced());
            log.close().await.expect("close");
            assert!(!log.has_unsynced(), "close syncs");
        });
    }

    #[test]
    fn a_flush_waits_for_a_timed_sync_of_the_same_log() {
        run(|dir| async move {
            let relaxed = LogConfig {
                flush_messages: 10_000,
                flush_ms: 5,
                ..LogConfig::default()
            };
            let log = Rc::new(open(&dir, relaxed).await);
            let mut timed_syncs = 0;
            for round in 0..50 {
                // Written, not synced: the timer has work.
                log.append(&encode_test_batch(&[b"x"], round), round)
                    .expect("append");
                log.flush().await.expect("flush");
                log.append(&encode_test_batch(&[b"y"], round), round)
                    .expect("append");
                // The timer's sync starts first; a group-commit flush of the
                // same log arrives while it waits on fdatasync.
                let timer = {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        log.sync_if_due(crate::types::now_ms() + 1_000).await
                    })
                };
                future::yield_now().await;
                log.flush().await.expect("flush");
                timed_syncs += usize::from(timer.await.expect("timed sync"));
            }
            assert!(timed_syncs > 0, "the timer synced while flushes ran");
            assert_eq!(log.high_watermark(), Offset(100));
            log.close().await.expect("close");
        });
    }

    #[test]
    fn reads_follow_kafka() {
        run(|dir| async move {
            // A tiny cache: reads come from disk.
            let log = open_with_cache(&dir, small_segments(), 0).await;
            let produced = fill(&log, 40, 1_000).await;
            let out_of_range = |result: Result<ReadOutcome, StorageError>| {
                matches!(result, Err(StorageError::OffsetOutOfRange { .. }))
            };
            assert!(out_of_range(log.read(Offset(-1), 100).await));
            assert!(out_of_range(log.read(Offset(81), 100).await));
            let at_end = log.read(Offset(80), 100).await.expect("at hw");
            assert!(at_end.batches.is_empty());
            assert_eq!(at_end.high_watermark, Offset(80));
            // (offset, max_bytes, batches returned): whole batches only, at
            // least one, never more than max_bytes past the first.
            let size = produced[0].len();
            let cases = [
                (3, 1, 1),
                (3, size, 1),
                (3, 2 * size - 1, 1),
                (3, 2 * size, 2),
                (0, 5 * size, 5),
                (78, 1 << 20, 1),
                (79, 1 << 20, 1),
            ];
            for (offset, max_bytes, count) in cases {
                let outcome = log.read(Offset(offset), max_bytes).await.expect("read");
                assert_eq!(outcome.batches.len(), count, "read({offset}, {max_bytes})");
                let first = BatchHeader::parse(&outcome.batches[0]).expect("header");
                assert!(first.base_offset <= offset && offset <= first.last_offset());
            }
            // Segments hold 10 batches: a read stops at a segment's end
            // and the next one goes on in the next segment.
            let whole = log.read(Offset(0), 1 << 20).await.expect("read");
            assert!(whole.batches.len() < 40);
            assert_eq!(
                whole.batches,
                assigned(&produced, Offset(0))[..whole.batches.len()]
            );
        });
    }

    #[test]
    fn rejected_batches_stage_nothing() {
        run(|dir| async move {
            let config = LogConfig {
                max_message_bytes: 200,
                ..LogConfig::default()
            };
            let log = open(&dir, config).await;
            let good = encode_test_batch(&[b"ok"], 1);
            let mut corrupt = BytesMut::from(&good[..]);
            let last = corrupt.len() - 1;
            corrupt[last] ^= 1;
            let big = encode_test_batch(&[&[7u8; 300]], 1);
            let mut two = BytesMut::from(&good[..]);
            two.extend_from_slice(&good);
            assert!(matches!(
                log.append(&corrupt.freeze(), 0),
                Err(StorageError::CorruptMessage(_))
            ));
            assert!(matches!(
                log.append(&big, 0),
                Err(StorageError::MessageTooLarge { max: 200, .. })
            ));
            assert!(matches!(
                log.append(&two.freeze(), 0),
                Err(StorageError::InvalidRecord(_))
            ));
            assert_eq!(log.log_end_offset(), Offset(0));
            assert!(!log.is_dirty());
            assert_eq!(log.cache.used_bytes(), 0);
            log.append(&good, 0).expect("good batch");
            assert_eq!(log.log_end_offset(), Offset(1));
        });
    }

    #[test]
    fn appends_during_a_flush_go_to_the_next_flush() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            let mut produced = Vec::new();
            for round in 0..6 {
                for i in 0..3 {
                    produced.push(numbered_batch(round * 3 + i, 1_000));
                    log.append(produced.last().expect("batch"), 0)
                        .expect("append");
                }
                let target = log.log_end_offset();
                let mut flush = Box::pin(log.flush());
                // Let the flush take its snapshot and start its I/O ...
                assert!(future::poll_once(&mut flush).await.is_none());
                // ... then append more (rolling segments now and then).
                for i in 0..2 {
                    produced.push(numbered_batch(100 + round * 2 + i, 1_000));
                    log.append(produced.last().expect("batch"), 0)
                        .expect("append");
                }
                assert_eq!(flush.await.expect("flush"), target);
                assert!(log.is_dirty());
            }
            log.flush().await.expect("flush");
            let expected = assigned(&produced, Offset(0));
            assert_eq!(read_all_batches(&log).await, expected);
            drop(log);
            let log = open(&dir, small_segments()).await;
            assert_eq!(read_all_batches(&log).await, expected, "durable, once each");
        });
    }

    #[test]
    fn a_cancelled_flush_does_not_wedge_the_log() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            let produced = vec![numbered_batch(0, 1_000), numbered_batch(1, 1_000)];
            log.append(&produced[0], 0).expect("append");
            {
                let mut flush = Box::pin(log.flush());
                assert!(future::poll_once(&mut flush).await.is_none());
            }
            log.append(&produced[1], 0).expect("append");
            assert_eq!(log.flush().await.expect("flush"), Offset(4));
            drop(log);
            let log = open(&dir, LogConfig::default()).await;
            assert_eq!(read_all_batches(&log).await, assigned(&produced, Offset(0)));
        });
    }

    #[test]
    fn deleted_segments_give_their_cached_bytes_back() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            let produced = fill(&log, 600, 1_000).await;
            let all: usize = produced.iter().map(Bytes::len).sum();
            assert_eq!(log.cache.used_bytes(), all, "every batch cached");
            let end = log.log_end_offset();
            let deleted = log
                .delete_segments_before(Offset(end.0 - 100))
                .await
                .expect("delete");
            assert!(deleted > 1, "{deleted} segments deleted");
            let start = log.log_start_offset();
            let (gone, left): (Vec<Bytes>, Vec<Bytes>) = assigned(&produced, Offset(0))
                .into_iter()
                .partition(|b| BatchHeader::parse(b).expect("header").base_offset < start.0);
            // More batches than are freed between two yields.
            assert!(gone.len() > FREE_PER_STEP, "{} batches deleted", gone.len());
            let rest = read_all_batches(&log).await;
            assert_eq!(rest, left);
            let kept: usize = rest.iter().map(Bytes::len).sum();
            assert_eq!(log.cache.used_bytes(), kept, "only the rest cached");
            assert_eq!(log.state.borrow().tail.len(), rest.len());
        });
    }

    #[test]
    fn the_tail_cache_keeps_to_its_budget() {
        run(|dir| async move {
            let budget = CacheBudget::new(1_000);
            let open_log = |name: &str| {
                PartitionLog::open(dir.join(name), LogConfig::default(), budget.clone())
            };
            let first = open_log("a").await.expect("open");
            let second = open_log("b").await.expect("open");
            let produced = fill(&first, 30, 1_000).await;
            fill(&second, 30, 1_000).await;
            assert!(budget.used_bytes() <= 1_000, "{}", budget.used_bytes());
            // Evicted batches come from disk, unchanged.
            assert_eq!(
                read_all_batches(&first).await,
                assigned(&produced, Offset(0))
            );
            // Unflushed batches are never evicted (they are not on disk).
            for i in 0..30 {
                second.append(&numbered_batch(i, 1_000), 0).expect("append");
            }
            assert!(budget.used_bytes() > 1_000);
            second.flush().await.expect("flush");
            second.append(&numbered_batch(0, 1_000), 0).expect("append");
            assert!(budget.used_bytes() <= 1_000 + produced[0].len());
            drop(first);
            drop(second);
            assert_eq!(budget.used_bytes(), 0, "a dropped log gives its bytes back");
        });
    }

    #[test]
    fn timestamps_follow_list_offsets() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            fill(&log, 40, 1_000).await;
            // Batch i has records at 1000 + 10 i and 1001 + 10 i; then a
            // compressed batch (answered at batch level) with 2000..=2001.
            let mut compressed = BytesMut::from(&encode_test_batch(&[b"x", b"y"], 2_000)[..]);
            compressed[ATTRIBUTES_OFFSET + 1] |= 1; // gzip, never decompressed
            let crc = crc32c::crc32c(&compressed[ATTRIBUTES_OFFSET..]);
            compressed[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
            log.append(&compressed.freeze(), 0).expect("append");
            assert_eq!(
                log.max_timestamp().expect("max").timestamp_ms,
                1_391,
                "durable only"
            );
            log.flush().await.expect("flush");
            let cases = [
                (i64::MIN, Some((0, 1_000))),
                (1_000, Some((0, 1_000))),
                (1_001, Some((1, 1_001))),
                (1_002, Some((2, 1_010))),
                (1_205, Some((42, 1_210))),
                (1_391, Some((79, 1_391))),
                (1_392, Some((80, 2_001))),
                (2_001, Some((80, 2_001))),
                (2_002, None),
            ];
            for (timestamp, expected) in cases {
                let hit = log.offset_for_timestamp(timestamp).await.expect("lookup");
                let hit = hit.map(|h| (h.offset.0, h.timestamp_ms));
                assert_eq!(hit, expected, "{timestamp}");
            }
            let max = log.max_timestamp().expect("max");
            assert_eq!((max.offset, max.timestamp_ms), (Offset(81), 2_001));
        });
    }

    #[test]
    fn should_roll_table() {
        let config = LogConfig {
            segment_bytes: 1000,
            segment_index_bytes: 16,
            ..LogConfig::default()
        };
        let dir = Path::new("/nonexistent");
        let segment = |size_bytes: u64, index_entries: u32| {
            let mut segment = Segment::new(dir, Offset(100));
            segment.size_bytes = size_bytes;
            for i in 0..index_entries {
                segment.index.append(
                    crate::types::RelativeOffset(i),
                    crate::types::FilePosition(u64::from(i) * 10),
                );
            }
            segment
        };
        // (segment size, index entries, batch bytes, batch last offset, roll)
        let cases = [
            (0, 0, 5000, 100, false),
            (500, 0, 500, 110, false),
            (500, 0, 501, 110, true),
            (500, 1, 10, 110, false),
            (500, 2, 10, 110, true),
            (10, 0, 10, 100 + i64::from(i32::MAX), false),
            (10, 0, 10, 101 + i64::from(i32::MAX), true),
        ];
        for (size, entries, batch_bytes, last_offset, roll) in cases {
            let active = segment(size, entries);
            assert_eq!(
                should_roll(&config, &active, batch_bytes, Offset(last_offset), 0),
                roll,
                "{size} {entries} {batch_bytes} {last_offset}"
            );
        }
    }

    /// Random batch sizes, flush points, segment sizes, clean closes and
    /// crashes: whatever the history, the log holds exactly what was
    /// flushed, in order, once, readable from any offset.
    #[test]
    fn random_histories_keep_every_flushed_batch() {
        for seed in 1..=4u64 {
            run(move |dir| async move {
                let mut rng = Rng::new(seed);
                let config = LogConfig {
                    segment_bytes: 2_000 + rng.below(20_000),
                    index_interval_bytes: rng.below(5_000),
                    ..LogConfig::default()
                };
                let cache_bytes = rng.below(50_000) as usize;
                let mut log = open_with_cache(&dir, config, cache_bytes).await;
                let mut flushed: Vec<Bytes> = Vec::new();
                let mut pending: Vec<Bytes> = Vec::new();
                for step in 0..150usize {
                    let records = 1 + rng.below(5) as usize;
                    let value = vec![b'v'; rng.below(3_000) as usize];
                    let values: Vec<&[u8]> = (0..records).map(|_| &value[..]).collect();
                    let batch = encode_test_batch(&values, step as i64);
                    log.append(&batch, 0).expect("append");
                    pending.push(batch);
                    match rng.below(20) {
                        0..=4 => {
                            log.flush().await.expect("flush");
                            flushed.append(&mut pending);
                        }
                        5 => {
                            log.close().await.expect("close");
                            flushed.append(&mut pending);
                            drop(log);
                            log = open_with_cache(&dir, config, cache_bytes).await;
                        }
                        6 => {
                            // A crash: what was not flushed is gone.
                            pending.clear();
                            drop(log);
                            log = open_with_cache(&dir, config, cache_bytes).await;
                        }
                        _ => {}
                    }
                }
                log.flush().await.expect("flush");
                flushed.append(&mut pending);
                let expected = assigned(&flushed, Offset(0));
                assert_eq!(read_all_batches(&log).await, expected, "seed {seed}");
                // Random reads land on the batch holding the offset.
                let end = log.high_watermark().0;
                for _ in 0..50 {
                    let offset = rng.below(end as u64) as i64;
                    let outcome = log.read(Offset(offset), 1).await.expect("read");
                    let header = BatchHeader::parse(&outcome.batches[0]).expect("header");
                    assert!(header.base_offset <= offset && offset <= header.last_offset());
                }
            });
        }
    }

    #[test]
    fn a_scan_resumed_through_its_window_reads_each_byte_once() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            fill(&log, 300, 1_000).await;
            log.flush().await.expect("flush");
            let (file, path, size) = {
                let state = log.state.borrow();
                let segment = state.segments.values().next().expect("a segment");
                (
                    segment.file.clone().expect("open file"),
                    segment.log_path.clone(),
                    segment.durable_bytes,
                )
            };
            // A visitor that stops after every batch, as the cleaner's
            // steps stop part way through what was read.
            let mut window = segment::Window::new(16 * 1024);
            let (mut position, mut offsets) = (0, Vec::new());
            loop {
                let (at, end) = segment::scan_window(
                    &mut window,
                    &file,
                    &path,
                    position,
                    size,
                    true,
                    |_, header, _| {
                        offsets.push(header.base_offset);
                        segment::Visit::Stop
                    },
                )
                .await
                .expect("scan");
                position = at;
                if end != segment::ScanEnd::Stopped {
                    assert_eq!(end, segment::ScanEnd::Clean);
                    break;
                }
            }
            assert_eq!(offsets, (0..300).map(|i| 2 * i).collect::<Vec<i64>>());
            assert_eq!(position, size);
            // Each window read starts at a batch, so a batch cut off at the
            // end of one is read again at the start of the next: never
            // more than a batch per window.
            let windows = size.div_ceil(16 * 1024) + 1;
            assert!(
                window.bytes_read() <= size + windows * 200,
                "read {} bytes of a {size}-byte segment",
                window.bytes_read()
            );
        });
    }
}
