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
    let (good_end, end) = segment::scan(
        &file,
        &path,
        0,
        file_size,
        true,
        |position, header, bytes| {
            // Offsets only grow, and stay within a 4-byte relative offset of the
            // segment base (the base offset is not covered by the CRC, so a
            // damaged one is caught here).
            let relative_last = header.last_offset() - base.0;
            if header.base_offset < expected.0 || relative_last > i64::from(i32::MAX) {
                out_of_order = Some(Offset(header.base_offset));
                return Visit::Stop;
            }
            segment.index_batch(header, bytes, position, index_interval_bytes);
            expected = Offset(header.last_offset() + 1);
            Visit::Continue
        },
    )
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
            segment.staged = vec![bytes::Bytes::copy_from_slice(&read)];
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

#[cfg(test)]
mod tests {
    //! Recovery, end to end through the log: write real batches with the
    //! real flush, damage the files the way a crash or a bad disk would,
    //! reopen, and check what survives.

    use std::future::Future;
    use std::path::PathBuf;

    use bytes::Bytes;

    use crate::storage::batch::encode_test_batch;
    use crate::storage::{CacheBudget, LogConfig, PartitionLog};
    use crate::types::Offset;

    fn run<F: Future<Output = ()> + 'static>(test: impl FnOnce(PathBuf) -> F + Send + 'static) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t-0");
        glommio::LocalExecutorBuilder::default()
            .io_memory(crate::config::IO_MEMORY_BYTES_PER_SHARD)
            .spawn(move || async move { test(path).await })
            .expect("executor")
            .join()
            .expect("test panicked");
        drop(dir);
    }

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 1000,
            index_interval_bytes: 100,
            ..LogConfig::default()
        }
    }

    async fn open(dir: &std::path::Path, config: LogConfig) -> PartitionLog {
        PartitionLog::open(dir.to_path_buf(), config, CacheBudget::new(1 << 20))
            .await
            .expect("open")
    }

    /// Appends `count` batches of two records each and flushes.
    async fn fill(log: &PartitionLog, count: usize, first_timestamp: i64) -> Vec<Bytes> {
        let mut batches = Vec::new();
        for i in 0..count {
            let value = format!("value-{i:05}");
            let batch = encode_test_batch(
                &[value.as_bytes(), b"second"],
                first_timestamp + 10 * i as i64,
            );
            log.append(&batch, 0).expect("append");
            batches.push(batch);
        }
        log.flush().await.expect("flush");
        batches
    }

    async fn read_all(log: &PartitionLog) -> Vec<i64> {
        let mut offsets = Vec::new();
        let mut next = log.log_start_offset();
        while next < log.high_watermark() {
            let outcome = log.read(next, 1 << 20).await.expect("read");
            assert!(!outcome.batches.is_empty(), "no batch at {next}");
            for batch in outcome.batches {
                let header = crate::storage::BatchHeader::parse(&batch).expect("header");
                assert!(
                    crate::storage::batch::crc_matches(&batch, &header),
                    "CRC after read"
                );
                offsets.push(header.base_offset);
                next = Offset(header.last_offset() + 1);
            }
        }
        offsets
    }

    fn active_log_file(dir: &std::path::Path) -> PathBuf {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        logs.pop().expect("a log file")
    }

    #[test]
    fn round_trip_across_segments_and_reopen() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            fill(&log, 40, 1_000).await;
            assert_eq!(log.high_watermark(), Offset(80));
            let expected: Vec<i64> = (0..40).map(|i| i * 2).collect();
            assert_eq!(read_all(&log).await, expected);
            log.close().await.expect("close");
            drop(log);
            let segments = std::fs::read_dir(&dir).expect("list").count();
            assert!(segments > 6, "small segments should roll: {segments} files");

            let log = open(&dir, small_segments()).await;
            assert_eq!(log.log_end_offset(), Offset(80));
            assert_eq!(read_all(&log).await, expected);
            fill(&log, 5, 5_000).await;
            assert_eq!(log.high_watermark(), Offset(90));
            assert_eq!(read_all(&log).await.len(), 45);
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
            let cut = whole - (batches[9].len() / 2) as u64;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_len(cut))
                .expect("cut");
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
        });
    }

    #[test]
    fn missing_and_garbage_indexes_are_rebuilt() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            fill(&log, 40, 1_000).await;
            log.close().await.expect("close");
            drop(log);
            let mut indexes: Vec<PathBuf> = std::fs::read_dir(&dir)
                .expect("list")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "index"))
                .collect();
            indexes.sort();
            assert!(indexes.len() >= 3);
            std::fs::remove_file(&indexes[0]).expect("remove");
            std::fs::write(&indexes[1], b"garbage!garbage!x").expect("garble");
            let log = open(&dir, small_segments()).await;
            assert!(indexes[0].exists(), "a missing index is written again");
            assert_ne!(
                std::fs::read(&indexes[1]).expect("read"),
                b"garbage!garbage!x"
            );
            for target in [0i64, 1, 17, 33, 50, 79] {
                let outcome = log.read(Offset(target), 1).await.expect("read");
                let header =
                    crate::storage::BatchHeader::parse(&outcome.batches[0]).expect("header");
                assert!(
                    header.base_offset <= target && target <= header.last_offset(),
                    "{target}"
                );
            }
        });
    }

    #[test]
    fn reads_and_lookups_follow_kafka() {
        run(|dir| async move {
            let log = open(&dir, small_segments()).await;
            fill(&log, 40, 1_000).await;
            // Below the start or past the high watermark: out of range.
            assert!(log.read(Offset(-1), 100).await.is_err());
            assert!(log.read(Offset(81), 100).await.is_err());
            assert!(
                log.read(Offset(80), 100)
                    .await
                    .expect("at hw")
                    .batches
                    .is_empty()
            );
            // max_bytes smaller than a batch still returns one batch.
            assert_eq!(log.read(Offset(3), 1).await.expect("read").batches.len(), 1);
            // Batch i has timestamps 1000 + 10 i and 1001 + 10 i.
            let hit = log
                .offset_for_timestamp(1_001)
                .await
                .expect("lookup")
                .expect("hit");
            assert_eq!((hit.offset, hit.timestamp_ms), (Offset(1), 1_001));
            let hit = log
                .offset_for_timestamp(1_205)
                .await
                .expect("lookup")
                .expect("hit");
            assert_eq!((hit.offset, hit.timestamp_ms), (Offset(42), 1_210));
            assert!(
                log.offset_for_timestamp(9_999)
                    .await
                    .expect("lookup")
                    .is_none()
            );
            let max = log.max_timestamp().expect("max");
            assert_eq!(max.timestamp_ms, 1_391);
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
            let mut corrupt = bytes::BytesMut::from(&good[..]);
            let last = corrupt.len() - 1;
            corrupt[last] ^= 1;
            let big_value = vec![7u8; 300];
            let big = encode_test_batch(&[&big_value], 1);
            assert!(matches!(
                log.append(&corrupt.freeze(), 0),
                Err(crate::storage::StorageError::CorruptMessage(_))
            ));
            assert!(matches!(
                log.append(&big, 0),
                Err(crate::storage::StorageError::MessageTooLarge { .. })
            ));
            assert_eq!(log.log_end_offset(), Offset(0));
            assert!(!log.is_dirty());
            log.append(&good, 0).expect("good batch");
            assert_eq!(log.log_end_offset(), Offset(1));
        });
    }
}
