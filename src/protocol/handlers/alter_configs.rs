//! AlterConfigs: replaces a topic's config overrides with the given set
//! (Kafka's legacy, non-incremental API), validated, stored in the metadata
//! log and applied live on every shard.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::str_bytes;
use crate::shard::Shard;
use crate::shard::mesh::ControlRequest;

/// Kafka's `ConfigResource.Type` codes.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

pub async fn handle(shard: &Rc<Shard>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => {
                let configs: BTreeMap<String, String> = resource
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                alter_topic(
                    shard,
                    resource.resource_name.as_str(),
                    configs,
                    request.validate_only,
                )
                .await
            }
            other => Err(not_alterable(other)),
        };
        let (code, message) = match outcome {
            Ok(()) => (0, None),
            Err((code, message)) => (code.code(), Some(str_bytes(message))),
        };
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Why a resource type cannot be altered here.
pub fn not_alterable(resource_type: i8) -> (ResponseError, String) {
    if resource_type == RESOURCE_BROKER {
        (
            ResponseError::InvalidRequest,
            "broker configs are set when tidelog starts (tidelog serve --help); only topic configs change live".into(),
        )
    } else {
        (
            ResponseError::InvalidRequest,
            format!("resource type {resource_type} has no alterable configs"),
        )
    }
}

/// Sends the new override set of `topic` to the controller.
pub async fn alter_topic(
    shard: &Rc<Shard>,
    topic: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let request = ControlRequest::AlterTopicConfigs {
        name: topic.to_string(),
        configs,
        validate_only,
    };
    match shard.change_metadata(request).await {
        Ok(_) => Ok(()),
        Err(error) => Err((
            ResponseError::try_from_code(error.code).unwrap_or(ResponseError::UnknownServerError),
            error.message,
        )),
    }
}
