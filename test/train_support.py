"""Shared helpers of the training tests (not a test module): a micro model config, a tiny synthetic
nuScenes-format dataset generated once per pytest session, a random teacher checkpoint, and a
runner for `python -m train.train` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["-m", "train.train"]  # the training CLI, run from REPO
VERSION = "v1.0-synth"


def micro_config():
    """The tiny preset shrunk further (64x160 input, 32x32 BEV at 1.6 m, 8-channel features):
    a training step takes well under a second on one CPU thread."""
    from imkd_core.config import IMKDConfig, get_config

    d = get_config("tiny").to_dict()
    d["name"] = "micro"
    d["data"].update(image_size=[64, 160], radar_sweeps=1, lidar_sweeps=1)
    d["grid"].update(x_bound=[-25.6, 25.6], y_bound=[-25.6, 25.6], cell=1.6)
    d["model"].update(backbone_width=0.125, neck_channels=8, depth_bins=[1.0, 33.0, 4.0], depth_channels=16,
                      context_channels=8, radar_pillar_channels=8, radar_channels=8, lidar_pillar_channels=8,
                      bev_channels=8, fusion_hidden=8, bev_encoder_channels=[8, 16, 16], bev_fpn_channels=8,
                      head_channels=8, max_detections=50)
    return IMKDConfig.from_dict(d)


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "imkd_train_shared"


def micro_config_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = _shared_dir(tmp_path_factory) / "micro.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        micro_config().save_yaml(path)
    return path


def synthetic_dataroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 scenes x 4 keyframes (synth-train-0000, synth-val-0001), small images, no sweeps:
    generated once per session (a few seconds) and shared by the training tests."""
    from imkd_core.data.synthetic import SyntheticConfig, generate

    root = _shared_dir(tmp_path_factory) / "synth"
    done = root / "DONE"
    if not done.exists():
        generate(root, SyntheticConfig(scenes=2, samples_per_scene=4, seed=0, sweeps=False, image_size=(352, 198),
                                       lidar_azimuth_steps=360, version=VERSION))
        done.write_text("ok\n")
    return root


def random_teacher_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised (frozen-able) micro teacher in the checkpoint format train.py reads."""
    import torch

    from imkd_core.checkpoint import save_checkpoint
    from imkd_core.models.detector import Teacher

    path = _shared_dir(tmp_path_factory) / "teacher_random.pt"
    if not path.exists():
        cfg = micro_config()
        torch.manual_seed(123)
        save_checkpoint(path, {"kind": "teacher", "config": cfg.to_dict(), "model": Teacher(cfg).state_dict()})
    return path


def train_env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_train(args: list[str], timeout: float = 240, launcher: list[str] | None = None) -> dict:
    """Run `python -m train.train` (optionally under a launcher such as torchrun) and return the summary JSON
    of its last stdout line; fails the test with the output on a non-zero exit."""
    cmd = (launcher or [sys.executable]) + TRAIN + [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(cmd)}\nexit {proc.returncode}\n"
                                  f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
