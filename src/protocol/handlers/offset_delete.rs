//! OffsetDelete: removes a group's committed offsets for partitions it no
//! longer consumes (GROUP_SUBSCRIBED_TO_TOPIC for those it does).

use std::future::Future;
use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};

use super::{group_error_code, str_bytes, wait_group_durable};
use crate::shard::Shard;

/// Deletes now (in arrival order); the future answers once durable.
pub fn start(
    shard: &Rc<Shard>,
    request: OffsetDeleteRequest,
) -> impl Future<Output = OffsetDeleteResponse> + 'static {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let outcome = shard
        .groups
        .delete_offsets(shard, request.group_id.0.as_str(), topics);
    let shard = shard.clone();
    async move {
        let (results, durable) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                return OffsetDeleteResponse::default()
                    .with_error_code(group_error_code(&error).code());
            }
        };
        if let Some(code) = wait_group_durable(&shard, durable).await {
            return OffsetDeleteResponse::default().with_error_code(code.code());
        }
        let topics = results
            .into_iter()
            .map(|(topic, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, result)| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(index)
                            .with_error_code(
                                result.err().map_or(0, |e| group_error_code(&e).code()),
                            )
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(partitions)
            })
            .collect();
        OffsetDeleteResponse::default().with_topics(topics)
    }
}
