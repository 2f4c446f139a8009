//! DescribeGroups: state, protocol and members of groups this node
//! coordinates (NOT_COORDINATOR for the others); an unknown group is
//! described as Dead with no error, as Kafka does before v6.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{group_error_code, str_bytes};
use crate::shard::Shard;

/// Every group operation (Kafka's bit field) is allowed: there is no
/// authorizer.
const ALL_GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 4) | (1 << 6);

pub fn handle(
    shard: &Rc<Shard>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            let described = if version >= 3 && request.include_authorized_operations {
                described.with_authorized_operations(ALL_GROUP_OPERATIONS)
            } else {
                described
            };
            match shard.groups.describe(shard, group_id.0.as_str()) {
                Err(error) => described.with_error_code(group_error_code(&error).code()),
                Ok(summary) => {
                    let members = summary
                        .members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(if version >= 4 {
                                    m.group_instance_id.map(str_bytes)
                                } else {
                                    None
                                })
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect();
                    described
                        .with_group_state(str_bytes(summary.state))
                        .with_protocol_type(str_bytes(summary.protocol_type))
                        .with_protocol_data(str_bytes(summary.protocol))
                        .with_members(members)
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
