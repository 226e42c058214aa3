# TradeMind: `make demo` runs the product locally, `make test` runs every test. Both install what they need.
.DEFAULT_GOAL := help
VENV := .venv/bin
SHELL := /bin/bash

.PHONY: help setup up down status test test-db test-functions lint bench bench-setup demo chaos clean

help:
	@echo "make setup   install Debian/npm/Python dependencies (idempotent)"
	@echo "make up      start the local Supabase stack (trademind dev up)"
	@echo "make down    stop it"
	@echo "make test    lint, type-check, pgTAP, supabase db lint, Deno tests and pytest (starts the stack if needed)"
	@echo "make bench   run every benchmark under bench/ and print a table (BENCH=\"bench_x ...\" for some)"
	@echo "make bench-setup  install what the benchmarks compare against (freqtrade; make bench runs it)"
	@echo "make demo    run the whole product locally (DEMO_ARGS=\"--speed 600 --keep ...\")"
	@echo "make chaos   kill the worker 24 times during a 72-hour replay with faults; check Postgres, report start-up"

setup:
	@scripts/setup.sh

up: setup
	@$(VENV)/trademind dev up

down:
	@$(VENV)/trademind dev down

status:
	@$(VENV)/trademind dev status

lint: setup
	$(VENV)/ruff check worker cli devstack tests bench
	$(VENV)/ruff format --check worker cli devstack tests bench
	$(VENV)/mypy

# The stack is started if needed and stopped again afterwards only if this run started it.
test: setup lint
	@started=0; $(VENV)/trademind dev status >/dev/null 2>&1 || started=1; \
	$(VENV)/trademind dev up --quiet || exit 1; \
	status=0; \
	$(VENV)/trademind dev test-db || status=$$?; \
	$(VENV)/trademind dev lint-db || status=$$?; \
	$(MAKE) --no-print-directory test-functions || status=$$?; \
	$(VENV)/pytest || status=$$?; \
	if [ $$started = 1 ]; then $(VENV)/trademind dev down >/dev/null; fi; \
	exit $$status

test-db: setup
	@$(VENV)/trademind dev up --quiet && $(VENV)/trademind dev test-db

# Edge Function tests (deno test) against the running stack: real PostgREST/Postgres, the Gemini stand-in.
test-functions:
	@scripts/deno test --no-lock --allow-net --allow-env --allow-read supabase/functions/tests/

# Starts the local stack for the benchmarks that need it and stops it again if it started it.
# e.g. make bench BENCH="bench_realtime bench_functions"
bench: setup bench-setup
	@$(VENV)/python -m bench $(BENCH)

# What the benchmarks compare against, installed here so that running them downloads nothing: freqtrade (from
# PyPI, the version bench_backtest pins) in its own virtualenv under .devstack/.
bench-setup: setup
	@$(VENV)/python -m bench.bench_backtest install

# e.g. make demo DEMO_ARGS="--speed 600 --market-hours 48 --description '...' --keep" (trademind demo --help)
demo: setup
	@$(VENV)/trademind demo $(DEMO_ARGS)

# The long chaos run (tests/worker/chaos.py); `make test` runs a short one. Starts the stack if needed and
# stops it again only if this run started it. e.g. make chaos CHAOS_KILLS=50 CHAOS_MARKET_HOURS=120
CHAOS_KILLS ?= 24
CHAOS_MARKET_HOURS ?= 72
CHAOS_SPEED ?= 300
chaos: setup
	@started=0; $(VENV)/trademind dev status >/dev/null 2>&1 || started=1; \
	$(VENV)/trademind dev up --quiet || exit 1; \
	status=0; \
	CHAOS_KILLS=$(CHAOS_KILLS) CHAOS_MARKET_HOURS=$(CHAOS_MARKET_HOURS) CHAOS_SPEED=$(CHAOS_SPEED) \
	  $(VENV)/pytest -q -s -p no:cacheprovider tests/worker/test_chaos.py || status=$$?; \
	if [ $$started = 1 ]; then $(VENV)/trademind dev down >/dev/null; fi; \
	exit $$status

# Stops the stack and deletes its state, the folders it keeps in /var/tmp for a private checkout included.
clean:
	@if [ -x $(VENV)/trademind ]; then $(VENV)/trademind dev destroy --yes; else rm -rf .devstack; fi
