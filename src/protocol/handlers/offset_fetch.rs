//! OffsetFetch: a group's committed offsets, for named partitions or all
//! (null topics); one group (v1-7) or several (v8+).

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{group_error_code, str_bytes};
use crate::group::GroupError;
use crate::group::state::Committed;
use crate::shard::Shard;

type Found = Vec<(String, Vec<(i32, Option<Committed>)>)>;

pub fn handle(shard: &Rc<Shard>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|group| {
                let topics = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let found = shard
                    .groups
                    .fetch_offsets(shard, group.group_id.0.as_str(), topics);
                group_response(group.group_id, found)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect::<Vec<_>>()
    });
    let asked = topics.clone();
    match shard
        .groups
        .fetch_offsets(shard, request.group_id.0.as_str(), topics)
    {
        Ok(found) => OffsetFetchResponse::default().with_topics(single_topics(found, version, 0)),
        Err(error) => {
            let code = group_error_code(&error).code();
            // Before v2 the error can only travel per partition.
            let per_partition = if version < 2 { code } else { 0 };
            let found = asked
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, None)).collect()))
                .collect();
            OffsetFetchResponse::default()
                .with_error_code(if version >= 2 { code } else { 0 })
                .with_topics(single_topics(found, version, per_partition))
        }
    }
}

fn single_topics(found: Found, version: i16, code: i16) -> Vec<OffsetFetchResponseTopic> {
    found
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let (offset, epoch, metadata) = fields(committed);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                        .with_metadata(Some(str_bytes(metadata)))
                        .with_error_code(code)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect()
}

fn group_response(group_id: GroupId, found: Result<Found, GroupError>) -> OffsetFetchResponseGroup {
    let (found, code) = match found {
        Ok(found) => (found, 0),
        Err(error) => (Vec::new(), group_error_code(&error).code()),
    };
    let topics = found
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let (offset, epoch, metadata) = fields(committed);
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(str_bytes(metadata)))
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponseGroup::default()
        .with_group_id(group_id)
        .with_topics(topics)
        .with_error_code(code)
}

/// (offset, leader epoch, metadata); -1, -1, "" when nothing is committed.
fn fields(committed: Option<Committed>) -> (i64, i32, String) {
    match committed {
        Some(c) => (c.offset, c.leader_epoch, c.metadata),
        None => (-1, -1, String::new()),
    }
}
