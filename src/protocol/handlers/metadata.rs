//! Metadata: one broker per shard, each partition led by its owning shard's
//! node, and topic auto-creation when the client asks for it and the broker
//! allows it.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{LEADER_EPOCH, str_bytes};
use crate::metadata::TopicInfo;
use crate::shard::Shard;
use crate::shard::mesh::{ControlRequest, TopicSpec};

pub async fn handle(shard: &Rc<Shard>, request: MetadataRequest, version: i16) -> MetadataResponse {
    // Before v4 there is no flag: Kafka auto-creates on request.
    let client_allows = version < 4 || request.allow_auto_topic_creation;
    let auto_create = client_allows && shard.config.auto_create_topics;
    // In v0 an empty list, and from v1 a null one, means every topic.
    let requested = request.topics.filter(|t| version > 0 || !t.is_empty());
    let topics = match requested {
        None => shard
            .cluster()
            .topics()
            .map(|t| topic_response(t, version))
            .collect::<Vec<_>>(),
        Some(requested) => {
            let mut topics = Vec::with_capacity(requested.len());
            for entry in requested {
                let response = match entry.name {
                    Some(name) => {
                        named_topic(shard, name.0.to_string(), auto_create, version).await
                    }
                    None => by_id(shard, entry.topic_id.as_u128(), version),
                };
                topics.push(response);
            }
            topics
        }
    };
    let brokers = (0..shard.shard_count())
        .map(|index| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(index as i32))
                .with_host(str_bytes(shard.config.advertised_host.clone()))
                .with_port(i32::from(shard.config.shard_port(index)))
        })
        .collect();
    // cluster_id exists from v2, controller_id from v1.
    let cluster_id = (version >= 2).then(|| str_bytes(shard.config.cluster_id.clone()));
    let controller_id = if version >= 1 {
        BrokerId(0)
    } else {
        BrokerId(-1)
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(cluster_id)
        .with_controller_id(controller_id)
        .with_topics(topics)
}

async fn named_topic(
    shard: &Rc<Shard>,
    name: String,
    auto_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    if let Some(topic) = shard.cluster().topic(&name) {
        return topic_response(topic, version);
    }
    let error = |code: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name.clone()))))
            .with_error_code(code.code())
    };
    if let Err(invalid) = crate::shard::validate_topic_name(&name) {
        return MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name.clone()))))
            .with_error_code(invalid.code);
    }
    if !auto_create {
        return error(ResponseError::UnknownTopicOrPartition);
    }
    let spec = TopicSpec {
        name: name.clone(),
        partitions: shard.config.default_partitions,
        configs: BTreeMap::new(),
        assignment: None,
        validate_only: false,
    };
    match shard
        .change_metadata(ControlRequest::CreateTopic(spec))
        .await
    {
        Ok(_) => {}
        // Another client created it first: fine, describe it.
        Err(e) if e.code == ResponseError::TopicAlreadyExists.code() => {}
        Err(e) => {
            tracing::warn!(topic = %name, error = %e.message, "auto-creating topic failed");
            return error(ResponseError::LeaderNotAvailable);
        }
    }
    match shard.cluster().topic(&name) {
        Some(topic) => topic_response(topic, version),
        None => error(ResponseError::LeaderNotAvailable),
    }
}

fn by_id(shard: &Shard, topic_id: u128, version: i16) -> MetadataResponseTopic {
    match shard.cluster().topic_by_id(topic_id) {
        Some(topic) => topic_response(topic, version),
        None => MetadataResponseTopic::default()
            .with_topic_id(uuid::Uuid::from_u128(topic_id))
            .with_error_code(ResponseError::UnknownTopicId.code()),
    }
}

fn topic_response(topic: &TopicInfo, version: i16) -> MetadataResponseTopic {
    // leader_epoch exists from v7, topic_id from v10.
    let leader_epoch = if version >= 7 { LEADER_EPOCH } else { -1 };
    let topic_id = if version >= 10 {
        uuid::Uuid::from_u128(topic.topic_id)
    } else {
        uuid::Uuid::nil()
    };
    let partitions = topic
        .partition_shards
        .iter()
        .enumerate()
        .map(|(index, owner)| {
            let node = BrokerId(owner.node_id().0);
            MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(node)
                .with_leader_epoch(leader_epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic_id)
        .with_is_internal(version >= 1 && topic.name == crate::group::OFFSETS_TOPIC)
        .with_partitions(partitions)
}
