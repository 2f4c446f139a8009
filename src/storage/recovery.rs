//! Recovery at open: find the segments, trust closed segments whose index
//! files pass their sanity checks, and scan the rest batch by batch,
//! checking lengths, magic, CRCs and offset order. The first byte that is
//! not part of a whole valid batch ends that segment: a torn write, zero
//! padding left by an O_DIRECT flush, or corruption. The file is truncated
//! there, so nothing half-written is ever served.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use glommio::io::OpenOptions;
use tracing::{info, warn};

use super::StorageError;
use super::log::sync_dir;
use super::offset_index::OffsetIndex;
use super::segment::{self, ScanEnd, Segment, Visit};
use super::time_index::TimeIndex;
use crate::types::Offset;

/// Opens or creates the log directory and rebuilds its segments. The last
/// segment's partial final block is read back into its staged bytes, so
/// the next flush rewrites it whole.
pub async fn recover(dir: &Path) -> Result<BTreeMap<Offset, Segment>, StorageError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(StorageError::io("creating", dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).await?;
        }
    }
    let mut bases = segment_bases(dir)?;
    bases.sort_unstable();
    let mut segments = BTreeMap::new();
    if bases.is_empty() {
        segments.insert(Offset(0), Segment::new(dir, Offset(0)));
        return Ok(segments);
    }
    for (position, base) in bases.iter().enumerate() {
        let next_base = bases.get(position + 1).copied();
        let segment = open_segment(dir, *base, next_base).await?;
        segments.insert(*base, segment);
    }
    Ok(segments)
}

fn segment_bases(dir: &Path) -> Result<Vec<Offset>, StorageError> {
    let entries = std::fs::read_dir(dir).map_err(StorageError::io("listing", dir))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StorageError::io("listing", dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        if stem.len() == 20
            && let Ok(base) = stem.parse::<i64>()
        {
            bases.push(Offset(base));
        }
    }
    Ok(bases)
}

async fn open_segment(
    dir: &Path,
    base: Offset,
    next_base: Option<Offset>,
) -> Result<Segment, StorageError> {
    let mut segment = Segment::new(dir, base);
    let path = segment.log_path.clone();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .map_err(StorageError::glommio("opening", &path))?;
    let file_size = file
        .file_size()
        .await
        .map_err(StorageError::glommio("sizing", &path))?;
    let file = Rc::new(file);
    segment.file = Some(file.clone());

    if let Some(next_base) = next_base {
        if let Some((index, time_index)) = load_indexes(&segment, file_size) {
            segment.index = index;
            segment.max_timestamp = time_index
                .last()
                .map(|(t, relative)| (t, Offset(base.0 + i64::from(relative.0))));
            segment.time_index = time_index;
            segment.size_bytes = file_size;
            segment.durable_bytes = file_size;
            segment.next_offset = next_base;
            segment.closed = true;
            segment.trimmed = true;
            segment.indexes_written = true;
            return Ok(segment);
        }
        info!(segment = %path.display(), "rebuilding missing or invalid index files");
    }

    let index_interval_bytes = super::log::LogConfig::default().index_interval_bytes;
    let mut expected = base;
    let mut out_of_order = None;
    let (good_end, end) = segment::scan(&file, &path, 0, file_size, true, |position, header, _| {
        if header.base_offset < expected.0 {
            out_of_order = Some(Offset(header.base_offset));
            return Visit::Stop;
        }
        segment.index_batch(header, position, index_interval_bytes);
        expected = Offset(header.last_offset() + 1);
        Visit::Continue
    })
    .await?;
    let valid_end = match (&end, out_of_order) {
        (_, Some(found)) => {
            warn!(segment = %path.display(), %found, %expected, "batch offsets go backwards; truncating");
            // `good_end` is after the offending batch: find where it began.
            rescan_end(&file, &path, file_size, expected).await?
        }
        (ScanEnd::Clean, None) => good_end,
        (ScanEnd::Torn, None) => {
            warn!(segment = %path.display(), position = good_end, "torn batch at the end of the log; truncating");
            good_end
        }
        (ScanEnd::Invalid(why), None) => {
            warn!(segment = %path.display(), position = good_end, reason = %why, "invalid batch; truncating the log there");
            good_end
        }
        (ScanEnd::Stopped, None) => good_end,
    };
    if valid_end != file_size {
        file.truncate(valid_end)
            .await
            .map_err(StorageError::glommio("truncating", &path))?;
        file.fdatasync()
            .await
            .map_err(StorageError::glommio("syncing", &path))?;
    }
    segment.size_bytes = valid_end;
    segment.durable_bytes = valid_end;
    segment.next_offset = expected;
    if let Some(next_base) = next_base {
        segment.closed = true;
        segment.trimmed = true;
        segment.seal_time_index();
        segment.next_offset = next_base;
    } else {
        // Keep the partial last block: the next flush rewrites it.
        segment.staged_start = segment::align_down(valid_end);
        let partial = (valid_end - segment.staged_start) as usize;
        if partial > 0 {
            let read = file
                .read_at(segment.staged_start, partial)
                .await
                .map_err(StorageError::glommio("reading", &path))?;
            segment.staged = read.to_vec();
        }
    }
    Ok(segment)
}

/// The end of the last batch whose offsets stay in order (used when a
/// batch's base offset goes backwards).
async fn rescan_end(
    file: &glommio::io::DmaFile,
    path: &Path,
    file_size: u64,
    expected_after: Offset,
) -> Result<u64, StorageError> {
    let mut end = 0u64;
    segment::scan(
        file,
        path,
        0,
        file_size,
        false,
        |position, header, bytes| {
            if header.last_offset() + 1 > expected_after.0 {
                return Visit::Stop;
            }
            end = position + bytes.len() as u64;
            Visit::Continue
        },
    )
    .await?;
    Ok(end)
}

fn load_indexes(segment: &Segment, file_size: u64) -> Option<(OffsetIndex, TimeIndex)> {
    let index = std::fs::read(segment.index_path()).ok()?;
    let time_index = std::fs::read(segment.time_index_path()).ok()?;
    let index = OffsetIndex::decode(&index, file_size)?;
    let time_index = TimeIndex::decode(&time_index)?;
    // An empty time index on a non-empty segment means it was never sealed.
    if file_size > 0 && time_index.last().is_none() {
        return None;
    }
    Some((index, time_index))
}
