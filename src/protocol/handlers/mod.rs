//! One handler per Kafka API. Handlers turn typed errors into Kafka error
//! codes here, at the boundary, and nowhere else.

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_configs;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;

use kafka_protocol::ResponseError;
use kafka_protocol::protocol::StrBytes;

use crate::shard::PartitionLookup;
use crate::storage::StorageError;

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

/// The error code for a partition this shard does not serve.
pub fn lookup_error_code(lookup: &PartitionLookup) -> Option<ResponseError> {
    match lookup {
        PartitionLookup::Local(_) => None,
        PartitionLookup::NotLeader => Some(ResponseError::NotLeaderOrFollower),
        PartitionLookup::UnknownTopicOrPartition => Some(ResponseError::UnknownTopicOrPartition),
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

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
