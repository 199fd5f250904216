# Every target sets up .venv first (idempotent, seconds when nothing changed).
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup test demo bench lint lock clean

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest test

lint: setup
	$(VENV)/bin/ruff check .

demo: setup
	$(PY) -m imkd_ros.demo --out demo_out

bench: setup
	$(PY) train/bench_model.py --config tiny
	$(PY) train/bench_reader.py
	$(PY) train/bench_node.py
	$(PY) train/bench_live.py
	$(PY) train/bench_converter.py

lock: setup
	$(PY) -m pip freeze --exclude-editable | grep -v '^cv-bridge' > tools/constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info demo_out runs .pytest_cache
