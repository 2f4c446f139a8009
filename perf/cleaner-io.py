#!/usr/bin/env python3
"""Stands in for the log cleaner's I/O, from outside the broker: the same
reads, writes, syncs and file operations a pass of tidelog's cleaner makes
in perf/compaction-toggle.sh's benchmark, with no cleaner at work. It is
the device's floor for that benchmark: what produce latency pays for the
cleaner's I/O alone, whoever issues it (perf/compaction-toggle.sh --floor).

    perf/cleaner-io.py prepare DIR PASSES
    perf/cleaner-io.py run DIR SECONDS

`prepare` lays out, in DIR (on the broker's file system), four logs of
clean segments and PASSES 1 MiB files for passes to merge away (each pass
of the benchmark removes one segment the load wrote). `run` makes the
benchmark's passes for SECONDS: four back to back at once (the cleaner
catching up with the dirty data of the block before), then one every
0.6 s from 1.8 s on (a segment of one of the four partitions closing),
as the shipped cleaner's passes fall in a compact block of 6 s
(perf/RESULTS.md, 2026-12-07 (afternoon)). Each pass, as a pass of that
benchmark does (its "log compacted" lines: 0.70 MB read from files,
0.70 MB written into two segments, three segments replaced):

- reads the log's clean segments (0.70 MB) and writes two new `.cleaned`
  files of 0.35 MB, in 64 KiB O_DIRECT requests alternating, spread over
  about 40 ms; pads, truncates and fdatasyncs each new file;
- per new file: removes the old segment's two index files, renames the
  new file over it; for the second, syncs the directory, removes a
  merged-away 1 MiB segment and syncs the directory again;
- syncs the directory, writes the two new segments' index files (written
  to a temporary name, fsynced, renamed) and syncs the directory; then
  the cleaner checkpoint the same way.

It runs where it is started (perf/compaction-toggle.sh pins it to the
broker's CPUs at SCHED_IDLE, so, like the cleaner, it takes the CPU only
when produce work does not need it).
"""
import mmap
import os
import sys
import time

REQUEST = 64 * 1024
SEGMENT = 350 * 1024
LOGS = 4
MERGED_AWAY = 1024 * 1024
INDEX_BYTES = 1024
SPREAD_S = 0.040
SCHEDULE_S = [0.0, 0.0, 0.0, 0.0, 1.8, 2.4, 3.0, 3.6]


def buffer(size):
    """A page-aligned buffer of size bytes (O_DIRECT needs aligned memory)."""
    memory = mmap.mmap(-1, size)
    memory.write(os.urandom(min(size, 4096)) * (size // min(size, 4096)))
    return memory


def sync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_small(path, size):
    """As the broker writes index files and checkpoints: a temporary file
    written, fsynced and renamed into place."""
    temporary = path + ".tmp"
    with open(temporary, "wb") as file:
        file.write(os.urandom(size))
        file.flush()
        os.fsync(file.fileno())
    os.rename(temporary, path)


def write_direct(path, size, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    try:
        for at in range(0, size, REQUEST):
            os.pwrite(fd, memoryview(data)[:REQUEST], at)
        os.fsync(fd)
    finally:
        os.close(fd)


def log_dir(root, log):
    return os.path.join(root, f"load-{log}")


def prepare(root, passes):
    data = buffer(REQUEST)
    for log in range(LOGS):
        path = log_dir(root, log)
        os.makedirs(path, exist_ok=True)
        for segment in range(2):
            write_direct(os.path.join(path, f"{segment}.log"), SEGMENT, data)
            for suffix in ("index", "timeindex"):
                write_small(os.path.join(path, f"{segment}.{suffix}"), INDEX_BYTES)
    merged = os.path.join(root, "merged")
    os.makedirs(merged, exist_ok=True)
    for n in range(passes):
        write_direct(os.path.join(merged, f"{n}.log"), MERGED_AWAY, data)
    sync_dir(root)


def one_pass(root, log, data):
    path = log_dir(root, log)
    segments = [os.path.join(path, f"{segment}.log") for segment in range(2)]
    cleaned = [name + ".cleaned" for name in segments]
    readers = [os.open(name, os.O_RDONLY | os.O_DIRECT) for name in segments]
    writers = [os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
               for name in cleaned]
    requests = [(i, at) for i in range(2) for at in range(0, SEGMENT, REQUEST)]
    rest = SPREAD_S / (2 * len(requests))
    try:
        for i, at in requests:
            os.preadv(readers[i], [data], at)
            time.sleep(rest)
            os.pwrite(writers[i], data, at)
            time.sleep(rest)
        for fd in writers:
            os.ftruncate(fd, SEGMENT - 300)
            os.fdatasync(fd)
    finally:
        for fd in readers + writers:
            os.close(fd)
    for i, name in enumerate(segments):
        base = name[: -len(".log")]
        for suffix in ("index", "timeindex"):
            try:
                os.remove(f"{base}.{suffix}")
            except FileNotFoundError:
                pass
        os.rename(cleaned[i], name)
        if i == 1:
            sync_dir(path)
            merged = os.path.join(root, "merged")
            left = sorted(os.listdir(merged))
            if left:
                os.remove(os.path.join(merged, left[0]))
            sync_dir(path)
    sync_dir(path)
    for name in segments:
        base = name[: -len(".log")]
        for suffix in ("index", "timeindex"):
            write_small(f"{base}.{suffix}", INDEX_BYTES)
    sync_dir(path)
    write_small(os.path.join(path, "cleaner-offset-checkpoint"), 16)
    sync_dir(path)


def run(root, seconds):
    data = buffer(REQUEST)
    started = time.monotonic()
    for n, at in enumerate(SCHEDULE_S):
        wait = started + at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if time.monotonic() - started >= seconds:
            break
        one_pass(root, n % LOGS, data)


def main(argv):
    if len(argv) == 3 and argv[0] == "prepare":
        prepare(argv[1], int(argv[2]))
    elif len(argv) == 3 and argv[0] == "run":
        run(argv[1], float(argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
