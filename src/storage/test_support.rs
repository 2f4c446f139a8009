//! Helpers for the storage unit tests: an executor with a real-filesystem
//! temporary directory (O_DIRECT needs one; tmpfs would not do), and
//! batch-level fill and read-back.

use std::future::Future;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::batch::{self, BatchHeader, encode_test_batch};
use super::{CacheBudget, LogConfig, PartitionLog};
use crate::types::Offset;

/// Runs `test` on a glommio executor with a fresh partition directory
/// (not yet created) under the crate's `target/`.
pub fn run<F: Future<Output = ()> + 'static>(test: impl FnOnce(PathBuf) -> F + Send + 'static) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/storage-tests");
    std::fs::create_dir_all(&root).expect("test root");
    let dir = tempfile::tempdir_in(&root).expect("tempdir");
    let path = dir.path().join("t-0");
    glommio::LocalExecutorBuilder::default()
        .io_memory(crate::config::IO_MEMORY_BYTES_PER_SHARD)
        .spawn(move || async move { test(path).await })
        .expect("executor")
        .join()
        .expect("test panicked");
    drop(dir);
}

pub fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

pub async fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    open_with_cache(dir, config, 1 << 20).await
}

pub async fn open_with_cache(dir: &Path, config: LogConfig, cache_bytes: usize) -> PartitionLog {
    PartitionLog::open(dir.to_path_buf(), config, CacheBudget::new(cache_bytes))
        .await
        .expect("open")
}

/// Batch `i` of a fill: two records, timestamps `first + 10 i` and one more.
pub fn numbered_batch(i: usize, first_timestamp: i64) -> Bytes {
    let value = format!("value-{i:05}");
    encode_test_batch(
        &[value.as_bytes(), b"second"],
        first_timestamp + 10 * i as i64,
    )
}

/// Appends `count` batches of two records each and flushes.
pub async fn fill(log: &PartitionLog, count: usize, first_timestamp: i64) -> Vec<Bytes> {
    let mut batches = Vec::new();
    for i in 0..count {
        let batch = numbered_batch(i, first_timestamp);
        log.append(&batch, 0).expect("append");
        batches.push(batch);
    }
    log.flush().await.expect("flush");
    batches
}

/// Every batch below the high watermark, read from the start in steps,
/// each checked for its CRC and for offsets following on.
pub async fn read_all_batches(log: &PartitionLog) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.high_watermark() {
        let outcome = log.read(next, 1 << 20).await.expect("read");
        assert!(!outcome.batches.is_empty(), "no batch at {next}");
        for batch in outcome.batches {
            let header = BatchHeader::parse(&batch).expect("header");
            assert!(batch::crc_matches(&batch, &header), "CRC after read");
            assert!(
                header.base_offset <= next.0 && next.0 <= header.last_offset(),
                "batch {}..={} does not hold {next}",
                header.base_offset,
                header.last_offset()
            );
            next = Offset(header.last_offset() + 1);
            batches.push(batch);
        }
    }
    batches
}

/// The base offsets of every readable batch.
pub async fn read_all(log: &PartitionLog) -> Vec<i64> {
    read_all_batches(log)
        .await
        .iter()
        .map(|b| BatchHeader::parse(b).expect("header").base_offset)
        .collect()
}

/// `produced` as the log must hold it: offsets assigned from `first`.
pub fn assigned(produced: &[Bytes], first: Offset) -> Vec<Bytes> {
    let mut next = first;
    produced
        .iter()
        .map(|b| {
            let header = BatchHeader::parse(b).expect("header");
            let copy = batch::assign(b, next, 0);
            next = Offset(next.0 + i64::from(header.last_offset_delta) + 1);
            copy
        })
        .collect()
}

/// The partition's files with `extension`, sorted (so by base offset).
pub fn files_with(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

pub fn active_log_file(dir: &Path) -> PathBuf {
    files_with(dir, "log").pop().expect("a log file")
}

/// A tiny deterministic generator (xorshift64*) for table-free property
/// tests; no dependency needed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}
