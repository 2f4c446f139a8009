//! The records of the consumer-offsets log, in Apache Kafka's own format
//! (so tools that read `__consumer_offsets` understand them).
//!
//! ```text
//! key, offset commit (version 1)       value, offset commit (version 3)
//!   int16  version = 1                   int16  version = 3
//!   string group                         int64  offset
//!   string topic                         int32  leader_epoch (-1: none)
//!   int32  partition                     string metadata
//!                                        int64  commit_timestamp_ms
//! key, group metadata (version 2)      value, group metadata (version 3)
//!   int16  version = 2                   int16  version = 3
//!   string group                         string protocol_type
//!                                        int32  generation
//!                                        nullable string protocol
//!                                        nullable string leader
//!                                        int64  current_state_timestamp_ms
//!                                        int32  member count, then each:
//!                                          string member_id
//!                                          nullable string group_instance_id
//!                                          string client_id
//!                                          string client_host
//!                                          int32  rebalance_timeout_ms
//!                                          int32  session_timeout_ms
//!                                          bytes  subscription (int32 length)
//!                                          bytes  assignment (int32 length)
//! ```
//! Strings are an int16 length then UTF-8 (-1 for null); integers are
//! big-endian. A null value (tombstone) deletes the key. Offset commit keys
//! of version 0 and values of versions 0-3 are read too.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("consumer-offsets record is truncated")]
    Truncated,
    #[error("consumer-offsets record has unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("consumer-offsets record holds a string that is not UTF-8")]
    NotUtf8,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One member of a stored group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as stored when it becomes stable or empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

fn put_string(buf: &mut BytesMut, value: &str) {
    let bytes = value.as_bytes();
    let length = i16::try_from(bytes.len()).unwrap_or(i16::MAX);
    buf.put_i16(length);
    buf.put_slice(&bytes[..length as usize]);
}

fn put_nullable_string(buf: &mut BytesMut, value: Option<&str>) {
    match value {
        None => buf.put_i16(-1),
        Some(value) => put_string(buf, value),
    }
}

fn put_bytes(buf: &mut BytesMut, value: &[u8]) {
    buf.put_i32(i32::try_from(value.len()).expect("member metadata fits i32"));
    buf.put_slice(value);
}

fn need(buf: &Bytes, bytes: usize) -> Result<(), RecordError> {
    if buf.remaining() < bytes {
        Err(RecordError::Truncated)
    } else {
        Ok(())
    }
}

fn get_i16(buf: &mut Bytes) -> Result<i16, RecordError> {
    need(buf, 2)?;
    Ok(buf.get_i16())
}

fn get_i32(buf: &mut Bytes) -> Result<i32, RecordError> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

fn get_i64(buf: &mut Bytes) -> Result<i64, RecordError> {
    need(buf, 8)?;
    Ok(buf.get_i64())
}

fn get_nullable_string(buf: &mut Bytes) -> Result<Option<String>, RecordError> {
    let length = get_i16(buf)?;
    if length < 0 {
        return Ok(None);
    }
    let length = length as usize;
    need(buf, length)?;
    let bytes = buf.split_to(length);
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| RecordError::NotUtf8)
}

fn get_string(buf: &mut Bytes) -> Result<String, RecordError> {
    Ok(get_nullable_string(buf)?.unwrap_or_default())
}

fn get_bytes(buf: &mut Bytes) -> Result<Bytes, RecordError> {
    let length = get_i32(buf)?;
    if length < 0 {
        return Ok(Bytes::new());
    }
    let length = length as usize;
    need(buf, length)?;
    Ok(buf.split_to(length))
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                buf.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut buf, group);
                put_string(&mut buf, topic);
                buf.put_i32(*partition);
            }
            RecordKey::Group { group } => {
                buf.put_i16(GROUP_KEY_VERSION);
                put_string(&mut buf, group);
            }
        }
        buf.freeze()
    }

    pub fn decode(mut buf: Bytes) -> Result<RecordKey, RecordError> {
        match get_i16(&mut buf)? {
            0 | 1 => Ok(RecordKey::Offset {
                group: get_string(&mut buf)?,
                topic: get_string(&mut buf)?,
                partition: get_i32(&mut buf)?,
            }),
            2 => Ok(RecordKey::Group {
                group: get_string(&mut buf)?,
            }),
            version => Err(RecordError::UnknownVersion {
                what: "key",
                version,
            }),
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(OFFSET_VALUE_VERSION);
        buf.put_i64(self.offset);
        buf.put_i32(self.leader_epoch);
        put_string(&mut buf, &self.metadata);
        buf.put_i64(self.commit_timestamp_ms);
        buf.freeze()
    }

    pub fn decode(mut buf: Bytes) -> Result<OffsetValue, RecordError> {
        let version = get_i16(&mut buf)?;
        if !(0..=3).contains(&version) {
            return Err(RecordError::UnknownVersion {
                what: "offset value",
                version,
            });
        }
        let offset = get_i64(&mut buf)?;
        let leader_epoch = if version >= 3 { get_i32(&mut buf)? } else { -1 };
        let metadata = get_string(&mut buf)?;
        let commit_timestamp_ms = get_i64(&mut buf)?;
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(GROUP_VALUE_VERSION);
        put_string(&mut buf, &self.protocol_type);
        buf.put_i32(self.generation);
        put_nullable_string(&mut buf, self.protocol.as_deref());
        put_nullable_string(&mut buf, self.leader.as_deref());
        buf.put_i64(self.current_state_timestamp_ms);
        buf.put_i32(i32::try_from(self.members.len()).expect("member count fits i32"));
        for member in &self.members {
            put_string(&mut buf, &member.member_id);
            put_nullable_string(&mut buf, member.group_instance_id.as_deref());
            put_string(&mut buf, &member.client_id);
            put_string(&mut buf, &member.client_host);
            buf.put_i32(member.rebalance_timeout_ms);
            buf.put_i32(member.session_timeout_ms);
            put_bytes(&mut buf, &member.subscription);
            put_bytes(&mut buf, &member.assignment);
        }
        buf.freeze()
    }

    pub fn decode(mut buf: Bytes) -> Result<GroupValue, RecordError> {
        let version = get_i16(&mut buf)?;
        if !(0..=3).contains(&version) {
            return Err(RecordError::UnknownVersion {
                what: "group value",
                version,
            });
        }
        let protocol_type = get_string(&mut buf)?;
        let generation = get_i32(&mut buf)?;
        let protocol = get_nullable_string(&mut buf)?;
        let leader = get_nullable_string(&mut buf)?;
        let current_state_timestamp_ms = if version >= 2 { get_i64(&mut buf)? } else { -1 };
        let count = get_i32(&mut buf)?.max(0);
        let mut members = Vec::new();
        for _ in 0..count {
            let member_id = get_string(&mut buf)?;
            let group_instance_id = if version >= 3 {
                get_nullable_string(&mut buf)?
            } else {
                None
            };
            let client_id = get_string(&mut buf)?;
            let client_host = get_string(&mut buf)?;
            let session_timeout_first = get_i32(&mut buf)?;
            let (rebalance_timeout_ms, session_timeout_ms) = if version >= 1 {
                (session_timeout_first, get_i32(&mut buf)?)
            } else {
                (session_timeout_first, session_timeout_first)
            };
            members.push(StoredMember {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription: get_bytes(&mut buf)?,
                assignment: get_bytes(&mut buf)?,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp_ms,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let keys = [
            RecordKey::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
            },
            RecordKey::Group {
                group: "g-ü".into(),
            },
        ];
        for key in keys {
            assert_eq!(RecordKey::decode(key.encode()), Ok(key));
        }
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 0,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(offset.encode()), Ok(offset));
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp_ms: 5,
            members: vec![StoredMember {
                member_id: "m-1".into(),
                group_instance_id: Some("i-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(group.encode()), Ok(group));
    }

    #[test]
    fn a_kafka_offset_key_is_byte_for_byte() {
        // version 1, "g", "t", partition 2
        let expected = [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2];
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 2,
        };
        assert_eq!(&key.encode()[..], &expected);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let value = OffsetValue {
            offset: 1,
            leader_epoch: -1,
            metadata: "abc".into(),
            commit_timestamp_ms: 9,
        }
        .encode();
        for cut in 0..value.len() {
            assert_eq!(
                OffsetValue::decode(value.slice(..cut)),
                Err(RecordError::Truncated)
            );
        }
        assert!(RecordKey::decode(Bytes::from_static(&[0, 9])).is_err());
    }
}
