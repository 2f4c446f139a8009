//! Fetch: whole record batches below the high watermark, from the tail
//! cache or the segment files, with Kafka's long poll: answer as soon as
//! `min_bytes` are available or any partition has an error, else when
//! `max_wait_ms` has passed. The batches are not copied on the way out:
//! the response references them (see `protocol::fetch_encode`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::FetchRequest;

use super::{serving_log, storage_error_code};
use crate::protocol::fetch_encode::{FetchPartition, FetchTopic};
use crate::shard::Shard;
use crate::types::Offset;

pub async fn handle(shard: &Rc<Shard>, request: FetchRequest) -> Vec<FetchTopic> {
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    loop {
        // Register interest before reading, so a flush that lands while we
        // read still wakes us.
        let flushed = shard.commit.round_done().notified();
        let (topics, bytes, any_error) = read_once(shard, &request).await;
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || any_error || now >= deadline || shard.is_shutting_down() {
            return topics;
        }
        let shutdown = shard.shutdown.notified();
        future::or(
            future::or(flushed, shutdown),
            glommio::timer::sleep(deadline - now),
        )
        .await;
    }
}

/// One pass over every requested partition: the response, the record bytes
/// in it, and whether any partition has an error.
async fn read_once(shard: &Rc<Shard>, request: &FetchRequest) -> (Vec<FetchTopic>, usize, bool) {
    let mut remaining = usize::try_from(request.max_bytes).unwrap_or(0);
    let mut total_bytes = 0usize;
    let mut any_error = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let mut response = FetchPartition {
                partition_index: partition.partition,
                error_code: 0,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: Some(Vec::new()),
            };
            let log = match serving_log(
                shard,
                &name,
                partition.partition,
                partition.current_leader_epoch,
            ) {
                Ok(log) => log,
                Err(code) => {
                    any_error = true;
                    response.error_code = code.code();
                    partitions.push(response);
                    continue;
                }
            };
            response.high_watermark = log.high_watermark().0;
            response.last_stable_offset = response.high_watermark;
            response.log_start_offset = log.log_start_offset().0;
            let budget = usize::try_from(partition.partition_max_bytes)
                .unwrap_or(0)
                .min(remaining);
            if budget == 0 {
                partitions.push(response);
                continue;
            }
            match log.read(Offset(partition.fetch_offset), budget).await {
                Ok(outcome) => {
                    let bytes: usize = outcome.batches.iter().map(|b| b.len()).sum();
                    remaining = remaining.saturating_sub(bytes);
                    total_bytes += bytes;
                    response.high_watermark = outcome.high_watermark.0;
                    response.last_stable_offset = outcome.high_watermark.0;
                    response.log_start_offset = outcome.log_start_offset.0;
                    response.records = Some(outcome.batches);
                }
                Err(error) => {
                    any_error = true;
                    let code = storage_error_code(&error);
                    if code != ResponseError::OffsetOutOfRange {
                        tracing::warn!(topic = %name, partition = partition.partition, %error, "fetch failed");
                    }
                    response.error_code = code.code();
                }
            }
            partitions.push(response);
        }
        topics.push(FetchTopic { name, partitions });
    }
    (topics, total_bytes, any_error)
}
