//! Storage errors: what the OS or a client's bytes can cause.

use std::path::PathBuf;

use crate::types::Offset;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    #[error("record batch of {size} bytes is larger than max.message.bytes ({max})")]
    MessageTooLarge { size: usize, max: u32 },
    #[error("offset {requested} is outside the log [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        high_watermark: Offset,
    },
    #[error(
        "an earlier sync of directory {path} failed; no segment file there is removed until a restart"
    )]
    SyncFailedBefore { path: PathBuf },
    #[error(
        "segment {path} holds a batch at offset {found} where {expected} or later was expected"
    )]
    OffsetsOutOfOrder {
        path: PathBuf,
        expected: Offset,
        found: Offset,
    },
}

impl StorageError {
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io { op, path, source }
    }

    /// glommio reports file errors as its own type; keep the io::Error in it.
    pub fn glommio(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(glommio::GlommioError<()>) -> StorageError {
        let path = path.into();
        move |error| StorageError::Io {
            op,
            path,
            source: std::io::Error::from(error),
        }
    }
}
