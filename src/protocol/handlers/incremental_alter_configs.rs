//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on single
//! topic configs, applied to the current overrides; the result is
//! validated, stored in the metadata log and applied live on every shard.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::alter_configs::{RESOURCE_TOPIC, alter_topic, not_alterable};
use super::str_bytes;
use crate::metadata::topic_config::{self, ConfigType};
use crate::shard::Shard;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn handle(
    shard: &Rc<Shard>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => match apply_operations(shard, &resource) {
                Ok(configs) => {
                    alter_topic(
                        shard,
                        resource.resource_name.as_str(),
                        configs,
                        request.validate_only,
                    )
                    .await
                }
                Err(error) => Err(error),
            },
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The topic's overrides after the resource's operations.
fn apply_operations(
    shard: &Shard,
    resource: &AlterConfigsResource,
) -> Result<BTreeMap<String, String>, (ResponseError, String)> {
    let name = resource.resource_name.as_str();
    let mut configs = match shard.cluster().topic(name) {
        Some(topic) => topic.configs.clone(),
        None => {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("Topic '{name}' does not exist."),
            ));
        }
    };
    let mut seen = BTreeSet::new();
    for op in &resource.configs {
        let key = op.name.to_string();
        if !seen.insert(key.clone()) {
            return Err((
                ResponseError::InvalidRequest,
                format!("Config {key} appears more than once in the request."),
            ));
        }
        let Some(def) = topic_config::config_def(&key) else {
            return Err((
                ResponseError::InvalidConfig,
                format!("unknown topic config name: {key}"),
            ));
        };
        let value = op.value.as_ref().map(|v| v.to_string());
        match op.config_operation {
            SET => {
                let Some(value) = value else {
                    return Err((
                        ResponseError::InvalidRequest,
                        format!("SET of {key} needs a value"),
                    ));
                };
                configs.insert(key, value);
            }
            DELETE => {
                configs.remove(&key);
            }
            APPEND | SUBTRACT if def.config_type != ConfigType::List => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("Config value append or subtract is not allowed for config key {key}"),
                ));
            }
            APPEND | SUBTRACT => {
                let current = configs
                    .get(&key)
                    .cloned()
                    .or_else(|| topic_config::default_value(&shard.config.log, &key));
                let mut items: Vec<String> = current
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                let given: Vec<String> = value
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if op.config_operation == APPEND {
                    for item in given {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                } else {
                    items.retain(|item| !given.contains(item));
                }
                configs.insert(key, items.join(","));
            }
            other => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {other} for {key}"),
                ));
            }
        }
    }
    Ok(configs)
}
