//! Acknowledged means durable: kill the broker while a producer streams
//! `acks=all` records, restart it, and find every acknowledged record
//! exactly once, at the offset its acknowledgement named.
//!
//! Exactness: the producer runs with `enable.idempotence=false` and
//! `retries=0`, so librdkafka never sends a record twice; a record may be
//! in the log without an acknowledgement (the kill beat the answer), but
//! an acknowledged one must be there, once, where the broker said.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, Record, TIMEOUT, consume_all};
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig};

const TOPIC: &str = "durable";
const PARTITIONS: i32 = 4;
/// Records the producer would send if never stopped.
const RECORDS_MAX: u64 = 200_000;

/// `(partition, offset, sequence number)` of each acknowledged record.
#[derive(Default)]
struct Acks {
    acked: Mutex<Vec<(i32, i64, u64)>>,
    failed: AtomicU64,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Acks>);

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                let sequence = parse_sequence(message.payload().expect("payload"));
                self.0.acked.lock().expect("lock").push((
                    message.partition(),
                    message.offset(),
                    sequence,
                ));
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn payload(sequence: u64) -> String {
    format!("record-{sequence:07}")
}

fn parse_sequence(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.strip_prefix("record-"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a payload this test sent: {payload:?}"))
}

/// Kills the broker from the producer thread, right after a record was
/// queued: that record (lingering in librdkafka for `linger.ms`) is surely
/// unanswered when the broker dies. Killed from the test thread instead,
/// on a loaded machine the producer thread could be idle long enough for
/// the broker to answer everything queued.
struct KillSwitch {
    pid: u32,
    requested: AtomicBool,
    /// Records queued when the kill was sent; `u64::MAX` until then.
    queued_at_kill: AtomicU64,
}

impl KillSwitch {
    fn new(broker: &Broker) -> Arc<Self> {
        let pid = broker.child.as_ref().expect("broker running").id();
        Arc::new(Self {
            pid,
            requested: AtomicBool::new(false),
            queued_at_kill: AtomicU64::new(u64::MAX),
        })
    }

    /// Asks the producer thread to kill the broker after its next record
    /// and waits (bounded) until it did.
    fn pull(&self) -> u64 {
        self.requested.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let queued = self.queued_at_kill.load(Ordering::SeqCst);
            if queued != u64::MAX {
                return queued;
            }
            assert!(
                Instant::now() < deadline,
                "the producer never killed the broker"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Called by the producer thread after each queued record.
    fn after_send(&self, queued: u64) {
        if self.requested.load(Ordering::Relaxed)
            && self.queued_at_kill.load(Ordering::Relaxed) == u64::MAX
        {
            let pid = i32::try_from(self.pid).expect("pid");
            // SAFETY: kill(2) on the broker child's pid; the test thread
            // reaps it (`Broker::sigkill`) only after this returned.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
            self.queued_at_kill.store(queued, Ordering::SeqCst);
        }
    }
}

/// A producer thread streaming records `0..RECORDS_MAX` (keys spread them
/// over every partition) until `stop`; returns how many it queued.
fn stream_records(
    broker: &Broker,
    recorder: Recorder,
    acks: &'static str,
    stop: Arc<AtomicBool>,
    queued: Arc<AtomicU64>,
    kill: Option<Arc<KillSwitch>>,
) -> std::thread::JoinHandle<()> {
    let producer = broker.base_producer(
        &[
            ("acks", acks),
            ("linger.ms", "1"),
            ("retries", "0"),
            ("enable.idempotence", "false"),
            ("message.timeout.ms", "5000"),
            ("queue.buffering.max.messages", "50000"),
        ],
        recorder,
    );
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut sequence = 0;
        while sequence < RECORDS_MAX && !stop.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "producer thread ran too long");
            let value = payload(sequence);
            let key = format!("key-{}", sequence % 64);
            match producer.send(BaseRecord::to(TOPIC).key(&key).payload(&value)) {
                Ok(()) => {
                    sequence += 1;
                    queued.store(sequence, Ordering::Relaxed);
                    if let Some(kill) = &kill {
                        kill.after_send(sequence);
                    }
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
            if sequence % 256 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        // `stop` comes once the broker is down: what is still queued or in
        // flight can no longer be acknowledged, so fail it now rather
        // than after message.timeout.ms. Every record gets its report.
        if stop.load(Ordering::Relaxed) {
            producer.purge(PurgeConfig::default().queue().inflight());
        }
        // Every report arrives (bounded): flush may return early while a
        // purge is still being delivered, so poll until none is left.
        let deadline = Instant::now() + Duration::from_secs(30);
        let _ = producer.flush(Duration::from_secs(30));
        while producer.in_flight_count() > 0 && Instant::now() < deadline {
            producer.poll(Duration::from_millis(50));
        }
        assert_eq!(producer.in_flight_count(), 0, "reports still outstanding");
    })
}

/// Waits (bounded) until at least `count` acknowledgements arrived.
fn wait_for_acks(broker: &Broker, recorder: &Recorder, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorder.0.acked.lock().expect("lock").len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} records acknowledged in 60 s (failed: {}):\n{}",
            recorder.0.acked.lock().expect("lock").len(),
            recorder.0.failed.load(Ordering::Relaxed),
            broker.logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads the whole topic back and checks it against the acknowledgements;
/// returns each partition's record count (its log end offset).
fn check_log(broker: &Broker, acked: &[(i32, i64, u64)], sent: u64) -> BTreeMap<i32, i64> {
    let consumer = broker.consumer(&[]);
    let records = consume_all(
        &consumer,
        TOPIC,
        PARTITIONS,
        Offset::Beginning,
        Duration::from_secs(60),
    );
    common::assert_contiguous_from_zero(&records);

    let mut by_position: HashMap<(i32, i64), u64> = HashMap::new();
    let mut position_of: HashMap<u64, (i32, i64)> = HashMap::new();
    let mut ends: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    for Record {
        partition,
        offset,
        value,
        ..
    } in &records
    {
        let sequence = parse_sequence(value.as_deref().expect("value"));
        assert!(
            sequence < sent,
            "record {sequence} was never sent ({sent} were)"
        );
        if let Some(other) = position_of.insert(sequence, (*partition, *offset)) {
            panic!("record {sequence} stored twice: at {other:?} and {partition}:{offset}");
        }
        by_position.insert((*partition, *offset), sequence);
        let end = ends.get_mut(partition).expect("partition");
        *end = (*end).max(offset + 1);
    }
    // A partition's records are in the order they were sent: one
    // connection per partition, answered in order, no retries.
    for partition in 0..PARTITIONS {
        let mut sequences: Vec<(i64, u64)> = by_position
            .iter()
            .filter(|((p, _), _)| *p == partition)
            .map(|((_, offset), sequence)| (*offset, *sequence))
            .collect();
        sequences.sort_unstable();
        for pair in sequences.windows(2) {
            assert!(
                pair[0].1 < pair[1].1,
                "partition {partition}: record {} at offset {} before record {} at offset {}",
                pair[0].1,
                pair[0].0,
                pair[1].1,
                pair[1].0
            );
        }
    }
    for (partition, offset, sequence) in acked {
        match by_position.get(&(*partition, *offset)) {
            Some(stored) => assert_eq!(
                stored, sequence,
                "acknowledged record {sequence} at {partition}:{offset}, found record {stored} there"
            ),
            None => panic!(
                "acknowledged record {sequence} at {partition}:{offset} is lost \
                 (partition ends at {})",
                ends[partition]
            ),
        }
    }
    ends
}

/// After recovery, each partition's next offset is its recovered end.
fn assert_offsets_continue(broker: &Broker, ends: &BTreeMap<i32, i64>, tag: &str) {
    let producer = broker.producer(&[]);
    for (partition, end) in ends {
        let value = format!("after-{tag}-{partition}");
        let record = rdkafka::producer::FutureRecord::<(), _>::to(TOPIC)
            .partition(*partition)
            .payload(&value);
        let delivery = common::block_on(producer.send(record, TIMEOUT))
            .unwrap_or_else(|(e, _)| panic!("produce after {tag}: {e}"));
        assert_eq!(
            (delivery.partition, delivery.offset),
            (*partition, *end),
            "the first record after {tag} lands at the recovered log end"
        );
    }
}

#[test]
fn sigkill_while_producing_loses_no_acknowledged_record() {
    sigkill_while_producing(&[]);
}

/// The same with 16 KiB segments: the kill is likely to land near a
/// segment roll, and recovery walks many segments.
#[test]
fn sigkill_while_producing_into_small_segments() {
    let mut broker = sigkill_while_producing(&["--segment-bytes", "16384"]);
    let segments: usize = (0..PARTITIONS)
        .map(|p| broker.segment_files(TOPIC, p).len())
        .sum();
    assert!(
        segments > 2 * PARTITIONS as usize,
        "segments rolled: {segments}"
    );
    broker.sigkill();
}

fn sigkill_while_producing(extra_args: &[&str]) -> Broker {
    let mut broker = Broker::start(extra_args);
    broker.create_topic(TOPIC, PARTITIONS);
    let leaders = broker.leaders(TOPIC);
    assert!(
        leaders.values().any(|l| *l == 0) && leaders.values().any(|l| *l == 1),
        "both shards lead partitions: {leaders:?}"
    );

    let recorder = Recorder::default();
    let stop = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicU64::new(0));
    let kill = KillSwitch::new(&broker);
    let writer = stream_records(
        &broker,
        recorder.clone(),
        "all",
        stop.clone(),
        queued.clone(),
        Some(kill.clone()),
    );
    wait_for_acks(&broker, &recorder, 30_000);
    let queued_at_kill = kill.pull();
    broker.sigkill();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("producer thread");
    let sent = queued.load(Ordering::Relaxed);
    assert!(
        queued_at_kill < RECORDS_MAX,
        "the kill landed after the producer had queued everything; nothing was in flight"
    );
    let acked = recorder.0.acked.lock().expect("lock").clone();
    let failed = recorder.0.failed.load(Ordering::Relaxed);
    assert_eq!(
        acked.len() as u64 + failed,
        sent,
        "every queued record was reported delivered or failed"
    );
    assert!(
        failed > 0,
        "some records were in flight when the broker died"
    );

    broker.restart();
    let ends = check_log(&broker, &acked, sent);
    let stored: i64 = ends.values().sum();
    assert!(stored >= acked.len() as i64);
    eprintln!(
        "sent {sent}, acknowledged {}, failed {failed}, stored after recovery {stored}",
        acked.len()
    );
    assert_offsets_continue(&broker, &ends, "sigkill");

    // A second crash right after recovery: the recovered log and the
    // records appended to it survive too.
    broker.sigkill();
    broker.restart();
    let again: BTreeMap<i32, i64> = {
        let consumer = broker.consumer(&[]);
        let records = consume_all(&consumer, TOPIC, PARTITIONS, Offset::Beginning, TIMEOUT);
        common::assert_contiguous_from_zero(&records);
        let mut ends = BTreeMap::new();
        for record in &records {
            let end = ends.entry(record.partition).or_insert(0);
            *end = (*end).max(record.offset + 1);
        }
        for (partition, end) in &ends {
            let last = records
                .iter()
                .find(|r| r.partition == *partition && r.offset == end - 1)
                .expect("last record");
            assert_eq!(last.value_str(), format!("after-sigkill-{partition}"));
        }
        ends
    };
    let expected: BTreeMap<i32, i64> = ends.iter().map(|(p, e)| (*p, e + 1)).collect();
    assert_eq!(again, expected, "the second recovery kept everything");
    broker
}

#[test]
fn sigterm_while_producing_exits_zero_and_keeps_every_acknowledged_record() {
    let mut broker = Broker::start(&[]);
    broker.create_topic(TOPIC, PARTITIONS);
    let recorder = Recorder::default();
    let stop = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicU64::new(0));
    let writer = stream_records(
        &broker,
        recorder.clone(),
        "1",
        stop.clone(),
        queued.clone(),
        None,
    );
    wait_for_acks(&broker, &recorder, 10_000);
    let stopping = Instant::now();
    let status = broker.sigterm_and_wait();
    eprintln!("stopped in {:?} under load", stopping.elapsed());
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("producer thread");
    assert!(
        status.success(),
        "SIGTERM under load must exit 0, got {status}:\n{}",
        broker.logs()
    );
    let sent = queued.load(Ordering::Relaxed);
    let acked = recorder.0.acked.lock().expect("lock").clone();

    broker.restart();
    let ends = check_log(&broker, &acked, sent);
    assert_offsets_continue(&broker, &ends, "sigterm");
}
