//! OffsetCommit: a group member's (or a standalone consumer's, generation
//! -1) committed offsets, answered once their records are durable in the
//! group's `__consumer_offsets` partition.

use std::future::Future;
use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};

use super::{group_error_code, str_bytes, wait_group_durable};
use crate::group::coordinator::CommitEntry;
use crate::group::state::Committed;
use crate::shard::Shard;
use crate::types::now_ms;

/// Stores now (in arrival order); the future answers once durable.
pub fn start(
    shard: &Rc<Shard>,
    request: OffsetCommitRequest,
) -> impl Future<Output = OffsetCommitResponse> + 'static {
    let now = now_ms();
    let asked: Vec<(String, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let entries = request
        .topics
        .into_iter()
        .flat_map(|topic| {
            let name = topic.name.0.to_string();
            topic.partitions.into_iter().map(move |p| CommitEntry {
                topic: name.clone(),
                partition: p.partition_index,
                committed: Committed {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                },
            })
        })
        .collect();
    let instance = request.group_instance_id.as_ref().map(|i| i.as_str());
    let outcome = shard.groups.commit(
        shard,
        request.group_id.0.as_str(),
        request.member_id.as_str(),
        instance,
        request.generation_id_or_member_epoch,
        entries,
    );
    let shard = shard.clone();
    async move {
        let (results, durable) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                let code = group_error_code(&error).code();
                let results = asked
                    .into_iter()
                    .flat_map(|(topic, partitions)| {
                        partitions
                            .into_iter()
                            .map(move |p| (topic.clone(), p, code))
                    })
                    .collect();
                return response(results);
            }
        };
        let failed = wait_group_durable(&shard, durable).await;
        let results = results
            .into_iter()
            .map(|(topic, partition, result)| {
                let code = match (result, failed) {
                    (Err(error), _) => group_error_code(&error).code(),
                    (Ok(()), Some(code)) => code.code(),
                    (Ok(()), None) => 0,
                };
                (topic, partition, code)
            })
            .collect();
        response(results)
    }
}

/// Groups (topic, partition, code) by topic, in the order asked.
fn response(results: Vec<(String, i32, i16)>) -> OffsetCommitResponse {
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (topic, partition, code) in results {
        let entry = OffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code);
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.partitions.push(entry),
            _ => topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}
