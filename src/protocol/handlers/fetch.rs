//! Fetch: whole record batches below the high watermark, from the tail
//! cache or the segment files, with Kafka's long poll: answer as soon as
//! `min_bytes` are available or any partition has an error, else when
//! `max_wait_ms` has passed.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::future;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::{serving_log, storage_error_code};
use crate::shard::Shard;
use crate::types::Offset;

pub async fn handle(shard: &Rc<Shard>, request: FetchRequest, version: i16) -> FetchResponse {
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    loop {
        // Register interest before reading, so a flush that lands while we
        // read still wakes us.
        let flushed = shard.commit.round_done().notified();
        let (response, bytes, any_error) = read_once(shard, &request, version).await;
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || any_error || now >= deadline || shard.is_shutting_down() {
            return response;
        }
        let shutdown = shard.shutdown.notified();
        future::or(
            future::or(flushed, shutdown),
            glommio::timer::sleep(deadline - now),
        )
        .await;
    }
}

/// One pass over every requested partition.
async fn read_once(
    shard: &Rc<Shard>,
    request: &FetchRequest,
    version: i16,
) -> (FetchResponse, usize, bool) {
    // log_start_offset exists from v5.
    let log_start = |offset: Offset| if version >= 5 { offset.0 } else { -1 };
    let mut remaining = usize::try_from(request.max_bytes).unwrap_or(0);
    let mut total_bytes = 0usize;
    let mut any_error = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let response = PartitionData::default()
                .with_partition_index(partition.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let log = match serving_log(
                shard,
                &name,
                partition.partition,
                partition.current_leader_epoch,
            ) {
                Ok(log) => log,
                Err(code) => {
                    any_error = true;
                    partitions.push(response.with_error_code(code.code()));
                    continue;
                }
            };
            let partition_max = usize::try_from(partition.partition_max_bytes).unwrap_or(0);
            let budget = partition_max.min(remaining);
            let high_watermark = log.high_watermark();
            let response = response
                .with_high_watermark(high_watermark.0)
                .with_last_stable_offset(high_watermark.0)
                .with_log_start_offset(log_start(log.log_start_offset()))
                .with_aborted_transactions(Some(Vec::new()));
            if budget == 0 {
                partitions.push(response.with_records(Some(Bytes::new())));
                continue;
            }
            match log.read(Offset(partition.fetch_offset), budget).await {
                Ok(outcome) => {
                    let records = concat(outcome.batches);
                    remaining = remaining.saturating_sub(records.len());
                    total_bytes += records.len();
                    partitions.push(
                        response
                            .with_high_watermark(outcome.high_watermark.0)
                            .with_last_stable_offset(outcome.high_watermark.0)
                            .with_log_start_offset(log_start(outcome.log_start_offset))
                            .with_records(Some(records)),
                    );
                }
                Err(error) => {
                    any_error = true;
                    let code = storage_error_code(&error);
                    if code != ResponseError::OffsetOutOfRange {
                        tracing::warn!(topic = %name, partition = partition.partition, %error, "fetch failed");
                    }
                    partitions.push(response.with_error_code(code.code()));
                }
            }
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total_bytes,
        any_error,
    )
}

fn concat(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let total = batches.iter().map(Bytes::len).sum();
            let mut buf = BytesMut::with_capacity(total);
            for batch in &batches {
                buf.extend_from_slice(batch);
            }
            buf.freeze()
        }
    }
}
