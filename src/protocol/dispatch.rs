//! Routes a parsed request to its handler. Everything a handler does before
//! its first `.await` happens here, in arrival order (for Produce: staging
//! each batch), so a connection's requests reach each partition in order
//! even though their answers are awaited concurrently.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{RequestKind, ResponseKind};

use super::codec::{ProtocolError, Request, encode_response};
use super::fetch_encode;
use super::handlers;
use crate::shard::Shard;

/// A response frame as slices, written in order (Fetch references record
/// batches rather than copying them; other responses are one slice).
pub type ResponseFrame = Vec<Bytes>;

/// A response still being produced: `None` when the API sends none
/// (Produce with acks=0).
pub type PendingResponse =
    Pin<Box<dyn Future<Output = Result<Option<ResponseFrame>, ProtocolError>>>>;

/// `client_ip` is the connection's peer (group members report it).
pub fn dispatch(shard: &Rc<Shard>, request: Request, client_ip: IpAddr) -> PendingResponse {
    let Request {
        api,
        version,
        header,
        body,
    } = request;
    let correlation_id = header.correlation_id;
    let client_id = header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let respond = move |body: ResponseKind| {
        encode_response(api, version, correlation_id, &body).map(|frame| Some(vec![frame]))
    };
    let shard = shard.clone();
    match body {
        RequestKind::Produce(request) => {
            let pending = handlers::produce::start(&shard, request, version);
            Box::pin(async move {
                match pending.await {
                    Some(response) => respond(ResponseKind::Produce(response)),
                    None => Ok(None),
                }
            })
        }
        RequestKind::Fetch(request) => Box::pin(async move {
            let topics = handlers::fetch::handle(&shard, request).await;
            Ok(Some(fetch_encode::encode(correlation_id, version, &topics)))
        }),
        RequestKind::ListOffsets(request) => Box::pin(async move {
            respond(ResponseKind::ListOffsets(
                handlers::list_offsets::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::Metadata(request) => Box::pin(async move {
            respond(ResponseKind::Metadata(
                handlers::metadata::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::OffsetForLeaderEpoch(request) => {
            let response = handlers::offset_for_leader_epoch::handle(&shard, request);
            Box::pin(async move { respond(ResponseKind::OffsetForLeaderEpoch(response)) })
        }
        RequestKind::ApiVersions(_) => {
            let response = handlers::api_versions::response(0);
            Box::pin(async move { respond(ResponseKind::ApiVersions(response)) })
        }
        RequestKind::CreateTopics(request) => Box::pin(async move {
            respond(ResponseKind::CreateTopics(
                handlers::create_topics::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::DeleteTopics(request) => Box::pin(async move {
            respond(ResponseKind::DeleteTopics(
                handlers::delete_topics::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::CreatePartitions(request) => Box::pin(async move {
            respond(ResponseKind::CreatePartitions(
                handlers::create_partitions::handle(&shard, request).await,
            ))
        }),
        RequestKind::DescribeConfigs(request) => {
            let response = handlers::describe_configs::handle(&shard, request, version);
            Box::pin(async move { respond(ResponseKind::DescribeConfigs(response)) })
        }
        RequestKind::FindCoordinator(request) => Box::pin(async move {
            respond(ResponseKind::FindCoordinator(
                handlers::find_coordinator::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::JoinGroup(request) => {
            let pending =
                handlers::join_group::start(&shard, request, version, client_id, client_ip);
            Box::pin(async move { respond(ResponseKind::JoinGroup(pending.await)) })
        }
        RequestKind::SyncGroup(request) => {
            let pending = handlers::sync_group::start(&shard, request, version);
            Box::pin(async move { respond(ResponseKind::SyncGroup(pending.await)) })
        }
        RequestKind::Heartbeat(request) => {
            let response = handlers::heartbeat::handle(&shard, request);
            Box::pin(async move { respond(ResponseKind::Heartbeat(response)) })
        }
        RequestKind::LeaveGroup(request) => {
            let response = handlers::leave_group::handle(&shard, request, version);
            Box::pin(async move { respond(ResponseKind::LeaveGroup(response)) })
        }
        RequestKind::OffsetCommit(request) => {
            let pending = handlers::offset_commit::start(&shard, request);
            Box::pin(async move { respond(ResponseKind::OffsetCommit(pending.await)) })
        }
        RequestKind::OffsetFetch(request) => {
            let response = handlers::offset_fetch::handle(&shard, request, version);
            Box::pin(async move { respond(ResponseKind::OffsetFetch(response)) })
        }
        RequestKind::ListGroups(request) => {
            let response = handlers::list_groups::handle(&shard, request, version);
            Box::pin(async move { respond(ResponseKind::ListGroups(response)) })
        }
        RequestKind::DescribeGroups(request) => {
            let response = handlers::describe_groups::handle(&shard, request, version);
            Box::pin(async move { respond(ResponseKind::DescribeGroups(response)) })
        }
        RequestKind::DeleteGroups(request) => {
            let pending = handlers::delete_groups::start(&shard, request);
            Box::pin(async move { respond(ResponseKind::DeleteGroups(pending.await)) })
        }
        RequestKind::OffsetDelete(request) => {
            let pending = handlers::offset_delete::start(&shard, request);
            Box::pin(async move { respond(ResponseKind::OffsetDelete(pending.await)) })
        }
        RequestKind::DeleteRecords(request) => Box::pin(async move {
            respond(ResponseKind::DeleteRecords(
                handlers::delete_records::handle(&shard, request).await,
            ))
        }),
        RequestKind::DescribeLogDirs(request) => {
            let response = handlers::describe_log_dirs::handle(&shard, request, version);
            Box::pin(async move { respond(ResponseKind::DescribeLogDirs(response)) })
        }
        RequestKind::AlterConfigs(request) => Box::pin(async move {
            respond(ResponseKind::AlterConfigs(
                handlers::alter_configs::handle(&shard, request).await,
            ))
        }),
        RequestKind::IncrementalAlterConfigs(request) => Box::pin(async move {
            respond(ResponseKind::IncrementalAlterConfigs(
                handlers::incremental_alter_configs::handle(&shard, request).await,
            ))
        }),
        RequestKind::ConsumerGroupHeartbeat(request) => {
            let response =
                handlers::consumer_group_heartbeat::handle(&shard, request, client_id, client_ip);
            Box::pin(async move { respond(ResponseKind::ConsumerGroupHeartbeat(response)) })
        }
        RequestKind::ConsumerGroupDescribe(request) => {
            let response = handlers::consumer_group_describe::handle(&shard, request, version);
            Box::pin(async move { respond(ResponseKind::ConsumerGroupDescribe(response)) })
        }
        // The codec only lets through APIs listed in `versions::SUPPORTED`.
        _ => Box::pin(async move { Err(ProtocolError::UnsupportedVersion { api, version }) }),
    }
}

#[cfg(test)]
mod tests {
    //! Every API at every advertised version, through the real handlers on a
    //! real shard: each response must encode (a field set that a version
    //! lacks is an encoding error) and decode back.

    use std::collections::BTreeMap;
    use std::rc::Rc;

    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, StrBytes};

    use super::*;
    use crate::config::BrokerConfig;
    use crate::metadata::{ClusterView, MetadataLog, MetadataRecord};
    use crate::protocol::versions::SUPPORTED;
    use crate::shard::mesh::Mesh;
    use crate::storage::LogConfig;
    use crate::types::ShardId;

    fn name(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.to_string()))
    }

    fn request(api: ApiKey, version: i16, topic: &str, batch: &Bytes) -> RequestKind {
        let t = || name(topic);
        match api {
            ApiKey::Produce => RequestKind::Produce(
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(1000)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(t())
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(0)
                                    .with_records(Some(batch.clone())),
                                PartitionProduceData::default()
                                    .with_index(9)
                                    .with_records(Some(batch.clone())),
                            ]),
                    ]),
            ),
            ApiKey::Fetch => RequestKind::Fetch(
                FetchRequest::default()
                    .with_max_bytes(1 << 20)
                    .with_max_wait_ms(0)
                    .with_topics(vec![FetchTopic::default().with_topic(t()).with_partitions(
                        vec![
                            FetchPartition::default().with_partition_max_bytes(1 << 20),
                            FetchPartition::default()
                                .with_fetch_offset(1_000_000)
                                .with_partition_max_bytes(10),
                        ],
                    )]),
            ),
            ApiKey::ListOffsets => {
                RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                ListOffsetsTopic::default().with_name(t()).with_partitions(
                    [-1i64, -2, 0]
                        .iter()
                        .map(|ts| ListOffsetsPartition::default().with_timestamp(*ts))
                        .collect(),
                ),
            ]))
            }
            ApiKey::Metadata => {
                RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(t())),
                    MetadataRequestTopic::default().with_name(Some(name("no-such-topic"))),
                ])))
            }
            ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
                OffsetForLeaderEpochRequest::default().with_topics(vec![
                    OffsetForLeaderTopic::default()
                        .with_topic(t())
                        .with_partitions(vec![
                            OffsetForLeaderPartition::default().with_leader_epoch(0),
                        ]),
                ]),
            ),
            ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
            ApiKey::CreateTopics => RequestKind::CreateTopics(
                CreateTopicsRequest::default()
                    .with_validate_only(version % 2 == 0)
                    .with_topics(vec![
                        CreatableTopic::default()
                            .with_name(name(&format!("created-{version}")))
                            .with_num_partitions(2)
                            .with_replication_factor(1),
                        CreatableTopic::default()
                            .with_name(name("bad name!"))
                            .with_num_partitions(1)
                            .with_replication_factor(1),
                    ]),
            ),
            ApiKey::DeleteTopics => {
                let request = if version >= 6 {
                    DeleteTopicsRequest::default().with_topics(vec![
                        delete_topics_request::DeleteTopicState::default()
                            .with_name(Some(name("nope"))),
                    ])
                } else {
                    DeleteTopicsRequest::default().with_topic_names(vec![name("nope")])
                };
                RequestKind::DeleteTopics(request)
            }
            ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
                DescribeConfigsRequest::default()
                    .with_include_synonyms(version >= 1)
                    .with_resources(vec![
                        DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_string(topic.to_string())),
                        DescribeConfigsResource::default()
                            .with_resource_type(4)
                            .with_resource_name(StrBytes::from_string("0".into())),
                    ]),
            ),
            ApiKey::CreatePartitions => {
                RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(t())
                    .with_count(1),
            ]))
            }
            ApiKey::FindCoordinator => RequestKind::FindCoordinator(
                FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_static_str("g"))
                    .with_coordinator_keys(if version >= 4 {
                        vec![StrBytes::from_static_str("g")]
                    } else {
                        Vec::new()
                    }),
            ),
            ApiKey::JoinGroup => RequestKind::JoinGroup(
                JoinGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(format!("g{version}"))))
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(if version >= 1 { 10_000 } else { -1 })
                    .with_protocol_type(StrBytes::from_static_str("consumer"))
                    .with_protocols(vec![
                        join_group_request::JoinGroupRequestProtocol::default()
                            .with_name(StrBytes::from_static_str("range"))
                            .with_metadata(Bytes::from_static(b"meta")),
                    ]),
            ),
            ApiKey::SyncGroup => RequestKind::SyncGroup(
                SyncGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("g0")))
                    .with_member_id(StrBytes::from_static_str("nobody")),
            ),
            ApiKey::Heartbeat => RequestKind::Heartbeat(
                HeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("g0")))
                    .with_member_id(StrBytes::from_static_str("nobody")),
            ),
            ApiKey::LeaveGroup => {
                let request = LeaveGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("g0")));
                RequestKind::LeaveGroup(if version >= 3 {
                    request.with_members(vec![
                        leave_group_request::MemberIdentity::default()
                            .with_member_id(StrBytes::from_static_str("nobody")),
                    ])
                } else {
                    request.with_member_id(StrBytes::from_static_str("nobody"))
                })
            }
            ApiKey::OffsetCommit => RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("standalone")))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(t())
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_committed_offset(1)
                                    .with_committed_metadata(Some(StrBytes::from_static_str("m"))),
                            ]),
                    ]),
            ),
            ApiKey::OffsetFetch => {
                let topics = || {
                    Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(t())
                            .with_partition_indexes(vec![0, 1]),
                    ])
                };
                let request = OffsetFetchRequest::default();
                RequestKind::OffsetFetch(if version >= 8 {
                    request.with_groups(vec![
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(StrBytes::from_static_str("standalone")))
                            .with_topics(Some(vec![
                                offset_fetch_request::OffsetFetchRequestTopics::default()
                                    .with_name(t())
                                    .with_partition_indexes(vec![0, 1]),
                            ])),
                    ])
                } else {
                    request
                        .with_group_id(GroupId(StrBytes::from_static_str("standalone")))
                        .with_topics(topics())
                })
            }
            ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
            ApiKey::DescribeGroups => {
                RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![
                    GroupId(StrBytes::from_static_str("g0")),
                    GroupId(StrBytes::from_static_str("unknown")),
                ]))
            }
            ApiKey::DeleteGroups => RequestKind::DeleteGroups(
                DeleteGroupsRequest::default()
                    .with_groups_names(vec![GroupId(StrBytes::from_static_str("unknown"))]),
            ),
            ApiKey::OffsetDelete => RequestKind::OffsetDelete(
                OffsetDeleteRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("standalone")))
                    .with_topics(vec![
                        offset_delete_request::OffsetDeleteRequestTopic::default()
                            .with_name(t())
                            .with_partitions(vec![
                                offset_delete_request::OffsetDeleteRequestPartition::default(),
                            ]),
                    ]),
            ),
            ApiKey::DeleteRecords => {
                RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                    delete_records_request::DeleteRecordsTopic::default()
                        .with_name(t())
                        .with_partitions(vec![
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_offset(1),
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(7)
                                .with_offset(-1),
                        ]),
                ]))
            }
            ApiKey::DescribeLogDirs => {
                RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None))
            }
            ApiKey::AlterConfigs => {
                RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_string(topic.to_string()))
                        .with_configs(vec![
                            alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_static_str("60000"))),
                        ]),
                ]))
            }
            ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
                IncrementalAlterConfigsRequest::default().with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_string(topic.to_string()))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_static_str("retention.bytes"))
                                .with_config_operation(0)
                                .with_value(Some(StrBytes::from_static_str("1048576"))),
                        ]),
                ]),
            ),
            ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(
                ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("kip848")))
                    .with_member_id(StrBytes::from_string(format!("member-{version}")))
                    .with_rebalance_timeout_ms(30_000)
                    .with_subscribed_topic_names(Some(vec![t()])),
            ),
            ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
                ConsumerGroupDescribeRequest::default().with_group_ids(vec![
                    GroupId(StrBytes::from_static_str("kip848")),
                    GroupId(StrBytes::from_static_str("g0")),
                ]),
            ),
            other => panic!("no test request for {other:?}"),
        }
    }

    #[test]
    fn every_api_answers_at_every_advertised_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let (log, view) = MetadataLog::open(&data_dir).expect("metadata log");
                let config = BrokerConfig {
                    data_dir: data_dir.clone(),
                    cluster_id: "test".into(),
                    shard_count: 1,
                    cpus: vec![0],
                    listen_ip: "127.0.0.1".parse().expect("ip"),
                    base_port: 9092,
                    advertised_host: "localhost".into(),
                    auto_create_topics: false,
                    default_partitions: 1,
                    socket_request_max_bytes: 1 << 20,
                    tail_cache_bytes_per_shard: 1 << 20,
                    log: LogConfig::default(),
                    retention_check_interval_ms: 300_000,
                    cleaner_backoff_ms: 15_000,
                    cleaner_dedupe_buffer_bytes: 1 << 20,
                    cleaner_io_max_bytes_per_second: f64::INFINITY,
                    group: crate::group::GroupConfig {
                        initial_rebalance_delay_ms: 0,
                        offsets_partitions: 3,
                        ..crate::group::GroupConfig::default()
                    },
                };
                let _: ClusterView = view.clone();
                let shard = Rc::new(Shard::new(
                    ShardId(0),
                    Rc::new(config),
                    view,
                    Some(log),
                    Mesh::new(None),
                ));
                shard
                    .apply(&MetadataRecord::TopicCreated {
                        name: "t".into(),
                        topic_id: 5,
                        partition_shards: vec![0],
                        configs: BTreeMap::new(),
                    })
                    .await
                    .expect("topic");
                let batch = crate::storage::batch::encode_test_batch(&[b"x", b"y"], 1_000);
                for (api, min, max) in SUPPORTED {
                    for version in *min..=*max {
                        let body = request(*api, version, "t", &batch);
                        let header = RequestHeader::default().with_correlation_id(7);
                        let parsed = Request {
                            api: *api,
                            version,
                            header,
                            body,
                        };
                        let slices = dispatch(&shard, parsed, "127.0.0.1".parse().expect("ip"))
                            .await
                            .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"))
                            .unwrap_or_else(|| panic!("{api:?} v{version}: no response"));
                        let response: Bytes = slices.concat().into();
                        let mut frame = response.slice(4..);
                        let header_version = api.response_header_version(version);
                        let header = ResponseHeader::decode(&mut frame, header_version)
                            .unwrap_or_else(|e| panic!("{api:?} v{version} header: {e}"));
                        assert_eq!(header.correlation_id, 7);
                        ResponseKind::decode(*api, &mut frame, version)
                            .unwrap_or_else(|e| panic!("{api:?} v{version} body: {e}"));
                        assert_eq!(frame.remaining(), 0, "{api:?} v{version}: trailing bytes");
                    }
                }
            })
            .expect("executor")
            .join()
            .expect("join");
    }
}
