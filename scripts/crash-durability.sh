#!/usr/bin/env bash
# Kill -9 during a 1,000,000-record acks=all produce, restart, and check
# that every acknowledged record is read back exactly once at the offset it
# was acknowledged at. Uses Debian's python3-confluent-kafka (librdkafka).
#
# Usage: scripts/crash-durability.sh [RECORDS] [KILL_AFTER_ACKED]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
trap stop_broker EXIT

RECORDS="${1:-1000000}"
KILL_AFTER="${2:-$((RECORDS / 3))}"
PY=/usr/bin/python3
WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/tidelog-crash.XXXXXX")"

start_broker --default-partitions 4
BOOT="127.0.0.1:$BROKER_PORT"

# Producer: records every acknowledged (partition, offset, value), flushing
# the file as it goes so nothing acknowledged is missed when it is killed.
"$PY" - "$BOOT" "$RECORDS" "$WORK/acked" <<'PY' &
import sys, time
from confluent_kafka import Producer
boot, records, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = open(path, "w", buffering=1)
producer = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 5,
                     "enable.idempotence": False, "retries": 0, "message.timeout.ms": 5000})
def delivered(err, msg):
    if err is None:
        out.write("%d %d %s\n" % (msg.partition(), msg.offset(), msg.value().decode()))
deadline = time.time() + 120
sent = 0
while sent < records and time.time() < deadline:
    try:
        producer.produce("crash", value=b"record-%d" % sent, on_delivery=delivered)
        sent += 1
    except BufferError:
        producer.poll(0.005)
    producer.poll(0)
producer.flush(15)
out.close()
PY
PRODUCER=$!

deadline=$((SECONDS + 120))
until [ "$( { wc -l <"$WORK/acked"; } 2>/dev/null || echo 0)" -ge "$KILL_AFTER" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "producer made too little progress"; exit 1; }
    kill -0 "$PRODUCER" 2>/dev/null || { echo "producer finished before the kill point"; break; }
    sleep 0.05
done
kill -KILL "$BROKER_PID"
echo "killed tidelog (pid $BROKER_PID) with $(wc -l <"$WORK/acked") records acknowledged"
wait "$PRODUCER" || true
BROKER_PID=""

# Restart on the same data directory and ports.
"$TIDELOG_BIN" serve --cores "${BROKER_CORES:-2}" --listen "127.0.0.1:$BROKER_PORT" \
    --data-dir "$BROKER_DATA/data" >"$BROKER_LOG.restart" 2>&1 &
BROKER_PID=$!
until grep -q "tidelog ready" "$BROKER_LOG.restart" 2>/dev/null; do
    kill -0 "$BROKER_PID" 2>/dev/null || { cat "$BROKER_LOG.restart"; exit 1; }
    sleep 0.1
done

"$PY" - "$BOOT" "$WORK/acked" <<'PY'
import sys, time
from confluent_kafka import Consumer, TopicPartition
boot, path = sys.argv[1], sys.argv[2]
acked = {}
for line in open(path):
    parts = line.split()
    if len(parts) == 3:
        acked[(int(parts[0]), int(parts[1]))] = parts[2]
consumer = Consumer({"bootstrap.servers": boot, "group.id": "unused", "enable.auto.commit": False,
                     "enable.partition.eof": True})
partitions = list(consumer.list_topics("crash", timeout=10).topics["crash"].partitions)
consumer.assign([TopicPartition("crash", p, 0) for p in partitions])
stored, at_end, deadline = {}, set(), time.time() + 120
while len(at_end) < len(partitions) and time.time() < deadline:
    msg = consumer.poll(1.0)
    if msg is None:
        continue
    if msg.error():
        if msg.error().code() == -191:  # end of partition
            at_end.add(msg.partition())
        continue
    key = (msg.partition(), msg.offset())
    assert key not in stored, "offset %s read twice" % (key,)
    stored[key] = msg.value().decode()
consumer.close()
lost = [k for k, v in acked.items() if stored.get(k) != v]
counts = {}
for v in stored.values():
    counts[v] = counts.get(v, 0) + 1
duplicated = [v for v in acked.values() if counts.get(v, 0) != 1]
print("acknowledged %d, stored %d, lost %d, not exactly once %d" % (len(acked), len(stored), len(lost), len(duplicated)))
sys.exit(1 if lost or duplicated or len(at_end) < len(partitions) else 0)
PY
echo "crash-durability: 1 passed, 0 failed"
rm -rf "$WORK"
