//! DescribeLogDirs: this node's (shard's) one log directory, with the size
//! of each partition it owns, and the disk's total and usable bytes (v4).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::str_bytes;
use crate::shard::Shard;

pub fn handle(
    shard: &Rc<Shard>,
    request: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let names: Vec<String> = match &wanted {
        Some(wanted) => wanted.keys().cloned().collect(),
        None => shard.cluster().topics().map(|t| t.name.clone()).collect(),
    };
    let mut topics = Vec::new();
    for name in names {
        let partitions: Vec<DescribeLogDirsPartition> = shard
            .local_logs(&name)
            .into_iter()
            .filter(|(index, _)| {
                wanted
                    .as_ref()
                    .is_none_or(|w| w.get(&name).is_some_and(|ps| ps.contains(index)))
            })
            .map(|(index, log)| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(index)
                    .with_partition_size(i64::try_from(log.size_bytes()).unwrap_or(i64::MAX))
                    .with_offset_lag(0)
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions),
            );
        }
    }
    let (total, usable) = if version >= 4 {
        disk_bytes(&shard.config.data_dir).unwrap_or((-1, -1))
    } else {
        (-1, -1)
    };
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(shard.config.data_dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// (total, available) bytes of the file system holding `dir`.
fn disk_bytes(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a valid,
    // writable statvfs that the call fills in.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if rc != 0 {
        return None;
    }
    let block = stat.f_frsize as i64;
    Some((
        (stat.f_blocks as i64).saturating_mul(block),
        (stat.f_bavail as i64).saturating_mul(block),
    ))
}
