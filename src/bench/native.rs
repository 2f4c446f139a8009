//! The native driver (`--driver native`): a pipelined Kafka-protocol
//! client on glommio, so the load generator is not the bottleneck.
//!
//! One executor per load-generator core (`--cpus`, pinned; one unpinned
//! executor when none are named); producers and consumers are dealt to the
//! executors in turn. A producer keeps one connection per leader and up
//! to `max_in_flight` Produce requests in flight on each: it writes
//! requests, and a reader task per connection takes the answers in order
//! (Kafka answers a connection's requests in the order they came). It
//! builds v2 record batches itself (`record::BatchBuilder`), uncompressed.
//! A consumer keeps one Fetch in flight per leader it reads from.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::{LocalExecutorBuilder, Placement};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::admin::{decode_response, encode_request};
use super::record::{
    BatchBuilder, KeyChooser, ParseProblem, ValueStamp, filler, for_each_record, key_bytes,
};
use super::{
    ACK_TIMEOUT, BenchError, ConsumerTally, DriverOutcome, Live, Plan, ProducerTally, Workload,
};

/// The largest response frame read.
const FRAME_BYTES_MAX: usize = 256 << 20;
/// How long a Fetch waits for data at the broker.
const FETCH_MAX_WAIT_MS: i32 = 100;
/// Socket read buffer per connection.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// How long the broker may take to answer a Produce.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// How long a Fetch answer may take beyond its long-poll wait.
const FETCH_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Refuses what this driver cannot do, before anything starts.
pub fn check(workload: &Workload) -> Result<(), BenchError> {
    if workload.compression != "none" {
        return Err(BenchError::Unsupported(format!(
            "the native driver sends uncompressed batches; use --driver rdkafka for compression={}",
            workload.compression
        )));
    }
    if workload.consumes() && workload.consumer_mode == super::workload::ConsumerMode::Group {
        return Err(BenchError::Unsupported(
            "the native driver assigns partitions; use --driver rdkafka for consumer groups".into(),
        ));
    }
    Ok(())
}

/// A task of one executor.
#[derive(Debug, Clone, Copy)]
enum Role {
    Producer(usize),
    Consumer { set: usize, index: usize },
}

/// Runs the workload on one executor per load-generator core.
pub fn run(plan: Arc<Plan>) -> Result<DriverOutcome, BenchError> {
    let roles = deal_roles(&plan.workload, plan.cpus.len());
    let mut handles = Vec::new();
    for (executor, roles) in roles.into_iter().enumerate() {
        let placement = match plan.cpus.get(executor) {
            Some(cpu) => Placement::Fixed(*cpu),
            None => Placement::Unbound,
        };
        let plan = plan.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("bench-{executor}"))
            .spawn(move || run_executor(plan, roles))
            .map_err(|e| BenchError::Driver(format!("start executor {executor}: {e}")))?;
        handles.push(handle);
    }
    plan.settle_stop_offsets();
    let mut outcome = DriverOutcome::default();
    for handle in handles {
        let (producers, consumers) = handle
            .join()
            .map_err(|e| BenchError::Driver(format!("executor: {e}")))?;
        outcome.producers.extend(producers);
        outcome.consumers.extend(consumers);
    }
    Ok(outcome)
}

/// The tasks of each executor. With no cores named, producers get one
/// unpinned executor and consumers another, so that a producer running at
/// full speed does not starve the consumers (glommio tasks yield only at
/// their awaits); with cores named, tasks are dealt to them in turn.
fn deal_roles(workload: &Workload, cpus: usize) -> Vec<Vec<Role>> {
    let consumers: Vec<Role> = if workload.consumes() {
        (0..workload.consumer_sets)
            .flat_map(|set| (0..workload.consumers).map(move |index| Role::Consumer { set, index }))
            .collect()
    } else {
        Vec::new()
    };
    let producers: Vec<Role> = (0..workload.producers).map(Role::Producer).collect();
    if cpus == 0 {
        return [producers, consumers]
            .into_iter()
            .filter(|roles| !roles.is_empty())
            .collect();
    }
    let mut roles: Vec<Vec<Role>> = vec![Vec::new(); cpus];
    for (index, role) in consumers.into_iter().chain(producers).enumerate() {
        roles[index % cpus].push(role);
    }
    roles
}

async fn run_executor(
    plan: Arc<Plan>,
    roles: Vec<Role>,
) -> (Vec<ProducerTally>, Vec<ConsumerTally>) {
    let mut producer_tasks = Vec::new();
    let mut consumer_tasks = Vec::new();
    for role in roles {
        let plan = plan.clone();
        match role {
            Role::Producer(index) => producer_tasks.push(glommio::spawn_local(async move {
                let tally = produce(&plan, index).await;
                plan.producers_running.fetch_sub(1, Ordering::AcqRel);
                tally
            })),
            Role::Consumer { set, index } => {
                for (leader, partitions) in
                    leaders_of(&plan, &plan.workload.partitions_of_consumer(index))
                {
                    let plan = plan.clone();
                    consumer_tasks.push(glommio::spawn_local(async move {
                        consume(&plan, set, leader, partitions).await
                    }));
                }
            }
        }
    }
    let mut producers = Vec::new();
    for task in producer_tasks {
        producers.push(task.await);
    }
    let mut consumers = Vec::new();
    for task in consumer_tasks {
        consumers.push(task.await);
    }
    (producers, consumers)
}

/// `partitions` grouped by their leader.
fn leaders_of(plan: &Plan, partitions: &[i32]) -> BTreeMap<SocketAddr, Vec<i32>> {
    let mut by_leader: BTreeMap<SocketAddr, Vec<i32>> = BTreeMap::new();
    for partition in partitions {
        by_leader
            .entry(plan.leaders[*partition as usize])
            .or_default()
            .push(*partition);
    }
    by_leader
}

async fn connect(address: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay {address}: {e}"))?;
    Ok(stream)
}

/// Reads one response frame (without its size prefix).
async fn read_frame<R: futures_lite::AsyncRead + Unpin>(reader: &mut R) -> Result<Bytes, String> {
    let mut size = [0u8; 4];
    reader
        .read_exact(&mut size)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let size = usize::try_from(i32::from_be_bytes(size)).unwrap_or(usize::MAX);
    if size > FRAME_BYTES_MAX {
        return Err(format!("response frame of {size} bytes"));
    }
    let mut body = BytesMut::zeroed(size);
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(body.freeze())
}

/// Records of one partition in one Produce request, by intended send time.
struct PendingPartition {
    partition: i32,
    intended_ns: Vec<u64>,
}

/// A Produce request awaiting its answer.
struct Pending {
    correlation_id: i32,
    partitions: Vec<PendingPartition>,
}

/// One producer connection: the write half, and the reader task's queue.
struct ProducerConnection {
    writer: WriteHalf<TcpStream>,
    pending: LocalSender<Pending>,
    /// In-flight slots: taken before a request is written, given back by
    /// the reader when its answer arrives.
    slots: Rc<Semaphore>,
    reader: glommio::task::JoinHandle<()>,
    correlation_id: i32,
    partitions: Vec<i32>,
}

/// What a producer task shares with its reader tasks.
struct Shared {
    plan: Arc<Plan>,
    tally: RefCell<ProducerTally>,
}

/// One producer: creates records on schedule (or as fast as in-flight
/// slots free up), batches them per partition, and sends each leader's
/// batches in one Produce request when a batch is full or has lingered.
async fn produce(plan: &Arc<Plan>, index: usize) -> ProducerTally {
    let w = &plan.workload;
    let shared = Rc::new(Shared {
        plan: plan.clone(),
        tally: RefCell::new(ProducerTally::new(w.partitions)),
    });
    let all: Vec<i32> = (0..w.partitions).collect();
    let mut connections = Vec::new();
    let mut connection_of = vec![0usize; w.partitions as usize];
    for (leader, partitions) in leaders_of(plan, &all) {
        match open_producer_connection(&shared, leader, partitions).await {
            Ok(connection) => {
                for partition in &connection.partitions {
                    connection_of[*partition as usize] = connections.len();
                }
                connections.push(connection);
            }
            Err(error) => {
                shared.tally.borrow_mut().error(0, || error);
                return take_tally(&shared, w.partitions);
            }
        }
    }
    let seed = index as u64 * 7919 + 1;
    let mut chooser = KeyChooser::new(w.key_distribution, w.keys, w.partitions, seed);
    let mut value = filler(w.message_bytes, seed);
    let mut sequences = vec![0u64; w.partitions as usize];
    let mut builders: Vec<BatchBuilder> = (0..w.partitions)
        .map(|_| BatchBuilder::new(w.batch_bytes.min(1 << 20) + w.message_bytes))
        .collect();
    let mut intended: Vec<Vec<u64>> = vec![Vec::new(); w.partitions as usize];
    // When each connection's oldest unsent record was created.
    let mut oldest: Vec<Option<Instant>> = vec![None; connections.len()];
    let linger = Duration::from_millis(w.linger_ms);
    let mut record_index = 0u64;
    let mut sent = 0u64;
    glommio::timer::sleep(plan.started.saturating_duration_since(Instant::now())).await;
    loop {
        let now = Instant::now();
        let producing = now < plan.produce_until;
        // Create every record that is due, stopping early when a batch fills.
        let mut full = None;
        while producing && full.is_none() {
            let due = match plan.intended(record_index) {
                Some(at) if at > now || at >= plan.produce_until => break,
                Some(at) => at,
                None => now,
            };
            let (key, partition) = chooser.pick();
            let p = partition as usize;
            let intended_ns = plan.clock.epoch_ns(due);
            ValueStamp {
                intended_ns,
                producer: index as u32,
                sequence: sequences[p],
            }
            .write(&mut value);
            sequences[p] += 1;
            let key = key.map(key_bytes);
            builders[p].push(
                key.as_ref().map(|k| &k[..]),
                &value,
                (intended_ns / 1_000_000) as i64,
            );
            intended[p].push(intended_ns);
            oldest[connection_of[p]].get_or_insert(due);
            record_index += 1;
            sent += 1;
            if builders[p].size_bytes() >= w.batch_bytes {
                full = Some(connection_of[p]);
            }
        }
        // Send what is full, lingered long enough, or left at the end.
        for (c, connection) in connections.iter_mut().enumerate() {
            let Some(since) = oldest[c] else { continue };
            let ready = full == Some(c) || !producing || now >= since + linger;
            if !ready {
                continue;
            }
            oldest[c] = None;
            let batch = collect_batches(&connection.partitions, &mut builders, &mut intended);
            let records: u64 = batch.iter().map(|(_, _, i)| i.len() as u64).sum();
            Live::add(&plan.live.sent, records);
            Live::add(&plan.live.sent_bytes, records * w.message_bytes as u64);
            if let Err(error) = send_produce(&shared, connection, batch).await {
                shared.tally.borrow_mut().error(records, || error);
                Live::add(&plan.live.errors, records);
            }
        }
        if !producing {
            break;
        }
        // Sleep until the next record is due or a batch has lingered.
        let mut wake = plan
            .intended(record_index)
            .unwrap_or(now)
            .min(plan.produce_until);
        for since in oldest.iter().flatten() {
            wake = wake.min(*since + linger);
        }
        let now = Instant::now();
        if wake > now {
            glommio::timer::sleep(wake - now).await;
        } else {
            futures_lite::future::yield_now().await;
        }
    }
    // Wait (bounded) for every answer, then close the queues so the
    // readers end; a broker that stops answering is reported, not waited on.
    for connection in connections {
        let all_slots = connection.slots.acquire(w.max_in_flight as u64);
        let answered = glommio::timer::timeout(ACK_TIMEOUT, all_slots).await;
        drop(connection.pending);
        match answered {
            Ok(()) => {
                connection.reader.await;
            }
            Err(_) => shared.tally.borrow_mut().error(0, || {
                format!("no answer to every Produce within {ACK_TIMEOUT:?}")
            }),
        }
        drop(connection.writer);
    }
    let mut tally = take_tally(&shared, w.partitions);
    tally.sent = sent;
    tally
}

fn take_tally(shared: &Shared, partitions: i32) -> ProducerTally {
    std::mem::replace(
        &mut *shared.tally.borrow_mut(),
        ProducerTally::new(partitions),
    )
}

/// Takes the finished batches of `partitions`: (partition, batch, intended times).
fn collect_batches(
    partitions: &[i32],
    builders: &mut [BatchBuilder],
    intended: &mut [Vec<u64>],
) -> Vec<(i32, Bytes, Vec<u64>)> {
    let mut batches = Vec::new();
    for partition in partitions {
        let i = *partition as usize;
        if !builders[i].is_empty() {
            batches.push((
                *partition,
                builders[i].finish(),
                std::mem::take(&mut intended[i]),
            ));
        }
    }
    batches
}

async fn open_producer_connection(
    shared: &Rc<Shared>,
    leader: SocketAddr,
    partitions: Vec<i32>,
) -> Result<ProducerConnection, String> {
    let stream = connect(leader).await?;
    let (read_half, writer) = futures_lite::io::split(stream);
    let max_in_flight = shared.plan.workload.max_in_flight;
    let (pending, queue) = local_channel::new_bounded(max_in_flight + 1);
    let slots = Rc::new(Semaphore::new(max_in_flight as u64));
    let reader = glommio::spawn_local(read_produce_answers(
        shared.clone(),
        BufReader::with_capacity(READ_BUFFER_BYTES, read_half),
        queue,
        slots.clone(),
    ))
    .detach();
    Ok(ProducerConnection {
        writer,
        pending,
        slots,
        reader,
        correlation_id: 0,
        partitions,
    })
}

/// Writes one Produce request; with acks=0 the records count as
/// acknowledged once written.
async fn send_produce(
    shared: &Rc<Shared>,
    connection: &mut ProducerConnection,
    batches: Vec<(i32, Bytes, Vec<u64>)>,
) -> Result<(), String> {
    let plan = &shared.plan;
    let w = &plan.workload;
    let expects_answer = w.acks != 0;
    if expects_answer {
        glommio::timer::timeout(ACK_TIMEOUT, connection.slots.acquire(1))
            .await
            .map_err(|e| format!("no in-flight slot freed within {ACK_TIMEOUT:?}: {e}"))?;
    }
    connection.correlation_id = connection.correlation_id.wrapping_add(1);
    let correlation_id = connection.correlation_id;
    let request = ProduceRequest::default()
        .with_acks(w.acks)
        .with_timeout_ms(PRODUCE_TIMEOUT_MS)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(w.topic.clone())))
                .with_partition_data(
                    batches
                        .iter()
                        .map(|(partition, batch, _)| {
                            PartitionProduceData::default()
                                .with_index(*partition)
                                .with_records(Some(batch.clone()))
                        })
                        .collect(),
                ),
        ]);
    let frame = encode_request(
        ApiKey::Produce,
        plan.versions.produce,
        correlation_id,
        &request,
    )
    .map_err(|e| e.to_string());
    let written = match frame {
        Ok(frame) => connection
            .writer
            .write_all(&frame)
            .await
            .map_err(|e| format!("write produce: {e}")),
        Err(e) => Err(e),
    };
    if let Err(error) = written {
        if expects_answer {
            connection.slots.signal(1);
        }
        return Err(error);
    }
    let partitions: Vec<PendingPartition> = batches
        .into_iter()
        .map(|(partition, _, intended_ns)| PendingPartition {
            partition,
            intended_ns,
        })
        .collect();
    if !expects_answer {
        let mut tally = shared.tally.borrow_mut();
        for pending in &partitions {
            let count = pending.intended_ns.len() as u64;
            tally.acked_per_partition[pending.partition as usize] += count;
            Live::add(&plan.live.acked, count);
            Live::add(&plan.live.acked_bytes, count * w.message_bytes as u64);
        }
        return Ok(());
    }
    connection
        .pending
        .send(Pending {
            correlation_id,
            partitions,
        })
        .await
        .map_err(|e| format!("reader gone: {e}"))
}

/// Takes a connection's Produce answers in order and records each
/// partition's acknowledgement latency from its records' intended times.
async fn read_produce_answers(
    shared: Rc<Shared>,
    mut reader: BufReader<ReadHalf<TcpStream>>,
    queue: LocalReceiver<Pending>,
    slots: Rc<Semaphore>,
) {
    let plan = shared.plan.clone();
    let bytes_per_record = plan.workload.message_bytes as u64;
    let mut broken: Option<String> = None;
    while let Some(pending) = queue.recv().await {
        let answer = match &broken {
            Some(reason) => Err(reason.clone()),
            None => match read_frame(&mut reader).await {
                Ok(frame) => decode_response::<ProduceResponse>(
                    ApiKey::Produce,
                    plan.versions.produce,
                    pending.correlation_id,
                    frame,
                )
                .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
        };
        let now_ns = plan.clock.now_ns();
        let mut tally = shared.tally.borrow_mut();
        match answer {
            Ok(response) => {
                let answers: Vec<_> = response
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .collect();
                for part in &pending.partitions {
                    let count = part.intended_ns.len() as u64;
                    let code = answers
                        .iter()
                        .find(|a| a.index == part.partition)
                        .map_or(Some(-1), |a| (a.error_code != 0).then_some(a.error_code));
                    if let Some(code) = code {
                        tally.error(count, || {
                            format!("partition {}: error code {code}", part.partition)
                        });
                        Live::add(&plan.live.errors, count);
                        continue;
                    }
                    tally.acked_per_partition[part.partition as usize] += count;
                    for intended_ns in &part.intended_ns {
                        tally.record_ack(&plan, *intended_ns, now_ns.saturating_sub(*intended_ns));
                    }
                    // The first record of a batch waited longest.
                    if let Some(first) = part.intended_ns.first()
                        && plan.measured(*first)
                    {
                        Live::max(&plan.live.ack_max_ns, now_ns.saturating_sub(*first));
                    }
                    Live::add(&plan.live.acked, count);
                    Live::add(&plan.live.acked_bytes, count * bytes_per_record);
                }
            }
            Err(reason) => {
                let count: u64 = pending
                    .partitions
                    .iter()
                    .map(|p| p.intended_ns.len() as u64)
                    .sum();
                tally.error(count, || reason.clone());
                Live::add(&plan.live.errors, count);
                broken = Some(reason);
            }
        }
        drop(tally);
        slots.signal(1);
    }
}

/// One consumer's partitions on one leader: Fetch, check, repeat, until
/// they reach the offsets the producers left them at.
async fn consume(
    plan: &Plan,
    set: usize,
    leader: SocketAddr,
    partitions: Vec<i32>,
) -> ConsumerTally {
    let mut tally = ConsumerTally::new(set);
    if let Err(error) = fetch_loop(plan, leader, &partitions, &mut tally).await {
        tally.error(|| error);
    }
    tally
}

async fn fetch_loop(
    plan: &Plan,
    leader: SocketAddr,
    partitions: &[i32],
    tally: &mut ConsumerTally,
) -> Result<(), String> {
    let w = &plan.workload;
    let stream = connect(leader).await?;
    let (read_half, mut writer) = futures_lite::io::split(stream);
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let mut positions: Vec<(i32, i64)> = partitions
        .iter()
        .map(|p| (*p, plan.start_offsets[*p as usize]))
        .collect();
    let partition_max_bytes = (8 << 20).max(2 * w.message_bytes as i32 + 1024);
    let topic = TopicName(StrBytes::from_string(w.topic.clone()));
    let mut correlation_id = 0i32;
    while !plan.consumers_done(&positions) {
        correlation_id = correlation_id.wrapping_add(1);
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(FETCH_MAX_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(topic.clone())
                    .with_partitions(
                        positions
                            .iter()
                            .map(|(partition, offset)| {
                                fetch_request::FetchPartition::default()
                                    .with_partition(*partition)
                                    .with_fetch_offset(*offset)
                                    .with_partition_max_bytes(partition_max_bytes)
                            })
                            .collect(),
                    ),
            ]);
        let frame = encode_request(ApiKey::Fetch, plan.versions.fetch, correlation_id, &request)
            .map_err(|e| e.to_string())?;
        writer
            .write_all(&frame)
            .await
            .map_err(|e| format!("write fetch: {e}"))?;
        let answer = glommio::timer::timeout(FETCH_ANSWER_TIMEOUT, async {
            Ok(read_frame(&mut reader).await)
        })
        .await
        .map_err(|_| format!("no Fetch answer within {FETCH_ANSWER_TIMEOUT:?}"))??;
        let response: FetchResponse =
            decode_response(ApiKey::Fetch, plan.versions.fetch, correlation_id, answer)
                .map_err(|e| e.to_string())?;
        if response.error_code != 0 {
            return Err(format!("fetch: error code {}", response.error_code));
        }
        let now_ns = plan.clock.now_ns();
        let (mut received, mut received_bytes) = (0u64, 0u64);
        for data in response.responses.iter().flat_map(|t| t.partitions.iter()) {
            let Some(position) = positions
                .iter_mut()
                .find(|(p, _)| *p == data.partition_index)
            else {
                continue;
            };
            if data.error_code != 0 {
                tally.error(|| {
                    format!(
                        "fetch partition {}: error code {}",
                        position.0, data.error_code
                    )
                });
                continue;
            }
            let Some(records) = &data.records else {
                continue;
            };
            let from = position.1;
            let partition = position.0;
            let next = for_each_record(records, |offset, value| {
                if offset >= from {
                    tally.receive(plan, partition, value, now_ns);
                    received += 1;
                    received_bytes += value.len() as u64;
                }
            });
            match next {
                Ok(Some(next)) => position.1 = position.1.max(next),
                Ok(None) => {}
                Err(ParseProblem::Compressed) => {
                    return Err(
                        "compressed batches: the native consumer reads uncompressed ones only"
                            .into(),
                    );
                }
                Err(ParseProblem::Malformed) => {
                    return Err(format!("partition {partition}: a record does not parse"));
                }
            }
        }
        Live::add(&plan.live.consumed, received);
        Live::add(&plan.live.consumed_bytes, received_bytes);
    }
    Ok(())
}
