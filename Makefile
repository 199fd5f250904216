# Every target sets up .venv first (idempotent, seconds when nothing changed).
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-fast demo bench bench-gpu lint lock clean

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest test

# The suite without the tests marked slow (node processes, closed loop, training runs): the developer's loop.
test-fast: setup
	$(PY) -m pytest test -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

# `make demo RIG=config/rigs/compact4.yaml`: another sensor rig; trains a small teacher and student
# for it first (python -m train.rig_demo, 10-20 min on 2 CPU cores), output in demo_out_rig/.
RIG ?=
demo: setup
ifeq ($(strip $(RIG)),)
	$(PY) -m imkd_ros.demo --checkpoint imkd_core/weights/imkd_tiny_demo.pt --out demo_out
else
	$(PY) -m train.rig_demo --rig $(RIG) --out demo_out_rig
endif

bench: setup
	$(PY) -m train.bench_model --config tiny
	$(PY) -m train.bench_model --config paper_r50_256x704 --iters 5 --warmup 1
	$(PY) -m train.bench_reader
	$(PY) -m train.bench_node
	$(PY) -m train.bench_live
	$(PY) -m train.bench_converter

# On a CUDA machine: paper config per backend/precision, the node's model time, AMP training (< 8 min).
bench-gpu: setup
	$(PY) -m train.bench_gpu

lock: setup
	$(PY) -m pip freeze --exclude-editable | grep -v '^cv-bridge' > tools/constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info demo_out demo_out_rig runs .pytest_cache
