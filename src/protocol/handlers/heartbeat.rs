//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells
//! it to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::group_code;
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    let instance = request.group_instance_id.as_ref().map(|i| i.as_str());
    let result = shard.groups.heartbeat(
        shard,
        request.group_id.0.as_str(),
        request.member_id.as_str(),
        instance,
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(group_code(result.err().as_ref()))
}
