#!/usr/bin/env bash
# Fuzzes both HTTP APIs from their own /openapi.json with schemathesis: every operation, bounded
# examples, checks `not_a_server_error` and `response_schema_conformance` by default (ST_CHECKS).
# `make test` runs it with every check (ST_CHECKS=all), seed 7 and 30 examples per operation.
#
# What it does: installs schemathesis into a venv under .tmp/ (once), builds the two API
# binaries (debug), creates a fresh database, starts the command API and the query API on free
# ports with a random JWT secret, mints an admin token with `ordo mint-token`, runs schemathesis
# against each API, prints the requests sent and the 5xx answers (from the HAR recordings), and
# stops everything and drops the database.
#
# Environment: ST_MAX_EXAMPLES (default 50), ST_SEED (default 1), ST_WORKERS (default 2),
# ST_PHASES (default examples,coverage,fuzzing), ST_CHECKS, ST_APIS (default "command query"),
# ST_PYTHON, ST_LOG_STREAM=1 (also fuzz the endless /v1/log/events), ST_OUT (default
# .tmp/schemathesis), PGHOST_URL (default postgres://postgres@127.0.0.1:5432).
# Reports land in $ST_OUT. Exit status: 0 when no check failed and nothing errored on either API,
# 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples="${ST_MAX_EXAMPLES:-50}"
seed="${ST_SEED:-1}"
workers="${ST_WORKERS:-2}"
phases="${ST_PHASES:-examples,coverage,fuzzing}"
pg="${PGHOST_URL:-postgres://postgres@127.0.0.1:5432}"
# Pinned, so that a new release cannot change what passes.
st_version="4.32.5"
hypothesis_version="6.139.3"
venv=".tmp/schemathesis-venv-$st_version"
out="${ST_OUT:-.tmp/schemathesis}"
mkdir -p "$out"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Python 3.11 crashes in schemathesis' coverage phase ("AST constructor recursion depth mismatch"
# while describing a filter lambda from several threads): take 3.12 or newer when there is one
# (ST_PYTHON names it), else run python3 with one worker.
python="${ST_PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.13 python3.12 python3 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      python=$candidate
      break
    fi
  done
fi
if [ -z "$python" ]; then
  python=python3
  workers=1
fi
venv="$venv-$("$python" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')"
if [ ! -x "$venv/bin/schemathesis" ]; then
  say "installing schemathesis $st_version into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$st_version" "hypothesis==$hypothesis_version"
fi
"$venv/bin/schemathesis" --version

say "building the APIs (debug)"
cargo build --quiet -p ordo-command-api -p ordo-query-api --bins
ordo=""
for dir in target/debug target/release; do
  if [ -x "$dir/ordo" ]; then ordo="$dir/ordo"; break; fi
done
if [ -z "$ordo" ]; then
  cargo build --quiet -p ordo-cli --bin ordo
  ordo=target/debug/ordo
fi

scripts/ensure-postgres.sh
db="ordo_st_$(date +%s)_$$"
psql "$pg/postgres" -qc "CREATE DATABASE \"$db\""
export ORDO_DATABASE_URL="$pg/$db"
unset DATABASE_URL
ORDO_JWT_SECRET="st-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export ORDO_JWT_SECRET

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
export ORDO_COMMAND_ADDR="127.0.0.1:$(free_port)"
export ORDO_QUERY_ADDR="127.0.0.1:$(free_port)"
# A well-formed consistency token of a write that never happened waits this long (then 200).
export ORDO_QUERY_CONSISTENCY_WAIT_MS=100

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
}
trap cleanup EXIT

"$ordo" migrate >"$out/migrate.log" 2>&1
target/debug/command-api >"$out/command-api.log" 2>&1 &
pids+=($!)
target/debug/query-api >"$out/query-api.log" 2>&1 &
pids+=($!)

wait_ready() {
  for _ in $(seq 1 150); do
    curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$1 did not become ready (see $out/*.log)" >&2
  return 1
}
wait_ready "$ORDO_COMMAND_ADDR"
wait_ready "$ORDO_QUERY_ADDR"
ORDO_ST_TOKEN=$("$ordo" mint-token --role admin --ttl-hours 2 2>/dev/null)
export ORDO_ST_TOKEN

# What schemathesis cannot learn from a document, and why:
# - A schema-valid body may name a party or product that does not exist: POST /v1/orders answers
#   422 for an unknown product and POST /v1/products for an unregistered merchant (and, for an
#   admin, a missing `merchant_id`/`customer_id`, which only a merchant or customer may omit).
#   Those two operations may answer 422 to schema-valid data; every other rule is in the schema.
# - `If-Match` names a stream version: a well-formed version the stream is not at is 412 by
#   contract (the version is state, not shape), so 412 counts as an accepted answer.
# The token goes through the document's `bearer` scheme (not a plain header), so the checks that
# drop the credentials really send none.
if [ "${ST_LOG_STREAM:-0}" = 1 ]; then log_stream=true; else log_stream=false; fi
sed "s/\${ST_LOG_STREAM_ENABLED}/$log_stream/" >"$out/schemathesis.toml" <<'TOML'
# /v1/log/events is an endless event stream: read its first message only.
max-stream-events = 1

# Yet each of its cases still holds until the request timeout (several minutes in all), so it is
# left out unless ST_LOG_STREAM=1 (`scripts/schemathesis.sh` by hand); the stream's own tests
# cover its parameters.
[[operations]]
include-path = "/v1/log/events"
enabled = ${ST_LOG_STREAM_ENABLED}

[auth.openapi.bearer]
bearer = "${ORDO_ST_TOKEN}"

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "429", "5xx"]

[[operations]]
include-path-regex = "^/v1/(merchants/\\{id\\}/sales|audit/events|audit/streams/\\{category\\}/\\{id\\}/(events|state)|audit/verify)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429", "5xx"]

[[operations]]
include-path = "/v1/orders"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429", "5xx"]

[[operations]]
include-path = "/v1/products"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429", "5xx"]
TOML
# - Rules across several parameters, which a parameter schema cannot state (each one is in the
#   parameter descriptions): a sales range (`from` after `to`, more than 366 days), an audit
#   search with `to` before `from`, a stream history with `to_version` below `from_version`, a
#   stream state with both `at` and `version`, a verification with `id` but no `category`. Those
#   operations may answer 422 to schema-valid parameters.
# - A cursor (`cursor`) is opaque: only one that a page handed out is valid, so the hook drops it.
# - An `Idempotency-Key` names one request: the same key with another body is 422
#   `idempotency_key_reused` by contract, and schemathesis reuses generated keys across requests.
#   The hook makes every well-formed key unique per request (still 1 to 255 visible characters);
#   malformed keys go out as generated.
cat >"$out/hooks.py" <<'PY'
import itertools
import re

import schemathesis

WELL_FORMED = re.compile(r"^[\x21-\x7E]([\t\x20-\x7E]*[\x21-\x7E])?$")
counter = itertools.count()


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key":
            key = headers[name]
            if isinstance(key, str) and len(key) <= 255 and WELL_FORMED.match(key):
                headers[name] = f"{key[:240].rstrip()}.{next(counter)}"
    # A cursor is opaque: only one a page handed out means anything (any other is 422).
    if case.query:
        case.query.pop("cursor", None)
PY
export SCHEMATHESIS_HOOKS=hooks
export PYTHONPATH="$out${PYTHONPATH:+:$PYTHONPATH}"

status=0
summary=()
for api in ${ST_APIS:-command query}; do
  case $api in
    command) addr=$ORDO_COMMAND_ADDR ;;
    query) addr=$ORDO_QUERY_ADDR ;;
  esac
  say "schemathesis against the $api API (http://$addr/openapi.json)"
  har="$out/$api.har"
  curl -fsS "http://$addr/openapi.json" >"$out/$api.openapi.json"
  set +e
  "$venv/bin/schemathesis" --config-file "$out/schemathesis.toml" run "http://$addr/openapi.json" \
    --checks "${ST_CHECKS:-not_a_server_error,response_schema_conformance}" \
    --max-examples "$max_examples" --seed "$seed" --workers "$workers" --phases "$phases" \
    --request-timeout 15 --no-color \
    --report har,junit --report-har-path "$har" --report-junit-path "$out/$api.junit.xml" \
    2>&1 | tee "$out/$api.txt"
  code=${PIPESTATUS[0]}
  set -e
  [ "$code" -eq 0 ] || status=1
  counts=$(python3 - "$har" <<'PY'
import json, sys
# Only a summary: schemathesis' own exit status (not_a_server_error included) decides the run.
try:
    entries = json.loads(open(sys.argv[1]).read(), strict=False)["log"]["entries"]
except ValueError:
    print("? ?")
    sys.exit(0)
statuses = [e["response"]["status"] for e in entries]
print(len(statuses), sum(1 for s in statuses if s >= 500))
PY
)
  read -r requests errors <<<"$counts"
  failures=$(grep -cE '^_+ .* _+$' "$out/$api.txt" || true)
  summary+=("$api API: $requests requests, $errors server errors (5xx), $failures failing operations, schemathesis exit $code")
done

say "summary"
printf '  %s\n' "${summary[@]}"
echo "  reports: $out/ (HAR recordings, JUnit XML, schemathesis output, API logs)"
exit "$status"
