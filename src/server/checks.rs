//! Start-up checks: each unusable environment gets one line that names the
//! fix, before any shard starts.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// glommio refuses to start below this memlock limit.
const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;

/// A start-up failure: its message is the one line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "io_uring is unavailable ({0}): tidelog needs Linux 5.8+ with io_uring enabled (sysctl kernel.io_uring_disabled=0)"
    )]
    IoUringUnavailable(String),
    #[error(
        "memlock limit is {limit_bytes} bytes, below the {MEMLOCK_BYTES_MIN} bytes io_uring needs: raise it with `ulimit -l 8192` (or LimitMEMLOCK= in a systemd unit)"
    )]
    MemlockTooLow { limit_bytes: u64 },
    #[error(
        "data directory {path} is not usable ({reason}): choose a writable directory with --data-dir"
    )]
    DataDir { path: String, reason: String },
    #[error(
        "data directory {path} is on a filesystem without O_DIRECT support (tmpfs?): choose another with --data-dir"
    )]
    NoDirectIo { path: String },
    #[error(
        "data directory {path} is in use by another tidelog process: stop it, or choose another with --data-dir"
    )]
    DataDirLocked { path: String },
    #[error(
        "cannot listen on {addr}: {reason}: stop the process using it or choose another port with --listen"
    )]
    Listen { addr: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("shard {shard} failed to start: {reason}")]
    Shard { shard: usize, reason: String },
}

pub fn check_io_uring() -> Result<(), StartupError> {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|value| value.trim() == "2");
    if disabled {
        return Err(StartupError::IoUringUnavailable(
            "disabled by kernel.io_uring_disabled=2".into(),
        ));
    }
    io_uring::IoUring::new(4)
        .map(drop)
        .map_err(|e| StartupError::IoUringUnavailable(e.to_string()))
}

pub fn check_memlock() -> Result<(), StartupError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 {
        // Not knowing the limit is not a reason to refuse to start; glommio
        // will say so itself if it really is too low.
        return Ok(());
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < MEMLOCK_BYTES_MIN {
        return Err(StartupError::MemlockTooLow {
            limit_bytes: limit.rlim_cur,
        });
    }
    Ok(())
}

/// Creates the data directory if needed and proves it takes O_DIRECT
/// writes and fsync.
pub fn check_data_dir(dir: &Path) -> Result<(), StartupError> {
    let failed = |reason: String| StartupError::DataDir {
        path: dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    let probe = dir.join(".tidelog-probe");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(|e| failed(e.to_string()))?;
    file.write_all(b"probe")
        .and_then(|()| file.sync_all())
        .map_err(|e| failed(e.to_string()))?;
    drop(file);
    let direct = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    match direct {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(StartupError::NoDirectIo {
            path: dir.display().to_string(),
        }),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Takes an exclusive lock on the data directory for the life of the
/// process (the returned file holds it).
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartupError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StartupError::DataDir {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StartupError::DataDirLocked {
            path: dir.display().to_string(),
        });
    }
    Ok(file)
}
