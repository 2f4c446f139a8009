//! Topic configs: Kafka's names, defaults and validation, and how a topic's
//! overrides combine with the broker defaults into a [`LogConfig`].

use std::collections::BTreeMap;

use crate::storage::LogConfig;

/// Kafka's `ConfigType` values, as sent in DescribeConfigs v3+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Int = 3,
    Long = 5,
}

/// A topic config this broker honours.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub min: i64,
    pub max: i64,
    pub doc: &'static str,
}

pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_INDEX_BYTES: &str = "segment.index.bytes";
pub const INDEX_INTERVAL_BYTES: &str = "index.interval.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";

/// Every topic config tidelog implements, with Kafka's bounds.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: INDEX_INTERVAL_BYTES,
        config_type: ConfigType::Int,
        min: 0,
        max: i32::MAX as i64,
        doc: "Bytes of log between two offset index entries.",
    },
    ConfigDef {
        name: MAX_MESSAGE_BYTES,
        config_type: ConfigType::Int,
        min: 0,
        max: i32::MAX as i64,
        doc: "The largest record batch size allowed.",
    },
    ConfigDef {
        name: SEGMENT_BYTES,
        config_type: ConfigType::Int,
        min: 14,
        max: i32::MAX as i64,
        doc: "Segment file size at which the log rolls to a new segment.",
    },
    ConfigDef {
        name: SEGMENT_INDEX_BYTES,
        config_type: ConfigType::Int,
        min: 8,
        max: i32::MAX as i64,
        doc: "Size of the offset index of one segment; a full index rolls the segment.",
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

/// Checks every override; the first bad one is the error.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, value) in configs {
        let def = config_def(name).ok_or_else(|| ConfigError::Unknown(name.clone()))?;
        let invalid = |reason: String| ConfigError::Invalid {
            name: name.clone(),
            value: value.clone(),
            reason,
        };
        let number: i64 = value
            .trim()
            .parse()
            .map_err(|_| invalid("not a number".into()))?;
        if number < def.min {
            return Err(invalid(format!("value must be at least {}", def.min)));
        }
        if number > def.max {
            return Err(invalid(format!("value must be at most {}", def.max)));
        }
    }
    Ok(())
}

/// The broker default of a config, as a string.
pub fn default_value(defaults: &LogConfig, name: &str) -> Option<String> {
    let value = match name {
        SEGMENT_BYTES => defaults.segment_bytes.to_string(),
        SEGMENT_INDEX_BYTES => defaults.segment_index_bytes.to_string(),
        INDEX_INTERVAL_BYTES => defaults.index_interval_bytes.to_string(),
        MAX_MESSAGE_BYTES => defaults.max_message_bytes.to_string(),
        _ => return None,
    };
    Some(value)
}

/// The storage config of a topic: its overrides over the broker defaults.
/// Overrides were validated when written.
pub fn log_config(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut config = defaults.clone();
    let number = |name: &str| {
        overrides
            .get(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(v) = number(SEGMENT_BYTES) {
        config.segment_bytes = v;
    }
    if let Some(v) = number(SEGMENT_INDEX_BYTES) {
        config.segment_index_bytes = v;
    }
    if let Some(v) = number(INDEX_INTERVAL_BYTES) {
        config.index_interval_bytes = v;
    }
    if let Some(v) = number(MAX_MESSAGE_BYTES) {
        config.max_message_bytes = u32::try_from(v).unwrap_or(u32::MAX);
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
