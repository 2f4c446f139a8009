//! One segment: a `.log` file of whole record batches starting at
//! `base_offset`, its in-memory indexes, and the bytes appended to it that
//! are not on disk yet.
//!
//! Write path: `stage` keeps a reference to the batch's own `Bytes` (the
//! buffer produce assigned offsets in, the same one the tail cache holds)
//! in `staged`, the chunks from the last 4 KiB boundary at or before the
//! durable end up to the logical end. The log's flush copies them once into
//! an aligned DMA buffer, writes it at `staged_start` through O_DIRECT with
//! the last partial block padded with zeros, then fdatasyncs. After a flush
//! `staged` keeps only the last partial block, which the next flush
//! rewrites with more data after it. So a file may end in zero padding,
//! which recovery reads as "end of log".

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::DmaFile;

use super::StorageError;
use super::batch::{BatchHeader, HEADER_BYTES, LOG_OVERHEAD_BYTES};
use super::offset_index::OffsetIndex;
use super::time_index::TimeIndex;
use crate::types::{FilePosition, Offset, RelativeOffset};

/// O_DIRECT alignment of positions and sizes.
pub const BLOCK_BYTES: u64 = 4096;
/// Bytes read per I/O when scanning a segment.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

pub fn align_down(value: u64) -> u64 {
    value & !(BLOCK_BYTES - 1)
}

pub fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_BYTES - 1)
}

/// `<base offset, 20 digits>.<extension>`, Kafka's naming.
pub fn file_name(base_offset: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base_offset.0)
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: Offset,
    pub log_path: PathBuf,
    /// Open once the file exists (created by the first flush that needs it).
    pub file: Option<Rc<DmaFile>>,
    /// Logical size: every byte appended, staged or durable.
    pub size_bytes: u64,
    /// Bytes known to be on stable storage.
    pub durable_bytes: u64,
    /// The offset after this segment's last batch.
    pub next_offset: Offset,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Largest batch max-timestamp and the offset of its record (first
    /// batch wins ties), over every staged or durable batch.
    pub max_timestamp: Option<(i64, Offset)>,
    /// `max_timestamp` as of the last flush: over durable batches only.
    pub durable_max_timestamp: Option<(i64, Offset)>,
    bytes_since_index_entry: u64,
    /// File position of the first staged byte; a multiple of [`BLOCK_BYTES`].
    pub staged_start: u64,
    /// Chunks covering `staged_start..size_bytes` in order: the partial
    /// block already on disk, then every batch not yet durable.
    pub staged: Vec<Bytes>,
    /// No more appends: a newer segment follows.
    pub closed: bool,
    /// Wall-clock time of the first append in this process (`segment.ms`
    /// counts from it; a recovered segment counts from its reopening).
    pub first_append_ms: Option<i64>,
    /// The `.index`/`.timeindex` files match the segment.
    pub indexes_written: bool,
    /// A closed segment's file has been cut to its logical size (no zero
    /// padding after the last batch).
    pub trimmed: bool,
}

impl Segment {
    pub fn new(dir: &Path, base_offset: Offset) -> Segment {
        Segment {
            base_offset,
            log_path: dir.join(file_name(base_offset, "log")),
            file: None,
            size_bytes: 0,
            durable_bytes: 0,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: None,
            durable_max_timestamp: None,
            bytes_since_index_entry: 0,
            staged_start: 0,
            staged: Vec::new(),
            closed: false,
            first_append_ms: None,
            indexes_written: false,
            trimmed: false,
        }
    }

    pub fn index_path(&self) -> PathBuf {
        self.log_path.with_extension("index")
    }

    pub fn time_index_path(&self) -> PathBuf {
        self.log_path.with_extension("timeindex")
    }

    pub fn relative(&self, offset: Offset) -> RelativeOffset {
        let delta = (offset.0 - self.base_offset.0).clamp(0, i64::from(u32::MAX));
        RelativeOffset(delta as u32)
    }

    /// Accounts for a batch at `position` in the indexes (Kafka style: an
    /// entry once more than `index_interval_bytes` went by unindexed).
    pub fn index_batch(
        &mut self,
        header: &BatchHeader,
        batch: &[u8],
        position: u64,
        index_interval_bytes: u64,
    ) {
        let last = Offset(header.last_offset());
        if self.bytes_since_index_entry > index_interval_bytes {
            self.index
                .append(self.relative(last), FilePosition(position));
            self.bytes_since_index_entry = 0;
            if let Some((timestamp, offset)) = self.max_timestamp {
                self.time_index
                    .maybe_append(timestamp, self.relative(offset));
            }
        }
        self.bytes_since_index_entry += header.size_bytes() as u64;
        if self
            .max_timestamp
            .is_none_or(|(t, _)| header.max_timestamp > t)
        {
            let offset = Offset(super::batch::offset_of_max_timestamp(header, batch));
            self.max_timestamp = Some((header.max_timestamp, offset));
        }
        self.next_offset = last.next();
    }

    /// Appends a whole batch (offsets already assigned) to the staged
    /// chunks, by reference.
    pub fn stage(&mut self, batch: &Bytes, header: &BatchHeader, index_interval_bytes: u64) {
        let position = self.size_bytes;
        self.index_batch(header, batch, position, index_interval_bytes);
        self.staged.push(batch.clone());
        self.size_bytes += batch.len() as u64;
    }

    /// Bytes staged (from `staged_start`).
    pub fn staged_len(&self) -> usize {
        self.staged.iter().map(Bytes::len).sum()
    }

    /// Copies the staged chunks into `target` (at least `staged_len` long).
    pub fn copy_staged(&self, target: &mut [u8]) {
        let mut at = 0;
        for chunk in &self.staged {
            target[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len();
        }
    }

    /// The final time index entry, made when the segment closes.
    pub fn seal_time_index(&mut self) {
        if let Some((timestamp, offset)) = self.max_timestamp {
            self.time_index
                .maybe_append(timestamp, self.relative(offset));
        }
    }

    /// After a flush made `[.., durable_end)` durable: keep only what the
    /// next flush must (re)write, from the last block boundary on.
    pub fn flushed(&mut self, durable_end: u64) {
        self.durable_bytes = self.durable_bytes.max(durable_end);
        let keep_from = align_down(self.durable_bytes);
        if keep_from <= self.staged_start {
            return;
        }
        let mut drop_bytes = usize::try_from(keep_from - self.staged_start).unwrap_or(usize::MAX);
        let mut kept = Vec::with_capacity(self.staged.len());
        for chunk in self.staged.drain(..) {
            if drop_bytes >= chunk.len() {
                drop_bytes -= chunk.len();
            } else {
                kept.push(chunk.slice(drop_bytes..));
                drop_bytes = 0;
            }
        }
        self.staged = kept;
        self.staged_start = keep_from;
    }
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every batch up to the end (or zero padding) was whole and valid.
    Clean,
    /// The batch at this position runs past the end of the data.
    Torn,
    /// The batch at this position is not a valid batch.
    Invalid(String),
    /// The visitor asked to stop.
    Stopped,
}

/// What a scan visitor wants next.
pub enum Visit {
    Continue,
    Stop,
}

/// A window of file bytes read ahead in large chunks. Kept across
/// [`scan_window`] calls, a scan stopped and resumed reads nothing twice.
pub struct Window {
    start: u64,
    bytes: Vec<u8>,
    /// Bytes read at once (more when one batch is larger).
    read_ahead: usize,
    /// Bytes read from the file so far.
    read: u64,
}

impl Window {
    /// An empty window that reads `read_ahead` bytes at a time.
    pub fn new(read_ahead: usize) -> Self {
        Window {
            start: 0,
            bytes: Vec::new(),
            read_ahead,
            read: 0,
        }
    }

    /// Bytes read from the file through this window so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Makes `[position, position + len)` available, reading ahead up to
    /// `end`.
    async fn fill(
        &mut self,
        file: &DmaFile,
        path: &Path,
        position: u64,
        len: usize,
        end: u64,
    ) -> Result<&[u8], StorageError> {
        let have =
            position >= self.start && position + len as u64 <= self.start + self.bytes.len() as u64;
        if !have {
            let ahead = usize::try_from(end - position)
                .unwrap_or(usize::MAX)
                .min(self.read_ahead);
            let read = file
                .read_at(position, ahead.max(len))
                .await
                .map_err(StorageError::glommio("reading", path))?;
            self.start = position;
            self.bytes = read.to_vec();
            self.read += self.bytes.len() as u64;
        }
        let from = usize::try_from(position - self.start).unwrap_or(usize::MAX);
        let bytes = self.bytes.get(from..from + len).unwrap_or(&[]);
        Ok(bytes)
    }
}

/// Reads whole batches from `file` between `start` and `end`, calling
/// `visit(position, header, batch bytes)` for each. Stops at zero padding
/// (clean end), a torn batch, or bytes that are not a v2 batch. Returns
/// where it stopped and why: for [`ScanEnd::Stopped`] the position after the
/// batch the visitor stopped at, otherwise the position of the first byte
/// that is not part of a whole valid batch. CRCs are checked when
/// `check_crc`.
pub async fn scan(
    file: &DmaFile,
    path: &Path,
    start: u64,
    end: u64,
    check_crc: bool,
    visit: impl FnMut(u64, &BatchHeader, &[u8]) -> Visit,
) -> Result<(u64, ScanEnd), StorageError> {
    let mut window = Window::new(SCAN_CHUNK_BYTES);
    scan_window(&mut window, file, path, start, end, check_crc, visit).await
}

/// [`scan`] through `window`: for a visitor that stops after a few batches
/// and scans on later from where it stopped, with the same window, so
/// nothing is read twice.
pub async fn scan_window(
    window: &mut Window,
    file: &DmaFile,
    path: &Path,
    start: u64,
    end: u64,
    check_crc: bool,
    mut visit: impl FnMut(u64, &BatchHeader, &[u8]) -> Visit,
) -> Result<(u64, ScanEnd), StorageError> {
    let mut position = start;
    loop {
        if position >= end {
            return Ok((position, ScanEnd::Clean));
        }
        let remaining = end - position;
        if remaining < LOG_OVERHEAD_BYTES as u64 {
            let tail = window
                .fill(file, path, position, remaining as usize, end)
                .await?;
            let end_kind = if tail.iter().all(|b| *b == 0) {
                ScanEnd::Clean
            } else {
                ScanEnd::Torn
            };
            return Ok((position, end_kind));
        }
        let head = window
            .fill(file, path, position, LOG_OVERHEAD_BYTES, end)
            .await?;
        if head.len() < LOG_OVERHEAD_BYTES {
            return Ok((position, ScanEnd::Torn));
        }
        let length = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        if length == 0 {
            return Ok((position, ScanEnd::Clean));
        }
        if length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
            return Ok((position, ScanEnd::Invalid(format!("batch length {length}"))));
        }
        let size = LOG_OVERHEAD_BYTES + length as usize;
        if size as u64 > remaining {
            return Ok((position, ScanEnd::Torn));
        }
        let batch = window.fill(file, path, position, size, end).await?;
        if batch.len() < size {
            return Ok((position, ScanEnd::Torn));
        }
        match visit_one(batch, position, check_crc, &mut visit) {
            None => position += size as u64,
            Some(ScanEnd::Stopped) => return Ok((position + size as u64, ScanEnd::Stopped)),
            Some(other) => return Ok((position, other)),
        }
    }
}

fn visit_one(
    batch: &[u8],
    position: u64,
    check_crc: bool,
    visit: &mut impl FnMut(u64, &BatchHeader, &[u8]) -> Visit,
) -> Option<ScanEnd> {
    let Some(header) = BatchHeader::parse(batch) else {
        return Some(ScanEnd::Invalid("short batch".into()));
    };
    if header.magic != super::batch::MAGIC_V2 {
        return Some(ScanEnd::Invalid(format!("magic {}", header.magic)));
    }
    if check_crc && !super::batch::crc_matches(batch, &header) {
        return Some(ScanEnd::Invalid("CRC mismatch".into()));
    }
    match visit(position, &header, batch) {
        Visit::Continue => None,
        Visit::Stop => Some(ScanEnd::Stopped),
    }
}
