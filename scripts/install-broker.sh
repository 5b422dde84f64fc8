#!/usr/bin/env bash
# Installs the pinned Kafka-compatible broker (nisshi) once; later runs reuse it.
# See docs/adr/0003-nisshi-test-broker.md for why this broker and this version.
set -euo pipefail

NISSHI_VERSION="${NISSHI_VERSION:-0.7.0-pre.2}"
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
bin="$CARGO_HOME/bin/nisshi"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "${NISSHI_VERSION%%-*}"; then
  echo "nisshi $NISSHI_VERSION already installed at $bin"
  exit 0
fi

echo "installing nisshi $NISSHI_VERSION (first build takes about 9 minutes on 2 cores)..."
cargo install nisshi --version "$NISSHI_VERSION" --locked --features dynostore
echo "nisshi installed at $bin"
