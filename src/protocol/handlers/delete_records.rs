//! DeleteRecords: moves partitions' log start offsets forward (to the high
//! watermark for -1); records below are no longer served and whole
//! segments below are deleted.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{serving_log, storage_error_code};
use crate::shard::Shard;
use crate::types::Offset;

pub async fn handle(shard: &Rc<Shard>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let result = delete(shard, &name, partition.partition_index, partition.offset).await;
            let (low_watermark, code) = match result {
                Ok(start) => (start, 0),
                Err(code) => (-1, code.code()),
            };
            partitions.push(
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(partition.partition_index)
                    .with_low_watermark(low_watermark)
                    .with_error_code(code),
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

async fn delete(
    shard: &Shard,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<i64, ResponseError> {
    if topic == crate::group::OFFSETS_TOPIC {
        return Err(ResponseError::InvalidTopicException);
    }
    let log = serving_log(shard, topic, partition, -1)?;
    let target = if offset == -1 {
        log.high_watermark()
    } else {
        Offset(offset)
    };
    match log.delete_records_before(target).await {
        Ok(start) => {
            tracing::info!(topic, partition, log_start = start.0, "records deleted");
            Ok(start.0)
        }
        Err(error) => Err(storage_error_code(&error)),
    }
}
