//! DeleteTopics, by name (all versions) or by topic id (v6+).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::str_bytes;
use crate::shard::Shard;
use crate::shard::mesh::ControlRequest;

pub async fn handle(
    shard: &Rc<Shard>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // (name, topic id) of each topic to delete.
    let targets: Vec<(Option<String>, u128)> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().map(|n| n.0.to_string()),
                    t.topic_id.as_u128(),
                )
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), 0))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, topic_id) in targets {
        let name = match name {
            Some(name) => Some(name),
            None => shard
                .cluster()
                .topic_by_id(topic_id)
                .map(|t| t.name.clone()),
        };
        let result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(str_bytes(n))))
            .with_topic_id(uuid::Uuid::from_u128(topic_id));
        let Some(name) = name else {
            responses.push(
                result
                    .with_error_code(ResponseError::UnknownTopicId.code())
                    .with_error_message(Some(str_bytes("Topic id does not exist."))),
            );
            continue;
        };
        let result = match shard
            .change_metadata(ControlRequest::DeleteTopic { name: name.clone() })
            .await
        {
            // topic_id exists from v6, error_message from v5.
            Ok(id) if version >= 6 => result.with_topic_id(uuid::Uuid::from_u128(id)),
            Ok(_) => result,
            Err(e) => result
                .with_error_code(e.code)
                .with_error_message((version >= 5).then(|| str_bytes(e.message))),
        };
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
