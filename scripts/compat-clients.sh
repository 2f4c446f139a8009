#!/usr/bin/env bash
# Old and other clients against a real tidelog: Debian's kcat and
# python3-confluent-kafka (librdkafka 2.0.2, which breaks on an ApiVersions
# v3 response with tagged fields) and kafka-python. Each check prints
# "ok <name>" or "FAIL <name>"; the last line counts them.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
trap stop_broker EXIT

start_broker --default-partitions 4 || exit 1
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

check kcat-lists-one-broker-per-core kcat_lists_one_broker_per_core
check kcat-round-trip kcat_round_trip
check kafka-python-round-trip kafka_python_round_trip
check confluent-kafka-librdkafka-2.0.2-round-trip confluent_kafka_old_librdkafka_round_trip

echo "clients-compat: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
