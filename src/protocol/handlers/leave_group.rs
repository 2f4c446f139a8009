//! LeaveGroup: one member (v0-2) or several by member or instance id
//! (v3+); the group rebalances without them.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{group_code, str_bytes};
use crate::group::state::Leaving;
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let leaving: Vec<Leaving> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| Leaving {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
            })
            .collect()
    } else {
        vec![Leaving {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let result = shard
        .groups
        .leave(shard, request.group_id.0.as_str(), &leaving);
    match result {
        Err(error) => LeaveGroupResponse::default().with_error_code(group_code(Some(&error))),
        Ok(results) if version >= 3 => {
            let members = leaving
                .into_iter()
                .zip(results)
                .map(|(member, result)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member.member_id))
                        .with_group_instance_id(member.group_instance_id.map(str_bytes))
                        .with_error_code(group_code(result.err().as_ref()))
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        }
        Ok(results) => {
            let error = results.into_iter().find_map(|r| r.err());
            LeaveGroupResponse::default().with_error_code(group_code(error.as_ref()))
        }
    }
}
