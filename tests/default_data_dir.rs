//! The README's first command: `tidelog serve` with no data directory flag
//! keeps its data in `./tidelog-data`, relative to where it was started.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Outgoing, consume_all, free_ports, produce_all, scratch_dir};
use rdkafka::Offset;

#[test]
fn the_embedded_default_data_dir_works() {
    let cwd = scratch_dir();
    let port = free_ports(2);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidelog"))
        .args([
            "serve",
            "--cores",
            "2",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tidelog");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_err() {
        assert!(child.try_wait().expect("wait").is_none(), "tidelog exited");
        assert!(Instant::now() < deadline, "tidelog not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let bootstrap = format!("127.0.0.1:{port}");
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    let delivered = produce_all(
        &producer,
        "relative",
        (0..10).map(|i| Outgoing {
            key: "k".into(),
            value: format!("v{i}"),
            timestamp: None,
        }),
    );
    assert_eq!(delivered.len(), 10);
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let records = consume_all(
        &consumer,
        "relative",
        1,
        Offset::Beginning,
        Duration::from_secs(30),
    );
    assert_eq!(records.len(), 10);
    let segment = cwd
        .path()
        .join("tidelog-data/relative-0/00000000000000000000.log");
    assert!(segment.exists(), "data lives in ./tidelog-data");
    // Close the clients while the broker still answers them.
    drop(consumer);
    drop(producer);
    let _ = child.kill();
    let _ = child.wait();
}
