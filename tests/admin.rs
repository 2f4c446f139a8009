//! Topic administration through librdkafka's admin API.

mod common;

use std::time::Duration;

use common::{Broker, block_on};
use rdkafka::admin::{AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;

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
    // The consumer's group creates __consumer_offsets; like Kafka's tools,
    // list user topics only.
    let mut names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|name| !name.starts_with("__"))
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
    let invalid_name = NewTopic::new("bad name!", 1, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, &invalid_name, true).map_err(|(_, code)| code),
        Err(RDKafkaErrorCode::InvalidTopic),
        "validate_only still validates"
    );

    assert_eq!(create(&broker, &topic, false), Ok("orders".to_string()));
    assert_eq!(topic_names(&broker), vec!["orders".to_string()]);
    assert_eq!(partition_count(&broker, "orders"), 3);

    let duplicate = create(&broker, &topic, false);
    assert_eq!(
        duplicate.map_err(|(_, code)| code),
        Err(RDKafkaErrorCode::TopicAlreadyExists)
    );
    assert_eq!(
        create(&broker, &topic, true).map_err(|(_, code)| code),
        Err(RDKafkaErrorCode::TopicAlreadyExists),
        "validate_only of an existing topic"
    );
    assert_eq!(
        partition_count(&broker, "orders"),
        3,
        "the duplicate changed nothing"
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
    let grow = NewPartitions::new("placed", 9);
    let results = block_on(
        broker
            .admin()
            .create_partitions([&grow], &AdminOptions::new()),
    )
    .expect("request");
    assert_eq!(results, vec![Ok("placed".to_string())]);
    let before = leaders(&broker);
    assert_eq!(before.len(), 9);
    assert_eq!(
        before.iter().filter(|(_, l)| *l == 0).count(),
        5,
        "balanced placement: 5 on shard 0, 4 on shard 1: {before:?}"
    );
    broker.sigkill();
    broker.restart();
    assert_eq!(leaders(&broker), before);
}

#[test]
fn new_partitions_go_to_the_least_loaded_shard_and_take_records() {
    let broker = Broker::start(&["--auto-create-topics", "false"]);
    let admin = broker.admin();
    // Shard 0 gets partitions 0 and 2, shard 1 partition 1.
    let three = NewTopic::new("three", 3, TopicReplication::Fixed(1));
    assert_eq!(create(&broker, &three, false), Ok("three".to_string()));
    assert_eq!(
        broker.leaders("three").into_iter().collect::<Vec<_>>(),
        vec![(0, 0), (1, 1), (2, 0)]
    );
    // The next topic's only partition goes to shard 1 (1 partition < 2).
    let one = NewTopic::new("one", 1, TopicReplication::Fixed(1));
    assert_eq!(create(&broker, &one, false), Ok("one".to_string()));
    assert_eq!(
        broker.leaders("one").into_iter().collect::<Vec<_>>(),
        vec![(0, 1)]
    );

    // validate_only: nothing changes.
    let grow = NewPartitions::new("three", 6);
    let results =
        block_on(admin.create_partitions([&grow], &AdminOptions::new().validate_only(true)))
            .expect("request");
    assert_eq!(results, vec![Ok("three".to_string())]);
    assert_eq!(
        partition_count(&broker, "three"),
        3,
        "validate_only grows nothing"
    );

    // Now 2 + 2: the three new partitions go 0, 1, 0.
    let results =
        block_on(admin.create_partitions([&grow], &AdminOptions::new())).expect("request");
    assert_eq!(results, vec![Ok("three".to_string())]);
    assert_eq!(
        broker.leaders("three").into_iter().collect::<Vec<_>>(),
        vec![(0, 0), (1, 1), (2, 0), (3, 0), (4, 1), (5, 0)]
    );

    // The new partitions take records and give them back.
    let producer = broker.producer(&[]);
    for partition in 0..6 {
        let value = format!("to-{partition}");
        let record = rdkafka::producer::FutureRecord::<(), _>::to("three")
            .partition(partition)
            .payload(&value);
        let delivery = block_on(producer.send(record, TIMEOUT))
            .unwrap_or_else(|(e, _)| panic!("partition {partition}: {e}\n{}", broker.logs()));
        assert_eq!((delivery.partition, delivery.offset), (partition, 0));
    }
    let consumer = broker.consumer(&[]);
    let records = common::consume_all(&consumer, "three", 6, rdkafka::Offset::Beginning, TIMEOUT);
    let mut got: Vec<(i32, String)> = records
        .iter()
        .map(|r| (r.partition, r.value_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        (0..6).map(|p| (p, format!("to-{p}"))).collect::<Vec<_>>()
    );

    // Growing an unknown topic.
    let ghost = NewPartitions::new("ghost", 2);
    let results =
        block_on(admin.create_partitions([&ghost], &AdminOptions::new())).expect("request");
    assert_eq!(
        results[0].clone().map_err(|(_, c)| c),
        Err(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
}

#[test]
fn one_request_creates_good_topics_and_refuses_bad_ones() {
    let broker = Broker::start(&["--auto-create-topics", "false"]);
    let good = NewTopic::new("good", 2, TopicReplication::Fixed(1));
    let bad = NewTopic::new("..", 1, TopicReplication::Fixed(1));
    let also_good = NewTopic::new("also_good-1.x", 1, TopicReplication::Fixed(1));
    let results = block_on(
        broker
            .admin()
            .create_topics([&good, &bad, &also_good], &AdminOptions::new()),
    )
    .expect("request");
    let codes: Vec<Result<String, RDKafkaErrorCode>> = results
        .into_iter()
        .map(|r| r.map_err(|(_, code)| code))
        .collect();
    assert_eq!(
        codes,
        vec![
            Ok("good".to_string()),
            Err(RDKafkaErrorCode::InvalidTopic),
            Ok("also_good-1.x".to_string())
        ]
    );
    assert_eq!(
        topic_names(&broker),
        vec!["also_good-1.x".to_string(), "good".to_string()]
    );
}

/// Through the wire: rdkafka's `describe_configs` drops per-resource
/// errors, and always asks for every key with a null list.
#[test]
fn describe_configs_errors_and_key_selection() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
    use kafka_protocol::protocol::StrBytes;
    let broker = Broker::start(&["--auto-create-topics", "false"]);
    broker.create_topic("present", 1);
    let topic = |name: &'static str, keys: Option<Vec<&'static str>>| {
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str(name))
            .with_configuration_keys(
                keys.map(|keys| keys.into_iter().map(StrBytes::from_static_str).collect()),
            )
    };
    let request = DescribeConfigsRequest::default().with_resources(vec![
        topic("missing", None),
        topic("present", None),
        topic("present", Some(vec![])),
        topic("present", Some(vec!["segment.bytes"])),
    ]);
    let mut stream = common::wire::connect(broker.port);
    let response: DescribeConfigsResponse =
        common::wire::call(&mut stream, ApiKey::DescribeConfigs, 4, &request);
    assert_eq!(response.results.len(), 4);
    let names = |index: usize| -> Vec<String> {
        let result = &response.results[index];
        assert_eq!(
            result.error_code, 0,
            "resource {index}: {:?}",
            result.error_message
        );
        let mut names: Vec<String> = result.configs.iter().map(|c| c.name.to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(
        response.results[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert!(response.results[0].configs.is_empty());
    let all = names(1);
    assert!(
        all.contains(&"max.message.bytes".to_string()),
        "null keys: every config: {all:?}"
    );
    // Kafka (ConfigHelperUtils.buildConfigEntries): a null *or empty* key
    // list means every config; kafkajs, for one, sends an empty list.
    assert_eq!(
        names(2),
        all,
        "an empty key list means every config, as in Kafka"
    );
    assert_eq!(names(3), vec!["segment.bytes".to_string()]);
}

#[test]
fn deleting_a_topic_under_load_leaves_the_broker_serving() {
    use common::wire;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let broker = Broker::start(&["--auto-create-topics", "false"]);
    broker.create_topic("busy", 4);
    broker.create_topic("bystander", 2);

    // A long poll waiting on the topic that is about to go.
    let port = broker.port;
    let waiter = std::thread::spawn(move || {
        let mut stream = wire::connect(port);
        wire::fetch(&mut stream, "busy", 0, 1_000_000_000, 5_000, 1).error_code
    });
    // A producer streaming into it.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = broker.producer(&[("linger.ms", "1"), ("message.timeout.ms", "3000")]);
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let value = format!("v{sent}");
                let _ = producer.send_result(
                    rdkafka::producer::FutureRecord::to("busy")
                        .key(&value)
                        .payload(&value),
                );
                sent += 1;
                if sent.is_multiple_of(1000) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            drop(producer);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let results = block_on(
        broker
            .admin()
            .delete_topics(&["busy"], &AdminOptions::new()),
    )
    .expect("delete request");
    assert_eq!(results, vec![Ok("busy".to_string())]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("producer thread");
    let code = waiter.join().expect("long poll thread");
    assert!(
        code == 1 || code == 3 || code == 6,
        "the waiting fetch ends with an error code, got {code}"
    );

    // Both shards still serve, the other topic is untouched, and the name
    // can be used again from scratch.
    for shard in 0..2 {
        let mut stream = wire::connect(broker.shard_port(shard));
        assert!(
            wire::api_versions_ok(&mut stream),
            "shard {shard} serves:\n{}",
            broker.logs()
        );
    }
    assert_eq!(topic_names(&broker), vec!["bystander".to_string()]);
    broker.create_topic("busy", 2);
    let producer = broker.producer(&[]);
    let delivery = block_on(
        producer.send(
            rdkafka::producer::FutureRecord::<(), _>::to("busy")
                .partition(1)
                .payload("fresh"),
            TIMEOUT,
        ),
    )
    .unwrap_or_else(|(e, _)| panic!("produce to the recreated topic: {e}\n{}", broker.logs()));
    assert_eq!(
        (delivery.partition, delivery.offset),
        (1, 0),
        "the recreated topic starts empty"
    );
}

#[test]
fn a_topic_name_of_the_maximum_length_works_end_to_end() {
    // Kafka allows 249 characters; the partition directory name is then
    // 251+ bytes, close to the file system's 255.
    let mut broker = Broker::start(&["--auto-create-topics", "false"]);
    let name = format!("long.{}", "n".repeat(244));
    assert_eq!(name.len(), 249);
    broker.create_topic(&name, 2);
    let producer = broker.producer(&[]);
    common::produce_all(
        &producer,
        &name,
        (0..10).map(|i| common::Outgoing {
            key: format!("k{i}"),
            value: format!("v{i}"),
            timestamp: None,
        }),
    );
    assert!(broker.sigterm_and_wait().success());
    broker.restart();
    let consumer = broker.consumer(&[]);
    let records = common::consume_all(&consumer, &name, 2, rdkafka::Offset::Beginning, TIMEOUT);
    assert_eq!(records.len(), 10);
    let results = block_on(broker.admin().delete_topics(&[&name], &AdminOptions::new()))
        .expect("delete request");
    assert_eq!(results, vec![Ok(name.clone())]);
    broker.create_topic(&name, 1);
    let consumer = broker.consumer(&[]);
    assert_eq!(
        consumer
            .fetch_watermarks(&name, 0, TIMEOUT)
            .expect("watermarks"),
        (0, 0),
        "recreated empty"
    );
    let over = format!("{name}x");
    let invalid = NewTopic::new(&over, 1, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, &invalid, false).map_err(|(_, code)| code),
        Err(RDKafkaErrorCode::InvalidTopic),
        "250 characters"
    );
}
