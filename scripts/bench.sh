#!/usr/bin/env bash
# `make bench`: the benchmarks of docs/benchmarks.md on this machine, into bench-results/<UTC time>/
# (report.md with latency.svg, load.json and rebuild.json beside it).
#
# Honours ORDO_BENCH_OUT (result directory), ORDO_BENCH_EVENTS (log size of the rebuild run,
# default 1000000), ORDO_BENCH_LOAD_ARGS and ORDO_BENCH_REBUILD_ARGS (extra flags, see
# `target/release/ordo-bench load --help`), ORDO_BENCH_ADMIN_URL (the PostgreSQL server on
# which the throwaway benchmark databases are created) and ORDO_BENCH_SKIP_BUILD=1 (use the
# binaries already in target/release).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-postgres.sh
scripts/install-broker.sh >/dev/null
command -v pgbench >/dev/null || { echo "pgbench is missing (Debian package postgresql-client)" >&2; exit 1; }
if [ "${ORDO_BENCH_SKIP_BUILD:-0}" != "1" ]; then
  echo "==> building release binaries"
  cargo build --release --bins
fi

out="${ORDO_BENCH_OUT:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
admin="${ORDO_BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
{
  echo "# Ordo benchmark report"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/^Mem:/ {print $2}') GiB memory"
  echo "- PostgreSQL: $(psql "$admin" -Atc 'SHOW server_version' 2>/dev/null || echo unknown), max_connections $(psql "$admin" -Atc 'SHOW max_connections' 2>/dev/null || echo '?')"
  echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} >"$out/machine.md"

echo "==> load run"
# shellcheck disable=SC2086
target/release/ordo-bench load --out "$out" ${ORDO_BENCH_LOAD_ARGS:-}
echo "==> rebuild and relay run"
# shellcheck disable=SC2086
target/release/ordo-bench rebuild --out "$out" --events "${ORDO_BENCH_EVENTS:-1000000}" ${ORDO_BENCH_REBUILD_ARGS:-}

cat "$out/machine.md" "$out/load.md" "$out/rebuild.md" >"$out/report.md"
echo "==> report: $out/report.md"
