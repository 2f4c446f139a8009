//! FindCoordinator: the node (shard) that coordinates a consumer group is
//! the one owning the group's `__consumer_offsets` partition. The topic is
//! created on first use, as Kafka does, with `offsets.topic.num.partitions`
//! partitions.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::str_bytes;
use crate::group::{Coordinator, OFFSETS_TOPIC};
use crate::shard::Shard;
use crate::shard::mesh::{ControlRequest, TopicSpec};

/// `key_type` of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

/// One key's answer: (node, error code, message).
struct Found {
    node: Option<usize>,
    error: Option<(ResponseError, String)>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let setup = if request.key_type == KEY_TYPE_GROUP {
        ensure_offsets_topic(shard).await
    } else {
        Err((
            ResponseError::InvalidRequest,
            format!(
                "coordinator key type {} is not supported: tidelog coordinates consumer groups only",
                request.key_type
            ),
        ))
    };
    let found: Vec<(String, Found)> = keys
        .into_iter()
        .map(|key| {
            let found = match &setup {
                Err(error) => Found {
                    node: None,
                    error: Some(error.clone()),
                },
                Ok(()) => locate(shard, &key),
            };
            (key, found)
        })
        .collect();
    let entry = |found: &Found| {
        let (node, host, port) = match found.node {
            Some(node) => (
                node as i32,
                shard.config.advertised_host.clone(),
                i32::from(shard.config.shard_port(node)),
            ),
            None => (-1, String::new(), -1),
        };
        let (code, message) = match &found.error {
            Some((code, message)) => (code.code(), Some(message.clone())),
            None => (0, None),
        };
        (node, host, port, code, message)
    };
    if version >= 4 {
        let coordinators = found
            .iter()
            .map(|(key, found)| {
                let (node, host, port, code, message) = entry(found);
                CoordinatorEntry::default()
                    .with_key(str_bytes(key.clone()))
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(message.map(str_bytes))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let Some((_, found)) = found.first() else {
        return FindCoordinatorResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code());
    };
    let (node, host, port, code, message) = entry(found);
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_error_message(if version >= 1 {
            message.map(str_bytes)
        } else {
            None
        })
        .with_node_id(BrokerId(node))
        .with_host(str_bytes(host))
        .with_port(port)
}

fn locate(shard: &Shard, group_id: &str) -> Found {
    match Coordinator::locate(shard, group_id) {
        Some((_, Some(owner))) => Found {
            node: Some(owner.index()),
            error: None,
        },
        _ => Found {
            node: None,
            error: Some((
                ResponseError::CoordinatorNotAvailable,
                "the offsets topic is not available yet".into(),
            )),
        },
    }
}

/// Creates `__consumer_offsets` if it does not exist yet.
async fn ensure_offsets_topic(shard: &Rc<Shard>) -> Result<(), (ResponseError, String)> {
    if shard.cluster().topic(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let group = &shard.config.group;
    let mut configs = BTreeMap::new();
    configs.insert(
        "segment.bytes".to_string(),
        group.offsets_segment_bytes.to_string(),
    );
    let spec = TopicSpec {
        name: OFFSETS_TOPIC.to_string(),
        partitions: group.offsets_partitions,
        configs,
        assignment: None,
        validate_only: false,
    };
    match shard
        .change_metadata(ControlRequest::CreateTopic(spec))
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if error.code == ResponseError::TopicAlreadyExists.code() => Ok(()),
        Err(error) => {
            tracing::warn!(message = %error.message, "creating the offsets topic failed");
            Err((ResponseError::CoordinatorNotAvailable, error.message))
        }
    }
}
