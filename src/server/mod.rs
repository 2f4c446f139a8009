//! Start-up and the life of a broker process: checks, listeners bound up
//! front (so a taken port fails fast), the metadata log replayed, one pinned
//! glommio executor per shard, and a clean stop on SIGTERM/SIGINT.

pub mod checks;
pub mod connection;

use std::future::Future;
use std::net::TcpListener as StdTcpListener;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{Instrument, info, info_span, warn};

pub use checks::StartupError;

use crate::config::{BrokerConfig, IO_MEMORY_BYTES_PER_SHARD, MESH_CHANNEL_CAPACITY};
use crate::metadata::log::METADATA_DIR;
use crate::metadata::{ClusterView, MetadataLog};
use crate::shard::Shard;
use crate::shard::mesh::{Envelope, Mesh};
use crate::types::ShardId;

/// How often a shard looks at the process-wide stop flag (control plane).
const SIGNAL_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The most connections one shard serves at once.
pub const MAX_CONNECTIONS_PER_SHARD: usize = 10_000;

/// Runs the broker until SIGTERM/SIGINT. Start-up problems come back as a
/// [`StartupError`] before anything is served.
pub fn run(config: BrokerConfig) -> Result<(), StartupError> {
    checks::check_io_uring()?;
    checks::check_memlock()?;
    checks::check_data_dir(&config.data_dir)?;
    let _lock = checks::lock_data_dir(&config.data_dir)?;

    let listeners = bind_listeners(&config)?;
    let (metadata_log, view) =
        MetadataLog::open(&config.data_dir).map_err(|e| StartupError::DataDir {
            path: config.data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
    check_placement_fits(&config, &view)?;
    remove_orphan_partitions(&config.data_dir, &view);

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| StartupError::Invalid(format!("cannot install signal handler: {e}")))?;
    }

    let mesh = (config.shard_count > 1)
        .then(|| MeshBuilder::<Envelope, _>::full(config.shard_count, MESH_CHANNEL_CAPACITY));
    let (ready_sender, ready_receiver) = mpsc::channel::<Result<usize, String>>();
    let mut metadata_log = Some(metadata_log);
    let mut handles = Vec::with_capacity(config.shard_count);
    for (index, listener_fd) in listeners.into_iter().enumerate() {
        let config = config.clone();
        let view = view.clone();
        let log = if index == 0 {
            metadata_log.take()
        } else {
            None
        };
        let mesh = mesh.clone();
        let stop = stop.clone();
        let ready = ready_sender.clone();
        let cpu = config.cpus[index];
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{index}"))
            .io_memory(IO_MEMORY_BYTES_PER_SHARD)
            .spawn(move || async move {
                let span = info_span!("shard", shard = index);
                shard_main(index, config, view, log, mesh, listener_fd, stop, ready)
                    .instrument(span)
                    .await
            })
            .map_err(|e| StartupError::Shard {
                shard: index,
                reason: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(ready_sender);

    for _ in 0..config.shard_count {
        match ready_receiver.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(reason)) => return Err(StartupError::Invalid(reason)),
            Err(_) => {
                return Err(StartupError::Invalid(
                    "a shard exited during start-up".into(),
                ));
            }
        }
    }
    let last_port = config.shard_port(config.shard_count - 1);
    println!(
        "tidelog ready: {} shards, listening on {}:{}-{}, data in {}",
        config.shard_count,
        config.listen_ip,
        config.base_port,
        last_port,
        config.data_dir.display()
    );

    for (index, handle) in handles.into_iter().enumerate() {
        if let Err(error) = handle.join() {
            warn!(shard = index, %error, "shard ended with an error");
        }
    }
    info!("stopped");
    Ok(())
}

/// How long a port that is in use may take to come free: after a SIGKILL
/// the kernel tears the old process's io_uring down asynchronously, and its
/// in-flight accept keeps the old listening socket alive for a moment.
const PORT_IN_USE_GRACE: Duration = Duration::from_secs(3);

fn bind_listeners(config: &BrokerConfig) -> Result<Vec<RawFd>, StartupError> {
    (0..config.shard_count)
        .map(|index| {
            let addr = config.listen_addr(index);
            let deadline = std::time::Instant::now() + PORT_IN_USE_GRACE;
            loop {
                match StdTcpListener::bind(addr) {
                    Ok(listener) => return Ok(listener.into_raw_fd()),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AddrInUse
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        return Err(StartupError::Listen {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        })
        .collect()
}

/// Partitions stay on the shard they were placed on: a restart with fewer
/// shards would leave some with no owner, unreachable.
fn check_placement_fits(config: &BrokerConfig, view: &ClusterView) -> Result<(), StartupError> {
    let needed = view
        .topics()
        .flat_map(|t| t.partition_shards.iter())
        .map(|shard| shard.index() + 1)
        .max()
        .unwrap_or(0);
    if needed > config.shard_count {
        return Err(StartupError::Invalid(format!(
            "data directory {} holds partitions placed on {needed} shards, but only {} were asked for: start with --cores {needed} or more",
            config.data_dir.display(),
            config.shard_count
        )));
    }
    Ok(())
}

/// Removes partition directories of topics the metadata log no longer has
/// (a crash between recording a deletion and removing the files).
fn remove_orphan_partitions(data_dir: &Path, view: &ClusterView) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == METADATA_DIR || !entry.path().is_dir() {
            continue;
        }
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(partition) = partition.parse::<i32>() else {
            continue;
        };
        if crate::shard::validate_topic_name(topic).is_err() {
            continue;
        }
        let known = view
            .topic(topic)
            .is_some_and(|t| partition < t.partition_count());
        if !known {
            warn!(dir = %entry.path().display(), "removing partition directory of a deleted topic");
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                warn!(dir = %entry.path().display(), %error, "could not remove orphan partition");
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    index: usize,
    config: BrokerConfig,
    view: ClusterView,
    metadata_log: Option<MetadataLog>,
    mesh: Option<MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>>,
    listener_fd: RawFd,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<usize, String>>,
) {
    // SAFETY: the descriptor came from a listening std TcpListener whose
    // ownership was released with into_raw_fd for exactly this shard.
    let listener = unsafe { TcpListener::from_raw_fd(listener_fd) };
    let (senders, receivers) = match mesh {
        Some(mesh) => match mesh.join().await {
            Ok((senders, receivers)) => (Some(senders), Some(receivers)),
            Err(error) => {
                let _ = ready.send(Err(format!(
                    "shard {index} could not join the channel mesh: {error}"
                )));
                return;
            }
        },
        None => (None, None),
    };
    let shard = Rc::new(Shard::new(
        ShardId(index as u16),
        Rc::new(config),
        view,
        metadata_log,
        Mesh::new(senders),
    ));
    if let Err(error) = shard.open_owned_logs().await {
        let _ = ready.send(Err(format!(
            "shard {index} could not open its partitions: {error}"
        )));
        return;
    }
    if let Some(mut receivers) = receivers {
        for (peer, receiver) in receivers.streams() {
            let shard = shard.clone();
            glommio::spawn_local(
                async move {
                    while let Some(envelope) = receiver.recv().await {
                        handle_envelope(&shard, peer, envelope);
                    }
                }
                .in_current_span(),
            )
            .detach();
        }
    }
    shard.groups.load_owned(&shard);
    glommio::spawn_local(run_group_timers(shard.clone()).in_current_span()).detach();
    let background = background_queue();
    shard.commit.set_background_queue(background);
    spawn_background(background, run_retention(shard.clone()).in_current_span());
    spawn_background(background, run_cleaner(shard.clone()).in_current_span());
    glommio::spawn_local(watch_stop_flag(shard.clone(), stop).in_current_span()).detach();
    let _ = ready.send(Ok(index));

    accept_loop(&shard, listener).await;
    // Stop accepting, let connections finish what they have in flight.
    while shard.connection_count() > 0 {
        shard.connections_changed.notified().await;
    }
    shard.close_logs().await;
    info!("shard stopped");
}

fn handle_envelope(shard: &Rc<Shard>, _peer: usize, envelope: Envelope) {
    match envelope {
        Envelope::Request { id, from, body } => {
            let shard = shard.clone();
            glommio::spawn_local(
                async move {
                    let reply = shard.handle_control(body).await;
                    shard.mesh.reply(from, id, reply).await;
                }
                .in_current_span(),
            )
            .detach();
        }
        Envelope::Reply { id, body } => shard.mesh.complete(id, body),
    }
}

/// The shard's low-share task queue for background work (retention, the
/// cleaner, index files), so it never takes latency from produce and fetch.
fn background_queue() -> glommio::TaskQueueHandle {
    glommio::executor().create_task_queue(
        glommio::Shares::Static(BACKGROUND_SHARES),
        glommio::Latency::NotImportant,
        "background",
    )
}

fn spawn_background(
    queue: glommio::TaskQueueHandle,
    task: impl std::future::Future<Output = ()> + 'static,
) {
    match glommio::spawn_local_into(task, queue) {
        Ok(task) => {
            task.detach();
        }
        Err(error) => warn!(%error, "could not start background work"),
    }
}

/// Shares of the background task queue (the default queue has 1000).
const BACKGROUND_SHARES: usize = 100;

/// Deletes segments by retention.ms/retention.bytes every
/// `log.retention.check.interval.ms`.
async fn run_retention(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.config.retention_check_interval_ms);
    every(&shard, interval, || shard.enforce_retention()).await;
}

/// Compacts logs with `cleanup.policy=compact` every
/// `log.cleaner.backoff.ms`.
async fn run_cleaner(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.config.cleaner_backoff_ms);
    every(&shard, interval, || shard.clean_logs()).await;
}

/// Runs `work` every `interval` until the shard shuts down.
async fn every<F, W>(shard: &Rc<Shard>, interval: Duration, mut work: W)
where
    W: FnMut() -> F,
    F: Future<Output = ()>,
{
    while !shard.is_shutting_down() {
        let stop = shard.shutdown.notified();
        let woke = future::or(
            async {
                glommio::timer::sleep(interval).await;
                true
            },
            async {
                stop.await;
                false
            },
        )
        .await;
        if !woke {
            break;
        }
        work().await;
    }
}

/// Moves consumer groups on (session expiry, rebalance timeouts, the
/// initial rebalance delay, offset expiry) and runs the flush timer of
/// logs with a relaxed flush policy (`flush.ms`).
async fn run_group_timers(shard: Rc<Shard>) {
    while !shard.is_shutting_down() {
        glommio::timer::sleep(crate::group::coordinator::TICK_INTERVAL).await;
        shard.groups.tick(&shard);
        shard.groups.maybe_compact(&shard);
        shard.sync_due_logs().await;
    }
}

async fn watch_stop_flag(shard: Rc<Shard>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) && !shard.is_shutting_down() {
        glommio::timer::sleep(SIGNAL_POLL_INTERVAL).await;
    }
    info!("stopping");
    shard.begin_shutdown();
}

async fn accept_loop(shard: &Rc<Shard>, listener: TcpListener) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown.notified().await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            return;
        };
        if shard.is_shutting_down() {
            return;
        }
        match accepted {
            Ok(stream) => {
                let peer = match stream.peer_addr() {
                    Ok(peer) => peer,
                    Err(error) => {
                        warn!(%error, "accepted a connection with no peer address");
                        continue;
                    }
                };
                if shard.connection_count() >= MAX_CONNECTIONS_PER_SHARD {
                    warn!(%peer, limit = MAX_CONNECTIONS_PER_SHARD, "too many connections; refusing");
                    continue;
                }
                glommio::spawn_local(
                    connection::serve(shard.clone(), stream, peer).in_current_span(),
                )
                .detach();
            }
            Err(error) => {
                warn!(%error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
