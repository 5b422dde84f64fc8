# Ordo: the commands a developer needs. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help run stop reset test test-deps lint fmt schemas screenshot broker bench clean-test-dbs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: ## start everything with demo data (Ctrl-C or `make stop` stops it)
	scripts/run.sh

stop: ## stop what `make run` started
	scripts/stop.sh

reset: ## stop, drop the database and the demo state
	scripts/stop.sh --reset

test-deps:
	@scripts/ensure-postgres.sh
	@scripts/install-tools.sh
	@scripts/install-broker.sh
	@scripts/install-nextest.sh

test: test-deps ## the whole suite (real Postgres and a real broker), then schemathesis against both APIs
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast
	ST_CHECKS=all ST_SEED=7 ST_MAX_EXAMPLES=30 scripts/schemathesis.sh

lint: ## formatting check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

schemas: ## regenerate the JSON Schema files under schemas/json
	UPDATE_SCHEMAS=1 $(CARGO) test -p ordo-schemas --test schema_files

screenshot: test-deps ## run the console's browser test and save its screenshot as docs/console.png
	$(CARGO) build --workspace --bins
	ORDO_UPDATE_SCREENSHOT=1 $(CARGO) test -p ordo-tests --test e2e console

bench: ## write-path sequence (append, commands, cold load, HTTP load vs pgbench and the peer), then load, rebuild and relay runs (report in bench-results/<time>/)
	scripts/bench.sh

.PHONY: chaos
chaos: ## the full fault suite, alone (restarts PostgreSQL): kills, 30 s broker stop, scale-out, backup/restore
	scripts/chaos.sh

broker: ## run the local broker on 127.0.0.1:9092 in the foreground
	scripts/broker.sh 9092

clean-test-dbs: ## drop databases left behind by interrupted tests
	@psql -h 127.0.0.1 -U postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'ordo_t_%'" \
		| xargs -r -I{} psql -h 127.0.0.1 -U postgres -qc 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)'
