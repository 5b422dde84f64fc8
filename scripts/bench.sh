#!/usr/bin/env bash
# `make bench`: the benchmarks of docs/benchmarks.md on this machine, into bench-results/<UTC time>/.
#
#   scripts/bench.sh              everything: the write-path sequence, then the load and rebuild runs
#   scripts/bench.sh write-path   only the write-path sequence (issue 12's targets, ~10 min):
#                                 appends vs pgbench, three processes with and without the writer
#                                 lock, the command service vs the cqrs-es peer, cold loads, and the
#                                 whole stack over HTTP (with the hot-product phase) vs pgbench;
#                                 ends with write-path.md, the table of figure / measured / target / met
#   scripts/bench.sh load         only the load and rebuild runs (report.md with latency.svg)
#   scripts/bench.sh query        only the reads: GET /v1/products/{id} and an authorised
#                                 GET /v1/orders/{id} with its token through the query API (read
#                                 cache off, then on) beside pgbench's primary-key SELECT (wrk,
#                                 installed by scripts/install-tools.sh --bench; ~2 min)
#
# Honours ORDO_BENCH_OUT (result directory), ORDO_BENCH_EVENTS (log size of the rebuild run,
# default 1000000), ORDO_BENCH_LOAD_ARGS and ORDO_BENCH_REBUILD_ARGS (extra flags, see
# `target/release/ordo-bench load --help`), ORDO_BENCH_ADMIN_URL (the PostgreSQL server on
# which the throwaway benchmark databases are created), ORDO_BENCH_SKIP_BUILD=1 (use the
# binaries already in target/release), and for the write path ORDO_BENCH_SECONDS (seconds per
# append and command run, default 10), ORDO_BENCH_PHASE_SECONDS (seconds per HTTP phase,
# default 15), ORDO_BENCH_COLD_EVENTS (default 10000,1000000) and ORDO_BENCH_PEER_DIR: a built
# checkout of the cqrs-es benchmark harness (`cargo build --release` in it), run beside the
# command service in the same sequence; without it the peer ratio is reported as not measured.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
case "$what" in
  all | write-path | load | query) ;;
  *) echo "usage: scripts/bench.sh [all|write-path|load|query]" >&2; exit 2 ;;
esac

scripts/ensure-postgres.sh
scripts/install-broker.sh >/dev/null
command -v pgbench >/dev/null || { echo "pgbench is missing (Debian package postgresql-client)" >&2; exit 1; }
if [ "$what" = "all" ] || [ "$what" = "query" ]; then
  scripts/install-tools.sh --bench
fi
if [ "${ORDO_BENCH_SKIP_BUILD:-0}" != "1" ]; then
  echo "==> building release binaries"
  cargo build --release --bins
fi

out="${ORDO_BENCH_OUT:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
admin="${ORDO_BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
bench=target/release/ordo-bench
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

write_path() {
  local secs="${ORDO_BENCH_SECONDS:-10}" phase="${ORDO_BENCH_PHASE_SECONDS:-15}"
  local peer=()
  if [ -n "${ORDO_BENCH_PEER_DIR:-}" ]; then
    [ -x "$ORDO_BENCH_PEER_DIR/target/release/cqrs-es-bench" ] || {
      echo "ORDO_BENCH_PEER_DIR has no target/release/cqrs-es-bench (run cargo build --release in it)" >&2
      exit 1
    }
    peer=(--peer-dir "$ORDO_BENCH_PEER_DIR")
  else
    echo "note: ORDO_BENCH_PEER_DIR is not set, the cqrs-es peer will not run"
  fi
  local started=$SECONDS
  uptime | tee "$out/uptime-before.txt"
  echo "==> write path 1/7: appends vs pgbench, one process"
  "$bench" append --seconds "$secs" --json "$out/append.json" | tee "$out/append.txt"
  echo "==> write path 2/7: appends from three processes, with the writer lock"
  "$bench" append --seconds "$secs" --processes 3 --writers 8,32 --no-pgbench --json "$out/append-3p-lock.json" \
    | tee "$out/append-3p-lock.txt"
  echo "==> write path 3/7: appends from three processes, without the writer lock (measurement only)"
  "$bench" append --seconds "$secs" --processes 3 --writers 8,32 --no-pgbench --no-writer-lock \
    --json "$out/append-3p-nolock.json" | tee "$out/append-3p-nolock.txt"
  echo "==> write path 4/7: the command service without HTTP, distinct streams, beside the peer"
  "$bench" commands --seconds "$secs" "${peer[@]}" --json "$out/commands.json" | tee "$out/commands.txt"
  echo "==> write path 5/7: the command service without HTTP, one hot stream, beside the peer"
  "$bench" commands --seconds "$secs" --hot --tasks 8 "${peer[@]}" --json "$out/commands-hot.json" \
    | tee "$out/commands-hot.txt"
  echo "==> write path 6/7: cold loads of long streams, without and with the snapshot"
  "$bench" cold-load --events "${ORDO_BENCH_COLD_EVENTS:-10000,1000000}" --json "$out/cold-load.json" \
    | tee "$out/cold-load.txt"
  echo "==> write path 7/7: the whole stack over HTTP (with the hot product) vs pgbench"
  # shellcheck disable=SC2086
  "$bench" load --out "$out" --seconds "$phase" --phase-seconds "$phase" ${ORDO_BENCH_LOAD_ARGS:-} \
    | tee "$out/load.txt"
  uptime | tee "$out/uptime-after.txt"
  echo "write path: $((SECONDS - started)) s" >"$out/write-path-seconds.txt"
  "$bench" write-path-report --dir "$out"
}

query() {
  echo "==> reads through the query API vs pgbench"
  uptime | tee "$out/uptime-query-before.txt"
  "$bench" query --json "$out/query.json" | tee "$out/query.txt"
  uptime | tee "$out/uptime-query-after.txt"
  { echo; echo '## Reads through the query API vs pgbench'; echo; echo '```'; cat "$out/query.txt"; echo '```'; } \
    >"$out/query.md"
}

if [ "$what" = "query" ]; then
  query
  cat "$out/machine.md" "$out/query.md" >"$out/report.md"
  echo "==> report: $out/report.md"
  exit 0
fi
if [ "$what" != "load" ]; then
  write_path
fi
if [ "$what" = "all" ]; then
  query
fi
if [ "$what" != "write-path" ]; then
  echo "==> load run"
  mkdir -p "$out/full"
  # shellcheck disable=SC2086
  "$bench" load --out "$out/full" ${ORDO_BENCH_LOAD_ARGS:-}
  echo "==> rebuild and relay run"
  # shellcheck disable=SC2086
  "$bench" rebuild --out "$out/full" --events "${ORDO_BENCH_EVENTS:-1000000}" ${ORDO_BENCH_REBUILD_ARGS:-}
  cat "$out/machine.md" "$out/full/load.md" "$out/full/rebuild.md" >"$out/report.md"
  if [ -f "$out/query.md" ]; then cat "$out/query.md" >>"$out/report.md"; fi
fi
if [ -f "$out/write-path.md" ]; then
  if [ -f "$out/report.md" ]; then
    cat "$out/write-path.md" >>"$out/report.md"
  else
    cat "$out/machine.md" "$out/write-path.md" >"$out/report.md"
  fi
fi
echo "==> report: $out/report.md"
