//! A small blocking Kafka client for set-up and tear-down: which API
//! versions the broker speaks, where a topic's partitions live, creating
//! the topic, the partitions' latest offsets and the broker's configs.
//! The load itself goes through a driver (`native` or `librdkafka`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::BenchError;

/// How long one admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new topic may take to show every partition with a leader.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response frame accepted.
const FRAME_BYTES_MAX: usize = 256 << 20;
const CLIENT_ID: &str = "tidelog-bench";
/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Where a topic's partitions are led: index = partition.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub leaders: Vec<SocketAddr>,
}

/// The API versions this client uses with the broker, picked from what
/// both sides speak.
#[derive(Debug, Clone, Copy)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub list_offsets: i16,
    pub create_topics: i16,
    pub describe_configs: Option<i16>,
    /// The broker answers JoinGroup (it has consumer groups).
    pub consumer_groups: bool,
}

/// One blocking connection to a broker.
pub struct Admin {
    stream: TcpStream,
    peer: String,
    correlation_id: i32,
    pub versions: Versions,
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Resolves `HOST:PORT`.
pub fn resolve(address: &str) -> Result<SocketAddr, BenchError> {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| BenchError::Invalid(format!("{address:?} is not a reachable HOST:PORT")))
}

impl Admin {
    /// Connects and negotiates API versions.
    pub fn connect(address: &str) -> Result<Admin, BenchError> {
        let addr = resolve(address)?;
        let io = |source| BenchError::Io {
            op: "connect",
            path: address.to_string(),
            source,
        };
        let stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(io)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(io)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut admin = Admin {
            stream,
            peer: address.to_string(),
            correlation_id: 0,
            versions: Versions {
                produce: 0,
                fetch: 0,
                metadata: 0,
                list_offsets: 0,
                create_topics: 0,
                describe_configs: None,
                consumer_groups: false,
            },
        };
        // v0 of ApiVersions: every broker answers it.
        let answer: ApiVersionsResponse =
            admin.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        let ranges: HashMap<i16, (i16, i16)> = answer
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        let pick = |api: ApiKey, preferred: i16| -> Result<i16, BenchError> {
            let (min, max) = ranges
                .get(&(api as i16))
                .copied()
                .ok_or(BenchError::Unsupported(format!(
                    "the broker has no {api:?} API"
                )))?;
            let version = preferred.min(max);
            if version < min {
                return Err(BenchError::Unsupported(format!(
                    "{api:?}: the broker speaks v{min}-v{max}, this client at most v{preferred}"
                )));
            }
            Ok(version)
        };
        admin.versions = Versions {
            produce: pick(ApiKey::Produce, 9)?,
            // v11, not v12: some brokers (Tansu 0.6) put tags in v12 answers
            // that v12 does not define, and v11 carries everything we read.
            fetch: pick(ApiKey::Fetch, 11)?,
            metadata: pick(ApiKey::Metadata, 9)?,
            list_offsets: pick(ApiKey::ListOffsets, 5)?,
            create_topics: pick(ApiKey::CreateTopics, 5)?,
            describe_configs: pick(ApiKey::DescribeConfigs, 3).ok(),
            consumer_groups: ranges.contains_key(&(ApiKey::JoinGroup as i16)),
        };
        Ok(admin)
    }

    /// Sends one request and reads its response.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, BenchError> {
        self.correlation_id += 1;
        let frame = encode_request(api, version, self.correlation_id, request)?;
        let io = |op, source| BenchError::Io {
            op,
            path: self.peer.clone(),
            source,
        };
        self.stream
            .write_all(&frame)
            .map_err(|e| io("write request", e))?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| io("read response", e))?;
        let size = usize::try_from(i32::from_be_bytes(size)).unwrap_or(usize::MAX);
        if size > FRAME_BYTES_MAX {
            return Err(BenchError::Protocol(format!(
                "{api:?} response of {size} bytes"
            )));
        }
        let mut body = vec![0u8; size];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| io("read response", e))?;
        decode_response(api, version, self.correlation_id, Bytes::from(body))
    }

    /// Where `topic`'s partitions are led; `None` if it does not exist.
    pub fn topic_layout(&mut self, topic: &str) -> Result<Option<TopicLayout>, BenchError> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(str_bytes(topic)))),
            ]));
        let version = self.versions.metadata;
        let answer: MetadataResponse = self.call(ApiKey::Metadata, version, &request)?;
        let brokers: HashMap<i32, String> = answer
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let Some(found) = answer.topics.first() else {
            return Ok(None);
        };
        if found.error_code != 0 || found.partitions.is_empty() {
            return Ok(None);
        }
        let mut leaders = BTreeMap::new();
        for partition in &found.partitions {
            let Some(address) = brokers.get(&partition.leader_id.0) else {
                return Ok(None);
            };
            leaders.insert(partition.partition_index, resolve(address)?);
        }
        let leaders: Vec<SocketAddr> = leaders.into_values().collect();
        Ok(Some(TopicLayout { leaders }))
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1
    /// where the broker allows choosing; -1, the broker's default, is sent
    /// when it needs more).
    pub fn create_topic(&mut self, topic: &str, partitions: i32) -> Result<(), BenchError> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1),
            ]);
        let version = self.versions.create_topics;
        let answer: CreateTopicsResponse = self.call(ApiKey::CreateTopics, version, &request)?;
        let code = answer.topics.first().map_or(-1, |t| t.error_code);
        // 36: TOPIC_ALREADY_EXISTS (another run made it meanwhile).
        if code != 0 && code != 36 {
            return Err(BenchError::Protocol(format!(
                "CreateTopics {topic} ({partitions} partitions): error code {code}"
            )));
        }
        Ok(())
    }

    /// The topic's layout, creating it first when it is missing; waits
    /// until every partition has a leader.
    pub fn ensure_topic(
        &mut self,
        topic: &str,
        partitions: i32,
    ) -> Result<TopicLayout, BenchError> {
        match self.topic_layout(topic)? {
            None => self.create_topic(topic, partitions)?,
            Some(layout) if layout.leaders.len() as i32 != partitions => {
                return Err(BenchError::Invalid(format!(
                    "topic {topic} exists with {} partitions, the workload wants {partitions}: pick another --topic",
                    layout.leaders.len()
                )));
            }
            Some(layout) => return Ok(layout),
        }
        let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
        loop {
            if let Some(layout) = self.topic_layout(topic)?
                && layout.leaders.len() as i32 == partitions
            {
                return Ok(layout);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Protocol(format!(
                    "topic {topic} did not show {partitions} partitions with leaders within {TOPIC_READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The broker's own configs (DescribeConfigs of broker `node`), or an
    /// empty list where it does not answer that.
    pub fn broker_configs(&mut self, node: i32) -> Vec<(String, String)> {
        self.describe_configs(RESOURCE_BROKER, &node.to_string())
    }

    /// A topic's configs, or an empty list where the broker does not say.
    pub fn topic_configs(&mut self, topic: &str) -> Vec<(String, String)> {
        self.describe_configs(RESOURCE_TOPIC, topic)
    }

    fn describe_configs(&mut self, resource_type: i8, name: &str) -> Vec<(String, String)> {
        let Some(version) = self.versions.describe_configs else {
            return Vec::new();
        };
        let request = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(str_bytes(name))
                .with_configuration_keys(None),
        ]);
        let Ok(answer) =
            self.call::<_, DescribeConfigsResponse>(ApiKey::DescribeConfigs, version, &request)
        else {
            return Vec::new();
        };
        answer
            .results
            .iter()
            .filter(|r| r.error_code == 0)
            .flat_map(|r| r.configs.iter())
            .map(|c| {
                (
                    c.name.to_string(),
                    c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// Every partition's latest offset (ListOffsets to each leader).
pub fn latest_offsets(
    topic: &str,
    layout: &TopicLayout,
    version: i16,
) -> Result<Vec<i64>, BenchError> {
    let mut by_leader: BTreeMap<SocketAddr, Vec<i32>> = BTreeMap::new();
    for (partition, leader) in layout.leaders.iter().enumerate() {
        by_leader.entry(*leader).or_default().push(partition as i32);
    }
    let mut offsets = vec![0i64; layout.leaders.len()];
    for (leader, partitions) in by_leader {
        let mut admin = Admin::connect(&leader.to_string())?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|p| {
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_partition_index(*p)
                                    .with_timestamp(-1)
                            })
                            .collect(),
                    ),
            ]);
        let answer: ListOffsetsResponse = admin.call(ApiKey::ListOffsets, version, &request)?;
        for topic in &answer.topics {
            for partition in &topic.partitions {
                if partition.error_code != 0 {
                    return Err(BenchError::Protocol(format!(
                        "ListOffsets partition {}: error code {}",
                        partition.partition_index, partition.error_code
                    )));
                }
                if let Some(slot) = usize::try_from(partition.partition_index)
                    .ok()
                    .and_then(|p| offsets.get_mut(p))
                {
                    *slot = partition.offset;
                }
            }
        }
    }
    Ok(offsets)
}

/// A request frame: size, header, body.
pub fn encode_request<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Result<BytesMut, BenchError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    let encode_error = |e: String| BenchError::Protocol(format!("encode {api:?}: {e}"));
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(&mut buf, api.request_header_version(version))
        .map_err(|e| encode_error(e.to_string()))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| encode_error(e.to_string()))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}

/// Decodes a response frame's body (the size already taken off).
pub fn decode_response<Resp: Decodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    mut frame: Bytes,
) -> Result<Resp, BenchError> {
    let decode_error = |e: String| BenchError::Protocol(format!("decode {api:?} v{version}: {e}"));
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(|e| decode_error(e.to_string()))?;
    if header.correlation_id != correlation_id {
        return Err(BenchError::Protocol(format!(
            "{api:?}: correlation id {} answered, {correlation_id} expected",
            header.correlation_id
        )));
    }
    let response = Resp::decode(&mut frame, version).map_err(|e| decode_error(e.to_string()))?;
    if frame.has_remaining() {
        return Err(decode_error(format!(
            "{} trailing bytes",
            frame.remaining()
        )));
    }
    Ok(response)
}
