//! `tidelog bench`'s flags, and the front end that runs a workload or
//! compares two results.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::report::BenchResult;
use super::workload::{ConsumerMode, KeyDistribution};
use super::{Driver, RunOptions, Workload};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Print two results side by side with the ratios B/A.
    Compare { a: PathBuf, b: PathBuf },
}

/// Flags of a run; each given one overrides the workload file's value.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Any broker of the cluster, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// A workload file (perf/workloads/*.toml); flags override its fields.
    #[arg(long)]
    pub workload: Option<PathBuf>,
    /// Client library producing and consuming.
    #[arg(long, value_enum, default_value_t = Driver::Native)]
    pub driver: Driver,
    /// Cores for the native driver's executors, one pinned executor each
    /// (e.g. 2,3) [default: one unpinned executor for the producers and
    /// one for the consumers].
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Where the JSON result and the SVG chart go.
    #[arg(long, default_value = "bench-results")]
    pub out_dir: PathBuf,
    /// The broker's flush policy, when detection cannot tell.
    #[arg(long)]
    pub flush_policy: Option<String>,
    /// No progress line every second.
    #[arg(long)]
    pub quiet: bool,
    /// Write each measured second's whole acknowledgement-latency histogram
    /// into the result's timeline, so any span of seconds can be pooled
    /// afterwards (perf/compaction-toggle.sh).
    #[arg(long)]
    pub timeline_histograms: bool,
    /// Name of the run, in the report and the result file names.
    #[arg(long)]
    pub name: Option<String>,
    /// Topic to use; created if missing.
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of the topic when it is created.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Producers (each with its own connections).
    #[arg(long)]
    pub producers: Option<usize>,
    /// Consumers per consumer set (0: produce only).
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Consumer sets, each reading every partition.
    #[arg(long)]
    pub consumer_sets: Option<usize>,
    /// Assigned partitions, or Kafka consumer groups (needs broker support).
    #[arg(long, value_enum)]
    pub consumer_mode: Option<ConsumerMode>,
    /// Value bytes per message (at least 20: the stamp rides in the value).
    #[arg(long)]
    pub message_bytes: Option<usize>,
    /// How keys, and with them partitions, are picked.
    #[arg(long, value_enum)]
    pub key_distribution: Option<KeyDistribution>,
    /// Distinct keys for uniform and sequential keys.
    #[arg(long)]
    pub keys: Option<u64>,
    /// 0, 1 or all (-1).
    #[arg(long, value_parser = parse_acks)]
    pub acks: Option<i16>,
    /// none, gzip, snappy, lz4 or zstd (rdkafka driver only, except none).
    #[arg(long)]
    pub compression: Option<String>,
    /// How long a producer waits to fill a batch (linger.ms).
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Largest record batch per partition (batch.size).
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    /// Produce requests in flight per connection.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Target messages/s over all producers, open loop (0: max rate).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seconds produced before measuring starts.
    #[arg(long)]
    pub warmup_seconds: Option<u64>,
    /// Seconds measured.
    #[arg(long)]
    pub duration_seconds: Option<u64>,
}

fn parse_acks(text: &str) -> Result<i16, String> {
    match text {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        other => Err(format!("acks must be 0, 1 or all, not {other:?}")),
    }
}

impl RunArgs {
    /// The workload file (or the defaults) with the given flags applied.
    pub fn workload(&self) -> anyhow::Result<Workload> {
        let mut w = match &self.workload {
            Some(path) => Workload::from_file(path)?,
            None => Workload::default(),
        };
        macro_rules! set {
            ($($field:ident <- $flag:ident),* $(,)?) => {
                $(if let Some(value) = self.$flag.clone() { w.$field = value; })*
            };
        }
        set!(
            name <- name, topic <- topic, partitions <- partitions, producers <- producers,
            consumers <- consumers, consumer_sets <- consumer_sets, consumer_mode <- consumer_mode,
            message_bytes <- message_bytes, key_distribution <- key_distribution, keys <- keys,
            acks <- acks, compression <- compression, linger_ms <- linger_ms,
            batch_bytes <- batch_bytes, max_in_flight <- max_in_flight, rate_per_second <- rate,
            warmup_seconds <- warmup_seconds, duration_seconds <- duration_seconds,
        );
        Ok(w)
    }
}

/// Runs `tidelog bench`.
pub fn main(args: BenchArgs) -> ExitCode {
    let outcome = match args.command {
        Some(BenchCommand::Compare { a, b }) => compare(&a, &b),
        None => run(&args.run),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tidelog bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn compare(a: &Path, b: &Path) -> anyhow::Result<ExitCode> {
    let a = BenchResult::read_json(a)?;
    let b = BenchResult::read_json(b)?;
    print!("{}", super::compare::compare(&a, &b));
    Ok(ExitCode::SUCCESS)
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let workload = args.workload()?;
    let options = RunOptions {
        bootstrap: args.bootstrap.clone(),
        driver: args.driver,
        cpus: args.cpus.clone(),
        flush_policy: args.flush_policy.clone(),
        progress: !args.quiet,
        timeline_histograms: args.timeline_histograms,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let result = super::run(workload, &options)?;
    print!("{}", result.table());
    std::fs::create_dir_all(&args.out_dir)?;
    let stem = format!(
        "{}-{}-{}",
        result.workload.name,
        match result.driver {
            Driver::Native => "native",
            Driver::Rdkafka => "rdkafka",
        },
        result.started_unix_seconds
    );
    let json = args.out_dir.join(format!("{stem}.json"));
    let svg = args.out_dir.join(format!("{stem}.svg"));
    result.write_json(&json)?;
    std::fs::write(&svg, super::svg::chart(&result))?;
    println!("result       {}", json.display());
    println!("chart        {}", svg.display());
    Ok(if result.verification.verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
