#!/usr/bin/env bash
# librdkafka's own test suite against a running tidelog.
#
# The suite ships inside the rdkafka-sys crate (librdkafka/tests/). This
# script copies that source out of cargo's registry into
# target/librdkafka-compat/ (the registry copy stays pristine), builds the
# library and its test runner once (needs Debian's libssl-dev zlib1g-dev
# libzstd-dev liblz4-dev libsasl2-dev: scripts/install-deps.sh), starts a
# tidelog of its own on free loopback ports, and runs exactly the tests
# listed in tests/librdkafka.allow. Prints "N passed, N failed" and exits
# non-zero if any allowed test fails.
#
# Usage: scripts/compat-librdkafka.sh [TEST_NUMBER ...]   (default: the allow-list)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/lib/broker.sh
trap stop_broker EXIT

BUILD="$ROOT/target/librdkafka-compat"
ALLOW="$ROOT/tests/librdkafka.allow"
# The broker version the suite assumes: gates which features tests use.
KAFKA_VERSION="${TEST_KAFKA_VERSION:-2.8.0}"
PER_TEST_TIMEOUT_SECONDS=300

locate_source() {
    cargo fetch --quiet >/dev/null
    local version
    version=$(cargo metadata --format-version 1 --locked 2>/dev/null |
        python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="rdkafka-sys"))')
    local dir
    for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$version"/librdkafka; do
        if [ -f "$dir/tests/test.c" ]; then
            echo "$dir"
            return 0
        fi
    done
    echo "librdkafka source of rdkafka-sys $version not found in cargo's registry" >&2
    return 1
}

build_suite() {
    local source stamp
    source=$(locate_source)
    stamp="$BUILD/built-from"
    if [ -x "$BUILD/src/tests/test-runner" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$source" ]; then
        return 0
    fi
    echo "building librdkafka and its test suite from $source (once; a few minutes)"
    rm -rf "$BUILD"
    mkdir -p "$BUILD"
    cp -r "$source" "$BUILD/src"
    (
        cd "$BUILD/src"
        ./configure --disable-gssapi >"$BUILD/configure.log" 2>&1
        make -j"$(nproc)" libs >"$BUILD/make-libs.log" 2>&1
        make -C tests -j"$(nproc)" build >"$BUILD/make-tests.log" 2>&1
    ) || {
        echo "building librdkafka's tests failed; see $BUILD/*.log" >&2
        tail -20 "$BUILD"/make-*.log >&2
        return 1
    }
    echo "$source" >"$stamp"
}

allowed_tests() {
    if [ "$#" -gt 0 ]; then
        printf '%s\n' "$@"
    else
        sed -e 's/#.*//' -e 's/[[:space:]]//g' "$ALLOW" | grep -E '^[0-9]{4}' || true
    fi
}

build_suite
# librdkafka's suite runs against trivup clusters whose brokers auto-create
# topics with num.partitions=4; tests produce to partitions 0..3 of them.
start_broker --default-partitions 4 --auto-create-topics true

cd "$BUILD/src/tests"
export LD_LIBRARY_PATH="$BUILD/src/src:$BUILD/src/src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cat >test.conf <<CONF
bootstrap.servers=127.0.0.1:$BROKER_PORT
CONF

passed=0
failed=0
failed_names=()
for test in $(allowed_tests "$@"); do
    log="$BUILD/test-$test.log"
    if TESTS="$test" TEST_KAFKA_VERSION="$KAFKA_VERSION" timeout "$PER_TEST_TIMEOUT_SECONDS" \
        ./test-runner -p1 -Q -E -K -V "$KAFKA_VERSION" >"$log" 2>&1; then
        echo "ok $test"
        passed=$((passed + 1))
    else
        echo "FAIL $test (log: $log)"
        { grep -E "FAIL|Assertion|TEST FAILURE" "$log" || tail -3 "$log"; } | head -5 | sed 's/^/    /'
        failed=$((failed + 1))
        failed_names+=("$test")
    fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "tidelog died during test $test:" >&2
        tail -20 "$BROKER_LOG" >&2
        failed=$((failed + 1))
        break
    fi
done

echo "librdkafka-compat: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
