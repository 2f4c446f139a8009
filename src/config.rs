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
/// Kafka's `log.cleaner.backoff.ms` default: the cleaner looks for
/// compactable logs every 15 seconds.
pub const CLEANER_BACKOFF_MS_DEFAULT: u64 = 15_000;
/// Kafka's `log.cleaner.dedupe.buffer.size` default: 128 MiB for the
/// cleaners' key maps, split evenly between the shards.
pub const CLEANER_DEDUPE_BUFFER_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;
/// The smallest `log.cleaner.dedupe.buffer.size` accepted.
pub const CLEANER_DEDUPE_BUFFER_BYTES_MIN: u64 = 1024 * 1024;
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
    /// How often each shard's cleaner looks for logs to compact (Kafka's
    /// `log.cleaner.backoff.ms`).
    pub cleaner_backoff_ms: u64,
    /// Memory for the cleaners' key maps, all shards together (Kafka's
    /// `log.cleaner.dedupe.buffer.size`).
    pub cleaner_dedupe_buffer_bytes: u64,
    /// The cleaners' read and write I/O together, all shards together
    /// (Kafka's `log.cleaner.io.max.bytes.per.second`; infinite: no bound).
    pub cleaner_io_max_bytes_per_second: f64,
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

/// A broker config file (`tidelog serve --config FILE`): TOML whose keys are
/// Kafka's broker config names (`log.retention.ms = 86400000`, nested tables
/// and dotted keys alike) or `serve`'s own flag names (`cores = 4`). Each
/// becomes the flag it stands for, placed before the command line's own
/// flags, so a flag given on the command line wins.
pub fn config_file_flags(path: &std::path::Path) -> Result<Vec<String>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Parse {
            path: path.display().to_string(),
            reason: e.message().to_string(),
        })?;
    let mut flat = Vec::new();
    flatten("", &table, &mut flat);
    let mut flags = Vec::with_capacity(flat.len() * 2);
    for (key, value) in flat {
        let unknown = || ConfigFileError::Unknown {
            path: path.display().to_string(),
            key: key.clone(),
        };
        let (flag, value) = match FILE_KEYS.iter().find(|(name, _, _)| *name == key) {
            Some((_, flag, scale)) => {
                let value = match scale {
                    1 => value,
                    factor => value
                        .parse::<i64>()
                        .map(|v| v.saturating_mul(*factor).to_string())
                        .map_err(|_| ConfigFileError::Parse {
                            path: path.display().to_string(),
                            reason: format!("{key} must be a whole number"),
                        })?,
                };
                (*flag, value)
            }
            None => {
                // serve's own flag names, as in `tidelog serve --help`.
                let flag = FILE_KEYS
                    .iter()
                    .map(|(_, flag, _)| *flag)
                    .chain(OWN_FLAGS.iter().copied())
                    .find(|flag| flag.trim_start_matches("--") == key)
                    .ok_or_else(unknown)?;
                (flag, value)
            }
        };
        flags.push(flag.to_string());
        flags.push(value);
    }
    Ok(flags)
}

/// Why a config file cannot be used (one line naming the file).
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {reason}")]
    Parse { path: String, reason: String },
    #[error(
        "config file {path}: unknown setting {key} (use Kafka's broker config names or the flags of tidelog serve --help)"
    )]
    Unknown { path: String, key: String },
}

/// Kafka broker config names and the `serve` flag each sets; the number
/// scales the value into the flag's unit.
const FILE_KEYS: &[(&str, &str, i64)] = &[
    ("log.dirs", "--data-dir", 1),
    ("log.dir", "--data-dir", 1),
    ("num.partitions", "--default-partitions", 1),
    ("auto.create.topics.enable", "--auto-create-topics", 1),
    ("socket.request.max.bytes", "--socket-request-max-bytes", 1),
    ("log.segment.bytes", "--segment-bytes", 1),
    ("message.max.bytes", "--max-message-bytes", 1),
    ("log.retention.ms", "--log-retention-ms", 1),
    ("log.retention.minutes", "--log-retention-ms", 60_000),
    ("log.retention.hours", "--log-retention-ms", 3_600_000),
    ("log.retention.bytes", "--log-retention-bytes", 1),
    (
        "log.retention.check.interval.ms",
        "--log-retention-check-interval-ms",
        1,
    ),
    ("log.cleaner.backoff.ms", "--log-cleaner-backoff-ms", 1),
    (
        "log.cleaner.dedupe.buffer.size",
        "--log-cleaner-dedupe-buffer-size",
        1,
    ),
    (
        "log.cleaner.io.max.bytes.per.second",
        "--log-cleaner-io-max-bytes-per-second",
        1,
    ),
    ("log.cleanup.policy", "--log-cleanup-policy", 1),
    (
        "log.cleaner.min.cleanable.ratio",
        "--log-cleaner-min-cleanable-ratio",
        1,
    ),
    (
        "log.cleaner.delete.retention.ms",
        "--log-cleaner-delete-retention-ms",
        1,
    ),
    (
        "log.cleaner.min.compaction.lag.ms",
        "--log-cleaner-min-compaction-lag-ms",
        1,
    ),
    (
        "offsets.topic.num.partitions",
        "--offsets-topic-num-partitions",
        1,
    ),
    (
        "offsets.topic.segment.bytes",
        "--offsets-topic-segment-bytes",
        1,
    ),
    (
        "offsets.retention.minutes",
        "--offsets-retention-minutes",
        1,
    ),
    (
        "offsets.retention.check.interval.ms",
        "--offsets-retention-check-interval-ms",
        1,
    ),
    (
        "group.initial.rebalance.delay.ms",
        "--group-initial-rebalance-delay-ms",
        1,
    ),
    (
        "group.min.session.timeout.ms",
        "--group-min-session-timeout-ms",
        1,
    ),
    (
        "group.max.session.timeout.ms",
        "--group-max-session-timeout-ms",
        1,
    ),
    (
        "group.consumer.session.timeout.ms",
        "--group-consumer-session-timeout-ms",
        1,
    ),
    (
        "group.consumer.heartbeat.interval.ms",
        "--group-consumer-heartbeat-interval-ms",
        1,
    ),
];

/// `serve` flags with no Kafka name.
const OWN_FLAGS: &[&str] = &[
    "--cores",
    "--listen",
    "--advertise",
    "--tail-cache-bytes",
    "--log-level",
];

/// `a.b = 1` and `[a] b = 1` alike become ("a.b", "1").
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&name, inner, out),
            toml::Value::String(s) => out.push((name, s.clone())),
            other => out.push((name, other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_and_flag_names_become_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tidelog.toml");
        std::fs::write(
            &path,
            "cores = 2\nlisten = \"127.0.0.1:19092\"\nnum.partitions = 3\n\
             [log]\nretention.hours = 2\nsegment.bytes = 1048576\n",
        )
        .expect("write");
        let flags = config_file_flags(&path).expect("flags");
        let pairs: Vec<(String, String)> = flags
            .chunks(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        assert!(pairs.contains(&("--cores".into(), "2".into())));
        assert!(pairs.contains(&("--listen".into(), "127.0.0.1:19092".into())));
        assert!(pairs.contains(&("--default-partitions".into(), "3".into())));
        assert!(pairs.contains(&("--log-retention-ms".into(), "7200000".into())));
        assert!(pairs.contains(&("--segment-bytes".into(), "1048576".into())));
        std::fs::write(&path, "log.flush.nonsense = 1\n").expect("write");
        let error = config_file_flags(&path).expect_err("unknown key");
        assert!(error.to_string().contains("log.flush.nonsense"), "{error}");
        std::fs::write(&path, "cores = = 2\n").expect("write");
        assert!(matches!(
            config_file_flags(&path),
            Err(ConfigFileError::Parse { .. })
        ));
    }
}
