#!/usr/bin/env bash
# Installs cargo-nextest when it is missing: `make test` runs the suite with it, because its
# test groups keep the whole-stack tests one at a time (plain `cargo test` would not).
set -euo pipefail
if cargo nextest --version >/dev/null 2>&1; then
  exit 0
fi
echo "installing cargo-nextest (once)"
cargo install --locked cargo-nextest
