//! ListOffsets: earliest (-2), latest (-1, the high watermark), max
//! timestamp (-3), or the first offset at or after a timestamp.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{LEADER_EPOCH, serving_log, storage_error_code};
use crate::shard::Shard;

const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(
    shard: &Rc<Shard>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // leader_epoch exists from v4.
    let leader_epoch = if version >= 4 { LEADER_EPOCH } else { -1 };
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            let log = match serving_log(
                shard,
                &name,
                partition.partition_index,
                partition.current_leader_epoch,
            ) {
                Ok(log) => log,
                Err(code) => {
                    partitions.push(response.with_error_code(code.code()));
                    continue;
                }
            };
            let found = match partition.timestamp {
                EARLIEST_TIMESTAMP => Ok(Some((log.log_start_offset().0, -1))),
                LATEST_TIMESTAMP => Ok(Some((log.high_watermark().0, -1))),
                MAX_TIMESTAMP => Ok(log
                    .max_timestamp()
                    .map(|hit| (hit.offset.0, hit.timestamp_ms))),
                timestamp => log
                    .offset_for_timestamp(timestamp)
                    .await
                    .map(|hit| hit.map(|hit| (hit.offset.0, hit.timestamp_ms))),
            };
            let response = match found {
                Ok(Some((offset, timestamp))) => response
                    .with_offset(offset)
                    .with_timestamp(timestamp)
                    .with_leader_epoch(leader_epoch),
                Ok(None) => response,
                Err(error) => response.with_error_code(storage_error_code(&error).code()),
            };
            partitions.push(response);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
