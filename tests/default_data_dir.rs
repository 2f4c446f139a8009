//! The README's first command: `tidelog serve` with no data directory flag
//! keeps its data in `./tidelog-data`, relative to where it was started.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, scratch_dir, ten_records_round_trip};

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
    ten_records_round_trip(&format!("127.0.0.1:{port}"), "relative");
    let segment = cwd
        .path()
        .join("tidelog-data/relative-0/00000000000000000000.log");
    assert!(segment.exists(), "data lives in ./tidelog-data");
    let _ = child.kill();
    let _ = child.wait();
}
