# Shared helpers for scripts that start a tidelog of their own.
# Usage: source scripts/lib/broker.sh; start_broker [extra serve flags...]
# Sets BROKER_PID, BROKER_PORT, BROKER_DATA, BROKER_LOG; stop_broker stops it
# by pid. Listens on 127.0.0.1 only, on free ports. BROKER_CORES sets the
# shard count (default 2); BROKER_CPUS (a taskset list, e.g. 0-1) confines
# the whole broker process to those CPUs.

TIDELOG_BIN="${TIDELOG_BIN:-}"

build_tidelog() {
    if [ -z "$TIDELOG_BIN" ]; then
        cargo build --release --quiet --bin tidelog
        TIDELOG_BIN="$(pwd)/target/release/tidelog"
    fi
}

# Prints a port P such that P..P+count-1 are all free on 127.0.0.1.
free_port_range() {
    local count="$1"
    python3 - "$count" <<'PY'
import random, socket, sys
count = int(sys.argv[1])
for _ in range(200):
    # Below the ephemeral range (32768+), where client sockets get ports.
    base = random.randint(20000, 32000 - count)
    socks = []
    try:
        for p in range(base, base + count):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
    except OSError:
        for s in socks: s.close()
        continue
    for s in socks: s.close()
    print(base)
    sys.exit(0)
sys.exit("no free port range")
PY
}

start_broker() {
    local cores="${BROKER_CORES:-2}"
    build_tidelog
    BROKER_PORT="$(free_port_range "$cores")"
    BROKER_DATA="$(mktemp -d "${TMPDIR:-/var/tmp}/tidelog-compat.XXXXXX")"
    BROKER_LOG="$BROKER_DATA.log"
    local pin=()
    if [ -n "${BROKER_CPUS:-}" ]; then pin=(taskset -c "$BROKER_CPUS"); fi
    "${pin[@]}" "$TIDELOG_BIN" serve --cores "$cores" --listen "127.0.0.1:$BROKER_PORT" \
        --data-dir "$BROKER_DATA/data" "$@" >"$BROKER_LOG" 2>&1 &
    BROKER_PID=$!
    local deadline=$((SECONDS + 30))
    until grep -q "tidelog ready" "$BROKER_LOG" 2>/dev/null; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "tidelog exited during start-up:" >&2
            cat "$BROKER_LOG" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "tidelog did not become ready in 30 s" >&2
            return 1
        fi
        sleep 0.2
    done
}

stop_broker() {
    if [ -n "${BROKER_PID:-}" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while kill -0 "$BROKER_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
    if [ -n "${BROKER_DATA:-}" ]; then rm -rf "$BROKER_DATA" "$BROKER_DATA.log"; fi
}
