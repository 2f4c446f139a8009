//! Topic administration through librdkafka's admin API.

mod support;

use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use support::{Broker, block_on};

const TIMEOUT: Duration = Duration::from_secs(20);

fn create(
    broker: &Broker,
    topic: &NewTopic<'_>,
    validate_only: bool,
) -> Result<String, (String, RDKafkaErrorCode)> {
    let options = AdminOptions::new().validate_only(validate_only);
    let mut results = block_on(broker.admin().create_topics([topic], &options)).expect("request");
    results.remove(0)
}

fn topic_names(broker: &Broker) -> Vec<String> {
    let consumer = broker.consumer(&[]);
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .unwrap_or_else(|e| panic!("metadata: {e}\n{}", broker.logs()));
    let mut names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    names.sort();
    names
}

fn partition_count(broker: &Broker, topic: &str) -> usize {
    let consumer = broker.consumer(&[]);
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata");
    metadata.topics()[0].partitions().len()
}

#[test]
fn metadata_lists_one_broker_per_shard() {
    let broker = Broker::start_with(2, &[]);
    let consumer = broker.consumer(&[]);
    let metadata = consumer.fetch_metadata(None, TIMEOUT).expect("metadata");
    let mut brokers: Vec<(i32, i32)> = metadata
        .brokers()
        .iter()
        .map(|b| (b.id(), b.port()))
        .collect();
    brokers.sort();
    let port = i32::from(broker.port);
    assert_eq!(brokers, vec![(0, port), (1, port + 1)]);
}

#[test]
fn create_validate_duplicate_invalid_grow_and_delete() {
    let broker = Broker::start(&["--auto-create-topics", "false"]);
    let topic = NewTopic::new("orders", 3, TopicReplication::Fixed(1));

    assert_eq!(create(&broker, &topic, true), Ok("orders".to_string()));
    assert!(
        topic_names(&broker).is_empty(),
        "validate_only creates nothing"
    );

    assert_eq!(create(&broker, &topic, false), Ok("orders".to_string()));
    assert_eq!(topic_names(&broker), vec!["orders".to_string()]);
    assert_eq!(partition_count(&broker, "orders"), 3);

    let duplicate = create(&broker, &topic, false);
    assert_eq!(
        duplicate.map_err(|(_, code)| code),
        Err(RDKafkaErrorCode::TopicAlreadyExists)
    );

    let invalid = NewTopic::new("bad name!", 1, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, &invalid, false).map_err(|(_, code)| code),
        Err(RDKafkaErrorCode::InvalidTopic)
    );
    let zero = NewTopic::new("zero", 0, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, &zero, false).map_err(|(_, code)| code),
        Err(RDKafkaErrorCode::InvalidPartitions)
    );
    let bad_config =
        NewTopic::new("configured", 1, TopicReplication::Fixed(1)).set("segment.bytes", "nope");
    assert_eq!(
        create(&broker, &bad_config, false).map_err(|(_, code)| code),
        Err(RDKafkaErrorCode::InvalidConfig)
    );

    let grow = NewPartitions::new("orders", 5);
    let results = block_on(
        broker
            .admin()
            .create_partitions([&grow], &AdminOptions::new()),
    )
    .expect("request");
    assert_eq!(results, vec![Ok("orders".to_string())]);
    assert_eq!(partition_count(&broker, "orders"), 5);
    let shrink = NewPartitions::new("orders", 2);
    let results = block_on(
        broker
            .admin()
            .create_partitions([&shrink], &AdminOptions::new()),
    )
    .expect("request");
    assert_eq!(
        results[0].clone().map_err(|(_, c)| c),
        Err(RDKafkaErrorCode::InvalidPartitions)
    );

    let results = block_on(
        broker
            .admin()
            .delete_topics(&["orders"], &AdminOptions::new()),
    )
    .expect("request");
    assert_eq!(results, vec![Ok("orders".to_string())]);
    assert!(topic_names(&broker).is_empty());
    let results = block_on(
        broker
            .admin()
            .delete_topics(&["orders"], &AdminOptions::new()),
    )
    .expect("request");
    assert_eq!(
        results[0].clone().map_err(|(_, c)| c),
        Err(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    // The same name can be created again, empty.
    assert_eq!(create(&broker, &topic, false), Ok("orders".to_string()));
    let consumer = broker.consumer(&[]);
    assert_eq!(
        consumer
            .fetch_watermarks("orders", 0, TIMEOUT)
            .expect("watermarks"),
        (0, 0)
    );
}

#[test]
fn describe_configs_reports_values_and_sources() {
    let broker = Broker::start(&[]);
    let topic =
        NewTopic::new("described", 1, TopicReplication::Fixed(1)).set("segment.bytes", "1048576");
    assert_eq!(create(&broker, &topic, false), Ok("described".to_string()));
    let results = block_on(broker.admin().describe_configs(
        [&ResourceSpecifier::Topic("described")],
        &AdminOptions::new(),
    ))
    .expect("request");
    let resource = results
        .into_iter()
        .next()
        .expect("one result")
        .expect("described");
    let segment = resource.get("segment.bytes").expect("segment.bytes");
    assert_eq!(segment.value.as_deref(), Some("1048576"));
    assert_eq!(segment.source, rdkafka::admin::ConfigSource::DynamicTopic);
    let max_message = resource
        .get("max.message.bytes")
        .expect("max.message.bytes");
    assert_eq!(max_message.value.as_deref(), Some("1048588"));
    assert_eq!(max_message.source, rdkafka::admin::ConfigSource::Default);
}

#[test]
fn topics_survive_restart_with_their_placement() {
    let mut broker = Broker::start(&[]);
    let topic = NewTopic::new("placed", 6, TopicReplication::Fixed(1));
    assert_eq!(create(&broker, &topic, false), Ok("placed".to_string()));
    let leaders = |broker: &Broker| {
        let consumer = broker.consumer(&[]);
        let metadata = consumer
            .fetch_metadata(Some("placed"), TIMEOUT)
            .unwrap_or_else(|e| panic!("metadata: {e}\n{}", broker.logs()));
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| (p.id(), p.leader()))
            .collect::<Vec<_>>()
    };
    let before = leaders(&broker);
    assert_eq!(
        before.iter().filter(|(_, l)| *l == 0).count(),
        3,
        "balanced placement"
    );
    broker.sigkill();
    broker.restart();
    assert_eq!(leaders(&broker), before);
}
