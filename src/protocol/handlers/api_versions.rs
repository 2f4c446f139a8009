//! ApiVersions: exactly the APIs and versions tidelog implements. The
//! response carries no tagged fields (no supported or finalized features):
//! librdkafka 2.0.2 fails to parse a v3 response that has them.

use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use crate::protocol::versions::SUPPORTED;

pub fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|(api, min, max)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    #[test]
    fn v3_response_has_no_tagged_fields() -> Result<(), Box<dyn std::error::Error>> {
        let body = response(0);
        let mut buf = BytesMut::new();
        body.encode(&mut buf, 3)?;
        // error(2) + compact array length(1) + entries(7 each) + throttle(4) + empty tag buffer(1)
        // api key i16, min i16, max i16, tag buffer (1) = 7 bytes per entry
        let expected = 2 + 1 + 7 * SUPPORTED.len() + 4 + 1;
        assert_eq!(buf.len(), expected);
        assert_eq!(
            buf.last(),
            Some(&0u8),
            "the top-level tag buffer must be empty"
        );
        Ok(())
    }
}
