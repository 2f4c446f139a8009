//! The metadata log: an append-only file of [`MetadataRecord`]s owned by
//! shard 0, replayed at start-up.
//!
//! On-disk record format (all integers big-endian):
//!
//! ```text
//! 0        4        8                         8+len
//! +--------+--------+-------------------------+
//! | len u32| crc u32| payload: JSON record    |
//! +--------+--------+-------------------------+
//! crc = CRC-32C of the payload
//! ```
//!
//! A record is durable once [`MetadataLog::append`] returns (written and
//! fdatasynced). A torn or corrupt tail left by a crash is truncated at
//! replay: only whole, checksummed records count.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::cluster::{ClusterView, MetadataRecord};

const LENGTH_OFFSET: usize = 0;
const CRC_OFFSET: usize = 4;
const PAYLOAD_OFFSET: usize = 8;
const HEADER_BYTES: usize = PAYLOAD_OFFSET;
/// A bound on one record, far above any real one.
const RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;
const _: () = assert!(HEADER_BYTES == 8);
const _: () = assert!(CRC_OFFSET == LENGTH_OFFSET + 4);

/// The directory, under the data dir, that holds the metadata log.
pub const METADATA_DIR: &str = "__cluster_metadata";
const LOG_FILE: &str = "metadata.log";

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("encoding a metadata record: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MetadataError + 'a {
    move |source| MetadataError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Handle on the metadata log file. `Send`, so appends can run on a
/// blocking thread away from the shard's executor.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: File,
}

impl MetadataLog {
    /// Opens (creating if needed) the log under `data_dir`, replays it into
    /// a [`ClusterView`], and truncates any torn tail.
    pub fn open(data_dir: &Path) -> Result<(MetadataLog, ClusterView), MetadataError> {
        let dir = data_dir.join(METADATA_DIR);
        let created = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        if created {
            sync_dir(data_dir)?;
        }
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error("opening", &path))?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .map_err(io_error("reading", &path))?;
        let (records, good_bytes) = decode_records(&contents);
        if good_bytes < contents.len() {
            tracing::warn!(
                path = %path.display(),
                kept_bytes = good_bytes,
                dropped_bytes = contents.len() - good_bytes,
                "metadata log has a torn tail; truncating"
            );
            file.set_len(good_bytes as u64)
                .map_err(io_error("truncating", &path))?;
            file.sync_all().map_err(io_error("syncing", &path))?;
        }
        if created {
            file.sync_all().map_err(io_error("syncing", &path))?;
            sync_dir(&dir)?;
        }
        let mut view = ClusterView::default();
        for record in &records {
            view.apply(record);
        }
        Ok((MetadataLog { path, file }, view))
    }

    /// Appends one record; durable when this returns. Blocking.
    pub fn append(&mut self, record: &MetadataRecord) -> Result<(), MetadataError> {
        let frame = encode_record(record)?;
        self.file
            .write_all(&frame)
            .map_err(io_error("appending to", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_error("syncing", &self.path))
    }
}

fn sync_dir(dir: &Path) -> Result<(), MetadataError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing directory", dir))
}

fn encode_record(record: &MetadataRecord) -> Result<Vec<u8>, MetadataError> {
    let payload = serde_json::to_vec(record)?;
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decodes whole, valid records; returns them and how many bytes they span.
fn decode_records(contents: &[u8]) -> (Vec<MetadataRecord>, usize) {
    let mut records = Vec::new();
    let mut position = 0usize;
    while let Some(header) = contents.get(position..position + HEADER_BYTES) {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if length == 0 || length > RECORD_BYTES_MAX {
            break;
        }
        let start = position + HEADER_BYTES;
        let Some(payload) = contents.get(start..start + length) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        match serde_json::from_slice::<MetadataRecord>(payload) {
            Ok(record) => records.push(record),
            Err(error) => {
                tracing::warn!(%error, position, "unreadable metadata record; stopping replay");
                break;
            }
        }
        position = start + length;
    }
    (records, position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn created(name: &str) -> MetadataRecord {
        MetadataRecord::TopicCreated {
            name: name.into(),
            topic_id: 1,
            partition_shards: vec![0],
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn replays_and_truncates_torn_tail() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let (mut log, view) = MetadataLog::open(dir.path())?;
            assert!(view.topic("a").is_none());
            log.append(&created("a"))?;
            log.append(&created("b"))?;
        }
        let path = dir.path().join(METADATA_DIR).join(LOG_FILE);
        let full = std::fs::read(&path)?;
        // Cut the second record in half, as a crash mid-write would.
        std::fs::write(&path, &full[..full.len() - 5])?;
        let (_, view) = MetadataLog::open(dir.path())?;
        assert!(view.topic("a").is_some());
        assert!(view.topic("b").is_none());
        assert!(std::fs::metadata(&path)?.len() < full.len() as u64);
        Ok(())
    }

    #[test]
    fn corrupt_record_ends_replay() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let (mut log, _) = MetadataLog::open(dir.path())?;
            log.append(&created("a"))?;
            log.append(&created("b"))?;
        }
        let path = dir.path().join(METADATA_DIR).join(LOG_FILE);
        let mut bytes = std::fs::read(&path)?;
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes)?;
        let (_, view) = MetadataLog::open(dir.path())?;
        assert!(view.topic("a").is_some());
        assert!(view.topic("b").is_none());
        Ok(())
    }
}
