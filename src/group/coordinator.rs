//! A shard's group coordinator: the groups whose `__consumer_offsets`
//! partition this shard owns, their stored records, the timers that move
//! rebalances on, offset expiry, and loading at start.
//!
//! Storage contract: an offset commit, a group deletion and an offset
//! deletion are appended to the group's offsets partition and answered
//! once the append is durable (the shard's group commit); the in-memory
//! view is updated at append time, in log order. Group metadata (the
//! membership of a stable or empty group) is appended without waiting: a
//! crash before it is durable restores the previous generation, whose
//! members are then told to rejoin.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{Instrument, info, warn};

use super::consumer::{ConsumerGroup, Heartbeat, HeartbeatOutcome, JOIN_EPOCH, TopicCounts};
use super::offset_record::{GroupValue, OffsetValue, RecordKey};
use super::state::{
    Committed, Group, GroupState, JoinOutcome, JoinRequest, Leaving, Reply, SyncOutcome,
    SyncRequest,
};
use super::{GroupConfig, GroupError, OFFSETS_TOPIC, partition_for};
use crate::shard::{PartitionLookup, Shard};
use crate::storage::record::{Record, decode_batch, encode_batch};
use crate::storage::{BatchHeader, PartitionLog};
use crate::types::{Offset, now_ms};

/// How often group timers (session expiry, rebalance timeouts, the
/// initial rebalance delay) are checked.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// How often the offsets partitions are checked for compaction.
const COMPACTION_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// An offsets partition with this many segments or more is compacted:
/// at least two rolled segments of superseded records.
const COMPACT_AT_SEGMENT_COUNT: usize = 3;

/// Records per stored batch are cut at about this many bytes.
const STORE_BATCH_BYTES: usize = 256 * 1024;

/// Bytes read per step while loading a partition.
const LOAD_READ_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Loading,
    Loaded,
}

/// An append that a response waits for: durable once the log's high
/// watermark reaches `end`.
pub struct Durable {
    pub log: Rc<PartitionLog>,
    pub end: Offset,
}

/// A group as DescribeGroups shows it.
pub struct GroupSummary {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: bytes::Bytes,
    pub assignment: bytes::Bytes,
}

/// A group as ListGroups shows it.
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    pub group_type: &'static str,
}

/// One partition's commit, as asked.
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub committed: Committed,
}

pub type PartitionResults = Vec<(String, i32, Result<(), GroupError>)>;

pub struct Coordinator {
    config: GroupConfig,
    groups: RefCell<HashMap<String, Group>>,
    /// This shard's offsets partitions that are loaded or loading.
    loads: RefCell<HashMap<i32, Load>>,
    last_expiry_check: Cell<Option<Instant>>,
    last_compaction_check: Cell<Option<Instant>>,
    /// Offsets partitions being compacted now.
    compacting: RefCell<HashSet<i32>>,
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Coordinator {
        Coordinator {
            config,
            groups: RefCell::new(HashMap::new()),
            loads: RefCell::new(HashMap::new()),
            last_expiry_check: Cell::new(None),
            last_compaction_check: Cell::new(None),
            compacting: RefCell::new(HashSet::new()),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The offsets partition of `group_id` and its owning shard, if the
    /// offsets topic exists.
    pub fn locate(shard: &Shard, group_id: &str) -> Option<(i32, Option<crate::types::ShardId>)> {
        let cluster = shard.cluster();
        let topic = cluster.topic(OFFSETS_TOPIC)?;
        let partition = partition_for(group_id, topic.partition_count());
        Some((partition, topic.owner(partition)))
    }

    /// The offsets partition of a group this shard coordinates and has
    /// loaded, or why not.
    fn route(&self, shard: &Rc<Shard>, group_id: &str) -> Result<i32, GroupError> {
        let Some((partition, owner)) = Self::locate(shard, group_id) else {
            return Err(GroupError::NotCoordinator);
        };
        if owner != Some(shard.id) {
            return Err(GroupError::NotCoordinator);
        }
        let load = self.loads.borrow().get(&partition).copied();
        match load {
            Some(Load::Loaded) => Ok(partition),
            Some(Load::Loading) => Err(GroupError::CoordinatorLoadInProgress),
            None => {
                self.start_load(shard, partition);
                Err(GroupError::CoordinatorLoadInProgress)
            }
        }
    }

    /// Marks freshly created (empty) offsets partitions as loaded.
    pub fn partitions_created(&self, partitions: &[i32]) {
        let mut loads = self.loads.borrow_mut();
        for partition in partitions {
            loads.insert(*partition, Load::Loaded);
        }
    }

    /// Starts loading every offsets partition this shard owns (at start).
    pub fn load_owned(&self, shard: &Rc<Shard>) {
        let owned: Vec<i32> = {
            let cluster = shard.cluster();
            let Some(topic) = cluster.topic(OFFSETS_TOPIC) else {
                return;
            };
            (0..topic.partition_count())
                .filter(|p| topic.owner(*p) == Some(shard.id))
                .collect()
        };
        for partition in owned {
            self.start_load(shard, partition);
        }
    }

    fn start_load(&self, shard: &Rc<Shard>, partition: i32) {
        if self.loads.borrow().contains_key(&partition) {
            return;
        }
        self.loads.borrow_mut().insert(partition, Load::Loading);
        let shard = shard.clone();
        glommio::spawn_local(
            async move {
                let started = Instant::now();
                match load_partition(&shard, partition).await {
                    Ok(0) => shard.groups.finish_load(partition),
                    Ok(records) => {
                        shard.groups.finish_load(partition);
                        info!(
                            partition,
                            records,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "consumer offsets loaded"
                        );
                    }
                    Err(error) => {
                        warn!(partition, %error, "loading consumer offsets failed; will retry");
                        shard.groups.loads.borrow_mut().remove(&partition);
                    }
                }
            }
            .in_current_span(),
        )
        .detach();
    }

    fn finish_load(&self, partition: i32) {
        self.loads.borrow_mut().insert(partition, Load::Loaded);
    }

    /// Applies one stored record while loading.
    fn replay(&self, key: RecordKey, value: Option<bytes::Bytes>, now: Instant) {
        let mut groups = self.groups.borrow_mut();
        match key {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => match value.map(OffsetValue::decode) {
                Some(Ok(value)) => {
                    groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_ms()))
                        .offsets
                        .insert((topic, partition), value.into());
                }
                Some(Err(error)) => warn!(%group, %error, "skipping an unreadable offset record"),
                None => {
                    if let Some(g) = groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                        if g.state() == GroupState::Empty
                            && g.offsets.is_empty()
                            && g.generation() == 0
                        {
                            groups.remove(&group);
                        }
                    }
                }
            },
            RecordKey::Group { group } => match value.map(GroupValue::decode) {
                Some(Ok(value)) => {
                    groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_ms()))
                        .restore(value, now);
                }
                Some(Err(error)) => warn!(%group, %error, "skipping an unreadable group record"),
                None => {
                    groups.remove(&group);
                }
            },
        }
    }

    /// Appends records to an offsets partition, in batches; returns what a
    /// response must wait for.
    fn append(
        &self,
        shard: &Shard,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<Option<Durable>, GroupError> {
        if records.is_empty() {
            return Ok(None);
        }
        let log = match shard.partition(OFFSETS_TOPIC, partition) {
            PartitionLookup::Local(log) => log,
            _ => return Err(GroupError::NotCoordinator),
        };
        let now = now_ms();
        let mut end = log.log_end_offset();
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        let total = records.len();
        for (index, record) in records.into_iter().enumerate() {
            chunk_bytes += record.key.as_ref().map_or(0, |k| k.len())
                + record.value.as_ref().map_or(0, |v| v.len());
            chunk.push(record);
            if chunk_bytes >= STORE_BATCH_BYTES || index + 1 == total {
                let batch = encode_batch(&chunk, now);
                let appended = log
                    .append(&batch, now)
                    .map_err(|e| GroupError::Storage(e.to_string()))?;
                shard.commit.mark_dirty(&log, batch.len());
                end = appended.last_offset.next();
                chunk.clear();
                chunk_bytes = 0;
            }
        }
        Ok(Some(Durable { log, end }))
    }

    /// Runs a classic group's timers now, so a request sees every session
    /// that has expired by its arrival (not only by the last tick).
    fn expire_members_now(&self, shard: &Shard, partition: i32, group: &mut Group) {
        if group.consumer.is_none() {
            group.tick(Instant::now(), now_ms(), &self.config);
            self.store_if_needed(shard, partition, group);
        }
    }

    /// Stores a group's membership if it changed (not waited for).
    fn store_if_needed(&self, shard: &Shard, partition: i32, group: &mut Group) {
        if !group.store_needed {
            return;
        }
        group.store_needed = false;
        let record = Record {
            key: Some(
                RecordKey::Group {
                    group: group.id.clone(),
                }
                .encode(),
            ),
            value: Some(group.stored_value().encode()),
        };
        if let Err(error) = self.append(shard, partition, vec![record]) {
            warn!(group = %group.id, %error, "storing group metadata failed");
        }
    }

    pub fn join(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        request: JoinRequest,
    ) -> Reply<JoinOutcome> {
        let error = |e| Reply::Now(JoinOutcome::error(&request.member_id, e));
        if group_id.is_empty() {
            return error(GroupError::InvalidGroupId);
        }
        let partition = match self.route(shard, group_id) {
            Ok(partition) => partition,
            Err(e) => return error(e),
        };
        if request.session_timeout_ms < self.config.min_session_timeout_ms
            || request.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return error(GroupError::InvalidSessionTimeout);
        }
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if !request.member_id.is_empty() {
                return error(GroupError::UnknownMemberId);
            }
            groups.insert(group_id.to_string(), Group::new(group_id, now_ms()));
        }
        let Some(group) = groups.get_mut(group_id) else {
            return error(GroupError::UnknownMemberId);
        };
        let reply = group.join(request, Instant::now(), now_ms(), &self.config);
        self.store_if_needed(shard, partition, group);
        reply
    }

    pub fn sync(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        request: SyncRequest,
    ) -> Reply<SyncOutcome> {
        let error = |e| Reply::Now(SyncOutcome::error(e));
        if group_id.is_empty() {
            return error(GroupError::InvalidGroupId);
        }
        let partition = match self.route(shard, group_id) {
            Ok(partition) => partition,
            // Kafka's answer while loading: the rebalance must start over.
            Err(GroupError::CoordinatorLoadInProgress) => {
                return error(GroupError::RebalanceInProgress);
            }
            Err(e) => return error(e),
        };
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return error(GroupError::UnknownMemberId);
        };
        let reply = group.sync(request, Instant::now(), now_ms());
        self.store_if_needed(shard, partition, group);
        reply
    }

    pub fn heartbeat(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        match self.route(shard, group_id) {
            Ok(_) => {}
            // Kafka answers blindly while loading.
            Err(GroupError::CoordinatorLoadInProgress) => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        group.heartbeat(member_id, instance_id, generation_id, Instant::now())
    }

    pub fn leave(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        leaving: &[Leaving],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let partition = self.route(shard, group_id)?;
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return Ok(leaving
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect());
        };
        let results = group.leave(leaving, Instant::now(), now_ms(), &self.config);
        self.store_if_needed(shard, partition, group);
        results
    }

    /// OffsetCommit: checks the member, stores every valid partition's
    /// offset, and returns each partition's result plus what to wait for.
    pub fn commit(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        entries: Vec<CommitEntry>,
    ) -> Result<(PartitionResults, Option<Durable>), GroupError> {
        let partition = self.route(shard, group_id)?;
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if generation_id >= 0 {
                return Err(GroupError::IllegalGeneration);
            }
            groups.insert(group_id.to_string(), Group::new(group_id, now_ms()));
        }
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        group.check_commit(member_id, instance_id, generation_id, Instant::now())?;
        let mut results = Vec::with_capacity(entries.len());
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for entry in entries {
            let check = self.check_commit_entry(shard, &entry);
            if check.is_ok() {
                records.push(Record {
                    key: Some(
                        RecordKey::Offset {
                            group: group_id.to_string(),
                            topic: entry.topic.clone(),
                            partition: entry.partition,
                        }
                        .encode(),
                    ),
                    value: Some(OffsetValue::from(&entry.committed).encode()),
                });
                accepted.push(results.len());
            }
            results.push((entry.topic, entry.partition, check.map(|_| entry.committed)));
        }
        let durable = match self.append(shard, partition, records) {
            Ok(durable) => durable,
            Err(error) => {
                for index in accepted {
                    results[index].2 = Err(error.clone());
                }
                None
            }
        };
        let results = results
            .into_iter()
            .map(|(topic, p, result)| {
                let result = result.map(|committed| {
                    group.offsets.insert((topic.clone(), p), committed);
                });
                (topic, p, result)
            })
            .collect();
        Ok((results, durable))
    }

    fn check_commit_entry(&self, shard: &Shard, entry: &CommitEntry) -> Result<(), GroupError> {
        let exists = shard
            .cluster()
            .topic(&entry.topic)
            .is_some_and(|t| (0..t.partition_count()).contains(&entry.partition));
        if !exists {
            return Err(GroupError::UnknownTopicOrPartition);
        }
        if entry.committed.metadata.len() > self.config.offset_metadata_max_bytes {
            return Err(GroupError::OffsetMetadataTooLarge);
        }
        Ok(())
    }

    /// OffsetFetch: the committed offsets of the named partitions (`None`
    /// where nothing is committed), or of every partition when `topics` is
    /// `None`.
    #[allow(clippy::type_complexity)]
    pub fn fetch_offsets(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, Vec<(i32, Option<Committed>)>)>, GroupError> {
        self.route(shard, group_id)?;
        let groups = self.groups.borrow();
        let group = groups.get(group_id);
        let lookup = |topic: &str, partition: i32| {
            group.and_then(|g| g.offsets.get(&(topic.to_string(), partition)).cloned())
        };
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| (p, lookup(&topic, p)))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<Committed>)>> = BTreeMap::new();
                if let Some(group) = group {
                    for ((topic, partition), committed) in &group.offsets {
                        by_topic
                            .entry(topic.clone())
                            .or_default()
                            .push((*partition, Some(committed.clone())));
                    }
                }
                by_topic
                    .into_iter()
                    .map(|(topic, mut partitions)| {
                        partitions.sort_by_key(|(p, _)| *p);
                        (topic, partitions)
                    })
                    .collect()
            }
        })
    }

    /// ListGroups: this shard's groups; the error says whether some are
    /// still loading.
    pub fn list(&self) -> (Option<GroupError>, Vec<GroupListing>) {
        let loading = self.loads.borrow().values().any(|l| *l == Load::Loading);
        let listings = self
            .groups
            .borrow()
            .values()
            .filter(|g| g.state() != GroupState::Dead)
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type().unwrap_or("").to_string(),
                state: g.state_name(),
                group_type: g.group_type(),
            })
            .collect();
        (
            loading.then_some(GroupError::CoordinatorLoadInProgress),
            listings,
        )
    }

    pub fn describe(&self, shard: &Rc<Shard>, group_id: &str) -> Result<GroupSummary, GroupError> {
        let partition = self.route(shard, group_id)?;
        let mut groups = self.groups.borrow_mut();
        if let Some(group) = groups.get_mut(group_id) {
            self.expire_members_now(shard, partition, group);
        }
        let Some(group) = groups.get(group_id) else {
            return Ok(GroupSummary {
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
        if let Some(consumer) = &group.consumer {
            return Ok(GroupSummary {
                state: group.state_name(),
                protocol_type: "consumer".into(),
                protocol: String::new(),
                members: consumer
                    .members
                    .values()
                    .map(|m| MemberSummary {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: bytes::Bytes::new(),
                        assignment: bytes::Bytes::new(),
                    })
                    .collect(),
            });
        }
        let stable = group.state() == GroupState::Stable;
        let protocol = group.protocol();
        Ok(GroupSummary {
            state: group.state_name(),
            protocol_type: group.protocol_type().unwrap_or("").to_string(),
            protocol: if stable {
                protocol.unwrap_or("").to_string()
            } else {
                String::new()
            },
            members: group
                .members()
                .iter()
                .map(|m| MemberSummary {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(protocol)
                    } else {
                        bytes::Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        bytes::Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// DeleteGroups of one group: only an empty group, with its offsets.
    pub fn delete(&self, shard: &Rc<Shard>, group_id: &str) -> Result<Option<Durable>, GroupError> {
        let partition = self.route(shard, group_id)?;
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        self.expire_members_now(shard, partition, group);
        match group.state() {
            GroupState::Dead => return Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {}
            _ => return Err(GroupError::NonEmptyGroup),
        }
        let mut records: Vec<Record> = group
            .offsets
            .keys()
            .map(|(topic, p)| tombstone(group_id, Some((topic, *p))))
            .collect();
        records.push(tombstone(group_id, None));
        group.mark_dead(now_ms());
        groups.remove(group_id);
        info!(group = %group_id, "group deleted");
        self.append(shard, partition, records)
    }

    /// OffsetDelete: removes committed offsets the group no longer reads.
    #[allow(clippy::type_complexity)]
    pub fn delete_offsets(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
    ) -> Result<
        (
            Vec<(String, Vec<(i32, Result<(), GroupError>)>)>,
            Option<Durable>,
        ),
        GroupError,
    > {
        let partition = self.route(shard, group_id)?;
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        self.expire_members_now(shard, partition, group);
        match group.state() {
            GroupState::Dead => return Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {}
            _ if group.protocol_type() != Some("consumer") => {
                return Err(GroupError::NonEmptyGroup);
            }
            _ => {}
        }
        let empty = group.state() == GroupState::Empty;
        let topics_now = topic_counts(shard);
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        for (topic, partitions) in topics {
            let subscribed = !empty && group.is_subscribed_to(&topic, &topics_now);
            let mut outcome = Vec::with_capacity(partitions.len());
            for p in partitions {
                if subscribed {
                    outcome.push((p, Err(GroupError::GroupSubscribedToTopic)));
                    continue;
                }
                if group.offsets.remove(&(topic.clone(), p)).is_some() {
                    records.push(tombstone(group_id, Some((&topic, p))));
                }
                outcome.push((p, Ok(())));
            }
            results.push((topic, outcome));
        }
        let durable = self.append(shard, partition, records)?;
        Ok((results, durable))
    }

    /// Runs every group's timers; every retention check interval, expires
    /// old offsets and removes groups left with nothing.
    pub fn tick(&self, shard: &Rc<Shard>) {
        let now = Instant::now();
        let now_wall = now_ms();
        let expiry_due = self.last_expiry_check.get().is_none_or(|last| {
            now.duration_since(last).as_millis()
                >= u128::try_from(self.config.offsets_retention_check_interval_ms).unwrap_or(0)
        });
        if expiry_due {
            self.last_expiry_check.set(Some(now));
        }
        let mut groups = self.groups.borrow_mut();
        let mut emptied = Vec::new();
        let mut consumer_topics: Option<TopicCounts> = None;
        for group in groups.values_mut() {
            let Some((partition, _)) = Self::locate(shard, &group.id) else {
                continue;
            };
            // A partition still loading has a partial view of its groups.
            if self.loads.borrow().get(&partition) != Some(&Load::Loaded) {
                continue;
            }
            match &mut group.consumer {
                Some(consumer) => {
                    if !consumer.members.is_empty() {
                        let topics = consumer_topics.get_or_insert_with(|| topic_counts(shard));
                        let session = Duration::from_millis(
                            u64::try_from(self.config.consumer_session_timeout_ms).unwrap_or(0),
                        );
                        consumer.tick(now, session, topics);
                    }
                }
                None => {
                    group.tick(now, now_wall, &self.config);
                    self.store_if_needed(shard, partition, group);
                }
            }
            if expiry_due {
                let records = expire_offsets(group, now_wall, self.config.offsets_retention_ms);
                if group.state() == GroupState::Empty && group.offsets.is_empty() {
                    emptied.push(group.id.clone());
                }
                if let Err(error) = self.append(shard, partition, records) {
                    warn!(group = %group.id, %error, "storing expired offsets failed");
                }
            }
        }
        for group_id in emptied {
            let Some((partition, _)) = Self::locate(shard, &group_id) else {
                continue;
            };
            if let Some(mut group) = groups.remove(&group_id) {
                group.mark_dead(now_wall);
                info!(group = %group_id, "empty group with no offsets removed");
                if let Err(error) = self.append(shard, partition, vec![tombstone(&group_id, None)])
                {
                    warn!(group = %group_id, %error, "storing group removal failed");
                }
            }
        }
    }

    /// ConsumerGroupHeartbeat (KIP-848): joins, keeps alive, reconciles or
    /// removes a member of a consumer-protocol group.
    pub fn consumer_heartbeat(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        request: Heartbeat,
    ) -> Result<HeartbeatOutcome, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.route(shard, group_id)?;
        let topics = topic_counts(shard);
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if request.member_epoch != JOIN_EPOCH {
                return Err(GroupError::UnknownMemberId);
            }
            groups.insert(group_id.to_string(), Group::new(group_id, now_ms()));
        }
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if group.consumer.is_none() {
            if group.state() != GroupState::Empty {
                return Err(GroupError::GroupIdNotFound);
            }
            // An empty classic group (or one with only offsets) switches.
            group.consumer = Some(ConsumerGroup::default());
        }
        let Some(consumer) = group.consumer.as_mut() else {
            return Err(GroupError::GroupIdNotFound);
        };
        consumer.heartbeat(request, &topics, Instant::now())
    }

    /// Runs `inspect` on a group this shard coordinates (`None`: unknown).
    pub fn inspect<R>(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        inspect: impl FnOnce(Option<&Group>) -> R,
    ) -> Result<R, GroupError> {
        self.route(shard, group_id)?;
        Ok(inspect(self.groups.borrow().get(group_id)))
    }

    /// Keeps each offsets partition small: once old segments pile up, the
    /// live state (every group's offsets and membership) is appended again
    /// and, when durable, every segment before it is deleted. Only whole
    /// segments of superseded records go, so what a restart replays is the
    /// same state.
    pub fn maybe_compact(&self, shard: &Rc<Shard>) {
        let now = Instant::now();
        let due = self
            .last_compaction_check
            .get()
            .is_none_or(|last| now.duration_since(last) >= COMPACTION_CHECK_INTERVAL);
        if !due {
            return;
        }
        self.last_compaction_check.set(Some(now));
        let loaded: Vec<i32> = self
            .loads
            .borrow()
            .iter()
            .filter(|(_, load)| **load == Load::Loaded)
            .map(|(p, _)| *p)
            .collect();
        for partition in loaded {
            if self.compacting.borrow().contains(&partition) {
                continue;
            }
            let log = match shard.partition(OFFSETS_TOPIC, partition) {
                PartitionLookup::Local(log) => log,
                _ => continue,
            };
            if log.segment_count() < COMPACT_AT_SEGMENT_COUNT {
                continue;
            }
            let snapshot_start = log.log_end_offset();
            let records = self.snapshot(shard, partition);
            let durable = match self.append(shard, partition, records) {
                Ok(durable) => durable,
                Err(error) => {
                    warn!(partition, %error, "compacting consumer offsets failed");
                    continue;
                }
            };
            self.compacting.borrow_mut().insert(partition);
            let shard = shard.clone();
            glommio::spawn_local(
                async move {
                    let stored = match &durable {
                        Some(d) => shard.commit.wait_durable(&d.log, d.end).await,
                        None => Ok(()),
                    };
                    match stored {
                        Ok(()) => match log.delete_segments_before(snapshot_start).await {
                            Ok(deleted) => info!(
                                partition,
                                deleted,
                                log_start = log.log_start_offset().0,
                                "consumer offsets compacted"
                            ),
                            Err(error) => {
                                warn!(partition, %error, "deleting compacted segments failed")
                            }
                        },
                        Err(error) => {
                            warn!(partition, %error, "compacting consumer offsets failed")
                        }
                    }
                    shard.groups.compacting.borrow_mut().remove(&partition);
                }
                .in_current_span(),
            )
            .detach();
        }
    }

    /// The live records of one offsets partition: each group's committed
    /// offsets, and the membership of stable and empty groups.
    fn snapshot(&self, shard: &Shard, partition: i32) -> Vec<Record> {
        let mut records = Vec::new();
        for group in self.groups.borrow().values() {
            if Self::locate(shard, &group.id).map(|(p, _)| p) != Some(partition) {
                continue;
            }
            let settled = matches!(group.state(), GroupState::Stable | GroupState::Empty);
            if settled && (group.generation() > 0 || !group.members().is_empty()) {
                records.push(Record {
                    key: Some(
                        RecordKey::Group {
                            group: group.id.clone(),
                        }
                        .encode(),
                    ),
                    value: Some(group.stored_value().encode()),
                });
            }
            for ((topic, p), committed) in &group.offsets {
                records.push(Record {
                    key: Some(
                        RecordKey::Offset {
                            group: group.id.clone(),
                            topic: topic.clone(),
                            partition: *p,
                        }
                        .encode(),
                    ),
                    value: Some(OffsetValue::from(committed).encode()),
                });
            }
        }
        records
    }

    /// A topic was deleted: its committed offsets go too.
    pub fn topic_deleted(&self, shard: &Shard, topic: &str) {
        let mut groups = self.groups.borrow_mut();
        for group in groups.values_mut() {
            let removed: Vec<(String, i32)> = group
                .offsets
                .keys()
                .filter(|(t, _)| t == topic)
                .cloned()
                .collect();
            if removed.is_empty() {
                continue;
            }
            let Some((partition, _)) = Self::locate(shard, &group.id) else {
                continue;
            };
            let records = removed
                .iter()
                .map(|(t, p)| {
                    group.offsets.remove(&(t.clone(), *p));
                    tombstone(&group.id, Some((t, *p)))
                })
                .collect();
            if let Err(error) = self.append(shard, partition, records) {
                warn!(group = %group.id, %error, "storing offsets of a deleted topic failed");
            }
        }
    }

    /// The shard is stopping: every parked request is answered.
    pub fn unload_all(&self) {
        for group in self.groups.borrow_mut().values_mut() {
            group.unload();
        }
    }
}

/// Partition counts of every user topic (internal ones left out).
pub fn topic_counts(shard: &Shard) -> TopicCounts {
    shard
        .cluster()
        .topics()
        .filter(|t| !t.name.starts_with("__"))
        .map(|t| (t.name.clone(), t.partition_count()))
        .collect()
}

/// Tombstones for the offsets that outlived `offsets.retention.minutes`
/// (KIP-211: an empty group's offsets from the time it became empty, a
/// standalone commit from its commit time), removed from the group.
fn expire_offsets(group: &mut Group, now_ms: i64, retention_ms: i64) -> Vec<Record> {
    if group.state() != GroupState::Empty {
        return Vec::new();
    }
    let uses_group_protocol = group.protocol_type().is_some();
    let became_empty = group.state_since_ms();
    let expired: Vec<(String, i32)> = group
        .offsets
        .iter()
        .filter(|(_, c)| {
            let base = if uses_group_protocol {
                became_empty
            } else {
                c.commit_timestamp_ms
            };
            base.saturating_add(retention_ms) <= now_ms
        })
        .map(|(key, _)| key.clone())
        .collect();
    expired
        .into_iter()
        .map(|(topic, partition)| {
            group.offsets.remove(&(topic.clone(), partition));
            tombstone(&group.id, Some((&topic, partition)))
        })
        .collect()
}

fn tombstone(group: &str, offset: Option<(&String, i32)>) -> Record {
    let key = match offset {
        Some((topic, partition)) => RecordKey::Offset {
            group: group.to_string(),
            topic: topic.clone(),
            partition,
        },
        None => RecordKey::Group {
            group: group.to_string(),
        },
    };
    Record {
        key: Some(key.encode()),
        value: None,
    }
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("the offsets partition is not served by this shard")]
    NotLocal,
    #[error("reading the offsets partition: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

/// Replays one offsets partition into the coordinator; returns the number
/// of records read.
async fn load_partition(shard: &Rc<Shard>, partition: i32) -> Result<usize, LoadError> {
    let log = match shard.partition(OFFSETS_TOPIC, partition) {
        PartitionLookup::Local(log) => log,
        _ => return Err(LoadError::NotLocal),
    };
    let mut offset = log.log_start_offset();
    let mut count = 0;
    loop {
        let outcome = log.read(offset, LOAD_READ_BYTES).await?;
        if outcome.batches.is_empty() {
            break;
        }
        let now = Instant::now();
        for batch in &outcome.batches {
            let Some(header) = BatchHeader::parse(batch) else {
                continue;
            };
            offset = Offset(header.last_offset() + 1);
            let Some(records) = decode_batch(batch) else {
                warn!(
                    partition,
                    base_offset = header.base_offset,
                    "skipping an undecodable batch"
                );
                continue;
            };
            for record in records {
                let Some(key) = record.key else {
                    continue;
                };
                match RecordKey::decode(key) {
                    Ok(key) => shard.groups.replay(key, record.value, now),
                    Err(error) => warn!(partition, %error, "skipping an unreadable record key"),
                }
                count += 1;
            }
        }
        if offset >= outcome.high_watermark {
            break;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_at(ms: i64) -> Committed {
        Committed {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: ms,
        }
    }

    #[test]
    fn offsets_expire_per_kip_211() {
        let retention = 1_000;
        // A standalone group (no protocol): each offset from its commit.
        let mut standalone = Group::new("solo", 0);
        standalone
            .offsets
            .insert(("t".into(), 0), committed_at(100));
        standalone
            .offsets
            .insert(("t".into(), 1), committed_at(900));
        assert!(expire_offsets(&mut standalone, 1_099, retention).is_empty());
        let expired = expire_offsets(&mut standalone, 1_100, retention);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].value, None, "a tombstone");
        assert_eq!(standalone.offsets.len(), 1);
        assert_eq!(expire_offsets(&mut standalone, 1_900, retention).len(), 1);
        assert!(standalone.offsets.is_empty());

        // A group that ran the protocol: all of its offsets from the moment
        // it became empty, however old the commits.
        let mut group = Group::new("g", 0);
        group.restore(
            GroupValue {
                protocol_type: "consumer".into(),
                generation: 3,
                protocol: None,
                leader: None,
                current_state_timestamp_ms: 5_000,
                members: Vec::new(),
            },
            Instant::now(),
        );
        group.offsets.insert(("t".into(), 0), committed_at(10));
        assert!(expire_offsets(&mut group, 5_999, retention).is_empty());
        assert_eq!(expire_offsets(&mut group, 6_000, retention).len(), 1);
    }
}
