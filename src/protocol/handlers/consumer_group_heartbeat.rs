//! ConsumerGroupHeartbeat (KIP-848): a consumer-protocol member joins,
//! stays, reports what it owns and learns its assignment; the broker
//! assigns. Partitions travel by topic id.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::rc::Rc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::{group_error_code, str_bytes};
use crate::group::consumer::{self, Heartbeat};
use crate::shard::Shard;

pub fn handle(
    shard: &Rc<Shard>,
    request: ConsumerGroupHeartbeatRequest,
    client_id: String,
    client_ip: IpAddr,
) -> ConsumerGroupHeartbeatResponse {
    let owned = request.topic_partitions.as_ref().map(|topics| {
        let cluster = shard.cluster();
        let mut owned = consumer::Assignment::new();
        for topic in topics {
            // A deleted topic's partitions are no longer anyone's.
            if let Some(info) = cluster.topic_by_id(topic.topic_id.as_u128()) {
                owned
                    .entry(info.name.clone())
                    .or_default()
                    .extend(topic.partitions.iter().copied());
            }
        }
        owned
    });
    let heartbeat = Heartbeat {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.map(|i| i.to_string()),
        rack_id: request.rack_id.map(|r| r.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.0.to_string()).collect()),
        subscribed_topic_regex: request.subscribed_topic_regex.map(|r| r.to_string()),
        server_assignor: request.server_assignor.map(|a| a.to_string()),
        owned,
        client_id,
        client_host: format!("/{client_ip}"),
    };
    let result = shard
        .groups
        .consumer_heartbeat(shard, request.group_id.0.as_str(), heartbeat);
    match result {
        Err(error) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(group_error_code(&error).code())
            .with_error_message(Some(str_bytes(error.to_string())))
            .with_member_epoch(-1),
        Ok(outcome) => {
            let assignment = outcome.assignment.map(|assigned| {
                let cluster = shard.cluster();
                let topic_partitions = assigned
                    .into_iter()
                    .filter_map(|(topic, partitions)| {
                        let info = cluster.topic(&topic)?;
                        Some(
                            TopicPartitions::default()
                                .with_topic_id(uuid::Uuid::from_u128(info.topic_id))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .collect::<BTreeSet<_>>()
                                        .into_iter()
                                        .collect(),
                                ),
                        )
                    })
                    .collect();
                Assignment::default().with_topic_partitions(topic_partitions)
            });
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(str_bytes(outcome.member_id)))
                .with_member_epoch(outcome.member_epoch)
                .with_heartbeat_interval_ms(shard.config.group.consumer_heartbeat_interval_ms)
                .with_assignment(assignment)
        }
    }
}
