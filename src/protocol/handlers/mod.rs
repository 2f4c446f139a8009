//! One handler per Kafka API. Handlers turn typed errors into Kafka error
//! codes here, at the boundary, and nowhere else.

pub mod alter_configs;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use kafka_protocol::ResponseError;
use kafka_protocol::protocol::StrBytes;

use std::rc::Rc;

use crate::group::GroupError;
use crate::shard::{PartitionLookup, Shard};
use crate::storage::{PartitionLog, StorageError};

/// The one leader epoch a single-node partition has.
pub const LEADER_EPOCH: i32 = 0;

/// The Kafka error code of a storage error.
pub fn storage_error_code(error: &StorageError) -> ResponseError {
    match error {
        StorageError::CorruptMessage(_) => ResponseError::CorruptMessage,
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord,
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        _ => ResponseError::KafkaStorageError,
    }
}

/// The log of a partition this shard serves, or the error code that says
/// why not (unknown, led by another shard, or a client's leader epoch that
/// is not ours; -1 skips the epoch check).
pub fn serving_log(
    shard: &Shard,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> Result<Rc<PartitionLog>, ResponseError> {
    match shard.partition(topic, partition) {
        PartitionLookup::Local(log) => match check_leader_epoch(current_leader_epoch) {
            Some(code) => Err(code),
            None => Ok(log),
        },
        PartitionLookup::NotLeader => Err(ResponseError::NotLeaderOrFollower),
        PartitionLookup::UnknownTopicOrPartition => Err(ResponseError::UnknownTopicOrPartition),
    }
}

/// Checks a client's `current_leader_epoch` against ours (-1: no check).
pub fn check_leader_epoch(current_leader_epoch: i32) -> Option<ResponseError> {
    if current_leader_epoch < 0 || current_leader_epoch == LEADER_EPOCH {
        None
    } else if current_leader_epoch > LEADER_EPOCH {
        Some(ResponseError::UnknownLeaderEpoch)
    } else {
        Some(ResponseError::FencedLeaderEpoch)
    }
}

/// The Kafka error code of a group error.
pub fn group_error_code(error: &GroupError) -> ResponseError {
    match error {
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        // Kafka answers a failed append to the offsets log this way: the
        // client retries, possibly elsewhere.
        GroupError::Storage(_) => ResponseError::CoordinatorNotAvailable,
        GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
        GroupError::UnsupportedAssignor(_) => ResponseError::UnsupportedAssignor,
        GroupError::InvalidRegularExpression(_) => ResponseError::InvalidRegularExpression,
        GroupError::InvalidRequest(_) => ResponseError::InvalidRequest,
    }
}

/// The code of an optional group error (0 for none).
pub fn group_code(error: Option<&GroupError>) -> i16 {
    error.map_or(0, |e| group_error_code(e).code())
}

/// Waits until a coordinator append is durable; the error code if it
/// failed.
pub async fn wait_group_durable(
    shard: &Shard,
    durable: Option<crate::group::coordinator::Durable>,
) -> Option<ResponseError> {
    let durable = durable?;
    match shard.commit.wait_durable(&durable.log, durable.end).await {
        Ok(()) => None,
        Err(error) => {
            tracing::warn!(%error, "consumer offsets append failed");
            Some(ResponseError::CoordinatorNotAvailable)
        }
    }
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
