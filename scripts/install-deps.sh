#!/usr/bin/env bash
# Debian packages the test suite needs: C libraries to build librdkafka's
# conformance tests, and the kcat / kafka-python clients of the
# compatibility scripts. Idempotent: installs only what is missing.
set -euo pipefail

packages=(build-essential pkg-config libssl-dev zlib1g-dev libzstd-dev liblz4-dev libsasl2-dev kcat python3-kafka python3-confluent-kafka)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
