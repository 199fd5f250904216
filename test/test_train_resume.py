"""Kill-and-resume: a student run SIGKILLed after step k and resumed with --resume ends exactly like
an uninterrupted run (same per-step losses, parameters, optimizer state and final devkit metrics).

The runs are real train/train.py subprocesses on a tiny synthetic nuScenes-format dataset, with a
(random) frozen teacher and all four distillation terms, validation mid-run and at the end, and a
checkpoint every step; the kill lands wherever the first run happens to be after step k.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test.train_support import (
    REPO,
    TRAIN,
    VERSION,
    micro_config_yaml,
    random_teacher_checkpoint,
    read_jsonl,
    run_train,
    synthetic_dataroot,
    train_env,
)

pytestmark = pytest.mark.slow  # training or benchmark runs: in `make test`, not in `make test-fast`

TOTAL_STEPS = 6
KILL_AFTER = 3
LOSS_KEYS = ("total", "det", "det_hm", "det_bbox", "det_depth", "l1", "l2", "l3", "resp", "lr", "grad_norm")


@pytest.fixture(scope="module")
def common_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = synthetic_dataroot(tmp_path_factory)
    return ["--model", "student", "--config", micro_config_yaml(tmp_path_factory), "--dataroot", root,
            "--version", VERSION, "--train-scenes", "synth-train-*", "--val-scenes", "synth-val-*",
            "--val-limit", "2", "--val-every", "2", "--teacher", random_teacher_checkpoint(tmp_path_factory),
            "--kd", "l1,l2,l3,resp,init", "--max-steps", str(TOTAL_STEPS), "--batch-size", "2", "--lr", "5e-3",
            "--warmup-steps", "2", "--num-workers", "0", "--threads", "1", "--seed", "7", "--ckpt-every", "1",
            "--no-progress"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, common_args: list[str]) -> tuple[Path, dict]:
    """The uninterrupted run (shared by the tests of this module)."""
    full = tmp_path_factory.mktemp("resume") / "full"
    summary = run_train([*common_args, "--out", full])
    assert summary["steps"] == TOTAL_STEPS and summary["stopped"] == "completed"
    return full, summary


def _train_records(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_jsonl(run / "log.jsonl") if r["type"] == "train"}


def _kill_after_step(args: list[str], run: Path, k: int, timeout: float = 180) -> int:
    """Start train.py, SIGKILL it as soon as its log shows step >= k; return the last step logged."""
    cmd = [sys.executable, *TRAIN, *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=train_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log = run / "log.jsonl"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists():
                steps = [r["step"] for r in read_jsonl(log) if r.get("type") == "train"]
                if steps and max(steps) >= k:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-training (exit {proc.returncode}):\n{err}"
    return max(r["step"] for r in read_jsonl(log) if r.get("type") == "train")


def test_kill_and_resume_matches_uninterrupted(tmp_path: Path, common_args: list[str],
                                               reference_run: tuple[Path, dict]) -> None:
    full, ref = reference_run
    broken = tmp_path / "broken"

    killed_at = _kill_after_step([*common_args, "--out", broken], broken, KILL_AFTER)
    assert killed_at < TOTAL_STEPS
    assert not (broken / "summary.json").exists()
    ck_step = torch.load(broken / "last.pt", weights_only=True)["step"]
    assert KILL_AFTER - 1 <= ck_step <= killed_at  # checkpoint every step; the kill may precede the next save

    resumed = run_train([*common_args, "--out", broken, "--resume"])
    assert resumed["steps"] == TOTAL_STEPS and resumed["stopped"] == "completed"

    # every step's losses (each KD term separately), lr and gradient norm are identical
    a, b = _train_records(full), _train_records(broken)
    assert sorted(a) == sorted(b) == list(range(1, TOTAL_STEPS + 1))
    for step in a:
        for key in LOSS_KEYS:
            assert key in a[step], f"log lacks {key}"
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-6, abs=1e-7), \
                f"step {step} {key}: uninterrupted {a[step][key]!r} vs resumed {b[step][key]!r} (killed at {killed_at})"
    # the final weights, BN statistics and optimizer state are identical
    ca = torch.load(full / "last.pt", weights_only=True)
    cb = torch.load(broken / "last.pt", weights_only=True)
    assert ca["step"] == cb["step"] == TOTAL_STEPS
    for name, t in ca["model"].items():
        assert torch.allclose(t.float(), cb["model"][name].float(), rtol=1e-5, atol=1e-6), name
    for pid, st in ca["optimizer"]["state"].items():
        for key, t in st.items():
            assert torch.allclose(t.float(), cb["optimizer"]["state"][pid][key].float(), rtol=1e-5, atol=1e-7)
    assert ca["scheduler"]["last_epoch"] == cb["scheduler"]["last_epoch"] == TOTAL_STEPS
    # validation: devkit metrics at the end (and in the middle) agree; best.pt tracked by NDS
    assert ref["final"] is not None and resumed["final"] is not None
    for key in ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE"):
        assert ref["final"][key] == pytest.approx(resumed["final"][key], abs=1e-6), key
    val_a = [r for r in read_jsonl(full / "log.jsonl") if r["type"] == "val"]
    assert [r["step"] for r in val_a] == [4, TOTAL_STEPS]
    assert ref["best_nds"] == max(r["NDS"] for r in val_a) and (full / "best.pt").exists()
    assert (full / "loss_curve.png").stat().st_size > 1000


def test_completed_run_resumes_as_a_no_op(tmp_path: Path, common_args: list[str],
                                          reference_run: tuple[Path, dict], capsys: pytest.CaptureFixture) -> None:
    """--resume on a finished run does no step and keeps its metrics; without --resume an existing
    run dir is refused; a slim inference checkpoint of it loads in the Predictor."""
    from imkd_core.checkpoint import load_checkpoint
    from imkd_core.data.synthetic.frames import synthetic_frame
    from imkd_core.evaluate import detections_to_results
    from imkd_core.predict import Predictor
    from train.checkpoints import slim_checkpoint
    from train.data import build_readers
    from train.train import main as train_main
    from train.validation import predict_dataset

    full, ref = reference_run
    run = tmp_path / "run"
    shutil.copytree(full, run)
    with pytest.raises(SystemExit) as info:
        train_main([*map(str, common_args), "--out", str(run)])
    assert info.value.code == 2 and "pass --resume to continue" in capsys.readouterr().err
    again = run_train([*common_args, "--out", run, "--resume"])
    assert again["steps"] == ref["steps"] == TOTAL_STEPS
    assert again["final"] == ref["final"] and again["best_nds"] == ref["best_nds"]
    assert len(_train_records(run)) == TOTAL_STEPS
    assert len([r for r in read_jsonl(run / "log.jsonl") if r["type"] == "val"]) == 2

    slim = slim_checkpoint(run / "best.pt", tmp_path / "slim.pt")
    payload = load_checkpoint(slim)
    assert set(payload) == {"format", "kind", "config", "model", "meta"}
    assert slim.stat().st_size < (run / "last.pt").stat().st_size / 2
    predictor = Predictor(checkpoint=slim, device="cpu")
    dets = predictor.predict(synthetic_frame(seed=1, with_lidar=False)[0])
    assert dets.boxes.shape[1] == 9

    # validation decodes exactly what the Predictor returns for the same val frames
    ns = argparse.Namespace(dataroot=common_args[common_args.index("--dataroot") + 1], version=VERSION,
                            train_scenes=["synth-train-*"], val_scenes=["synth-val-*"], model="student")
    _, val_reader = build_readers(ns, predictor.config)
    results, tokens = predict_dataset(predictor.model, val_reader, predictor.config, torch.device("cpu"), limit=2)
    for i, token in enumerate(tokens):
        frame, _ = val_reader[i]
        ref = predictor.predict(frame)
        got = results["results"][token]
        assert len(got) == min(len(ref), 500) and len(ref) > 0
        expect = detections_to_results({token: ref}, {token: frame.ego_to_global})["results"][token]
        for g, e in zip(got, expect):
            assert g["detection_name"] == e["detection_name"]
            np.testing.assert_allclose(g["translation"], e["translation"], atol=1e-4)
            assert abs(g["detection_score"] - e["detection_score"]) < 1e-6


def test_param_groups_train_inherited_layers_slower() -> None:
    """Under 'init' the inherited BEV encoder and head train at init_lr_scale x lr, the frozen A_M
    not at all; every other trainable parameter sits in exactly one group at the full lr."""
    from imkd_core.config import tiny
    from imkd_core.models import Student, Teacher
    from train.loop import param_groups

    cfg = tiny()
    torch.manual_seed(0)
    student = Student(cfg, load_pretrained=False)
    student.inherit_from(Teacher(cfg))
    groups = param_groups(student, 0.01, 1e-3, (student.inherited_parameters(), 0.1))
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == sum(p.requires_grad for p in student.parameters())
    slow = {id(p) for p in student.inherited_parameters()}
    for g in groups:
        assert {id(p) in slow for p in g["params"]} == {g["lr_scale"] == 0.1}
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])
        assert g["weight_decay"] == (0.01 if g["decay"] else 0.0)
        assert all((p.ndim > 1) == g["decay"] for p in g["params"])
    assert not {id(p) for p in student.adapter_m.parameters()} & set(seen)
    assert len(param_groups(student, 0.01, 1e-3)) == 2
