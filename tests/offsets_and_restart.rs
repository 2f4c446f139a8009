//! Where consumers start (earliest, latest, a timestamp), and what survives
//! a clean restart and a SIGKILL.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use support::{Broker, Outgoing, block_on, consume_all, produce_all};

const TIMEOUT: Duration = Duration::from_secs(30);

fn produce(
    broker: &Broker,
    topic: &str,
    values: impl Iterator<Item = (String, i64)>,
) -> Vec<(i32, i64)> {
    let producer = broker.producer(&[("linger.ms", "2")]);
    produce_all(
        &producer,
        topic,
        values.map(|(value, timestamp)| Outgoing {
            key: "k".into(),
            value,
            timestamp: Some(timestamp),
        }),
    )
}

#[test]
fn consume_from_earliest_latest_and_a_timestamp() {
    let broker = Broker::start(&[]);
    let base = 1_700_000_000_000i64;
    produce(
        &broker,
        "positions",
        (0..100).map(|i| (format!("old-{i}"), base + i * 1000)),
    );

    let consumer = broker.consumer(&[]);
    let earliest = consume_all(&consumer, "positions", 1, Offset::Beginning, TIMEOUT);
    assert_eq!(earliest.len(), 100);
    assert_eq!(earliest[0].offset, 0);

    // Offsets for a timestamp: the first record at or after it.
    let mut query = rdkafka::TopicPartitionList::new();
    query
        .add_partition_offset("positions", 0, Offset::Offset(base + 41_500))
        .expect("query");
    let found = consumer
        .offsets_for_times(query, TIMEOUT)
        .expect("offsets_for_times");
    let element = found.find_partition("positions", 0).expect("partition");
    assert_eq!(element.offset(), Offset::Offset(42));
    let after = consume_all(&consumer, "positions", 1, Offset::Offset(42), TIMEOUT);
    assert_eq!(after.len(), 58);
    assert_eq!(after[0].value.as_deref(), Some(&b"old-42"[..]));

    // From the end: only what is produced afterwards.
    let (low, high) = consumer
        .fetch_watermarks("positions", 0, TIMEOUT)
        .expect("watermarks");
    assert_eq!((low, high), (0, 100));
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset("positions", 0, Offset::End)
        .expect("assignment");
    let latest = broker.consumer(&[]);
    latest.assign(&assignment).expect("assign");
    // End of partition means the consumer has resolved "latest" (offset
    // 100) and is waiting there: only then produce more.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "latest consumer never reached the end"
        );
        match latest.poll(Duration::from_millis(100)) {
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(0))) => break,
            Some(Ok(_)) => panic!("a consumer at the end read an old record"),
            _ => {}
        }
    }
    produce(
        &broker,
        "positions",
        (0..5).map(|i| (format!("new-{i}"), base + 500_000 + i)),
    );
    let mut values = Vec::new();
    while values.len() < 5 {
        assert!(Instant::now() < deadline, "new records not consumed");
        use rdkafka::Message;
        match latest.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                values.push(message.payload().map(<[u8]>::to_vec).unwrap_or_default())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("consume error: {e}"),
        }
    }
    assert_eq!(
        values,
        (0..5)
            .map(|i| format!("new-{i}").into_bytes())
            .collect::<Vec<_>>()
    );
}

#[test]
fn topics_and_data_survive_a_clean_restart() {
    let mut broker = Broker::start(&["--default-partitions", "4"]);
    let first = produce(
        &broker,
        "durable",
        (0..1000).map(|i| (format!("v{i}"), 1_000 + i)),
    );
    let status = broker.sigterm_and_wait();
    assert!(status.success(), "SIGTERM exit status {status}");
    broker.restart();
    let consumer = broker.consumer(&[]);
    let records = consume_all(&consumer, "durable", 4, Offset::Beginning, TIMEOUT);
    assert_eq!(records.len(), 1000);
    let ends_before: HashMap<i32, i64> = first.iter().fold(HashMap::new(), |mut m, (p, o)| {
        let e = m.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
        m
    });
    // Offsets continue where they were.
    let second = produce(
        &broker,
        "durable",
        (0..100).map(|i| (format!("w{i}"), 2_000 + i)),
    );
    for (partition, offset) in second {
        assert!(offset >= ends_before.get(&partition).copied().unwrap_or(0));
    }
}

#[test]
fn sigkill_while_producing_loses_no_acknowledged_record() {
    let mut broker = Broker::start(&["--default-partitions", "4"]);
    let producer = Arc::new(broker.producer(&[
        ("linger.ms", "1"),
        ("retries", "0"),
        ("enable.idempotence", "false"),
        ("message.timeout.ms", "5000"),
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(i32, i64, String)>::new()));
    let writer = {
        let producer = producer.clone();
        let stop = stop.clone();
        let acked = acked.clone();
        std::thread::spawn(move || {
            let mut pending = std::collections::VecDeque::new();
            let mut sent = 0u64;
            let deadline = Instant::now() + Duration::from_secs(40);
            while !stop.load(Ordering::Relaxed) && sent < 1_000_000 && Instant::now() < deadline {
                let value = format!("record-{sent}");
                let record = FutureRecord::to("killed").key("").payload(&value);
                match producer.send_result(record) {
                    Ok(future) => {
                        pending.push_back((value, future));
                        sent += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
                while pending.len() > 20_000 {
                    let (value, future) = pending.pop_front().expect("pending");
                    if let Ok(Ok(d)) = block_on(future) {
                        acked
                            .lock()
                            .expect("lock")
                            .push((d.partition, d.offset, value));
                    }
                }
            }
            for (value, future) in pending {
                if let Ok(Ok(d)) = block_on(future) {
                    acked
                        .lock()
                        .expect("lock")
                        .push((d.partition, d.offset, value));
                }
            }
        })
    };
    // Kill once a good number of records are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 50_000 {
        assert!(
            Instant::now() < deadline,
            "producer made no progress:\n{}",
            broker.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.sigkill();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("producer thread");
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 50_000);

    broker.restart();
    let consumer = broker.consumer(&[]);
    let records = consume_all(
        &consumer,
        "killed",
        4,
        Offset::Beginning,
        Duration::from_secs(60),
    );
    let mut by_position = HashMap::new();
    for record in &records {
        let previous = by_position.insert((record.partition, record.offset), record.value.clone());
        assert!(
            previous.is_none(),
            "offset {}:{} read twice",
            record.partition,
            record.offset
        );
    }
    let mut seen_values = HashMap::new();
    for record in &records {
        *seen_values.entry(record.value.clone()).or_insert(0) += 1;
    }
    for (partition, offset, value) in &acked {
        let stored = by_position
            .get(&(*partition, *offset))
            .unwrap_or_else(|| panic!("acknowledged record {value} at {partition}:{offset} lost"));
        assert_eq!(
            stored.as_deref(),
            Some(value.as_bytes()),
            "at {partition}:{offset}"
        );
        assert_eq!(
            seen_values.get(&Some(value.clone().into_bytes())),
            Some(&1),
            "{value} exactly once"
        );
    }
}
