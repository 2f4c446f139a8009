//! Produce: validate and stage each partition's batch on this shard (in
//! request order, before anything awaits, so per-partition order is the
//! order requests arrive), then answer once the group commit has made the
//! batches durable (acks=1/all) or at once with no response (acks=0).

use std::future::Future;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{serving_log, storage_error_code, str_bytes};
use crate::shard::Shard;
use crate::storage::PartitionLog;
use crate::types::{Offset, now_ms};

/// A batch staged in its log: the log, its base offset, and the offset
/// after it (durable once the high watermark reaches it).
struct Appended {
    log: Rc<PartitionLog>,
    base_offset: Offset,
    end_offset: Offset,
}

/// Why a partition's batch was refused, and the message for the client.
type Refused = (ResponseError, Option<String>);

/// One partition's outcome, waiting for durability where it was staged.
struct Staged {
    index: i32,
    result: Result<Appended, Refused>,
}

/// Stages every batch now; the returned future answers when they are
/// durable. `None` means no response is sent (acks=0).
pub fn start(
    shard: &Rc<Shard>,
    request: ProduceRequest,
    version: i16,
) -> impl Future<Output = Option<ProduceResponse>> + 'static {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let now = now_ms();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut staged = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let result = if valid_acks {
                stage(
                    shard,
                    &name,
                    partition.index,
                    partition.records.as_ref(),
                    now,
                )
            } else {
                Err((ResponseError::InvalidRequiredAcks, None))
            };
            staged.push(Staged {
                index: partition.index,
                result,
            });
        }
        topics.push((topic.name, staged));
    }
    // Counted until answered: the log cleaner steps around it.
    let in_flight = shard.commit.foreground().begin();
    let shard = shard.clone();
    async move {
        let _in_flight = in_flight;
        let mut responses = Vec::with_capacity(topics.len());
        for (name, staged) in topics {
            let mut partitions = Vec::with_capacity(staged.len());
            for Staged { index, result } in staged {
                partitions.push(finish(&shard, index, result, acks, version).await);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partitions),
            );
        }
        (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
    }
}

fn stage(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    records: Option<&bytes::Bytes>,
    now: i64,
) -> Result<Appended, Refused> {
    if topic == crate::group::OFFSETS_TOPIC {
        return Err((
            ResponseError::InvalidTopicException,
            Some(format!("Cannot append to internal topic {topic}")),
        ));
    }
    let log = serving_log(shard, topic, partition, -1).map_err(|code| (code, None))?;
    let Some(records) = records else {
        return Err((
            ResponseError::InvalidRecord,
            Some("the partition's records are null".into()),
        ));
    };
    match log.append(records, now) {
        Ok(info) => {
            shard.commit.mark_dirty(&log, records.len());
            Ok(Appended {
                log,
                base_offset: info.base_offset,
                end_offset: info.last_offset.next(),
            })
        }
        Err(error) => {
            tracing::debug!(topic, partition, %error, "produce rejected");
            Err((storage_error_code(&error), Some(error.to_string())))
        }
    }
}

async fn finish(
    shard: &Shard,
    index: i32,
    result: Result<Appended, Refused>,
    acks: i16,
    version: i16,
) -> PartitionProduceResponse {
    // log_start_offset exists from v5, error_message from v8.
    let log_start = |offset: i64| if version >= 5 { offset } else { -1 };
    let message = |m: Option<String>| if version >= 8 { m.map(str_bytes) } else { None };
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1);
    match result {
        Ok(Appended {
            log,
            base_offset,
            end_offset,
        }) => {
            let durable = if acks == 0 {
                Ok(())
            } else {
                shard.commit.wait_durable(&log, end_offset).await
            };
            match durable {
                Ok(()) => response
                    .with_base_offset(base_offset.0)
                    .with_log_start_offset(log_start(log.log_start_offset().0)),
                Err(error) => response
                    .with_base_offset(-1)
                    .with_error_code(ResponseError::KafkaStorageError.code())
                    .with_error_message(message(Some(error))),
            }
        }
        Err((code, message_text)) => response
            .with_base_offset(-1)
            .with_log_start_offset(-1)
            .with_error_code(code.code())
            .with_error_message(message(message_text)),
    }
}
