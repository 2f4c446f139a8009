//! The cleaner's worker: one thread per shard, at the lowest CPU priority
//! Linux has (`SCHED_IDLE`), that reads the segments a pass compacts and
//! writes the new ones. The shard's cleaner task decides what to clean and
//! swaps the results in; the reading, the key hashing, the filtering, the
//! writing and the new file's sync run here.
//!
//! Why a thread and not the shard's background task queue: glommio's
//! shares divide the shard's time between its task queues, but a step of
//! the cleaner that runs is not preempted, and its CPU (user and kernel,
//! the reads and writes it submits included) comes out of the shard's own
//! core. On a busy core that lengthened produce's queueing a few percent
//! at p99 (`perf/RESULTS.md`, 2026-12-03 to 2026-12-06). A `SCHED_IDLE`
//! thread on the same core (it inherits the shard's CPU affinity) runs
//! only when the shard and every other normal thread there wait; a
//! wake-up of the shard preempts it at once. On an idle core it cleans
//! at full speed; on a core that never idles it barely moves.
//!
//! Contract: [`CleanerThread::run`] sends one job and completes with its
//! result; the shard's cleaner runs one pass at a time, so at most one job
//! is queued or running per shard. The thread starts with the first job
//! and ends when its handle is dropped (after the job in hand). A job
//! owns everything it touches (paths, the key map, plain data): no shard
//! state crosses, and what comes back is data the shard applies.

use std::cell::RefCell;
use std::fs::File;
use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tracing::warn;

use super::StorageError;
use crate::storage::batch::{BatchHeader, HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2};
use crate::storage::segment::{self, BLOCK_BYTES};

/// A job for the worker: it gets the thread's throttle.
type Job = Box<dyn FnOnce(&mut Throttle) + Send>;

/// The shard's handle on its cleaner thread.
pub struct CleanerThread {
    bytes_per_second: f64,
    jobs: RefCell<Option<mpsc::Sender<Job>>>,
}

impl CleanerThread {
    /// A worker whose reads and writes together stay below
    /// `bytes_per_second` (Kafka's `log.cleaner.io.max.bytes.per.second`;
    /// not finite or not positive: no bound). Starts nothing yet.
    pub fn new(bytes_per_second: f64) -> CleanerThread {
        CleanerThread {
            bytes_per_second,
            jobs: RefCell::new(None),
        }
    }

    pub fn unlimited() -> CleanerThread {
        CleanerThread::new(f64::INFINITY)
    }

    /// Runs `work` on the worker thread (starting it if it is not running,
    /// or no longer is) and completes with what it returns.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Throttle) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        let (reply, answer) = reply_channel();
        let job: Job = Box::new(move |throttle| reply.send(work(throttle)));
        self.send(job)?;
        answer.await.ok_or(StorageError::CleanerStopped)
    }

    fn send(&self, job: Job) -> Result<(), StorageError> {
        let mut jobs = self.jobs.borrow_mut();
        let job = match jobs.as_ref() {
            Some(sender) => match sender.send(job) {
                Ok(()) => return Ok(()),
                // The thread is gone: start another.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let sender = start(self.bytes_per_second)?;
        sender.send(job).map_err(|_| StorageError::CleanerStopped)?;
        *jobs = Some(sender);
        Ok(())
    }
}

fn start(bytes_per_second: f64) -> Result<mpsc::Sender<Job>, StorageError> {
    let (sender, jobs) = mpsc::channel::<Job>();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("tidelog-cleaner".into())
        .spawn(move || {
            let _span = span.enter();
            lower_priority();
            let mut throttle = Throttle::new(bytes_per_second);
            while let Ok(job) = jobs.recv() {
                // A job that panics answers `None` (its reply is dropped)
                // and leaves the thread to the next one.
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut throttle)));
                if ran.is_err() {
                    warn!("a cleaner job panicked");
                }
            }
        })
        .map_err(|source| StorageError::Io {
            op: "starting the cleaner thread",
            path: PathBuf::new(),
            source,
        })?;
    Ok(sender)
}

/// Puts the calling thread on `SCHED_IDLE` (any thread may), else on
/// nice 19.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the whole call; pid 0 is
    // the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return;
    }
    let error = std::io::Error::last_os_error();
    // SAFETY: plain syscalls on the calling thread's own id.
    let niced = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
    };
    warn!(%error, niced = niced == 0, "the cleaner thread could not take SCHED_IDLE");
}

/// A one-shot reply from the worker thread to the shard's task (the one
/// place a lock is taken: once per job, off the produce and fetch paths).
/// A sender dropped without a value answers `None`.
struct ReplySlot<T> {
    value: Option<T>,
    sender_gone: bool,
    waker: Option<Waker>,
}

struct ReplySender<T> {
    slot: Arc<Mutex<ReplySlot<T>>>,
}

struct ReplyReceiver<T> {
    slot: Arc<Mutex<ReplySlot<T>>>,
}

fn reply_channel<T>() -> (ReplySender<T>, ReplyReceiver<T>) {
    let slot = Arc::new(Mutex::new(ReplySlot {
        value: None,
        sender_gone: false,
        waker: None,
    }));
    (ReplySender { slot: slot.clone() }, ReplyReceiver { slot })
}

impl<T> ReplySender<T> {
    fn send(self, value: T) {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .value = Some(value);
    }
}

impl<T> Drop for ReplySender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            slot.sender_gone = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for ReplyReceiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(value) = slot.value.take() {
            return Poll::Ready(Some(value));
        }
        if slot.sender_gone {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Kafka's `log.cleaner.io.max.bytes.per.second`: the worker's reads and
/// writes together are kept below this rate on average, measured over
/// [`THROTTLE_CHECK_INTERVAL`] windows (Kafka's `Throttler`).
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: f64,
    window_start: Instant,
    window_bytes: f64,
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
            window_start: Instant::now(),
            window_bytes: 0.0,
        }
    }

    fn limited(&self) -> bool {
        self.bytes_per_second.is_finite() && self.bytes_per_second > 0.0
    }

    /// Counts `bytes` of cleaner I/O; sleeps as long as it takes to bring
    /// the window's rate down to the bound when it is above.
    pub fn observe(&mut self, bytes: u64) {
        if !self.limited() {
            return;
        }
        self.window_bytes += bytes as f64;
        let elapsed = self.window_start.elapsed();
        if elapsed < THROTTLE_CHECK_INTERVAL {
            return;
        }
        let due = Duration::try_from_secs_f64(self.window_bytes / self.bytes_per_second)
            .unwrap_or(THROTTLE_SLEEP_MAX);
        if let Some(ahead) = due.checked_sub(elapsed) {
            std::thread::sleep(ahead.min(THROTTLE_SLEEP_MAX));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0.0;
    }
}

/// A closed segment's `.log` file as a job names it.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub path: PathBuf,
    /// Its size when the pass began: every byte a whole batch.
    pub size: u64,
}

/// What a job found of a segment file.
#[derive(Debug)]
pub enum Opened<T> {
    Read(T),
    /// The file is gone or shorter than the pass saw it (retention or
    /// DeleteRecords removed it meanwhile).
    Gone,
}

/// Bytes read from a segment file per read.
const READ_BYTES: usize = 256 * 1024;

/// A buffer whose `len` bytes from `start` begin on a block, as O_DIRECT
/// wants, without `unsafe`: the allocation has a block to spare.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + BLOCK_BYTES as usize];
        let start = raw.as_ptr().align_offset(BLOCK_BYTES as usize);
        Aligned { raw, start, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// A batch read: its position, header and bytes.
pub type Read<'a> = (u64, BatchHeader, &'a [u8]);

/// Whole batches of one segment file, in order, read through O_DIRECT a
/// window at a time. Stops at the pass's size, at zero padding, or at
/// bytes that are not a whole v2 batch (which a closed, recovered segment
/// does not hold: an error).
pub struct BatchReader {
    file: File,
    path: PathBuf,
    size: u64,
    /// The next batch's position.
    position: u64,
    /// File position of `window`'s first byte (a block boundary), and how
    /// many of its bytes were read.
    window_start: u64,
    window: Aligned,
    window_filled: usize,
    /// Bytes read from the file so far.
    pub bytes_read: u64,
}

impl BatchReader {
    pub fn open(segment: &SegmentFile) -> Result<Opened<BatchReader>, StorageError> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&segment.path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Opened::Gone),
            Err(error) => return Err(StorageError::io("opening", &segment.path)(error)),
        };
        let length = file
            .metadata()
            .map_err(StorageError::io("reading the size of", &segment.path))?
            .len();
        if length < segment.size {
            return Ok(Opened::Gone);
        }
        Ok(Opened::Read(BatchReader {
            file,
            path: segment.path.clone(),
            size: segment.size,
            position: 0,
            window_start: 0,
            window: Aligned::new(READ_BYTES),
            window_filled: 0,
            bytes_read: 0,
        }))
    }

    /// The next whole batch and its position; `None` at the end.
    pub fn next_batch(
        &mut self,
        throttle: &mut Throttle,
    ) -> Result<Option<Read<'_>>, StorageError> {
        let position = self.position;
        if self.size - position < HEADER_BYTES as u64 {
            return Ok(None);
        }
        let head = self.fill(position, LOG_OVERHEAD_BYTES, throttle)?;
        let length = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        if length == 0 {
            return Ok(None);
        }
        let size = usize::try_from(length)
            .ok()
            .filter(|l| *l >= HEADER_BYTES - LOG_OVERHEAD_BYTES)
            .map(|l| l + LOG_OVERHEAD_BYTES)
            .filter(|s| *s as u64 <= self.size - position)
            .ok_or_else(|| self.corrupt(position, format!("batch length {length}")))?;
        self.fill(position, size, throttle)?;
        let at = (position - self.window_start) as usize;
        let batch = &self.window.bytes()[at..at + size];
        let header = BatchHeader::parse(batch)
            .filter(|h| h.magic == MAGIC_V2)
            .ok_or_else(|| {
                StorageError::CorruptMessage(format!(
                    "{} at {position}: not a v2 batch",
                    self.path.display()
                ))
            })?;
        self.position = position + size as u64;
        Ok(Some((position, header, batch)))
    }

    fn corrupt(&self, position: u64, what: String) -> StorageError {
        StorageError::CorruptMessage(format!("{} at {position}: {what}", self.path.display()))
    }

    /// Makes `position..position + len` part of the window, reading from
    /// the block it starts in on.
    fn fill(
        &mut self,
        position: u64,
        len: usize,
        throttle: &mut Throttle,
    ) -> Result<&[u8], StorageError> {
        let end = position + len as u64;
        let window_end = self.window_start + self.window_filled as u64;
        if position < self.window_start || end > window_end {
            let start = segment::align_down(position);
            let wanted = (segment::align_up(end) - start) as usize;
            if wanted > self.window.len {
                self.window = Aligned::new(wanted.max(READ_BYTES));
            }
            let target = self.window.bytes_mut();
            let mut filled = 0;
            while filled < target.len() {
                match self
                    .file
                    .read_at(&mut target[filled..], start + filled as u64)
                {
                    Ok(0) => break,
                    Ok(read) => filled += read,
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(error) => return Err(StorageError::io("reading", &self.path)(error)),
                }
                // An O_DIRECT read stops short only at the end of the file.
                if filled % BLOCK_BYTES as usize != 0 {
                    break;
                }
            }
            self.bytes_read += filled as u64;
            throttle.observe(filled as u64);
            self.window_start = start;
            self.window_filled = filled;
            if (self.window_filled as u64) < end - start {
                return Err(self.corrupt(position, "the file ends inside a batch".into()));
            }
        }
        let at = (position - self.window_start) as usize;
        Ok(&self.window.bytes()[at..at + len])
    }
}

/// A new segment file being written by the worker: batches gathered and
/// written through O_DIRECT a block-aligned chunk at a time; `finish`
/// writes the rest padded to a block, cuts the file to its size and syncs
/// it.
pub struct SegmentWriter {
    file: File,
    path: PathBuf,
    /// Bytes not yet written, from `written` on.
    pending: Vec<u8>,
    /// File position of `pending[0]`: a multiple of the block size.
    written: u64,
    buffer: Aligned,
}

/// Bytes gathered before the whole blocks among them are written.
const WRITE_BYTES: usize = 256 * 1024;

impl SegmentWriter {
    /// Creates (or empties) the file at `path`.
    pub fn create(path: &Path) -> Result<SegmentWriter, StorageError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(StorageError::io("creating", path))?;
        Ok(SegmentWriter {
            file,
            path: path.to_path_buf(),
            pending: Vec::with_capacity(WRITE_BYTES),
            written: 0,
            buffer: Aligned::new(WRITE_BYTES),
        })
    }

    /// Where the next batch goes.
    pub fn position(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    pub fn push(&mut self, batch: &[u8], throttle: &mut Throttle) -> Result<(), StorageError> {
        self.pending.extend_from_slice(batch);
        if self.pending.len() >= WRITE_BYTES {
            let whole = segment::align_down(self.pending.len() as u64) as usize;
            self.write(whole, throttle)?;
        }
        Ok(())
    }

    /// Writes `pending[..len]` (zero-padded to a block) at `written`.
    fn write(&mut self, len: usize, throttle: &mut Throttle) -> Result<(), StorageError> {
        let padded = segment::align_up(len as u64) as usize;
        if padded > self.buffer.len {
            self.buffer = Aligned::new(padded);
        }
        let target = &mut self.buffer.bytes_mut()[..padded];
        target[..len].copy_from_slice(&self.pending[..len]);
        target[len..].fill(0);
        self.file
            .write_all_at(target, self.written)
            .map_err(StorageError::io("writing", &self.path))?;
        throttle.observe(padded as u64);
        let whole = segment::align_down(len as u64) as usize;
        self.pending.drain(..whole);
        self.written += whole as u64;
        Ok(())
    }

    /// Writes what is left, cuts the file to its size and syncs it; the
    /// size.
    pub fn finish(mut self, throttle: &mut Throttle) -> Result<u64, StorageError> {
        let size = self.position();
        if !self.pending.is_empty() {
            self.write(self.pending.len(), throttle)?;
        }
        self.file
            .set_len(size)
            .map_err(StorageError::io("truncating", &self.path))?;
        self.file
            .sync_data()
            .map_err(StorageError::io("syncing", &self.path))?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// O_DIRECT needs a real filesystem (not tmpfs): under `target/`.
    fn test_dir() -> tempfile::TempDir {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/storage-tests");
        std::fs::create_dir_all(&root).expect("test root");
        tempfile::tempdir_in(&root).expect("tempdir")
    }

    #[test]
    fn the_throttle_keeps_io_below_its_rate() {
        let mut unlimited = Throttle::new(f64::INFINITY);
        let started = Instant::now();
        for _ in 0..100 {
            unlimited.observe(1 << 30);
        }
        let unthrottled = started.elapsed();
        // 1 MB/s: 600 KB take at least half a second, whatever slack the
        // last window leaves.
        let mut throttle = Throttle::new(1_000_000.0);
        let started = Instant::now();
        for _ in 0..6 {
            throttle.observe(100_000);
            std::thread::sleep(Duration::from_millis(40));
        }
        throttle.observe(0);
        let throttled = started.elapsed();
        assert!(
            throttled >= Duration::from_millis(500),
            "600 KB at 1 MB/s took {throttled:?}"
        );
        assert!(unthrottled < throttled, "{unthrottled:?} vs {throttled:?}");
    }

    #[test]
    fn the_worker_runs_at_idle_priority() {
        let worker = CleanerThread::unlimited();
        let policy = futures_lite::future::block_on(
            // SAFETY: a plain syscall on the calling thread.
            worker.run(|_| unsafe { libc::sched_getscheduler(0) }),
        )
        .expect("ran");
        assert_eq!(policy, libc::SCHED_IDLE);
    }

    #[test]
    fn a_job_that_panics_leaves_a_worker_for_the_next() {
        let worker = CleanerThread::unlimited();
        let failed = futures_lite::future::block_on(worker.run(|_| -> u32 { panic!("job") }));
        assert!(matches!(failed, Err(StorageError::CleanerStopped)));
        let next = futures_lite::future::block_on(worker.run(|_| 7));
        assert_eq!(next.expect("ran"), 7);
    }

    #[test]
    fn a_written_segment_reads_back_batch_by_batch() {
        let dir = test_dir();
        let path = dir.path().join("00000000000000000000.log");
        let mut throttle = Throttle::new(f64::INFINITY);
        let mut writer = SegmentWriter::create(&path).expect("create");
        let mut batches = Vec::new();
        for i in 0..3000 {
            let value = vec![b'a' + (i % 26) as u8; 100 + i % 300];
            let batch = crate::storage::batch::encode_test_batch(&[&value], 1_000 + i as i64);
            let batch = crate::storage::batch::assign(&batch, crate::types::Offset(i as i64), 0);
            writer.push(&batch, &mut throttle).expect("push");
            batches.push(batch);
        }
        let size = writer.finish(&mut throttle).expect("finish");
        assert_eq!(size, batches.iter().map(|b| b.len() as u64).sum::<u64>());
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), size);
        let Opened::Read(mut reader) =
            BatchReader::open(&SegmentFile { path, size }).expect("open")
        else {
            panic!("gone");
        };
        let mut position = 0;
        for expected in &batches {
            let (at, header, batch) = reader
                .next_batch(&mut throttle)
                .expect("read")
                .expect("a batch");
            assert_eq!(at, position);
            assert_eq!(batch, &expected[..]);
            assert_eq!(header.size_bytes(), expected.len());
            position += expected.len() as u64;
        }
        assert!(reader.next_batch(&mut throttle).expect("end").is_none());
        // Each window after the first reads again the block it starts in.
        assert!(reader.bytes_read >= segment::align_up(size));
        assert!(reader.bytes_read <= size + size / 32, "{}", reader.bytes_read);
    }

    #[test]
    fn a_removed_segment_is_gone() {
        let dir = test_dir();
        let opened = BatchReader::open(&SegmentFile {
            path: dir.path().join("00000000000000000000.log"),
            size: 100,
        })
        .expect("open");
        assert!(matches!(opened, Opened::Gone));
    }
}
