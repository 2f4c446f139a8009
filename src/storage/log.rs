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
use crate::types::Offset;

/// The one partition leader epoch of a single-node partition.
pub const LEADER_EPOCH: i32 = 0;

/// Per-topic storage settings (Kafka's names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: a segment rolls before it would grow past this.
    pub segment_bytes: u64,
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
            segment_bytes: 1024 * 1024 * 1024,
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
    config: LogConfig,
    cache: Rc<CacheBudget>,
    state: RefCell<LogState>,
    flushing: Cell<bool>,
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
        if let Some(parent) = dir.parent() {
            probe_polled_io(parent).await?;
        }
        let segments = recovery::recover(&dir).await?;
        let log_start = segments.keys().next().copied().unwrap_or_default();
        let next_offset = segments
            .values()
            .last()
            .map(|s| s.next_offset)
            .unwrap_or_default();
        let log = PartitionLog {
            dir,
            config,
            cache,
            state: RefCell::new(LogState {
                segments,
                log_start,
                next_offset,
                high_watermark: next_offset,
                tail: VecDeque::new(),
            }),
            flushing: Cell::new(false),
        };
        log.write_closed_indexes().await?;
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
    pub fn append(&self, records: &Bytes, _now_ms: i64) -> Result<AppendInfo, StorageError> {
        let header = batch::validate_produced(records, self.config.max_message_bytes)?;
        let mut state = self.state.borrow_mut();
        let base_offset = state.next_offset;
        let last_offset = Offset(base_offset.0 + i64::from(header.last_offset_delta));
        if should_roll(&self.config, state.active(), records.len(), last_offset) {
            let active = state.active();
            active.closed = true;
            active.seal_time_index();
            state
                .segments
                .insert(base_offset, Segment::new(&self.dir, base_offset));
        }
        let assigned = batch::assign(records, base_offset, LEADER_EPOCH);
        let assigned_header = BatchHeader {
            base_offset: base_offset.0,
            partition_leader_epoch: LEADER_EPOCH,
            ..header
        };
        state.active().stage(
            &assigned,
            &assigned_header,
            self.config.index_interval_bytes,
        );
        state.next_offset = last_offset.next();
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
            if let Some(batch) = state.tail.pop_front() {
                let used = self
                    .cache
                    .used_bytes
                    .get()
                    .saturating_sub(batch.bytes.len());
                self.cache.used_bytes.set(used);
            }
        }
    }

    /// Writes out and fdatasyncs everything staged; returns the new high
    /// watermark.
    pub async fn flush(&self) -> Result<Offset, StorageError> {
        assert!(!self.flushing.replace(true), "one flush per log at a time");
        let result = self.flush_staged().await;
        self.flushing.set(false);
        result
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
                })
                .collect();
            (jobs, state.next_offset)
        };
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
            file.fdatasync()
                .await
                .map_err(StorageError::glommio("syncing", &job.path))?;
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
                    segment.trimmed |= job.closed;
                }
            }
            state.high_watermark = state.high_watermark.max(target);
            self.evict(&mut state);
            state.high_watermark
        };
        self.write_closed_indexes().await?;
        Ok(high_watermark)
    }

    /// Writes the index files of closed, fully durable segments that lack
    /// them.
    async fn write_closed_indexes(&self) -> Result<(), StorageError> {
        let pending: Vec<IndexFiles> = self
            .state
            .borrow()
            .segments
            .values()
            .filter(|s| s.closed && !s.indexes_written && s.durable_bytes >= s.size_bytes)
            .map(|s| IndexFiles {
                base_offset: s.base_offset,
                index_path: s.index_path(),
                index: s.index.encode(),
                time_index_path: s.time_index_path(),
                time_index: s.time_index.encode(),
            })
            .collect();
        for files in pending {
            write_file(files.index_path, files.index).await?;
            write_file(files.time_index_path, files.time_index).await?;
            if let Some(segment) = self.state.borrow_mut().segments.get_mut(&files.base_offset) {
                segment.indexes_written = true;
            }
        }
        Ok(())
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
                        s.base_offset,
                        file,
                        s.log_path.clone(),
                        position,
                        s.durable_bytes,
                    ))
                })
            };
            let Some((base_offset, file, path, position, end)) = location else {
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
            // Nothing here at or after `offset`: try the next segment.
            let next = self
                .state
                .borrow()
                .segments
                .range(base_offset.next()..)
                .next()
                .map(|(base, _)| *base);
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

    /// The largest timestamp below the high watermark (batch level: the
    /// last offset of the batch holding it).
    pub fn max_timestamp(&self) -> Option<TimestampHit> {
        let state = self.state.borrow();
        state
            .segments
            .values()
            .filter_map(|s| s.max_timestamp)
            .filter(|(_, offset)| *offset < state.high_watermark)
            .max_by_key(|(timestamp, _)| *timestamp)
            .map(|(timestamp_ms, offset)| TimestampHit {
                offset,
                timestamp_ms,
            })
    }

    /// Clean shutdown: flush, then write the active segment's indexes so a
    /// restart finds them.
    pub async fn close(&self) -> Result<(), StorageError> {
        if self.is_dirty() && !self.flushing.get() {
            self.flush().await?;
        }
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
            write_file(index_path, index).await?;
            write_file(time_path, time_index).await?;
        }
        Ok(())
    }
}

/// Kafka's `LogSegment.shouldRoll`: the one place that decides a roll.
fn should_roll(
    config: &LogConfig,
    active: &Segment,
    batch_bytes: usize,
    last_offset: Offset,
) -> bool {
    if active.size_bytes == 0 {
        return false;
    }
    let full = active.size_bytes + batch_bytes as u64 > config.segment_bytes;
    let index_full =
        active.index.size_bytes() + offset_index::ENTRY_BYTES as u64 > config.segment_index_bytes;
    let offset_overflow = last_offset.0 - active.base_offset.0 > i64::from(i32::MAX);
    full || index_full || offset_overflow
}

fn first_record_at_or_after(
    header: &BatchHeader,
    bytes: &[u8],
    timestamp_ms: i64,
) -> Option<TimestampHit> {
    if header.is_compressed() {
        return Some(TimestampHit {
            offset: Offset(header.base_offset),
            timestamp_ms: header.max_timestamp,
        });
    }
    let deltas = batch::record_deltas(bytes)?;
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

pub(super) async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let directory = glommio::io::Directory::open(dir)
        .await
        .map_err(StorageError::glommio("opening directory", dir))?;
    directory
        .sync()
        .await
        .map_err(StorageError::glommio("syncing directory", dir))
}

/// Writes a small file and makes it durable (index files).
pub(super) async fn write_file(path: PathBuf, bytes: Vec<u8>) -> Result<(), StorageError> {
    let error_path = path.clone();
    glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .await
        .map_err(StorageError::io("writing", error_path))
}
