//! CreateTopics, including `validate_only`: each topic goes through shard
//! 0, which validates, records and places it, and answers once every shard
//! has applied it.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::describe_configs::describe_topic;
use super::str_bytes;
use crate::shard::Shard;
use crate::shard::mesh::{AdminError, ControlRequest, TopicSpec};

pub async fn handle(
    shard: &Rc<Shard>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if seen.get(&name).copied().unwrap_or(0) > 1 {
            results.push(error(
                result,
                &AdminError::new(
                    ResponseError::InvalidRequest,
                    format!("Create topics request from client contains a duplicate topic: {name}"),
                ),
            ));
            continue;
        }
        let spec = match spec(shard, topic, request.validate_only) {
            Ok(spec) => spec,
            Err(e) => {
                results.push(error(result, &e));
                continue;
            }
        };
        let partitions = spec.partitions;
        let configs = spec.configs.clone();
        match shard
            .change_metadata(ControlRequest::CreateTopic(spec))
            .await
        {
            Ok(topic_id) => {
                // topic_id exists from v7; partitions, replication and configs from v5.
                let result = if version >= 7 {
                    result.with_topic_id(uuid::Uuid::from_u128(topic_id))
                } else {
                    result
                };
                let result = if version >= 5 {
                    result
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(config_entries(shard, &configs)))
                } else {
                    result
                };
                results.push(result);
            }
            Err(e) => results.push(error(result, &e)),
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn error(result: CreatableTopicResult, e: &AdminError) -> CreatableTopicResult {
    result
        .with_error_code(e.code)
        .with_error_message(Some(str_bytes(e.message.clone())))
}

fn spec(
    shard: &Shard,
    topic: CreatableTopic,
    validate_only: bool,
) -> Result<TopicSpec, AdminError> {
    let name = topic.name.0.to_string();
    let has_assignment = !topic.assignments.is_empty();
    if has_assignment && (topic.num_partitions != -1 || topic.replication_factor != -1) {
        return Err(AdminError::new(
            ResponseError::InvalidRequest,
            "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
        ));
    }
    if !matches!(topic.replication_factor, -1 | 1) {
        return Err(AdminError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "Replication factor must be 1 (or -1 for the default): tidelog keeps one copy of each partition, got {}.",
                topic.replication_factor
            ),
        ));
    }
    let assignment = if has_assignment {
        let mut assignments = topic.assignments;
        assignments.sort_by_key(|a| a.partition_index);
        let mut nodes = Vec::with_capacity(assignments.len());
        for (expected, a) in assignments.iter().enumerate() {
            if a.partition_index != expected as i32 || a.broker_ids.len() != 1 {
                return Err(AdminError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "Assignments must cover partitions 0..n-1 with exactly one broker each.",
                ));
            }
            nodes.push(a.broker_ids[0].0);
        }
        Some(nodes)
    } else {
        None
    };
    let partitions = match (&assignment, topic.num_partitions) {
        (Some(nodes), _) => nodes.len() as i32,
        (None, -1) => shard.config.default_partitions,
        (None, n) => n,
    };
    let mut configs = BTreeMap::new();
    for config in topic.configs {
        let Some(value) = config.value else {
            return Err(AdminError::new(
                ResponseError::InvalidConfig,
                format!("Null value not supported for topic config {}", config.name),
            ));
        };
        configs.insert(config.name.to_string(), value.to_string());
    }
    Ok(TopicSpec {
        name,
        partitions,
        configs,
        assignment,
        validate_only,
    })
}

fn config_entries(
    shard: &Shard,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    describe_topic(&shard.config, overrides)
        .into_iter()
        .map(|d| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(d.name))
                .with_value(Some(str_bytes(d.value)))
                .with_config_source(d.source)
        })
        .collect()
}
