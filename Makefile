# The two commands a newcomer needs: `make dev` and `make test`.
SHELL := /bin/bash

.PHONY: dev test lint bench package chaos

## Run agentrun in one process on PostgreSQL, with the mock LLM and the example agents.
dev:
	@url="$${DATABASE_URL:-$$(scripts/ensure-postgres.sh)/agentrun_dev}"; \
	  DATABASE_URL="$$url" cargo run --bin agentrun -- dev

## Run every test (unit and end-to-end, against a real PostgreSQL).
test:
	scripts/test.sh

## Formatting and lints, as CI checks them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## W1-W4 beside their references, three rounds, then the medians (see BENCHMARKS.md).
bench:
	python3 scripts/bench.py

## arm64 Lambda zips of the four functions (target/lambda/<function>/bootstrap.zip), sizes printed.
package:
	scripts/package.sh

## Chaos: runs with HTTP tools while agentrun dev is SIGKILLed and PostgreSQL crashed (not in CI).
chaos:
	cargo build --bin agentrun && python3 scripts/chaos.py
