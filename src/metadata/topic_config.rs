//! Topic configs: Kafka's names, defaults and validation, and how a topic's
//! overrides combine with the broker defaults into a [`LogConfig`].

use std::collections::BTreeMap;

use crate::storage::LogConfig;
use crate::storage::log::TimestampType;

/// Kafka's `ConfigType` values, as sent in DescribeConfigs v3+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// What values a config takes.
#[derive(Debug, Clone, Copy)]
pub enum Values {
    /// An integer in `min..=max`.
    Range { min: i64, max: i64 },
    /// A number in `0.0..=1.0`.
    Fraction,
    /// One of these words (case as Kafka spells them).
    OneOf(&'static [&'static str]),
}

/// A topic config this broker honours.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub values: Values,
    /// The broker-level config that gives its default (Kafka's synonym).
    pub broker_name: &'static str,
    pub doc: &'static str,
}

pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
pub const MIN_CLEANABLE_DIRTY_RATIO: &str = "min.cleanable.dirty.ratio";
pub const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
pub const FLUSH_MESSAGES: &str = "flush.messages";
pub const FLUSH_MS: &str = "flush.ms";
pub const INDEX_INTERVAL_BYTES: &str = "index.interval.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const MESSAGE_TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const RETENTION_MS: &str = "retention.ms";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_INDEX_BYTES: &str = "segment.index.bytes";
pub const SEGMENT_MS: &str = "segment.ms";

const INT: Values = Values::Range {
    min: 0,
    max: i32::MAX as i64,
};

/// Every topic config tidelog implements, with Kafka's bounds, sorted by
/// name.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: CLEANUP_POLICY,
        config_type: ConfigType::List,
        values: Values::OneOf(&["delete", "compact"]),
        broker_name: "log.cleanup.policy",
        doc: "What happens to old segments: delete (by retention.ms/retention.bytes), compact (the latest record per key is kept), or both.",
    },
    ConfigDef {
        name: DELETE_RETENTION_MS,
        config_type: ConfigType::Long,
        values: Values::Range {
            min: 0,
            max: i64::MAX,
        },
        broker_name: "log.cleaner.delete.retention.ms",
        doc: "How long a compacted topic keeps a tombstone (a null value) after its timestamp, so consumers see the delete.",
    },
    ConfigDef {
        name: FLUSH_MESSAGES,
        config_type: ConfigType::Long,
        values: Values::Range {
            min: 1,
            max: i64::MAX,
        },
        broker_name: "log.flush.interval.messages",
        doc: "Records written before an fdatasync is forced. 1 (the default) is durable: acks are answered after the sync; more relaxes it, and acknowledged records may be lost in a crash.",
    },
    ConfigDef {
        name: FLUSH_MS,
        config_type: ConfigType::Long,
        values: Values::Range {
            min: 0,
            max: i64::MAX,
        },
        broker_name: "log.flush.interval.ms",
        doc: "Longest time written records wait for an fdatasync under a relaxed flush.messages.",
    },
    ConfigDef {
        name: INDEX_INTERVAL_BYTES,
        config_type: ConfigType::Int,
        values: INT,
        broker_name: "log.index.interval.bytes",
        doc: "Bytes of log between two offset index entries.",
    },
    ConfigDef {
        name: MAX_MESSAGE_BYTES,
        config_type: ConfigType::Int,
        values: INT,
        broker_name: "message.max.bytes",
        doc: "The largest record batch size allowed.",
    },
    ConfigDef {
        name: MESSAGE_TIMESTAMP_TYPE,
        config_type: ConfigType::String,
        values: Values::OneOf(&["CreateTime", "LogAppendTime"]),
        broker_name: "log.message.timestamp.type",
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the time the broker appended it.",
    },
    ConfigDef {
        name: MIN_CLEANABLE_DIRTY_RATIO,
        config_type: ConfigType::Double,
        values: Values::Fraction,
        broker_name: "log.cleaner.min.cleanable.ratio",
        doc: "The share of a compacted log not yet cleaned at which the cleaner compacts it.",
    },
    ConfigDef {
        name: MIN_COMPACTION_LAG_MS,
        config_type: ConfigType::Long,
        values: Values::Range {
            min: 0,
            max: i64::MAX,
        },
        broker_name: "log.cleaner.min.compaction.lag.ms",
        doc: "A record stays uncompacted for at least this long.",
    },
    ConfigDef {
        name: RETENTION_BYTES,
        config_type: ConfigType::Long,
        values: Values::Range {
            min: -1,
            max: i64::MAX,
        },
        broker_name: "log.retention.bytes",
        doc: "The oldest segments are deleted while a partition is larger than this; -1 for no limit.",
    },
    ConfigDef {
        name: RETENTION_MS,
        config_type: ConfigType::Long,
        values: Values::Range {
            min: -1,
            max: i64::MAX,
        },
        broker_name: "log.retention.ms",
        doc: "Segments whose newest record is older than this are deleted; -1 keeps them forever.",
    },
    ConfigDef {
        name: SEGMENT_BYTES,
        config_type: ConfigType::Int,
        values: Values::Range {
            min: 14,
            max: i32::MAX as i64,
        },
        broker_name: "log.segment.bytes",
        doc: "Segment file size at which the log rolls to a new segment.",
    },
    ConfigDef {
        name: SEGMENT_INDEX_BYTES,
        config_type: ConfigType::Int,
        values: Values::Range {
            min: 8,
            max: i32::MAX as i64,
        },
        broker_name: "log.index.size.max.bytes",
        doc: "Size of the offset index of one segment; a full index rolls the segment.",
    },
    ConfigDef {
        name: SEGMENT_MS,
        config_type: ConfigType::Long,
        values: Values::Range {
            min: 1,
            max: i64::MAX,
        },
        broker_name: "log.roll.ms",
        doc: "A segment older than this rolls at the next append, so retention can delete it.",
    },
];

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Why a config was refused (answered as INVALID_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config name: {0}")]
    Unknown(String),
    #[error("invalid value {value:?} for configuration {name}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

/// Checks one config value.
pub fn validate_one(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = config_def(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
    let invalid = |reason: String| ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    match def.values {
        Values::Range { min, max } => {
            let number: i64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("not a number".into()))?;
            if number < min {
                return Err(invalid(format!("value must be at least {min}")));
            }
            if number > max {
                return Err(invalid(format!("value must be at most {max}")));
            }
        }
        Values::Fraction => {
            let number: f64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("not a number".into()))?;
            if !(0.0..=1.0).contains(&number) {
                return Err(invalid("value must be between 0 and 1".into()));
            }
        }
        Values::OneOf(allowed) => {
            let words: Vec<&str> = match def.config_type {
                ConfigType::List => value.split(',').map(str::trim).collect(),
                _ => vec![value.trim()],
            };
            for word in words {
                if !allowed.contains(&word) {
                    return Err(invalid(format!("must be one of {}", allowed.join(", "))));
                }
            }
        }
    }
    Ok(())
}

/// Checks every override; the first bad one is the error.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, value) in configs {
        validate_one(name, value)?;
    }
    Ok(())
}

/// The broker default of a config, as a string.
pub fn default_value(defaults: &LogConfig, name: &str) -> Option<String> {
    let value = match name {
        CLEANUP_POLICY => match (defaults.cleanup_delete, defaults.cleanup_compact) {
            (true, true) => "compact,delete".to_string(),
            (false, true) => "compact".to_string(),
            _ => "delete".to_string(),
        },
        MIN_CLEANABLE_DIRTY_RATIO => defaults.min_cleanable_dirty_ratio.to_string(),
        DELETE_RETENTION_MS => defaults.delete_retention_ms.to_string(),
        MIN_COMPACTION_LAG_MS => defaults.min_compaction_lag_ms.to_string(),
        SEGMENT_BYTES => defaults.segment_bytes.to_string(),
        SEGMENT_INDEX_BYTES => defaults.segment_index_bytes.to_string(),
        SEGMENT_MS => defaults.segment_ms.to_string(),
        INDEX_INTERVAL_BYTES => defaults.index_interval_bytes.to_string(),
        MAX_MESSAGE_BYTES => defaults.max_message_bytes.to_string(),
        RETENTION_MS => defaults.retention_ms.to_string(),
        FLUSH_MESSAGES => defaults.flush_messages.to_string(),
        FLUSH_MS => defaults.flush_ms.to_string(),
        RETENTION_BYTES => defaults.retention_bytes.to_string(),
        MESSAGE_TIMESTAMP_TYPE => match defaults.timestamp_type {
            TimestampType::CreateTime => "CreateTime".to_string(),
            TimestampType::LogAppendTime => "LogAppendTime".to_string(),
        },
        _ => return None,
    };
    Some(value)
}

/// The storage config of a topic: its overrides over the broker defaults.
/// Overrides were validated when written.
pub fn log_config(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut config = *defaults;
    let number = |name: &str| {
        overrides
            .get(name)
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let unsigned = |name: &str| number(name).and_then(|v| u64::try_from(v).ok());
    if let Some(v) = unsigned(SEGMENT_BYTES) {
        config.segment_bytes = v;
    }
    if let Some(v) = unsigned(SEGMENT_INDEX_BYTES) {
        config.segment_index_bytes = v;
    }
    if let Some(v) = unsigned(INDEX_INTERVAL_BYTES) {
        config.index_interval_bytes = v;
    }
    if let Some(v) = unsigned(MAX_MESSAGE_BYTES) {
        config.max_message_bytes = u32::try_from(v).unwrap_or(u32::MAX);
    }
    if let Some(v) = number(SEGMENT_MS) {
        config.segment_ms = v;
    }
    if let Some(v) = number(RETENTION_MS) {
        config.retention_ms = v;
    }
    if let Some(v) = number(RETENTION_BYTES) {
        config.retention_bytes = v;
    }
    if let Some(v) = number(FLUSH_MESSAGES) {
        config.flush_messages = v;
    }
    if let Some(v) = number(FLUSH_MS) {
        config.flush_ms = v;
    }
    if let Some(v) = number(DELETE_RETENTION_MS) {
        config.delete_retention_ms = v;
    }
    if let Some(v) = number(MIN_COMPACTION_LAG_MS) {
        config.min_compaction_lag_ms = v;
    }
    if let Some(v) = overrides
        .get(MIN_CLEANABLE_DIRTY_RATIO)
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        config.min_cleanable_dirty_ratio = v;
    }
    if let Some(policy) = overrides.get(CLEANUP_POLICY) {
        let words: Vec<&str> = policy.split(',').map(str::trim).collect();
        config.cleanup_delete = words.contains(&"delete");
        config.cleanup_compact = words.contains(&"compact");
    }
    match overrides.get(MESSAGE_TIMESTAMP_TYPE).map(|v| v.trim()) {
        Some("LogAppendTime") => config.timestamp_type = TimestampType::LogAppendTime,
        Some("CreateTime") => config.timestamp_type = TimestampType::CreateTime,
        _ => {}
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("segment.bytes", "1048576", true),
            ("segment.bytes", "13", false),
            ("segment.bytes", "abc", false),
            ("max.message.bytes", "-1", false),
            ("max.message.bytes", "100", true),
            ("no.such.config", "1", false),
            ("retention.ms", "-1", true),
            ("retention.ms", "-2", false),
            ("retention.bytes", "1073741824", true),
            ("segment.ms", "0", false),
            ("cleanup.policy", "delete", true),
            ("cleanup.policy", "compact", true),
            ("cleanup.policy", "compact,delete", true),
            ("min.cleanable.dirty.ratio", "0.01", true),
            ("min.cleanable.dirty.ratio", "1.5", false),
            ("min.cleanable.dirty.ratio", "half", false),
            ("delete.retention.ms", "-1", false),
            ("min.compaction.lag.ms", "0", true),
            ("cleanup.policy", "sideways", false),
            ("message.timestamp.type", "LogAppendTime", true),
            ("message.timestamp.type", "Now", false),
        ];
        for (name, value, ok) in cases {
            let configs = BTreeMap::from([(name.to_string(), value.to_string())]);
            assert_eq!(validate(&configs).is_ok(), *ok, "{name}={value}");
        }
    }

    #[test]
    fn overrides_win() {
        let defaults = LogConfig::default();
        let overrides = BTreeMap::from([(SEGMENT_BYTES.to_string(), "4096".to_string())]);
        let config = log_config(&defaults, &overrides);
        assert_eq!(config.segment_bytes, 4096);
        assert_eq!(config.max_message_bytes, defaults.max_message_bytes);
    }
}
