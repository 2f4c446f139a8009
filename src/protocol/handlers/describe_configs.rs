//! DescribeConfigs for topics (every config tidelog implements, with its
//! source and synonyms) and for brokers (the broker defaults).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::str_bytes;
use crate::config::BrokerConfig;
use crate::metadata::topic_config::{self, TOPIC_CONFIGS};
use crate::shard::Shard;

/// Kafka's `ConfigResource.Type` codes.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's `ConfigSource` codes.
pub const SOURCE_TOPIC_CONFIG: i8 = 1;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// A described config: what every config-listing response is built from.
pub struct Described {
    pub name: &'static str,
    pub value: String,
    pub source: i8,
    pub config_type: i8,
    pub doc: &'static str,
    /// `(name, value, source)`, most specific first.
    pub synonyms: Vec<(String, String, i8)>,
}

/// Every topic config of a topic with these overrides.
pub fn describe_topic(
    config: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<Described> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let default = topic_config::default_value(&config.log, def.name).unwrap_or_default();
            let mut synonyms = Vec::new();
            let (value, source) = match overrides.get(def.name) {
                Some(value) => {
                    synonyms.push((def.name.to_string(), value.clone(), SOURCE_TOPIC_CONFIG));
                    (value.clone(), SOURCE_TOPIC_CONFIG)
                }
                None => (default.clone(), SOURCE_DEFAULT_CONFIG),
            };
            synonyms.push((def.broker_name.to_string(), default, SOURCE_DEFAULT_CONFIG));
            Described {
                name: def.name,
                value,
                source,
                config_type: def.config_type as i8,
                doc: def.doc,
                synonyms,
            }
        })
        .collect()
}

fn describe_broker(config: &BrokerConfig) -> Vec<Described> {
    let entry = |name: &'static str, value: String, config_type: i8, doc: &'static str| Described {
        name,
        value: value.clone(),
        source: SOURCE_DEFAULT_CONFIG,
        config_type,
        doc,
        synonyms: vec![(name.to_string(), value, SOURCE_DEFAULT_CONFIG)],
    };
    vec![
        entry(
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            1,
            "Whether Metadata requests create unknown topics.",
        ),
        entry(
            "num.partitions",
            config.default_partitions.to_string(),
            3,
            "Partitions of an auto-created topic.",
        ),
        entry(
            "socket.request.max.bytes",
            config.socket_request_max_bytes.to_string(),
            3,
            "The largest request accepted.",
        ),
        entry(
            "log.segment.bytes",
            config.log.segment_bytes.to_string(),
            3,
            "Default segment.bytes.",
        ),
        entry(
            "message.max.bytes",
            config.log.max_message_bytes.to_string(),
            3,
            "Default max.message.bytes.",
        ),
    ]
}

pub fn handle(
    shard: &Rc<Shard>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let described = match resource.resource_type {
                RESOURCE_TOPIC => match shard.cluster().topic(&name) {
                    Some(topic) => Ok(describe_topic(&shard.config, &topic.configs)),
                    None => Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("Topic '{name}' does not exist."),
                    )),
                },
                RESOURCE_BROKER => {
                    let known = name.is_empty()
                        || name
                            .parse::<usize>()
                            .is_ok_and(|node| node < shard.shard_count());
                    if known {
                        Ok(describe_broker(&shard.config))
                    } else {
                        Err((
                            ResponseError::InvalidRequest,
                            format!("Unknown broker id '{name}'."),
                        ))
                    }
                }
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("Unsupported resource type {other}."),
                )),
            };
            match described {
                Ok(configs) => {
                    // Null or empty: every config (Kafka's reading).
                    let wanted = resource
                        .configuration_keys
                        .as_ref()
                        .filter(|keys| !keys.is_empty())
                        .map(|keys| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
                    let configs = configs
                        .into_iter()
                        .filter(|c| {
                            wanted
                                .as_ref()
                                .is_none_or(|keys| keys.iter().any(|k| k == c.name))
                        })
                        .map(|c| {
                            entry(
                                c,
                                version,
                                request.include_synonyms,
                                request.include_documentation,
                            )
                        })
                        .collect();
                    result.with_configs(configs)
                }
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn entry(
    described: Described,
    version: i16,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let synonyms = if include_synonyms {
        described
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(name))
                    .with_value(Some(str_bytes(value)))
                    .with_source(source)
            })
            .collect()
    } else {
        Vec::new()
    };
    let result = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(described.name))
        .with_value(Some(str_bytes(described.value)))
        .with_read_only(false)
        .with_config_source(described.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    if version >= 3 {
        result
            .with_config_type(described.config_type)
            .with_documentation(include_documentation.then(|| str_bytes(described.doc)))
    } else {
        result
    }
}
