#!/usr/bin/env bash
# librdkafka's own test suite against a running tidelog.
#
# The suite ships inside the rdkafka-sys crate (librdkafka/tests/). This
# script:
#   1. installs the Debian packages the build needs, if any is missing
#      (apt-get, as root or through sudo),
#   2. finds that source in cargo's registry (after `cargo fetch`), copies it
#      to <target>/librdkafka-compat/src (the registry copy stays pristine)
#      and builds the library and its test runner there, once: later runs
#      reuse the build while the source and the recipe are unchanged,
#   3. builds tidelog and starts one of its own: 2 shards on free loopback
#      ports, a scratch data directory, topics auto-created with 4
#      partitions (the suite's "default" scenario: its tests produce to
#      partitions 0..3 of topics they never create), and waits until every
#      shard's port accepts connections,
#   4. runs exactly the tests listed in tests/librdkafka.allow, one
#      test-runner process per line, in a bounded time,
#   5. stops the broker by pid (also on error or interrupt), prints
#      "librdkafka-compat: N passed, N failed" and exits non-zero if any
#      listed test failed, skipped itself entirely, or did not run.
#
# Usage: scripts/compat-librdkafka.sh [--debug] [TEST_NUMBER ...]
#   TEST_NUMBER ...  run only these (4 digits; the allow-list's lines for
#                    them, or the whole test when it is not listed)
#   --debug          build and run a debug tidelog (default: release)
# Environment:
#   TIDELOG_BIN                  run this tidelog binary, build none
#   TEST_KAFKA_VERSION           Kafka version the suite assumes (4.0.0)
#   COMPAT_TIMEOUT_SECONDS       budget for all tests together (900)
#   COMPAT_TEST_TIMEOUT_SECONDS  limit for one line of the list (240)
#   TEST_DEBUG                   librdkafka debug contexts for every client,
#                                e.g. broker,protocol,fetch
# Logs of each test and of each broker: <target>/librdkafka-compat/results/.
# To rerun one test by hand against a broker of your own: write its address
# as bootstrap.servers=HOST:PORT into target/librdkafka-compat/src/tests/
# test.conf, then in that directory: LD_LIBRARY_PATH=../src:../src-cpp
# TESTS=0001 ./test-runner -p1 -E -K -V 4.0.0
#
# Allow-list: one test number per line, then optional modes, then
# "# what it checks". A number may be listed on several lines (different
# sub-tests); each line is a separate run. Modes:
#   local          only the broker-less parts of the number (runner's -l)
#   quick          the runner's quick mode (-Q): less data, and every
#                  sub-test not marked quick is skipped
#   noautocreate   the suite's "noautocreate" scenario: against a tidelog
#                  started with --auto-create-topics false
#   cores=N        against a tidelog with N shards (N brokers) instead of 2
#   consumer-protocol  the suite's consumers use KIP-848's protocol
#                  (group.protocol=consumer) instead of the classic one
#   subtests=TEXT  only the sub-tests whose name contains TEXT (the rest of
#                  the line; may hold spaces); one of them must pass
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/lib/broker.sh

PROFILE=release
SELECTED=()
for arg in "$@"; do
    case "$arg" in
        --debug) PROFILE=debug ;;
        --release) PROFILE=release ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        [0-9][0-9][0-9][0-9]) SELECTED+=("$arg") ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BUILD="$TARGET_DIR/librdkafka-compat"
RESULTS="$BUILD/results"
ALLOW="$ROOT/tests/librdkafka.allow"
# tidelog implements Kafka 4.0's protocol floor (record batch v2 only:
# Produce v3+, Fetch v4+), so the suite takes its "Apache Kafka 4.0"
# branches (no MsgVersion 0/1 producers); every gate below 4.0 (topic
# admin through the Admin API since 0.10.2, headers since 0.11, ...) is open.
KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.0.0}"
TOTAL_TIMEOUT="${COMPAT_TIMEOUT_SECONDS:-900}"
TEST_TIMEOUT="${COMPAT_TEST_TIMEOUT_SECONDS:-240}"
# Compilers, librdkafka's optional codecs and TLS/SASL (the suite's
# compression tests use them), and RapidJSON (headers only: the suite checks
# statistics JSON with it; without it those tests skip themselves).
APT_PACKAGES=(gcc g++ make pkg-config libssl-dev zlib1g-dev libzstd-dev liblz4-dev libsasl2-dev rapidjson-dev)
# Changing the recipe rebuilds the cached suite.
BUILD_RECIPE="./configure --disable-gssapi; make libs; make -C tests build; rapidjson"

log() { echo "compat-librdkafka: $*"; }

install_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2; return 1; }
        sudo="sudo"
    fi
    log "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The librdkafka source inside the rdkafka-sys crate that Cargo.lock pins.
locate_source() {
    cargo fetch --quiet
    local version dir
    version=$(awk '$0 == "name = \"rdkafka-sys\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
    [ -n "$version" ] || { echo "rdkafka-sys is not in Cargo.lock" >&2; return 1; }
    for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$version"/librdkafka; do
        if [ -f "$dir/tests/test.c" ] && [ -x "$dir/configure" ]; then
            echo "$dir"
            return 0
        fi
    done
    echo "librdkafka source of rdkafka-sys $version not found in cargo's registry" >&2
    return 1
}

build_suite() {
    local source want stamp="$BUILD/built-from"
    source=$(locate_source)
    want="$source | $BUILD_RECIPE"
    mkdir -p "$BUILD"
    # One build at a time: a concurrent run waits, then finds it built.
    exec 9>"$BUILD/.lock"
    flock 9
    if [ -x "$BUILD/src/tests/test-runner" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        flock -u 9
        return 0
    fi
    log "building librdkafka and its test suite from $source (once; a few minutes)"
    rm -rf "$BUILD/src" "$stamp"
    cp -r "$source" "$BUILD/src"
    local jobs
    jobs=$(nproc)
    if ! (
        cd "$BUILD/src"
        ./configure --disable-gssapi >"$BUILD/configure.log" 2>&1
        make -j"$jobs" libs >"$BUILD/make-libs.log" 2>&1
        make -C tests -j"$jobs" build >"$BUILD/make-tests.log" 2>&1
    ); then
        echo "building librdkafka's test suite failed; logs: $BUILD/*.log" >&2
        tail -n 20 "$BUILD"/configure.log "$BUILD"/make-*.log >&2 || true
        flock -u 9
        return 1
    fi
    echo "$want" >"$stamp"
    flock -u 9
}

build_broker() {
    if [ -n "${TIDELOG_BIN:-}" ]; then
        [ -x "$TIDELOG_BIN" ] || { echo "TIDELOG_BIN=$TIDELOG_BIN is not executable" >&2; return 1; }
        return 0
    fi
    log "building tidelog ($PROFILE)"
    if [ "$PROFILE" = release ]; then
        cargo build --release --quiet --bin tidelog
    else
        cargo build --quiet --bin tidelog
    fi
    TIDELOG_BIN="$TARGET_DIR/$PROFILE/tidelog"
}

# Waits until shard i of the running broker accepts TCP connections on
# BROKER_PORT+i, for every shard; 30 seconds at most.
wait_for_shards() {
    local i deadline=$((SECONDS + 30))
    for ((i = 0; i < BROKER_CORES; i++)); do
        until (exec 3<>"/dev/tcp/127.0.0.1/$((BROKER_PORT + i))") 2>/dev/null; do
            if ! kill -0 "$BROKER_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
                echo "tidelog shard $i does not accept connections on port $((BROKER_PORT + i))" >&2
                tail -n 20 "$BROKER_LOG" >&2
                return 1
            fi
            sleep 0.2
        done
    done
}

# The broker set-up a list line needs: "<scenario>-<shards>".
CURRENT_SETUP=""
start_setup() {
    local setup="$1" autocreate=true
    [ "${setup%-*}" = noautocreate ] && autocreate=false
    stop_setup
    export BROKER_CORES="${setup##*-}"
    start_broker --auto-create-topics "$autocreate" --default-partitions 4 || return 1
    CURRENT_SETUP="$setup"
    wait_for_shards || return 1
    # The suite reads its client configuration from this file
    # (RDKAFKA_TEST_CONF). A private copy per run keeps the cached build
    # untouched by concurrent runs; the copy in the build is for reruns by hand.
    cat >"$RUN_DIR/test.conf" <<CONF
# Written by scripts/compat-librdkafka.sh for a tidelog it started.
bootstrap.servers=127.0.0.1:$BROKER_PORT
CONF
    cp "$RUN_DIR/test.conf" "$BUILD/src/tests/test.conf"
    log "tidelog pid $BROKER_PID, $BROKER_CORES shards from 127.0.0.1:$BROKER_PORT, auto-create $autocreate"
}

stop_setup() {
    if [ -n "$CURRENT_SETUP" ] && [ -f "${BROKER_LOG:-}" ]; then
        cp "$BROKER_LOG" "$RESULTS/broker-$CURRENT_SETUP.log"
    fi
    stop_broker
    CURRENT_SETUP=""
}

cleanup() {
    stop_setup
    if [ -n "${RUN_DIR:-}" ]; then rm -rf "$RUN_DIR"; fi
}

# The list lines to run, "NUMBER [MODES...]": the allow-list without
# comments, or its lines for the numbers given on the command line.
selected_lines() {
    local listed t line
    listed=$(sed -e 's/#.*//' "$ALLOW" | awk '$1 ~ /^[0-9][0-9][0-9][0-9]$/ { $1 = $1; print }')
    if [ "${#SELECTED[@]}" -eq 0 ]; then
        echo "$listed"
        return
    fi
    for t in "${SELECTED[@]}"; do
        line=$(echo "$listed" | awk -v t="$t" '$1 == t')
        echo "${line:-$t}"
    done
}

# "SETUP INDEX NUMBER [MODES...]" per line, grouped by set-up (default one
# first) so that each broker set-up is started once. INDEX tells apart the
# lines of one number ("-" for its first).
plan() {
    awk '{
        modes = $0; sub(/subtests=.*/, "", modes)
        scenario = (modes ~ /(^| )noautocreate( |$)/) ? "noautocreate" : "default"
        cores = 2
        if (match(modes, /(^| )cores=[0-9]+/)) { cores = substr(modes, RSTART, RLENGTH); sub(/.*=/, "", cores) }
        setup = scenario "-" cores
        n[$1]++
        order = (setup == "default-2") ? 0 : 1
        print order, setup, (n[$1] > 1 ? n[$1] : "-"), $0
    }' | sort -s -k1,1n -k2,2 | cut -d' ' -f2-
}

# The summary table of a test-runner log: "name STATE" per test, colours
# removed, the framework's own <MAIN> entry left out.
summary_rows() {
    sed -e 's/\x1b\[[0-9;]*m//g' "$1" |
        awk -F'|' 'NF >= 4 && $3 ~ /^ *(PASSED|FAILED|SKIPPED|RUNNING|DNS) *$/ {
            name = $2; state = $3; gsub(/^ +| +$/, "", name); gsub(/^ +| +$/, "", state)
            if (name != "<MAIN>") print name, state }' | sort -u
}

run_line() {
    local setup="$1" index="$2" test="$3" modes="$4"
    local args=(-p1 -E -K -V "$KAFKA_VERSION") scenario="${setup%-*}" subtests="" mode protocol=""
    case "$modes" in
        *subtests=*) subtests="${modes#*subtests=}"; modes="${modes%%subtests=*}" ;;
    esac
    for mode in $modes; do
        case "$mode" in
            local) args+=(-l) ;;
            quick) args+=(-Q) ;;
            consumer-protocol) protocol=consumer ;;
            noautocreate | cores=[0-9]*) ;; # the set-up
            *) echo "FAIL $test: unknown mode '$mode' in $ALLOW"; return 1 ;;
        esac
    done
    args+=(-s "$scenario")
    local label="$test${subtests:+ [$subtests]}"
    local log="$RESULTS/test-$test${index:+-$index}.log"
    if [ "$CURRENT_SETUP" != "$setup" ]; then
        start_setup "$setup" || { echo "FAIL $label: could not start tidelog"; return 1; }
    fi

    local remaining=$((DEADLINE - SECONDS)) limit rc=0
    if [ "$remaining" -le 5 ]; then
        echo "FAIL $label: not run, the ${TOTAL_TIMEOUT}s budget is spent"
        return 1
    fi
    limit=$((remaining < TEST_TIMEOUT ? remaining : TEST_TIMEOUT))
    local started=$SECONDS pid timed_out_at=""
    # stdbuf: the runner's stdout goes to a file and must get there as it is
    # written. The braces keep bash's notice of a killed job out of the output.
    {
        (
            cd "$BUILD/src/tests"
            export LD_LIBRARY_PATH="$BUILD/src/src:$BUILD/src/src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            export TESTS="$test" TEST_KAFKA_VERSION="$KAFKA_VERSION" RDKAFKA_TEST_CONF="$RUN_DIR/test.conf"
            if [ -n "$subtests" ]; then export SUBTESTS="$subtests"; else unset SUBTESTS; fi
            if [ -n "$protocol" ]; then export TEST_CONSUMER_GROUP_PROTOCOL="$protocol"; else unset TEST_CONSUMER_GROUP_PROTOCOL; fi
            exec timeout --kill-after=10 "$limit" stdbuf -oL -eL ./test-runner "${args[@]}"
        ) >"$log" 2>&1 &
        pid=$!
        # A test past its own timeout is reported by the framework, which
        # normally kills itself; should it hang instead, end it soon after.
        while kill -0 "$pid" 2>/dev/null; do
            if [ -z "$timed_out_at" ] && grep -q "timed out (timeout set to" "$log"; then
                timed_out_at=$SECONDS
            elif [ -n "$timed_out_at" ] && [ $((SECONDS - timed_out_at)) -ge 10 ]; then
                kill -TERM "$pid" 2>/dev/null || true
            fi
            sleep 0.5
        done
        wait "$pid" || rc=$?
    } 2>/dev/null
    if [ -z "$timed_out_at" ] && grep -q "timed out (timeout set to" "$log"; then
        timed_out_at=$SECONDS
    fi

    local took=$((SECONDS - started)) rows passed_rows skipped ran=1 died=""
    rows=$(summary_rows "$log")
    passed_rows=$(echo "$rows" | awk '$2 == "PASSED"' | wc -l)
    skipped=$(echo "$rows" | awk '$2 == "SKIPPED" { print $1 }' | paste -sd' ')
    [ "$passed_rows" -gt 0 ] || ran=0
    # With a sub-test filter, a matching sub-test must have passed. (Not
    # `grep -q` after a pipe: it stops reading at its first match, the grep
    # before it dies of SIGPIPE, and pipefail turns a pass into a failure.)
    if [ -n "$subtests" ] && ! grep -F -- "$subtests" "$log" | grep ": PASS (" >/dev/null; then ran=0; fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then died=" (tidelog exited)"; fi

    if [ "$rc" -eq 0 ] && [ "$ran" -eq 1 ] && [ -z "$died" ]; then
        echo "ok $label (${took}s)${skipped:+; skipped itself: $skipped}"
        return 0
    fi
    if [ -n "$timed_out_at" ]; then
        echo "FAIL $label: timed out after $((timed_out_at - started))s$died (log: $log)"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "FAIL $label: killed after ${limit}s$died (log: $log)"
    elif [ "$rc" -eq 0 ]; then
        echo "FAIL $label: nothing ran${skipped:+, skipped itself: $skipped}$died (log: $log)"
    else
        echo "FAIL $label: exit $rc after ${took}s$died (log: $log)"
    fi
    sed -e 's/\x1b\[[0-9;]*m//g' "$log" | grep -E -A1 '^### Test .* failed' | grep -v '^--' | head -n 6 | cut -c1-400 | sed 's/^/    /'
    if [ -n "$died" ]; then
        tail -n 20 "$BROKER_LOG" | sed 's/^/    tidelog: /'
        cp "$BROKER_LOG" "$RESULTS/broker-died-in-$test.log"
        stop_setup # the next line starts a fresh one
    fi
    return 1
}

main() {
    install_packages
    build_suite
    build_broker
    export TIDELOG_BIN

    RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/compat-librdkafka.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    rm -rf "$RESULTS"
    mkdir -p "$RESULTS"

    local lines
    lines=$(selected_lines)
    [ -n "$lines" ] || { echo "no tests selected" >&2; exit 2; }
    log "running $(echo "$lines" | wc -l) lines of $ALLOW against Kafka $KAFKA_VERSION's feature set; logs in $RESULTS"
    DEADLINE=$((SECONDS + TOTAL_TIMEOUT))

    local passed=0 failed=0 failed_labels=() setup index test modes
    while read -r setup index test modes; do
        [ "$index" = - ] && index=""
        if run_line "$setup" "$index" "$test" "$modes"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            failed_labels+=("$test${index:+#$index}")
        fi
    done < <(echo "$lines" | plan)
    stop_setup

    [ "$failed" -eq 0 ] || log "failed: ${failed_labels[*]}"
    echo "librdkafka-compat: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

main
