//! Cluster metadata: the topics, their partitions and where each partition
//! lives. Shard 0 owns the append-only metadata log (like KRaft's
//! `__cluster_metadata`); every shard keeps its own read-only copy of the
//! resulting [`ClusterView`], updated by messages from shard 0.

pub mod cluster;
pub mod log;
pub mod placement;
pub mod topic_config;

pub use cluster::{ClusterView, MetadataRecord, TopicInfo};
pub use log::{MetadataError, MetadataLog};
