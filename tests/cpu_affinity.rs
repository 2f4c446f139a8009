//! `tidelog serve` without `--cores` runs one shard per CPU it may run on:
//! under `taskset` or a container's cpuset that is the allowed set, not
//! every online CPU, and every thread stays inside it.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_ports, scratch_dir, ten_records_round_trip, tidelog_command};

/// The CPUs this test process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, written by sched_getaffinity.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is valid for `size` bytes.
    let rc = unsafe { libc::sched_getaffinity(0, size, &mut set) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: every index is below 8 * size_of(cpu_set_t).
    (0..8 * size)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

#[test]
fn shards_follow_the_cpu_affinity_mask() {
    let cpu = *allowed_cpus().last().expect("at least one CPU");
    let data = scratch_dir();
    let port = free_ports(1);
    let stdout_path = data.path().join("stdout.log");
    let stdout = std::fs::File::create(&stdout_path).expect("stdout file");
    let mut command = tidelog_command();
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data.path().join("data"))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null());
    // SAFETY: only an async-signal-safe syscall between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start tidelog");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let out = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        if let Some(line) = out.lines().find(|line| line.starts_with("tidelog ready")) {
            break line.to_string();
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "tidelog exited: {out}"
        );
        assert!(Instant::now() < deadline, "tidelog not ready: {out}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready.starts_with("tidelog ready: 1 shards"), "{ready}");

    // Every thread of the broker (the shard, its helpers) may run on that
    // CPU alone.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    for task in tasks {
        // A thread that ended meanwhile has no status to read.
        let Ok(status) = std::fs::read_to_string(task.expect("task").path().join("status")) else {
            continue;
        };
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim()
            .to_string();
        assert_eq!(allowed, cpu.to_string(), "{status}");
    }

    ten_records_round_trip(&format!("127.0.0.1:{port}"), "pinned");

    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
}
