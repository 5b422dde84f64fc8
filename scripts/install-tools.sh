#!/usr/bin/env bash
# Installs the Debian packages the build and the test suite need besides the broker:
# - to build: pkg-config and libssl-dev (librdkafka's TLS and SASL, HTTPS for the identity
#   provider's keys and the trace exporter link the system OpenSSL);
# - to test (skipped with --build): promtool (package prometheus) for validating the shipped alert
#   rules, jq/curl used by make run, python3 for the export verifier in docs/, and chromium with
#   chromium-driver for the console's browser tests;
# - with --bench only: wrk, the HTTP load generator of `ordo-bench query` (scripts/bench.sh query).
set -euo pipefail

if [ "${1:-}" = "--bench" ]; then
  command -v wrk >/dev/null 2>&1 && exit 0
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
  exit 0
fi

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
if [ "${1:-}" != "--build" ]; then
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
