//! Recovery through the real binary: segment files damaged the way a crash
//! or a bad disk would (a torn last batch, garbage after the end, lost
//! indexes), and a crash while topics are being created.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Broker;
use common::wire::*;

/// `(file position, total bytes)` of each batch in a `.log` file, reading
/// Kafka's layout (batches back to back) up to zero padding or the end.
fn batches_in_file(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut batches = Vec::new();
    let mut position = 0;
    while position + BATCH_HEADER_BYTES <= bytes.len() {
        let length = i32::from_be_bytes(
            bytes[position + BATCH_LENGTH_AT..position + BATCH_LENGTH_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        if length == 0 {
            break; // zero padding: the end of the log
        }
        let total = BATCH_LOG_OVERHEAD + length as usize;
        assert!(
            position + total <= bytes.len(),
            "batch at {position} runs past the file"
        );
        assert_eq!(bytes[position + MAGIC_AT], 2, "a v2 batch at {position}");
        batches.push((position, total));
        position += total;
    }
    batches
}

fn values(broker: &Broker, topic: &str) -> Vec<Vec<u8>> {
    fetch_all_batches(broker.port, topic, 0, 0)
        .iter()
        .flat_map(|b| {
            assert!(
                b.crc_ok(),
                "served batch at {} has a bad CRC",
                b.base_offset
            );
            b.values()
        })
        .map(|v| v.expect("value"))
        .collect()
}

fn produce_batches(broker: &Broker, topic: &str, first: usize, count: usize) {
    let mut stream = connect(broker.port);
    for i in first..first + count {
        let a = format!("{i}-a");
        let b = format!("{i}-b");
        let (error, base) = produce(
            &mut stream,
            topic,
            0,
            batch_with_values(&[a.as_bytes(), b.as_bytes()]).freeze(),
        );
        assert_eq!((error, base), (0, 2 * i as i64), "batch {i}");
    }
}

fn expected_values(batches: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    batches
        .flat_map(|i| [format!("{i}-a").into_bytes(), format!("{i}-b").into_bytes()])
        .collect()
}

#[test]
fn a_torn_last_batch_is_cut_off_and_appends_continue_there() {
    let mut broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "torn", 1);
    produce_batches(&broker, "torn", 0, 10);
    assert!(broker.sigterm_and_wait().success());

    let file = broker.segment_files("torn", 0).pop().expect("a segment");
    let batches = batches_in_file(&file);
    assert_eq!(batches.len(), 10, "ten batches on disk");
    let (last_position, last_bytes) = batches[9];
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len((last_position + last_bytes / 2) as u64))
        .expect("tear the last batch");

    broker.restart();
    assert_eq!(
        high_watermark(broker.port, "torn", 0),
        18,
        "the torn batch is gone"
    );
    assert_eq!(values(&broker, "torn"), expected_values(0..9));
    produce_batches(&broker, "torn", 9, 2);
    assert!(broker.sigterm_and_wait().success());
    broker.restart();
    assert_eq!(values(&broker, "torn"), expected_values(0..11));
}

#[test]
fn garbage_after_the_last_batch_and_a_corrupt_batch_are_not_served() {
    let mut broker = Broker::start_with(1, &[]);
    create_topic(broker.port, "garbled", 1);
    produce_batches(&broker, "garbled", 0, 6);
    assert!(broker.sigterm_and_wait().success());

    // Garbage where the next batch would start (over any zero padding).
    let file = broker.segment_files("garbled", 0).pop().expect("a segment");
    let batches = batches_in_file(&file);
    let (last_position, last_bytes) = batches[batches.len() - 1];
    let mut bytes = std::fs::read(&file).expect("read");
    let end = last_position + last_bytes;
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251 + 1) as u8).collect();
    bytes.truncate(end);
    bytes.extend_from_slice(&garbage);
    std::fs::write(&file, &bytes).expect("write garbage");
    broker.restart();
    assert_eq!(high_watermark(broker.port, "garbled", 0), 12);
    assert_eq!(values(&broker, "garbled"), expected_values(0..6));
    produce_batches(&broker, "garbled", 6, 1);

    // A flipped bit inside the 5th batch: it and everything after go.
    assert!(broker.sigterm_and_wait().success());
    let file = broker.segment_files("garbled", 0).pop().expect("a segment");
    let batches = batches_in_file(&file);
    assert_eq!(batches.len(), 7);
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[batches[4].0 + BATCH_HEADER_BYTES + 3] ^= 0x10;
    std::fs::write(&file, &bytes).expect("write");
    broker.restart();
    assert_eq!(high_watermark(broker.port, "garbled", 0), 8);
    assert_eq!(values(&broker, "garbled"), expected_values(0..4));
}

#[test]
fn lost_and_garbage_indexes_are_rebuilt() {
    let mut broker = Broker::start_with(1, &["--segment-bytes", "4096"]);
    create_topic(broker.port, "indexed", 1);
    let mut stream = connect(broker.port);
    // 200 one-record batches, timestamps 10 ms apart, over many segments.
    for i in 0..200i64 {
        let value = format!("{i:04}-{}", "i".repeat(100));
        let records = [RawRecord {
            key: None,
            value: Some(value.as_bytes()),
            timestamp_delta: 0,
            headers: &[],
        }];
        assert_eq!(
            produce(
                &mut stream,
                "indexed",
                0,
                batch_of(&records, 1_000 + i * 10).freeze()
            ),
            (0, i)
        );
    }
    assert!(broker.sigterm_and_wait().success());
    let dir = broker.data_dir.join("indexed-0");
    let mut damaged = 0;
    for entry in std::fs::read_dir(&dir).expect("list") {
        let path = entry.expect("entry").path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("index") => {
                std::fs::remove_file(&path).expect("remove index");
                damaged += 1;
            }
            Some("timeindex") => {
                std::fs::write(&path, vec![0xab; 36]).expect("garble time index");
                damaged += 1;
            }
            _ => {}
        }
    }
    assert!(
        damaged > 4,
        "indexes of several segments damaged ({damaged})"
    );
    broker.restart();
    for offset in [0i64, 37, 99, 150, 199] {
        assert_eq!(
            list_offset(broker.port, "indexed", 0, 1_000 + offset * 10 - 3),
            (0, offset),
            "by time, just before record {offset}"
        );
        let mut stream = connect(broker.port);
        let fetched = fetch(&mut stream, "indexed", 0, offset, 0, 0);
        let batches = parse_batches(&fetched.records);
        assert_eq!(
            batches.first().map(|b| b.base_offset),
            Some(offset),
            "fetch at {offset}"
        );
        assert_eq!(
            batches[0].values(),
            vec![Some(
                format!("{offset:04}-{}", "i".repeat(100)).into_bytes()
            )]
        );
    }
}

#[test]
fn a_crash_while_creating_topics_keeps_every_acknowledged_one() {
    let mut broker = Broker::start(&["--auto-create-topics", "false"]);
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, i32)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let port = broker.port;
    let creator = {
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            for i in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let name = format!("t{i:04}");
                let partitions = 1 + i % 3;
                // A connection refused or closed by the kill ends the run.
                let Ok(result) =
                    std::panic::catch_unwind(|| create_topic_with(port, &name, partitions, &[]))
                else {
                    return Ok(());
                };
                if result != 0 {
                    return Err(format!("create {name}: error {result}"));
                }
                acknowledged.lock().expect("lock").push((name, partitions));
            }
            Ok(())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().expect("lock").len() < 40 {
        assert!(
            Instant::now() < deadline,
            "topics are created too slowly:\n{}",
            broker.logs()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    broker.sigkill();
    stop.store(true, Ordering::Relaxed);
    creator
        .join()
        .expect("creator thread")
        .expect("every answered CreateTopics succeeded");
    let acknowledged = acknowledged.lock().expect("lock").clone();

    broker.restart();
    let mut stream = connect(broker.port);
    let metadata: kafka_protocol::messages::MetadataResponse = call(
        &mut stream,
        kafka_protocol::messages::ApiKey::Metadata,
        12,
        &kafka_protocol::messages::MetadataRequest::default().with_topics(None),
    );
    let present: std::collections::HashMap<String, usize> = metadata
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.partitions.len(),
            )
        })
        .collect();
    for (name, partitions) in &acknowledged {
        assert_eq!(
            present.get(name),
            Some(&(*partitions as usize)),
            "acknowledged topic {name} with {partitions} partitions after the crash"
        );
    }
    // And each partition of them is served by its leader.
    let (name, _) = acknowledged.last().expect("some topic");
    let leaders = broker.leaders(name);
    for (partition, leader) in leaders {
        let mut stream = connect(broker.shard_port(leader as usize));
        assert_eq!(
            produce(&mut stream, name, partition, batch(1, 3).freeze()),
            (0, 0),
            "{name}-{partition} after the crash"
        );
    }
}
