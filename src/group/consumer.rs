//! KIP-848's consumer group protocol (`group.protocol=consumer`): members
//! heartbeat with what they subscribe to and what they own; the broker
//! computes every member's target assignment itself and hands each member
//! its share as partitions are released, with no group-wide barrier.
//!
//! Epochs: the group epoch moves on every membership or subscription
//! change, and the target assignment is recomputed at once (the
//! assignment epoch then equals it). A member's epoch catches up with the
//! assignment epoch once it has given up every partition its target no
//! longer holds. A partition moves to its new owner only after the old
//! owner acknowledged its revocation (a heartbeat that no longer lists it),
//! so no partition is ever consumed by two members at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::GroupError;

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The server-side assignors, by the names clients use.
pub const UNIFORM_ASSIGNOR: &str = "uniform";
pub const RANGE_ASSIGNOR: &str = "range";

/// A member's epoch in a heartbeat: joining, leaving, leaving as a static
/// member that will come back.
pub const JOIN_EPOCH: i32 = 0;
pub const LEAVE_EPOCH: i32 = -1;
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// A ConsumerGroupHeartbeat as the group sees it.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// What the member owns; `None`: unchanged.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's whole assignment, when it changed since the last one
    /// sent.
    pub assignment: Option<Assignment>,
}

/// What the group knows of the cluster: partition counts of the topics
/// that exist (internal ones excluded).
pub type TopicCounts = BTreeMap<String, i32>;

pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    previous_epoch: i32,
    pub rebalance_timeout: Duration,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignor: Option<String>,
    /// What the member owns now, as the coordinator told it.
    pub assigned: Assignment,
    /// Taken away and not yet acknowledged: still the member's until it
    /// heartbeats without them.
    pub pending_revocation: Assignment,
    last_sent: Option<Assignment>,
    last_heartbeat: Instant,
    revocation_deadline: Option<Instant>,
}

impl ConsumerMember {
    /// The topics it subscribes to, names and regex matches, that exist.
    fn subscribed(&self, topics: &TopicCounts) -> BTreeSet<String> {
        let regex = self
            .subscribed_topic_regex
            .as_deref()
            .and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok());
        topics
            .keys()
            .filter(|name| {
                self.subscribed_topic_names.contains(name)
                    || regex.as_ref().is_some_and(|re| re.is_match(name))
            })
            .cloned()
            .collect()
    }

    pub fn is_reconciled(&self, assignment_epoch: i32) -> bool {
        self.epoch == assignment_epoch && self.pending_revocation.is_empty()
    }
}

#[derive(Default)]
pub struct ConsumerGroup {
    /// Moves on every membership or subscription change.
    pub epoch: i32,
    /// The epoch the target assignment was computed at.
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: HashMap<String, Assignment>,
    /// Partition counts of the subscribed topics at the last computation.
    subscription_metadata: TopicCounts,
}

fn remove_all(from: &mut Assignment, remove: &Assignment) {
    for (topic, partitions) in remove {
        if let Some(set) = from.get_mut(topic) {
            for p in partitions {
                set.remove(p);
            }
            if set.is_empty() {
                from.remove(topic);
            }
        }
    }
}

fn add_all(to: &mut Assignment, add: &Assignment) {
    for (topic, partitions) in add {
        to.entry(topic.clone())
            .or_default()
            .extend(partitions.iter().copied());
    }
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (topic, partitions) in a {
        if let Some(other) = b.get(topic) {
            let both: BTreeSet<i32> = partitions.intersection(other).copied().collect();
            if !both.is_empty() {
                out.insert(topic.clone(), both);
            }
        }
    }
    out
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = a.clone();
    remove_all(&mut out, b);
    out
}

fn overlaps(a: &Assignment, b: &Assignment) -> bool {
    !intersect(a, b).is_empty()
}

impl ConsumerGroup {
    /// Whether every member has caught up with the target assignment.
    pub fn is_stable(&self) -> bool {
        self.members
            .values()
            .all(|m| m.is_reconciled(self.assignment_epoch))
    }

    /// The state name Kafka reports for a consumer group.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.is_stable() {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    pub fn is_subscribed_to(&self, topic: &str, topics: &TopicCounts) -> bool {
        self.members
            .values()
            .any(|m| m.subscribed(topics).contains(topic))
    }

    fn bump_epoch(&mut self) {
        self.epoch += 1;
    }

    /// One heartbeat: join, leave, or keep alive and reconcile.
    pub fn heartbeat(
        &mut self,
        request: Heartbeat,
        topics: &TopicCounts,
        now: Instant,
    ) -> Result<HeartbeatOutcome, GroupError> {
        if let Some(assignor) = &request.server_assignor
            && assignor != UNIFORM_ASSIGNOR
            && assignor != RANGE_ASSIGNOR
        {
            return Err(GroupError::UnsupportedAssignor(assignor.clone()));
        }
        if let Some(regex) = &request.subscribed_topic_regex
            && regex::Regex::new(regex).is_err()
        {
            return Err(GroupError::InvalidRegularExpression(regex.clone()));
        }
        match request.member_epoch {
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => self.leave(request, topics),
            JOIN_EPOCH => self.join(request, topics, now),
            _ => self.keep_alive(request, topics, now),
        }
    }

    fn leave(
        &mut self,
        request: Heartbeat,
        topics: &TopicCounts,
    ) -> Result<HeartbeatOutcome, GroupError> {
        if self.members.remove(&request.member_id).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        tracing::info!(member = %request.member_id, "consumer group member left");
        self.bump_epoch();
        self.compute_target(topics);
        Ok(HeartbeatOutcome {
            member_id: request.member_id,
            member_epoch: request.member_epoch,
            assignment: None,
        })
    }

    fn join(
        &mut self,
        mut request: Heartbeat,
        topics: &TopicCounts,
        now: Instant,
    ) -> Result<HeartbeatOutcome, GroupError> {
        if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none() {
            return Err(GroupError::InvalidRequest(
                "a joining member must give its subscription".into(),
            ));
        }
        if request.member_id.is_empty() {
            request.member_id = uuid::Uuid::new_v4().to_string();
        }
        // A static member coming back takes over its instance's place.
        if let Some(instance) = &request.instance_id {
            let previous: Vec<String> = self
                .members
                .values()
                .filter(|m| m.instance_id.as_ref() == Some(instance) && m.id != request.member_id)
                .map(|m| m.id.clone())
                .collect();
            for id in previous {
                self.members.remove(&id);
            }
        }
        let member = ConsumerMember {
            id: request.member_id.clone(),
            instance_id: request.instance_id.clone(),
            rack_id: request.rack_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            epoch: 0,
            previous_epoch: 0,
            rebalance_timeout: millis(request.rebalance_timeout_ms),
            subscribed_topic_names: request.subscribed_topic_names.clone().unwrap_or_default(),
            subscribed_topic_regex: request.subscribed_topic_regex.clone(),
            assignor: request.server_assignor.clone(),
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            last_sent: None,
            last_heartbeat: now,
            revocation_deadline: None,
        };
        tracing::info!(member = %member.id, "consumer group member joined");
        // A member rejoining with epoch 0 has given up everything it had.
        self.members.insert(member.id.clone(), member);
        self.bump_epoch();
        self.keep_alive_inner(request, topics, now, true)
    }

    fn keep_alive(
        &mut self,
        request: Heartbeat,
        topics: &TopicCounts,
        now: Instant,
    ) -> Result<HeartbeatOutcome, GroupError> {
        let Some(member) = self.members.get(&request.member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if request.member_epoch != member.epoch && request.member_epoch != member.previous_epoch {
            return Err(GroupError::FencedMemberEpoch);
        }
        self.keep_alive_inner(request, topics, now, false)
    }

    fn keep_alive_inner(
        &mut self,
        request: Heartbeat,
        topics: &TopicCounts,
        now: Instant,
        joined: bool,
    ) -> Result<HeartbeatOutcome, GroupError> {
        let mut changed = false;
        if let Some(member) = self.members.get_mut(&request.member_id) {
            member.last_heartbeat = now;
            if request.rebalance_timeout_ms > 0 {
                member.rebalance_timeout = millis(request.rebalance_timeout_ms);
            }
            if let Some(names) = request.subscribed_topic_names
                && names != member.subscribed_topic_names
            {
                member.subscribed_topic_names = names;
                changed = true;
            }
            if request.subscribed_topic_regex.is_some()
                && request.subscribed_topic_regex != member.subscribed_topic_regex
            {
                member.subscribed_topic_regex = request.subscribed_topic_regex;
                changed = true;
            }
            if request.server_assignor.is_some() {
                member.assignor = request.server_assignor;
            }
            if request.rack_id.is_some() {
                member.rack_id = request.rack_id;
            }
        }
        if changed && !joined {
            self.bump_epoch();
        }
        if self.subscription_metadata != self.subscribed_counts(topics) {
            self.bump_epoch();
        }
        if self.epoch != self.assignment_epoch {
            self.compute_target(topics);
        }
        let member_id = request.member_id.clone();
        self.reconcile(&member_id, request.owned.as_ref(), now);
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let assignment = (member.last_sent.as_ref() != Some(&member.assigned)).then(|| {
            member.last_sent = Some(member.assigned.clone());
            member.assigned.clone()
        });
        Ok(HeartbeatOutcome {
            member_id,
            member_epoch: member.epoch,
            assignment,
        })
    }

    fn subscribed_counts(&self, topics: &TopicCounts) -> TopicCounts {
        let mut counts = TopicCounts::new();
        for member in self.members.values() {
            for topic in member.subscribed(topics) {
                if let Some(count) = topics.get(&topic) {
                    counts.insert(topic, *count);
                }
            }
        }
        counts
    }

    /// Moves one member toward its target: first it gives up what it must
    /// (and waits for the acknowledgement), then it takes what is free.
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now: Instant) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let owned_by_others: Assignment = {
            let mut all = Assignment::new();
            for (id, other) in &self.members {
                if id != member_id {
                    add_all(&mut all, &other.assigned);
                    add_all(&mut all, &other.pending_revocation);
                }
            }
            all
        };
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        if let Some(owned) = owned
            && !member.pending_revocation.is_empty()
            && !overlaps(owned, &member.pending_revocation)
        {
            member.pending_revocation.clear();
            member.revocation_deadline = None;
        }
        let revoke = minus(&member.assigned, &target);
        if !revoke.is_empty() {
            member.assigned = intersect(&member.assigned, &target);
            add_all(&mut member.pending_revocation, &revoke);
            member.revocation_deadline = Some(now + member.rebalance_timeout);
            return;
        }
        if !member.pending_revocation.is_empty() {
            return;
        }
        let free = minus(&minus(&target, &member.assigned), &owned_by_others);
        add_all(&mut member.assigned, &free);
        if member.epoch != assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
        }
    }

    /// Recomputes every member's target from the subscriptions, sticking
    /// to the previous target where the balance allows.
    fn compute_target(&mut self, topics: &TopicCounts) {
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.subscribed(topics)))
            .collect();
        let range = self
            .members
            .values()
            .any(|m| m.assignor.as_deref() == Some(RANGE_ASSIGNOR));
        let mut target: HashMap<String, Assignment> = self
            .members
            .keys()
            .map(|id| (id.clone(), Assignment::new()))
            .collect();
        let all_topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
        for topic in all_topics {
            let count = topics.get(topic).copied().unwrap_or(0);
            let subscribers: Vec<&String> = subscriptions
                .iter()
                .filter(|(_, topics)| topics.contains(topic))
                .map(|(id, _)| id)
                .collect();
            if count <= 0 || subscribers.is_empty() {
                continue;
            }
            let shares = if range {
                range_shares(count, &subscribers)
            } else {
                self.sticky_shares(topic, count, &subscribers)
            };
            for (member, partitions) in shares {
                if !partitions.is_empty() {
                    target
                        .entry(member)
                        .or_default()
                        .insert(topic.clone(), partitions);
                }
            }
        }
        self.target = target;
        self.assignment_epoch = self.epoch;
        self.subscription_metadata = self.subscribed_counts(topics);
        tracing::info!(
            epoch = self.epoch,
            members = self.members.len(),
            "consumer group target assignment computed"
        );
    }

    /// Uniform and sticky: each subscriber gets `count / n` partitions (the
    /// first `count % n` by previous share one more), keeping what its
    /// previous target held first.
    fn sticky_shares(
        &self,
        topic: &str,
        count: i32,
        subscribers: &[&String],
    ) -> BTreeMap<String, BTreeSet<i32>> {
        let n = subscribers.len() as i32;
        let previous = |id: &str| -> BTreeSet<i32> {
            self.target
                .get(id)
                .and_then(|a| a.get(topic))
                .map(|set| set.iter().copied().filter(|p| *p < count).collect())
                .unwrap_or_default()
        };
        let mut order: Vec<&String> = subscribers.to_vec();
        // Larger previous shares get the extra partitions first.
        order.sort_by_key(|id| std::cmp::Reverse(previous(id).len()));
        let mut quotas: BTreeMap<String, usize> = BTreeMap::new();
        for (index, id) in order.iter().enumerate() {
            let extra = i32::from((index as i32) < count % n);
            quotas.insert((*id).clone(), (count / n + extra) as usize);
        }
        let mut shares: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        let mut taken = BTreeSet::new();
        for id in subscribers {
            let quota = quotas.get(*id).copied().unwrap_or(0);
            let kept: BTreeSet<i32> = previous(id)
                .into_iter()
                .filter(|p| !taken.contains(p))
                .take(quota)
                .collect();
            taken.extend(kept.iter().copied());
            shares.insert((*id).clone(), kept);
        }
        let mut free = (0..count).filter(|p| !taken.contains(p));
        for id in subscribers {
            let quota = quotas.get(*id).copied().unwrap_or(0);
            let share = shares.entry((*id).clone()).or_default();
            while share.len() < quota {
                match free.next() {
                    Some(p) => {
                        share.insert(p);
                    }
                    None => break,
                }
            }
        }
        shares
    }

    /// Timers: expired sessions and revocations not acknowledged in time.
    /// Returns whether the membership changed.
    pub fn tick(&mut self, now: Instant, session_timeout: Duration, topics: &TopicCounts) -> bool {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now >= m.last_heartbeat + session_timeout
                    || m.revocation_deadline.is_some_and(|d| now >= d)
            })
            .map(|m| m.id.clone())
            .collect();
        if expired.is_empty() {
            return false;
        }
        for id in &expired {
            tracing::info!(member = %id, "consumer group member expired; removed");
            self.members.remove(id);
        }
        self.bump_epoch();
        self.compute_target(topics);
        true
    }

    /// OffsetCommit's check for a consumer group: a member at its current
    /// (or previous) epoch, or a standalone commit into an empty group.
    pub fn check_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), GroupError> {
        if member_epoch < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        let Some(member) = self.members.get(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if member_epoch == member.epoch || member_epoch == member.previous_epoch {
            Ok(())
        } else {
            Err(GroupError::StaleMemberEpoch)
        }
    }
}

/// Range: contiguous blocks, in member id order.
fn range_shares(count: i32, subscribers: &[&String]) -> BTreeMap<String, BTreeSet<i32>> {
    let n = subscribers.len() as i32;
    let mut shares = BTreeMap::new();
    let mut next = 0;
    for (index, id) in subscribers.iter().enumerate() {
        let size = count / n + i32::from((index as i32) < count % n);
        shares.insert((*id).clone(), (next..next + size).collect());
        next += size;
    }
    shares
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> TopicCounts {
        [("a".to_string(), 6), ("b".to_string(), 2)]
            .into_iter()
            .collect()
    }

    fn join(
        group: &mut ConsumerGroup,
        id: &str,
        subscribe: &[&str],
        now: Instant,
    ) -> HeartbeatOutcome {
        group
            .heartbeat(
                Heartbeat {
                    member_id: id.into(),
                    member_epoch: JOIN_EPOCH,
                    rebalance_timeout_ms: 30_000,
                    subscribed_topic_names: Some(subscribe.iter().map(|s| s.to_string()).collect()),
                    ..Heartbeat::default()
                },
                &topics(),
                now,
            )
            .expect("join")
    }

    fn beat(
        group: &mut ConsumerGroup,
        id: &str,
        epoch: i32,
        owned: Option<Assignment>,
        now: Instant,
    ) -> Result<HeartbeatOutcome, GroupError> {
        group.heartbeat(
            Heartbeat {
                member_id: id.into(),
                member_epoch: epoch,
                owned,
                ..Heartbeat::default()
            },
            &topics(),
            now,
        )
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn partitions_move_only_after_their_owner_releases_them() {
        let now = Instant::now();
        let mut group = ConsumerGroup::default();
        let first = join(&mut group, "m1", &["a", "b"], now);
        let all = first.assignment.clone().expect("assignment");
        assert_eq!(count(&all), 8, "a lone member gets everything");
        assert_eq!(first.member_epoch, group.assignment_epoch);

        let second = join(&mut group, "m2", &["a", "b"], now);
        // m1 still owns everything: m2 gets nothing yet.
        assert_eq!(second.assignment.map(|a| count(&a)), Some(0));
        // m1 is told to give up half, keeping its epoch.
        let m1 = beat(&mut group, "m1", first.member_epoch, Some(all.clone()), now).expect("hb");
        let kept = m1.assignment.clone().expect("revocation");
        assert_eq!(count(&kept), 4);
        assert_eq!(m1.member_epoch, first.member_epoch);
        // Until m1 acknowledges, m2 still waits.
        let waiting = beat(&mut group, "m2", second.member_epoch, None, now).expect("hb");
        assert!(waiting.assignment.is_none());
        // m1 acknowledges (owns only what it kept): its epoch catches up.
        let acked = beat(&mut group, "m1", m1.member_epoch, Some(kept.clone()), now).expect("hb");
        assert_eq!(acked.member_epoch, group.assignment_epoch);
        let given = beat(&mut group, "m2", second.member_epoch, None, now).expect("hb");
        let given = given.assignment.expect("m2's share");
        assert_eq!(count(&given), 4);
        assert!(!overlaps(&given, &kept), "no partition is owned twice");
        assert!(group.is_stable());
    }

    #[test]
    fn stale_epochs_are_fenced_and_leaving_frees_partitions() {
        let now = Instant::now();
        let mut group = ConsumerGroup::default();
        let m1 = join(&mut group, "m1", &["a"], now);
        assert_eq!(
            beat(&mut group, "m1", m1.member_epoch + 7, None, now),
            Err(GroupError::FencedMemberEpoch)
        );
        assert_eq!(
            beat(&mut group, "ghost", 3, None, now),
            Err(GroupError::UnknownMemberId)
        );
        let m2 = join(&mut group, "m2", &["a"], now);
        beat(&mut group, "m1", LEAVE_EPOCH, None, now).expect("leave");
        let taken = beat(&mut group, "m2", m2.member_epoch, None, now).expect("hb");
        assert_eq!(taken.assignment.map(|a| count(&a)), Some(6));
    }

    #[test]
    fn silent_members_expire() {
        let now = Instant::now();
        let mut group = ConsumerGroup::default();
        join(&mut group, "m1", &["a"], now);
        assert!(!group.tick(
            now + Duration::from_secs(1),
            Duration::from_secs(10),
            &topics()
        ));
        assert!(group.tick(
            now + Duration::from_secs(11),
            Duration::from_secs(10),
            &topics()
        ));
        assert!(group.members.is_empty());
    }

    #[test]
    fn sticky_shares_keep_what_they_can() {
        let now = Instant::now();
        let mut group = ConsumerGroup::default();
        for id in ["m1", "m2", "m3"] {
            join(&mut group, id, &["a"], now);
        }
        let before = group.target.clone();
        join(&mut group, "m4", &["a"], now);
        let moved: usize = ["m1", "m2", "m3"]
            .iter()
            .map(|id| count(&minus(&before[*id], &group.target[*id])))
            .sum();
        assert_eq!(moved, 1, "6 partitions over 4 members: one moves to m4");
        let total: usize = group.target.values().map(count).sum();
        assert_eq!(total, 6);
    }
}
