//! `tidelog topic`: create, list, describe, alter and delete topics of a
//! running broker (the commands of Kafka's `kafka-topics.sh` and
//! `kafka-configs.sh` for topics), against any Kafka-compatible broker.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{Client, ClientError};

/// How long the broker may take over an admin request.
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// DescribeConfigs' source code of a topic override.
const SOURCE_TOPIC_CONFIG: i8 = 1;

#[derive(clap::Args, Debug)]
pub struct TopicArgs {
    /// A broker to start from (any node of the cluster).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Creates a topic.
    Create {
        #[arg(long)]
        topic: String,
        /// Partitions [default: the broker's num.partitions].
        #[arg(long)]
        partitions: Option<i32>,
        /// NAME=VALUE topic configs (repeatable).
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    /// Every topic (internal ones with --include-internal).
    List {
        #[arg(long)]
        include_internal: bool,
    },
    /// A topic's partitions, leaders and configs that are not defaults.
    Describe {
        #[arg(long)]
        topic: String,
    },
    /// Changes configs (live) or grows the partition count.
    Alter {
        #[arg(long)]
        topic: String,
        /// NAME=VALUE configs to set (repeatable).
        #[arg(long = "add-config")]
        add_configs: Vec<String>,
        /// Configs to reset to the broker default (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
        /// The new, larger partition count.
        #[arg(long)]
        partitions: Option<i32>,
    },
    /// Deletes a topic and its data.
    Delete {
        #[arg(long)]
        topic: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TopicCliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Refused(String),
}

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// "CODE_NAME (n): message" for a failed answer.
fn failure(code: i16, message: Option<&StrBytes>) -> String {
    let name = ResponseError::try_from_code(code)
        .map(|e| format!("{e:?} ({code})"))
        .unwrap_or_else(|| format!("error code {code}"));
    match message {
        Some(message) if !message.is_empty() => format!("{name}: {}", message.as_str()),
        _ => name,
    }
}

fn parse_configs(pairs: &[String]) -> Result<BTreeMap<String, String>, TopicCliError> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(TopicCliError::Refused(format!(
                "config '{pair}' is not NAME=VALUE"
            ))),
        })
        .collect()
}

pub fn run(args: TopicArgs) -> Result<(), TopicCliError> {
    let mut client = Client::new(&args.bootstrap_server);
    match args.command {
        TopicCommand::Create {
            topic,
            partitions,
            configs,
        } => create(&mut client, &topic, partitions, &parse_configs(&configs)?),
        TopicCommand::List { include_internal } => list(&mut client, include_internal),
        TopicCommand::Describe { topic } => describe(&mut client, &topic),
        TopicCommand::Alter {
            topic,
            add_configs,
            delete_configs,
            partitions,
        } => alter(
            &mut client,
            &topic,
            &parse_configs(&add_configs)?,
            &delete_configs,
            partitions,
        ),
        TopicCommand::Delete { topic } => delete(&mut client, &topic),
    }
}

fn bootstrap(client: &mut Client) -> Result<String, TopicCliError> {
    // Any node forwards admin requests to the controller.
    client
        .brokers()?
        .into_iter()
        .map(|(_, address)| address)
        .next()
        .ok_or_else(|| TopicCliError::Refused("the cluster lists no broker".into()))
}

fn create(
    client: &mut Client,
    topic: &str,
    partitions: Option<i32>,
    configs: &BTreeMap<String, String>,
) -> Result<(), TopicCliError> {
    let address = bootstrap(client)?;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s(topic)))
                .with_num_partitions(partitions.unwrap_or(-1))
                .with_replication_factor(-1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(name, value)| {
                            CreatableTopicConfig::default()
                                .with_name(s(name))
                                .with_value(Some(s(value)))
                        })
                        .collect(),
                ),
        ]);
    let response: CreateTopicsResponse =
        client.call(&address, ApiKey::CreateTopics, 5, &request)?;
    let result = response
        .topics
        .first()
        .ok_or_else(|| TopicCliError::Refused("no answer for the topic".into()))?;
    if result.error_code != 0 {
        return Err(TopicCliError::Refused(format!(
            "creating topic {topic}: {}",
            failure(result.error_code, result.error_message.as_ref())
        )));
    }
    println!(
        "Created topic {topic} with {} partition(s).",
        result.num_partitions
    );
    Ok(())
}

fn list(client: &mut Client, include_internal: bool) -> Result<(), TopicCliError> {
    let metadata = client.metadata(None)?;
    let mut names: Vec<String> = metadata
        .topics
        .iter()
        .filter(|t| include_internal || !t.is_internal)
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    names.sort();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

fn describe(client: &mut Client, topic: &str) -> Result<(), TopicCliError> {
    let metadata = client.metadata(Some(&[topic.to_string()]))?;
    let Some(info) = metadata.topics.first() else {
        return Err(TopicCliError::Refused(format!("topic {topic} not found")));
    };
    if info.error_code != 0 {
        return Err(TopicCliError::Refused(format!(
            "topic {topic}: {}",
            failure(info.error_code, None)
        )));
    }
    let address = bootstrap(client)?;
    let response: DescribeConfigsResponse = client.call(
        &address,
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(topic)),
        ]),
    )?;
    let overrides: Vec<String> = response
        .results
        .iter()
        .flat_map(|r| r.configs.iter())
        .filter(|c| c.config_source == SOURCE_TOPIC_CONFIG)
        .map(|c| {
            format!(
                "{}={}",
                c.name.as_str(),
                c.value.as_ref().map(|v| v.as_str()).unwrap_or("")
            )
        })
        .collect();
    println!(
        "Topic: {topic}\tTopicId: {}\tPartitionCount: {}\tConfigs: {}",
        info.topic_id,
        info.partitions.len(),
        overrides.join(",")
    );
    let mut partitions: Vec<_> = info.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    for partition in partitions {
        println!(
            "\tTopic: {topic}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            partition.partition_index,
            partition.leader_id.0,
            partition.leader_id.0,
            partition.leader_id.0
        );
    }
    Ok(())
}

fn alter(
    client: &mut Client,
    topic: &str,
    set: &BTreeMap<String, String>,
    reset: &[String],
    partitions: Option<i32>,
) -> Result<(), TopicCliError> {
    if set.is_empty() && reset.is_empty() && partitions.is_none() {
        return Err(TopicCliError::Refused(
            "nothing to change: give --add-config, --delete-config or --partitions".into(),
        ));
    }
    let address = bootstrap(client)?;
    if !set.is_empty() || !reset.is_empty() {
        let mut ops: Vec<AlterableConfig> = set
            .iter()
            .map(|(name, value)| {
                AlterableConfig::default()
                    .with_name(s(name))
                    .with_config_operation(0)
                    .with_value(Some(s(value)))
            })
            .collect();
        ops.extend(reset.iter().map(|name| {
            AlterableConfig::default()
                .with_name(s(name))
                .with_config_operation(1)
        }));
        let response: IncrementalAlterConfigsResponse = client.call(
            &address,
            ApiKey::IncrementalAlterConfigs,
            1,
            &IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(topic))
                    .with_configs(ops),
            ]),
        )?;
        if let Some(r) = response.responses.iter().find(|r| r.error_code != 0) {
            return Err(TopicCliError::Refused(format!(
                "altering the configs of {topic}: {}",
                failure(r.error_code, r.error_message.as_ref())
            )));
        }
        println!("Altered the configs of topic {topic}.");
    }
    if let Some(count) = partitions {
        let response: CreatePartitionsResponse = client.call(
            &address,
            ApiKey::CreatePartitions,
            2,
            &CreatePartitionsRequest::default()
                .with_timeout_ms(ADMIN_TIMEOUT_MS)
                .with_topics(vec![
                    CreatePartitionsTopic::default()
                        .with_name(TopicName(s(topic)))
                        .with_count(count)
                        .with_assignments(None),
                ]),
        )?;
        if let Some(r) = response.results.iter().find(|r| r.error_code != 0) {
            return Err(TopicCliError::Refused(format!(
                "growing {topic} to {count} partitions: {}",
                failure(r.error_code, r.error_message.as_ref())
            )));
        }
        println!("Topic {topic} now has {count} partitions.");
    }
    Ok(())
}

fn delete(client: &mut Client, topic: &str) -> Result<(), TopicCliError> {
    let address = bootstrap(client)?;
    let response: DeleteTopicsResponse = client.call(
        &address,
        ApiKey::DeleteTopics,
        4,
        &DeleteTopicsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topic_names(vec![TopicName(s(topic))]),
    )?;
    let code = response.responses.first().map_or(-1, |r| r.error_code);
    if code != 0 {
        return Err(TopicCliError::Refused(format!(
            "deleting topic {topic}: {}",
            failure(code, None)
        )));
    }
    println!("Deleted topic {topic}.");
    Ok(())
}
