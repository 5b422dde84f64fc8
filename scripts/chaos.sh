#!/usr/bin/env bash
# The full fault suite (tests/chaos, its #[ignore]d tests): every process SIGKILLed under load,
# the broker frozen for 30 s, PostgreSQL restarted, scale-out with survivors taking over, and a
# backup restored into a destroyed database, the broker back empty, the relay leader frozen and
# the writer lock held by a stuck session. It restarts the shared PostgreSQL server, so run
# it alone, never next to other tests. Prints a report of the `chaos |` lines at the end
# (also kept in target/chaos-report.txt; the whole output in target/chaos-output.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

scripts/ensure-postgres.sh
scripts/install-broker.sh
# the five processes and the operator CLI the suite runs
$CARGO build --bins -p ordo-command-api -p ordo-event-store -p ordo-saga -p ordo-projectors -p ordo-query-api -p ordo-cli
$CARGO build -p ordo-tests --tests

status=0
$CARGO test -p ordo-tests --test chaos -- --ignored --test-threads 1 --nocapture 2>&1 \
  | tee target/chaos-output.txt || status=$?
# cargo test prints a test's first line of output after its "test <name> ... " prefix
# and the fault table (markdown rows start with "|")
grep -oE 'chaos \|.*|^\|.*|test result.*' target/chaos-output.txt > target/chaos-report.txt || true

echo
echo "=== chaos report ==="
cat target/chaos-report.txt
exit "$status"
