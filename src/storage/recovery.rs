//! Recovery at open: find the segments and rebuild each one's in-memory
//! state, checking lengths, magic, CRCs and offset order of every batch it
//! reads. The first byte that is not part of a whole valid batch ends that
//! segment: a torn write, zero padding left by an O_DIRECT flush, or
//! corruption. The file is truncated there (and synced), so nothing
//! half-written is ever served.
//!
//! - The last (active) segment is scanned from its first byte.
//! - An earlier segment whose `.index`/`.timeindex` pass their sanity
//!   checks is scanned only from its last offset index entry, like Kafka's
//!   recovery point: that verifies the end of the file and extends index
//!   files that a crash left behind the log (they are written at roll time,
//!   after the log, so they can only lag). Missing or invalid index files
//!   are rebuilt from a full scan.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};
use tracing::{info, warn};

use super::StorageError;
use super::log::{CLEANED_SUFFIX, COMPACTED_MARKER, LogConfig, sync_dir};
use super::offset_index::OffsetIndex;
use super::segment::{self, ScanEnd, Segment, Visit};
use super::time_index::TimeIndex;
use crate::types::Offset;

/// Suffix of index files being written; never trusted, removed at open.
pub const TEMPORARY_SUFFIX: &str = "tmp";

/// Creates the log directory if it is missing, durably (its parent is
/// synced).
pub async fn create_dir(dir: &Path) -> Result<(), StorageError> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(StorageError::io("creating", dir))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent).await?;
    }
    Ok(())
}

/// Rebuilds the segments of the log directory `dir` (which exists). The
/// last segment's partial final block is read back into its staged bytes,
/// so the next flush rewrites it whole.
pub async fn recover(
    dir: &Path,
    config: &LogConfig,
) -> Result<BTreeMap<Offset, Segment>, StorageError> {
    let mut bases = list_segments(dir)?;
    bases.sort_unstable();
    // A compacted log has offset gaps on purpose.
    let gaps_allowed = dir.join(COMPACTED_MARKER).exists();
    let mut segments = BTreeMap::new();
    if bases.is_empty() {
        segments.insert(Offset(0), Segment::new(dir, Offset(0)));
        return Ok(segments);
    }
    for (position, base) in bases.iter().enumerate() {
        let next_base = bases.get(position + 1).copied();
        let segment = open_segment(dir, *base, next_base, gaps_allowed, config).await?;
        segments.insert(*base, segment);
    }
    Ok(segments)
}

/// The base offsets of the `<20 digits>.log` files in `dir`; removes index
/// files a crash left half-written.
fn list_segments(dir: &Path) -> Result<Vec<Offset>, StorageError> {
    let entries = std::fs::read_dir(dir).map_err(StorageError::io("listing", dir))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StorageError::io("listing", dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(&format!(".{TEMPORARY_SUFFIX}")) {
            let path = entry.path();
            warn!(file = %path.display(), "removing an index file left half-written");
            std::fs::remove_file(&path).map_err(StorageError::io("removing", &path))?;
            continue;
        }
        if name.ends_with(&format!(".{CLEANED_SUFFIX}")) {
            let path = entry.path();
            warn!(file = %path.display(), "removing a segment the cleaner left unfinished");
            std::fs::remove_file(&path).map_err(StorageError::io("removing", &path))?;
            continue;
        }
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
    gaps_allowed: bool,
    config: &LogConfig,
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

    let mut loaded = None;
    if let Some(next_base) = next_base {
        match load_indexes(&segment, file_size, next_base) {
            Some(indexes) => loaded = Some(indexes),
            None => {
                info!(segment = %path.display(), "rebuilding missing or invalid index files")
            }
        }
    }
    let mut valid_end = None;
    if let Some((index, time_index)) = &loaded {
        let bounds = ScanBounds {
            file_size,
            next_base,
            gaps_allowed,
        };
        valid_end = verify_tail(&mut segment, &file, index, time_index, bounds, config).await?;
        if valid_end.is_none() {
            warn!(segment = %path.display(), "index files do not match the log; rebuilding them");
            loaded = None;
            segment = Segment::new(dir, base);
            segment.file = Some(file.clone());
        }
    }
    let valid_end = match valid_end {
        Some(end) => end,
        None => {
            let bounds = ScanBounds {
                file_size,
                next_base,
                gaps_allowed,
            };
            scan_and_index(&mut segment, &file, 0, bounds, config)
                .await?
                .valid_end
        }
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
    segment.durable_max_timestamp = segment.max_timestamp;
    if let Some(next_base) = next_base {
        segment.closed = true;
        segment.trimmed = true;
        segment.seal_time_index();
        segment.next_offset = next_base;
        segment.staged.clear();
        // Index files that already say all this need no rewrite.
        segment.indexes_written = loaded.is_some_and(|(index, time_index)| {
            index == segment.index && time_index == segment.time_index
        });
    } else {
        read_back_partial_block(&mut segment, &file, valid_end).await?;
    }
    Ok(segment)
}

/// Adopts a closed segment's loaded index files and scans the log from
/// their last offset index entry to the end, extending them. `None` when
/// they do not fit the log: the batch at the last entry's position is not
/// the one it names, or the tail does not scan clean (then a full scan
/// decides what is valid, rather than a suspect index).
async fn verify_tail(
    segment: &mut Segment,
    file: &DmaFile,
    index: &OffsetIndex,
    time_index: &TimeIndex,
    bounds: ScanBounds,
    config: &LogConfig,
) -> Result<Option<u64>, StorageError> {
    let base = segment.base_offset;
    segment.index = index.clone();
    segment.time_index = time_index.clone();
    segment.max_timestamp = time_index
        .last()
        .map(|(t, relative)| (t, Offset(base.0 + i64::from(relative.0))));
    let Some(last_relative) = index.last_relative() else {
        // No entry: the whole (small) segment is the tail.
        let outcome = scan_and_index(segment, file, 0, bounds, config).await?;
        return Ok(outcome.intact.then_some(outcome.valid_end));
    };
    let start = index.lookup(last_relative).0;
    let outcome = scan_and_index(segment, file, start, bounds, config).await?;
    let named = Offset(base.0 + i64::from(last_relative.0));
    let fits = outcome.intact && outcome.first_last_offset == Some(named);
    Ok(fits.then_some(outcome.valid_end))
}

/// Where a segment's batches must end: in its file, and (for a closed
/// segment) below the next segment's base offset.
#[derive(Debug, Clone, Copy)]
struct ScanBounds {
    file_size: u64,
    next_base: Option<Offset>,
    /// The cleaner removed records: batches follow in order, with gaps.
    gaps_allowed: bool,
}

/// What a recovery scan found.
struct ScanOutcome {
    /// The end of the last whole, valid, in-order batch.
    valid_end: u64,
    /// The scan ended at the end of the data or at zero padding, not at a
    /// torn, invalid or out-of-order batch.
    intact: bool,
    /// The last offset of the first batch scanned.
    first_last_offset: Option<Offset>,
}

/// Scans `segment`'s file from `start` (a batch boundary), adding every
/// valid batch to its indexes; logs why the scan stopped short of
/// `file_size` when it did.
async fn scan_and_index(
    segment: &mut Segment,
    file: &DmaFile,
    start: u64,
    bounds: ScanBounds,
    config: &LogConfig,
) -> Result<ScanOutcome, StorageError> {
    let ScanBounds {
        file_size,
        next_base,
        gaps_allowed,
    } = bounds;
    let path = segment.log_path.clone();
    let base = segment.base_offset;
    let mut expected = base;
    let mut out_of_order = None;
    let mut first_last_offset = None;
    let (good_end, end) = segment::scan(
        file,
        &path,
        start,
        file_size,
        true,
        |position, header, bytes| {
            first_last_offset.get_or_insert(Offset(header.last_offset()));
            // tidelog writes every segment from its base offset on, with no
            // gaps (unless the cleaner compacted the log), and the base offset is not
            // covered by the CRC: a batch that does not follow on exactly,
            // or that reaches the next segment's base, is damaged. (From a
            // mid-segment index entry the first batch's base is unknown;
            // only its order is checked there.)
            let follows = if gaps_allowed || (position == start && start > 0) {
                header.base_offset >= expected.0
            } else {
                header.base_offset == expected.0
            };
            let relative_last = header.last_offset() - base.0;
            let past_next = next_base.is_some_and(|next| header.last_offset() >= next.0);
            if !follows || relative_last > i64::from(i32::MAX) || past_next {
                out_of_order = Some((Offset(header.base_offset), position));
                return Visit::Stop;
            }
            segment.index_batch(header, bytes, position, config.index_interval_bytes);
            expected = Offset(header.last_offset() + 1);
            Visit::Continue
        },
    )
    .await?;
    let intact = out_of_order.is_none() && matches!(end, ScanEnd::Clean | ScanEnd::Stopped);
    let valid_end = match (&end, out_of_order) {
        (_, Some((found, position))) => {
            warn!(segment = %path.display(), position, %found, %expected, "batch offsets out of order; truncating the log there");
            position
        }
        (ScanEnd::Clean | ScanEnd::Stopped, None) => good_end,
        (ScanEnd::Torn, None) => {
            warn!(segment = %path.display(), position = good_end, "torn batch at the end of the log; truncating");
            good_end
        }
        (ScanEnd::Invalid(why), None) => {
            warn!(segment = %path.display(), position = good_end, reason = %why, "invalid batch; truncating the log there");
            good_end
        }
    };
    Ok(ScanOutcome {
        valid_end,
        intact,
        first_last_offset,
    })
}

/// Keeps the active segment's partial last block staged: the next flush
/// rewrites it, with the new batches after it, as one aligned write.
async fn read_back_partial_block(
    segment: &mut Segment,
    file: &DmaFile,
    valid_end: u64,
) -> Result<(), StorageError> {
    segment.staged_start = segment::align_down(valid_end);
    let partial = usize::try_from(valid_end - segment.staged_start).unwrap_or(usize::MAX);
    if partial == 0 {
        return Ok(());
    }
    let read = file
        .read_at(segment.staged_start, partial)
        .await
        .map_err(StorageError::glommio("reading", &segment.log_path))?;
    if read.len() != partial {
        return Err(StorageError::Io {
            op: "reading the last block (short read)",
            path: segment.log_path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} of {partial} bytes", read.len()),
            ),
        });
    }
    segment.staged = vec![bytes::Bytes::copy_from_slice(&read)];
    Ok(())
}

/// A closed segment's index files, if present and sane (Kafka's
/// `sanityCheck`): whole entries, growing offsets, positions inside the
/// log file, offsets below the next segment's base.
fn load_indexes(
    segment: &Segment,
    file_size: u64,
    next_base: Offset,
) -> Option<(OffsetIndex, TimeIndex)> {
    let index = std::fs::read(segment.index_path()).ok()?;
    let time_index = std::fs::read(segment.time_index_path()).ok()?;
    let index = OffsetIndex::decode(&index, file_size)?;
    let time_index = TimeIndex::decode(&time_index)?;
    // An empty time index on a non-empty segment means it was never sealed.
    if file_size > 0 && time_index.last().is_none() {
        return None;
    }
    let span = next_base.0 - segment.base_offset.0;
    let inside = |relative: Option<crate::types::RelativeOffset>| {
        relative.is_none_or(|r| i64::from(r.0) < span)
    };
    if !inside(index.last_relative()) || !inside(time_index.last().map(|(_, r)| r)) {
        return None;
    }
    Some((index, time_index))
}

#[cfg(test)]
mod tests {
    //! Recovery, end to end through the log: write real batches with the
    //! real flush, damage the files the way a crash or a bad disk would,
    //! reopen, and check what survives.

    use std::path::PathBuf;

    use crate::storage::LogConfig;
    use crate::storage::test_support::{
        active_log_file, assigned, files_with, fill, numbered_batch, open, read_all,
        read_all_batches, run, small_segments,
    };
    use crate::types::Offset;

    fn cut(file: &std::path::Path, length: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .and_then(|f| f.set_len(length))
            .expect("cut");
    }

    #[test]
    fn reopen_without_close_rewrites_the_partial_block() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            let mut produced = fill(&log, 3, 1_000).await;
            drop(log); // a crash: no close, no index files
            let log = open(&dir, LogConfig::default()).await;
            assert_eq!(log.log_end_offset(), Offset(6));
            produced.extend(fill(&log, 4, 2_000).await);
            drop(log);
            // The file is exactly the batches, each with its offsets, then
            // zero padding up to the block.
            let expected: Vec<u8> = assigned(&produced, Offset(0)).concat();
            let bytes = std::fs::read(active_log_file(&dir)).expect("read");
            assert_eq!(&bytes[..expected.len()], &expected[..]);
            assert!(bytes[expected.len()..].iter().all(|b| *b == 0));
            let log = open(&dir, LogConfig::default()).await;
            assert_eq!(read_all(&log).await, vec![0, 2, 4, 6, 8, 10, 12]);
        });
    }

    #[test]
    fn torn_tail_is_truncated() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            let batches = fill(&log, 10, 1_000).await;
            drop(log);
            let file = active_log_file(&dir);
            let whole: u64 = batches.iter().map(|b| b.len() as u64).sum();
            // Cut the last batch in half.
            cut(&file, whole - (batches[9].len() / 2) as u64);
            let log = open(&dir, LogConfig::default()).await;
            assert_eq!(log.log_end_offset(), Offset(18));
            assert_eq!(read_all(&log).await.len(), 9);
            assert_eq!(
                std::fs::metadata(&file).expect("stat").len(),
                whole - batches[9].len() as u64
            );
            // Appending goes on from the truncated end.
            let more = fill(&log, 1, 9_000).await;
            assert_eq!(more.len(), 1);
            assert_eq!(log.high_watermark(), Offset(20));
            assert_eq!(read_all(&log).await.len(), 10);
        });
    }

    #[test]
    fn any_cut_keeps_exactly_the_whole_batches() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            let batches = fill(&log, 6, 1_000).await;
            drop(log);
            let file = active_log_file(&dir);
            let original = std::fs::read(&file).expect("read");
            let ends: Vec<u64> = batches
                .iter()
                .scan(0u64, |end, b| {
                    *end += b.len() as u64;
                    Some(*end)
                })
                .collect();
            let whole = *ends.last().expect("batches");
            for length in (0..=whole).step_by(7).chain([whole - 1, whole, whole + 1]) {
                std::fs::write(&file, &original[..length as usize]).expect("restore");
                let log = open(&dir, LogConfig::default()).await;
                let kept = ends.iter().filter(|end| **end <= length).count();
                assert_eq!(
                    log.log_end_offset(),
                    Offset(2 * kept as i64),
                    "cut at {length}"
                );
                drop(log);
            }
        });
    }

    #[test]
    fn zero_padding_is_not_data() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            let batches = fill(&log, 3, 1_000).await;
            drop(log);
            let file = active_log_file(&dir);
            let whole: u64 = batches.iter().map(|b| b.len() as u64).sum();
            // The O_DIRECT flush pads the last block with zeros.
            assert_eq!(std::fs::metadata(&file).expect("stat").len() % 4096, 0);
            let log = open(&dir, LogConfig::default()).await;
            assert_eq!(std::fs::metadata(&file).expect("stat").len(), whole);
            assert_eq!(log.log_end_offset(), Offset(6));
            assert_eq!(read_all(&log).await, vec![0, 2, 4]);
        });
    }

    #[test]
    fn corrupt_batch_in_the_middle_truncates_from_there() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            let batches = fill(&log, 10, 1_000).await;
            drop(log);
            let file = active_log_file(&dir);
            let mut bytes = std::fs::read(&file).expect("read");
            let fifth: usize = batches[..4].iter().map(|b| b.len()).sum();
            bytes[fifth + 70] ^= 0xff; // inside the 5th batch's records
            std::fs::write(&file, &bytes).expect("write");
            let log = open(&dir, LogConfig::default()).await;
            assert_eq!(log.log_end_offset(), Offset(8));
            assert_eq!(read_all(&log).await, vec![0, 2, 4, 6]);
            assert_eq!(
                std::fs::metadata(&file).expect("stat").len(),
                fifth as u64,
                "truncated at the bad batch"
            );
        });
    }

    #[test]
    fn a_batch_with_offsets_going_back_ends_the_log() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            let produced = fill(&log, 3, 1_000).await;
            drop(log);
            let file = active_log_file(&dir);
            let batches = assigned(&produced, Offset(0));
            let whole: usize = batches.iter().map(|b| b.len()).sum();
            // A valid batch (CRC and all) repeating offsets 2..=3, then one
            // that follows on: both go.
            let mut bytes = batches.concat();
            bytes.extend_from_slice(&batches[1]);
            bytes.extend_from_slice(&assigned(&produced[..1], Offset(6))[0]);
            std::fs::write(&file, &bytes).expect("write");
            let log = open(&dir, LogConfig::default()).await;
            assert_eq!(log.log_end_offset(), Offset(6));
            assert_eq!(std::fs::metadata(&file).expect("stat").len(), whole as u64);
            assert_eq!(read_all(&log).await, vec![0, 2, 4]);
        });
    }

    /// Random damage anywhere in the active segment: recovery keeps
    /// exactly the batches before the first damaged one, and appending
    /// goes on from there.
    #[test]
    fn random_damage_keeps_the_batches_before_it() {
        run(|dir| async move {
            let log = open(&dir, LogConfig::default()).await;
            let produced = fill(&log, 12, 1_000).await;
            drop(log);
            let file = active_log_file(&dir);
            let batches = assigned(&produced, Offset(0));
            let original = batches.concat();
            let mut rng = crate::storage::test_support::Rng::new(11);
            for _ in 0..60 {
                let mut bytes = original.clone();
                let at = rng.below(bytes.len() as u64) as usize;
                let mut end = 0;
                let intact = batches
                    .iter()
                    .take_while(|b| {
                        end += b.len();
                        end <= at
                    })
                    .count();
                let start: usize = batches[..intact].iter().map(|b| b.len()).sum();
                let epoch = crate::storage::batch::PARTITION_LEADER_EPOCH_OFFSET;
                if (epoch..epoch + 4).contains(&(at - start)) {
                    continue; // the one field nothing checks, as in Kafka
                }
                bytes[at] ^= 1 + rng.below(255) as u8;
                std::fs::write(&file, &bytes).expect("write");
                let log = open(&dir, LogConfig::default()).await;
                let kept = read_all_batches(&log).await;
                assert_eq!(kept, batches[..intact], "damage at {at}");
                fill(&log, 1, 5_000).await;
                drop(log);
            }
        });
    }

    #[test]
    fn missing_and_garbage_indexes_are_rebuilt() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            fill(&log, 40, 1_000).await;
            log.close().await.expect("close");
            drop(log);
            let indexes = files_with(&dir, "index");
            let time_indexes = files_with(&dir, "timeindex");
            assert!(indexes.len() >= 4);
            std::fs::remove_file(&indexes[0]).expect("remove");
            std::fs::write(&indexes[1], b"garbage!garbage!x").expect("garble");
            // Sane-looking but wrong: one entry pointing into a batch.
            let mut wrong = Vec::new();
            wrong.extend_from_slice(&1u32.to_be_bytes());
            wrong.extend_from_slice(&13u32.to_be_bytes());
            std::fs::write(&indexes[2], &wrong).expect("wrong");
            std::fs::write(&time_indexes[3], b"short").expect("garble");
            let log = open(&dir, small_segments()).await;
            assert!(indexes[0].exists(), "a missing index is written again");
            assert_ne!(
                std::fs::read(&indexes[1]).expect("read"),
                b"garbage!garbage!x"
            );
            assert_ne!(std::fs::read(&indexes[2]).expect("read"), wrong);
            assert_eq!(
                log.log_end_offset(),
                Offset(80),
                "no data lost to a bad index"
            );
            for target in 0..80 {
                let outcome = log.read(Offset(target), 1).await.expect("read");
                let header =
                    crate::storage::BatchHeader::parse(&outcome.batches[0]).expect("header");
                assert!(
                    header.base_offset <= target && target <= header.last_offset(),
                    "{target}"
                );
            }
            assert_eq!(log.max_timestamp().expect("max").timestamp_ms, 1_391);
        });
    }

    #[test]
    fn index_files_behind_the_log_are_extended() {
        run(|dir| async move {
            let config = LogConfig {
                segment_bytes: 4000,
                index_interval_bytes: 100,
                ..LogConfig::default()
            };
            // A clean close writes the active segment's index files ...
            let log = open(&dir, config).await;
            fill(&log, 5, 1_000).await;
            log.close().await.expect("close");
            drop(log);
            let first_index = files_with(&dir, "index").remove(0);
            let stale = std::fs::read(&first_index).expect("index");
            let stale_time = std::fs::read(first_index.with_extension("timeindex")).expect("ti");
            // ... then the segment grows and rolls, and a crash comes
            // before its new index files are written.
            let log = open(&dir, config).await;
            for i in 5..60 {
                log.append(&numbered_batch(i, 1_000), 0).expect("append");
            }
            log.flush().await.expect("flush");
            drop(log);
            assert!(files_with(&dir, "log").len() >= 2, "rolled");
            std::fs::write(&first_index, &stale).expect("stale index");
            std::fs::write(first_index.with_extension("timeindex"), &stale_time).expect("ti");
            let log = open(&dir, config).await;
            assert_eq!(log.log_end_offset(), Offset(120));
            assert_eq!(read_all(&log).await.len(), 60);
            // Batch 30 (offsets 60, 61) is in the first segment, after what
            // the stale time index knew.
            let hit = log
                .offset_for_timestamp(1_300)
                .await
                .expect("lookup")
                .expect("hit");
            assert_eq!(hit.offset, Offset(60));
            assert_eq!(log.max_timestamp().expect("max").timestamp_ms, 1_591);
            assert_ne!(
                std::fs::read(&first_index).expect("index"),
                stale,
                "rewritten"
            );
        });
    }

    #[test]
    fn stray_temporary_index_files_are_removed() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            fill(&log, 10, 1_000).await;
            log.close().await.expect("close");
            drop(log);
            let stray: PathBuf = dir.join("00000000000000000000.index.tmp");
            std::fs::write(&stray, b"half").expect("stray");
            let log = open(&dir, small_segments()).await;
            assert!(!stray.exists());
            assert_eq!(read_all_batches(&log).await.len(), 10);
        });
    }
}
