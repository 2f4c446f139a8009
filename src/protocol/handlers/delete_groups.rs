//! DeleteGroups: empty groups and their committed offsets, answered once
//! the tombstones are durable.

use std::future::Future;
use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{group_error_code, wait_group_durable};
use crate::shard::Shard;

/// Deletes now (in arrival order); the future answers once durable.
pub fn start(
    shard: &Rc<Shard>,
    request: DeleteGroupsRequest,
) -> impl Future<Output = DeleteGroupsResponse> + 'static {
    let outcomes: Vec<_> = request
        .groups_names
        .into_iter()
        .map(|group_id| {
            let outcome = shard.groups.delete(shard, group_id.0.as_str());
            (group_id, outcome)
        })
        .collect();
    let shard = shard.clone();
    async move {
        let mut results = Vec::with_capacity(outcomes.len());
        for (group_id, outcome) in outcomes {
            let code = match outcome {
                Err(error) => group_error_code(&error).code(),
                Ok(durable) => wait_group_durable(&shard, durable)
                    .await
                    .map_or(0, |code| code.code()),
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(code),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }
}
