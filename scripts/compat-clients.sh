#!/usr/bin/env bash
# Old and other clients against a real tidelog: Debian's kcat and
# python3-confluent-kafka (librdkafka 2.0.2, which breaks on an ApiVersions
# v3 response with tagged fields) and kafka-python. Each check prints
# "ok <name>" or "FAIL <name>"; the last line counts them.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
trap stop_broker EXIT

start_broker --default-partitions 4 --log-cleaner-backoff-ms 300 || exit 1
BOOT="127.0.0.1:$BROKER_PORT"
# Debian's python3-kafka and python3-confluent-kafka live with the system Python.
DEBIAN_PYTHON=/usr/bin/python3
passed=0
failed=0
check() {
    local name="$1"; shift
    if "$@"; then echo "ok $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

kcat_lists_one_broker_per_core() {
    local brokers
    brokers=$(timeout 20 kcat -b "$BOOT" -L -J | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["brokers"]))')
    [ "$brokers" = "2" ]
}

kcat_round_trip() {
    seq 1 1000 | sed 's/^/key-&:value-/' | timeout 30 kcat -b "$BOOT" -P -t kcat-topic -K: -X topic.request.required.acks=all || return 1
    local got
    got=$(timeout 30 kcat -b "$BOOT" -C -t kcat-topic -o beginning -e -q -f '%k:%s\n' | sort | md5sum)
    [ "$got" = "$(seq 1 1000 | sed 's/^/key-&:value-/' | sort | md5sum)" ]
}

kafka_python_round_trip() {
    timeout 60 "$DEBIAN_PYTHON" - "$BOOT" <<'PY'
import sys
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
boot = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=boot)
admin.create_topics([NewTopic("kp-topic", num_partitions=3, replication_factor=1)])
producer = KafkaProducer(bootstrap_servers=boot, acks="all")
futures = [producer.send("kp-topic", key=b"k%d" % i, value=b"v%d" % i) for i in range(300)]
acked = [f.get(timeout=20) for f in futures]
producer.close()
consumer = KafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False, consumer_timeout_ms=5000)
parts = [TopicPartition("kp-topic", p) for p in range(3)]
consumer.assign(parts)
consumer.seek_to_beginning()
seen = {(m.partition, m.offset): m.value for m in consumer}
assert len(seen) == 300, len(seen)
for md in acked:
    assert (md.partition, md.offset) in seen
PY
}

confluent_kafka_old_librdkafka_round_trip() {
    timeout 60 "$DEBIAN_PYTHON" - "$BOOT" <<'PY'
import sys
from confluent_kafka import Producer, Consumer, TopicPartition
boot = sys.argv[1]
acked = []
p = Producer({"bootstrap.servers": boot, "acks": "all"})
for i in range(200):
    p.produce("ck-topic", key=b"k%d" % i, value=b"v%d" % i,
              on_delivery=lambda err, msg: acked.append((err, msg.partition(), msg.offset())))
p.flush(30)
assert len(acked) == 200 and all(e is None for e, _, _ in acked), acked[:3]
c = Consumer({"bootstrap.servers": boot, "group.id": "unused", "enable.auto.commit": False})
md = c.list_topics("ck-topic", timeout=10)
c.assign([TopicPartition("ck-topic", p, 0) for p in md.topics["ck-topic"].partitions])
got = 0
import time
deadline = time.time() + 20
while got < 200 and time.time() < deadline:
    m = c.poll(1.0)
    if m is not None and m.error() is None:
        got += 1
c.close()
assert got == 200, got
PY
}

kcat_balanced_consumers() {
    local dir
    dir=$(mktemp -d)
    # Two members of one group split the partitions: together they read
    # every record once. Both join before anything is produced, so neither
    # can read it all alone before the other arrives.
    "$TIDELOG_BIN" topic --bootstrap-server "$BOOT" create --topic kcat-group-topic --partitions 4 > /dev/null || return 1
    timeout 90 kcat -b "$BOOT" -G kcat-group kcat-group-topic -o beginning -q > "$dir/a" 2>/dev/null &
    local a=$!
    timeout 90 kcat -b "$BOOT" -G kcat-group kcat-group-topic -o beginning -q > "$dir/b" 2>/dev/null &
    local b=$!
    local waited=0
    until "$TIDELOG_BIN" group --bootstrap-server "$BOOT" describe --group kcat-group 2>/dev/null \
        | grep "is Stable with 2 member" >/dev/null; do
        sleep 0.5; waited=$((waited + 1))
        [ "$waited" -lt 60 ] || { echo "the two members never formed a stable group"; kill "$a" "$b"; return 1; }
    done
    # Keyed, so the records spread over the partitions (keyless ones stick
    # to one partition per batch).
    seq 1 1000 | sed 's/.*/&:&/' | timeout 30 kcat -b "$BOOT" -P -K: -t kcat-group-topic -X topic.request.required.acks=all || return 1
    waited=0
    until [ "$(cat "$dir/a" "$dir/b" | wc -l)" -ge 1000 ] || [ "$waited" -ge 60 ]; do
        sleep 0.5; waited=$((waited + 1))
    done
    # A clean close commits what each member read.
    kill -TERM "$a" "$b"; wait "$a" "$b"
    local together
    together=$(cat "$dir/a" "$dir/b" | sort -n | md5sum)
    [ "$together" = "$(seq 1 1000 | md5sum)" ] || { echo "split read: $(wc -l < "$dir/a") + $(wc -l < "$dir/b")"; return 1; }
    [ -s "$dir/a" ] && [ -s "$dir/b" ] || { echo "one member read nothing"; return 1; }
    # The group committed its offsets: a new member reads only what is new.
    seq 1001 1010 | timeout 30 kcat -b "$BOOT" -P -t kcat-group-topic -X topic.request.required.acks=all || return 1
    local resumed
    resumed=$(timeout 60 kcat -b "$BOOT" -G kcat-group kcat-group-topic -e -q 2>/dev/null | sort -n | tr '\n' ' ')
    rm -rf "$dir"
    [ "$resumed" = "$(seq 1001 1010 | tr '\n' ' ')" ] || { echo "resumed with: $resumed"; return 1; }
}

kafka_python_consumer_group() {
    timeout 90 "$DEBIAN_PYTHON" - "$BOOT" <<'PY'
import sys
from kafka import KafkaProducer, KafkaConsumer
boot = sys.argv[1]
producer = KafkaProducer(bootstrap_servers=boot, acks="all")
for f in [producer.send("kp-group-topic", key=b"k%d" % i, value=b"v%d" % i) for i in range(300)]:
    f.get(timeout=20)
def member():
    return KafkaConsumer("kp-group-topic", bootstrap_servers=boot, group_id="kp-group",
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         consumer_timeout_ms=8000)
c = member()
first = [m.value for m in c]
assert len(first) == 300 and len(set(first)) == 300, len(first)
c.commit()
c.close()
for f in [producer.send("kp-group-topic", value=b"new%d" % i) for i in range(5)]:
    f.get(timeout=20)
producer.close()
c = member()
second = sorted(m.value for m in c)
c.close()
assert second == sorted(b"new%d" % i for i in range(5)), second
PY
}

confluent_kafka_old_librdkafka_consumer_group() {
    timeout 90 "$DEBIAN_PYTHON" - "$BOOT" <<'PY'
import sys, time
from confluent_kafka import Producer, Consumer
boot = sys.argv[1]
p = Producer({"bootstrap.servers": boot, "acks": "all"})
for i in range(200):
    p.produce("ck-group-topic", value=b"v%d" % i)
p.flush(30)
def consume(want, seconds):
    c = Consumer({"bootstrap.servers": boot, "group.id": "ck-group",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["ck-group-topic"])
    got = []
    deadline = time.time() + seconds
    while len(got) < want and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    # Nothing more arrives.
    end = time.time() + 2
    while time.time() < end:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
    if got:
        c.commit(asynchronous=False)
    c.close()
    return got
first = consume(200, 40)
assert len(first) == 200 and len(set(first)) == 200, len(first)
for i in range(7):
    p.produce("ck-group-topic", value=b"new%d" % i)
p.flush(30)
second = consume(7, 40)
assert sorted(second) == sorted(b"new%d" % i for i in range(7)), second
PY
}

kafka_python_topic_configs() {
    timeout 60 "$DEBIAN_PYTHON" - "$BOOT" <<'PY'
import sys
from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType
boot = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=boot)
admin.create_topics([NewTopic("kp-configs", num_partitions=1, replication_factor=1,
                              topic_configs={"retention.ms": "7200000"})])
admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-configs",
                                    configs={"retention.ms": "3600000", "retention.bytes": "1048576"})])
def described():
    response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-configs")])[0]
    resource = response.resources[0]
    assert resource[0] == 0, resource  # error code
    # (name, value, read_only, is_default/config_source, is_sensitive, ...)
    return {entry[0]: entry[1] for entry in resource[4]}
configs = described()
assert configs["retention.ms"] == "3600000", configs["retention.ms"]
assert configs["retention.bytes"] == "1048576", configs["retention.bytes"]
# A bad value is refused with INVALID_CONFIG (40).
response = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-configs",
                                               configs={"retention.ms": "soon"})])
assert response.resources[0][0] == 40, response.resources[0]
assert described()["retention.ms"] == "3600000"
PY
}

compacted_topic_with_kafka_python_kcat_and_confluent_kafka() {
    timeout 120 "$DEBIAN_PYTHON" - "$BOOT" <<'PY'
import subprocess, sys, time
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource
boot = sys.argv[1]
topic = "kp-compacted"
KafkaAdminClient(bootstrap_servers=boot).create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
    topic_configs={"cleanup.policy": "compact", "segment.bytes": "16384", "segment.ms": "1000",
                   "min.cleanable.dirty.ratio": "0.01"})])
# librdkafka 2.0.2's admin API changes and reads back a config (AlterConfigs
# replaces the topic's whole set).
admin = AdminClient({"bootstrap.servers": boot})
resource = ConfigResource("topic", topic, set_config={
    "cleanup.policy": "compact", "segment.bytes": "16384", "segment.ms": "1000",
    "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "1000"})
for future in admin.alter_configs([resource]).values():
    future.result(timeout=20)
described = list(admin.describe_configs([ConfigResource("topic", topic)]).values())[0].result(timeout=20)
entry = described["delete.retention.ms"]
assert entry.value == "1000" and entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, (entry.value, entry.source)
assert described["cleanup.policy"].value == "compact", described["cleanup.policy"].value
producer = KafkaProducer(bootstrap_servers=boot, acks="all")
latest = {}
for i in range(5000):
    key = b"key-%02d" % (i % 50)
    metadata = producer.send(topic, key=key, value=b"update-%d" % i).get(timeout=20)
    latest[key] = (metadata.offset, b"update-%d" % i)
producer.flush()
time.sleep(1.2)
metadata = producer.send(topic, key=b"roll", value=b"closes the segment").get(timeout=20)
latest[b"roll"] = (metadata.offset, b"closes the segment")
producer.close()
want = sorted("%d %s %s" % (offset, key.decode(), value.decode()) for key, (offset, value) in latest.items())
deadline = time.time() + 60
while True:
    out = subprocess.run(["kcat", "-b", boot, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                          "-f", "%o %k %s\\n"], capture_output=True, timeout=30).stdout.decode()
    got = sorted(line for line in out.splitlines() if line)
    if got == want:
        break
    assert time.time() < deadline, "kcat still reads %d records, want %d" % (len(got), len(want))
    time.sleep(1)
PY
}

check kcat-lists-one-broker-per-core kcat_lists_one_broker_per_core
check kcat-round-trip kcat_round_trip
check kafka-python-round-trip kafka_python_round_trip
check confluent-kafka-librdkafka-2.0.2-round-trip confluent_kafka_old_librdkafka_round_trip
check kcat-balanced-consumers kcat_balanced_consumers
check kafka-python-consumer-group kafka_python_consumer_group
check kafka-python-topic-configs kafka_python_topic_configs
check compacted-topic-kafka-python-kcat-confluent-kafka compacted_topic_with_kafka_python_kcat_and_confluent_kafka
check confluent-kafka-librdkafka-2.0.2-consumer-group confluent_kafka_old_librdkafka_consumer_group

echo "clients-compat: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
