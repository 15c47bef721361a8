# Kindred: the two commands of the README are `make run` and `make test`.
# Everything else here is what those two are made of.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_USERS ?= 2000
DEMO_SEED ?= 42
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?= --search --users 100000

.PHONY: run test install setup serve lint check bench

## make run: install, migrate, seed demo data, train the models and build the index,
## print an admin login, serve on :8000
run: setup serve

## make test: install and run the whole test suite (uses DATABASE_URL/REDIS_URL if set)
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# A local .env with a freshly generated secret key, made once and never committed.
.env:
	@echo "DJANGO_SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env
	@echo "Wrote .env with a new DJANGO_SECRET_KEY (see .env.example for every setting)."

setup: install .env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py seed_demo --users $(DEMO_USERS) --seed $(DEMO_SEED)
	# Trains once; what it trains is promoted since nothing is active yet.
	AUTO_PROMOTE=true $(PY) manage.py train_models --if-untrained
	$(PY) manage.py ensure_admin --reset-password

serve: install .env
	@echo "Kindred on http://$(HOST):$(PORT)/  admin: /admin/  API docs: /api/docs/"
	GUNICORN_BIND=$(HOST):$(PORT) $(VENV)/bin/gunicorn -c config/gunicorn.conf.py config.wsgi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: install
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

## make bench: install the benchmark tools (requirements-bench.txt, Debian's wrk) and
## run `manage.py benchmark $(BENCH_ARGS)`; figures land in BENCHMARKS.md/.json
bench: install $(VENV)/.bench-installed
	$(PY) manage.py benchmark $(BENCH_ARGS)

$(VENV)/.bench-installed: requirements-bench.txt requirements.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	command -v wrk >/dev/null || apt-get install -y wrk || sudo apt-get install -y wrk
	touch $@
