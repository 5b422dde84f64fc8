#!/usr/bin/env bash
# `make stop`: stops what `make run` started. `make reset` (`--reset`): also drops the database
# and the demo state, so the next `make run` starts from nothing (the local broker keeps its
# data in memory, so stopping it empties it).
#
# Honours ORDO_RUN_DIR (default .tmp/run) and ORDO_DATABASE_URL (or DATABASE_URL; default: the
# one `make run` uses).
set -euo pipefail
cd "$(dirname "$0")/.."

state="${ORDO_RUN_DIR:-.tmp/run}"
database_url="${ORDO_DATABASE_URL:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ordo}}"

alive() { kill -0 "$1" 2>/dev/null; }

stopped=0
if [ -f "$state/run.pid" ] && alive "$(cat "$state/run.pid")"; then
  # `make run` itself stops its processes on TERM and removes its files
  runner=$(cat "$state/run.pid")
  echo "stopping make run (pid $runner)"
  kill -TERM "$runner"
  for _ in $(seq 1 150); do alive "$runner" || break; sleep 0.1; done
  stopped=1
fi
if [ -f "$state/pids" ]; then
  # left behind by a `make run` that was killed before it could clean up
  while read -r pid name; do
    if alive "$pid"; then
      echo "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      stopped=1
    fi
  done <"$state/pids"
  rm -f "$state/pids" "$state/run.pid"
fi
[ "$stopped" = 1 ] || echo "nothing to stop"

if [ "${1:-}" = "--reset" ]; then
  db_name="${database_url##*/}"; db_name="${db_name%%\?*}"
  admin_url="${database_url%/*}/postgres"
  echo "dropping database $db_name"
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS \"$db_name\" WITH (FORCE)"
  rm -rf "$state"
  echo "reset: the next 'make run' starts from an empty database"
fi
