//! Test harness: starts the real `tidelog` binary as a child process on
//! free loopback ports, and builds librdkafka clients (the `rdkafka` crate)
//! pointed at it. The broker is killed by pid when the handle drops.
//! `wire` speaks the Kafka protocol by hand over raw TCP, for what a
//! well-behaved client never sends.
//!
//! Every wait here is bounded in time, so a broken broker fails a test
//! instead of hanging it.

#![allow(dead_code)]

pub mod wire;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, FutureProducer, ProducerContext};
use rdkafka::{ClientConfig, Message};

/// How long a start (or restart) may take before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd broker may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The default timeout for one client operation (metadata, admin, consume).
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// A first start whose ports were taken meanwhile (another test's broker,
/// a client socket) is retried on other ports this many times.
const START_ATTEMPTS: usize = 5;

/// A running (or stopped) tidelog child process with its data directory,
/// ports and captured output.
pub struct Broker {
    pub child: Option<Child>,
    /// Shard 0's port; shard i listens on `port + i`.
    pub port: u16,
    pub cores: usize,
    pub data_dir: PathBuf,
    pub extra_args: Vec<String>,
    log_dir: tempfile::TempDir,
    _data: Option<tempfile::TempDir>,
    starts: usize,
}

/// A base port P with P..P+count all free on 127.0.0.1, chosen below the
/// kernel's ephemeral range (32768+): client sockets take their local ports
/// from that range, and one could hold a broker port across a restart (or
/// connect to itself and look like a listening broker).
pub fn free_ports(count: usize) -> u16 {
    let mut state = u64::from(std::process::id()).wrapping_mul(6364136223846793005)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    for _ in 0..500 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let base = 20_000 + (state % 12_000) as u16;
        let bound: Vec<_> = (0..count)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i as u16)))
            .collect();
        if bound.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no run of {count} free ports");
}

/// A temporary directory on a real filesystem (O_DIRECT needs one).
pub fn scratch_dir() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root).expect("target tmpdir");
    tempfile::tempdir_in(root).expect("tempdir")
}

/// The tidelog binary cargo built for these tests.
pub fn tidelog_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidelog"))
}

impl Broker {
    /// Starts a broker with 2 shards and the given extra flags.
    pub fn start(extra_args: &[&str]) -> Broker {
        Broker::start_with(2, extra_args)
    }

    /// Starts a broker with `cores` shards and the given extra flags.
    pub fn start_with(cores: usize, extra_args: &[&str]) -> Broker {
        let data = scratch_dir();
        let mut broker = Broker {
            child: None,
            port: free_ports(cores),
            cores,
            data_dir: data.path().join("data"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log_dir: scratch_dir(),
            _data: Some(data),
            starts: 0,
        };
        for attempt in 1..=START_ATTEMPTS {
            match broker.launch() {
                Ok(()) => return broker,
                // Only a lost race for the ports is retried; anything else
                // is the broker's failure and fails the test.
                Err(logs) if attempt < START_ATTEMPTS && logs.contains("cannot listen") => {
                    broker.port = free_ports(cores);
                }
                Err(logs) => panic!("tidelog did not start:\n{logs}"),
            }
        }
        unreachable!()
    }

    /// `bootstrap.servers` for clients: shard 0.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Shard `index`'s port.
    pub fn shard_port(&self, index: usize) -> u16 {
        assert!(index < self.cores, "shard {index} of {}", self.cores);
        self.port + index as u16
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.log_dir
            .path()
            .join(format!("stderr-{}.log", self.starts))
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.log_dir
            .path()
            .join(format!("stdout-{}.log", self.starts))
    }

    /// stdout and stderr of the current (or last) run, for failure messages.
    pub fn logs(&self) -> String {
        let stdout = std::fs::read_to_string(self.stdout_path()).unwrap_or_default();
        let stderr = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        // Keep failure messages readable: the last 200 lines of stderr.
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(200)..].join("\n");
        format!("--- tidelog stdout ---\n{stdout}--- tidelog stderr (tail) ---\n{tail}")
    }

    /// Starts the child and waits until it is ready; on failure returns
    /// its logs (the child is gone then).
    fn launch(&mut self) -> Result<(), String> {
        self.starts += 1;
        let stdout = File::create(self.stdout_path()).expect("stdout file");
        let stderr = File::create(self.stderr_path()).expect("stderr file");
        let child = tidelog_command()
            .arg("serve")
            .arg("--cores")
            .arg(self.cores.to_string())
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start tidelog");
        self.child = Some(child);
        self.wait_ready()
    }

    /// Ready means: `tidelog ready` on stdout and every shard's port
    /// accepting connections.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "tidelog exited during start-up ({status}):\n{}",
                    self.logs()
                ));
            }
            let announced = std::fs::read_to_string(self.stdout_path())
                .unwrap_or_default()
                .lines()
                .any(|line| line.starts_with("tidelog ready"));
            if announced && self.all_ports_accept() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.sigkill();
                return Err(format!(
                    "tidelog not ready within {START_TIMEOUT:?} (ready line: {announced}):\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn all_ports_accept(&self) -> bool {
        (0..self.cores).all(|i| {
            TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], self.shard_port(i))),
                Duration::from_millis(200),
            )
            .is_ok()
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    /// Sends `signal`, then waits (bounded) for the exit status.
    pub fn signal_and_wait(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tidelog did not stop within {STOP_TIMEOUT:?} of signal {signal}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGTERM)
    }

    /// SIGKILL (no chance to flush anything), then reap.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same ports and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        if let Err(logs) = self.launch() {
            panic!("tidelog did not restart:\n{logs}");
        }
    }

    /// A `FutureProducer` with `acks=all` and short timeouts.
    pub fn producer(&self, extra: &[(&str, &str)]) -> FutureProducer {
        self.client_config(extra).create().expect("producer")
    }

    /// A `BaseProducer` whose delivery reports go to `context`.
    pub fn base_producer<C: ProducerContext>(
        &self,
        extra: &[(&str, &str)],
        context: C,
    ) -> BaseProducer<C> {
        self.client_config(extra)
            .create_with_context(context)
            .expect("producer")
    }

    fn client_config(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("message.timeout.ms", "20000")
            .set("socket.timeout.ms", "10000")
            .set("acks", "all");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config
    }

    /// A consumer for `assign` only (no subscription, no commits);
    /// `group.id` is set because librdkafka insists on one.
    pub fn consumer(&self, extra: &[(&str, &str)]) -> BaseConsumer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "tidelog-tests-unused")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // End of partition is reported after an empty long poll: keep
            // the poll short so reading to the end stays quick.
            .set("fetch.wait.max.ms", "100")
            .set("socket.timeout.ms", "10000");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config.create().expect("consumer")
    }

    pub fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("socket.timeout.ms", "10000")
            .create()
            .expect("admin client")
    }

    /// Creates `topic` with `partitions` partitions through the admin API.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = block_on(self.admin().create_topics([&new_topic], &options))
            .unwrap_or_else(|e| panic!("create_topics: {e}\n{}", self.logs()));
        for result in results {
            result.unwrap_or_else(|e| panic!("create {topic}: {e:?}\n{}", self.logs()));
        }
    }

    /// Each partition of `topic` with its leader's node id, from Metadata.
    pub fn leaders(&self, topic: &str) -> BTreeMap<i32, i32> {
        let consumer = self.consumer(&[]);
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .unwrap_or_else(|e| panic!("metadata: {e}\n{}", self.logs()));
        let topic = &metadata.topics()[0];
        assert!(
            topic.error().is_none(),
            "metadata for {}: {:?}",
            topic.name(),
            topic.error()
        );
        topic
            .partitions()
            .iter()
            .map(|p| (p.id(), p.leader()))
            .collect()
    }

    /// Every `.log` segment file under the data directory, sorted.
    pub fn segment_files(&self, topic: &str, partition: i32) -> Vec<PathBuf> {
        let dir = self.data_dir.join(format!("{topic}-{partition}"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("dir entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        files
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Blocks on a future (rdkafka's delivery and admin futures need no
/// runtime of their own).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures_lite::future::block_on(future)
}

/// A record to produce: key, value and an optional create timestamp.
pub struct Outgoing {
    pub key: String,
    pub value: String,
    pub timestamp: Option<i64>,
}

/// Queues every record (pipelined), then waits for each delivery report;
/// returns where each landed, `(partition, offset)`, in send order.
pub fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = Outgoing>,
) -> Vec<(i32, i64)> {
    let futures: Vec<_> = records
        .into_iter()
        .map(|outgoing| {
            let mut record = rdkafka::producer::FutureRecord::to(topic)
                .key(&outgoing.key)
                .payload(&outgoing.value);
            if let Some(timestamp) = outgoing.timestamp {
                record = record.timestamp(timestamp);
            }
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued")
        })
        .collect();
    futures
        .into_iter()
        .map(|future| {
            let delivery = block_on(future)
                .expect("delivery report")
                .unwrap_or_else(|(e, _)| panic!("not delivered: {e}"));
            (delivery.partition, delivery.offset)
        })
        .collect()
}

/// A consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    pub fn value_str(&self) -> String {
        String::from_utf8(self.value.clone().unwrap_or_default()).expect("utf-8 value")
    }
}

fn owned(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    use rdkafka::message::Headers;
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        timestamp: message.timestamp().to_millis(),
        headers,
    }
}

/// Reads every partition of `topic` from `start` until each reports end
/// of partition (bounded by `timeout`).
pub fn consume_all(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    start: rdkafka::Offset,
    timeout: Duration,
) -> Vec<Record> {
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, start)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut at_end = HashSet::new();
    let mut records = Vec::new();
    let deadline = Instant::now() + timeout;
    while at_end.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "consuming {topic} timed out with {} records, {} partitions at end",
            records.len(),
            at_end.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                records.push(owned(&m));
            }
        }
    }
    records
}

/// Polls until `count` records arrived (end-of-partition events skipped),
/// bounded by `timeout`.
pub fn poll_records(consumer: &BaseConsumer, count: usize, timeout: Duration) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records within {timeout:?}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => records.push(owned(&m)),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("consume error: {e}"),
        }
    }
    records
}

/// Polls until every partition in `partitions` reported end of partition
/// and nothing else arrived: the consumer has resolved its start offsets
/// and waits at the end.
pub fn wait_at_end(consumer: &BaseConsumer, partitions: &[i32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut at_end = HashSet::new();
    while at_end.len() < partitions.len() {
        assert!(Instant::now() < deadline, "consumer never reached the end");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Ok(m)) => panic!("a consumer at the end read {:?}", owned(&m)),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
}

/// Each partition's records must sit at offsets `0, 1, 2, ...` with no
/// gap and no repeat (a consumer skips gaps silently, so check here).
pub fn assert_contiguous_from_zero(records: &[Record]) {
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for record in records {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record.offset);
    }
    for (partition, mut offsets) in by_partition {
        offsets.sort_unstable();
        for (expected, offset) in offsets.iter().enumerate() {
            assert_eq!(
                *offset, expected as i64,
                "partition {partition}: offsets must run 0, 1, 2, ... without gaps or repeats"
            );
        }
    }
}

/// Produces ten keyed records to `topic` (one partition, auto-created) on
/// the broker at `bootstrap` and reads them back from the start; for
/// brokers a test starts itself. The clients are closed before it returns.
pub fn ten_records_round_trip(bootstrap: &str, topic: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    let delivered = produce_all(
        &producer,
        topic,
        (0..10).map(|i| Outgoing {
            key: "k".into(),
            value: format!("v{i}"),
            timestamp: None,
        }),
    );
    assert_eq!(delivered.len(), 10);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let records = consume_all(
        &consumer,
        topic,
        1,
        rdkafka::Offset::Beginning,
        Duration::from_secs(30),
    );
    assert_eq!(records.len(), 10);
}
