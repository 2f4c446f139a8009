//! Group commit: the shard's one flusher. The first append that finds no
//! flush running starts one; appends that arrive while it runs wait for the
//! next round, so under load one round's fdatasyncs, issued together, cover
//! many producers and partitions, and an idle shard pays one device flush
//! per append and no timer. At most one flush round runs per shard, so at
//! most one flush per log is ever in flight. Each log's producers are
//! answered as soon as its own flush ends, not when the round's slowest
//! does (a segment roll's directory sync, a directory the cleaner is busy
//! in). The index files of segments a round closed are written after it,
//! in the shard's background task queue: no acknowledgement waits for them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use tracing::Instrument;

use crate::notify::Notify;
use crate::storage::{Foreground, PartitionLog};
use crate::types::Offset;

fn log_key(log: &PartitionLog) -> usize {
    std::ptr::from_ref(log) as usize
}

#[derive(Default)]
pub struct GroupCommit {
    dirty: RefCell<Vec<Rc<PartitionLog>>>,
    flushing: Cell<bool>,
    /// The last flush error of each log that failed, by log directory;
    /// cleared by its next successful flush.
    failures: RefCell<HashMap<PathBuf, String>>,
    /// Producers waiting for a log to become durable, by the address of
    /// the log (stable while they hold it; a recreated topic reuses the
    /// directory); notified and taken out when its flush in a round ends.
    durable: RefCell<HashMap<usize, Rc<Notify>>>,
    /// Notified after every flush round: high watermarks may have moved.
    round_done: Notify,
    /// Bytes appended on this shard and not yet flushed (approximately: a
    /// round subtracts what was staged when it started).
    staged_bytes: Cell<usize>,
    /// Where index files are written: the shard's background task queue
    /// (the current queue until one is set).
    background: Cell<Option<glommio::TaskQueueHandle>>,
    /// The shard's produce work in flight: flush rounds here, produce
    /// requests in the produce handler; the log cleaner waits it out.
    foreground: Rc<Foreground>,
}

impl GroupCommit {
    /// Records that `log` has `bytes` more staged data, starting a flush
    /// if none runs.
    pub fn mark_dirty(self: &Rc<Self>, log: &Rc<PartitionLog>, bytes: usize) {
        self.staged_bytes.set(self.staged_bytes.get() + bytes);
        {
            let mut dirty = self.dirty.borrow_mut();
            if !dirty.iter().any(|l| Rc::ptr_eq(l, log)) {
                dirty.push(log.clone());
            }
        }
        if !self.flushing.get() {
            self.flushing.set(true);
            // Queued, not run at once as `spawn_local` would (inside this
            // append, with only this log dirty): the rest of the request's
            // partitions, and every other append ready to run, join the
            // round first.
            let queue = glommio::executor().current_task_queue();
            match glommio::spawn_local_into(self.clone().run().in_current_span(), queue) {
                Ok(round) => {
                    round.detach();
                }
                // The current queue always exists; were it gone, a round
                // started at once still flushes everything.
                Err(_) => {
                    glommio::spawn_local(self.clone().run().in_current_span()).detach();
                }
            }
        }
    }

    /// The shard's produce work in flight (see `storage::foreground`).
    pub fn foreground(&self) -> &Rc<Foreground> {
        &self.foreground
    }

    /// Index files are written in `queue` from now on.
    pub fn set_background_queue(&self, queue: glommio::TaskQueueHandle) {
        self.background.set(Some(queue));
    }

    async fn run(self: Rc<Self>) {
        let _in_flight = self.foreground.begin();
        loop {
            let logs = std::mem::take(&mut *self.dirty.borrow_mut());
            if logs.is_empty() {
                break;
            }
            let round_bytes = self.staged_bytes.get();
            let flushes: Vec<_> = logs
                .iter()
                .map(|log| {
                    glommio::spawn_local(self.clone().flush_one(log.clone()).in_current_span())
                })
                .collect();
            for flush in flushes {
                flush.await;
            }
            self.staged_bytes
                .set(self.staged_bytes.get().saturating_sub(round_bytes));
            self.round_done.notify_all();
            let now_ms = crate::types::now_ms();
            for log in logs.iter().filter(|log| log.claim_index_writer(now_ms)) {
                self.write_indexes_behind(log.clone());
            }
        }
        self.flushing.set(false);
    }

    /// One log's flush in a round; its producers are answered when it ends.
    async fn flush_one(self: Rc<Self>, log: Rc<PartitionLog>) {
        let result = log.flush().await;
        let dir = log.dir().to_path_buf();
        match result {
            Ok(_) => {
                self.failures.borrow_mut().remove(&dir);
            }
            Err(error) => {
                tracing::error!(log = %dir.display(), %error, "flush failed");
                self.failures.borrow_mut().insert(dir, error.to_string());
            }
        }
        let waiting = self.durable.borrow_mut().remove(&log_key(&log));
        if let Some(waiting) = waiting {
            waiting.notify_all();
        }
    }

    /// Starts the writer of `log`'s missing index files.
    fn write_indexes_behind(&self, log: Rc<PartitionLog>) {
        let writer = async move {
            if let Err(error) = log.write_missing_indexes().await {
                tracing::warn!(log = %log.dir().display(), %error, "writing index files failed");
            }
        }
        .in_current_span();
        let spawned = match self.background.get() {
            Some(queue) => glommio::spawn_local_into(writer, queue),
            None => Ok(glommio::spawn_local(writer)),
        };
        match spawned {
            Ok(task) => {
                task.detach();
            }
            Err(error) => tracing::warn!(%error, "could not start an index writer"),
        }
    }

    /// Completes when everything below `target` in `log` is durable, or
    /// with the flush error that prevents it.
    pub async fn wait_durable(&self, log: &PartitionLog, target: Offset) -> Result<(), String> {
        loop {
            if log.high_watermark() >= target {
                return Ok(());
            }
            if let Some(error) = self.failures.borrow().get(log.dir()) {
                return Err(error.clone());
            }
            let waiting = self
                .durable
                .borrow_mut()
                .entry(log_key(log))
                .or_default()
                .clone();
            waiting.notified().await;
        }
    }

    pub fn staged_bytes(&self) -> usize {
        self.staged_bytes.get()
    }

    /// Back-pressure: completes once no more than `limit` bytes are
    /// waiting to be flushed on this shard.
    pub async fn wait_for_room(&self, limit: usize) {
        while self.staged_bytes.get() > limit {
            self.round_done.notified().await;
        }
    }

    /// Notified after every flush round (fetch long polls wait on it).
    pub fn round_done(&self) -> &Notify {
        &self.round_done
    }

    /// Completes when no flush is running and nothing is dirty.
    pub async fn drain(&self) {
        while self.flushing.get() || !self.dirty.borrow().is_empty() {
            self.round_done.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::GroupCommit;
    use crate::storage::batch::encode_test_batch;
    use crate::storage::{CacheBudget, LogConfig, PartitionLog};
    use crate::types::Offset;

    #[test]
    fn one_round_makes_every_dirty_log_durable_and_frees_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let cache = CacheBudget::new(1 << 20);
                let mut logs = Vec::new();
                for p in 0..3 {
                    let log = PartitionLog::open(
                        root.join(format!("t-{p}")),
                        LogConfig::default(),
                        cache.clone(),
                    )
                    .await
                    .expect("open");
                    logs.push(Rc::new(log));
                }
                let commit = Rc::new(GroupCommit::default());
                let batch = encode_test_batch(&[b"a", b"b"], 1);
                for log in &logs {
                    log.append(&batch, 0).expect("append");
                    commit.mark_dirty(log, batch.len());
                }
                assert_eq!(commit.staged_bytes(), 3 * batch.len());
                for log in &logs {
                    commit.wait_durable(log, Offset(2)).await.expect("durable");
                }
                commit.wait_for_room(0).await;
                commit.drain().await;
                assert_eq!(commit.staged_bytes(), 0);
                for log in &logs {
                    assert_eq!(log.high_watermark(), Offset(2));
                }
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn a_segment_closed_by_a_round_gets_its_index_files_from_a_background_writer() {
        crate::storage::test_support::run(|dir| async move {
            let config = crate::storage::test_support::small_segments();
            let log = Rc::new(crate::storage::test_support::open(&dir, config).await);
            let commit = Rc::new(GroupCommit::default());
            let mut end = Offset(0);
            while log.segment_count() < 3 {
                let batch = crate::storage::test_support::numbered_batch(end.0 as usize, 1);
                end = log.append(&batch, 0).expect("append").last_offset;
                commit.mark_dirty(&log, batch.len());
            }
            commit
                .wait_durable(&log, Offset(end.0 + 1))
                .await
                .expect("durable");
            commit.drain().await;
            // The writer started by the rounds runs on its own, in this
            // test's one task queue.
            let indexed = |path: &std::path::Path| {
                path.with_extension("index").exists() && path.with_extension("timeindex").exists()
            };
            let mut closed: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                .expect("dir")
                .map(|entry| entry.expect("entry").path())
                .filter(|path| path.extension().is_some_and(|e| e == "log"))
                .collect();
            closed.sort();
            closed.pop(); // the active segment: indexed at close
            assert!(closed.len() >= 2);
            for _ in 0..10_000 {
                if !log.index_files_pending() {
                    break;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            for path in &closed {
                assert!(indexed(path), "{} has no index files", path.display());
            }
            assert!(
                !log.index_files_pending(),
                "every closed segment is indexed"
            );
        });
    }
    #[test]
    fn a_log_whose_flush_waits_holds_back_no_other_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let cache = CacheBudget::new(1 << 20);
                let open = |name: &str| {
                    PartitionLog::open(root.join(name), LogConfig::default(), cache.clone())
                };
                let slow = Rc::new(open("slow-0").await.expect("open"));
                let fast = Rc::new(open("fast-0").await.expect("open"));
                let commit = Rc::new(GroupCommit::default());
                let batch = encode_test_batch(&[b"a", b"b"], 1);
                // The slow log's flush cannot start while its turn is held
                // (as by a timed sync, or a device busy in its directory).
                let turn = slow.hold_io_turn();
                for log in [&slow, &fast] {
                    log.append(&batch, 0).expect("append");
                    commit.mark_dirty(log, batch.len());
                }
                let waited = glommio::timer::timeout(std::time::Duration::from_secs(10), async {
                    Ok(commit.wait_durable(&fast, Offset(2)).await)
                })
                .await;
                assert_eq!(waited.ok(), Some(Ok(())), "the fast log is durable");
                assert_eq!(fast.high_watermark(), Offset(2));
                assert_eq!(
                    slow.high_watermark(),
                    Offset(0),
                    "still waiting for its turn"
                );
                drop(turn);
                commit
                    .wait_durable(&slow, Offset(2))
                    .await
                    .expect("durable");
                commit.drain().await;
                assert_eq!(commit.staged_bytes(), 0);
            })
            .expect("executor")
            .join()
            .expect("join");
    }
}
