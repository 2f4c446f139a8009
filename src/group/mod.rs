//! Consumer groups: the classic group protocol's coordinator (members,
//! generations, rebalances, as Apache Kafka's group coordinator runs them)
//! and the committed offsets it keeps.
//!
//! Group `g` belongs to partition `abs(javaHash(g)) % N` of the internal
//! topic `__consumer_offsets` (N = `offsets.topic.num.partitions`, Kafka's
//! formula, so a group maps to the same partition as on Kafka), and the
//! shard that owns that partition is the group's coordinator. Offset
//! commits and group metadata are appended to that partition on that shard
//! and are local appends; a commit is answered once its record is durable.
//! At start each shard replays its partitions of the topic; until one is
//! replayed its groups answer COORDINATOR_LOAD_IN_PROGRESS.
//!
//! - `state`: one group's state machine and its committed offsets.
//! - `coordinator`: a shard's groups, their storage, timers, and loading.
//! - `offset_record`: the stored records, in Kafka's format.

pub mod consumer;
pub mod coordinator;
pub mod offset_record;
pub mod state;

pub use coordinator::Coordinator;

/// The internal topic that stores committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Broker-wide group settings (Kafka's names in the docs).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.consumer.session.timeout.ms` (KIP-848 groups)
    pub consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups)
    pub consumer_heartbeat_interval_ms: i32,
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for
    /// more members before its first rebalance completes.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub max_size: usize,
    /// `offsets.topic.num.partitions`
    pub offsets_partitions: i32,
    /// `offsets.topic.segment.bytes`
    pub offsets_segment_bytes: u64,
    /// `offsets.retention.minutes`, in ms: how long an empty group's
    /// offsets (or a standalone commit) are kept.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`
    pub offset_metadata_max_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
            offsets_partitions: 50,
            offsets_segment_bytes: 100 * 1024 * 1024,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
        }
    }
}

/// Why a group request failed; each maps to one Kafka error code at the
/// handler boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the group id is not valid")]
    InvalidGroupId,
    #[error("this node is not the group's coordinator")]
    NotCoordinator,
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("the group coordinator is loading the group's offsets")]
    CoordinatorLoadInProgress,
    #[error("the session timeout is outside group.min/max.session.timeout.ms")]
    InvalidSessionTimeout,
    #[error("the member id is not known to the group")]
    UnknownMemberId,
    #[error("the member id is required: rejoin with the one given")]
    MemberIdRequired,
    #[error("the generation is not the group's current one")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("another member with the same group.instance.id replaced this one")]
    FencedInstanceId,
    #[error("the member's protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("the group has reached group.max.size members")]
    GroupMaxSizeReached,
    #[error("the group is not empty")]
    NonEmptyGroup,
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("the topic or partition does not exist")]
    UnknownTopicOrPartition,
    #[error("the offset metadata is larger than offset.metadata.max.bytes")]
    OffsetMetadataTooLarge,
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("storing the group's records failed: {0}")]
    Storage(String),
    #[error("the member epoch is fenced: abandon every partition and rejoin")]
    FencedMemberEpoch,
    #[error("the member epoch is stale: retry with the epoch of the latest heartbeat")]
    StaleMemberEpoch,
    #[error("the server assignor {0:?} is not supported (uniform, range)")]
    UnsupportedAssignor(String),
    #[error("the subscription regex {0:?} is not valid")]
    InvalidRegularExpression(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka hashes
/// group ids.
fn java_string_hash(value: &str) -> i32 {
    value.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The `__consumer_offsets` partition of `group` (Kafka's
/// `Utils.abs(groupId.hashCode) % partitionCount`).
pub fn partition_for(group: &str, partition_count: i32) -> i32 {
    assert!(partition_count > 0, "the offsets topic has partitions");
    let hash = java_string_hash(group);
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partition_count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_kafkas_partitions() {
        // Java: "".hashCode() == 0, "a".hashCode() == 97,
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("a", 50), 47);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        for group in ["g", "orders-app", "ü-group", "x".repeat(300).as_str()] {
            let p = partition_for(group, 50);
            assert!((0..50).contains(&p), "{group}: {p}");
        }
    }
}
