# notes-platform developer loop. Quick start: `make run`, `make test` (see README.md).
# Nothing to export: Redis and PostgreSQL are found (REDIS_URL / DATABASE_URL, else the local
# servers, else embedded ones from PyPI wheels) by tools/devstack.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv comes from PATH, or is bootstrapped with pip on first use.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_PYTHON_DOWNLOADS := never
# Bytecode is compiled at install: these machines set PYTHONDONTWRITEBYTECODE=1, so without it every
# start would compile every module from source.
export UV_COMPILE_BYTECODE := 1
PYTEST_ARGS ?=
# After `sync`, the virtualenv's own scripts: `uv run` would add a third of a second to each start.
VENV := $(or $(UV_PROJECT_ENVIRONMENT),.venv)

.PHONY: help bootstrap sync run key test chaos lint fmt schemas new-consumer new-job bench stop clean up down dashboards deploy-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

bootstrap: ## install uv with pip if it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet "uv>=0.9,<0.14" \
		|| python3 -m pip install --quiet --user --break-system-packages "uv>=0.9,<0.14"

sync: $(VENV)/.synced ## install every workspace member and the dev tools from uv.lock
	@# The members are editable installs, which uv does not compile; compileall skips fresh files.
	@$(VENV)/bin/python -m compileall -q libs services tools >/dev/null

# uv runs only when the lock or a pyproject changed since the last sync: on a synced checkout its
# check of every compiled file would cost each `make run` most of a second.
$(VENV)/.synced: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml) | bootstrap
	@$(UV) sync --locked --all-packages --quiet
	@touch $@

run: sync ## migrate and start every service, ready to try (Ctrl-C stops)
	@$(VENV)/bin/devstack run

key: sync ## create an API key: make key owner=you (prints the key alone)
	@$(if $(owner),,$(error usage: make key owner=NAME))
	@$(VENV)/bin/devstack exec -- notes-api create-key --owner "$(owner)"

stop: ## stop embedded servers a killed `make run` left under .local/
	@$(UV) run --no-sync devstack stop

# `make test` runs on pytest-xdist, a worker per core. --dist loadfile keeps each file on one
# worker, so an e2e module's platform (private Redis, PostgreSQL and every process) starts once;
# every test has its own database and key prefix, so no two collide. XDIST= runs one at a time.
XDIST ?= -n auto --dist loadfile
test: sync ## all tests except the long chaos suite (in parallel: XDIST= for one at a time)
	$(UV) run --locked pytest -m "not chaos" $(XDIST) $(PYTEST_ARGS)

chaos: sync ## full-size and process-killing tests
	$(UV) run --locked pytest -m chaos $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "chaos: no chaos tests collected"; exit 0; fi; exit $$rc

lint: sync ## ruff, ruff format --check, mypy, import-linter, workflow schema, schema and AsyncAPI drift, deploy-check
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked mypy
	$(UV) run --locked lint-imports
	$(UV) run --locked check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(UV) run --locked python scripts/export_schemas.py --check
	$(UV) run --locked python scripts/export_asyncapi.py --check
	$(MAKE) --no-print-directory deploy-check

# The container stack: needs Docker and deploy/.env (from deploy/env.example). Not run on the dev
# machines (no engine); `make deploy-check` validates everything it can offline.
COMPOSE := docker compose --env-file deploy/.env -f docker-compose.yml

up: ## start the full container stack (Docker; credentials in deploy/.env)
	@test -f deploy/.env || { echo "copy deploy/env.example to deploy/.env and set its passwords"; exit 1; }
	@! grep -q '=change-me$$' deploy/.env || { echo "deploy/.env still has a change-me password"; exit 1; }
	$(COMPOSE) up -d --wait

down: ## stop the container stack (volumes kept)
	$(COMPOSE) down

dashboards: sync ## regenerate Grafana dashboards and the compose scrape config from code
	$(UV) run --locked python deploy/dashboards/build.py
	$(UV) run --locked python deploy/stack.py

# Offline checks of deploy/ (also run by `make lint`): the compose file, the Dockerfile, generated
# files up to date; promtool's config and rule checks and rule unit tests where promtool is installed.
deploy-check: sync ## validate deploy/ offline: compose config, hadolint, promtool, dashboard drift
	$(VENV)/bin/docker-compose --env-file deploy/env.example -f docker-compose.yml config -q
	$(UV) run --locked check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(VENV)/bin/hadolint deploy/Dockerfile
	$(UV) run --locked python deploy/stack.py --check
	$(UV) run --locked python deploy/dashboards/build.py --check
	@if command -v promtool >/dev/null; then \
		set -e; \
		promtool check config --syntax-only deploy/prometheus/prometheus.yml; \
		promtool check rules deploy/prometheus/rules/*.yml; \
		promtool test rules deploy/prometheus/tests/*.yml; \
	else echo "deploy-check: promtool not installed (apt-get install --no-install-recommends prometheus): rules not checked"; fi

fmt: sync ## apply ruff's fixes and formatting
	$(UV) run --locked ruff check --fix .
	$(UV) run --locked ruff format .

schemas: sync ## export every event's JSON Schema to docs/events/, AsyncAPI to docs/asyncapi/
	$(UV) run --locked python scripts/export_schemas.py
	$(UV) run --locked python scripts/export_asyncapi.py

new-consumer: sync ## generate a consumer service from the archiver's shape: make new-consumer name=NAME [job=JOB]
	@$(if $(name),,$(error usage: make new-consumer name=NAME [job=JOB]))
	@$(VENV)/bin/scaffold new-consumer "$(name)" $(if $(job),--job "$(job)")

new-job: sync ## add a job to a service: make new-job service=S name=N [handler=H]
	@$(if $(and $(service),$(name)),,$(error usage: make new-job service=SERVICE name=JOB [handler=NAME]))
	@$(VENV)/bin/scaffold new-job "$(service)" "$(name)" $(if $(handler),--handler "$(handler)")

bench: sync ## throughput/latency benchmarks; figures in .bench/results.json
	$(UV) run --locked devstack exec -- python -m bench

clean: ## remove caches, the virtualenv and the embedded servers' data (.local/)
	-@$(UV) run --no-sync devstack stop 2>/dev/null
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .bench .local
