#!/usr/bin/env bash
# Runs the local Kafka-compatible broker (nisshi, in-memory storage) in the foreground.
# Usage: scripts/broker.sh [port]   (default 9092)
set -euo pipefail
port="${1:-9092}"
here="$(cd "$(dirname "$0")" && pwd)"
"$here/install-broker.sh" >&2
bin="${NISSHI_BIN:-${CARGO_HOME:-$HOME/.cargo}/bin/nisshi}"
url="tcp://127.0.0.1:$port"
exec "$bin" broker --listener-url "$url" --advertised-listener-url "$url" --storage-engine memory://nisshi/
