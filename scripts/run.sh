#!/usr/bin/env bash
# `make run`: everything on this machine with demo data. Ctrl-C (or `make stop`) stops it all.
#
# Honours ORDO_DATABASE_URL, ORDO_KAFKA_BROKERS (no local broker is started when set; the
# DATABASE_URL and KAFKA_BROKERS of earlier releases still work), ORDO_JWT_SECRET,
# ORDO_COMMAND_ADDR, ORDO_QUERY_ADDR, ORDO_LOG_FORMAT=json, ORDO_SEED=0 (skip the demo data),
# ORDO_OPS_PORT_BASE (ops ports of relay, saga and projectors: base+1..base+3, default 9100),
# ORDO_RUN_PROFILE (release, the default, or debug) and ORDO_RUN_DIR (state: logs, process ids,
# the dev environment file; default .tmp/run).
#
# Exit status: 0 after Ctrl-C or `make stop`; non-zero when anything fails (a taken port, a
# build, a migration, a process that does not become ready or exits, the seed). Whatever was
# started is stopped either way.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

export ORDO_DATABASE_URL="${ORDO_DATABASE_URL:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ordo}}"
if [ -n "${KAFKA_BROKERS:-}" ] && [ -z "${ORDO_KAFKA_BROKERS:-}" ]; then export ORDO_KAFKA_BROKERS="$KAFKA_BROKERS"; fi
unset DATABASE_URL KAFKA_BROKERS
# The database URL with its password (if any) masked, for what this script prints.
shown_url="$(printf '%s' "$ORDO_DATABASE_URL" | sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#')"
export ORDO_COMMAND_ADDR="${ORDO_COMMAND_ADDR:-127.0.0.1:8080}"
export ORDO_QUERY_ADDR="${ORDO_QUERY_ADDR:-127.0.0.1:8081}"
ops_base="${ORDO_OPS_PORT_BASE:-9100}"
export ORDO_RELAY_OPS_ADDR="${ORDO_RELAY_OPS_ADDR:-127.0.0.1:$((ops_base + 1))}"
export ORDO_SAGA_OPS_ADDR="${ORDO_SAGA_OPS_ADDR:-127.0.0.1:$((ops_base + 2))}"
export ORDO_PROJECTORS_OPS_ADDR="${ORDO_PROJECTORS_OPS_ADDR:-127.0.0.1:$((ops_base + 3))}"
export ORDO_PROJECTORS_CREATE_TOPICS="${ORDO_PROJECTORS_CREATE_TOPICS:-3}"
profile="${ORDO_RUN_PROFILE:-release}"
state="${ORDO_RUN_DIR:-.tmp/run}"
case "$state" in /*) ;; *) state="$repo/$state" ;; esac
export ORDO_RUN_DIR="$state"
logs="$state/logs"
dev_secret=0
if [ -z "${ORDO_JWT_SECRET:-}" ] && [ -z "${ORDO_JWT_JWKS_URL:-}" ]; then
  export ORDO_JWT_SECRET="ordo-dev-secret-$(hostname)"
  dev_secret=1
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'make run: %s\n' "$*" >&2; exit 1; }

case "$profile" in
  release) cargo_profile=(--release); bin="$repo/target/release" ;;
  debug) cargo_profile=(); bin="$repo/target/debug" ;;
  *) fail "ORDO_RUN_PROFILE must be release or debug, not '$profile'" ;;
esac

# An earlier run that is still up owns the ports; say so instead of failing on the first bind.
if [ -f "$state/run.pid" ] && kill -0 "$(cat "$state/run.pid")" 2>/dev/null; then
  fail "Ordo is already running (pid $(cat "$state/run.pid")); stop it with 'make stop'"
fi

# port_taken HOST:PORT: true when something accepts connections there
port_taken() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for var in ORDO_COMMAND_ADDR ORDO_QUERY_ADDR ORDO_RELAY_OPS_ADDR ORDO_SAGA_OPS_ADDR ORDO_PROJECTORS_OPS_ADDR; do
  addr="${!var}"
  if port_taken "$addr"; then
    fail "port ${addr##*:} is already in use ($var=$addr): stop what listens there ('make stop' if it is an earlier 'make run') or set $var to a free address"
  fi
done

mkdir -p "$logs"
pids=()
names=()
: >"$state/pids"
echo $$ >"$state/run.pid"

stop_all() {
  local code=$1
  trap - INT TERM EXIT
  say "stopping"
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "$state/pids" "$state/run.pid"
  [ "$code" = 0 ] || echo "make run: stopped after a failure (exit $code; logs in $logs/)" >&2
  exit "$code"
}
trap 'stop_all $?' EXIT
trap 'stop_all 0' INT TERM

# start NAME COMMAND...: runs the process itself in the background (so its pid is the one that
# is stopped), its output prefixed on the terminal and kept in $logs/NAME.log
start() {
  local name=$1; shift
  "$@" > >(sed -u "s/^/[$name] /" | tee "$logs/$name.log") 2>&1 &
  pids+=($!)
  names+=("$name")
  echo "$! $name" >>"$state/pids"
}

# name_of PID: the name a started process was given
name_of() {
  local i
  for i in "${!pids[@]}"; do [ "${pids[$i]}" = "$1" ] && echo "${names[$i]}"; done
}

# fail_if_exited: fails when a started process is no longer running
fail_if_exited() {
  local pid status
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      status=0
      wait "$pid" 2>/dev/null || status=$?
      fail "$(name_of "$pid") exited with status $status (log: $logs/$(name_of "$pid").log)"
    fi
  done
}

say "PostgreSQL"
scripts/ensure-postgres.sh
db_name="${ORDO_DATABASE_URL##*/}"; db_name="${db_name%%\?*}"
admin_url="${ORDO_DATABASE_URL%/*}/postgres"
if ! psql "$admin_url" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db_name'" | grep -q 1; then
  echo "creating database $db_name"
  psql "$admin_url" -qc "CREATE DATABASE \"$db_name\""
fi

if [ -z "${ORDO_KAFKA_BROKERS:-}" ]; then
  say "broker (nisshi)"
  scripts/install-broker.sh
  port=9092
  while port_taken "127.0.0.1:$port"; do port=$((port + 1)); done
  export ORDO_KAFKA_BROKERS="127.0.0.1:$port"
  start broker scripts/broker.sh "$port"
  for _ in $(seq 1 100); do port_taken "$ORDO_KAFKA_BROKERS" && break; sleep 0.1; done
  port_taken "$ORDO_KAFKA_BROKERS" || fail "the broker did not start on $ORDO_KAFKA_BROKERS (log: $logs/broker.log)"
  echo "broker on $ORDO_KAFKA_BROKERS (log: $logs/broker.log)"
fi

say "building ($profile)"
scripts/install-tools.sh --build
# the workspace's binaries, as `make test` and `make bench` build them: the same features, so
# no dependency is built twice
cargo build "${cargo_profile[@]}" --workspace --bins
# Migrations are an explicit step: the services check the schema at start and change nothing.
"$bin/ordo" migrate

say "starting processes (logs also in $logs/)"
start command-api "$bin/command-api"
start event-relay "$bin/event-relay"
start order-saga "$bin/order-saga"
start projectors "$bin/projectors"
start query-api "$bin/query-api"

wait_ready() {
  for _ in $(seq 1 300); do
    curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0
    fail_if_exited
    sleep 0.2
  done
  fail "$2 did not become ready on $1 within 60 s (log: $logs/$2.log)"
}
wait_ready "$ORDO_COMMAND_ADDR" command-api
wait_ready "$ORDO_QUERY_ADDR" query-api
wait_ready "$ORDO_RELAY_OPS_ADDR" event-relay
wait_ready "$ORDO_SAGA_OPS_ADDR" order-saga
wait_ready "$ORDO_PROJECTORS_OPS_ADDR" projectors

demo="$state/demo.env"
if [ "${ORDO_SEED:-1}" != "0" ]; then
  say "seeding demo data"
  ORDO_BIN="$bin/ordo" ORDO_DEMO_ENV="$demo" scripts/seed-demo.sh
else
  : >"$demo"
fi
# shellcheck disable=SC1090
source "$demo"

# The environment another shell needs for `ordo` (on the PATH) and the dev tokens.
cat >"$state/env" <<ENV
export PATH="$bin:\$PATH"
export ORDO_DATABASE_URL="$ORDO_DATABASE_URL"
export ORDO_KAFKA_BROKERS="$ORDO_KAFKA_BROKERS"
$([ "$dev_secret" = 1 ] && echo "export ORDO_JWT_SECRET=\"$ORDO_JWT_SECRET\"")
export CUSTOMER_TOKEN=${CUSTOMER_TOKEN:-}
export MERCHANT_TOKEN=${MERCHANT_TOKEN:-}
export ADMIN_TOKEN=${ADMIN_TOKEN:-}
export AUDITOR_TOKEN=${AUDITOR_TOKEN:-}
ENV

if [ "$dev_secret" = 1 ]; then
  secret_line="dev JWT secret   ORDO_JWT_SECRET=$ORDO_JWT_SECRET   (development only: set your own for anything else)"
else
  secret_line="JWT settings     from your environment (not printed)"
fi

cat <<TXT

$(say "Ordo is running")
  command API  http://$ORDO_COMMAND_ADDR   (OpenAPI: http://$ORDO_COMMAND_ADDR/openapi.json)
  query API    http://$ORDO_QUERY_ADDR   (OpenAPI: http://$ORDO_QUERY_ADDR/openapi.json)
  metrics      http://$ORDO_COMMAND_ADDR/metrics  http://$ORDO_QUERY_ADDR/metrics
               http://$ORDO_RELAY_OPS_ADDR/metrics  http://$ORDO_SAGA_OPS_ADDR/metrics  http://$ORDO_PROJECTORS_OPS_ADDR/metrics
  broker       $ORDO_KAFKA_BROKERS      database  $shown_url
  $secret_line

In another shell, for \`ordo\` on the PATH, the database, the secret and the dev tokens (24 h):
  source $state/env
  ordo --help
  ordo mint-token --role customer --sub \$(uuidgen)

Console (opens signed in; the token stays in the link's fragment, which is never sent to a server):
  as the dev admin    http://$ORDO_QUERY_ADDR/console#token=${ADMIN_TOKEN:-}
  as the dev auditor  http://$ORDO_QUERY_ADDR/console#token=${AUDITOR_TOKEN:-}

Try (after sourcing the env file):
  curl -s http://$ORDO_QUERY_ADDR/v1/products | jq
  curl -s -H "Authorization: Bearer \$CUSTOMER_TOKEN" http://$ORDO_QUERY_ADDR/v1/customers/${CUSTOMER_ID:-}/orders | jq
  curl -s -X POST -H "Authorization: Bearer \$CUSTOMER_TOKEN" -H 'Content-Type: application/json' \\
       -d '{"lines": [{"product_id": "${LAMP_ID:-}", "quantity": 1}]}' http://$ORDO_COMMAND_ADDR/v1/orders | jq
  curl -s -H "Authorization: Bearer \$AUDITOR_TOKEN" "http://$ORDO_QUERY_ADDR/v1/audit/verify" | jq
  curl -s -H "Authorization: Bearer \$ADMIN_TOKEN" http://$ORDO_QUERY_ADDR/v1/projections | jq
  curl -N -H "Authorization: Bearer \$AUDITOR_TOKEN" "http://$ORDO_QUERY_ADDR/v1/log/events?from=start"

Ctrl-C or \`make stop\` stops everything; \`make reset\` also drops the database.
TXT

# Runs until a signal stops it (the traps above), or until one of the processes exits, which is
# a failure.
status=0
wait -n -p ended "${pids[@]}" || status=$?
fail "$(name_of "$ended") exited with status $status (log: $logs/$(name_of "$ended").log)"
