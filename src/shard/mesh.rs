//! Cross-shard control messages over glommio's channel mesh: metadata
//! changes sent to shard 0, and committed records broadcast from shard 0.
//! Control plane only; produce and fetch never cross shards.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

use glommio::channels::channel_mesh::Senders;
use glommio::channels::local_channel::{self, LocalSender};

use crate::metadata::MetadataRecord;

/// A Kafka error code with its message, as answered to an admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub code: i16,
    pub message: String,
}

impl AdminError {
    pub fn new(code: kafka_protocol::ResponseError, message: impl Into<String>) -> Self {
        AdminError {
            code: code.code(),
            message: message.into(),
        }
    }
}

/// A topic to create, as asked by CreateTopics or by auto-creation.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// Manual placement: the owning node of each partition, if given.
    pub assignment: Option<Vec<i32>>,
    pub validate_only: bool,
}

#[derive(Debug, Clone)]
pub enum ControlRequest {
    /// To shard 0: create a topic.
    CreateTopic(TopicSpec),
    /// To shard 0: grow a topic to `total_count` partitions.
    CreatePartitions {
        name: String,
        total_count: i32,
        /// Manual placement of the new partitions, if given.
        assignment: Option<Vec<i32>>,
        validate_only: bool,
    },
    /// To shard 0: delete a topic.
    DeleteTopic { name: String },
    /// To shard 0: replace a topic's config overrides.
    AlterTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    /// From shard 0: apply a record already in the metadata log.
    Apply(MetadataRecord),
}

#[derive(Debug, Clone)]
pub enum ControlReply {
    /// A metadata change's outcome; on success, the topic id.
    Changed(Result<u128, AdminError>),
    /// A record was applied (or failed to, with why).
    Applied(Result<(), String>),
}

#[derive(Debug)]
pub enum Envelope {
    Request {
        id: u64,
        from: usize,
        body: ControlRequest,
    },
    Reply {
        id: u64,
        body: ControlReply,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("shard {0} is not reachable over the mesh")]
    Unreachable(usize),
    #[error("shard {0} went away before replying")]
    NoReply(usize),
    #[error("this shard is stopping")]
    Stopping,
}

/// This shard's end of the mesh: senders to every other shard and the
/// replies it is waiting for.
pub struct Mesh {
    senders: Option<Senders<Envelope>>,
    pending: RefCell<HashMap<u64, LocalSender<ControlReply>>>,
    next_id: Cell<u64>,
}

impl Mesh {
    pub fn new(senders: Option<Senders<Envelope>>) -> Mesh {
        Mesh {
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        }
    }

    fn peer_id(&self) -> usize {
        self.senders.as_ref().map(|s| s.peer_id()).unwrap_or(0)
    }

    /// Sends `body` to shard `to` and waits for its reply.
    pub async fn call(&self, to: usize, body: ControlRequest) -> Result<ControlReply, MeshError> {
        let senders = self.senders.as_ref().ok_or(MeshError::Unreachable(to))?;
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (reply_sender, reply_receiver) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, reply_sender);
        let envelope = Envelope::Request {
            id,
            from: self.peer_id(),
            body,
        };
        if senders.send_to(to, envelope).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(MeshError::Unreachable(to));
        }
        reply_receiver.recv().await.ok_or(MeshError::NoReply(to))
    }

    /// Answers request `id` from shard `to`.
    pub async fn reply(&self, to: usize, id: u64, body: ControlReply) {
        let Some(senders) = self.senders.as_ref() else {
            return;
        };
        if senders
            .send_to(to, Envelope::Reply { id, body })
            .await
            .is_err()
        {
            tracing::warn!(to, id, "could not deliver a control reply");
        }
    }

    /// Hands a reply that arrived to the call waiting for it.
    pub fn complete(&self, id: u64, body: ControlReply) {
        let waiter = self.pending.borrow_mut().remove(&id);
        match waiter {
            Some(sender) => {
                if sender.try_send(body).is_err() {
                    tracing::warn!(id, "control reply arrived after its caller left");
                }
            }
            None => tracing::warn!(id, "control reply for no pending call"),
        }
    }
}
