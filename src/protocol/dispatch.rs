//! Routes a parsed request to its handler. Everything a handler does before
//! its first `.await` happens here, in arrival order (for Produce: staging
//! each batch), so a connection's requests reach each partition in order
//! even though their answers are awaited concurrently.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{RequestKind, ResponseKind};

use super::codec::{ProtocolError, Request, encode_response};
use super::handlers;
use crate::shard::Shard;

/// A response still being produced: `None` when the API sends none
/// (Produce with acks=0).
pub type PendingResponse = Pin<Box<dyn Future<Output = Result<Option<Bytes>, ProtocolError>>>>;

pub fn dispatch(shard: &Rc<Shard>, request: Request) -> PendingResponse {
    let Request {
        api,
        version,
        header,
        body,
    } = request;
    let correlation_id = header.correlation_id;
    let respond =
        move |body: ResponseKind| encode_response(api, version, correlation_id, &body).map(Some);
    let shard = shard.clone();
    match body {
        RequestKind::Produce(request) => {
            let pending = handlers::produce::start(&shard, request, version);
            Box::pin(async move {
                match pending.await {
                    Some(response) => respond(ResponseKind::Produce(response)),
                    None => Ok(None),
                }
            })
        }
        RequestKind::Fetch(request) => Box::pin(async move {
            respond(ResponseKind::Fetch(
                handlers::fetch::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::ListOffsets(request) => Box::pin(async move {
            respond(ResponseKind::ListOffsets(
                handlers::list_offsets::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::Metadata(request) => Box::pin(async move {
            respond(ResponseKind::Metadata(
                handlers::metadata::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::OffsetForLeaderEpoch(request) => {
            let response = handlers::offset_for_leader_epoch::handle(&shard, request);
            Box::pin(async move { respond(ResponseKind::OffsetForLeaderEpoch(response)) })
        }
        RequestKind::ApiVersions(_) => {
            let response = handlers::api_versions::response(0);
            Box::pin(async move { respond(ResponseKind::ApiVersions(response)) })
        }
        RequestKind::CreateTopics(request) => Box::pin(async move {
            respond(ResponseKind::CreateTopics(
                handlers::create_topics::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::DeleteTopics(request) => Box::pin(async move {
            respond(ResponseKind::DeleteTopics(
                handlers::delete_topics::handle(&shard, request, version).await,
            ))
        }),
        RequestKind::CreatePartitions(request) => Box::pin(async move {
            respond(ResponseKind::CreatePartitions(
                handlers::create_partitions::handle(&shard, request).await,
            ))
        }),
        RequestKind::DescribeConfigs(request) => {
            let response = handlers::describe_configs::handle(&shard, request, version);
            Box::pin(async move { respond(ResponseKind::DescribeConfigs(response)) })
        }
        // The codec only lets through APIs listed in `versions::SUPPORTED`.
        _ => Box::pin(async move { Err(ProtocolError::UnsupportedVersion { api, version }) }),
    }
}
