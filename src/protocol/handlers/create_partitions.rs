//! CreatePartitions: grow a topic; new partitions are placed like new
//! topics' (fewest partitions first) unless an assignment is given.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::str_bytes;
use crate::shard::Shard;
use crate::shard::mesh::ControlRequest;

pub async fn handle(
    shard: &Rc<Shard>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let assignment = match topic.assignments {
            None => None,
            Some(assignments) => {
                let single: Option<Vec<i32>> = assignments
                    .iter()
                    .map(|a| (a.broker_ids.len() == 1).then(|| a.broker_ids[0].0))
                    .collect();
                match single {
                    Some(nodes) => Some(nodes),
                    None => {
                        results.push(
                            result
                                .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                                .with_error_message(Some(str_bytes(
                                    "Each new partition needs exactly one broker: tidelog keeps one copy.",
                                ))),
                        );
                        continue;
                    }
                }
            }
        };
        let change = ControlRequest::CreatePartitions {
            name: topic.name.0.to_string(),
            total_count: topic.count,
            assignment,
            validate_only: request.validate_only,
        };
        let result = match shard.change_metadata(change).await {
            Ok(_) => result,
            Err(e) => result
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(e.message))),
        };
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}
