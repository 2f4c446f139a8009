//! tidelog: an Apache Kafka wire-compatible event-streaming broker,
//! thread-per-core on io_uring. See `DESIGN.md` in the shared folder for the
//! architecture: one shard per core, each its own Kafka node, owning its
//! partitions' logs with no cross-core locking.
//!
//! The crate is laid out as the architecture is: `server` starts shards and
//! serves connections, `protocol` parses and answers Kafka requests,
//! `shard` holds one core's state, `storage` the partition logs,
//! `group` the consumer-group coordinator, `metadata` the cluster view
//! and its log, `notify` the shard-local wake-up signal they share, and
//! `bench` the load generator behind `tidelog bench`.

pub mod bench;
pub mod cli;
pub mod config;
pub mod group;
pub mod metadata;
pub mod notify;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod storage;
pub mod types;
