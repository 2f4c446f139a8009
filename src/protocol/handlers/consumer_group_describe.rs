//! ConsumerGroupDescribe (KIP-848): a consumer-protocol group's epochs and
//! members with their current and target assignments.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};

use super::{group_error_code, str_bytes};
use crate::group::consumer::{self, UNIFORM_ASSIGNOR};
use crate::shard::Shard;

/// Every group operation (Kafka's bit field): there is no authorizer.
const ALL_GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 4) | (1 << 6);

pub fn handle(
    shard: &Rc<Shard>,
    request: ConsumerGroupDescribeRequest,
    version: i16,
) -> ConsumerGroupDescribeResponse {
    let to_wire = |assigned: &consumer::Assignment| {
        let cluster = shard.cluster();
        let topic_partitions = assigned
            .iter()
            .filter_map(|(topic, partitions)| {
                let info = cluster.topic(topic)?;
                Some(
                    TopicPartitions::default()
                        .with_topic_id(uuid::Uuid::from_u128(info.topic_id))
                        .with_topic_name(TopicName(str_bytes(topic.clone())))
                        .with_partitions(partitions.iter().copied().collect()),
                )
            })
            .collect();
        Assignment::default().with_topic_partitions(topic_partitions)
    };
    let groups = request
        .group_ids
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default()
                .with_group_id(group_id.clone())
                .with_authorized_operations(if request.include_authorized_operations {
                    ALL_GROUP_OPERATIONS
                } else {
                    i32::MIN
                });
            let result = shard.groups.inspect(shard, group_id.0.as_str(), |group| {
                let consumer = group.and_then(|g| g.consumer.as_ref().map(|c| (g, c)));
                let Some((group, consumer)) = consumer else {
                    return described
                        .clone()
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(format!(
                            "Group {} is not a consumer group.",
                            group_id.0.as_str()
                        ))));
                };
                let members = consumer
                    .members
                    .values()
                    .map(|m| {
                        let target = consumer.target.get(&m.id).cloned().unwrap_or_default();
                        let member = Member::default()
                            .with_member_id(str_bytes(m.id.clone()))
                            .with_instance_id(m.instance_id.clone().map(str_bytes))
                            .with_rack_id(m.rack_id.clone().map(str_bytes))
                            .with_member_epoch(m.epoch)
                            .with_client_id(str_bytes(m.client_id.clone()))
                            .with_client_host(str_bytes(m.client_host.clone()))
                            .with_subscribed_topic_names(
                                m.subscribed_topic_names
                                    .iter()
                                    .map(|t| TopicName(str_bytes(t.clone())))
                                    .collect(),
                            )
                            .with_subscribed_topic_regex(
                                m.subscribed_topic_regex.clone().map(str_bytes),
                            )
                            .with_assignment(to_wire(&m.assigned))
                            .with_target_assignment(to_wire(&target));
                        if version >= 1 {
                            member.with_member_type(1)
                        } else {
                            member
                        }
                    })
                    .collect();
                described
                    .clone()
                    .with_group_state(str_bytes(group.state_name()))
                    .with_group_epoch(consumer.epoch)
                    .with_assignment_epoch(consumer.assignment_epoch)
                    .with_assignor_name(str_bytes(UNIFORM_ASSIGNOR))
                    .with_members(members)
            });
            match result {
                Ok(described) => described,
                Err(error) => described.with_error_code(group_error_code(&error).code()),
            }
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
