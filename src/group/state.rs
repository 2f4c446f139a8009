//! One consumer group under the classic protocol, as Apache Kafka's group
//! coordinator runs it: members and their protocols, generations, the
//! rebalance states, static membership (KIP-345), member ids required on
//! first join (KIP-394), and the group's committed offsets.
//!
//! ```text
//!  Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!    ▲                  ▲        │ no members left                   │ leader's SyncGroup
//!    └──────────────────┼────────┘                                   ▼
//!                       └────── join, leave, expiry, new metadata ── Stable
//! ```
//!
//! Everything here is synchronous and takes the time as an argument, so the
//! coordinator (and the tests) drive it. A request that must wait for a
//! rebalance gets a [`Reply::Later`]; the group answers it when the
//! rebalance reaches that point. A removed member's parked request is
//! answered with an error, never left hanging.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::consumer::{ConsumerGroup, TopicCounts};
use super::offset_record::{GroupValue, OffsetValue, StoredMember};
use super::{GroupConfig, GroupError};
use crate::shard::oneshot;

/// How long a new member's first JoinGroup may wait for its rebalance
/// before the member is dropped (Kafka's `NewMemberJoinTimeoutMs`).
const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A request parked until the group answers it, or answered now.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A JoinGroup as the group sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// JoinGroup v4+: a member without an id gets one and must rejoin.
    pub require_known_member_id: bool,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    pub error: Option<GroupError>,
    pub member_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    /// Every member with its metadata; only the leader gets them.
    pub members: Vec<JoinedMember>,
}

impl JoinOutcome {
    pub fn error(member_id: &str, error: GroupError) -> JoinOutcome {
        JoinOutcome {
            error: Some(error),
            member_id: member_id.to_string(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn error(error: GroupError) -> SyncOutcome {
        SyncOutcome {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A SyncGroup as the group sees it.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// v5+: must match the group's when given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// (member id, assignment): the leader's plan, empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// One member leaving (LeaveGroup v3+ names several).
#[derive(Debug, Clone)]
pub struct Leaving {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

impl From<OffsetValue> for Committed {
    fn from(value: OffsetValue) -> Self {
        Committed {
            offset: value.offset,
            leader_epoch: value.leader_epoch,
            metadata: value.metadata,
            commit_timestamp_ms: value.commit_timestamp_ms,
        }
    }
}

impl From<&Committed> for OffsetValue {
    fn from(value: &Committed) -> Self {
        OffsetValue {
            offset: value.offset,
            leader_epoch: value.leader_epoch,
            metadata: value.metadata.clone(),
            commit_timestamp_ms: value.commit_timestamp_ms,
        }
    }
}

pub struct Member {
    pub id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
    last_heartbeat: Instant,
    /// Joined and not yet through its first rebalance.
    is_new: bool,
}

impl Member {
    fn awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }

    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// The member's metadata for `protocol`.
    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|name| self.protocols.iter().find(|(n, _)| n == name))
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// Kafka's `shouldKeepAlive`: a member parked in JoinGroup or SyncGroup
    /// is alive (a new one only for `NEW_MEMBER_JOIN_TIMEOUT`); any other
    /// must have heartbeated within its session timeout.
    fn alive_at(&self, now: Instant) -> bool {
        if self.awaiting_join() {
            !self.is_new || now < self.last_heartbeat + NEW_MEMBER_JOIN_TIMEOUT
        } else if self.sync_waiter.is_some() {
            true
        } else {
            now < self.last_heartbeat + self.session_timeout
        }
    }

    fn answer_join(&mut self, outcome: JoinOutcome) {
        if let Some(waiter) = self.join_waiter.take() {
            waiter.send(outcome);
        }
    }

    fn answer_sync(&mut self, outcome: SyncOutcome) {
        if let Some(waiter) = self.sync_waiter.take() {
            waiter.send(outcome);
        }
    }
}

/// The initial rebalance delay of a group that was empty
/// (`group.initial.rebalance.delay.ms`): it waits for more members, and
/// waits again while new ones keep arriving, within the rebalance timeout.
struct InitialDelay {
    until: Instant,
    /// `group.initial.rebalance.delay.ms`
    step: Duration,
    /// What is left of the rebalance timeout for further waits.
    remaining: Duration,
    new_member_added: bool,
}

pub struct Group {
    pub id: String,
    state: GroupState,
    /// Wall-clock time of the last state change (Kafka's
    /// `currentStateTimestamp`): an empty group's offsets expire from it.
    state_since_ms: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In the order they joined.
    members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they expire.
    pending: HashMap<String, Instant>,
    /// group.instance.id -> member id.
    static_members: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    initial_delay: Option<InitialDelay>,
    sync_deadline: Option<Instant>,
    /// Committed offsets by (topic, partition).
    pub offsets: HashMap<(String, i32), Committed>,
    /// The membership changed in a way that is stored (the group became
    /// stable or empty); the coordinator writes it and clears this.
    pub store_needed: bool,
    /// Set while the group runs KIP-848's consumer protocol instead of the
    /// classic one (an empty group may switch either way).
    pub consumer: Option<ConsumerGroup>,
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: None,
            sync_deadline: None,
            offsets: HashMap::new(),
            store_needed: false,
            consumer: None,
        }
    }

    /// The classic state; a consumer-protocol group is Empty or Stable
    /// (see [`Group::state_name`] for its own states).
    pub fn state(&self) -> GroupState {
        match &self.consumer {
            Some(consumer) if consumer.members.is_empty() => GroupState::Empty,
            Some(_) => GroupState::Stable,
            None => self.state,
        }
    }

    /// The state as ListGroups and DescribeGroups name it.
    pub fn state_name(&self) -> &'static str {
        match &self.consumer {
            Some(consumer) => consumer.state_name(),
            None => self.state.name(),
        }
    }

    /// "consumer" for KIP-848 groups, "classic" otherwise.
    pub fn group_type(&self) -> &'static str {
        if self.consumer.is_some() {
            "consumer"
        } else {
            "classic"
        }
    }

    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        if self.consumer.is_some() {
            return Some("consumer");
        }
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn member_index(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == member_id)
    }

    fn has_member(&self, member_id: &str) -> bool {
        self.member_index(member_id).is_some()
    }

    fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == member_id)
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// A static member whose id is not the one its instance id has now.
    fn is_static_member_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        match instance_id.and_then(|instance| self.static_members.get(instance)) {
            Some(current) => current != member_id,
            None => false,
        }
    }

    /// Protocol names every member supports, in the first member's order.
    fn candidate_protocols(&self) -> Vec<String> {
        let Some(first) = self.members.first() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect()
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .candidate_protocols()
                .iter()
                .any(|c| protocols.iter().any(|(name, _)| name == c))
    }

    /// Kafka's vote: each member votes for its most preferred protocol
    /// that all support; the most votes win (ties: the first member's order).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for member in &self.members {
            let choice = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(name));
            if let Some((name, _)) = choice
                && let Some(entry) = votes.iter_mut().find(|(c, _)| c == name)
            {
                entry.1 += 1;
            }
        }
        let best = votes.iter().map(|(_, count)| *count).max()?;
        votes
            .into_iter()
            .find(|(_, count)| *count == best)
            .map(|(name, _)| name)
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    fn all_members_joined(&self) -> bool {
        self.pending.is_empty() && self.members.iter().all(Member::awaiting_join)
    }

    fn current_outcome(&self, member_id: &str, with_members: bool) -> JoinOutcome {
        JoinOutcome {
            error: None,
            member_id: member_id.to_string(),
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            members: if with_members {
                self.member_list()
            } else {
                Vec::new()
            },
        }
    }

    fn member_list(&self) -> Vec<JoinedMember> {
        self.members
            .iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(self.protocol.as_deref()),
            })
            .collect()
    }

    /// JoinGroup. The caller has checked the session timeout bounds.
    pub fn join(
        &mut self,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
        config: &GroupConfig,
    ) -> Reply<JoinOutcome> {
        let reply = self.join_inner(request, now, now_ms, config);
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now, now_ms);
        }
        reply
    }

    fn join_inner(
        &mut self,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
        config: &GroupConfig,
    ) -> Reply<JoinOutcome> {
        let error = |e| Reply::Now(JoinOutcome::error(&request.member_id, e));
        if self.state == GroupState::Dead {
            return error(GroupError::CoordinatorNotAvailable);
        }
        match &self.consumer {
            Some(consumer) if !consumer.members.is_empty() => {
                return error(GroupError::InconsistentGroupProtocol);
            }
            // An empty consumer-protocol group becomes a classic one.
            Some(_) => self.consumer = None,
            None => {}
        }
        if !self.supports_protocols(&request.protocol_type, &request.protocols) {
            return error(GroupError::InconsistentGroupProtocol);
        }
        if request.member_id.is_empty() {
            if self.members.len() >= config.max_size {
                return error(GroupError::GroupMaxSizeReached);
            }
            return self.join_unknown(request, now, now_ms, config);
        }
        let member_id = request.member_id.clone();
        if self.pending.contains_key(&member_id) && request.group_instance_id.is_none() {
            return self.add_member_and_rebalance(request, member_id, now, now_ms, config);
        }
        let instance = request.group_instance_id.as_deref();
        if self.is_static_member_fenced(&member_id, instance) {
            return error(GroupError::FencedInstanceId);
        }
        let instance_unknown = instance.is_some_and(|i| !self.static_members.contains_key(i));
        if !self.has_member(&member_id) || instance_unknown {
            return error(GroupError::UnknownMemberId);
        }
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        let matches = self
            .member_mut(&member_id)
            .is_some_and(|m| m.matches(&request.protocols));
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(request, now, now_ms, config)
            }
            GroupState::CompletingRebalance if matches => {
                Reply::Now(self.current_outcome(&member_id, is_leader))
            }
            GroupState::Stable if matches && !is_leader => {
                Reply::Now(self.current_outcome(&member_id, false))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(request, now, now_ms, config)
            }
            GroupState::Empty | GroupState::Dead => error(GroupError::UnknownMemberId),
        }
    }

    fn join_unknown(
        &mut self,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
        config: &GroupConfig,
    ) -> Reply<JoinOutcome> {
        let prefix = request
            .group_instance_id
            .as_deref()
            .unwrap_or(&request.client_id);
        let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        let existing = request
            .group_instance_id
            .as_deref()
            .and_then(|instance| self.static_members.get(instance))
            .cloned();
        if let Some(old_id) = existing {
            return self.replace_static_member(request, &old_id, new_id, now, now_ms, config);
        }
        if request.require_known_member_id {
            self.pending
                .insert(new_id.clone(), now + millis(request.session_timeout_ms));
            return Reply::Now(JoinOutcome::error(&new_id, GroupError::MemberIdRequired));
        }
        self.add_member_and_rebalance(request, new_id, now, now_ms, config)
    }

    /// A static member rejoining without its member id (a restarted
    /// instance): it takes over the old member's place and assignment, and
    /// the old id is fenced. No rebalance unless one is already running.
    fn replace_static_member(
        &mut self,
        request: JoinRequest,
        old_id: &str,
        new_id: String,
        now: Instant,
        now_ms: i64,
        config: &GroupConfig,
    ) -> Reply<JoinOutcome> {
        let current_leader = self.leader.clone().unwrap_or_default();
        let Some(index) = self.member_index(old_id) else {
            return Reply::Now(JoinOutcome::error("", GroupError::UnknownMemberId));
        };
        let member = &mut self.members[index];
        member.answer_join(JoinOutcome::error(old_id, GroupError::FencedInstanceId));
        member.answer_sync(SyncOutcome::error(GroupError::FencedInstanceId));
        member.id = new_id.clone();
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout = millis(request.session_timeout_ms);
        member.rebalance_timeout = millis(request.rebalance_timeout_ms);
        member.protocols = request.protocols;
        member.last_heartbeat = now;
        if let Some(instance) = &request.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                // The old leader id is returned so that a replaced leader
                // does not assign again in a generation that is settled.
                let mut outcome = self.current_outcome(&new_id, false);
                outcome.leader = current_leader;
                Reply::Now(outcome)
            }
            _ => {
                let (sender, receiver) = oneshot::channel();
                self.members[index].join_waiter = Some(sender);
                if self.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(now, now_ms, config);
                }
                Reply::Later(receiver)
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        request: JoinRequest,
        member_id: String,
        now: Instant,
        now_ms: i64,
        config: &GroupConfig,
    ) -> Reply<JoinOutcome> {
        let (sender, receiver) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if self.state == GroupState::PreparingRebalance
            && self.generation == 0
            && let Some(delay) = &mut self.initial_delay
        {
            delay.new_member_added = true;
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        match &request.group_instance_id {
            Some(instance) => {
                self.static_members
                    .insert(instance.clone(), member_id.clone());
            }
            None => {
                self.pending.remove(&member_id);
            }
        }
        self.members.push(Member {
            id: member_id,
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout: millis(request.session_timeout_ms),
            rebalance_timeout: millis(request.rebalance_timeout_ms),
            protocol_type: request.protocol_type,
            protocols: request.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(sender),
            sync_waiter: None,
            last_heartbeat: now,
            is_new: true,
        });
        self.maybe_prepare_rebalance(now, now_ms, config);
        Reply::Later(receiver)
    }

    fn update_member_and_rebalance(
        &mut self,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
        config: &GroupConfig,
    ) -> Reply<JoinOutcome> {
        let (sender, receiver) = oneshot::channel();
        if let Some(member) = self.member_mut(&request.member_id) {
            member.protocols = request.protocols;
            member.session_timeout = millis(request.session_timeout_ms);
            member.rebalance_timeout = millis(request.rebalance_timeout_ms);
            member.client_id = request.client_id;
            member.client_host = request.client_host;
            member.last_heartbeat = now;
            // A repeated JoinGroup replaces the one parked before it.
            member.answer_join(JoinOutcome::error(
                &request.member_id,
                GroupError::RebalanceInProgress,
            ));
            member.join_waiter = Some(sender);
        }
        self.maybe_prepare_rebalance(now, now_ms, config);
        Reply::Later(receiver)
    }

    fn maybe_prepare_rebalance(&mut self, now: Instant, now_ms: i64, config: &GroupConfig) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(now, now_ms, config);
        }
    }

    fn prepare_rebalance(&mut self, now: Instant, now_ms: i64, config: &GroupConfig) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_assignment_error(GroupError::RebalanceInProgress);
        }
        let timeout = self.rebalance_timeout();
        let delay = millis(config.initial_rebalance_delay_ms);
        self.initial_delay =
            (self.state == GroupState::Empty && !delay.is_zero()).then(|| InitialDelay {
                until: now + delay,
                step: delay,
                remaining: timeout.saturating_sub(delay),
                new_member_added: false,
            });
        self.rebalance_deadline = Some(now + timeout);
        self.sync_deadline = None;
        self.transition(GroupState::PreparingRebalance, now_ms);
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            "preparing to rebalance"
        );
    }

    fn reset_and_propagate_assignment_error(&mut self, error: GroupError) {
        for member in &mut self.members {
            member.assignment = Bytes::new();
            member.answer_sync(SyncOutcome::error(error.clone()));
        }
    }

    /// Completes the join phase when every member has rejoined (after the
    /// initial delay of a new group), or when the rebalance timeout passed.
    fn maybe_complete_join(&mut self, now: Instant, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(delay) = &mut self.initial_delay {
            if now < delay.until {
                return;
            }
            if delay.new_member_added && !delay.remaining.is_zero() {
                let again = delay.remaining.min(delay.step);
                delay.until = now + again;
                delay.remaining = delay.remaining.saturating_sub(delay.step);
                delay.new_member_added = false;
                return;
            }
            self.initial_delay = None;
            self.complete_join(now, now_ms);
            return;
        }
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if self.all_members_joined() || timed_out {
            self.complete_join(now, now_ms);
        }
    }

    /// Kafka's `onCompleteJoin`: dynamic members that did not rejoin are
    /// dropped, a leader that did not rejoin is replaced, and the next
    /// generation starts (empty, or waiting for the leader's assignment).
    fn complete_join(&mut self, now: Instant, now_ms: i64) {
        let failed: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.awaiting_join() && m.group_instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in failed {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            self.remove_member(&id);
        }
        if self.state == GroupState::Dead {
            return;
        }
        if !self.members.is_empty() && !self.members.iter().any(Member::awaiting_join) {
            // Only static members that have not rejoined: wait for them (or
            // their session timeouts) for another rebalance timeout.
            self.rebalance_deadline = Some(now + self.rebalance_timeout());
            return;
        }
        let leader_joined = self
            .leader
            .as_deref()
            .and_then(|id| self.members.iter().find(|m| m.id == id))
            .is_some_and(Member::awaiting_join);
        if !leader_joined {
            self.leader = self
                .members
                .iter()
                .find(|m| m.awaiting_join())
                .map(|m| m.id.clone());
        }
        self.generation += 1;
        self.rebalance_deadline = None;
        self.store_needed = true;
        if self.members.is_empty() {
            self.protocol = None;
            self.transition(GroupState::Empty, now_ms);
            tracing::info!(group = %self.id, generation = self.generation, "group is empty");
            return;
        }
        self.protocol = self.select_protocol();
        self.transition(GroupState::CompletingRebalance, now_ms);
        self.sync_deadline = Some(now + self.rebalance_timeout());
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = self.protocol.as_deref().unwrap_or(""),
            "rebalance: join phase complete"
        );
        let all = self.member_list();
        for index in 0..self.members.len() {
            let is_leader = self.leader.as_deref() == Some(self.members[index].id.as_str());
            let mut outcome = self.current_outcome(&self.members[index].id, false);
            if is_leader {
                outcome.members = all.clone();
            }
            let member = &mut self.members[index];
            member.answer_join(outcome);
            member.is_new = false;
            member.last_heartbeat = now;
        }
    }

    /// Drops a member: a parked request is answered with UNKNOWN_MEMBER_ID,
    /// and a leader is succeeded by the oldest remaining member.
    fn remove_member(&mut self, member_id: &str) {
        let Some(index) = self.member_index(member_id) else {
            return;
        };
        let mut member = self.members.remove(index);
        member.answer_join(JoinOutcome::error("", GroupError::UnknownMemberId));
        member.answer_sync(SyncOutcome::error(GroupError::UnknownMemberId));
        if let Some(instance) = &member.group_instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance);
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
    }

    /// Removes a member and moves the group on: a rebalance of a stable
    /// group, or the end of a join phase it was holding up.
    fn remove_member_and_update(
        &mut self,
        member_id: &str,
        now: Instant,
        now_ms: i64,
        config: &GroupConfig,
    ) {
        self.remove_member(member_id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, now_ms, config);
                self.maybe_complete_join(now, now_ms);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now, now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Checks the identity every member request carries.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.is_static_member_fenced(member_id, instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if !self.has_member(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation_id != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    fn touch(&mut self, member_id: &str, now: Instant) {
        if let Some(member) = self.member_mut(member_id) {
            member.last_heartbeat = now;
        }
    }

    /// SyncGroup: followers wait for the leader's assignment; the leader's
    /// makes the group stable and answers everyone.
    pub fn sync(&mut self, request: SyncRequest, now: Instant, now_ms: i64) -> Reply<SyncOutcome> {
        let error = |e| Reply::Now(SyncOutcome::error(e));
        if let Err(e) = self.check_member(
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
        ) {
            return error(e);
        }
        let type_mismatch = request
            .protocol_type
            .as_deref()
            .is_some_and(|t| self.protocol_type.as_deref() != Some(t));
        let name_mismatch = request
            .protocol_name
            .as_deref()
            .is_some_and(|n| self.protocol.as_deref() != Some(n));
        if type_mismatch || name_mismatch {
            return error(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => error(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => error(GroupError::RebalanceInProgress),
            GroupState::Stable => {
                self.touch(&request.member_id, now);
                let assignment = self
                    .member_mut(&request.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Reply::Now(self.sync_outcome(assignment))
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                if let Some(member) = self.member_mut(&request.member_id) {
                    member.answer_sync(SyncOutcome::error(GroupError::RebalanceInProgress));
                    member.sync_waiter = Some(sender);
                }
                if self.leader.as_deref() == Some(request.member_id.as_str()) {
                    self.set_and_propagate_assignment(request.assignments, now, now_ms);
                }
                Reply::Later(receiver)
            }
        }
    }

    fn sync_outcome(&self, assignment: Bytes) -> SyncOutcome {
        SyncOutcome {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    fn set_and_propagate_assignment(
        &mut self,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        now_ms: i64,
    ) {
        let mut plan: HashMap<String, Bytes> = assignments.into_iter().collect();
        for member in &mut self.members {
            member.assignment = plan.remove(&member.id).unwrap_or_default();
        }
        self.transition(GroupState::Stable, now_ms);
        self.sync_deadline = None;
        self.store_needed = true;
        tracing::info!(group = %self.id, generation = self.generation, "group is stable");
        for index in 0..self.members.len() {
            let outcome = self.sync_outcome(self.members[index].assignment.clone());
            let member = &mut self.members[index];
            if member.sync_waiter.is_some() {
                member.answer_sync(outcome);
                member.last_heartbeat = now;
            }
        }
    }

    /// Heartbeat: keeps a member alive and tells it of a rebalance.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        self.check_member(member_id, instance_id, generation_id)?;
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                self.touch(member_id, now);
                Err(GroupError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.touch(member_id, now);
                Ok(())
            }
        }
    }

    /// LeaveGroup of one or more members; one result per member.
    pub fn leave(
        &mut self,
        leaving: &[Leaving],
        now: Instant,
        now_ms: i64,
        config: &GroupConfig,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let mut results = Vec::with_capacity(leaving.len());
        for member in leaving {
            let instance = member.group_instance_id.as_deref();
            let static_id = instance.and_then(|i| self.static_members.get(i)).cloned();
            let result = if !member.member_id.is_empty()
                && self.is_static_member_fenced(&member.member_id, instance)
            {
                Err(GroupError::FencedInstanceId)
            } else if self.pending.remove(&member.member_id).is_some() {
                self.maybe_complete_join(now, now_ms);
                Ok(())
            } else if let Some(id) = static_id.or_else(|| {
                self.has_member(&member.member_id)
                    .then(|| member.member_id.clone())
            }) {
                tracing::info!(group = %self.id, member = %id, "member left");
                self.remove_member_and_update(&id, now, now_ms, config);
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
            results.push(result);
        }
        Ok(results)
    }

    /// Timers: expired members and pending ids, the end of a join phase,
    /// and a sync phase whose leader never answered.
    pub fn tick(&mut self, now: Instant, now_ms: i64, config: &GroupConfig) {
        if self.state == GroupState::Dead {
            return;
        }
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        if self.pending.len() != before {
            self.maybe_complete_join(now, now_ms);
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.alive_at(now))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member's session expired; removed");
            self.remove_member_and_update(&id, now, now_ms, config);
        }
        self.maybe_complete_join(now, now_ms);
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            let unsynced: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.sync_waiter.is_none())
                .map(|m| m.id.clone())
                .collect();
            for id in &unsynced {
                tracing::info!(group = %self.id, member = %id, "member did not sync in time; removed");
                self.remove_member(id);
            }
            self.prepare_rebalance(now, now_ms, config);
            self.maybe_complete_join(now, now_ms);
        }
    }

    /// OffsetCommit's membership check: a standalone commit (generation -1)
    /// into an empty group, or a member of the current generation outside
    /// the sync phase.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if let Some(consumer) = &self.consumer {
            return consumer.check_commit(member_id, generation_id);
        }
        if self.is_static_member_fenced(member_id, instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        self.check_member(member_id, instance_id, generation_id)?;
        match self.state {
            GroupState::Stable | GroupState::PreparingRebalance => {
                self.touch(member_id, now);
                Ok(())
            }
            GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    /// Whether a member's subscription names `topic` (for OffsetDelete):
    /// only consumer-protocol groups are understood; others never match.
    pub fn is_subscribed_to(&self, topic: &str, topics: &TopicCounts) -> bool {
        if let Some(consumer) = &self.consumer {
            return consumer.is_subscribed_to(topic, topics);
        }
        if self.protocol_type.as_deref() != Some("consumer") {
            return false;
        }
        let protocol = self.protocol.as_deref();
        self.members.iter().any(|m| {
            consumer_subscription_topics(&m.metadata(protocol))
                .is_some_and(|topics| topics.iter().any(|t| t == topic))
        })
    }

    /// Answers every parked request (the shard is stopping).
    pub fn unload(&mut self) {
        for member in &mut self.members {
            member.answer_join(JoinOutcome::error(
                &member.id.clone(),
                GroupError::NotCoordinator,
            ));
            member.answer_sync(SyncOutcome::error(GroupError::NotCoordinator));
        }
    }

    pub fn mark_dead(&mut self, now_ms: i64) {
        self.unload();
        self.transition(GroupState::Dead, now_ms);
    }

    /// The membership as stored.
    pub fn stored_value(&self) -> GroupValue {
        let protocol = self.protocol.as_deref();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .iter()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: duration_ms(m.rebalance_timeout),
                    session_timeout_ms: duration_ms(m.session_timeout),
                    subscription: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores the membership read back at load: stable with its members
    /// (who must heartbeat within their session timeouts), or empty.
    pub fn restore(&mut self, value: GroupValue, now: Instant) {
        self.generation = value.generation;
        self.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
        self.protocol = value.protocol.clone();
        self.leader = value.leader;
        self.state_since_ms = value.current_state_timestamp_ms;
        self.static_members.clear();
        self.members = value
            .members
            .into_iter()
            .map(|m| {
                if let Some(instance) = &m.group_instance_id {
                    self.static_members
                        .insert(instance.clone(), m.member_id.clone());
                }
                Member {
                    id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: millis(m.session_timeout_ms),
                    rebalance_timeout: millis(m.rebalance_timeout_ms),
                    protocol_type: self.protocol_type.clone().unwrap_or_default(),
                    protocols: value
                        .protocol
                        .clone()
                        .map(|p| vec![(p, m.subscription)])
                        .unwrap_or_default(),
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    last_heartbeat: now,
                    is_new: false,
                }
            })
            .collect();
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }
}

/// The topics of a consumer-protocol subscription (version, then an array
/// of topic strings); `None` if it does not parse.
fn consumer_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut at = 2usize; // version
    let count = i32::from_be_bytes(metadata.get(at..at + 4)?.try_into().ok()?);
    at += 4;
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let length = i16::from_be_bytes(metadata.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        let length = usize::try_from(length).ok()?;
        let name = metadata.get(at..at + length)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
        at += length;
    }
    Some(topics)
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn duration_ms(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}
