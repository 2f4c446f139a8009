//! The `tidelog` command line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

use tidelog::config::{
    BrokerConfig, CLEANER_BACKOFF_MS_DEFAULT, CLEANER_DEDUPE_BUFFER_BYTES_DEFAULT,
    CLEANER_DEDUPE_BUFFER_BYTES_MIN, RETENTION_CHECK_INTERVAL_MS_DEFAULT,
    SOCKET_REQUEST_MAX_BYTES_DEFAULT, TAIL_CACHE_BYTES_PER_SHARD_DEFAULT,
};
use tidelog::group::GroupConfig;
use tidelog::metadata::topic_config;
use tidelog::server::{self, StartupError};
use tidelog::storage::LogConfig;

#[derive(Parser, Debug)]
#[command(
    name = "tidelog",
    version,
    // A flag repeated (config file, then command line) takes the last value.
    args_override_self = true,
    about = "A Kafka wire-compatible event-streaming broker, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    Serve(Box<ServeArgs>),
    /// Consumer groups of a running broker: list, describe, delete, reset-offsets.
    Group(tidelog::cli::group::GroupArgs),
    /// Topics of a running broker: create, list, describe, alter, delete.
    Topic(tidelog::cli::topic::TopicArgs),
    /// Run a benchmark workload against a Kafka-compatible broker, or compare two results.
    Bench(Box<tidelog::bench::cli::BenchArgs>),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// A TOML file of broker settings (Kafka's broker config names, e.g.
    /// log.retention.ms = 86400000, or these flags' names); flags given here win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for partition logs and cluster metadata.
    #[arg(long, default_value = "./tidelog-data")]
    data_dir: PathBuf,
    /// Shards to run, one pinned per core [default: one per CPU this
    /// process may run on, e.g. under taskset or a container's cpuset].
    #[arg(long)]
    cores: Option<usize>,
    /// Address of shard 0; shard i listens on PORT+i.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// Host name advertised to clients in Metadata [default: the --listen host].
    #[arg(long)]
    advertise: Option<String>,
    /// Create unknown topics when a client's Metadata request asks for them.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    auto_create_topics: bool,
    /// Partitions of an auto-created topic, or of CreateTopics with -1 (Kafka's num.partitions).
    #[arg(long, default_value_t = 1)]
    default_partitions: i32,
    /// Largest request accepted, in bytes (Kafka's socket.request.max.bytes).
    #[arg(long, default_value_t = SOCKET_REQUEST_MAX_BYTES_DEFAULT)]
    socket_request_max_bytes: usize,
    /// Default segment size in bytes (Kafka's log.segment.bytes).
    #[arg(long, default_value_t = LogConfig::default().segment_bytes)]
    segment_bytes: u64,
    /// Default largest record batch in bytes (Kafka's message.max.bytes).
    #[arg(long, default_value_t = LogConfig::default().max_message_bytes)]
    max_message_bytes: u32,
    /// Memory per shard for recently produced batches served to fetches.
    #[arg(long, default_value_t = TAIL_CACHE_BYTES_PER_SHARD_DEFAULT)]
    tail_cache_bytes: usize,
    /// Partitions of the __consumer_offsets topic, fixed when it is first
    /// created (Kafka's offsets.topic.num.partitions).
    #[arg(long, default_value_t = GroupConfig::default().offsets_partitions)]
    offsets_topic_num_partitions: i32,
    /// Segment size of the __consumer_offsets topic, fixed when it is first
    /// created (Kafka's offsets.topic.segment.bytes).
    #[arg(long, default_value_t = GroupConfig::default().offsets_segment_bytes)]
    offsets_topic_segment_bytes: u64,
    /// How long a new consumer group waits for more members before its
    /// first rebalance (Kafka's group.initial.rebalance.delay.ms).
    #[arg(long, default_value_t = GroupConfig::default().initial_rebalance_delay_ms)]
    group_initial_rebalance_delay_ms: i32,
    /// Smallest session timeout a group member may ask for (Kafka's group.min.session.timeout.ms).
    #[arg(long, default_value_t = GroupConfig::default().min_session_timeout_ms)]
    group_min_session_timeout_ms: i32,
    /// Largest session timeout a group member may ask for (Kafka's group.max.session.timeout.ms).
    #[arg(long, default_value_t = GroupConfig::default().max_session_timeout_ms)]
    group_max_session_timeout_ms: i32,
    /// Session timeout of consumer-protocol (KIP-848) group members (Kafka's group.consumer.session.timeout.ms).
    #[arg(long, default_value_t = GroupConfig::default().consumer_session_timeout_ms)]
    group_consumer_session_timeout_ms: i32,
    /// Heartbeat interval told to consumer-protocol (KIP-848) group members (Kafka's group.consumer.heartbeat.interval.ms).
    #[arg(long, default_value_t = GroupConfig::default().consumer_heartbeat_interval_ms)]
    group_consumer_heartbeat_interval_ms: i32,
    /// How long an empty group's committed offsets are kept (Kafka's offsets.retention.minutes).
    #[arg(long, default_value_t = GroupConfig::default().offsets_retention_ms / 60_000)]
    offsets_retention_minutes: i64,
    /// How often expired offsets are looked for (Kafka's offsets.retention.check.interval.ms).
    #[arg(long, default_value_t = GroupConfig::default().offsets_retention_check_interval_ms)]
    offsets_retention_check_interval_ms: i64,
    /// How often old segments are deleted by retention.ms/retention.bytes (Kafka's log.retention.check.interval.ms).
    #[arg(long, default_value_t = RETENTION_CHECK_INTERVAL_MS_DEFAULT)]
    log_retention_check_interval_ms: u64,
    /// Default retention.ms: segments whose newest record is older are deleted; -1 keeps them forever (Kafka's log.retention.ms).
    #[arg(long, default_value_t = LogConfig::default().retention_ms, allow_hyphen_values = true)]
    log_retention_ms: i64,
    /// Default retention.bytes: oldest segments are deleted while a partition is larger; -1 for no limit (Kafka's log.retention.bytes).
    #[arg(long, default_value_t = LogConfig::default().retention_bytes, allow_hyphen_values = true)]
    log_retention_bytes: i64,
    /// How often each shard's log cleaner looks for logs to compact (Kafka's log.cleaner.backoff.ms).
    #[arg(long, default_value_t = CLEANER_BACKOFF_MS_DEFAULT)]
    log_cleaner_backoff_ms: u64,
    /// Memory for the log cleaners' key maps, split between the shards; a log with more distinct keys is compacted over several passes (Kafka's log.cleaner.dedupe.buffer.size).
    #[arg(long, default_value_t = CLEANER_DEDUPE_BUFFER_BYTES_DEFAULT)]
    log_cleaner_dedupe_buffer_size: u64,
    /// Bound on the log cleaners' read and write I/O together, in bytes per second, split between the shards; `unlimited` (the default) for none (Kafka's log.cleaner.io.max.bytes.per.second).
    #[arg(long, default_value = "unlimited")]
    log_cleaner_io_max_bytes_per_second: String,
    /// Default cleanup.policy: delete, compact, or compact,delete (Kafka's log.cleanup.policy).
    #[arg(long, default_value = "delete")]
    log_cleanup_policy: String,
    /// Default min.cleanable.dirty.ratio (Kafka's log.cleaner.min.cleanable.ratio).
    #[arg(long, default_value_t = LogConfig::default().min_cleanable_dirty_ratio)]
    log_cleaner_min_cleanable_ratio: f64,
    /// Default delete.retention.ms: how long tombstones stay (Kafka's log.cleaner.delete.retention.ms).
    #[arg(long, default_value_t = LogConfig::default().delete_retention_ms)]
    log_cleaner_delete_retention_ms: i64,
    /// Default min.compaction.lag.ms (Kafka's log.cleaner.min.compaction.lag.ms).
    #[arg(long, default_value_t = LogConfig::default().min_compaction_lag_ms)]
    log_cleaner_min_compaction_lag_ms: i64,
    /// Log filter (tracing's EnvFilter syntax; RUST_LOG overrides it).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let cli = match with_config_file(std::env::args().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(error) => {
            eprintln!("tidelog: {error}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(cli.command, Command::Topic(_) | Command::Group(_)) {
        end_quietly_on_a_closed_stdout();
    }
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Topic(args) => match tidelog::cli::topic::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("tidelog topic: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Group(args) => match tidelog::cli::group::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("tidelog group: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(args) => tidelog::bench::cli::main(*args),
    }
}

/// `topic` and `group` print to stdout, which is often a pipe into `head` or
/// `grep -q` that closes early. Rust ignores SIGPIPE, so the next print
/// would fail with EPIPE and `println!` would panic; the default action ends
/// the process quietly instead, as `cat` ends. Their sockets are unaffected:
/// std's TcpStream sends with MSG_NOSIGNAL. The broker and `bench` keep
/// SIGPIPE ignored (glommio's socket writes do not pass MSG_NOSIGNAL).
fn end_quietly_on_a_closed_stdout() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; called before any
    // thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journal gets plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .init();
    let result = broker_config(args).and_then(server::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tidelog: {error}");
            ExitCode::FAILURE
        }
    }
}

fn broker_config(args: ServeArgs) -> Result<BrokerConfig, StartupError> {
    let invalid = |message: String| StartupError::Invalid(message);
    let listen: SocketAddr = args
        .listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            invalid(format!(
                "--listen {:?} is not a HOST:PORT address",
                args.listen
            ))
        })?;
    let online = online_cpus();
    let shard_count = args.cores.unwrap_or(online.len()).max(1);
    if args.cores == Some(0) {
        return Err(invalid("--cores must be at least 1".into()));
    }
    let last_port = u32::from(listen.port()) + shard_count as u32 - 1;
    if listen.port() == 0 || last_port > u32::from(u16::MAX) {
        return Err(invalid(format!(
            "--listen port {} with {shard_count} shards needs ports {}..={last_port}: pick a port between 1 and {}",
            listen.port(),
            listen.port(),
            u32::from(u16::MAX) + 1 - shard_count as u32
        )));
    }
    if args.default_partitions < 1 {
        return Err(invalid("--default-partitions must be at least 1".into()));
    }
    if args.offsets_topic_num_partitions < 1 {
        return Err(invalid(
            "--offsets-topic-num-partitions must be at least 1".into(),
        ));
    }
    if args.offsets_topic_segment_bytes < 14 {
        return Err(invalid(
            "--offsets-topic-segment-bytes must be at least 14".into(),
        ));
    }
    if args.group_initial_rebalance_delay_ms < 0 {
        return Err(invalid(
            "--group-initial-rebalance-delay-ms must not be negative".into(),
        ));
    }
    if args.group_min_session_timeout_ms < 1
        || args.group_max_session_timeout_ms < args.group_min_session_timeout_ms
    {
        return Err(invalid(
            "--group-min-session-timeout-ms must be at least 1 and at most --group-max-session-timeout-ms".into(),
        ));
    }
    if args.group_consumer_heartbeat_interval_ms < 1
        || args.group_consumer_session_timeout_ms <= args.group_consumer_heartbeat_interval_ms
    {
        return Err(invalid(
            "--group-consumer-heartbeat-interval-ms must be at least 1 and below --group-consumer-session-timeout-ms".into(),
        ));
    }
    if args.offsets_retention_minutes < 1 || args.offsets_retention_check_interval_ms < 1 {
        return Err(invalid(
            "--offsets-retention-minutes and --offsets-retention-check-interval-ms must be at least 1".into(),
        ));
    }
    if args.log_retention_ms < -1 || args.log_retention_bytes < -1 {
        return Err(invalid(
            "--log-retention-ms and --log-retention-bytes must be -1 (no limit) or more".into(),
        ));
    }
    if args.log_retention_check_interval_ms < 1 {
        return Err(invalid(
            "--log-retention-check-interval-ms must be at least 1".into(),
        ));
    }
    if args.log_cleaner_backoff_ms < 1 {
        return Err(invalid(
            "--log-cleaner-backoff-ms must be at least 1".into(),
        ));
    }
    if args.log_cleaner_dedupe_buffer_size < CLEANER_DEDUPE_BUFFER_BYTES_MIN {
        return Err(invalid(format!(
            "--log-cleaner-dedupe-buffer-size must be at least {CLEANER_DEDUPE_BUFFER_BYTES_MIN}"
        )));
    }
    let cleaner_io_max_bytes_per_second =
        parse_bytes_per_second(&args.log_cleaner_io_max_bytes_per_second).ok_or_else(|| {
            invalid(format!(
                "--log-cleaner-io-max-bytes-per-second must be at least 1 (bytes per second) or `unlimited`, not {}",
                args.log_cleaner_io_max_bytes_per_second
            ))
        })?;
    let broker_topic_defaults = [
        (
            topic_config::CLEANUP_POLICY,
            args.log_cleanup_policy.clone(),
        ),
        (
            topic_config::MIN_CLEANABLE_DIRTY_RATIO,
            args.log_cleaner_min_cleanable_ratio.to_string(),
        ),
        (
            topic_config::DELETE_RETENTION_MS,
            args.log_cleaner_delete_retention_ms.to_string(),
        ),
        (
            topic_config::MIN_COMPACTION_LAG_MS,
            args.log_cleaner_min_compaction_lag_ms.to_string(),
        ),
    ];
    for (name, value) in &broker_topic_defaults {
        if let Err(error) = topic_config::validate_one(name, value) {
            return Err(invalid(error.to_string()));
        }
    }
    if args.segment_bytes < 14 {
        return Err(invalid("--segment-bytes must be at least 14".into()));
    }
    let cpus = (0..shard_count).map(|i| online[i % online.len()]).collect();
    let advertised_host = args.advertise.unwrap_or_else(|| listen.ip().to_string());
    // Absolute from here on: glommio opens files relative to no directory,
    // so a relative path would fail at the first segment.
    let data_dir = std::path::absolute(&args.data_dir).map_err(|e| StartupError::DataDir {
        path: args.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let cluster_id = cluster_id(&data_dir)?;
    let log = topic_config::log_config(
        &LogConfig {
            segment_bytes: args.segment_bytes,
            max_message_bytes: args.max_message_bytes,
            retention_ms: args.log_retention_ms,
            retention_bytes: args.log_retention_bytes,
            ..LogConfig::default()
        },
        &broker_topic_defaults
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect(),
    );
    Ok(BrokerConfig {
        data_dir,
        cluster_id,
        shard_count,
        cpus,
        listen_ip: listen.ip(),
        base_port: listen.port(),
        advertised_host,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.default_partitions,
        socket_request_max_bytes: args.socket_request_max_bytes,
        tail_cache_bytes_per_shard: args.tail_cache_bytes,
        retention_check_interval_ms: args.log_retention_check_interval_ms,
        cleaner_backoff_ms: args.log_cleaner_backoff_ms,
        cleaner_dedupe_buffer_bytes: args.log_cleaner_dedupe_buffer_size,
        cleaner_io_max_bytes_per_second,
        log,
        group: GroupConfig {
            offsets_partitions: args.offsets_topic_num_partitions,
            offsets_segment_bytes: args.offsets_topic_segment_bytes,
            consumer_session_timeout_ms: args.group_consumer_session_timeout_ms,
            consumer_heartbeat_interval_ms: args.group_consumer_heartbeat_interval_ms,
            initial_rebalance_delay_ms: args.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: args.group_min_session_timeout_ms,
            max_session_timeout_ms: args.group_max_session_timeout_ms,
            offsets_retention_ms: args.offsets_retention_minutes.saturating_mul(60_000),
            offsets_retention_check_interval_ms: args.offsets_retention_check_interval_ms,
            ..GroupConfig::default()
        },
    })
}

/// The CPUs this process may run on: the online ones within its affinity
/// mask, so `taskset` or a container's cpuset decides where shards go.
fn online_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = match glommio::CpuSet::online() {
        Ok(set) => set.into_iter().map(|location| location.cpu).collect(),
        Err(_) => Vec::new(),
    };
    if let Some(allowed) = allowed_cpus() {
        cpus.retain(|cpu| allowed.contains(cpu));
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        allowed_cpus()
            .filter(|allowed| !allowed.is_empty())
            .unwrap_or_else(|| vec![0])
    } else {
        cpus
    }
}

/// This process's CPU affinity mask, or None where the OS will not say.
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: pid 0 is this thread; `set` is valid for `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return None;
    }
    let max = 8 * size;
    // SAFETY: CPU_ISSET reads within `set` for cpu < 8 * size_of(cpu_set_t).
    Some(
        (0..max)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect(),
    )
}

/// Reads the data directory's cluster id, making one on first start.
fn cluster_id(data_dir: &std::path::Path) -> Result<String, StartupError> {
    let path = data_dir.join("cluster.id");
    let data_dir_error = |e: std::io::Error| StartupError::DataDir {
        path: data_dir.display().to_string(),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            std::fs::create_dir_all(data_dir).map_err(data_dir_error)?;
            let id = uuid::Uuid::new_v4().simple().to_string();
            std::fs::write(&path, &id).map_err(data_dir_error)?;
            Ok(id)
        }
    }
}

/// `tidelog serve --config FILE ...`: the file's settings become flags
/// placed before the command line's own, which therefore win.
fn with_config_file(args: Vec<String>) -> Result<Vec<String>, tidelog::config::ConfigFileError> {
    if args.get(1).map(String::as_str) != Some("serve") {
        return Ok(args);
    }
    let mut path = None;
    for (index, arg) in args.iter().enumerate() {
        if let Some(value) = arg.strip_prefix("--config=") {
            path = Some(value.to_string());
        } else if arg == "--config" {
            path = args.get(index + 1).cloned();
        }
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let flags = tidelog::config::config_file_flags(std::path::Path::new(&path))?;
    let mut combined = args[..2].to_vec();
    combined.extend(flags);
    combined.extend(args[2..].iter().cloned());
    Ok(combined)
}

/// At least one byte per second, or `unlimited` (also Kafka's default,
/// 1.7976931348623157E308, or any value too large to be finite).
fn parse_bytes_per_second(value: &str) -> Option<f64> {
    if value.eq_ignore_ascii_case("unlimited") {
        return Some(f64::INFINITY);
    }
    match value.parse::<f64>() {
        Ok(rate) if rate >= f64::MAX => Some(f64::INFINITY),
        Ok(rate) if rate >= 1.0 => Some(rate),
        _ => None,
    }
}
