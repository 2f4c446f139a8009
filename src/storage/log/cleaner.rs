//! Log compaction (`cleanup.policy=compact`) of one partition log, Kafka's
//! log cleaner in small:
//!
//! - Cleanable: the closed, durable segments from the start of the log up
//!   to the first one whose newest record is younger than
//!   `min.compaction.lag.ms`. The active segment is never touched.
//! - It runs when the dirty share (bytes from the first offset not yet
//!   cleaned) reaches `min.cleanable.dirty.ratio`, or when a kept
//!   tombstone's `delete.retention.ms` has passed.
//! - A map of each key's digest to its latest offset is built over the
//!   dirty segments (from the first offset not yet cleaned), whole batches
//!   at a time, until it holds as many keys as `log.cleaner.dedupe.buffer.size`
//!   allows; the pass then covers the log up to the last batch mapped, and
//!   the rest waits for the next pass. Each segment of that range is
//!   rewritten keeping a record unless the map holds a later offset for
//!   its key (records without a key go, as in Kafka), and a tombstone only
//!   until `delete.retention.ms` after its timestamp.
//!   Control batches (transaction markers) stay as they are. Offsets never
//!   change: a filtered batch keeps its header (see [`super::super::compact`]).
//! - The segments of the pass are grouped as Kafka's `groupSegmentsBySize`
//!   does: neighbours go into one new segment while their sizes together
//!   stay within `segment.bytes` (their index files within
//!   `segment.index.bytes`, their offsets within a 32-bit relative offset),
//!   so a compacted log does not grow a file for every segment it ever
//!   rolled. A group of one that cleaning would not change is left alone.
//! - Crash-safe swap, one group at a time: the new contents are written to
//!   `<first base>.log.cleaned` and synced; then the group's index files
//!   are removed and the `.cleaned` file is renamed over the first
//!   segment's `.log`; for a group of more than one, the directory is
//!   synced and only then are the other segments' `.log` files removed,
//!   oldest first, with a directory sync after each. A kill at any point
//!   leaves a valid log: the old segments; or the new first one beside the
//!   newest few old ones, where recovery cuts the new one at the first of
//!   them (a batch reaching the next segment's base ends a segment),
//!   leaving their records as they were. Recovery
//!   removes a stray `.cleaned` file and rebuilds missing index files. At
//!   the end of the pass the directory is synced once and the new index
//!   files are written. A `compacted` marker in the log directory, written
//!   before the first swap, tells recovery that the log has offset gaps on
//!   purpose.
//! - After a pass, `cleaner-offset-checkpoint` in the log directory keeps
//!   the first offset not yet cleaned, so a restart does not count the
//!   whole log as dirty; the first look after a restart goes through the
//!   kept tombstones once to learn when the next one is due.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::storage::Foreground;
use crate::storage::compact::{self, Filtered, RecordView};
use crate::storage::segment::{ScanEnd, Window};

/// Suffix of a segment being rewritten by the cleaner; never trusted.
pub const CLEANED_SUFFIX: &str = "cleaned";
/// Present in a log directory once the cleaner has rewritten a segment.
pub const COMPACTED_MARKER: &str = "compacted";
/// How far the cleaner has cleaned the log (the first offset not yet
/// cleaned, in decimal ASCII, replaced atomically after each pass), so a
/// restart does not count the whole log as dirty again.
pub const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";
/// Bytes read from a segment file at once, and gathered for a rewrite
/// before they are written.
const CHUNK_BYTES: usize = 64 * 1024;
/// At most this many bytes of batches are handled in one step, between two
/// yields to produce and fetch.
const STEP_BYTES: usize = 64 * 1024;
/// A step also ends after the batch that takes it past this much time:
/// produce and fetch wait for a step, which nothing can interrupt. A whole
/// 64 KiB step of 200-byte records held the shard 0.4-0.8 ms on the
/// development VM (perf/RESULTS.md, 2026-12-07).
const STEP_TIME: Duration = Duration::from_micros(100);
/// How long the cleaner waits, before a step or a file operation, for a
/// moment with no produce work in flight on its shard before it goes ahead
/// anyway (see `storage::foreground`): under a load that never pauses it
/// still takes a step every 5 ms.
const MAX_TURN_WAIT: Duration = Duration::from_millis(5);
/// After a step the cleaner rests this many times as long as the step
/// took: it uses at most a fifth of its shard's time.
const REST_PER_STEP: u32 = 4;

/// How the cleaner paces itself. Kafka's
/// `log.cleaner.io.max.bytes.per.second`: its reads and writes together are
/// kept below this rate on average, measured over
/// [`THROTTLE_CHECK_INTERVAL`] windows (Kafka's `Throttler`). And, when it
/// knows its shard's [`Foreground`], it takes each step and file operation
/// between produce requests ([`Throttle::turn`]). One per shard, shared by
/// every log it cleans; borrowed only between awaits.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: f64,
    window_start: Cell<Instant>,
    window_bytes: Cell<f64>,
    foreground: Option<Rc<Foreground>>,
    /// Since the pass began: time spent waiting for a turn, and the turns
    /// taken with produce work still in flight after [`MAX_TURN_WAIT`].
    waited: Cell<Duration>,
    forced_turns: Cell<u64>,
}

/// How often the throttle compares the rate with its bound.
const THROTTLE_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// The longest one rest of the throttle (a tiny bound on a large step).
const THROTTLE_SLEEP_MAX: Duration = Duration::from_secs(10);

impl Throttle {
    /// A bound of `bytes_per_second` (not finite or not positive: none).
    pub fn new(bytes_per_second: f64) -> Throttle {
        Throttle {
            bytes_per_second,
            window_start: Cell::new(Instant::now()),
            window_bytes: Cell::new(0.0),
            foreground: None,
            waited: Cell::new(Duration::ZERO),
            forced_turns: Cell::new(0),
        }
    }

    /// The same bound, and each step and file operation taken when no
    /// produce work is in flight in `foreground` (or after
    /// [`MAX_TURN_WAIT`]).
    pub fn yielding_to(self, foreground: Rc<Foreground>) -> Throttle {
        Throttle {
            foreground: Some(foreground),
            ..self
        }
    }

    /// Waits for the cleaner's turn: a moment with no produce work in
    /// flight on the shard, or [`MAX_TURN_WAIT`], whichever comes first.
    async fn turn(&self) {
        let Some(foreground) = &self.foreground else {
            return;
        };
        if foreground.is_idle() {
            return;
        }
        let started = Instant::now();
        if !foreground.until_idle(MAX_TURN_WAIT).await {
            self.forced_turns.set(self.forced_turns.get() + 1);
        }
        self.waited.set(self.waited.get() + started.elapsed());
    }

    pub fn unlimited() -> Throttle {
        Throttle::new(f64::INFINITY)
    }

    fn limited(&self) -> bool {
        self.bytes_per_second.is_finite() && self.bytes_per_second > 0.0
    }

    /// Counts `bytes` of cleaner I/O; sleeps as long as it takes to bring
    /// the window's rate down to the bound when it is above.
    async fn observe(&self, bytes: u64) {
        if !self.limited() {
            return;
        }
        self.window_bytes
            .set(self.window_bytes.get() + bytes as f64);
        let elapsed = self.window_start.get().elapsed();
        if elapsed < THROTTLE_CHECK_INTERVAL {
            return;
        }
        let due = Duration::try_from_secs_f64(self.window_bytes.get() / self.bytes_per_second)
            .unwrap_or(THROTTLE_SLEEP_MAX);
        if let Some(ahead) = due.checked_sub(elapsed) {
            let ahead = ahead.min(THROTTLE_SLEEP_MAX);
            glommio::timer::sleep(ahead).await;
        }
        self.window_start.set(Instant::now());
        self.window_bytes.set(0.0);
    }
}

/// What one cleaning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    /// Segments replaced, and the new segments that replaced them.
    pub segments_rewritten: usize,
    pub segments_written: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub keys: usize,
    /// Bytes of batches read from segment files, and from the tail cache.
    pub bytes_read_from_files: u64,
    pub bytes_read_from_cache: u64,
    /// The pass from its first read to its checkpoint; the part of it in
    /// steps (reading and filtering batches, between rests); and the part
    /// finishing new segments (their last write and sync, the swaps, the
    /// directory syncs, the index files and the checkpoint).
    pub took: Duration,
    pub stepping: Duration,
    pub finishing: Duration,
    /// Of `took`, the time spent waiting for moments with no produce work
    /// in flight, and how many steps or file operations went ahead after
    /// [`MAX_TURN_WAIT`] without one.
    pub waited_for_produce: Duration,
    pub forced_turns: u64,
}

/// A closed segment the cleaner may rewrite.
struct Cleanable {
    base_offset: Offset,
    file: Rc<DmaFile>,
    path: PathBuf,
    size: u64,
    next_offset: Offset,
    /// Sizes of its offset and time index.
    index_bytes: u64,
    time_index_bytes: u64,
}

/// The segments of a pass in groups, each to be rewritten into one new
/// segment (Kafka's `groupSegmentsBySize`): a segment joins its group while
/// the group's sizes, with it, stay within `segment.bytes` and
/// `segment.index.bytes` and its last offset stays within a 32-bit offset
/// of the group's base.
fn group_by_size<'a>(segments: &[&'a Cleanable], config: &LogConfig) -> Vec<Vec<&'a Cleanable>> {
    let mut groups: Vec<Vec<&Cleanable>> = Vec::new();
    let mut sizes = (0, 0, 0);
    for &segment in segments {
        if let Some(group) = groups.last_mut() {
            let fits = sizes.0 + segment.size <= config.segment_bytes
                && sizes.1 + segment.index_bytes <= config.segment_index_bytes
                && sizes.2 + segment.time_index_bytes <= config.segment_index_bytes
                && segment.next_offset.0 - 1 - group[0].base_offset.0 <= i64::from(i32::MAX);
            if fits {
                group.push(segment);
                sizes.0 += segment.size;
                sizes.1 += segment.index_bytes;
                sizes.2 += segment.time_index_bytes;
                continue;
            }
        }
        groups.push(vec![segment]);
        sizes = (segment.size, segment.index_bytes, segment.time_index_bytes);
    }
    groups
}

/// Memory one key of the map takes: its 16-byte digest and its offset
/// (Kafka counts 24 too), plus the hash table's control byte.
const MAP_BYTES_PER_KEY: u64 = 25;

/// The cleaner's key map: a 128-bit digest of each key (Kafka keeps an
/// MD5) to the latest offset seen, holding at most `capacity` keys.
pub struct OffsetMap {
    offsets: HashMap<u128, i64>,
    capacity: usize,
}

impl OffsetMap {
    /// A map that never takes more than `bytes` of memory: the hash
    /// table's slots are a power of two, filled to at most 7/8.
    pub fn within(bytes: u64) -> Self {
        let slots = (bytes / MAP_BYTES_PER_KEY).max(16);
        let slots = 1u64 << (63 - slots.leading_zeros());
        let capacity = usize::try_from(slots / 8 * 7).unwrap_or(usize::MAX);
        Self::with_capacity(capacity)
    }

    fn with_capacity(capacity: usize) -> Self {
        Self {
            offsets: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    fn digest(key: &[u8]) -> u128 {
        use std::hash::{DefaultHasher, Hasher};
        let mut high = DefaultHasher::new();
        high.write(key);
        let mut low = DefaultHasher::new();
        low.write_u8(0x5a);
        low.write(key);
        (u128::from(high.finish()) << 64) | u128::from(low.finish())
    }

    fn put(&mut self, key: &[u8], offset: i64) {
        self.offsets.insert(Self::digest(key), offset);
    }

    fn get(&self, key: &[u8]) -> Option<i64> {
        self.offsets.get(&Self::digest(key)).copied()
    }

    /// Whether `records` more keys surely fit.
    fn has_room_for(&self, records: usize) -> bool {
        self.offsets.len().saturating_add(records) <= self.capacity
    }

    fn len(&self) -> usize {
        self.offsets.len()
    }

    fn clear(&mut self) {
        self.offsets.clear();
    }
}

/// How far a pass's map reached.
enum Mapped {
    /// Every batch of the segment.
    Whole,
    /// The map filled: batches from this offset on were left out.
    FullAt(i64),
}

/// The cleaner's decision for each record.
struct Retain<'a> {
    latest: &'a OffsetMap,
    /// Tombstones with a timestamp before this go.
    tombstone_horizon: i64,
    delete_retention_ms: i64,
    /// The earliest time a kept tombstone may go.
    next_deadline: Option<i64>,
    removed: u64,
}

impl Retain<'_> {
    fn keep(&mut self, record: &RecordView<'_>) -> bool {
        // A key the map does not hold has no later record in this pass's
        // range (the map covers all of its dirty part).
        let latest = record.key.is_some_and(|key| {
            self.latest
                .get(key)
                .is_none_or(|latest| record.offset >= latest)
        });
        let keep = latest && !(record.tombstone && record.timestamp < self.tombstone_horizon);
        if keep && record.tombstone {
            let deadline = record.timestamp.saturating_add(self.delete_retention_ms);
            self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        if !keep {
            self.removed += 1;
        }
        keep
    }
}

impl PartitionLog {
    /// Compacts the log if its policy says so and it is due. `None` when
    /// nothing was due.
    pub async fn clean(
        &self,
        now_ms: i64,
        map: &mut OffsetMap,
        throttle: &Throttle,
    ) -> Result<Option<CleanOutcome>, StorageError> {
        let config = self.config.get();
        if !config.cleanup_compact || self.cleaning.replace(true) {
            return Ok(None);
        }
        let _cleaning = FlushInFlight(&self.cleaning);
        let cleanable = self.cleanable_segments(&config, now_ms);
        let Some(last) = cleanable.last() else {
            return Ok(None);
        };
        let total: u64 = cleanable.iter().map(|c| c.size).sum();
        let dirty_from = self.cleaned_to.get();
        let dirty: u64 = cleanable
            .iter()
            .filter(|c| c.next_offset > dirty_from)
            .map(|c| c.size)
            .sum();
        let tombstones_due = self.tombstone_deadline.get().is_some_and(|d| now_ms >= d);
        let ratio_due =
            dirty > 0 && dirty as f64 >= config.min_cleanable_dirty_ratio * total as f64;
        if !ratio_due && !tombstones_due {
            return Ok(None);
        }

        let started = Instant::now();
        let mut finishing = Duration::ZERO;
        map.clear();
        self.cleaner_reads.set((0, 0));
        self.cleaner_stepping.set(Duration::ZERO);
        throttle.waited.set(Duration::ZERO);
        throttle.forced_turns.set(0);
        let mut cleaned_to = last.next_offset;
        for segment in cleanable.iter().filter(|c| c.next_offset > dirty_from) {
            if let Mapped::FullAt(offset) =
                self.map_keys(segment, dirty_from, map, throttle).await?
            {
                cleaned_to = Offset(offset);
                break;
            }
        }
        let in_pass: Vec<&Cleanable> = cleanable
            .iter()
            .filter(|c| c.base_offset < cleaned_to)
            .collect();
        let mut retain = Retain {
            latest: map,
            tombstone_horizon: now_ms.saturating_sub(config.delete_retention_ms),
            delete_retention_ms: config.delete_retention_ms,
            next_deadline: None,
            removed: 0,
        };
        let mut outcome = CleanOutcome {
            keys: map.len(),
            bytes_before: in_pass.iter().map(|c| c.size).sum(),
            ..CleanOutcome::default()
        };
        for group in group_by_size(&in_pass, &config) {
            match self
                .rewrite_group(&group, &config, &mut retain, throttle, &mut finishing)
                .await?
            {
                Some(size) => {
                    outcome.segments_rewritten += group.len();
                    outcome.segments_written += 1;
                    outcome.bytes_after += size;
                }
                None => outcome.bytes_after += group.iter().map(|s| s.size).sum::<u64>(),
            }
        }
        let finish = Instant::now();
        if outcome.segments_rewritten > 0 {
            throttle.turn().await;
            sync_dir(&self.dir).await?;
            throttle.turn().await;
            self.write_missing_indexes().await?;
        }
        outcome.records_removed = retain.removed;
        (outcome.bytes_read_from_files, outcome.bytes_read_from_cache) = self.cleaner_reads.get();
        let cleaned_to = cleaned_to.max(dirty_from);
        if cleaned_to != dirty_from {
            throttle.turn().await;
            write_offset_checkpoint(&self.dir, CLEANER_CHECKPOINT, cleaned_to).await?;
        }
        outcome.finishing = finishing + finish.elapsed();
        outcome.stepping = self.cleaner_stepping.get();
        outcome.took = started.elapsed();
        outcome.waited_for_produce = throttle.waited.get();
        outcome.forced_turns = throttle.forced_turns.get();
        self.cleaned_to.set(cleaned_to);
        self.tombstone_deadline.set(retain.next_deadline);
        Ok(Some(outcome))
    }

    /// The closed, durable prefix of the log the cleaner may rewrite.
    fn cleanable_segments(&self, config: &LogConfig, now_ms: i64) -> Vec<Cleanable> {
        let state = self.state.borrow();
        let lag_limit = now_ms.saturating_sub(config.min_compaction_lag_ms);
        let closed = state.segments.len().saturating_sub(1);
        state
            .segments
            .values()
            .take(closed)
            .take_while(|s| {
                s.file.is_some()
                    && s.closed
                    && s.trimmed
                    && s.staged.is_empty()
                    && s.durable_bytes == s.size_bytes
                    && s.next_offset <= state.high_watermark
                    && s.max_timestamp
                        .is_none_or(|(newest, _)| newest <= lag_limit)
            })
            .filter_map(|s| {
                Some(Cleanable {
                    base_offset: s.base_offset,
                    file: s.file.clone()?,
                    path: s.log_path.clone(),
                    size: s.size_bytes,
                    next_offset: s.next_offset,
                    index_bytes: s.index.size_bytes(),
                    time_index_bytes: s.time_index.size_bytes(),
                })
            })
            .collect()
    }

    /// Puts each key of `segment` from `dirty_from` on with its latest
    /// offset in `map`, whole batches at a time, while they surely fit (the
    /// first batch of a pass always goes in, so every pass makes progress).
    async fn map_keys(
        &self,
        segment: &Cleanable,
        dirty_from: Offset,
        map: &mut OffsetMap,
        throttle: &Throttle,
    ) -> Result<Mapped, StorageError> {
        let mut failed = None;
        let mut full_at = None;
        self.scan_in_steps(segment, throttle, |header, bytes| {
            if compact::is_control(header) || header.last_offset() < dirty_from.0 {
                return Visit::Continue;
            }
            let records = usize::try_from(header.record_count).unwrap_or(0);
            if map.len() > 0 && !map.has_room_for(records) {
                full_at = Some(header.base_offset);
                return Visit::Stop;
            }
            let mapped = compact::for_each_record(bytes, header, |record| {
                if let Some(key) = record.key {
                    map.put(key, record.offset);
                }
            });
            match mapped {
                Ok(()) => Visit::Continue,
                Err(error) => {
                    failed = Some(error);
                    Visit::Stop
                }
            }
        })
        .await?;
        if let Some(error) = failed {
            return Err(error);
        }
        Ok(full_at.map_or(Mapped::Whole, Mapped::FullAt))
    }

    /// Rewrites a group of neighbouring segments into one, keeping what
    /// `retain` keeps; `None` when the group is one segment whose every
    /// record stays (it is left alone), else the new segment's size.
    async fn rewrite_group(
        &self,
        group: &[&Cleanable],
        config: &LogConfig,
        retain: &mut Retain<'_>,
        throttle: &Throttle,
        finishing: &mut Duration,
    ) -> Result<Option<u64>, StorageError> {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(None);
        };
        if let [only] = group
            && !self.segment_changes(only, retain, throttle).await?
        {
            return Ok(None);
        }
        let mut cleaned_path = first.path.clone().into_os_string();
        cleaned_path.push(".");
        cleaned_path.push(CLEANED_SUFFIX);
        let cleaned_path = PathBuf::from(cleaned_path);
        throttle.turn().await;
        let mut out = Rewrite {
            file: create_segment_file(&cleaned_path).await?,
            path: cleaned_path,
            writer: ChunkWriter::default(),
            segment: Segment::new(&self.dir, first.base_offset),
        };
        let mut finish = Instant::now();
        let written = async {
            for segment in group {
                self.copy_kept(segment, &mut out, config, retain, throttle)
                    .await?;
            }
            finish = Instant::now();
            throttle.turn().await;
            let size = out.writer.finish(&out.file, &out.path).await?;
            throttle.turn().await;
            out.file
                .fdatasync()
                .await
                .map_err(StorageError::glommio("syncing", &out.path))?;
            Ok(size)
        }
        .await;
        let Rewrite {
            file,
            path,
            segment: mut rebuilt,
            ..
        } = out;
        drop(file);
        let size = match written {
            Ok(size) => size,
            Err(error) => {
                remove_quietly(&path);
                return Err(error);
            }
        };
        rebuilt.size_bytes = size;
        rebuilt.durable_bytes = size;
        rebuilt.next_offset = last.next_offset;
        rebuilt.closed = true;
        rebuilt.trimmed = true;
        rebuilt.seal_time_index();
        rebuilt.durable_max_timestamp = rebuilt.max_timestamp;
        let swapped = self.swap_in(group, rebuilt, path, throttle).await;
        *finishing += finish.elapsed();
        swapped?;
        Ok(Some(size))
    }

    /// Appends what `retain` keeps of `segment` to `out`, a step at a time.
    async fn copy_kept(
        &self,
        segment: &Cleanable,
        out: &mut Rewrite,
        config: &LogConfig,
        retain: &mut Retain<'_>,
        throttle: &Throttle,
    ) -> Result<(), StorageError> {
        let mut failed = None;
        let mut batches = Batches::of(self, segment);
        loop {
            let (writer, rebuilt) = (&mut out.writer, &mut out.segment);
            let more = batches
                .step(throttle, |header, bytes| {
                    let kept = if compact::is_control(header) {
                        Ok(Filtered::Unchanged)
                    } else {
                        compact::filter_batch(bytes, header, |record| retain.keep(record))
                    };
                    match kept {
                        Ok(Filtered::Unchanged) => writer.push(rebuilt, header, bytes, config),
                        Ok(Filtered::Rewritten(batch)) => match BatchHeader::parse(&batch) {
                            Some(new) => writer.push(rebuilt, &new, &batch, config),
                            None => failed = Some(StorageError::CorruptMessage("filtered".into())),
                        },
                        Ok(Filtered::Empty) => {}
                        Err(error) => failed = Some(error),
                    }
                    if failed.is_some() {
                        Visit::Stop
                    } else {
                        Visit::Continue
                    }
                })
                .await?;
            if let Some(error) = failed {
                return Err(error);
            }
            if out.writer.pending.len() >= CHUNK_BYTES {
                throttle.turn().await;
                let written = out.writer.write_full_blocks(&out.file, &out.path).await?;
                throttle.observe(written).await;
            }
            if !more {
                return Ok(());
            }
            self.step_aside(batches.last_step).await;
        }
    }

    /// Whether cleaning `segment` removes anything (read only; `retain`'s
    /// counts are left as they were). A segment left alone still holds
    /// its tombstones, so their deadline joins `retain`'s.
    async fn segment_changes(
        &self,
        segment: &Cleanable,
        retain: &mut Retain<'_>,
        throttle: &Throttle,
    ) -> Result<bool, StorageError> {
        let mut probe = Retain {
            latest: retain.latest,
            tombstone_horizon: retain.tombstone_horizon,
            delete_retention_ms: retain.delete_retention_ms,
            next_deadline: None,
            removed: 0,
        };
        // This look goes through every segment of every pass.
        let mut failed = None;
        self.scan_in_steps(segment, throttle, |header, bytes| {
            if !compact::is_control(header)
                && let Err(error) = compact::for_each_record(bytes, header, |record| {
                    probe.keep(record);
                })
            {
                failed = Some(error);
            }
            if failed.is_some() || probe.removed > 0 {
                Visit::Stop
            } else {
                Visit::Continue
            }
        })
        .await?;
        if let Some(error) = failed {
            return Err(error);
        }
        if probe.removed > 0 {
            return Ok(true);
        }
        if let Some(deadline) = probe.next_deadline {
            retain.next_deadline = Some(retain.next_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        Ok(false)
    }

    /// Puts the rewritten segment in place of the group it replaces, on
    /// disk and in memory, unless retention or DeleteRecords removed any of
    /// the group meanwhile.
    async fn swap_in(
        &self,
        group: &[&Cleanable],
        mut rebuilt: Segment,
        cleaned_path: PathBuf,
        throttle: &Throttle,
    ) -> Result<(), StorageError> {
        throttle.turn().await;
        let _turn = take_turn(
            &self.segments_turn,
            "waiting to swap a segment of",
            &self.dir,
        )
        .await?;
        // Not while its old index files are being written.
        let _indexing =
            take_turn(&self.index_turn, "waiting to swap a segment of", &self.dir).await?;
        if let Err(error) = self.remove_merged_away().await {
            remove_quietly(&cleaned_path);
            return Err(error);
        }
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(());
        };
        // The group's index files, unless a segment of it is gone.
        let index_paths: Option<Vec<PathBuf>> = {
            let state = self.state.borrow();
            let old: Option<Vec<&Segment>> = group
                .iter()
                .map(|s| state.segments.get(&s.base_offset))
                .collect();
            old.map(|old| {
                old.iter()
                    .flat_map(|s| [s.index_path(), s.time_index_path()])
                    .collect()
            })
        };
        let Some(index_paths) = index_paths else {
            remove_quietly(&cleaned_path);
            return Ok(());
        };
        let marker = self.dir.join(COMPACTED_MARKER);
        if !marker.exists() {
            write_index_files(self.dir.clone(), vec![(marker, b"1\n".to_vec())]).await?;
        }
        let log_path = first.path.clone();
        throttle.turn().await;
        let held = glommio::executor()
            .spawn_blocking(move || -> Result<Vec<std::fs::File>, StorageError> {
                let mut held = remove_files(&index_paths)?;
                held.extend(std::fs::File::open(&log_path).ok());
                // The new contents are synced: the rename may be lost in a
                // crash (the old segment stays, just as valid), never torn.
                std::fs::rename(&cleaned_path, &log_path)
                    .map_err(StorageError::io("renaming", &log_path))?;
                Ok(held)
            })
            .await?;
        // The old first segment's file, renamed over, closes off the shard.
        release_later(held);
        throttle.turn().await;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&first.path)
            .await
            .map_err(StorageError::glommio("opening", &first.path))?;
        rebuilt.file = Some(Rc::new(file));
        let evicted = {
            let mut state = self.state.borrow_mut();
            for merged in &group[1..] {
                state.segments.remove(&merged.base_offset);
            }
            state.segments.insert(first.base_offset, rebuilt);
            // Cached batches of the old segments are not served again.
            self.evict_tail_below(&mut state, last.next_offset)
        };
        free_in_steps(evicted).await;
        // The rest of the group goes once the rename is on disk (until
        // then, recovery needs them); a failure leaves them to the next
        // swap or delete. The directory is synced once per pass otherwise.
        if group.len() > 1 {
            self.merged_away
                .borrow_mut()
                .extend(group[1..].iter().map(|s| s.path.clone()));
            throttle.turn().await;
            self.remove_merged_away().await?;
        }
        // Reads in flight keep the old files open through their own
        // handles; the new index files are written at the end of the pass.
        Ok(())
    }
}

/// A new segment being written by the cleaner: its `.cleaned` file, the
/// bytes not yet written, and its in-memory state (indexes).
struct Rewrite {
    file: DmaFile,
    path: PathBuf,
    writer: ChunkWriter,
    segment: Segment,
}

/// Batches gathered for writing, block-aligned, to a new segment file.
#[derive(Default)]
struct ChunkWriter {
    /// Bytes not yet written, from `written` on.
    pending: Vec<u8>,
    /// File position of `pending[0]`: a multiple of the block size.
    written: u64,
}

impl ChunkWriter {
    fn push(
        &mut self,
        segment: &mut Segment,
        header: &BatchHeader,
        batch: &[u8],
        config: &LogConfig,
    ) {
        let position = self.written + self.pending.len() as u64;
        segment.index_batch(header, batch, position, config.index_interval_bytes);
        self.pending.extend_from_slice(batch);
    }

    /// Writes the whole blocks gathered (returning how many bytes); keeps
    /// the partial last one.
    async fn write_full_blocks(
        &mut self,
        file: &DmaFile,
        path: &Path,
    ) -> Result<u64, StorageError> {
        let whole = segment::align_down(self.pending.len() as u64) as usize;
        if whole == 0 {
            return Ok(0);
        }
        let mut buffer = file.alloc_dma_buffer(whole);
        buffer
            .as_bytes_mut()
            .copy_from_slice(&self.pending[..whole]);
        write_block_aligned(file, path, self.written, buffer).await?;
        self.pending.drain(..whole);
        self.written += whole as u64;
        Ok(whole as u64)
    }

    /// Writes the rest, padded to a block, and cuts the file to its size.
    async fn finish(&mut self, file: &DmaFile, path: &Path) -> Result<u64, StorageError> {
        let size = self.written + self.pending.len() as u64;
        if !self.pending.is_empty() {
            let padded = segment::align_up(self.pending.len() as u64) as usize;
            let mut buffer = file.alloc_dma_buffer(padded);
            let target = buffer.as_bytes_mut();
            target[..self.pending.len()].copy_from_slice(&self.pending);
            target[self.pending.len()..].fill(0);
            write_block_aligned(file, path, self.written, buffer).await?;
        }
        file.truncate(size)
            .await
            .map_err(StorageError::glommio("truncating", path))?;
        Ok(size)
    }
}

impl PartitionLog {
    /// Scans `segment` from its start in steps of [`STEP_BYTES`], resting
    /// between steps, until `visit` stops it or the data ends.
    async fn scan_in_steps(
        &self,
        segment: &Cleanable,
        throttle: &Throttle,
        mut visit: impl FnMut(&BatchHeader, &[u8]) -> Visit,
    ) -> Result<(), StorageError> {
        let mut batches = Batches::of(self, segment);
        while batches.step(throttle, &mut visit).await? {
            self.step_aside(batches.last_step).await;
        }
        Ok(())
    }
}

/// Where the cleaner reads a segment's batches: from the tail cache when
/// it holds the whole segment (a recent, dirty one: no device read, so
/// the cleaner's I/O does not queue beside produce's), else from the
/// file, throttled. The cached buffers are shared, not copied; holding
/// them keeps at most one segment's worth alive past an eviction.
struct Batches<'a> {
    from: Source<'a>,
    /// The pass's bytes read from files and from the cache.
    reads: &'a Cell<(u64, u64)>,
    /// How long the last step took: its reading and visiting, not its
    /// wait for a turn nor the throttle's (the rest after it is
    /// proportional to this).
    last_step: Duration,
}

enum Source<'a> {
    Cached {
        batches: Vec<Bytes>,
        next: usize,
    },
    File {
        segment: &'a Cleanable,
        position: u64,
        /// Read ahead and kept between steps: a step that stops part way
        /// through what was read goes on from there without reading again.
        window: Window,
    },
}

impl<'a> Batches<'a> {
    fn of(log: &'a PartitionLog, segment: &'a Cleanable) -> Self {
        let from = match log.cached_segment(segment.base_offset, segment.next_offset, segment.size)
        {
            Some(batches) => Source::Cached { batches, next: 0 },
            None => Source::File {
                segment,
                position: 0,
                window: Window::new(CHUNK_BYTES),
            },
        };
        Batches {
            from,
            reads: &log.cleaner_reads,
            last_step: Duration::ZERO,
        }
    }

    /// Visits the batches of one step (about [`STEP_BYTES`] or
    /// [`STEP_TIME`], whichever ends it first); `false` once `visit`
    /// stopped or the segment ended.
    async fn step(
        &mut self,
        throttle: &Throttle,
        mut visit: impl FnMut(&BatchHeader, &[u8]) -> Visit,
    ) -> Result<bool, StorageError> {
        throttle.turn().await;
        let started = Instant::now();
        let mut scanned = 0usize;
        let mut stopped = false;
        let step_done = |scanned: usize| scanned >= STEP_BYTES || started.elapsed() >= STEP_TIME;
        let (files, cache) = self.reads.get();
        match &mut self.from {
            Source::Cached { batches, next } => {
                while let Some(batch) = batches.get(*next) {
                    let header = BatchHeader::parse(batch)
                        .ok_or_else(|| StorageError::CorruptMessage("cached batch".into()))?;
                    *next += 1;
                    scanned += batch.len();
                    if let Visit::Stop = visit(&header, batch) {
                        stopped = true;
                        break;
                    }
                    if step_done(scanned) {
                        break;
                    }
                }
                self.reads.set((files, cache + scanned as u64));
                self.last_step = started.elapsed();
                Ok(!stopped && *next < batches.len())
            }
            Source::File {
                segment,
                position,
                window,
            } => {
                let read_before = window.bytes_read();
                let (stopped_at, end) = segment::scan_window(
                    window,
                    &segment.file,
                    &segment.path,
                    *position,
                    segment.size,
                    false,
                    |_, header, bytes| {
                        scanned += bytes.len();
                        match visit(header, bytes) {
                            Visit::Stop => {
                                stopped = true;
                                Visit::Stop
                            }
                            Visit::Continue if step_done(scanned) => Visit::Stop,
                            Visit::Continue => Visit::Continue,
                        }
                    },
                )
                .await?;
                self.last_step = started.elapsed();
                let read = window.bytes_read() - read_before;
                self.reads.set((files + read, cache));
                throttle.observe(read).await;
                *position = stopped_at;
                Ok(!stopped && end == ScanEnd::Stopped)
            }
        }
    }
}

impl PartitionLog {
    /// Rests after a step that took `step`, so the cleaner's share of the
    /// shard stays small, and lets every other task queue (produce, fetch)
    /// run first: the shard's queues switch only every 100 ms otherwise.
    async fn step_aside(&self, step: Duration) {
        self.cleaner_stepping
            .set(self.cleaner_stepping.get() + step);
        let rest = step * REST_PER_STEP;
        if rest >= Duration::from_micros(50) {
            glommio::timer::sleep(rest).await;
        }
        glommio::executor().yield_task_queue_now().await;
    }
}

fn remove_quietly(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), %error, "could not remove a cleaner's file");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::storage::record::{Record, encode_batch};
    use crate::storage::test_support::{open, open_with_cache, run};

    /// offset -> (key, value)
    type Contents = BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>;

    fn compacted() -> LogConfig {
        LogConfig {
            cleanup_compact: true,
            cleanup_delete: false,
            segment_bytes: 2_000,
            index_interval_bytes: 100,
            delete_retention_ms: 1_000,
            ..LogConfig::default()
        }
    }

    fn keyed(key: &str, value: Option<&str>, timestamp: i64) -> Bytes {
        encode_batch(
            &[Record {
                key: Some(Bytes::copy_from_slice(key.as_bytes())),
                value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            }],
            timestamp,
        )
    }

    /// Every record below the high watermark, read as a consumer would.
    async fn contents(log: &PartitionLog) -> Contents {
        let mut records = Contents::new();
        let mut next = log.log_start_offset();
        while next < log.high_watermark() {
            let outcome = log.read(next, 1 << 16).await.expect("read");
            assert!(!outcome.batches.is_empty(), "nothing at {next}");
            for batch in outcome.batches {
                let header = BatchHeader::parse(&batch).expect("header");
                assert!(crate::storage::batch::crc_matches(&batch, &header));
                assert!(header.last_offset() >= next.0, "went back");
                compact::for_each_record(&batch, &header, |r| {
                    records.insert(
                        r.offset,
                        (
                            r.key.map(<[u8]>::to_vec).unwrap_or_default(),
                            (!r.tombstone).then(|| format!("{}", r.offset).into_bytes()),
                        ),
                    );
                })
                .expect("records");
                next = Offset(header.last_offset() + 1);
            }
        }
        records
    }

    fn active_base(log: &PartitionLog) -> i64 {
        log.state
            .borrow()
            .segments
            .keys()
            .next_back()
            .map_or(0, |o| o.0)
    }

    /// What compaction must leave: below `active`, only each key's latest
    /// record (tombstones while `tombstones_stay`); the active segment as
    /// it was.
    fn expected(all: &Contents, active: i64, tombstones_stay: bool) -> Contents {
        let mut latest: HashMap<&[u8], i64> = HashMap::new();
        for (offset, (key, _)) in all.iter().filter(|(o, _)| **o < active) {
            latest.insert(key, *offset);
        }
        all.iter()
            .filter(|(offset, (key, value))| {
                **offset >= active
                    || (latest.get(key.as_slice()) == Some(offset)
                        && (value.is_some() || tombstones_stay))
            })
            .map(|(o, r)| (*o, r.clone()))
            .collect()
    }

    #[test]
    fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
        // Dirty segments read from the tail cache, and (no cache) from the
        // files: the same result.
        run(|dir| latest_record_per_key(dir, 1 << 20));
        run(|dir| latest_record_per_key(dir, 0));
    }

    async fn latest_record_per_key(dir: PathBuf, cache_bytes: usize) {
        {
            let log = open_with_cache(&dir, compacted(), cache_bytes).await;
            let t = crate::types::now_ms();
            for i in 0..600 {
                let key = format!("key-{}", i % 40);
                log.append(&keyed(&key, Some(&format!("v{i}")), t), t)
                    .expect("append");
            }
            log.append(&keyed("key-7", None, t), t).expect("append");
            for i in 0..60 {
                let key = format!("key-{}", 8 + i % 5);
                log.append(&keyed(&key, Some("late"), t), t)
                    .expect("append");
            }
            log.flush().await.expect("flush");
            let before = contents(&log).await;
            assert_eq!(before.len(), 661);
            let active = active_base(&log);
            assert!(active > 400, "many segments closed");

            let outcome = log
                .clean(
                    t + 10,
                    &mut OffsetMap::within(1 << 20),
                    &Throttle::unlimited(),
                )
                .await
                .expect("clean")
                .expect("due");
            assert!(outcome.records_removed > 500, "{outcome:?}");
            assert!(outcome.bytes_after < outcome.bytes_before);
            if cache_bytes > 0 {
                assert!(outcome.bytes_read_from_cache > 0, "{outcome:?}");
            } else {
                assert_eq!(outcome.bytes_read_from_cache, 0, "{outcome:?}");
                assert!(outcome.bytes_read_from_files > 0, "{outcome:?}");
            }
            let after = contents(&log).await;
            assert_eq!(after, expected(&before, active, true));
            assert!(after.values().any(|(k, v)| k == b"key-7" && v.is_none()));
            assert!(
                log.clean(
                    t + 20,
                    &mut OffsetMap::within(1 << 20),
                    &Throttle::unlimited()
                )
                .await
                .expect("clean")
                .is_none(),
                "nothing dirty"
            );

            // Past delete.retention.ms the tombstone goes, and key-7 with it.
            log.clean(
                t + 5_000,
                &mut OffsetMap::within(1 << 20),
                &Throttle::unlimited(),
            )
            .await
            .expect("clean")
            .expect("due");
            let later = contents(&log).await;
            assert_eq!(later, expected(&before, active, false));
            assert!(!later.values().any(|(k, _)| k == b"key-7"));

            // A restart reads the compacted log (offset gaps and all).
            log.close().await.expect("close");
            drop(log);
            assert!(dir.join(COMPACTED_MARKER).exists());
            let log = open_with_cache(&dir, compacted(), cache_bytes).await;
            assert_eq!(contents(&log).await, later);
            assert_eq!(log.high_watermark(), Offset(661));
            // The cleaner's progress survived: nothing is dirty again. The first
            // look after a restart only goes through the tombstones.
            let checkpoint = std::fs::read_to_string(dir.join(CLEANER_CHECKPOINT));
            assert_eq!(checkpoint.expect("checkpoint"), active.to_string());
            assert_eq!(log.cleaned_to.get(), Offset(active));
            let look = log
                .clean(
                    t + 5_020,
                    &mut OffsetMap::within(1 << 20),
                    &Throttle::unlimited(),
                )
                .await;
            let look = look.expect("clean").expect("tombstones looked at once");
            assert_eq!(
                (look.keys, look.segments_rewritten, look.records_removed),
                (0, 0, 0)
            );
            assert!(
                log.clean(
                    t + 5_040,
                    &mut OffsetMap::within(1 << 20),
                    &Throttle::unlimited()
                )
                .await
                .expect("clean")
                .is_none(),
                "nothing dirty after a restart"
            );
            log.close().await.expect("close");
        }
    }

    #[test]
    fn a_map_too_small_for_every_key_compacts_over_several_passes() {
        run(|dir| async move {
            let log = open(&dir, compacted()).await;
            let t = crate::types::now_ms();
            for i in 0..600 {
                let key = format!("key-{}", i % 40);
                log.append(&keyed(&key, Some(&format!("v{i}")), t), t)
                    .expect("append");
            }
            log.append(&keyed("key-3", None, t), t).expect("append");
            for i in 0..40 {
                log.append(&keyed("tail", Some(&format!("t{i}")), t), t)
                    .expect("append");
            }
            log.flush().await.expect("flush");
            let before = contents(&log).await;
            let active = active_base(&log);
            let mut map = OffsetMap::with_capacity(12);
            let mut passes = 0;
            while let Some(outcome) = log
                .clean(t + 10, &mut map, &Throttle::unlimited())
                .await
                .expect("clean")
            {
                passes += 1;
                assert!(outcome.keys <= 12, "{outcome:?}");
                assert!(passes < 200, "no end to the passes");
                // Whatever a pass leaves is a log a reader may see.
                let now = contents(&log).await;
                for (offset, record) in &now {
                    assert_eq!(before.get(offset), Some(record));
                }
            }
            assert!(passes > 3, "the map filled, more than one pass: {passes}");
            assert_eq!(contents(&log).await, expected(&before, active, true));
            log.close().await.expect("close");
        });
    }

    #[test]
    fn the_map_stays_within_its_memory() {
        for bytes in [1 << 20, 128 << 20, 1_000_000, 3 << 20] {
            let map = OffsetMap::within(bytes);
            let slots = (map.capacity as u64 * 8).div_ceil(7).next_power_of_two();
            assert!(slots * MAP_BYTES_PER_KEY <= bytes, "{bytes}: {slots} slots");
            assert!(slots * 2 * MAP_BYTES_PER_KEY > bytes, "{bytes}: half used");
        }
        let mut map = OffsetMap::within(1 << 20);
        for i in 0..map.capacity {
            map.put(format!("key-{i}").as_bytes(), i as i64);
        }
        let capacity = map.offsets.capacity();
        assert!(capacity >= map.capacity && capacity < map.capacity * 8 / 7 + 2);
        assert_eq!(map.get(b"key-5"), Some(5));
        assert_eq!(map.get(b"absent"), None);
    }

    #[test]
    fn a_tombstone_in_a_segment_left_alone_still_goes_after_its_delay() {
        run(|dir| async move {
            let log = open(&dir, compacted()).await;
            let t = crate::types::now_ms();
            // Every key once: a pass removes nothing and rewrites nothing.
            for i in 0..40 {
                log.append(&keyed(&format!("key-{i}"), Some("only"), t), t)
                    .expect("append");
            }
            log.append(&keyed("never-set", None, t), t).expect("append");
            for i in 40..80 {
                log.append(&keyed(&format!("key-{i}"), Some("only"), t), t)
                    .expect("append");
            }
            log.flush().await.expect("flush");
            let before = contents(&log).await;
            let active = active_base(&log);
            assert!(active > 41, "the tombstone's segment is closed");

            let first = log
                .clean(
                    t + 10,
                    &mut OffsetMap::within(1 << 20),
                    &Throttle::unlimited(),
                )
                .await
                .expect("clean")
                .expect("due");
            assert_eq!(first.segments_rewritten, 0, "{first:?}");
            assert_eq!(contents(&log).await, before);
            assert!(
                log.clean(
                    t + 20,
                    &mut OffsetMap::within(1 << 20),
                    &Throttle::unlimited()
                )
                .await
                .expect("clean")
                .is_none()
            );
            // A restart in between: nothing is dirty (the checkpoint), and
            // the tombstone still goes when its delay has passed.
            log.close().await.expect("close");
            drop(log);
            let log = open(&dir, compacted()).await;

            let later = log
                .clean(
                    t + 5_000,
                    &mut OffsetMap::within(1 << 20),
                    &Throttle::unlimited(),
                )
                .await
                .expect("clean");
            let later = later.expect("the tombstone's delay passed: due");
            assert_eq!(later.records_removed, 1, "{later:?}");
            let after = contents(&log).await;
            assert_eq!(after, expected(&before, active, false));
            assert!(!after.values().any(|(k, _)| k == b"never-set"));
            log.close().await.expect("close");
        });
    }

    #[test]
    fn the_cleaner_steps_around_produce_work() {
        run(|dir| async move {
            let log = open(&dir, compacted()).await;
            let t = crate::types::now_ms();
            let foreground = Rc::new(Foreground::default());
            let throttle = Throttle::unlimited().yielding_to(foreground.clone());
            let mut map = OffsetMap::within(1 << 20);
            for pass in 1..=3_i64 {
                for i in 0..300 {
                    let key = format!("key-{}", i % 10);
                    log.append(&keyed(&key, Some(&format!("{pass}-{i}")), t), t)
                        .expect("append");
                }
                log.flush().await.expect("flush");
                let before = contents(&log).await;
                let active = active_base(&log);
                // 1: produce work in flight through the whole pass; 2: for
                // its first 3 ms; 3: none.
                let held = (pass < 3).then(|| foreground.begin());
                if pass == 2 {
                    glommio::spawn_local(async move {
                        glommio::timer::sleep(Duration::from_millis(3)).await;
                        drop(held);
                    })
                    .detach();
                }
                let outcome = log
                    .clean(t + 10 * pass, &mut map, &throttle)
                    .await
                    .expect("clean")
                    .expect("a pass");
                assert!(outcome.segments_rewritten > 0);
                assert_eq!(contents(&log).await, expected(&before, active, true));
                let (waited, forced) = (outcome.waited_for_produce, outcome.forced_turns);
                match pass {
                    1 => {
                        // Every turn waited the whole bound, then went ahead.
                        assert!(forced > 0);
                        let bound = MAX_TURN_WAIT * u32::try_from(forced).expect("turns");
                        assert!(waited >= bound, "waited {waited:?} for {forced} turns");
                    }
                    2 => {
                        // The first turn waited for the work to end.
                        assert_eq!(forced, 0);
                        assert!(waited >= Duration::from_millis(2), "waited {waited:?}");
                    }
                    _ => assert_eq!((waited, forced), (Duration::ZERO, 0)),
                }
            }
            log.close().await.expect("close");
        });
    }

    #[test]
    fn a_steps_time_leaves_out_its_wait_for_a_turn() {
        // The rest after a step is proportional to the step's own time, so
        // that time must not count the wait for a turn before it: with
        // produce work in flight throughout, every turn waits the whole
        // bound, and a pass that counted those waits as steps rested four
        // times as long again (perf/RESULTS.md, 2026-12-07 (day)).
        run(|dir| async move {
            let config = LogConfig {
                segment_bytes: 200_000,
                ..compacted()
            };
            let log = open(&dir, config).await;
            let t = crate::types::now_ms();
            let value = "v".repeat(150);
            for i in 0..2_000 {
                log.append(&keyed(&format!("key-{}", i % 50), Some(&value), t), t)
                    .expect("append");
            }
            log.flush().await.expect("flush");
            let foreground = Rc::new(Foreground::default());
            let throttle = Throttle::unlimited().yielding_to(foreground.clone());
            let _produce = foreground.begin();
            let outcome = log
                .clean(t + 10, &mut OffsetMap::within(1 << 20), &throttle)
                .await
                .expect("clean")
                .expect("a pass");
            assert!(outcome.segments_rewritten >= 2, "{outcome:?}");
            // Steps of at most 100 µs or 64 KiB against waits of 5 ms each:
            // more than twenty turns, most of them before steps.
            assert!(outcome.forced_turns > 20, "{outcome:?}");
            assert!(
                outcome.stepping * 4 < outcome.waited_for_produce,
                "stepping {:?} against {:?} waiting: {outcome:?}",
                outcome.stepping,
                outcome.waited_for_produce
            );
            log.close().await.expect("close");
        });
    }

    #[test]
    fn the_throttle_keeps_io_below_its_rate() {
        run(|_| async move {
            let unlimited = Throttle::unlimited();
            let started = Instant::now();
            for _ in 0..100 {
                unlimited.observe(1 << 30).await;
            }
            let unthrottled = started.elapsed();
            // 1 MB/s: 600 KB take at least half a second, whatever slack
            // the last window leaves.
            let throttle = Throttle::new(1_000_000.0);
            let started = Instant::now();
            for _ in 0..6 {
                throttle.observe(100_000).await;
                glommio::timer::sleep(Duration::from_millis(40)).await;
            }
            throttle.observe(0).await;
            let throttled = started.elapsed();
            assert!(
                throttled >= Duration::from_millis(500),
                "600 KB at 1 MB/s took {throttled:?}"
            );
            assert!(unthrottled < throttled, "{unthrottled:?} vs {throttled:?}");
        });
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        files
    }

    /// Each key's latest record below `active`.
    fn latest(records: &Contents, active: i64) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
        let mut latest = BTreeMap::new();
        for (offset, (key, value)) in records.range(..active) {
            latest.insert(key.clone(), (*offset, value.clone()));
        }
        latest
    }

    /// A first pass leaves one small segment for every segment rolled; the
    /// next puts neighbours together into segments of up to
    /// `segment.bytes`, in the log and on disk.
    #[test]
    fn small_compacted_segments_are_merged_up_to_segment_bytes() {
        run(|dir| async move {
            let config = compacted();
            let log = open(&dir, config).await;
            let t = crate::types::now_ms();
            let mut i = 0;
            let mut update = |log: &PartitionLog, count: usize| {
                for _ in 0..count {
                    let key = format!("key-{}", i % 40);
                    log.append(&keyed(&key, Some(&format!("v{i}")), t), t)
                        .expect("append");
                    i += 1;
                }
            };
            update(&log, 600);
            log.flush().await.expect("flush");
            let map = &mut OffsetMap::within(1 << 20);
            let first = log.clean(t + 10, map, &Throttle::unlimited()).await;
            let first = first.expect("clean").expect("due");
            // Rolled at segment.bytes, no two of them fit in one.
            assert_eq!(
                first.segments_written, first.segments_rewritten,
                "{first:?}"
            );
            let closed_before = log.state.borrow().segments.len() - 1;
            assert!(closed_before > 10, "{closed_before} closed segments");

            update(&log, 800);
            log.flush().await.expect("flush");
            let before = contents(&log).await;
            let active = active_base(&log);
            let second = log.clean(t + 20, map, &Throttle::unlimited()).await;
            let second = second.expect("clean").expect("due");
            // The first pass's small segments went into a few, each up to
            // segment.bytes (by their sizes before cleaning); each of the
            // new, full ones into its own.
            assert!(
                second.segments_written < second.segments_rewritten,
                "{second:?}"
            );
            let first_range = log.state.borrow().segments.range(..Offset(600)).count();
            assert!(
                first_range * 5 < closed_before,
                "{first_range} of {closed_before}"
            );
            assert_eq!(contents(&log).await, expected(&before, active, true));

            // A third pass puts those together too.
            update(&log, 100);
            log.flush().await.expect("flush");
            let before = contents(&log).await;
            let active = active_base(&log);
            let third = log.clean(t + 30, map, &Throttle::unlimited()).await;
            let third = third.expect("clean").expect("due");
            assert!(
                third.segments_written * 4 < third.segments_rewritten,
                "{third:?}"
            );
            let after = contents(&log).await;
            assert_eq!(after, expected(&before, active, true));
            {
                let state = log.state.borrow();
                let closed: Vec<&Segment> = state.segments.values().rev().skip(1).collect();
                // Without merging: 59, one for every segment ever rolled.
                // With it: the third pass's 4 full dirty segments (grouped
                // by their sizes before cleaning, each alone) and what came
                // before them in one or two.
                assert!(closed.len() <= 7, "{} closed segments", closed.len());
            }
            let in_memory = log.state.borrow().segments.len();
            assert_eq!(segment_files(&dir).len(), in_memory, "no file left behind");
            // Each new file ends at its last batch, not at the block padding.
            for segment in log.state.borrow().segments.values().rev().skip(1) {
                let path = &segment.log_path;
                let length = std::fs::metadata(path).expect("stat").len();
                assert_eq!(length, segment.size_bytes, "{}", path.display());
            }
            log.close().await.expect("close");
            drop(log);
            let indexes = std::fs::read_dir(&dir)
                .expect("list")
                .filter(|e| {
                    let path = e.as_ref().expect("entry").path();
                    path.extension().is_some_and(|x| x == "index")
                })
                .count();
            assert_eq!(
                indexes, in_memory,
                "an index file for each segment, no more"
            );
            let log = open(&dir, config).await;
            assert_eq!(contents(&log).await, after);
            assert_eq!(log.state.borrow().segments.len(), in_memory);
            // The merged segments' index files were written and fit them.
            let indexed = {
                let state = log.state.borrow();
                let closed = state.segments.values().rev().skip(1);
                closed.filter(|s| s.indexes_written).count()
            };
            assert_eq!(indexed, in_memory - 1);
            log.close().await.expect("close");
        });
    }

    /// Killed after a merge's rename but before all of the merged
    /// segments' files were removed (oldest first, so the newest stay): the
    /// new first segment is cut where an old one still stands, and that one
    /// keeps its records. Nothing is lost, nothing is read twice, every
    /// key's latest record stays.
    /// 600 updates over 40 keys, with a key written once every 10 (it
    /// stays through every pass, so the first pass's small segments hold
    /// live records of their own), cleaned once; then 800 more updates,
    /// flushed and not yet cleaned: the next pass merges segments.
    async fn cleaned_once_then_updated(log: &PartitionLog, t: i64, map: &mut OffsetMap) {
        let update = |i: usize| {
            let key = format!("key-{}", i % 40);
            log.append(&keyed(&key, Some(&format!("v{i}")), t), t)
                .expect("append");
        };
        for i in 0..600 {
            update(i);
            if i.is_multiple_of(10) {
                log.append(&keyed(&format!("once-{i}"), Some("once"), t), t)
                    .expect("append");
            }
        }
        log.flush().await.expect("flush");
        log.clean(t + 10, map, &Throttle::unlimited())
            .await
            .expect("clean")
            .expect("due");
        (600..1400).for_each(update);
        log.flush().await.expect("flush");
    }

    #[test]
    fn a_crash_between_a_merge_and_its_removals_leaves_a_whole_log() {
        run(|dir| async move {
            let config = compacted();
            let log = open(&dir, config).await;
            let t = crate::types::now_ms();
            let map = &mut OffsetMap::within(1 << 20);
            cleaned_once_then_updated(&log, t, map).await;
            let before = contents(&log).await;
            let active = active_base(&log);
            let checkpoint = std::fs::read(dir.join(CLEANER_CHECKPOINT)).expect("checkpoint");
            let saved: Vec<(PathBuf, Vec<u8>)> = segment_files(&dir)
                .into_iter()
                .map(|p| {
                    let bytes = std::fs::read(&p).expect("read");
                    (p, bytes)
                })
                .collect();
            let merged = log.clean(t + 20, map, &Throttle::unlimited()).await;
            let merged = merged.expect("clean").expect("due");
            assert!(
                merged.segments_written < merged.segments_rewritten,
                "{merged:?}"
            );
            let after = contents(&log).await;
            let merged_segments = log.state.borrow().segments.len();
            log.close().await.expect("close");
            drop(log);

            // What a kill before the end of the pass leaves: the merged
            // segments' index files not yet written, the checkpoint as it
            // was, and of each merge's removed files (oldest first) none,
            // some, or all but the last on disk.
            let mut removed: Vec<Vec<&(PathBuf, Vec<u8>)>> = Vec::new();
            for file in &saved {
                if file.0.exists() {
                    removed.push(Vec::new());
                    for extension in ["index", "timeindex"] {
                        let _ = std::fs::remove_file(file.0.with_extension(extension));
                    }
                } else if let Some(group) = removed.last_mut() {
                    group.push(file);
                }
            }
            std::fs::write(dir.join(CLEANER_CHECKPOINT), checkpoint).expect("checkpoint");
            removed.retain(|g| !g.is_empty());
            assert!(removed.len() > 2, "{} merges", removed.len());
            let mut put_back = 0;
            let mut partly = 0;
            for (n, group) in removed.iter().enumerate() {
                let on_disk = match n % 3 {
                    0 => 0,
                    1 => 1.min(group.len() - 1),
                    _ => group.len() - 1,
                };
                if on_disk > 0 {
                    partly += 1;
                }
                for (path, bytes) in group.iter().skip(on_disk) {
                    std::fs::write(path, bytes).expect("put back");
                    put_back += 1;
                }
            }
            assert!(partly > 0, "a merge with some of its removals on disk");
            let log = open(&dir, config).await;
            let recovered = contents(&log).await;
            for (offset, record) in &recovered {
                assert_eq!(before.get(offset), Some(record), "at {offset}");
            }
            for (offset, (key, _)) in &after {
                assert!(recovered.contains_key(offset), "{offset} lost ({key:?})");
            }
            let segments = log.state.borrow().segments.len();
            assert_eq!(
                segments,
                merged_segments + put_back,
                "the old ones are read"
            );
            assert_eq!(latest(&recovered, active), latest(&after, active));
            assert_eq!(log.high_watermark(), Offset(1460));

            // The next pass merges again, and leaves no file behind.
            log.append(&keyed("key-0", Some("last"), t), t)
                .expect("append");
            log.flush().await.expect("flush");
            let again = log.clean(t + 30, map, &Throttle::unlimited()).await;
            let again = again.expect("clean").expect("due");
            assert!(
                again.segments_written < again.segments_rewritten,
                "{again:?}"
            );
            assert_eq!(contents(&log).await.len(), after.len() + 1);
            let in_memory = log.state.borrow().segments.len();
            assert_eq!(segment_files(&dir).len(), in_memory);
            log.close().await.expect("close");
        });
    }

    #[test]
    fn a_read_in_flight_across_a_merge_skips_nothing() {
        run(|dir| async move {
            // No tail cache: every read goes to the segment files.
            let log = open_with_cache(&dir, compacted(), 0).await;
            let t = crate::types::now_ms();
            let map = &mut OffsetMap::within(1 << 20);
            cleaned_once_then_updated(&log, t, map).await;
            let before = contents(&log).await;
            // Offsets in the gap the first pass left at the end of a closed
            // segment: a read there finds nothing in its segment and has to
            // go on to the next.
            let ranges: Vec<(i64, i64)> = log
                .state
                .borrow()
                .segments
                .values()
                .map(|s| (s.base_offset.0, s.next_offset.0))
                .collect();
            let gaps: Vec<(i64, i64, Offset)> = ranges[..ranges.len() - 1]
                .iter()
                .filter_map(|&(base, next)| {
                    let (last, _) = before.range(base..next).next_back()?;
                    (last + 1 < next).then_some((base, next, Offset(last + 1)))
                })
                .collect();
            assert!(gaps.len() > 3, "{gaps:?} in {ranges:?}");

            // Each read starts (and waits on its segment's file) before the
            // second pass merges segments, and ends after it.
            let mut reads: Vec<_> = gaps
                .iter()
                .map(|&(_, _, offset)| Box::pin(log.read(offset, 1 << 16)))
                .collect();
            let mut done = Vec::new();
            for read in &mut reads {
                done.push(futures_lite::future::poll_once(read.as_mut()).await);
            }
            let second = log.clean(t + 20, map, &Throttle::unlimited()).await;
            let second = second.expect("clean").expect("due");
            assert!(
                second.segments_rewritten > second.segments_written,
                "{second:?}"
            );
            let after = contents(&log).await;
            let mut merged_under_a_read = 0;
            for ((read, first_poll), &(base, old_next, offset)) in
                reads.into_iter().zip(done).zip(&gaps)
            {
                let in_flight = first_poll.is_none();
                let outcome = match first_poll {
                    Some(outcome) => outcome,
                    None => read.await,
                }
                .expect("read");
                let mut first = None;
                for batch in &outcome.batches {
                    let header = BatchHeader::parse(batch).expect("header");
                    compact::for_each_record(batch, &header, |r| {
                        if r.offset >= offset.0 && first.is_none() {
                            first = Some(r.offset);
                        }
                    })
                    .expect("records");
                }
                let expected = after.range(offset.0..).next().map(|(o, _)| *o);
                assert_eq!(
                    first, expected,
                    "read from {offset:?} (segment {base}..{old_next})"
                );
                let now_ends = log
                    .state
                    .borrow()
                    .segments
                    .get(&Offset(base))
                    .map(|s| s.next_offset.0);
                if in_flight && now_ends.is_some_and(|end| end > old_next) {
                    merged_under_a_read += 1;
                }
            }
            // The case that matters happened: a read was under way in a
            // segment that the pass merged with the ones after it.
            assert!(merged_under_a_read > 0, "{second:?}");
        });
    }

    #[test]
    fn a_crash_part_way_through_a_swap_leaves_a_readable_log() {
        run(|dir| async move {
            let log = open(&dir, compacted()).await;
            let t = crate::types::now_ms();
            for i in 0..300 {
                let key = format!("key-{}", i % 10);
                log.append(&keyed(&key, Some("x"), t), t).expect("append");
            }
            log.flush().await.expect("flush");
            let before = contents(&log).await;
            log.close().await.expect("close");
            drop(log);
            // Killed after writing a `.cleaned` file, and after removing a
            // segment's index files but before the rename.
            let first = dir.join(segment::file_name(Offset(0), "log"));
            std::fs::write(dir.join(format!("{}.log.cleaned", "0".repeat(20))), b"junk")
                .expect("write");
            std::fs::remove_file(first.with_extension("index")).expect("remove");
            let log = open(&dir, compacted()).await;
            assert_eq!(contents(&log).await, before, "the old segments stand");
            assert!(
                !dir.join(format!("{}.log.cleaned", "0".repeat(20))).exists(),
                "the unfinished file is gone"
            );
            // Killed after the rename, before the new index files.
            log.clean(
                t + 10,
                &mut OffsetMap::within(1 << 20),
                &Throttle::unlimited(),
            )
            .await
            .expect("clean")
            .expect("due");
            let after = contents(&log).await;
            log.close().await.expect("close");
            drop(log);
            for index in std::fs::read_dir(&dir).expect("list") {
                let path = index.expect("entry").path();
                if path
                    .extension()
                    .is_some_and(|e| e == "index" || e == "timeindex")
                {
                    std::fs::write(&path, b"").expect("truncate");
                }
            }
            let log = open(&dir, compacted()).await;
            assert_eq!(contents(&log).await, after);
            log.close().await.expect("close");
        });
    }
}
