//! Group commit: the shard's one flusher. The first append that finds no
//! flush running starts one; appends that arrive while it runs wait for the
//! next round, so under load one fdatasync covers many producers and
//! partitions, and an idle shard pays one device flush per append and no
//! timer. At most one flush round runs per shard, so at most one flush per
//! log is ever in flight.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use tracing::Instrument;

use super::notify::Notify;
use crate::storage::{PartitionLog, StorageError};
use crate::types::Offset;

#[derive(Default)]
pub struct GroupCommit {
    dirty: RefCell<Vec<Rc<PartitionLog>>>,
    flushing: Cell<bool>,
    /// The last flush error of each log that failed, by log directory;
    /// cleared by its next successful flush.
    failures: RefCell<HashMap<PathBuf, String>>,
    /// Notified after every flush round: high watermarks may have moved.
    round_done: Notify,
    /// Bytes appended on this shard and not yet flushed (approximately: a
    /// round subtracts what was staged when it started).
    staged_bytes: Cell<usize>,
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
            glommio::spawn_local(self.clone().run().in_current_span()).detach();
        }
    }

    async fn run(self: Rc<Self>) {
        loop {
            let logs = std::mem::take(&mut *self.dirty.borrow_mut());
            if logs.is_empty() {
                break;
            }
            let round_bytes = self.staged_bytes.get();
            let results = flush_all(&logs).await;
            self.staged_bytes
                .set(self.staged_bytes.get().saturating_sub(round_bytes));
            for (log, result) in logs.iter().zip(results) {
                let key = log.dir().to_path_buf();
                match result {
                    Ok(_) => {
                        self.failures.borrow_mut().remove(&key);
                    }
                    Err(error) => {
                        tracing::error!(log = %key.display(), %error, "flush failed");
                        self.failures.borrow_mut().insert(key, error.to_string());
                    }
                }
            }
            self.round_done.notify_all();
        }
        self.flushing.set(false);
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
            self.round_done.notified().await;
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

/// `futures_lite` has no join-all; this runs the flushes concurrently on the
/// shard and collects their results in order.
async fn flush_all(logs: &[Rc<PartitionLog>]) -> Vec<Result<Offset, StorageError>> {
    let tasks: Vec<_> = logs
        .iter()
        .map(|log| {
            let log = log.clone();
            glommio::spawn_local(async move { log.flush().await }.in_current_span())
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await);
    }
    results
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
}
