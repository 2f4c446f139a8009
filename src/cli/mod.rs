//! Command-line tools that talk to a running broker (tidelog or any Kafka)
//! over the Kafka protocol, as Kafka's own scripts do.
//!
//! - `client`: a small blocking Kafka client (one request at a time).
//! - `group`: `tidelog group list|describe|delete|reset-offsets`.
//! - `topic`: `tidelog topic create|list|describe|alter|delete`.

pub mod client;
pub mod group;
pub mod topic;
