//! The load generator behind `tidelog bench`: runs a [`Workload`] against
//! any Kafka-compatible broker and reports throughput and latency.
//!
//! A run: negotiate versions and create the topic ([`admin`]), note every
//! partition's latest offset, start the consumers there and the producers,
//! produce through the warm-up and the measured window, wait for the last
//! acknowledgements, let the consumers drain to the offsets the producers
//! reached, then check what was consumed ([`record::Verifier`]) and report
//! ([`report`]). Two drivers do the producing and consuming: [`native`]
//! (a pipelined client on glommio, one pinned executor per core) and
//! [`librdkafka`] (what a real client sees).
//!
//! Latency is measured from a record's *intended* send time (its slot
//! under the target rate, carried in the record), so a stalled broker
//! cannot hide its stall by slowing the producer down (coordinated
//! omission). Counters shared with the progress line are atomics: this is
//! the client, not the broker's hot path.

pub mod admin;
pub mod cli;
pub mod compare;
pub mod librdkafka;
pub mod native;
pub mod record;
pub mod report;
pub mod svg;
pub mod workload;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

pub use workload::Workload;

use admin::Versions;
use record::Verifier;

/// How long consumers may take to catch up after the producers stop.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long producers may wait for their last acknowledgements.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Slowest latency the histograms hold: an hour, in ns.
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// What can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("workload {path}: {reason}")]
    Workload { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("driver: {0}")]
    Driver(String),
    #[error("result file {path}: {reason}")]
    Result { path: String, reason: String },
}

/// Which client library produces and consumes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// Pipelined Kafka-protocol client on glommio (executors pinned with --cpus).
    Native,
    /// librdkafka through the `rdkafka` crate.
    Rdkafka,
}

/// Wall-clock time in ns since the UNIX epoch, read through a monotonic
/// clock so that differences are exact within a run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_epoch_ns: u64,
}

impl Clock {
    pub fn start() -> Clock {
        let origin_epoch_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock {
            origin: Instant::now(),
            origin_epoch_ns,
        }
    }

    /// `at` in ns since the UNIX epoch.
    pub fn epoch_ns(&self, at: Instant) -> u64 {
        self.origin_epoch_ns + at.saturating_duration_since(self.origin).as_nanos() as u64
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch_ns(Instant::now())
    }
}

/// Running totals, read once a second for the progress line and the
/// throughput timeline.
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub acked: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub consumed: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub errors: AtomicU64,
    /// The slowest acknowledgement and end-to-end latency (ns) since the
    /// progress thread last took them: latency over time, one max a second.
    pub ack_max_ns: AtomicU64,
    pub end_to_end_max_ns: AtomicU64,
}

impl Live {
    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn max(counter: &AtomicU64, value: u64) {
        counter.fetch_max(value, Ordering::Relaxed);
    }
}

/// Everything a driver needs to run a workload, shared by its threads.
#[derive(Debug)]
pub struct Plan {
    pub workload: Workload,
    pub bootstrap: String,
    /// The leader of each partition (index = partition).
    pub leaders: Vec<SocketAddr>,
    /// Each partition's latest offset before producing: consumers start here.
    pub start_offsets: Vec<i64>,
    pub versions: Versions,
    pub clock: Clock,
    pub started: Instant,
    /// Latencies of records intended before this are not recorded.
    pub measure_from: Instant,
    /// Producers stop creating records here.
    pub produce_until: Instant,
    pub live: Live,
    /// Where consumers may stop: each partition's latest offset once every
    /// producer is done; empty when it could not be read.
    pub stop_offsets: OnceLock<Vec<i64>>,
    pub producers_running: AtomicUsize,
    /// Unique per run: names consumer groups.
    pub run_id: String,
    /// Set when the run is over, for the progress thread.
    pub finished: AtomicBool,
    /// Load-generator cores for the native driver.
    pub cpus: Vec<usize>,
    /// Each consumer group's progress (partition -> next offset), so that
    /// no member leaves (and hands its partitions to another, which would
    /// read them again) before the whole group has read everything.
    pub group_positions: Vec<std::sync::Mutex<std::collections::HashMap<i32, i64>>>,
}

impl Plan {
    /// The per-producer rate in records per second (0: unlimited).
    pub fn rate_per_producer(&self) -> f64 {
        self.workload.rate_per_second as f64 / self.workload.producers as f64
    }

    /// When record `index` of one producer is due; `None` at max rate.
    pub fn intended(&self, index: u64) -> Option<Instant> {
        let rate = self.rate_per_producer();
        (rate > 0.0).then(|| self.started + Duration::from_secs_f64(index as f64 / rate))
    }

    /// Whether a record intended at `intended_ns` counts in the latencies.
    pub fn measured(&self, intended_ns: u64) -> bool {
        intended_ns >= self.clock.epoch_ns(self.measure_from)
    }

    /// The measured second (0 = the first after the warm-up) a record
    /// intended at `intended_ns` was due in; `None` during the warm-up.
    pub fn measured_second(&self, intended_ns: u64) -> Option<usize> {
        let since = intended_ns.checked_sub(self.clock.epoch_ns(self.measure_from))?;
        usize::try_from(since / 1_000_000_000).ok()
    }

    /// The consumers' deadline.
    pub fn drain_until(&self) -> Instant {
        self.produce_until + ACK_TIMEOUT + DRAIN_TIMEOUT
    }

    /// Blocks until every producer is done, then publishes the offsets the
    /// consumers must reach. Called once, by the driver's main thread.
    pub fn settle_stop_offsets(&self) {
        while self.producers_running.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let layout = admin::TopicLayout {
            leaders: self.leaders.clone(),
        };
        let offsets =
            admin::latest_offsets(&self.workload.topic, &layout, self.versions.list_offsets)
                .unwrap_or_default();
        let _ = self.stop_offsets.set(offsets);
    }

    /// Whether a consumer at `next_offset` on `partition` has everything.
    pub fn caught_up(&self, partition: i32, next_offset: i64) -> bool {
        match self.stop_offsets.get() {
            Some(stops) => stops
                .get(partition as usize)
                .is_none_or(|stop| next_offset >= *stop),
            None => false,
        }
    }

    /// For consumer groups: whether the record at `offset` of `partition` is
    /// new to group `set` (`false`: another member, or this one before a
    /// rebalance, already delivered it — at-least-once, not an error).
    pub fn claim(&self, set: usize, partition: i32, offset: i64) -> bool {
        let Some(shared) = self.group_positions.get(set) else {
            return true;
        };
        let start = self
            .start_offsets
            .get(partition as usize)
            .copied()
            .unwrap_or(0);
        let mut positions = shared.lock().unwrap_or_else(|p| p.into_inner());
        let next = positions.entry(partition).or_insert(start);
        if offset < *next {
            return false;
        }
        *next = offset + 1;
        true
    }

    /// For consumer groups: records `mine` in group `set`'s progress and
    /// says whether the whole group has read everything.
    pub fn group_done(&self, set: usize, mine: &[(i32, i64)]) -> bool {
        let Some(shared) = self.group_positions.get(set) else {
            return self.consumers_done(mine);
        };
        let mut positions = shared.lock().unwrap_or_else(|p| p.into_inner());
        for (partition, next) in mine {
            let slot = positions.entry(*partition).or_insert(*next);
            *slot = (*slot).max(*next);
        }
        let all: Vec<(i32, i64)> = (0..self.workload.partitions)
            .map(|p| {
                let start = self.start_offsets.get(p as usize).copied().unwrap_or(0);
                (p, positions.get(&p).copied().unwrap_or(start))
            })
            .collect();
        drop(positions);
        self.consumers_done(&all)
    }

    /// Whether consumers should stop: everything read, or out of time.
    pub fn consumers_done(&self, positions: &[(i32, i64)]) -> bool {
        if Instant::now() > self.drain_until() {
            return true;
        }
        match self.stop_offsets.get() {
            Some(stops) if stops.is_empty() => Instant::now() > self.produce_until + ACK_TIMEOUT,
            Some(_) => positions.iter().all(|(p, next)| self.caught_up(*p, *next)),
            None => false,
        }
    }
}

/// A latency histogram in ns.
pub fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1_000, LATENCY_NS_MAX, 3) {
        Ok(histogram) => histogram,
        Err(e) => unreachable!("constant histogram bounds are valid: {e}"),
    }
}

/// A coarser latency histogram in ns (2 significant digits), one per
/// measured second.
fn second_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1_000, LATENCY_NS_MAX, 2) {
        Ok(histogram) => histogram,
        Err(e) => unreachable!("constant histogram bounds are valid: {e}"),
    }
}

/// What one producer saw.
#[derive(Debug)]
pub struct ProducerTally {
    pub ack_latency: Histogram<u64>,
    /// The same acknowledgements by the measured second their records were
    /// due in (index 0 = the first second after the warm-up).
    pub ack_latency_by_second: Vec<Histogram<u64>>,
    /// Acknowledged records per partition (index = partition).
    pub acked_per_partition: Vec<u64>,
    pub sent: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl ProducerTally {
    pub fn new(partitions: i32) -> Self {
        ProducerTally {
            ack_latency: latency_histogram(),
            ack_latency_by_second: Vec::new(),
            acked_per_partition: vec![0; partitions.max(0) as usize],
            sent: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// Records the acknowledgement of a record intended at `intended_ns`
    /// after `latency_ns`, if it is measured.
    pub fn record_ack(&mut self, plan: &Plan, intended_ns: u64, latency_ns: u64) {
        let Some(second) = plan.measured_second(intended_ns) else {
            return;
        };
        self.ack_latency.saturating_record(latency_ns);
        if self.ack_latency_by_second.len() <= second {
            self.ack_latency_by_second
                .resize_with(second + 1, second_histogram);
        }
        self.ack_latency_by_second[second].saturating_record(latency_ns);
    }

    pub fn error(&mut self, records: u64, message: impl FnOnce() -> String) {
        self.errors += records;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }
}

/// What one consumer saw.
#[derive(Debug)]
pub struct ConsumerTally {
    /// Which consumer set (fan-out group) it belongs to.
    pub set: usize,
    pub end_to_end_latency: Histogram<u64>,
    pub verifier: Verifier,
    /// Records a consumer group delivered again after a rebalance (skipped).
    pub redelivered: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl ConsumerTally {
    pub fn new(set: usize) -> Self {
        ConsumerTally {
            set,
            end_to_end_latency: latency_histogram(),
            verifier: Verifier::default(),
            redelivered: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub fn error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    /// Checks one consumed value and records its end-to-end latency.
    pub fn receive(&mut self, plan: &Plan, partition: i32, value: &[u8], now_ns: u64) {
        if let Some(stamp) = self.verifier.check(partition, value)
            && plan.measured(stamp.intended_ns)
        {
            let latency_ns = now_ns.saturating_sub(stamp.intended_ns);
            self.end_to_end_latency.saturating_record(latency_ns);
            Live::max(&plan.live.end_to_end_max_ns, latency_ns);
        }
    }
}

/// What a driver hands back.
#[derive(Debug, Default)]
pub struct DriverOutcome {
    pub producers: Vec<ProducerTally>,
    pub consumers: Vec<ConsumerTally>,
}

/// How the run is set up besides the workload.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub bootstrap: String,
    pub driver: Driver,
    /// Cores for the native driver's executors.
    pub cpus: Vec<usize>,
    /// The broker's flush policy when known better than detection.
    pub flush_policy: Option<String>,
    /// Print a progress line every second.
    pub progress: bool,
    /// Keep each measured second's acknowledgement-latency histogram in the
    /// timeline.
    pub timeline_histograms: bool,
    /// The command line, for the report.
    pub command: String,
}

/// Runs `workload` and returns its result.
pub fn run(workload: Workload, options: &RunOptions) -> Result<report::BenchResult, BenchError> {
    workload.validate()?;
    let mut admin = admin::Admin::connect(&options.bootstrap)?;
    let versions = admin.versions;
    // A workload marked as needing groups still runs with its consumers
    // assigned partitions when `--consumer-mode assign` overrides it.
    let groups_needed =
        workload.consumes() && workload.consumer_mode == workload::ConsumerMode::Group;
    if groups_needed && !versions.consumer_groups {
        return Err(BenchError::Unsupported(format!(
            "workload {} needs consumer groups and the broker at {} does not offer JoinGroup",
            workload.name, options.bootstrap
        )));
    }
    if options.driver == Driver::Native {
        native::check(&workload)?;
    }
    let layout = admin.ensure_topic(&workload.topic, workload.partitions)?;
    let start_offsets = admin::latest_offsets(&workload.topic, &layout, versions.list_offsets)?;
    let flush_policy = options.flush_policy.clone().unwrap_or_else(|| {
        report::flush_policy(
            &admin.topic_configs(&workload.topic),
            &admin.broker_configs(0),
        )
    });
    drop(admin);

    let clock = Clock::start();
    let started = Instant::now() + Duration::from_millis(200);
    let measure_from = started + Duration::from_secs(workload.warmup_seconds);
    let produce_until = measure_from + Duration::from_secs(workload.duration_seconds);
    let plan = Arc::new(Plan {
        bootstrap: options.bootstrap.clone(),
        leaders: layout.leaders,
        start_offsets,
        versions,
        clock,
        started,
        measure_from,
        produce_until,
        live: Live::default(),
        stop_offsets: OnceLock::new(),
        producers_running: AtomicUsize::new(workload.producers),
        run_id: uuid::Uuid::new_v4().simple().to_string(),
        finished: AtomicBool::new(false),
        cpus: options.cpus.clone(),
        group_positions: (0..workload.consumer_sets)
            .map(|_| std::sync::Mutex::default())
            .collect(),
        workload,
    });
    let sampler = {
        let plan = plan.clone();
        let progress = options.progress;
        std::thread::spawn(move || report::sample_every_second(&plan, progress))
    };
    let outcome = match options.driver {
        Driver::Native => native::run(plan.clone()),
        Driver::Rdkafka => librdkafka::run(plan.clone()),
    };
    plan.finished.store(true, Ordering::Release);
    let timeline = sampler
        .join()
        .map_err(|_| BenchError::Driver("the progress thread panicked".into()))?;
    let outcome = outcome?;
    Ok(report::BenchResult::new(
        &plan,
        options,
        flush_policy,
        outcome,
        timeline,
    ))
}
