//! OffsetForLeaderEpoch: a single-node partition has had one leader epoch
//! (0) since it was created, so epoch 0 ends at the log end offset and any
//! later epoch is undefined.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{LEADER_EPOCH, serving_log};
use crate::shard::Shard;

pub fn handle(
    shard: &Rc<Shard>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.topic.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|partition| {
                    let response = EpochEndOffset::default()
                        .with_partition(partition.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let log = match serving_log(
                        shard,
                        &name,
                        partition.partition,
                        partition.current_leader_epoch,
                    ) {
                        Ok(log) => log,
                        Err(code) => return response.with_error_code(code.code()),
                    };
                    if partition.leader_epoch > LEADER_EPOCH {
                        return response;
                    }
                    response
                        .with_leader_epoch(LEADER_EPOCH)
                        .with_end_offset(log.log_end_offset().0)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
