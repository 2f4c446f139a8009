//! SyncGroup: followers are parked until the leader's assignment arrives;
//! every member then gets its own share.

use std::future::Future;
use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{group_code, str_bytes};
use crate::group::GroupError;
use crate::group::state::{Reply, SyncOutcome, SyncRequest};
use crate::shard::Shard;

/// Syncs now (in arrival order); the future answers when the group does.
pub fn start(
    shard: &Rc<Shard>,
    request: SyncGroupRequest,
    version: i16,
) -> impl Future<Output = SyncGroupResponse> + 'static {
    let group_id = request.group_id.0.to_string();
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|i| i.to_string()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.map(|t| t.to_string()),
        protocol_name: request.protocol_name.map(|n| n.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let reply = shard.groups.sync(shard, &group_id, sync);
    async move {
        let outcome = match reply {
            Reply::Now(outcome) => outcome,
            Reply::Later(receiver) => receiver
                .await
                .unwrap_or_else(|| SyncOutcome::error(GroupError::NotCoordinator)),
        };
        let v5 = |value: Option<String>| {
            if version >= 5 {
                value.map(str_bytes)
            } else {
                None
            }
        };
        SyncGroupResponse::default()
            .with_error_code(group_code(outcome.error.as_ref()))
            .with_protocol_type(v5(outcome.protocol_type))
            .with_protocol_name(v5(outcome.protocol_name))
            .with_assignment(outcome.assignment)
    }
}
