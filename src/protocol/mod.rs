//! The Kafka wire protocol: framing and request parsing (`codec`), the API
//! versions tidelog speaks (`versions`), routing a request to its handler
//! (`dispatch`), and one handler module per API (`handlers`).

pub mod codec;
pub mod dispatch;
pub mod fetch_encode;
pub mod handlers;
pub mod versions;

pub use codec::{ProtocolError, Request};
