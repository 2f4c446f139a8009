//! Kafka protocol semantics over raw TCP, where librdkafka would hide
//! them: every advertised version answers, acks=0 gets no answer, per-
//! partition errors, fetch limits and ranges, leader epochs, ListOffsets'
//! max timestamp, the advertised host, the request size boundary.

mod common;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use common::Broker;
use common::wire::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// Sends a default request of `api` at `version` and decodes the answer
/// with the response type of that API and version; `false` if the broker
/// closed the connection instead.
fn answers_default_request(port: u16, api: ApiKey, version: i16) -> Result<(), String> {
    fn round_trip<Req: Encodable + Default, Resp: Decodable>(
        port: u16,
        api: ApiKey,
        version: i16,
        request: Req,
    ) -> Result<(), String> {
        let mut stream = connect(port);
        send_frame(&mut stream, &request_bytes(api, version, 99, &request));
        let mut frame = read_frame(&mut stream).ok_or("connection closed, no answer")?;
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .map_err(|e| format!("response header: {e}"))?;
        if header.correlation_id != 99 {
            return Err(format!("correlation id {}", header.correlation_id));
        }
        Resp::decode(&mut frame, version).map_err(|e| format!("response body: {e}"))?;
        if !frame.is_empty() {
            return Err(format!("{} bytes after the response body", frame.len()));
        }
        Ok(())
    }
    match api {
        ApiKey::Produce => round_trip::<_, ProduceResponse>(
            port,
            api,
            version,
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000),
        ),
        ApiKey::Fetch => round_trip::<_, FetchResponse>(
            port,
            api,
            version,
            FetchRequest::default().with_max_wait_ms(0),
        ),
        ApiKey::ListOffsets => {
            round_trip::<_, ListOffsetsResponse>(port, api, version, ListOffsetsRequest::default())
        }
        ApiKey::Metadata => {
            round_trip::<_, MetadataResponse>(port, api, version, MetadataRequest::default())
        }
        ApiKey::OffsetForLeaderEpoch => round_trip::<_, OffsetForLeaderEpochResponse>(
            port,
            api,
            version,
            OffsetForLeaderEpochRequest::default(),
        ),
        ApiKey::ApiVersions => round_trip::<_, ApiVersionsResponse>(
            port,
            api,
            version,
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("tidelog-tests"))
                .with_client_software_version(StrBytes::from_static_str("1.0")),
        ),
        ApiKey::CreateTopics => round_trip::<_, CreateTopicsResponse>(
            port,
            api,
            version,
            CreateTopicsRequest::default(),
        ),
        ApiKey::DeleteTopics => round_trip::<_, DeleteTopicsResponse>(
            port,
            api,
            version,
            DeleteTopicsRequest::default(),
        ),
        ApiKey::DescribeConfigs => round_trip::<_, DescribeConfigsResponse>(
            port,
            api,
            version,
            DescribeConfigsRequest::default(),
        ),
        ApiKey::CreatePartitions => round_trip::<_, CreatePartitionsResponse>(
            port,
            api,
            version,
            CreatePartitionsRequest::default(),
        ),
        ApiKey::FindCoordinator => round_trip::<_, FindCoordinatorResponse>(
            port,
            api,
            version,
            FindCoordinatorRequest::default(),
        ),
        // An empty group id is answered at once (INVALID_GROUP_ID).
        ApiKey::JoinGroup => {
            round_trip::<_, JoinGroupResponse>(port, api, version, JoinGroupRequest::default())
        }
        ApiKey::SyncGroup => {
            round_trip::<_, SyncGroupResponse>(port, api, version, SyncGroupRequest::default())
        }
        ApiKey::Heartbeat => {
            round_trip::<_, HeartbeatResponse>(port, api, version, HeartbeatRequest::default())
        }
        ApiKey::LeaveGroup => {
            round_trip::<_, LeaveGroupResponse>(port, api, version, LeaveGroupRequest::default())
        }
        ApiKey::OffsetCommit => round_trip::<_, OffsetCommitResponse>(
            port,
            api,
            version,
            OffsetCommitRequest::default(),
        ),
        ApiKey::OffsetFetch => {
            round_trip::<_, OffsetFetchResponse>(port, api, version, OffsetFetchRequest::default())
        }
        ApiKey::ListGroups => {
            round_trip::<_, ListGroupsResponse>(port, api, version, ListGroupsRequest::default())
        }
        ApiKey::DescribeGroups => round_trip::<_, DescribeGroupsResponse>(
            port,
            api,
            version,
            DescribeGroupsRequest::default(),
        ),
        ApiKey::DeleteGroups => round_trip::<_, DeleteGroupsResponse>(
            port,
            api,
            version,
            DeleteGroupsRequest::default(),
        ),
        ApiKey::OffsetDelete => round_trip::<_, OffsetDeleteResponse>(
            port,
            api,
            version,
            OffsetDeleteRequest::default(),
        ),
        ApiKey::DeleteRecords => round_trip::<_, DeleteRecordsResponse>(
            port,
            api,
            version,
            DeleteRecordsRequest::default(),
        ),
        ApiKey::DescribeLogDirs => round_trip::<_, DescribeLogDirsResponse>(
            port,
            api,
            version,
            DescribeLogDirsRequest::default(),
        ),
        ApiKey::AlterConfigs => round_trip::<_, AlterConfigsResponse>(
            port,
            api,
            version,
            AlterConfigsRequest::default(),
        ),
        ApiKey::IncrementalAlterConfigs => round_trip::<_, IncrementalAlterConfigsResponse>(
            port,
            api,
            version,
            IncrementalAlterConfigsRequest::default(),
        ),
        ApiKey::ConsumerGroupHeartbeat => round_trip::<_, ConsumerGroupHeartbeatResponse>(
            port,
            api,
            version,
            ConsumerGroupHeartbeatRequest::default(),
        ),
        ApiKey::ConsumerGroupDescribe => round_trip::<_, ConsumerGroupDescribeResponse>(
            port,
            api,
            version,
            ConsumerGroupDescribeRequest::default(),
        ),
        other => Err(format!("advertised, but this test does not know {other:?}")),
    }
}

#[test]
fn every_advertised_api_version_answers_through_the_socket() {
    let broker = Broker::start_with(1, &[]);
    let mut stream = connect(broker.port);
    let versions: ApiVersionsResponse = call(
        &mut stream,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(versions.error_code, 0);
    let advertised: Vec<(i16, i16, i16)> = versions
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    for needed in [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::OffsetForLeaderEpoch,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::CreatePartitions,
        ApiKey::DescribeConfigs,
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ListGroups,
        ApiKey::DescribeGroups,
        ApiKey::DeleteGroups,
        ApiKey::OffsetDelete,
    ] {
        assert!(
            advertised.iter().any(|(key, _, _)| *key == needed as i16),
            "{needed:?} is advertised: {advertised:?}"
        );
    }
    let mut failures = Vec::new();
    for (key, min, max) in advertised {
        let api = ApiKey::try_from(key).unwrap_or_else(|_| panic!("advertised unknown api {key}"));
        assert!(min <= max, "{api:?}: {min}..={max}");
        for version in min..=max {
            if let Err(why) = answers_default_request(broker.port, api, version) {
                failures.push(format!("{api:?} v{version}: {why}"));
            }
        }
        // One past the top is refused by closing the connection.
        let mut past = connect(broker.port);
        let mut body = request_bytes(ApiKey::ApiVersions, 0, 7, &ApiVersionsRequest::default());
        body[0..2].copy_from_slice(&key.to_be_bytes());
        body[2..4].copy_from_slice(&(max + 1).to_be_bytes());
        send_frame(&mut past, &body);
        if api != ApiKey::ApiVersions && !is_closed(&mut past) {
            failures.push(format!(
                "{api:?} v{} (above the advertised max) was not refused",
                max + 1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_api_versions_request_above_the_known_versions_gets_v0_with_unsupported_version() {
    // KIP-511: a newer client's ApiVersions gets UNSUPPORTED_VERSION (35)
    // in a v0 response that lists what the broker supports.
    let broker = Broker::start_with(1, &[]);
    let mut stream = connect(broker.port);
    let mut body = request_bytes(ApiKey::ApiVersions, 3, 11, &ApiVersionsRequest::default());
    body[2..4].copy_from_slice(&99i16.to_be_bytes());
    send_frame(&mut stream, &body);
    let mut frame = read_frame(&mut stream).expect("an answer, not a closed connection");
    let header = ResponseHeader::decode(&mut frame, 0).expect("header");
    assert_eq!(header.correlation_id, 11);
    let response = ApiVersionsResponse::decode(&mut frame, 0).expect("v0 body");
    assert_eq!(response.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(
        response
            .api_keys
            .iter()
            .any(|a| a.api_key == ApiKey::ApiVersions as i16),
        "the answer lists the supported versions"
    );
}

#[test]
fn acks_zero_gets_no_answer() {
    let broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "fire", 1);
    let mut stream = connect(broker.port);
    let request = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name("fire"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch_with_values(&[b"forget"]).freeze())),
                ]),
        ]);
    send_frame(
        &mut stream,
        &request_bytes(ApiKey::Produce, PRODUCE_VERSION, 1, &request),
    );
    // The next answer on this connection is the next request's.
    let versions: ApiVersionsResponse = call(
        &mut stream,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(versions.error_code, 0);
    // Appended all the same (visible once flushed: poll, bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let batches = loop {
        let batches = fetch_all_batches(broker.port, "fire", 0, 0);
        if !batches.is_empty() || std::time::Instant::now() > deadline {
            break batches;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(batches.len(), 1, "the acks=0 batch was appended");
    assert_eq!(batches[0].values(), vec![Some(b"forget".to_vec())]);
}

#[test]
fn one_produce_for_many_partitions_answers_each() {
    let broker = Broker::start_with(2, &["--auto-create-topics", "false"]);
    create_topic(broker.port, "mixed", 4); // shards 0, 1, 0, 1
    let partition = |index: i32, value: &'static [u8]| {
        PartitionProduceData::default()
            .with_index(index)
            .with_records(Some(batch_with_values(&[value]).freeze()))
    };
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name("mixed"))
                .with_partition_data(vec![
                    partition(0, b"p0"),
                    partition(1, b"p1"),
                    partition(2, b"p2"),
                    partition(9, b"p9"),
                ]),
            TopicProduceData::default()
                .with_name(topic_name("absent"))
                .with_partition_data(vec![partition(0, b"x")]),
        ]);
    let mut stream = connect(broker.shard_port(0));
    let response: ProduceResponse = call(&mut stream, ApiKey::Produce, PRODUCE_VERSION, &request);
    let mut answers: Vec<(String, i32, i16, i64)> = response
        .responses
        .iter()
        .flat_map(|topic| {
            topic.partition_responses.iter().map(move |p| {
                (
                    topic.name.0.to_string(),
                    p.index,
                    p.error_code,
                    p.base_offset,
                )
            })
        })
        .collect();
    answers.sort();
    assert_eq!(
        answers,
        vec![
            ("absent".to_string(), 0, UNKNOWN_TOPIC_OR_PARTITION, -1),
            ("mixed".to_string(), 0, 0, 0),
            ("mixed".to_string(), 1, NOT_LEADER_OR_FOLLOWER, -1),
            ("mixed".to_string(), 2, 0, 0),
            ("mixed".to_string(), 9, UNKNOWN_TOPIC_OR_PARTITION, -1),
        ]
    );
    assert_eq!(
        high_watermark(broker.shard_port(1), "mixed", 1),
        0,
        "nothing written to p1"
    );
}

#[test]
fn fetch_outside_the_log_is_out_of_range_and_librdkafka_resets() {
    let broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "ranged", 1);
    let mut stream = connect(broker.port);
    assert_eq!(
        produce(
            &mut stream,
            "ranged",
            0,
            batch_with_values(&[b"a", b"b", b"c"]).freeze()
        ),
        (0, 0)
    );
    let at_end = fetch(&mut stream, "ranged", 0, 3, 0, 0);
    assert_eq!(
        (at_end.error_code, at_end.records.len()),
        (0, 0),
        "the end itself is in range"
    );
    assert_eq!(
        fetch(&mut stream, "ranged", 0, 4, 0, 0).error_code,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(
        fetch(&mut stream, "ranged", 0, 1_000_000, 0, 0).error_code,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(
        fetch(&mut stream, "ranged", 0, -7, 0, 0).error_code,
        OFFSET_OUT_OF_RANGE
    );
    // A fetch from the middle of a batch returns that batch.
    let middle = fetch(&mut stream, "ranged", 0, 1, 0, 0);
    assert_eq!(middle.error_code, 0);
    let batches = parse_batches(&middle.records);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].base_offset, 0);

    // librdkafka meets OFFSET_OUT_OF_RANGE and applies auto.offset.reset.
    let consumer = broker.consumer(&[("auto.offset.reset", "earliest")]);
    let records = common::consume_all(
        &consumer,
        "ranged",
        1,
        rdkafka::Offset::Offset(500),
        common::TIMEOUT,
    );
    let values: Vec<String> = records.iter().map(common::Record::value_str).collect();
    assert_eq!(values, vec!["a", "b", "c"]);
}

#[test]
fn a_fetch_returns_a_whole_first_batch_even_over_its_byte_limits() {
    // KIP-74: the first batch is returned whole even when larger than
    // max_bytes / partition_max_bytes, so a consumer always progresses;
    // further batches stay within the limits.
    let broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "limits", 1);
    let mut stream = connect(broker.port);
    for i in 0..3 {
        assert_eq!(
            produce(&mut stream, "limits", 0, batch(1, 10_000).freeze()),
            (0, i)
        );
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(100)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(topic_name("limits"))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(100),
                ]),
        ]);
    let response: FetchResponse = call(&mut stream, ApiKey::Fetch, FETCH_VERSION, &request);
    let records = response.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    let batches = parse_batches(&records);
    assert_eq!(
        batches.len(),
        1,
        "exactly the first batch, whole ({} bytes)",
        records.len()
    );
    assert_eq!(
        records.len(),
        batches[0].bytes.len(),
        "no partial batch after it"
    );
    assert!(batches[0].crc_ok());
}

#[test]
fn leader_epochs_are_zero_and_checked() {
    let broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "epochs", 1);
    let mut stream = connect(broker.port);
    for _ in 0..2 {
        produce(&mut stream, "epochs", 0, batch(2, 4).freeze());
    }
    let metadata: MetadataResponse = call(
        &mut stream,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name("epochs"))),
        ])),
    );
    let epoch = metadata.topics[0].partitions[0].leader_epoch;
    assert!(epoch >= 0, "Metadata v12 gives the leader epoch");

    // Stored batches carry the partition leader epoch the broker stamped.
    for batch in fetch_all_batches(broker.port, "epochs", 0, 0) {
        let stamped = i32::from_be_bytes(batch.bytes[12..16].try_into().expect("4 bytes"));
        assert_eq!(
            stamped, epoch,
            "partition_leader_epoch of batch {}",
            batch.base_offset
        );
        assert!(batch.crc_ok(), "the epoch is outside the CRC");
    }

    let ask = |current_leader_epoch: i32, leader_epoch: i32| {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(topic_name("epochs"))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(current_leader_epoch)
                            .with_leader_epoch(leader_epoch),
                    ]),
            ]);
        let mut stream = connect(broker.port);
        let response: OffsetForLeaderEpochResponse =
            call(&mut stream, ApiKey::OffsetForLeaderEpoch, 4, &request);
        let answer = &response.topics[0].partitions[0];
        (answer.error_code, answer.leader_epoch, answer.end_offset)
    };
    assert_eq!(
        ask(epoch, epoch),
        (0, epoch, 4),
        "the current epoch ends at the log end"
    );
    assert_eq!(ask(-1, epoch), (0, epoch, 4), "-1: no fencing check");
    assert_eq!(
        ask(epoch + 1, epoch).0,
        UNKNOWN_LEADER_EPOCH,
        "a client ahead of the broker"
    );
    if epoch > 0 {
        assert_eq!(ask(epoch - 1, epoch).0, FENCED_LEADER_EPOCH);
    }

    // Fetch checks current_leader_epoch the same way.
    let fenced = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(topic_name("epochs"))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(epoch + 1)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let response: FetchResponse = call(&mut stream, ApiKey::Fetch, FETCH_VERSION, &fenced);
    assert_eq!(
        response.responses[0].partitions[0].error_code,
        UNKNOWN_LEADER_EPOCH
    );
}

#[test]
fn list_offsets_max_timestamp_survives_a_restart() {
    let mut broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "stamps", 1);
    let mut stream = connect(broker.port);
    // One record per batch; the newest timestamp is in the middle.
    let timestamps = [5_000i64, 9_000, 30_000, 7_000, 8_000];
    for (i, timestamp) in timestamps.iter().enumerate() {
        let value = format!("t{i}");
        let records = [RawRecord {
            key: None,
            value: Some(value.as_bytes()),
            timestamp_delta: 0,
            headers: &[],
        }];
        assert_eq!(
            produce(
                &mut stream,
                "stamps",
                0,
                batch_of(&records, *timestamp).freeze()
            ),
            (0, i as i64)
        );
    }
    let check = |broker: &Broker, tag: &str| {
        assert_eq!(
            list_offset(broker.port, "stamps", 0, -3),
            (0, 2),
            "{tag}: max timestamp"
        );
        assert_eq!(
            list_offset(broker.port, "stamps", 0, -2),
            (0, 0),
            "{tag}: earliest"
        );
        assert_eq!(
            list_offset(broker.port, "stamps", 0, -1),
            (0, 5),
            "{tag}: latest"
        );
        // First offset whose timestamp is at or after the target.
        assert_eq!(
            list_offset(broker.port, "stamps", 0, 8_500),
            (0, 1),
            "{tag}"
        );
        assert_eq!(
            list_offset(broker.port, "stamps", 0, 9_001),
            (0, 2),
            "{tag}"
        );
        assert_eq!(
            list_offset(broker.port, "stamps", 0, 30_001),
            (0, -1),
            "{tag}"
        );
        assert_eq!(list_offset(broker.port, "stamps", 0, 1), (0, 0), "{tag}");
    };
    check(&broker, "before restart");
    assert!(broker.sigterm_and_wait().success());
    broker.restart();
    check(&broker, "after SIGTERM");
    broker.sigkill();
    broker.restart();
    check(&broker, "after SIGKILL");
}

#[test]
fn metadata_advertises_the_given_host() {
    let broker = Broker::start(&["--advertise", "localhost"]);
    let mut stream = connect(broker.port);
    let response: MetadataResponse = call(
        &mut stream,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    let mut brokers: Vec<(i32, String, i32)> = response
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    brokers.sort();
    let port = i32::from(broker.port);
    assert_eq!(
        brokers,
        vec![
            (0, "localhost".to_string(), port),
            (1, "localhost".to_string(), port + 1)
        ]
    );
    assert!(
        response.cluster_id.is_some_and(|id| !id.is_empty()),
        "a cluster id"
    );
    // librdkafka follows the advertised name.
    let consumer = broker.consumer(&[]);
    let metadata = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, common::TIMEOUT)
        .expect("metadata via localhost");
    assert_eq!(metadata.brokers().len(), 2);
}

#[test]
fn the_request_size_limit_is_inclusive() {
    let limit = 4096;
    let broker = Broker::start_with(1, &["--socket-request-max-bytes", &limit.to_string()]);
    // A valid request padded with trailing bytes (which Kafka ignores) to
    // exactly the limit is answered; one byte more closes the connection.
    let padded = |size: usize| {
        let mut body = request_bytes(ApiKey::ApiVersions, 0, 5, &ApiVersionsRequest::default());
        body.resize(size, 0);
        body
    };
    let mut at_limit = connect(broker.port);
    send_frame(&mut at_limit, &padded(limit));
    let mut frame = read_frame(&mut at_limit).expect("a request of exactly the limit is answered");
    assert_eq!(
        ResponseHeader::decode(&mut frame, 0)
            .expect("header")
            .correlation_id,
        5
    );
    let mut over = connect(broker.port);
    send_frame(&mut over, &padded(limit + 1));
    assert!(is_closed(&mut over), "one byte over the limit");
}

#[test]
fn many_connections_at_once() {
    let broker = Broker::start(&[]);
    let mut streams: Vec<_> = (0..300)
        .map(|i| connect(broker.shard_port(i % 2)))
        .collect();
    // Everyone sends first, then everyone reads.
    for stream in &mut streams {
        let body = request_bytes(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        stream.write_all(&frame).expect("write");
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let frame: Option<Bytes> = read_frame(stream);
        assert!(frame.is_some(), "connection {i} answered");
    }
}

#[test]
fn list_offsets_max_timestamp_names_the_record_not_its_batch() {
    // KIP-734 (ListOffsets v7, timestamp -3): "the offset and timestamp of
    // the record with the largest timestamp". Kafka finds the record
    // inside its batch (KAFKA-16310); here the newest record is the middle
    // one of a three-record batch.
    let broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "inner", 1);
    let mut stream = connect(broker.port);
    let records = [
        RawRecord {
            key: None,
            value: Some(b"r0"),
            timestamp_delta: 0,
            headers: &[],
        },
        RawRecord {
            key: None,
            value: Some(b"r1"),
            timestamp_delta: 50,
            headers: &[],
        },
        RawRecord {
            key: None,
            value: Some(b"r2"),
            timestamp_delta: 10,
            headers: &[],
        },
    ];
    assert_eq!(
        produce(&mut stream, "inner", 0, batch_of(&records, 1_000).freeze()),
        (0, 0)
    );
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name("inner"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-3),
                ]),
        ]);
    let response: ListOffsetsResponse = call(
        &mut stream,
        ApiKey::ListOffsets,
        LIST_OFFSETS_VERSION,
        &request,
    );
    let answer = &response.topics[0].partitions[0];
    assert_eq!(
        (answer.error_code, answer.offset, answer.timestamp),
        (0, 1, 1_050),
        "the record with the max timestamp is offset 1 (timestamp 1050)"
    );
}
