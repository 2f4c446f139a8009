//! Consumer groups against the real broker: librdkafka's KafkaConsumer
//! (subscribe, rebalance, commit) and raw group requests where a test needs
//! a member that misbehaves or a precise error code.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::wire::{self, call};
use common::{Broker, Outgoing, TIMEOUT, produce_all};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

const NOT_COORDINATOR: i16 = 16;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// Rebalance events seen by one consumer: (assigned?, partitions).
/// One rebalance callback: assigned (true) or revoked, and the partitions.
type Event = (bool, Vec<i32>);

#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    fn all(&self) -> Vec<Event> {
        self.0.lock().expect("events").clone()
    }
}

impl ClientContext for Events {}

impl ConsumerContext for Events {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (assigned, list) = match rebalance {
            Rebalance::Assign(list) => (true, *list),
            Rebalance::Revoke(list) => (false, *list),
            Rebalance::Error(_) => return,
        };
        let partitions = list.elements().iter().map(|e| e.partition()).collect();
        self.0.lock().expect("events").push((assigned, partitions));
    }
}

type GroupConsumer = BaseConsumer<Events>;

fn group_consumer(broker: &Broker, group: &str, extra: &[(&str, &str)]) -> (GroupConsumer, Events) {
    let events = Events::default();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        // Commit only what was processed.
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100")
        .set("socket.timeout.ms", "10000");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    let consumer: GroupConsumer = config
        .create_with_context(events.clone())
        .expect("consumer");
    (consumer, events)
}

fn assigned(consumer: &GroupConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Polls every consumer until the union of their assignments is exactly
/// `0..partitions`, with no partition in two of them.
fn wait_for_assignment(consumers: &[&GroupConsumer], partitions: i32, broker: &Broker) {
    let deadline = Instant::now() + TIMEOUT * 2;
    loop {
        for consumer in consumers {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(50)) {
                panic!("consumer error: {e}");
            }
        }
        let sets: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assigned(c)).collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let all_have = sets.iter().all(|s| !s.is_empty());
        if all_have && total == partitions as usize && union == (0..partitions).collect() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group never settled: {sets:?}\n{}",
            broker.logs()
        );
    }
}

fn produce_keyed(broker: &Broker, topic: &str, count: usize) -> Vec<(i32, i64)> {
    let producer = broker.producer(&[("linger.ms", "5")]);
    produce_all(
        &producer,
        topic,
        (0..count).map(|i| Outgoing {
            key: format!("key-{i}"),
            value: format!("value-{i}"),
            timestamp: None,
        }),
    )
}

/// Polls `consumer` (and keeps the others alive) until it has `count`
/// records; stores each record's offset after "processing" it.
fn consume_group(
    consumers: &[&GroupConsumer],
    count: usize,
    timeout: Duration,
) -> Vec<Vec<(i32, i64, String)>> {
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<Vec<(i32, i64, String)>> = vec![Vec::new(); consumers.len()];
    while seen.iter().map(Vec::len).sum::<usize>() < count {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {count}",
            seen.iter().map(Vec::len).sum::<usize>()
        );
        for (index, consumer) in consumers.iter().enumerate() {
            for _ in 0..500 {
                match consumer.poll(Duration::from_millis(0)) {
                    None => break,
                    Some(Err(e)) => panic!("consumer error: {e}"),
                    Some(Ok(m)) => {
                        let value = String::from_utf8_lossy(m.payload().unwrap_or(&[])).into();
                        seen[index].push((m.partition(), m.offset(), value));
                        consumer
                            .store_offset_from_message(&m)
                            .expect("store offset");
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seen
}

/// Commits what was processed and not yet committed (auto-commit may have
/// taken it all already: nothing left is fine).
fn commit_processed(consumer: &GroupConsumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(e) => panic!("commit: {e}"),
    }
}

/// The committed offsets of `group` for `topic`'s partitions, as a new
/// member of the group sees them (OffsetFetch).
fn committed(broker: &Broker, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let (consumer, _) = group_consumer(broker, group, &[]);
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(list, TIMEOUT)
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (e.partition(), offset)
        })
        .collect()
}

fn end_offsets(placed: &[(i32, i64)]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for (partition, offset) in placed {
        let end = ends.entry(*partition).or_insert(0);
        *end = (*end).max(offset + 1);
    }
    ends
}

#[test]
fn three_members_share_twelve_partitions_and_read_everything_once() {
    let broker = Broker::start(&[]);
    broker.create_topic("shared", 12);
    let members: Vec<(GroupConsumer, Events)> = (0..3)
        .map(|_| group_consumer(&broker, "three", &[]))
        .collect();
    for (consumer, _) in &members {
        consumer.subscribe(&["shared"]).expect("subscribe");
    }
    let consumers: Vec<&GroupConsumer> = members.iter().map(|(c, _)| c).collect();
    wait_for_assignment(&consumers, 12, &broker);
    let owners: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assigned(c)).collect();

    let placed = produce_keyed(&broker, "shared", 100_000);
    let seen = consume_group(&consumers, 100_000, Duration::from_secs(120));

    let mut values = BTreeSet::new();
    for (index, records) in seen.iter().enumerate() {
        for (partition, _, value) in records {
            assert!(
                owners[index].contains(partition),
                "member {index} read partition {partition} it does not own ({:?})",
                owners[index]
            );
            assert!(values.insert(value.clone()), "{value} was consumed twice");
        }
    }
    assert_eq!(values.len(), 100_000);
    // Nothing rebalanced while consuming: each member kept its partitions.
    for (index, consumer) in consumers.iter().enumerate() {
        assert_eq!(
            assigned(consumer),
            owners[index],
            "member {index} lost partitions"
        );
    }
    for consumer in &consumers {
        commit_processed(consumer);
    }
    assert_eq!(
        committed(&broker, "three", "shared", 12),
        end_offsets(&placed)
    );
}

#[test]
fn a_group_resumes_from_its_committed_offsets_after_sigkill() {
    let mut broker = Broker::start(&[]);
    broker.create_topic("resume", 4);
    let first = produce_keyed(&broker, "resume", 1_000);
    {
        let (consumer, _) = group_consumer(&broker, "resumers", &[]);
        consumer.subscribe(&["resume"]).expect("subscribe");
        let seen = consume_group(&[&consumer], 1_000, TIMEOUT * 2);
        assert_eq!(seen[0].len(), 1_000);
        commit_processed(&consumer);
    }
    let before = committed(&broker, "resumers", "resume", 4);
    assert_eq!(before, end_offsets(&first));

    broker.sigkill();
    broker.restart();

    assert_eq!(committed(&broker, "resumers", "resume", 4), before);
    let second = produce_keyed(&broker, "resume", 500);
    let (consumer, _) = group_consumer(&broker, "resumers", &[]);
    consumer.subscribe(&["resume"]).expect("subscribe");
    let seen = consume_group(&[&consumer], 500, TIMEOUT * 2);
    let expected: BTreeSet<(i32, i64)> = second.iter().copied().collect();
    let got: BTreeSet<(i32, i64)> = seen[0].iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(
        got, expected,
        "the group must resume exactly after its commits"
    );
}

#[test]
fn two_groups_on_one_topic_each_receive_everything() {
    let broker = Broker::start(&[]);
    broker.create_topic("fanout", 6);
    produce_keyed(&broker, "fanout", 3_000);
    for group in ["audit", "billing"] {
        let (consumer, _) = group_consumer(&broker, group, &[]);
        consumer.subscribe(&["fanout"]).expect("subscribe");
        let seen = consume_group(&[&consumer], 3_000, TIMEOUT * 2);
        let values: BTreeSet<&String> = seen[0].iter().map(|(_, _, v)| v).collect();
        assert_eq!(values.len(), 3_000, "group {group}");
    }
}

#[test]
fn cooperative_sticky_moves_only_the_partitions_it_must() {
    let broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    broker.create_topic("sticky", 4);
    let strategy = [("partition.assignment.strategy", "cooperative-sticky")];
    let (first, first_events) = group_consumer(&broker, "coop", &strategy);
    first.subscribe(&["sticky"]).expect("subscribe");
    wait_for_assignment(&[&first], 4, &broker);
    let (second, _) = group_consumer(&broker, "coop", &strategy);
    second.subscribe(&["sticky"]).expect("subscribe");
    wait_for_assignment(&[&first, &second], 4, &broker);
    // Incremental: the first member gave up two partitions and kept two;
    // it never revoked everything.
    let revoked: Vec<Vec<i32>> = first_events
        .all()
        .into_iter()
        .filter(|(assigned, parts)| !assigned && !parts.is_empty())
        .map(|(_, parts)| parts)
        .collect();
    assert_eq!(revoked.len(), 1, "one incremental revocation: {revoked:?}");
    assert_eq!(revoked[0].len(), 2, "{revoked:?}");
    assert_eq!(assigned(&first).len(), 2);
    assert_eq!(assigned(&second).len(), 2);
    produce_keyed(&broker, "sticky", 400);
    let seen = consume_group(&[&first, &second], 400, TIMEOUT);
    assert!(seen.iter().all(|s| !s.is_empty()), "both members consume");
}

#[test]
fn a_static_member_restarts_without_a_rebalance() {
    let broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    broker.create_topic("static", 4);
    let (dynamic, dynamic_events) = group_consumer(&broker, "statics", &[]);
    dynamic.subscribe(&["static"]).expect("subscribe");
    let instance = [("group.instance.id", "instance-1")];
    let (member, _) = group_consumer(&broker, "statics", &instance);
    member.subscribe(&["static"]).expect("subscribe");
    wait_for_assignment(&[&dynamic, &member], 4, &broker);
    let kept = assigned(&member);
    let rebalances_before = dynamic_events.all().len();
    // A static member does not leave when it closes: its place is kept.
    drop(member);
    let (restarted, _) = group_consumer(&broker, "statics", &instance);
    restarted.subscribe(&["static"]).expect("subscribe");
    wait_for_assignment(&[&dynamic, &restarted], 4, &broker);
    assert_eq!(
        assigned(&restarted),
        kept,
        "the instance gets its partitions back"
    );
    for _ in 0..20 {
        dynamic.poll(Duration::from_millis(50));
    }
    assert_eq!(
        dynamic_events.all().len(),
        rebalances_before,
        "the other member saw no rebalance: {:?}",
        dynamic_events.all()
    );
}

// ---- raw group requests ----

fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_string()))
}

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// The coordinator's port for `group`, from FindCoordinator on shard 0.
fn coordinator_port(broker: &Broker, group: &str) -> u16 {
    let mut stream = wire::connect(broker.port);
    let response: FindCoordinatorResponse = call(
        &mut stream,
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(s(group)),
    );
    assert_eq!(response.error_code, 0, "{response:?}");
    u16::try_from(response.port).expect("port")
}

/// ConsumerProtocolSubscription v0 for `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    buf.put_i32(topics.len() as i32);
    for topic in topics {
        buf.put_i16(topic.len() as i16);
        buf.put_slice(topic.as_bytes());
    }
    buf.put_i32(-1);
    buf.freeze()
}

/// ConsumerProtocolAssignment v0: `topic` with `partitions`.
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    buf.put_i32(1);
    buf.put_i16(topic.len() as i16);
    buf.put_slice(topic.as_bytes());
    buf.put_i32(partitions.len() as i32);
    for p in partitions {
        buf.put_i32(*p);
    }
    buf.put_i32(-1);
    buf.freeze()
}

fn join(
    stream: &mut TcpStream,
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    session_timeout_ms: i32,
    topic: &str,
) -> JoinGroupResponse {
    call(
        stream,
        ApiKey::JoinGroup,
        5,
        &JoinGroupRequest::default()
            .with_group_id(group_id(group))
            .with_session_timeout_ms(session_timeout_ms)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(member_id))
            .with_group_instance_id(instance.map(s))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(subscription(&[topic])),
            ]),
    )
}

fn heartbeat(stream: &mut TcpStream, group: &str, member_id: &str, generation: i32) -> i16 {
    let response: HeartbeatResponse = call(
        stream,
        ApiKey::Heartbeat,
        4,
        &HeartbeatRequest::default()
            .with_group_id(group_id(group))
            .with_member_id(s(member_id))
            .with_generation_id(generation),
    );
    response.error_code
}

/// A member joined through the raw protocol as the group's only member:
/// (member id, generation).
fn join_alone(
    stream: &mut TcpStream,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> (String, i32) {
    let first = join(stream, group, "", None, 6_000, topic);
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED, "{first:?}");
    let member_id = first.member_id.to_string();
    let joined = join(stream, group, &member_id, None, 6_000, topic);
    assert_eq!(joined.error_code, 0, "{joined:?}");
    assert_eq!(joined.leader.as_str(), member_id, "the only member leads");
    let synced: SyncGroupResponse = call(
        stream,
        ApiKey::SyncGroup,
        5,
        &SyncGroupRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id(joined.generation_id)
            .with_member_id(s(&member_id))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member_id))
                    .with_assignment(assignment(topic, partitions)),
            ]),
    );
    assert_eq!(synced.error_code, 0, "{synced:?}");
    assert_eq!(synced.assignment, assignment(topic, partitions));
    (member_id, joined.generation_id)
}

fn commit(
    stream: &mut TcpStream,
    group: &str,
    member_id: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let response: OffsetCommitResponse = call(
        stream,
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member_id))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(wire::topic_name(topic))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|(p, o)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o)
                            })
                            .collect(),
                    ),
            ]),
    );
    response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

#[test]
fn a_member_that_vanishes_loses_its_partitions_and_nothing_is_skipped() {
    let broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    broker.create_topic("vanish", 4);
    let placed = produce_keyed(&broker, "vanish", 400);
    let ends = end_offsets(&placed);
    let port = coordinator_port(&broker, "vanishing");
    {
        let mut stream = wire::connect(port);
        let (member_id, generation) = join_alone(&mut stream, "vanishing", "vanish", &[0, 1, 2, 3]);
        let halfway: Vec<(i32, i64)> = ends.iter().map(|(p, end)| (*p, end / 2)).collect();
        let codes = commit(
            &mut stream,
            "vanishing",
            &member_id,
            generation,
            "vanish",
            &halfway,
        );
        assert_eq!(codes, vec![0; 4]);
        // The member's process dies: no LeaveGroup, the socket just closes.
    }
    let (consumer, _) = group_consumer(&broker, "vanishing", &[]);
    consumer.subscribe(&["vanish"]).expect("subscribe");
    // The dead member holds the rebalance until its session (6 s) expires.
    let expected: usize = ends.values().map(|end| (end - end / 2) as usize).sum();
    let seen = consume_group(&[&consumer], expected, TIMEOUT * 2);
    let got: BTreeSet<(i32, i64)> = seen[0].iter().map(|(p, o, _)| (*p, *o)).collect();
    let wanted: BTreeSet<(i32, i64)> = ends
        .iter()
        .flat_map(|(p, end)| (end / 2..*end).map(move |o| (*p, o)))
        .collect();
    assert_eq!(got, wanted, "every record after the commits, none before");
}

#[test]
fn group_requests_get_kafkas_error_codes() {
    let broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    broker.create_topic("codes", 2);
    let port = coordinator_port(&broker, "codes-group");
    let other = if port == broker.shard_port(0) {
        broker.shard_port(1)
    } else {
        broker.shard_port(0)
    };
    let mut stream = wire::connect(port);

    // Session timeout outside group.min/max.session.timeout.ms.
    let bad = join(&mut stream, "codes-group", "", None, 1_000, "codes");
    assert_eq!(bad.error_code, INVALID_SESSION_TIMEOUT);
    let (member_id, generation) = join_alone(&mut stream, "codes-group", "codes", &[0, 1]);
    assert_eq!(
        heartbeat(&mut stream, "codes-group", &member_id, generation),
        0
    );
    assert_eq!(
        heartbeat(&mut stream, "codes-group", &member_id, generation + 5),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(&mut stream, "codes-group", "nobody", generation),
        UNKNOWN_MEMBER_ID
    );
    // Another protocol type cannot join.
    let mismatched: JoinGroupResponse = call(
        &mut stream,
        ApiKey::JoinGroup,
        5,
        &JoinGroupRequest::default()
            .with_group_id(group_id("codes-group"))
            .with_session_timeout_ms(6_000)
            .with_rebalance_timeout_ms(6_000)
            .with_protocol_type(s("connect"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("default"))
                    .with_metadata(Bytes::new()),
            ]),
    );
    assert_eq!(mismatched.error_code, INCONSISTENT_GROUP_PROTOCOL);
    // Commits: stale generation, unknown partition, then a good one.
    assert_eq!(
        commit(
            &mut stream,
            "codes-group",
            &member_id,
            generation - 1,
            "codes",
            &[(0, 1)]
        ),
        vec![ILLEGAL_GENERATION]
    );
    assert_eq!(
        commit(
            &mut stream,
            "codes-group",
            &member_id,
            generation,
            "codes",
            &[(0, 3), (7, 1)]
        ),
        vec![0, UNKNOWN_TOPIC_OR_PARTITION]
    );
    // The wrong shard is not the coordinator.
    let mut wrong = wire::connect(other);
    assert_eq!(
        heartbeat(&mut wrong, "codes-group", &member_id, generation),
        NOT_COORDINATOR
    );
    assert_eq!(
        commit(
            &mut wrong,
            "codes-group",
            &member_id,
            generation,
            "codes",
            &[(0, 1)]
        ),
        vec![NOT_COORDINATOR]
    );
    // A non-empty group cannot be deleted; an unknown one is not found.
    let deleted: DeleteGroupsResponse = call(
        &mut stream,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default()
            .with_groups_names(vec![group_id("codes-group"), group_id("no-such-group")]),
    );
    let codes: HashMap<String, i16> = deleted
        .results
        .iter()
        .map(|r| (r.group_id.0.to_string(), r.error_code))
        .collect();
    assert_eq!(codes["codes-group"], NON_EMPTY_GROUP);
    // The unknown group may hash to the other shard.
    assert!(
        [GROUP_ID_NOT_FOUND, NOT_COORDINATOR].contains(&codes["no-such-group"]),
        "{codes:?}"
    );
    // Described as it is: stable, one member, its assignment.
    let described: DescribeGroupsResponse = call(
        &mut stream,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![group_id("codes-group")]),
    );
    let group = &described.groups[0];
    assert_eq!(group.error_code, 0);
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.protocol_type.as_str(), "consumer");
    assert_eq!(group.protocol_data.as_str(), "range");
    assert_eq!(group.members.len(), 1);
    assert_eq!(
        group.members[0].member_assignment,
        assignment("codes", &[0, 1])
    );
    // A second member's join starts a rebalance: the first is told so.
    let mut second = wire::connect(port);
    let needs_id = join(&mut second, "codes-group", "", None, 6_000, "codes");
    assert_eq!(needs_id.error_code, MEMBER_ID_REQUIRED);
    let second_id = needs_id.member_id.to_string();
    // Send the second member's join without waiting: it is parked until
    // the first member rejoins.
    wire::send_frame(
        &mut second,
        &wire::request_bytes(
            ApiKey::JoinGroup,
            5,
            11,
            &JoinGroupRequest::default()
                .with_group_id(group_id("codes-group"))
                .with_session_timeout_ms(6_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(s(&second_id))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(subscription(&["codes"])),
                ]),
        ),
    );
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let code = heartbeat(&mut stream, "codes-group", &member_id, generation);
        if code == REBALANCE_IN_PROGRESS {
            break;
        }
        assert_eq!(code, 0);
        assert!(Instant::now() < deadline, "no rebalance signalled");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Static membership: an instance id taken by a new member fences the old.
    let static_port = coordinator_port(&broker, "static-codes");
    let mut static_one = wire::connect(static_port);
    let first = join(
        &mut static_one,
        "static-codes",
        "",
        Some("inst"),
        6_000,
        "codes",
    );
    assert_eq!(
        first.error_code, 0,
        "a static member needs no second join: {first:?}"
    );
    let mut static_two = wire::connect(static_port);
    let second = join(
        &mut static_two,
        "static-codes",
        "",
        Some("inst"),
        6_000,
        "codes",
    );
    assert_eq!(second.error_code, 0, "{second:?}");
    assert_ne!(second.member_id, first.member_id);
    let fenced: HeartbeatResponse = call(
        &mut static_one,
        ApiKey::Heartbeat,
        4,
        &HeartbeatRequest::default()
            .with_group_id(group_id("static-codes"))
            .with_member_id(first.member_id.clone())
            .with_group_instance_id(Some(s("inst")))
            .with_generation_id(first.generation_id),
    );
    assert_eq!(fenced.error_code, FENCED_INSTANCE_ID);
}

#[test]
fn kafka_python_style_standalone_commits_and_list_groups() {
    let broker = Broker::start(&[]);
    broker.create_topic("solo", 3);
    let port = coordinator_port(&broker, "solo-group");
    let mut stream = wire::connect(port);
    // Generation -1, no member: a consumer using assign() and commits.
    assert_eq!(
        commit(&mut stream, "solo-group", "", -1, "solo", &[(0, 5), (2, 9)]),
        vec![0, 0]
    );
    let fetched: OffsetFetchResponse = call(
        &mut stream,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(group_id("solo-group"))
            .with_topics(None),
    );
    assert_eq!(fetched.error_code, 0);
    let offsets: Vec<(i32, i64)> = fetched.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(offsets, vec![(0, 5), (2, 9)]);
    // Every shard lists its own groups; together they hold this one.
    let mut listed = Vec::new();
    for shard in 0..2 {
        let mut s = wire::connect(broker.shard_port(shard));
        let response: ListGroupsResponse =
            call(&mut s, ApiKey::ListGroups, 4, &ListGroupsRequest::default());
        assert_eq!(response.error_code, 0);
        listed.extend(
            response
                .groups
                .iter()
                .map(|g| (g.group_id.0.to_string(), g.group_state.to_string())),
        );
    }
    assert_eq!(
        listed,
        vec![("solo-group".to_string(), "Empty".to_string())]
    );
    // Deleting the empty group removes its offsets.
    let deleted: DeleteGroupsResponse = call(
        &mut stream,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![group_id("solo-group")]),
    );
    assert_eq!(deleted.results[0].error_code, 0);
    let fetched: OffsetFetchResponse = call(
        &mut stream,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(group_id("solo-group"))
            .with_topics(None),
    );
    assert!(fetched.topics.is_empty(), "{fetched:?}");
}

/// Committed offsets of `group` for `topic` partitions 0..4, over raw
/// OffsetFetch.
fn fetch_committed(port: u16, group: &str, topic: &str) -> Vec<i64> {
    let mut stream = wire::connect(port);
    let fetched: OffsetFetchResponse = call(
        &mut stream,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(wire::topic_name(topic))
                    .with_partition_indexes(vec![0, 1, 2, 3]),
            ])),
    );
    assert_eq!(fetched.error_code, 0, "{fetched:?}");
    fetched.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

#[test]
fn the_offsets_log_is_compacted_and_replays_the_latest_state() {
    let mut broker = Broker::start(&[
        "--offsets-topic-num-partitions",
        "1",
        "--offsets-topic-segment-bytes",
        "16384",
    ]);
    broker.create_topic("busy", 4);
    let port = coordinator_port(&broker, "quiet");
    let mut stream = wire::connect(port);
    // One early commit that is never superseded must survive compaction.
    assert_eq!(
        commit(&mut stream, "quiet", "", -1, "busy", &[(0, 7)]),
        vec![0]
    );
    for round in 1..=1_500i64 {
        let offsets: Vec<(i32, i64)> = (0..4).map(|p| (p, round * 10 + i64::from(p))).collect();
        assert_eq!(
            commit(&mut stream, "busy-group", "", -1, "busy", &offsets),
            vec![0; 4]
        );
    }
    let dir = broker.data_dir.join("__consumer_offsets-0");
    let count_segments = || {
        std::fs::read_dir(&dir)
            .expect("offsets partition dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
            })
            .count()
    };
    // ~400 KB of commits in 16 KiB segments: without compaction, 20+.
    let deadline = Instant::now() + TIMEOUT;
    while count_segments() > 4 {
        assert!(
            Instant::now() < deadline,
            "{} segments: not compacted\n{}",
            count_segments(),
            broker.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let latest: Vec<i64> = (0..4).map(|p| 15_000 + p).collect();
    assert_eq!(fetch_committed(port, "busy-group", "busy"), latest);
    assert_eq!(fetch_committed(port, "quiet", "busy")[0], 7);

    broker.sigkill();
    broker.restart();
    let port = coordinator_port(&broker, "quiet");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut stream = wire::connect(port);
        let fetched: OffsetFetchResponse = call(
            &mut stream,
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(group_id("quiet"))
                .with_topics(None),
        );
        // COORDINATOR_LOAD_IN_PROGRESS (14) until the partition is replayed.
        if fetched.error_code == 0 {
            break;
        }
        assert_eq!(fetched.error_code, 14, "{fetched:?}");
        assert!(Instant::now() < deadline, "offsets never loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fetch_committed(port, "busy-group", "busy"), latest);
    assert_eq!(fetch_committed(port, "quiet", "busy")[0], 7);
}

/// A KafkaConsumer on KIP-848's protocol: the broker assigns.
fn kip848_consumer(broker: &Broker, group: &str) -> (GroupConsumer, Events) {
    let events = Events::default();
    let consumer: GroupConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100")
        .set("socket.timeout.ms", "10000")
        .create_with_context(events.clone())
        .expect("consumer");
    (consumer, events)
}

#[test]
fn the_consumer_protocol_assigns_on_the_broker_and_moves_partitions_safely() {
    let broker = Broker::start(&["--group-consumer-heartbeat-interval-ms", "300"]);
    broker.create_topic("kip848", 6);
    let (first, _) = kip848_consumer(&broker, "next-gen");
    first.subscribe(&["kip848"]).expect("subscribe");
    wait_for_assignment(&[&first], 6, &broker);
    let (second, _) = kip848_consumer(&broker, "next-gen");
    second.subscribe(&["kip848"]).expect("subscribe");
    wait_for_assignment(&[&first, &second], 6, &broker);
    let owners = [assigned(&first), assigned(&second)];
    assert_eq!(owners[0].len(), 3, "{owners:?}");

    let placed = produce_keyed(&broker, "kip848", 3_000);
    let seen = consume_group(&[&first, &second], 3_000, TIMEOUT * 2);
    let mut values = BTreeSet::new();
    for (index, records) in seen.iter().enumerate() {
        for (partition, _, value) in records {
            assert!(
                owners[index].contains(partition),
                "member {index} read {partition}"
            );
            assert!(values.insert(value.clone()), "{value} twice");
        }
    }
    commit_processed(&first);
    commit_processed(&second);
    assert_eq!(
        committed(&broker, "next-gen", "kip848", 6),
        end_offsets(&placed)
    );

    // The group is listed as a consumer-protocol group and described.
    let port = coordinator_port(&broker, "next-gen");
    let mut stream = wire::connect(port);
    let described: ConsumerGroupDescribeResponse = call(
        &mut stream,
        ApiKey::ConsumerGroupDescribe,
        1,
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id("next-gen")]),
    );
    let group = &described.groups[0];
    assert_eq!(group.error_code, 0, "{group:?}");
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.members.len(), 2);
    let listed: ListGroupsResponse = call(
        &mut stream,
        ApiKey::ListGroups,
        5,
        &ListGroupsRequest::default().with_types_filter(vec![s("consumer")]),
    );
    assert!(
        listed
            .groups
            .iter()
            .any(|g| g.group_id.0.as_str() == "next-gen" && g.group_type.as_str() == "consumer"),
        "{listed:?}"
    );

    // One member leaves: the other takes over everything, from the commits.
    drop(second);
    wait_for_assignment(&[&first], 6, &broker);
    let more = produce_keyed(&broker, "kip848", 600);
    let seen = consume_group(&[&first], 600, TIMEOUT * 2);
    let got: BTreeSet<(i32, i64)> = seen[0].iter().map(|(p, o, _)| (*p, *o)).collect();
    let expected: BTreeSet<(i32, i64)> = more.iter().copied().collect();
    assert_eq!(got, expected, "resumed exactly after the commits");
}

#[test]
fn the_offsets_topic_is_internal() {
    let broker = Broker::start(&[]);
    coordinator_port(&broker, "creates-the-topic");
    let consumer = broker.consumer(&[]);
    let metadata = consumer
        .fetch_metadata(Some("__consumer_offsets"), TIMEOUT)
        .expect("metadata");
    assert_eq!(metadata.topics()[0].partitions().len(), 50);
    // Clients cannot write to it, delete it or grow it.
    let leader = broker.leaders("__consumer_offsets")[&0];
    let mut stream = wire::connect(broker.shard_port(leader as usize));
    let (code, _) = wire::produce(
        &mut stream,
        "__consumer_offsets",
        0,
        wire::batch(1, 10).freeze(),
    );
    assert_eq!(code, 17, "INVALID_TOPIC_EXCEPTION");
    let mut admin = wire::connect(broker.port);
    let deleted: DeleteTopicsResponse = call(
        &mut admin,
        ApiKey::DeleteTopics,
        4,
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![wire::topic_name("__consumer_offsets")])
            .with_timeout_ms(10_000),
    );
    assert_eq!(deleted.responses[0].error_code, 17);
    let grown: CreatePartitionsResponse = call(
        &mut admin,
        ApiKey::CreatePartitions,
        2,
        &CreatePartitionsRequest::default()
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(wire::topic_name("__consumer_offsets"))
                    .with_count(60),
            ])
            .with_timeout_ms(10_000),
    );
    assert_eq!(grown.results[0].error_code, 17);
}
