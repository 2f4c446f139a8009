//! `tidelog group`: list, describe, delete consumer groups and reset their
//! committed offsets, against any Kafka-compatible broker (the commands of
//! Kafka's `kafka-consumer-groups.sh`).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Buf;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{Client, ClientError};

#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    /// A broker to start from (any node of the cluster).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// Every consumer group with its state.
    List,
    /// A group's state, members, and each partition's committed offset and lag.
    Describe {
        #[arg(long)]
        group: String,
    },
    /// Deletes empty groups and their committed offsets.
    Delete {
        #[arg(long, required = true)]
        group: Vec<String>,
    },
    /// Sets an inactive group's committed offsets (a dry run unless --execute).
    ResetOffsets {
        #[arg(long)]
        group: String,
        /// TOPIC or TOPIC:P,P,... (repeatable).
        #[arg(long)]
        topic: Vec<String>,
        /// Every topic the group has committed offsets for.
        #[arg(long)]
        all_topics: bool,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        /// The first offset at or after this time (ms since the epoch).
        #[arg(long, group = "to")]
        to_timestamp: Option<i64>,
        /// This offset, clamped to the partition's earliest..latest.
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        /// Commit the new offsets (without it, only print them).
        #[arg(long)]
        execute: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum GroupCliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Refused(String),
}

fn code_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(error) => format!("{error:?} ({code})"),
        None => format!("error code {code}"),
    }
}

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

pub fn run(args: GroupArgs) -> Result<(), GroupCliError> {
    let mut client = Client::new(&args.bootstrap_server);
    match args.command {
        GroupCommand::List => list(&mut client),
        GroupCommand::Describe { group } => describe(&mut client, &group),
        GroupCommand::Delete { group } => delete(&mut client, &group),
        GroupCommand::ResetOffsets {
            group,
            topic,
            all_topics,
            to_earliest,
            to_latest,
            to_timestamp,
            to_offset,
            execute,
        } => {
            let target = match (to_earliest, to_latest, to_timestamp, to_offset) {
                (true, ..) => Target::Earliest,
                (_, true, ..) => Target::Latest,
                (_, _, Some(ms), _) => Target::Timestamp(ms),
                (_, _, _, Some(offset)) => Target::Offset(offset),
                _ => {
                    return Err(GroupCliError::Refused(
                        "say where to: --to-earliest, --to-latest, --to-timestamp MS or --to-offset N"
                            .into(),
                    ));
                }
            };
            reset_offsets(&mut client, &group, &topic, all_topics, target, execute)
        }
    }
}

fn list(client: &mut Client) -> Result<(), GroupCliError> {
    let mut groups = BTreeMap::new();
    for (_, address) in client.brokers()? {
        let response: ListGroupsResponse = client.call(
            &address,
            ApiKey::ListGroups,
            4,
            &ListGroupsRequest::default(),
        )?;
        if response.error_code != 0 {
            return Err(GroupCliError::Refused(format!(
                "listing groups on {address}: {}",
                code_name(response.error_code)
            )));
        }
        for group in response.groups {
            groups.insert(
                group.group_id.0.to_string(),
                (
                    group.group_state.to_string(),
                    group.protocol_type.to_string(),
                ),
            );
        }
    }
    println!("{:<40} {:<20} PROTOCOL-TYPE", "GROUP", "STATE");
    for (group, (state, protocol_type)) in groups {
        println!("{group:<40} {state:<20} {protocol_type}");
    }
    Ok(())
}

/// What `describe` needs of a group.
struct Described {
    state: String,
    /// (topic, partition) -> (member id, host, client id)
    owners: BTreeMap<(String, i32), (String, String, String)>,
    member_count: usize,
}

fn describe_group(
    client: &mut Client,
    coordinator: &str,
    group: &str,
) -> Result<Described, GroupCliError> {
    let response: DescribeGroupsResponse = client.call(
        coordinator,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
    )?;
    let Some(described) = response.groups.into_iter().next() else {
        return Err(GroupCliError::Refused(format!(
            "no description of group {group}"
        )));
    };
    if described.error_code != 0 {
        return Err(GroupCliError::Refused(format!(
            "describing group {group}: {}",
            code_name(described.error_code)
        )));
    }
    let mut owners = BTreeMap::new();
    for member in &described.members {
        for (topic, partitions) in consumer_assignment(&member.member_assignment) {
            for partition in partitions {
                owners.insert(
                    (topic.clone(), partition),
                    (
                        member.member_id.to_string(),
                        member.client_host.to_string(),
                        member.client_id.to_string(),
                    ),
                );
            }
        }
    }
    Ok(Described {
        state: described.group_state.to_string(),
        owners,
        member_count: described.members.len(),
    })
}

/// The partitions of a consumer-protocol assignment (empty if it is not
/// one).
fn consumer_assignment(bytes: &bytes::Bytes) -> Vec<(String, Vec<i32>)> {
    fn parse(mut buf: bytes::Bytes) -> Option<Vec<(String, Vec<i32>)>> {
        let need = |buf: &bytes::Bytes, n: usize| (buf.remaining() >= n).then_some(());
        need(&buf, 6)?;
        buf.get_i16(); // version
        let topics = buf.get_i32();
        let mut out = Vec::new();
        for _ in 0..topics.max(0) {
            need(&buf, 2)?;
            let length = usize::try_from(buf.get_i16()).ok()?;
            need(&buf, length + 4)?;
            let name = String::from_utf8(buf.split_to(length).to_vec()).ok()?;
            let count = buf.get_i32();
            let mut partitions = Vec::new();
            for _ in 0..count.max(0) {
                need(&buf, 4)?;
                partitions.push(buf.get_i32());
            }
            out.push((name, partitions));
        }
        Some(out)
    }
    parse(bytes.clone()).unwrap_or_default()
}

/// The group's committed offsets: (topic, partition) -> offset.
fn committed_offsets(
    client: &mut Client,
    coordinator: &str,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, GroupCliError> {
    let response: OffsetFetchResponse = client.call(
        coordinator,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(None),
    )?;
    if response.error_code != 0 {
        return Err(GroupCliError::Refused(format!(
            "fetching the offsets of group {group}: {}",
            code_name(response.error_code)
        )));
    }
    let mut offsets = BTreeMap::new();
    for topic in response.topics {
        for partition in topic.partitions {
            if partition.error_code == 0 && partition.committed_offset >= 0 {
                offsets.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.committed_offset,
                );
            }
        }
    }
    Ok(offsets)
}

/// ListOffsets at `timestamp` (-1 latest, -2 earliest) for each partition,
/// asked of each partition's leader.
fn list_offsets(
    client: &mut Client,
    partitions: &BTreeSet<(String, i32)>,
    timestamp: i64,
) -> Result<BTreeMap<(String, i32), i64>, GroupCliError> {
    let topics: Vec<String> = partitions
        .iter()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let metadata = client.metadata(Some(&topics))?;
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for topic in &metadata.topics {
        let Some(name) = &topic.name else { continue };
        for partition in &topic.partitions {
            let key = (name.0.to_string(), partition.partition_index);
            if partitions.contains(&key) {
                by_leader
                    .entry(partition.leader_id.0)
                    .or_default()
                    .entry(key.0)
                    .or_default()
                    .push(key.1);
            }
        }
    }
    let mut offsets = BTreeMap::new();
    for (leader, topics) in by_leader {
        let address = client.node_address(leader)?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(s(&topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(p)
                                            .with_timestamp(timestamp)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response: ListOffsetsResponse =
            client.call(&address, ApiKey::ListOffsets, 7, &request)?;
        for topic in response.topics {
            for partition in topic.partitions {
                if partition.error_code != 0 {
                    return Err(GroupCliError::Refused(format!(
                        "offsets of {}-{}: {}",
                        topic.name.0.as_str(),
                        partition.partition_index,
                        code_name(partition.error_code)
                    )));
                }
                offsets.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.offset,
                );
            }
        }
    }
    Ok(offsets)
}

fn describe(client: &mut Client, group: &str) -> Result<(), GroupCliError> {
    let coordinator = client.coordinator(group)?;
    let described = describe_group(client, &coordinator, group)?;
    let committed = committed_offsets(client, &coordinator, group)?;
    if described.state == "Dead" && committed.is_empty() {
        return Err(GroupCliError::Refused(format!(
            "consumer group {group} does not exist"
        )));
    }
    let partitions: BTreeSet<(String, i32)> = committed
        .keys()
        .chain(described.owners.keys())
        .cloned()
        .collect();
    let ends = if partitions.is_empty() {
        BTreeMap::new()
    } else {
        list_offsets(client, &partitions, -1)?
    };
    println!(
        "Consumer group '{group}' is {} with {} member(s).",
        described.state, described.member_count
    );
    println!(
        "{:<30} {:<30} {:>9} {:>14} {:>14} {:>8}  {:<50} {:<16} CLIENT-ID",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST"
    );
    for key in &partitions {
        let current = committed.get(key).copied();
        let end = ends.get(key).copied();
        let lag = match (current, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => "-".into(),
        };
        let (member, host, client_id) = described
            .owners
            .get(key)
            .cloned()
            .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
        println!(
            "{:<30} {:<30} {:>9} {:>14} {:>14} {:>8}  {:<50} {:<16} {}",
            group,
            key.0,
            key.1,
            current.map_or("-".into(), |c| c.to_string()),
            end.map_or("-".into(), |e| e.to_string()),
            lag,
            member,
            host,
            client_id
        );
    }
    Ok(())
}

fn delete(client: &mut Client, groups: &[String]) -> Result<(), GroupCliError> {
    let mut failed = Vec::new();
    for group in groups {
        let coordinator = client.coordinator(group)?;
        let response: DeleteGroupsResponse = client.call(
            &coordinator,
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]),
        )?;
        let code = response.results.first().map_or(-1, |r| r.error_code);
        if code == 0 {
            println!("Deleted consumer group '{group}'.");
        } else {
            failed.push(format!("{group}: {}", code_name(code)));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(GroupCliError::Refused(format!(
            "not deleted: {}",
            failed.join(", ")
        )))
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Earliest,
    Latest,
    Timestamp(i64),
    Offset(i64),
}

/// The partitions named by `--topic T` / `T:0,1` (all of T's when no list).
fn named_partitions(
    client: &mut Client,
    specs: &[String],
) -> Result<BTreeSet<(String, i32)>, GroupCliError> {
    let mut partitions = BTreeSet::new();
    for spec in specs {
        let (topic, list) = match spec.split_once(':') {
            Some((topic, list)) => (topic.to_string(), Some(list)),
            None => (spec.clone(), None),
        };
        match list {
            Some(list) => {
                for p in list.split(',') {
                    let p: i32 = p.trim().parse().map_err(|_| {
                        GroupCliError::Refused(format!(
                            "'{p}' in --topic {spec} is not a partition"
                        ))
                    })?;
                    partitions.insert((topic.clone(), p));
                }
            }
            None => {
                let metadata = client.metadata(Some(std::slice::from_ref(&topic)))?;
                let described = metadata.topics.first();
                match described {
                    Some(t) if t.error_code == 0 => {
                        for p in &t.partitions {
                            partitions.insert((topic.clone(), p.partition_index));
                        }
                    }
                    Some(t) => {
                        return Err(GroupCliError::Refused(format!(
                            "topic {topic}: {}",
                            code_name(t.error_code)
                        )));
                    }
                    None => {
                        return Err(GroupCliError::Refused(format!("topic {topic} not found")));
                    }
                }
            }
        }
    }
    Ok(partitions)
}

fn reset_offsets(
    client: &mut Client,
    group: &str,
    topics: &[String],
    all_topics: bool,
    target: Target,
    execute: bool,
) -> Result<(), GroupCliError> {
    let coordinator = client.coordinator(group)?;
    let described = describe_group(client, &coordinator, group)?;
    if described.state != "Empty" && described.state != "Dead" {
        return Err(GroupCliError::Refused(format!(
            "assignments can only be reset if the group '{group}' is inactive, but it is {}: stop its consumers first",
            described.state
        )));
    }
    let mut partitions = named_partitions(client, topics)?;
    if all_topics {
        partitions.extend(committed_offsets(client, &coordinator, group)?.into_keys());
    }
    if partitions.is_empty() {
        return Err(GroupCliError::Refused(
            "name the partitions: --topic TOPIC[:P,P...] or --all-topics".into(),
        ));
    }
    let earliest = list_offsets(client, &partitions, -2)?;
    let latest = list_offsets(client, &partitions, -1)?;
    let plan: BTreeMap<(String, i32), i64> = match target {
        Target::Earliest => earliest.clone(),
        Target::Latest => latest.clone(),
        Target::Timestamp(ms) => {
            let found = list_offsets(client, &partitions, ms)?;
            found
                .into_iter()
                .map(|(key, offset)| {
                    // No record at or after the time: the end of the log.
                    let offset = if offset < 0 {
                        latest.get(&key).copied().unwrap_or(0)
                    } else {
                        offset
                    };
                    (key, offset)
                })
                .collect()
        }
        Target::Offset(offset) => partitions
            .iter()
            .map(|key| {
                let low = earliest.get(key).copied().unwrap_or(0);
                let high = latest.get(key).copied().unwrap_or(low);
                (key.clone(), offset.clamp(low, high.max(low)))
            })
            .collect(),
    };
    println!(
        "{:<30} {:<30} {:>9} {:>14}",
        "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"
    );
    for ((topic, partition), offset) in &plan {
        println!("{group:<30} {topic:<30} {partition:>9} {offset:>14}");
    }
    if !execute {
        println!("(dry run: nothing committed; add --execute to commit these offsets)");
        return Ok(());
    }
    let mut by_topic: BTreeMap<String, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((topic, partition), offset) in &plan {
        by_topic.entry(topic.clone()).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(&topic)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response: OffsetCommitResponse =
        client.call(&coordinator, ApiKey::OffsetCommit, 8, &request)?;
    let failures: Vec<String> = response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.error_code != 0)
                .map(move |p| {
                    format!(
                        "{}-{}: {}",
                        t.name.0.as_str(),
                        p.partition_index,
                        code_name(p.error_code)
                    )
                })
        })
        .collect();
    if !failures.is_empty() {
        return Err(GroupCliError::Refused(format!(
            "committing the new offsets failed: {}",
            failures.join(", ")
        )));
    }
    println!("Committed the new offsets of group '{group}'.");
    Ok(())
}
