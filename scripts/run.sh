#!/usr/bin/env bash
# `make run`: everything on this machine with demo data. Ctrl-C stops it all.
#
# Honours DATABASE_URL, KAFKA_BROKERS (no local broker is started when set), ORDO_JWT_SECRET,
# ORDO_COMMAND_ADDR, ORDO_QUERY_ADDR, ORDO_LOG_FORMAT=json, ORDO_SEED=0 (skip the demo data) and
# ORDO_OPS_PORT_BASE (ops ports of relay, saga and projectors: base+1..base+3, default 9100).
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ordo}"
export ORDO_COMMAND_ADDR="${ORDO_COMMAND_ADDR:-127.0.0.1:8080}"
export ORDO_QUERY_ADDR="${ORDO_QUERY_ADDR:-127.0.0.1:8081}"
ops_base="${ORDO_OPS_PORT_BASE:-9100}"
export ORDO_RELAY_OPS_ADDR="${ORDO_RELAY_OPS_ADDR:-127.0.0.1:$((ops_base + 1))}"
export ORDO_SAGA_OPS_ADDR="${ORDO_SAGA_OPS_ADDR:-127.0.0.1:$((ops_base + 2))}"
export ORDO_PROJECTORS_OPS_ADDR="${ORDO_PROJECTORS_OPS_ADDR:-127.0.0.1:$((ops_base + 3))}"
export ORDO_PROJECTORS_CREATE_TOPICS="${ORDO_PROJECTORS_CREATE_TOPICS:-3}"
if [ -z "${ORDO_JWT_SECRET:-}" ]; then
  export ORDO_JWT_SECRET="ordo-dev-secret-$(hostname)"
  echo "ORDO_JWT_SECRET not set: using a development secret (set it for anything but local use)"
fi
logs=".tmp/logs"
mkdir -p "$logs"
pids=()

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

stop_all() {
  trap - INT TERM EXIT
  say "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  exit 0
}
trap stop_all INT TERM EXIT

say "PostgreSQL"
scripts/ensure-postgres.sh
db_name="${DATABASE_URL##*/}"; db_name="${db_name%%\?*}"
admin_url="${DATABASE_URL%/*}/postgres"
if ! psql "$admin_url" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db_name'" | grep -q 1; then
  echo "creating database $db_name"
  psql "$admin_url" -qc "CREATE DATABASE \"$db_name\""
fi

if [ -z "${KAFKA_BROKERS:-}" ]; then
  say "broker (nisshi)"
  scripts/install-broker.sh
  port=9092
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  export KAFKA_BROKERS="127.0.0.1:$port"
  scripts/broker.sh "$port" >"$logs/broker.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo "broker on $KAFKA_BROKERS (log: $logs/broker.log)"
fi

say "building (release)"
scripts/install-tools.sh --build
cargo build --release --bin ordo --bin command-api --bin event-relay --bin order-saga --bin projectors --bin query-api
bin=target/release
"$bin/ordo" migrate

start() {
  local name=$1; shift
  ("$@" 2>&1 | sed -u "s/^/[$name] /" | tee "$logs/$name.log") &
  pids+=($!)
}
say "starting processes (logs also in $logs/)"
start command-api "$bin/command-api"
start event-relay "$bin/event-relay"
start order-saga "$bin/order-saga"
start projectors "$bin/projectors"
start query-api "$bin/query-api"

wait_ready() {
  for _ in $(seq 1 150); do
    curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$1 did not become ready" >&2
  return 1
}
wait_ready "$ORDO_COMMAND_ADDR"
wait_ready "$ORDO_QUERY_ADDR"

if [ "${ORDO_SEED:-1}" != "0" ]; then
  say "seeding demo data"
  scripts/seed-demo.sh
else
  ids=".tmp/demo.env"
  [ -f "$ids" ] || : >"$ids"
fi
# shellcheck disable=SC1091
source .tmp/demo.env

cat <<TXT

$(say "Ordo is running")
  command API  http://$ORDO_COMMAND_ADDR   (OpenAPI: http://$ORDO_COMMAND_ADDR/openapi.json)
  query API    http://$ORDO_QUERY_ADDR   (OpenAPI: http://$ORDO_QUERY_ADDR/openapi.json)
  metrics      http://$ORDO_COMMAND_ADDR/metrics  http://$ORDO_QUERY_ADDR/metrics
               http://$ORDO_RELAY_OPS_ADDR/metrics  http://$ORDO_SAGA_OPS_ADDR/metrics  http://$ORDO_PROJECTORS_OPS_ADDR/metrics
  broker       $KAFKA_BROKERS      database  $DATABASE_URL

Console (opens signed in; the token stays in the link's fragment, which is never sent to a server):
  as the dev admin    http://$ORDO_QUERY_ADDR/console#token=${ADMIN_TOKEN:-}
  as the dev auditor  http://$ORDO_QUERY_ADDR/console#token=${AUDITOR_TOKEN:-}

Dev tokens (24 h):
  export CUSTOMER_TOKEN=${CUSTOMER_TOKEN:-}
  export MERCHANT_TOKEN=${MERCHANT_TOKEN:-}
  export ADMIN_TOKEN=${ADMIN_TOKEN:-}
  export AUDITOR_TOKEN=${AUDITOR_TOKEN:-}

Try:
  curl -s http://$ORDO_QUERY_ADDR/v1/products | jq
  curl -s -H "Authorization: Bearer \$CUSTOMER_TOKEN" http://$ORDO_QUERY_ADDR/v1/customers/${CUSTOMER_ID:-}/orders | jq
  curl -s -X POST -H "Authorization: Bearer \$CUSTOMER_TOKEN" -H 'Content-Type: application/json' \\
       -d '{"lines": [{"product_id": "${LAMP_ID:-}", "quantity": 1}]}' http://$ORDO_COMMAND_ADDR/v1/orders | jq
  curl -s -H "Authorization: Bearer \$AUDITOR_TOKEN" "http://$ORDO_QUERY_ADDR/v1/audit/verify" | jq
  curl -s -H "Authorization: Bearer \$ADMIN_TOKEN" http://$ORDO_QUERY_ADDR/v1/projections | jq
  curl -N -H "Authorization: Bearer \$AUDITOR_TOKEN" "http://$ORDO_QUERY_ADDR/v1/log/events?from=start"

Ctrl-C stops everything.
TXT
wait
