//! A shard: one core's share of the broker. It owns, with no locks, its
//! partitions' logs, its copy of the cluster view, its group-commit flusher
//! and its connections. Shard 0 also owns the metadata log and is the
//! controller every metadata change goes through.

pub mod commit;
pub mod mesh;
pub mod oneshot;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use tracing::{info, warn};

use crate::config::{BrokerConfig, MAX_PARTITIONS_PER_TOPIC};
use crate::group::{Coordinator, OFFSETS_TOPIC};
use crate::metadata::topic_config;
use crate::metadata::{ClusterView, MetadataLog, MetadataRecord, placement};
use crate::notify::Notify;
use crate::storage::log::{OffsetMap, Throttle};
use crate::storage::{CacheBudget, PartitionLog, StorageError};
use crate::types::ShardId;
use commit::GroupCommit;
use mesh::{AdminError, ControlReply, ControlRequest, Mesh, TopicSpec};

/// Where a topic-partition is served from, as seen by this shard.
pub enum PartitionLookup {
    Local(Rc<PartitionLog>),
    /// Another shard owns it: the client must go to that node.
    NotLeader,
    UnknownTopicOrPartition,
}

pub struct Shard {
    pub id: ShardId,
    pub config: Rc<BrokerConfig>,
    cluster: RefCell<ClusterView>,
    /// This shard's partition logs: topic name -> logs by partition index
    /// (`None` where another shard owns the partition).
    logs: RefCell<HashMap<String, Vec<Option<Rc<PartitionLog>>>>>,
    cache: Rc<CacheBudget>,
    pub commit: Rc<GroupCommit>,
    /// This shard's part of log.cleaner.io.max.bytes.per.second.
    cleaner_throttle: Throttle,
    /// The consumer groups this shard coordinates.
    pub groups: Coordinator,
    pub mesh: Mesh,
    /// Shard 0 only: the metadata log, taken out while a blocking append runs.
    metadata_log: RefCell<Option<MetadataLog>>,
    /// Serialises metadata changes on shard 0.
    metadata_lock: glommio::sync::Semaphore,
    shutting_down: Cell<bool>,
    pub shutdown: Notify,
    connections: Cell<usize>,
    pub connections_changed: Notify,
}

impl Shard {
    pub fn new(
        id: ShardId,
        config: Rc<BrokerConfig>,
        cluster: ClusterView,
        metadata_log: Option<MetadataLog>,
        mesh: Mesh,
    ) -> Shard {
        let cache = CacheBudget::new(config.tail_cache_bytes_per_shard);
        let groups = Coordinator::new(config.group.clone());
        let commit = Rc::new(GroupCommit::default());
        let cleaner_throttle = Throttle::new(
            config.cleaner_io_max_bytes_per_second / config.shard_count.max(1) as f64,
        )
        .yielding_to(commit.foreground().clone());
        Shard {
            id,
            config,
            cluster: RefCell::new(cluster),
            logs: RefCell::new(HashMap::new()),
            cache,
            commit,
            cleaner_throttle,
            groups,
            mesh,
            metadata_log: RefCell::new(metadata_log),
            metadata_lock: glommio::sync::Semaphore::new(1),
            shutting_down: Cell::new(false),
            shutdown: Notify::default(),
            connections: Cell::new(0),
            connections_changed: Notify::default(),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.config.shard_count
    }

    /// A snapshot of this shard's cluster view.
    pub fn cluster(&self) -> std::cell::Ref<'_, ClusterView> {
        self.cluster.borrow()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> PartitionLookup {
        let owner = match self.cluster.borrow().topic(topic) {
            None => return PartitionLookup::UnknownTopicOrPartition,
            Some(info) => info.owner(partition),
        };
        match owner {
            None => PartitionLookup::UnknownTopicOrPartition,
            Some(owner) if owner != self.id => PartitionLookup::NotLeader,
            Some(_) => {
                let logs = self.logs.borrow();
                let log = logs
                    .get(topic)
                    .and_then(|partitions| partitions.get(usize::try_from(partition).ok()?))
                    .and_then(|slot| slot.clone());
                match log {
                    Some(log) => PartitionLookup::Local(log),
                    // Owned but not open yet: the change is still being applied.
                    None => PartitionLookup::UnknownTopicOrPartition,
                }
            }
        }
    }

    fn partition_dir(&self, topic: &str, partition: usize) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Opens every partition this shard owns (at start-up).
    pub async fn open_owned_logs(&self) -> Result<(), StorageError> {
        let topics: Vec<_> = self.cluster.borrow().topics().cloned().collect();
        for topic in topics {
            self.open_partitions(&topic.name, &topic.partition_shards, &topic.configs)
                .await?;
        }
        Ok(())
    }

    async fn open_partitions(
        &self,
        topic: &str,
        owners: &[ShardId],
        configs: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StorageError> {
        let log_config = topic_config::log_config(&self.config.log, configs);
        for (index, owner) in owners.iter().enumerate() {
            if *owner != self.id {
                continue;
            }
            let already_open = self
                .logs
                .borrow()
                .get(topic)
                .and_then(|p| p.get(index))
                .is_some_and(|slot| slot.is_some());
            if already_open {
                continue;
            }
            let dir = self.partition_dir(topic, index);
            let log = Rc::new(PartitionLog::open(dir, log_config, self.cache.clone()).await?);
            let mut logs = self.logs.borrow_mut();
            let slots = logs.entry(topic.to_string()).or_default();
            if slots.len() <= index {
                slots.resize(index + 1, None);
            }
            slots[index] = Some(log);
        }
        Ok(())
    }

    /// Applies a committed metadata record to this shard: its view, then
    /// the logs it owns.
    pub async fn apply(&self, record: &MetadataRecord) -> Result<(), String> {
        self.cluster.borrow_mut().apply(record);
        match record {
            MetadataRecord::TopicCreated { name, .. }
            | MetadataRecord::PartitionsAdded { name, .. } => {
                let topic = self.cluster.borrow().topic(name).cloned();
                if let Some(topic) = topic {
                    self.open_partitions(&topic.name, &topic.partition_shards, &topic.configs)
                        .await
                        .map_err(|e| e.to_string())?;
                    if topic.name == OFFSETS_TOPIC
                        && matches!(record, MetadataRecord::TopicCreated { .. })
                    {
                        let owned: Vec<i32> = (0..topic.partition_count())
                            .filter(|p| topic.owner(*p) == Some(self.id))
                            .collect();
                        self.groups.partitions_created(&owned);
                    }
                }
                Ok(())
            }
            MetadataRecord::TopicConfigsChanged { name, configs } => {
                let config = topic_config::log_config(&self.config.log, configs);
                if let Some(partitions) = self.logs.borrow().get(name) {
                    for log in partitions.iter().flatten() {
                        log.set_config(config);
                    }
                }
                Ok(())
            }
            MetadataRecord::TopicDeleted { name } => {
                self.groups.topic_deleted(self, name);
                let removed = self.logs.borrow_mut().remove(name).unwrap_or_default();
                for log in removed.iter().flatten() {
                    log.retire().await.map_err(|e| e.to_string())?;
                }
                let dirs: Vec<PathBuf> = removed
                    .iter()
                    .flatten()
                    .map(|log| log.dir().to_path_buf())
                    .collect();
                drop(removed);
                glommio::executor()
                    .spawn_blocking(move || {
                        for dir in dirs {
                            std::fs::remove_dir_all(&dir)
                                .map_err(|e| format!("removing {}: {e}", dir.display()))?;
                        }
                        Ok::<(), String>(())
                    })
                    .await
            }
        }
    }

    /// Handles a control message from another shard.
    pub async fn handle_control(self: &Rc<Self>, request: ControlRequest) -> ControlReply {
        match request {
            ControlRequest::Apply(record) => ControlReply::Applied(self.apply(&record).await),
            other => ControlReply::Changed(self.change_metadata(other).await),
        }
    }

    /// Runs a metadata change: here on shard 0, or sent to shard 0.
    pub async fn change_metadata(
        self: &Rc<Self>,
        request: ControlRequest,
    ) -> Result<u128, AdminError> {
        if self.id != ShardId(0) {
            return match self.call_peer(0, request).await {
                Ok(ControlReply::Changed(result)) => result,
                Ok(ControlReply::Applied(_)) => Err(AdminError::new(
                    ResponseError::UnknownServerError,
                    "unexpected reply from the controller shard",
                )),
                Err(error) => Err(AdminError::new(
                    ResponseError::CoordinatorNotAvailable,
                    error.to_string(),
                )),
            };
        }
        let permit = self.metadata_lock.acquire_permit(1).await;
        if permit.is_err() {
            return Err(AdminError::new(
                ResponseError::UnknownServerError,
                "metadata lock closed",
            ));
        }
        match request {
            ControlRequest::CreateTopic(spec) => self.create_topic(spec).await,
            ControlRequest::CreatePartitions {
                name,
                total_count,
                assignment,
                validate_only,
            } => {
                self.create_partitions(&name, total_count, assignment, validate_only)
                    .await
            }
            ControlRequest::DeleteTopic { name } => self.delete_topic(&name).await,
            ControlRequest::AlterTopicConfigs {
                name,
                configs,
                validate_only,
            } => {
                self.alter_topic_configs(&name, configs, validate_only)
                    .await
            }
            ControlRequest::Apply(_) => Err(AdminError::new(
                ResponseError::InvalidRequest,
                "apply is not a metadata change",
            )),
        }
    }

    async fn create_topic(self: &Rc<Self>, spec: TopicSpec) -> Result<u128, AdminError> {
        validate_topic_name(&spec.name)?;
        if let Some(existing) = self.cluster.borrow().topic(&spec.name) {
            return Err(AdminError::new(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{}' already exists.", existing.name),
            ));
        }
        if spec.partitions < 1 || spec.partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(AdminError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, got {}.",
                    spec.partitions
                ),
            ));
        }
        topic_config::validate(&spec.configs)
            .map_err(|e| AdminError::new(ResponseError::InvalidConfig, e.to_string()))?;
        let manual = self.check_assignment(spec.assignment.as_deref(), spec.partitions)?;
        let topic_id = uuid::Uuid::new_v4().as_u128();
        if spec.validate_only {
            return Ok(topic_id);
        }
        let partition_shards = manual.unwrap_or_else(|| {
            let counts = self
                .cluster
                .borrow()
                .partitions_per_shard(self.shard_count());
            placement::place(&counts, spec.partitions as usize)
        });
        let record = MetadataRecord::TopicCreated {
            name: spec.name.clone(),
            topic_id,
            partition_shards,
            configs: spec.configs,
        };
        self.commit_record(record).await?;
        info!(topic = %spec.name, partitions = spec.partitions, "topic created");
        Ok(topic_id)
    }

    async fn create_partitions(
        self: &Rc<Self>,
        name: &str,
        total_count: i32,
        assignment: Option<Vec<i32>>,
        validate_only: bool,
    ) -> Result<u128, AdminError> {
        refuse_internal(name)?;
        let (current, topic_id) = match self.cluster.borrow().topic(name) {
            Some(topic) => (topic.partition_count(), topic.topic_id),
            None => {
                return Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                ));
            }
        };
        if total_count <= current {
            return Err(AdminError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "Topic currently has {current} partitions, which is higher than the requested {total_count}."
                ),
            ));
        }
        if total_count > MAX_PARTITIONS_PER_TOPIC {
            return Err(AdminError::new(
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be at most {MAX_PARTITIONS_PER_TOPIC}."),
            ));
        }
        let manual = self.check_assignment(assignment.as_deref(), total_count - current)?;
        if validate_only {
            return Ok(topic_id);
        }
        let partition_shards = manual.unwrap_or_else(|| {
            let counts = self
                .cluster
                .borrow()
                .partitions_per_shard(self.shard_count());
            placement::place(&counts, (total_count - current) as usize)
        });
        let record = MetadataRecord::PartitionsAdded {
            name: name.to_string(),
            partition_shards,
        };
        self.commit_record(record).await?;
        info!(topic = %name, total_count, "partitions added");
        Ok(topic_id)
    }

    async fn delete_topic(self: &Rc<Self>, name: &str) -> Result<u128, AdminError> {
        refuse_internal(name)?;
        let topic_id = match self.cluster.borrow().topic(name) {
            Some(topic) => topic.topic_id,
            None => {
                return Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                ));
            }
        };
        let record = MetadataRecord::TopicDeleted {
            name: name.to_string(),
        };
        self.commit_record(record).await?;
        info!(topic = %name, "topic deleted");
        Ok(topic_id)
    }

    /// Replaces a topic's config overrides (validated first).
    async fn alter_topic_configs(
        self: &Rc<Self>,
        name: &str,
        configs: std::collections::BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<u128, AdminError> {
        let topic_id = match self.cluster.borrow().topic(name) {
            Some(topic) => topic.topic_id,
            None => {
                return Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                ));
            }
        };
        topic_config::validate(&configs)
            .map_err(|e| AdminError::new(ResponseError::InvalidConfig, e.to_string()))?;
        if validate_only {
            return Ok(topic_id);
        }
        let record = MetadataRecord::TopicConfigsChanged {
            name: name.to_string(),
            configs,
        };
        self.commit_record(record).await?;
        info!(topic = %name, "topic configs changed");
        Ok(topic_id)
    }

    /// Checks a manual assignment (one node per partition, each a shard of
    /// this broker) and turns it into owning shards.
    fn check_assignment(
        &self,
        assignment: Option<&[i32]>,
        partitions: i32,
    ) -> Result<Option<Vec<u16>>, AdminError> {
        let Some(nodes) = assignment else {
            return Ok(None);
        };
        let invalid =
            |message: String| AdminError::new(ResponseError::InvalidReplicaAssignment, message);
        if usize::try_from(partitions).ok() != Some(nodes.len()) {
            return Err(invalid(format!(
                "The assignment has {} partitions, expected {partitions}.",
                nodes.len()
            )));
        }
        nodes
            .iter()
            .map(|node| {
                u16::try_from(*node)
                    .ok()
                    .filter(|shard| usize::from(*shard) < self.shard_count())
                    .ok_or_else(|| invalid(format!("Unknown broker id {node} in the assignment.")))
            })
            .collect::<Result<Vec<u16>, AdminError>>()
            .map(Some)
    }

    /// Shard 0: makes `record` durable in the metadata log, applies it here,
    /// then on every other shard; answers once all have applied it.
    async fn commit_record(self: &Rc<Self>, record: MetadataRecord) -> Result<(), AdminError> {
        let storage_error =
            |message: String| AdminError::new(ResponseError::KafkaStorageError, message);
        let Some(mut log) = self.metadata_log.borrow_mut().take() else {
            return Err(storage_error(
                "the metadata log is not open on this shard".into(),
            ));
        };
        let to_append = record.clone();
        let (log, appended) = glommio::executor()
            .spawn_blocking(move || {
                let result = log.append(&to_append);
                (log, result)
            })
            .await;
        *self.metadata_log.borrow_mut() = Some(log);
        appended.map_err(|e| storage_error(e.to_string()))?;

        self.apply(&record).await.map_err(storage_error)?;
        let mut failures = Vec::new();
        for peer in 1..self.shard_count() {
            match self
                .call_peer(peer, ControlRequest::Apply(record.clone()))
                .await
            {
                Ok(ControlReply::Applied(Ok(()))) => {}
                Ok(ControlReply::Applied(Err(error))) => {
                    failures.push(format!("shard {peer}: {error}"))
                }
                Ok(ControlReply::Changed(_)) => {
                    failures.push(format!("shard {peer}: unexpected reply"))
                }
                Err(error) => failures.push(error.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            warn!(?failures, "metadata change not applied everywhere");
            Err(storage_error(failures.join("; ")))
        }
    }

    /// A control call to another shard that gives up once this shard is
    /// stopping: the peer may have stopped already and will never answer,
    /// and the request waiting on it would hold its connection, and the
    /// shard's shutdown, forever.
    async fn call_peer(
        &self,
        to: usize,
        body: ControlRequest,
    ) -> Result<ControlReply, mesh::MeshError> {
        if self.is_shutting_down() {
            return Err(mesh::MeshError::Stopping);
        }
        futures_lite::future::or(self.mesh.call(to, body), async {
            self.shutdown.notified().await;
            Err(mesh::MeshError::Stopping)
        })
        .await
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    pub fn begin_shutdown(&self) {
        if !self.shutting_down.replace(true) {
            self.groups.unload_all();
            self.shutdown.notify_all();
        }
    }

    pub fn connection_opened(&self) {
        self.connections.set(self.connections.get() + 1);
    }

    pub fn connection_closed(&self) {
        self.connections
            .set(self.connections.get().saturating_sub(1));
        self.connections_changed.notify_all();
    }

    pub fn connection_count(&self) -> usize {
        self.connections.get()
    }

    /// This shard's logs of user topics (not the consumer offsets, which
    /// compact themselves) that `wanted` picks, with their topic names.
    fn topic_logs(
        &self,
        wanted: impl Fn(&PartitionLog) -> bool,
    ) -> Vec<(String, Rc<PartitionLog>)> {
        self.logs
            .borrow()
            .iter()
            .filter(|(topic, _)| topic.as_str() != OFFSETS_TOPIC)
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .flatten()
                    .filter(|log| wanted(log))
                    .map(|log| (topic.clone(), log.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Applies retention to every log of this shard (the consumer offsets
    /// compact themselves instead).
    pub async fn enforce_retention(&self) {
        let logs = self.topic_logs(|_| true);
        let now = crate::types::now_ms();
        for (topic, log) in logs {
            match log.enforce_retention(now).await {
                Ok(0) => {}
                Ok(deleted) => info!(
                    %topic,
                    log = %log.dir().display(),
                    deleted,
                    log_start = log.log_start_offset().0,
                    "retention deleted old segments"
                ),
                Err(error) => warn!(log = %log.dir().display(), %error, "retention failed"),
            }
            // Index files a failed writer left unwritten on a log that
            // went idle since (the group commit starts writers after rounds).
            if log.claim_index_writer(now)
                && let Err(error) = log.write_missing_indexes().await
            {
                warn!(log = %log.dir().display(), %error, "writing index files failed");
            }
        }
    }

    /// The log cleaner: compacts this shard's logs whose cleanup.policy
    /// has `compact` and that are due, one at a time.
    pub async fn clean_logs(&self) {
        let logs = self.topic_logs(|log| log.config().cleanup_compact);
        if logs.is_empty() {
            return;
        }
        // This shard's part of log.cleaner.dedupe.buffer.size, allocated as
        // the map fills and freed when this round is over.
        let shards = u64::try_from(self.shard_count()).unwrap_or(1).max(1);
        let mut map = OffsetMap::within(self.config.cleaner_dedupe_buffer_bytes / shards);
        for (topic, log) in logs {
            if self.is_shutting_down() {
                return;
            }
            match log
                .clean(crate::types::now_ms(), &mut map, &self.cleaner_throttle)
                .await
            {
                Ok(None) => {}
                Ok(Some(outcome)) => info!(
                    %topic,
                    log = %log.dir().display(),
                    keys = outcome.keys,
                    segments_rewritten = outcome.segments_rewritten,
                    segments_written = outcome.segments_written,
                    records_removed = outcome.records_removed,
                    bytes_before = outcome.bytes_before,
                    bytes_after = outcome.bytes_after,
                    read_from_files = outcome.bytes_read_from_files,
                    read_from_cache = outcome.bytes_read_from_cache,
                    took_ms = outcome.took.as_secs_f64() * 1e3,
                    stepping_ms = outcome.stepping.as_secs_f64() * 1e3,
                    finishing_ms = outcome.finishing.as_secs_f64() * 1e3,
                    waited_for_produce_ms = outcome.waited_for_produce.as_secs_f64() * 1e3,
                    forced_turns = outcome.forced_turns,
                    "log compacted"
                ),
                Err(error) => {
                    warn!(%topic, log = %log.dir().display(), %error, "log compaction failed")
                }
            }
        }
    }

    /// The flush timer: syncs logs whose relaxed flush policy is due.
    pub async fn sync_due_logs(&self) {
        let logs: Vec<Rc<PartitionLog>> = self
            .logs
            .borrow()
            .values()
            .flatten()
            .flatten()
            .filter(|log| log.has_unsynced())
            .cloned()
            .collect();
        let now = crate::types::now_ms();
        for log in logs {
            if let Err(error) = log.sync_if_due(now).await {
                warn!(log = %log.dir().display(), %error, "timed flush failed");
            }
        }
    }

    /// This shard's logs of `topic`, by partition index.
    pub fn local_logs(&self, topic: &str) -> Vec<(i32, Rc<PartitionLog>)> {
        self.logs
            .borrow()
            .get(topic)
            .map(|partitions| {
                partitions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, log)| Some((i as i32, log.clone()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Clean stop: every staged append flushed, every log closed.
    pub async fn close_logs(&self) {
        self.commit.drain().await;
        let logs: Vec<Rc<PartitionLog>> = self
            .logs
            .borrow()
            .values()
            .flatten()
            .flatten()
            .cloned()
            .collect();
        for log in logs {
            if let Err(error) = log.close().await {
                warn!(log = %log.dir().display(), %error, "closing log failed");
            }
        }
    }
}

/// The offsets topic holds every group's committed offsets, and its
/// partition count decides where each group lives: it is neither deleted
/// nor grown by clients.
fn refuse_internal(name: &str) -> Result<(), AdminError> {
    if name == OFFSETS_TOPIC {
        return Err(AdminError::new(
            ResponseError::InvalidTopicException,
            format!("Topic {name} is an internal topic of the group coordinator."),
        ));
    }
    Ok(())
}

/// Kafka's topic name rules.
pub fn validate_topic_name(name: &str) -> Result<(), AdminError> {
    let invalid = |why: &str| {
        AdminError::new(
            ResponseError::InvalidTopicException,
            format!("Topic name \"{name}\" is illegal, {why}"),
        )
    };
    if name.is_empty() {
        return Err(invalid("it can't be empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("it can't be '.' or '..'"));
    }
    if name.len() > 249 {
        return Err(invalid("it can't be longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "it contains a character other than ASCII alphanumerics, '.', '_' and '-'",
        ));
    }
    if name.starts_with("__cluster_metadata") {
        return Err(invalid("the name is reserved for cluster metadata"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_topic_name;

    #[test]
    fn topic_names_table() {
        let long = "a".repeat(250);
        let cases: &[(&str, bool)] = &[
            ("orders", true),
            ("a.b_c-1", true),
            ("", false),
            (".", false),
            ("..", false),
            ("has space", false),
            ("slash/name", false),
            (long.as_str(), false),
            ("__cluster_metadata", false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_topic_name(name).is_ok(), *ok, "{name:?}");
        }
    }
}
