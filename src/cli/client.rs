//! A blocking Kafka client for the command-line tools: one connection per
//! node, one request at a time, fixed API versions that Kafka 2.4+ and
//! tidelog both serve.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Retries of a coordinator that is still loading or being created.
const COORDINATOR_RETRIES: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve {address}: {source}")]
    Resolve {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {address}: {source} (is the broker running?)")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("{api:?} to {address} failed: {source}")]
    Io {
        api: ApiKey,
        address: String,
        source: std::io::Error,
    },
    #[error("{api:?} to {address}: malformed response: {reason}")]
    Malformed {
        api: ApiKey,
        address: String,
        reason: String,
    },
    #[error("{what}: Kafka error code {code}")]
    Kafka { what: String, code: i16 },
    #[error("unknown broker id {0} in the cluster metadata")]
    UnknownNode(i32),
}

pub struct Client {
    bootstrap: String,
    client_id: String,
    connections: HashMap<String, TcpStream>,
    correlation_id: i32,
}

impl Client {
    pub fn new(bootstrap: &str) -> Client {
        Client {
            bootstrap: bootstrap.to_string(),
            client_id: "tidelog-cli".to_string(),
            connections: HashMap::new(),
            correlation_id: 0,
        }
    }

    fn connection(&mut self, address: &str) -> Result<&mut TcpStream, ClientError> {
        match self.connections.entry(address.to_string()) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => Ok(entry.insert(open(address)?)),
        }
    }

    /// Sends `request` to `address` and decodes the answer.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        address: &str,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let malformed = |reason: String| ClientError::Malformed {
            api,
            address: address.to_string(),
            reason,
        };
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())))
            .encode(&mut body, api.request_header_version(version))
            .map_err(|e| malformed(format!("encoding the request header: {e}")))?;
        request
            .encode(&mut body, version)
            .map_err(|e| malformed(format!("encoding the request: {e}")))?;
        let io = |source: std::io::Error| ClientError::Io {
            api,
            address: address.to_string(),
            source,
        };
        let stream = self.connection(address)?;
        let size = u32::try_from(body.len()).map_err(|_| malformed("request too large".into()))?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&size.to_be_bytes());
        frame.extend_from_slice(&body);
        let result = (|| {
            stream.write_all(&frame)?;
            let mut size = [0u8; 4];
            stream.read_exact(&mut size)?;
            let size = usize::try_from(i32::from_be_bytes(size).max(0)).unwrap_or(0);
            if size > MAX_RESPONSE_BYTES {
                return Err(std::io::Error::other(format!(
                    "response of {size} bytes is too large"
                )));
            }
            let mut response = vec![0u8; size];
            stream.read_exact(&mut response)?;
            Ok(response)
        })();
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                self.connections.remove(address);
                return Err(io(error));
            }
        };
        let mut response = Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, api.response_header_version(version))
            .map_err(|e| malformed(format!("response header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(malformed(format!(
                "correlation id {} instead of {correlation_id}",
                header.correlation_id
            )));
        }
        let decoded =
            Resp::decode(&mut response, version).map_err(|e| malformed(format!("{e}")))?;
        if response.has_remaining() {
            return Err(malformed(format!(
                "{} bytes after the response",
                response.remaining()
            )));
        }
        Ok(decoded)
    }

    /// Metadata for `topics` (all topics when `None`), from the bootstrap
    /// server.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse, ClientError> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| {
                        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(kafka_protocol::messages::TopicName(
                                StrBytes::from_string(name.clone()),
                            )))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let bootstrap = self.bootstrap.clone();
        // v10: the first with topic ids (Kafka 2.8).
        self.call(&bootstrap, ApiKey::Metadata, 10, &request)
    }

    /// Every broker's address, by node id.
    pub fn brokers(&mut self) -> Result<Vec<(i32, String)>, ClientError> {
        let metadata = self.metadata(Some(&[]))?;
        Ok(metadata
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect())
    }

    /// The address of `group`'s coordinator (retried while it loads).
    pub fn coordinator(&mut self, group: &str) -> Result<String, ClientError> {
        let bootstrap = self.bootstrap.clone();
        let request =
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
        for _ in 0..COORDINATOR_RETRIES {
            let response: FindCoordinatorResponse =
                self.call(&bootstrap, ApiKey::FindCoordinator, 3, &request)?;
            match response.error_code {
                0 => return Ok(format!("{}:{}", response.host.as_str(), response.port)),
                // COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS
                14 | 15 => std::thread::sleep(Duration::from_millis(100)),
                code => {
                    return Err(ClientError::Kafka {
                        what: format!("finding the coordinator of group {group}"),
                        code,
                    });
                }
            }
        }
        Err(ClientError::Kafka {
            what: format!("finding the coordinator of group {group}"),
            code: 15,
        })
    }

    /// The address of node `id`.
    pub fn node_address(&mut self, id: i32) -> Result<String, ClientError> {
        self.brokers()?
            .into_iter()
            .find(|(node, _)| *node == id)
            .map(|(_, address)| address)
            .ok_or(ClientError::UnknownNode(id))
    }
}

/// Connects to `address` with the request timeout on reads and writes.
fn open(address: &str) -> Result<TcpStream, ClientError> {
    let resolved: Vec<_> = address
        .to_socket_addrs()
        .map_err(|source| ClientError::Resolve {
            address: address.to_string(),
            source,
        })?
        .collect();
    let mut last = None;
    for candidate in resolved {
        match TcpStream::connect_timeout(&candidate, REQUEST_TIMEOUT) {
            Ok(stream) => {
                let timeouts = stream
                    .set_read_timeout(Some(REQUEST_TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)));
                return match timeouts {
                    Ok(()) => Ok(stream),
                    Err(source) => Err(ClientError::Connect {
                        address: address.to_string(),
                        source,
                    }),
                };
            }
            Err(error) => last = Some(error),
        }
    }
    Err(ClientError::Connect {
        address: address.to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("the name has no address")),
    })
}
