//! An unusable environment gets one line naming the fix and a non-zero
//! exit, quickly; never a panic or a hang.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, scratch_dir};

fn serve(args: &[&str], memlock_bytes: Option<u64>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidelog"));
    command
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(limit) = memlock_bytes {
        // SAFETY: setrlimit only, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlimit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = command.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tidelog did not exit on a start-up error");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `serve` with one shard on a free port and `data_dir`.
fn serve_one_shard(data_dir: &str, memlock_bytes: Option<u64>) -> Output {
    let listen = format!("127.0.0.1:{}", free_ports(1));
    serve(
        &["--cores", "1", "--listen", &listen, "--data-dir", data_dir],
        memlock_bytes,
    )
}

fn one_line(output: &Output) -> String {
    assert!(!output.status.success(), "must exit non-zero");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("tidelog ready"),
        "a broker that failed to start must not announce itself: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line, got: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_string()
}

#[test]
fn port_taken() {
    let port = free_ports(1);
    let _holder = TcpListener::bind(("127.0.0.1", port)).expect("hold the port");
    let data = scratch_dir();
    let listen = format!("127.0.0.1:{port}");
    let output = serve(
        &[
            "--cores",
            "1",
            "--listen",
            &listen,
            "--data-dir",
            data.path().to_str().expect("utf8"),
        ],
        None,
    );
    let line = one_line(&output);
    assert!(
        line.contains(&port.to_string()) && line.contains("--listen"),
        "{line}"
    );
}

#[test]
fn data_dir_unusable() {
    let scratch = scratch_dir();
    let file = scratch.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("file");
    let bad = file.join("data");
    let output = serve_one_shard(bad.to_str().expect("utf8"), None);
    let line = one_line(&output);
    assert!(line.contains("--data-dir"), "{line}");
}

#[test]
fn data_dir_in_use() {
    let data = scratch_dir();
    let path = data.path().to_str().expect("utf8").to_string();
    let first_port = free_ports(1);
    let mut first = Command::new(env!("CARGO_BIN_EXE_tidelog"))
        .args([
            "serve",
            "--cores",
            "1",
            "--listen",
            &format!("127.0.0.1:{first_port}"),
            "--data-dir",
            &path,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("first broker");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", first_port)).is_err() {
        assert!(Instant::now() < deadline, "first broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = serve_one_shard(&path, None);
    let _ = first.kill();
    let _ = first.wait();
    let line = one_line(&output);
    assert!(
        line.contains("in use") && line.contains("--data-dir"),
        "{line}"
    );
}

#[test]
fn memlock_too_low() {
    let data = scratch_dir();
    let output = serve_one_shard(data.path().to_str().expect("utf8"), Some(64 * 1024));
    let line = one_line(&output);
    assert!(
        line.contains("memlock") && line.contains("ulimit -l"),
        "{line}"
    );
}

#[test]
fn bad_flags() {
    for args in [
        &["--cores", "0"][..],
        &["--listen", "nowhere"],
        &["--default-partitions", "0"],
        &["--log-cleaner-io-max-bytes-per-second", "0"],
        &["--log-cleaner-io-max-bytes-per-second", "fast"],
    ] {
        let output = serve(args, None);
        let line = one_line(&output);
        assert!(line.starts_with("tidelog:"), "{line}");
        assert!(line.contains(args[0]), "names the flag: {line}");
    }
}

#[test]
fn a_later_shards_port_taken() {
    // Shard 0's port is free, shard 1's is not: the whole broker refuses
    // to start (it must not run with a shard missing), names that port,
    // and lets shard 0's port go.
    let port = free_ports(2);
    let holder = TcpListener::bind(("127.0.0.1", port + 1)).expect("hold shard 1's port");
    let data = scratch_dir();
    let listen = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let output = serve(
        &[
            "--cores",
            "2",
            "--listen",
            &listen,
            "--data-dir",
            data.path().to_str().expect("utf8"),
        ],
        None,
    );
    let line = one_line(&output);
    assert!(line.contains(&(port + 1).to_string()), "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    drop(holder);
    TcpListener::bind(("127.0.0.1", port)).expect("shard 0's port is free again");
}

#[test]
fn fewer_cores_than_the_placement_needs() {
    let mut broker = common::Broker::start_with(2, &[]);
    broker.create_topic("placed", 2);
    assert!(broker.sigterm_and_wait().success());
    let data_dir = broker.data_dir.to_str().expect("utf8").to_string();
    let output = serve_one_shard(&data_dir, None);
    let line = one_line(&output);
    assert!(line.contains("--cores 2"), "{line}");
}

#[test]
fn a_bad_config_file_is_one_line_naming_the_file() {
    let dir = scratch_dir();
    let path = dir.path().join("tidelog.toml");
    let path_text = path.display().to_string();
    // Missing.
    let output = serve(&["--config", &path_text], None);
    assert!(!output.status.success());
    assert!(
        one_line(&output).contains("tidelog.toml"),
        "{}",
        one_line(&output)
    );
    // Not TOML.
    std::fs::write(&path, "num.partitions = = 3\n").expect("write");
    let output = serve(&["--config", &path_text], None);
    assert!(!output.status.success());
    assert!(one_line(&output).contains("not valid TOML"));
    // A setting tidelog does not know.
    std::fs::write(&path, "log.cleaner.threads = 4\n").expect("write");
    let output = serve(&["--config", &path_text], None);
    assert!(!output.status.success());
    assert!(one_line(&output).contains("log.cleaner.threads"));
}
