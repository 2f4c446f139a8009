#!/usr/bin/env bash
# The whole test suite, as a user and CI run it:
#   1. unit and end-to-end tests (cargo nextest; the e2e tests start the real
#      tidelog binary and talk to it through librdkafka, built from source),
#   2. librdkafka's own conformance tests against a running tidelog,
#   3. old and other clients (Debian's kcat, confluent-kafka, kafka-python).
#   4. kill -9 during a 1,000,000-record acks=all produce: nothing acknowledged lost.
# Needs: Rust (cargo), gcc, make, and root or sudo for the Debian packages the
# compatibility step builds against (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

# The compatibility scripts use the broker binary the tests just built.
cargo build --quiet --bin tidelog
export TIDELOG_BIN="$(pwd)/target/debug/tidelog"
bash scripts/compat-librdkafka.sh
bash scripts/compat-clients.sh
bash scripts/crash-durability.sh
