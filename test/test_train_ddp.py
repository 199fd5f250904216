"""DistributedDataParallel: train/train.py under torchrun with two gloo processes on CPU runs a few
steps of the (micro) student with a frozen teacher and every distillation term; afterwards the
parameters are identical on both ranks and differ from the initialisation, and only rank 0 wrote
the log and the checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from test.train_support import (
    VERSION,
    micro_config,
    micro_config_yaml,
    random_teacher_checkpoint,
    read_jsonl,
    run_train,
    synthetic_dataroot,
)

pytestmark = pytest.mark.slow  # training or benchmark runs: in `make test`, not in `make test-fast`

STEPS = 3
SEED = 5


def test_two_gloo_processes_keep_identical_parameters(tmp_path: Path,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    summary = run_train(["--model", "student", "--config", micro_config_yaml(tmp_path_factory),
                         "--dataroot", synthetic_dataroot(tmp_path_factory), "--version", VERSION,
                         "--train-scenes", "synth-train-*", "--teacher", random_teacher_checkpoint(tmp_path_factory),
                         "--kd", "l1,l2,l3,resp", "--max-steps", STEPS, "--batch-size", "1", "--lr", "5e-3",
                         "--warmup-steps", "0", "--num-workers", "0", "--threads", "1", "--seed", SEED,
                         "--device", "cpu", "--no-progress", "--debug-rank-dump", "--out", out],
                        launcher=launcher, timeout=300)
    assert summary["world_size"] == 2 and summary["steps"] == STEPS
    # 4 training samples, 2 ranks x batch 1 -> 2 steps per epoch: the DistributedSampler shards the data
    assert summary["steps_per_epoch"] == 2

    p0 = torch.load(out / "rank0_params.pt", weights_only=True)
    p1 = torch.load(out / "rank1_params.pt", weights_only=True)
    from imkd_core.models.detector import Student

    torch.manual_seed(SEED)  # train.py seeds like this before building the model
    init = Student(micro_config(), load_pretrained=False)
    params = dict(init.named_parameters())
    changed = 0
    for name, p in params.items():
        assert torch.equal(p0[name], p1[name]), f"parameter {name} differs between ranks"
        changed += int(not torch.equal(p0[name], p.detach()))
    assert changed >= 0.9 * len(params), f"only {changed}/{len(params)} parameters changed"
    # each KD term was active and logged once per step by rank 0 only (losses averaged over ranks)
    recs = [r for r in read_jsonl(out / "log.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in recs] == list(range(1, STEPS + 1))
    assert all(k in recs[-1] for k in ("l1", "l2", "l3", "resp", "det", "total", "lr", "samples_per_s"))
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["step"] == STEPS
    for name in params:
        assert torch.equal(ck["model"][name], p0[name])
