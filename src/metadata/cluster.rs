//! The cluster view: every topic, its id, its partitions' owning shards and
//! its config overrides, rebuilt by replaying [`MetadataRecord`]s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::ShardId;

/// One change to cluster metadata, as stored in the metadata log and sent
/// from shard 0 to every other shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    TopicCreated {
        name: String,
        /// The topic id, a UUID (stored as its hyphenated string: JSON
        /// numbers cannot carry 128 bits through serde's tagged enums).
        #[serde(with = "uuid_string")]
        topic_id: u128,
        /// The owning shard of each partition, by partition index.
        partition_shards: Vec<u16>,
        configs: BTreeMap<String, String>,
    },
    PartitionsAdded {
        name: String,
        /// Owning shards of the new partitions, in partition order.
        partition_shards: Vec<u16>,
    },
    TopicDeleted {
        name: String,
    },
    /// A topic's config overrides, replaced whole (AlterConfigs,
    /// IncrementalAlterConfigs).
    TopicConfigsChanged {
        name: String,
        configs: BTreeMap<String, String>,
    },
}

mod uuid_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&uuid::Uuid::from_u128(*id).hyphenated().to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        uuid::Uuid::parse_str(&text)
            .map(|id| id.as_u128())
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: u128,
    /// `partition_shards[p]` owns partition `p`.
    pub partition_shards: Vec<ShardId>,
    /// Explicit per-topic overrides; anything absent takes the broker default.
    pub configs: BTreeMap<String, String>,
}

impl TopicInfo {
    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partition_shards.len()).unwrap_or(i32::MAX)
    }

    pub fn owner(&self, partition: i32) -> Option<ShardId> {
        let index = usize::try_from(partition).ok()?;
        self.partition_shards.get(index).copied()
    }
}

/// Every topic in the cluster. Cheap enough to clone for a new shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    topics: BTreeMap<String, TopicInfo>,
}

impl ClusterView {
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicInfo> {
        self.topics.values()
    }

    pub fn topic_by_id(&self, topic_id: u128) -> Option<&TopicInfo> {
        self.topics.values().find(|t| t.topic_id == topic_id)
    }

    /// How many partitions each of `shard_count` shards owns.
    pub fn partitions_per_shard(&self, shard_count: usize) -> Vec<usize> {
        let mut counts = vec![0usize; shard_count];
        for topic in self.topics.values() {
            for shard in &topic.partition_shards {
                if let Some(count) = counts.get_mut(shard.index()) {
                    *count += 1;
                }
            }
        }
        counts
    }

    /// Applies one record. Records were validated before they were written,
    /// so a record that does not fit (replayed from an old log) is ignored
    /// with a warning rather than failing start-up.
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::TopicCreated {
                name,
                topic_id,
                partition_shards,
                configs,
            } => {
                let info = TopicInfo {
                    name: name.clone(),
                    topic_id: *topic_id,
                    partition_shards: partition_shards.iter().map(|s| ShardId(*s)).collect(),
                    configs: configs.clone(),
                };
                self.topics.insert(name.clone(), info);
            }
            MetadataRecord::PartitionsAdded {
                name,
                partition_shards,
            } => match self.topics.get_mut(name) {
                Some(topic) => topic
                    .partition_shards
                    .extend(partition_shards.iter().map(|s| ShardId(*s))),
                None => tracing::warn!(topic = %name, "partitions added to an unknown topic"),
            },
            MetadataRecord::TopicDeleted { name } => {
                self.topics.remove(name);
            }
            MetadataRecord::TopicConfigsChanged { name, configs } => {
                match self.topics.get_mut(name) {
                    Some(topic) => topic.configs = configs.clone(),
                    None => tracing::warn!(topic = %name, "configs of an unknown topic changed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_builds_the_view() {
        let mut view = ClusterView::default();
        view.apply(&MetadataRecord::TopicCreated {
            name: "a".into(),
            topic_id: 7,
            partition_shards: vec![0, 1],
            configs: BTreeMap::new(),
        });
        view.apply(&MetadataRecord::PartitionsAdded {
            name: "a".into(),
            partition_shards: vec![1],
        });
        assert_eq!(view.partitions_per_shard(2), vec![1, 2]);
        assert_eq!(view.topic("a").map(|t| t.partition_count()), Some(3));
        view.apply(&MetadataRecord::TopicDeleted { name: "a".into() });
        assert!(view.topic("a").is_none());
    }
}
