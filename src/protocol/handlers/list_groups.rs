//! ListGroups: the groups this node (shard) coordinates, filtered by state
//! (v4+) and type (v5+). Clients ask every node and merge.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{group_code, str_bytes};
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let (error, listings) = shard.groups.list();
    let wanted_state = |state: &str| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|s| s.as_str().eq_ignore_ascii_case(state))
    };
    let wanted_type = |group_type: &str| {
        request.types_filter.is_empty()
            || request
                .types_filter
                .iter()
                .any(|t| t.as_str().eq_ignore_ascii_case(group_type))
    };
    let groups = listings
        .into_iter()
        .filter(|g| wanted_type(g.group_type) && wanted_state(g.state))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id)))
                .with_protocol_type(str_bytes(g.protocol_type))
                .with_group_state(str_bytes(if version >= 4 { g.state } else { "" }))
                .with_group_type(str_bytes(if version >= 5 { g.group_type } else { "" }))
        })
        .collect();
    ListGroupsResponse::default()
        .with_error_code(group_code(error.as_ref()))
        .with_groups(groups)
}
