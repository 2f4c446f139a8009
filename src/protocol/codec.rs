//! Framing: a Kafka request is a 4-byte big-endian size followed by that
//! many bytes (header, then body); a response likewise. Parsing stops at
//! the first thing that is not a well-formed request of a supported API
//! and version, and the connection is closed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::versions;

/// Why a request could not be parsed; each closes its connection.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("request size {size} is negative or above socket.request.max.bytes ({max})")]
    FrameSize { size: i64, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    ShortFrame(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("encoding a {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// What to do with a frame whose API version is not supported.
pub enum Parsed {
    Request(Box<Request>),
    /// ApiVersions at a version we do not speak: Kafka answers with
    /// UNSUPPORTED_VERSION in a v0 response so the client can retry lower.
    ApiVersionsUnsupported {
        correlation_id: i32,
    },
}

/// Checks a frame's size prefix.
pub fn check_frame_size(size: i32, max: usize) -> Result<usize, ProtocolError> {
    let size_ok = usize::try_from(size).ok().filter(|s| *s <= max);
    size_ok.ok_or(ProtocolError::FrameSize {
        size: i64::from(size),
        max,
    })
}

/// Parses one frame (without its size prefix).
pub fn parse(mut frame: Bytes) -> Result<Parsed, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::ShortFrame(frame.len()));
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(api_key).map_err(|_| ProtocolError::UnknownApi(api_key))?;
    if !versions::is_supported(api, version) {
        if api == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return Ok(Parsed::ApiVersionsUnsupported { correlation_id });
        }
        return Err(ProtocolError::UnsupportedVersion { api, version });
    }
    let malformed = |reason: String| ProtocolError::Malformed {
        api,
        version,
        reason,
    };
    let header_version = api.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| malformed(format!("header: {e}")))?;
    let body =
        RequestKind::decode(api, &mut frame, version).map_err(|e| malformed(e.to_string()))?;
    // Like Kafka, ignore bytes after a complete request: librdkafka's
    // Metadata v12 (all topics) carries three of them.
    if frame.has_remaining() {
        tracing::debug!(
            ?api,
            version,
            trailing_bytes = frame.remaining(),
            "ignoring trailing request bytes"
        );
    }
    Ok(Parsed::Request(Box::new(Request {
        api,
        version,
        header,
        body,
    })))
}

/// Encodes a response frame: size prefix, response header, body.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, ProtocolError> {
    let encode_error = |reason: String| ProtocolError::Encode {
        api,
        version,
        reason,
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api.response_header_version(version))
        .map_err(|e| encode_error(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| encode_error(e.to_string()))?;
    let size =
        i32::try_from(buf.len() - 4).map_err(|_| encode_error("response too large".into()))?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// The answer to an ApiVersions request at an unsupported version.
pub fn api_versions_unsupported(correlation_id: i32) -> Result<Bytes, ProtocolError> {
    let body = super::handlers::api_versions::response(
        kafka_protocol::ResponseError::UnsupportedVersion.code(),
    );
    encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(body),
    )
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::Encodable;

    use super::*;

    fn frame<B: Encodable>(api: ApiKey, version: i16, body: &B) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(42);
        header
            .encode(&mut buf, api.request_header_version(version))
            .expect("header encodes");
        body.encode(&mut buf, version).expect("body encodes");
        buf.freeze()
    }

    #[test]
    fn parses_a_supported_request() {
        let bytes = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        match parse(bytes) {
            Ok(Parsed::Request(request)) => {
                assert_eq!(request.api, ApiKey::Metadata);
                assert_eq!(request.header.correlation_id, 42);
            }
            _ => panic!("expected a request"),
        }
    }

    #[test]
    fn rejects_what_it_cannot_serve() {
        let mut unknown = BytesMut::new();
        unknown.put_i16(9999);
        unknown.put_i16(0);
        unknown.put_i32(1);
        let mut trailing =
            BytesMut::from(&frame(ApiKey::Metadata, 1, &MetadataRequest::default())[..]);
        trailing.put_u8(7);
        let mut truncated = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        truncated.truncate(truncated.len() - 1);
        let cases: Vec<(&str, Bytes)> = vec![
            ("short", Bytes::from_static(&[0, 3, 0])),
            ("unknown api", unknown.freeze()),
            (
                "unsupported version",
                frame(ApiKey::Produce, 2, &MetadataRequest::default()),
            ),
            ("truncated", truncated),
        ];
        for (name, bytes) in cases {
            assert!(parse(bytes).is_err(), "{name} should be rejected");
        }
    }

    #[test]
    fn trailing_bytes_after_a_whole_request_are_ignored() {
        let mut trailing =
            BytesMut::from(&frame(ApiKey::Metadata, 12, &MetadataRequest::default())[..]);
        trailing.put_slice(&[0, 0, 0]);
        assert!(matches!(parse(trailing.freeze()), Ok(Parsed::Request(_))));
    }

    #[test]
    fn api_versions_at_unknown_version_gets_an_answer() {
        let bytes = frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let mut raised = BytesMut::from(&bytes[..]);
        raised[2..4].copy_from_slice(&77i16.to_be_bytes());
        assert!(matches!(
            parse(raised.freeze()),
            Ok(Parsed::ApiVersionsUnsupported { correlation_id: 42 })
        ));
    }

    #[test]
    fn frame_size_limits() {
        assert!(check_frame_size(-1, 100).is_err());
        assert!(check_frame_size(101, 100).is_err());
        assert_eq!(check_frame_size(100, 100).ok(), Some(100));
    }
}
