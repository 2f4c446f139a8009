//! What a benchmark run does: the workload, read from a TOML file
//! (`perf/workloads/*.toml`) and overridden by command-line flags.
//!
//! Every field has a default, so a workload file names only what it
//! changes. Units are in the names (`message_bytes`, `linger_ms`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BenchError;

/// The smallest message: the value carries the intended send time, the
/// producer's index and its sequence number (see `record::ValueStamp`).
pub const MESSAGE_BYTES_MIN: usize = super::record::STAMP_BYTES;

/// How producers pick a record's key, and with it the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum KeyDistribution {
    /// No key; records go round-robin over the partitions.
    None,
    /// A key drawn uniformly from `keys`; partition = key index % partitions.
    Uniform,
    /// Keys 0, 1, 2, ... `keys`-1 in turn; partition = key index % partitions.
    Sequential,
}

/// How consumers get their partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerMode {
    /// Each consumer is assigned partitions (partition i to consumer
    /// i % consumers); needs no consumer-group support in the broker.
    Assign,
    /// Each consumer set is a Kafka consumer group (JoinGroup/SyncGroup);
    /// needs the broker's consumer groups and `--driver rdkafka`.
    Group,
}

/// One benchmark workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// A name for reports and file names.
    pub name: String,
    /// Free text saying what the workload measures.
    pub description: String,
    pub topic: String,
    /// Partitions of the topic; it is created with this many if missing.
    pub partitions: i32,
    pub producers: usize,
    /// Consumers in each consumer set.
    pub consumers: usize,
    /// Independent consumer sets, each reading every partition (fan-out).
    pub consumer_sets: usize,
    pub consumer_mode: ConsumerMode,
    /// Value bytes of each message.
    pub message_bytes: usize,
    pub key_distribution: KeyDistribution,
    /// Distinct keys for `uniform` and `sequential`.
    pub keys: u64,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    /// none, gzip, snappy, lz4, zstd (the native driver sends `none` only).
    pub compression: String,
    pub linger_ms: u64,
    /// Largest record batch a producer builds, in bytes.
    pub batch_bytes: usize,
    /// Produce requests in flight per connection.
    pub max_in_flight: usize,
    /// Messages per second over all producers (open loop, latency measured
    /// from the intended send time); 0 means as fast as acknowledgements
    /// allow.
    pub rate_per_second: u64,
    /// Seconds produced but not measured, before `duration_seconds`.
    pub warmup_seconds: u64,
    pub duration_seconds: u64,
    /// The workload is about consumer groups (a marker for scripts and
    /// readers; what a run needs follows `consumer_mode`).
    pub requires_consumer_groups: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "adhoc".into(),
            description: String::new(),
            topic: "tidelog-bench".into(),
            partitions: 16,
            producers: 1,
            consumers: 1,
            consumer_sets: 1,
            consumer_mode: ConsumerMode::Assign,
            message_bytes: 1024,
            key_distribution: KeyDistribution::None,
            keys: 1000,
            acks: -1,
            compression: "none".into(),
            linger_ms: 1,
            batch_bytes: 256 * 1024,
            max_in_flight: 5,
            rate_per_second: 0,
            warmup_seconds: 2,
            duration_seconds: 10,
            requires_consumer_groups: false,
        }
    }
}

impl Workload {
    /// Reads a workload file; fields it does not name keep their defaults.
    pub fn from_file(path: &Path) -> Result<Workload, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
            op: "read workload",
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| BenchError::Workload {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Checks what a run cannot start with.
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |reason: String| Err(BenchError::Invalid(reason));
        if self.partitions < 1 {
            return invalid("partitions must be at least 1".into());
        }
        if self.producers < 1 {
            return invalid("producers must be at least 1".into());
        }
        if self.message_bytes < MESSAGE_BYTES_MIN {
            return invalid(format!(
                "message_bytes must be at least {MESSAGE_BYTES_MIN} (the send time, producer and sequence ride in the value)"
            ));
        }
        if ![-1, 0, 1].contains(&self.acks) {
            return invalid(format!("acks must be -1 (all), 0 or 1, not {}", self.acks));
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            return invalid(format!("unknown compression {:?}", self.compression));
        }
        if self.duration_seconds < 1 {
            return invalid("duration_seconds must be at least 1".into());
        }
        if self.max_in_flight < 1 {
            return invalid("max_in_flight must be at least 1".into());
        }
        if self.key_distribution != KeyDistribution::None && self.keys < 1 {
            return invalid("keys must be at least 1".into());
        }
        if self.consumer_sets > 0 && self.consumers < 1 && self.consumer_mode == ConsumerMode::Group
        {
            return invalid("consumer groups need at least one consumer".into());
        }
        Ok(())
    }

    /// Whether any consumer reads (end-to-end latency and verification).
    pub fn consumes(&self) -> bool {
        self.consumers > 0 && self.consumer_sets > 0
    }

    /// The consumer of `set`'s partition: partition i goes to consumer
    /// i % consumers.
    pub fn partitions_of_consumer(&self, consumer: usize) -> Vec<i32> {
        (0..self.partitions)
            .filter(|p| *p as usize % self.consumers == consumer)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_names_only_what_it_changes() {
        let workload: Workload =
            toml::from_str("name = \"x\"\npartitions = 3\nacks = 1\n").expect("parses");
        assert_eq!(workload.partitions, 3);
        assert_eq!(workload.acks, 1);
        assert_eq!(workload.message_bytes, Workload::default().message_bytes);
        workload.validate().expect("valid");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(toml::from_str::<Workload>("partitionz = 3").is_err());
        let workload = Workload {
            message_bytes: 3,
            ..Workload::default()
        };
        assert!(workload.validate().is_err());
        let workload = Workload {
            acks: 2,
            ..Workload::default()
        };
        assert!(workload.validate().is_err());
    }

    #[test]
    fn partitions_are_dealt_round_robin_to_consumers() {
        let workload = Workload {
            partitions: 5,
            consumers: 2,
            ..Workload::default()
        };
        assert_eq!(workload.partitions_of_consumer(0), vec![0, 2, 4]);
        assert_eq!(workload.partitions_of_consumer(1), vec![1, 3]);
    }
}
