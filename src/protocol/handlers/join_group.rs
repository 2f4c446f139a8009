//! JoinGroup: parked until the group's join phase completes (or answered at
//! once: MEMBER_ID_REQUIRED, a follower's rejoin into a settled
//! generation, errors).

use std::future::Future;
use std::net::IpAddr;
use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{group_code, str_bytes};
use crate::group::GroupError;
use crate::group::state::{JoinOutcome, JoinRequest, Reply};
use crate::shard::Shard;

/// Joins now (in arrival order); the future answers when the group does.
pub fn start(
    shard: &Rc<Shard>,
    request: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_ip: IpAddr,
) -> impl Future<Output = JoinGroupResponse> + 'static {
    let group_id = request.group_id.0.to_string();
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        // KIP-394 applies to dynamic members only.
        require_known_member_id: version >= 4 && request.group_instance_id.is_none(),
        client_id,
        client_host: format!("/{client_ip}"),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout stands for it.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
    };
    let member_id = join.member_id.clone();
    let reply = shard.groups.join(shard, &group_id, join);
    async move {
        let outcome = match reply {
            Reply::Now(outcome) => outcome,
            Reply::Later(receiver) => receiver
                .await
                .unwrap_or_else(|| JoinOutcome::error(&member_id, GroupError::NotCoordinator)),
        };
        response(outcome, version)
    }
}

fn response(outcome: JoinOutcome, version: i16) -> JoinGroupResponse {
    let members = outcome
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(m.member_id))
                .with_group_instance_id(if version >= 5 {
                    m.group_instance_id.map(str_bytes)
                } else {
                    None
                })
                .with_metadata(m.metadata)
        })
        .collect();
    let v7 = |value: Option<String>| {
        if version >= 7 {
            value.map(str_bytes)
        } else {
            None
        }
    };
    JoinGroupResponse::default()
        .with_error_code(group_code(outcome.error.as_ref()))
        .with_generation_id(outcome.generation_id)
        .with_protocol_type(v7(outcome.protocol_type))
        .with_protocol_name(if version >= 7 {
            outcome.protocol_name.map(str_bytes)
        } else {
            // Before v7 the name is not nullable.
            Some(str_bytes(outcome.protocol_name.unwrap_or_default()))
        })
        .with_leader(str_bytes(outcome.leader))
        .with_member_id(str_bytes(outcome.member_id))
        .with_members(members)
}
