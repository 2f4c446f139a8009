//! Broker configuration: the flags of `tidelog serve`, their defaults, and
//! the limits every queue and buffer is held to.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::group::GroupConfig;
use crate::storage::LogConfig;

/// Kafka's `socket.request.max.bytes` default: 100 MiB.
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;
/// Requests one connection may have in flight (read, not yet answered)
/// before the shard stops reading from that socket.
pub const MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION: usize = 128;
/// Bytes of recently produced batches kept in memory per shard for fetches
/// at the head of the log.
pub const TAIL_CACHE_BYTES_PER_SHARD_DEFAULT: usize = 256 * 1024 * 1024;
/// Bytes a shard may hold appended but not yet flushed; past this its
/// connections stop reading requests until a flush round frees room.
pub const STAGED_BYTES_PER_SHARD_MAX: usize = 256 * 1024 * 1024;
/// Capacity of each cross-shard control channel.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Memory glommio reserves per shard for registered io_uring buffers.
pub const IO_MEMORY_BYTES_PER_SHARD: usize = 2 * 1024 * 1024;
/// Kafka's `log.retention.check.interval.ms` default: 5 minutes.
pub const RETENTION_CHECK_INTERVAL_MS_DEFAULT: u64 = 300_000;
/// The most partitions one topic may have (a bound on metadata size).
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// Everything a shard needs to know about how it was started.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Kafka cluster id, made once per data directory and kept in it.
    pub cluster_id: String,
    pub shard_count: usize,
    /// CPU each shard is pinned to, by shard index.
    pub cpus: Vec<usize>,
    pub listen_ip: IpAddr,
    /// Shard `i` listens on `base_port + i`.
    pub base_port: u16,
    /// Host name advertised to clients in Metadata.
    pub advertised_host: String,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub socket_request_max_bytes: usize,
    pub tail_cache_bytes_per_shard: usize,
    /// Topic defaults (`segment.bytes`, `max.message.bytes`, ...).
    pub log: LogConfig,
    /// Consumer groups and the offsets topic.
    pub group: GroupConfig,
    /// How often each shard applies retention to its logs (Kafka's
    /// `log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
}

impl BrokerConfig {
    pub fn listen_addr(&self, shard_index: usize) -> SocketAddr {
        SocketAddr::new(self.listen_ip, self.shard_port(shard_index))
    }

    pub fn shard_port(&self, shard_index: usize) -> u16 {
        // Validated at start-up: base_port + shard_count - 1 fits in a u16.
        self.base_port + shard_index as u16
    }
}
