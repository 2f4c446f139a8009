//! Test support: starts the real `tidelog` binary as a child process on
//! free loopback ports, and builds librdkafka clients (the `rdkafka` crate)
//! pointed at it. The broker is stopped by pid when the handle drops.

#![allow(dead_code)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;

pub const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Broker {
    pub child: Option<Child>,
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
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
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

impl Broker {
    /// Starts a broker with 2 shards and the given extra flags.
    pub fn start(extra_args: &[&str]) -> Broker {
        Broker::start_with(2, extra_args)
    }

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
        broker.launch();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.log_dir
            .path()
            .join(format!("stderr-{}.log", self.starts))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    fn launch(&mut self) {
        self.starts += 1;
        let stdout = File::create(
            self.log_dir
                .path()
                .join(format!("stdout-{}.log", self.starts)),
        )
        .expect("stdout file");
        let stderr = File::create(self.stderr_path()).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_tidelog"))
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
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "tidelog exited during start-up ({status}):\n{}",
                    self.logs()
                );
            }
            let all_up = (0..self.cores).all(|i| {
                TcpStream::connect_timeout(
                    &format!("127.0.0.1:{}", self.port + i as u16)
                        .parse()
                        .expect("addr"),
                    Duration::from_millis(200),
                )
                .is_ok()
            });
            if all_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tidelog not ready in time:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "tidelog did not stop within 30 s of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same ports and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        self.launch();
    }

    pub fn producer(&self, extra: &[(&str, &str)]) -> FutureProducer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("message.timeout.ms", "20000")
            .set("acks", "all");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config.create().expect("producer")
    }

    pub fn consumer(&self, extra: &[(&str, &str)]) -> BaseConsumer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "tidelog-tests-unused")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config.create().expect("consumer")
    }

    pub fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client")
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
            let delivery = block_on(future).expect("delivery").expect("delivered");
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

/// Reads every partition of `topic` from `start` until each reports end
/// of partition (bounded by `timeout`).
pub fn consume_all(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    start: rdkafka::Offset,
    timeout: Duration,
) -> Vec<Record> {
    use rdkafka::Message;
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Headers;

    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, start)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut at_end = std::collections::HashSet::new();
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
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    timestamp: m.timestamp().to_millis(),
                    headers,
                });
            }
        }
    }
    records
}
