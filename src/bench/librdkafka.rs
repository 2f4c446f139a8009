//! The librdkafka driver (`--driver rdkafka`): what a real client sees.
//! One thread per producer (a `BaseProducer` polled on its own thread, so
//! delivery reports arrive there) and one per consumer (a `BaseConsumer`
//! that is assigned its partitions, or joins a consumer group).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::record::{KeyChooser, ValueStamp, filler, key_bytes};
use super::workload::ConsumerMode;
use super::{ACK_TIMEOUT, BenchError, ConsumerTally, DriverOutcome, Live, Plan, ProducerTally};

/// How long a poll waits for a message or a delivery report.
const POLL: Duration = Duration::from_millis(1);

/// Runs the workload's producers and consumers, each on its own thread.
pub fn run(plan: Arc<Plan>) -> Result<DriverOutcome, BenchError> {
    let workload = &plan.workload;
    let mut consumers = Vec::new();
    if workload.consumes() {
        for set in 0..workload.consumer_sets {
            for index in 0..workload.consumers {
                let plan = plan.clone();
                consumers.push(std::thread::spawn(move || consume(&plan, set, index)));
            }
        }
    }
    let producers: Vec<_> = (0..workload.producers)
        .map(|index| {
            let plan = plan.clone();
            std::thread::spawn(move || {
                let tally = produce(&plan, index);
                plan.producers_running.fetch_sub(1, Ordering::AcqRel);
                tally
            })
        })
        .collect();
    plan.settle_stop_offsets();
    let mut outcome = DriverOutcome::default();
    for producer in producers {
        let tally = producer
            .join()
            .map_err(|_| BenchError::Driver("a producer thread panicked".into()))??;
        outcome.producers.push(tally);
    }
    for consumer in consumers {
        let tally = consumer
            .join()
            .map_err(|_| BenchError::Driver("a consumer thread panicked".into()))??;
        outcome.consumers.push(tally);
    }
    Ok(outcome)
}

/// What a delivery report needs to know about its record.
struct Sent {
    intended_ns: u64,
    partition: i32,
}

/// Receives a producer's delivery reports (on the producer's own thread,
/// inside `poll`).
struct DeliveryTally {
    plan: Arc<Plan>,
    tally: Mutex<ProducerTally>,
}

impl ClientContext for DeliveryTally {}

impl ProducerContext for DeliveryTally {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        let now_ns = self.plan.clock.now_ns();
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let live = &self.plan.live;
        match result {
            Ok(_) => {
                if let Some(count) = tally.acked_per_partition.get_mut(sent.partition as usize) {
                    *count += 1;
                }
                if self.plan.measured(sent.intended_ns) {
                    let latency_ns = now_ns.saturating_sub(sent.intended_ns);
                    tally.record_ack(&self.plan, sent.intended_ns, latency_ns);
                    Live::max(&live.ack_max_ns, latency_ns);
                }
                Live::add(&live.acked, 1);
                Live::add(&live.acked_bytes, self.plan.workload.message_bytes as u64);
            }
            Err((error, _)) => {
                tally.error(1, || format!("delivery: {error}"));
                Live::add(&live.errors, 1);
            }
        }
    }
}

fn driver_error(what: &str, error: KafkaError) -> BenchError {
    BenchError::Driver(format!("{what}: {error}"))
}

fn producer_config(plan: &Plan) -> ClientConfig {
    let w = &plan.workload;
    let acks = if w.acks == -1 {
        "all".to_string()
    } else {
        w.acks.to_string()
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &plan.bootstrap)
        .set("client.id", "tidelog-bench")
        .set("acks", acks)
        .set("compression.type", &w.compression)
        .set("linger.ms", w.linger_ms.to_string())
        .set("batch.size", w.batch_bytes.to_string())
        .set(
            "max.in.flight.requests.per.connection",
            w.max_in_flight.to_string(),
        )
        .set("enable.idempotence", "false")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000");
    config
}

/// One producer: creates records on schedule (or as fast as the client
/// queue takes them) until `produce_until`, then waits for every report.
fn produce(plan: &Arc<Plan>, index: usize) -> Result<ProducerTally, BenchError> {
    let w = &plan.workload;
    let context = DeliveryTally {
        plan: plan.clone(),
        tally: Mutex::new(ProducerTally::new(w.partitions)),
    };
    let producer: BaseProducer<DeliveryTally> = producer_config(plan)
        .create_with_context(context)
        .map_err(|e| driver_error("create producer", e))?;
    let seed = index as u64 * 7919 + 1;
    let mut chooser = KeyChooser::new(w.key_distribution, w.keys, w.partitions, seed);
    let mut value = filler(w.message_bytes, seed);
    let mut sequences = vec![0u64; w.partitions as usize];
    let mut sent = 0u64;
    let mut send_errors = Vec::new();
    while Instant::now() < plan.started {
        producer.poll(POLL);
    }
    for record_index in 0u64.. {
        let intended = match plan.intended(record_index) {
            Some(at) => {
                while Instant::now() < at {
                    producer.poll(POLL.min(at.saturating_duration_since(Instant::now())));
                }
                at
            }
            None => Instant::now(),
        };
        if intended >= plan.produce_until {
            break;
        }
        let (key, partition) = chooser.pick();
        let sequence = &mut sequences[partition as usize];
        let intended_ns = plan.clock.epoch_ns(intended);
        ValueStamp {
            intended_ns,
            producer: index as u32,
            sequence: *sequence,
        }
        .write(&mut value);
        *sequence += 1;
        let key = key.map(key_bytes);
        let mut record = BaseRecord::with_opaque_to(
            &w.topic,
            Box::new(Sent {
                intended_ns,
                partition,
            }),
        )
        .partition(partition)
        .payload(&value[..]);
        if let Some(key) = &key {
            record = record.key(&key[..]);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(POLL);
                }
                Err((error, _)) => {
                    send_errors.push(error.to_string());
                    break;
                }
            }
        }
        sent += 1;
        Live::add(&plan.live.sent, 1);
        Live::add(&plan.live.sent_bytes, w.message_bytes as u64);
        if sent.is_multiple_of(64) {
            producer.poll(Duration::ZERO);
        }
    }
    let flushed = producer.flush(ACK_TIMEOUT);
    let mut tally = {
        let context = producer.context();
        let mut guard = context.tally.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, ProducerTally::new(w.partitions))
    };
    tally.sent = sent;
    for error in send_errors {
        tally.error(1, || format!("send: {error}"));
    }
    if let Err(error) = flushed {
        tally.error(0, || format!("flush: {error}"));
    }
    Ok(tally)
}

/// One consumer of consumer set `set`: reads from the offsets the
/// partitions had before producing until it reaches the offsets they had
/// after, checking every record.
fn consume(plan: &Plan, set: usize, index: usize) -> Result<ConsumerTally, BenchError> {
    let w = &plan.workload;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &plan.bootstrap)
        .set("client.id", "tidelog-bench")
        .set("group.id", format!("tidelog-bench-{}-{set}", plan.run_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.max.bytes", "67108864")
        .set("max.partition.fetch.bytes", "8388608")
        .create()
        .map_err(|e| driver_error("create consumer", e))?;
    let mut positions: HashMap<i32, i64> = HashMap::new();
    match w.consumer_mode {
        ConsumerMode::Assign => {
            let mut assignment = TopicPartitionList::new();
            for partition in w.partitions_of_consumer(index) {
                let start = plan.start_offsets[partition as usize];
                assignment
                    .add_partition_offset(&w.topic, partition, Offset::Offset(start))
                    .map_err(|e| driver_error("assign", e))?;
                positions.insert(partition, start);
            }
            consumer
                .assign(&assignment)
                .map_err(|e| driver_error("assign", e))?;
        }
        ConsumerMode::Group => consumer
            .subscribe(&[&w.topic])
            .map_err(|e| driver_error("subscribe", e))?,
    }
    let mut tally = ConsumerTally::new(set);
    let mut last_check = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(message)) => {
                let partition = message.partition();
                let offset = message.offset();
                let start = plan
                    .start_offsets
                    .get(partition as usize)
                    .copied()
                    .unwrap_or(0);
                let fresh = match w.consumer_mode {
                    ConsumerMode::Assign => true,
                    ConsumerMode::Group => offset < start || plan.claim(set, partition, offset),
                };
                if !fresh {
                    tally.redelivered += 1;
                } else if offset >= start {
                    let payload = message.payload().unwrap_or_default();
                    tally.receive(plan, partition, payload, plan.clock.now_ns());
                    Live::add(&plan.live.consumed, 1);
                    Live::add(&plan.live.consumed_bytes, payload.len() as u64);
                    positions.insert(partition, offset + 1);
                }
            }
            Some(Err(error)) => tally.error(|| format!("consume: {error}")),
            None => {}
        }
        if last_check.elapsed() >= Duration::from_millis(50) {
            last_check = Instant::now();
            if w.consumer_mode == ConsumerMode::Group {
                let assigned = consumer.assignment().unwrap_or_default();
                for element in assigned.elements() {
                    let partition = element.partition();
                    let start = plan
                        .start_offsets
                        .get(partition as usize)
                        .copied()
                        .unwrap_or(0);
                    positions.entry(partition).or_insert(start);
                }
            }
            let mine: Vec<(i32, i64)> = positions.iter().map(|(p, o)| (*p, *o)).collect();
            let done = match w.consumer_mode {
                ConsumerMode::Assign => plan.consumers_done(&mine),
                ConsumerMode::Group => plan.group_done(set, &mine),
            };
            if done {
                break;
            }
        }
    }
    Ok(tally)
}
