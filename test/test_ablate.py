"""train/ablate.py end to end on a micro world: 2 arms x 2 paired seeds plus the teacher, a few
steps each, real train.py subprocesses, the devkit, the probes and the teacher-output cache.

Checks the report's schema (val_samples, val_scenes, seeds, rows, comparisons with ci95 and
ci95_scene), that each comparison's diff is the mean of the paired row differences, that a second
call resumes without training, and that a run reading the cached teacher outputs trains exactly
like the run that wrote them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test.train_support import micro_config_yaml

pytestmark = pytest.mark.slow  # training or benchmark runs: in `make test`, not in `make test-fast`

REPO = Path(__file__).resolve().parents[1]
VERSION = "v1.0-synth"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 scenes x 2 keyframes, 2 of them val (the scene bootstrap needs more than one)."""
    from imkd_core.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("ablate") / "synth"
    generate(root, SyntheticConfig(scenes=4, samples_per_scene=2, seed=5, sweeps=False, image_size=(352, 198),
                                   lidar_azimuth_steps=360, val_fraction=0.5, version=VERSION))
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_ablation_end_to_end(world: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg = micro_config_yaml(tmp_path_factory)
    out, js, md = tmp_path / "runs", tmp_path / "ablation.json", tmp_path / "ablation.md"
    cmd = [sys.executable, "-m", "train.ablate", "--dataroot", str(world), "--version", VERSION,
           "--config", str(cfg), "--arms", "nokd,l1", "--seeds", "0,1", "--steps", "2", "--teacher-steps", "2",
           "--batch-size", "2", "--num-workers", "0", "--threads", "1", "--time-budget-min", "0",
           "--probes", "--probe-arms", "l1", "--n-boot", "200", "--keep-teacher-cache", "--out", str(out),
           "--json", str(js), "--md", str(md)]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(js.read_text())
    assert doc["val_samples"] == 4 and doc["val_scenes"] == 2 and doc["seeds"] == [0, 1]
    rows = doc["rows"]
    assert [(r["name"], r["seed"]) for r in rows] == [("teacher", 0), ("nokd", 0), ("l1", 0), ("nokd", 1),
                                                      ("l1", 1)]
    for r in rows:
        for k in ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "AP@0.5", "AP@4.0", "mAP@0-20m"):
            assert isinstance(r[k], float), (r["name"], k)
        assert r["steps"] == 2 and set(r["scenes"]) == {"synth-val-0002", "synth-val-0003"}
    by = {(r["name"], r["seed"]): r for r in rows}
    comps = {(c["arm"], c["baseline"], c["metric"]): c for c in doc["comparisons"]}
    c = comps[("l1", "nokd", "NDS")]
    assert set(c) >= {"arm", "baseline", "metric", "diff", "ci95", "ci95_scene"}
    diffs = [by[("l1", s)]["NDS"] - by[("nokd", s)]["NDS"] for s in (0, 1)]
    assert c["diff"] == pytest.approx(float(np.mean(diffs)))
    assert c["n_seeds"] == 2 and len(c["ci95"]) == 2 and c["n_scenes"] == 2
    if diffs[0] != diffs[1]:
        assert c["ci95"][0] < c["diff"] < c["ci95"][1]
    for metric in ("mAP", "mATE", "mAOE", "mAVE", "AP@0.5", "AP@1.0", "AP@2.0", "AP@4.0", "mAP@35-50m"):
        assert ("l1", "nokd", metric) in comps
    assert "probes" not in by[("nokd", 0)] and "probes" not in by[("l1", 1)]  # --probe-arms, --probe-seeds
    for name in ("l1",):
        p = by[(name, 0)]["probes"]
        for k in ("NDS", "radar_zeroed_NDS", "intensity_const_NDS", "cameras_masked_NDS"):
            assert 0.0 <= p[k] <= 1.0
        assert p["depth_cells"] > 0 and 0.0 <= p["depth_bin_acc"] <= 1.0
        cov = p["weight_coverage"]
        for m in ("W1_l1", "W2_l2", "W_resp", "W_bev", "L3_target"):
            assert 0.0 <= cov[m]["frac_cells"] <= 1.0 and 0.0 <= cov[m]["frac_weight_on_gt_boxes"] <= 1.0 + 1e-6
    assert 0.0 < doc["weight_coverage"]["W1_l1"]["frac_cells"] < 1.0
    assert "| l1 | nokd | NDS |" in md.read_text()
    # the teacher-output cache: written by the l1 runs (the no-KD runs have no teacher)
    s0 = json.loads((out / "seed0" / "l1" / "summary.json").read_text())
    assert s0["teacher_cache"]["misses"] == 2 and s0["teacher_cache"]["hits"] == 0
    assert json.loads((out / "seed0" / "nokd" / "summary.json").read_text())["teacher_cache"] is None

    # a second call resumes: nothing is trained again, the report is the same
    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished before, skipped") == 5
    assert json.loads(js.read_text())["comparisons"] == doc["comparisons"]

    # reading the cache trains exactly like computing the teacher's outputs
    rerun = [a if a != str(out / "seed0" / "l1") else str(tmp_path / "l1_again")
             for a in s0_command(out)]
    proc = subprocess.run(rerun, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s1 = json.loads((tmp_path / "l1_again" / "summary.json").read_text())
    assert s1["teacher_cache"]["hits"] == 2 and s1["teacher_cache"]["mismatches"] == 0
    assert s1["final_loss"] == pytest.approx(s0["final_loss"], rel=1e-5)

    # the tool that balances the KD weights measures every term on each starting student
    kdg = [sys.executable, "-m", "train.kd_gradients", "--dataroot", str(world), "--version", VERSION,
           "--config", str(cfg), "--teacher", str(out / "teacher" / "last.pt"), "--student",
           str(out / "seed0" / "nokd" / "last.pt"), "--batches", "1", "--batch-size", "2",
           "--set", "model.fusion_gate=strong"]
    proc = subprocess.run(kdg, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grads = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(grads) == {"random", "inherited", "student"}
    for name, terms in grads.items():
        assert set(terms) == {"det", "l1", "l2", "bev", "resp", "resp_box", "l3"}, name
        assert all(np.isfinite(v["grad_norm"]) and v["grad_norm"] >= 0 for v in terms.values()), (name, terms)
        # resp_box may be 0: a 2-step teacher is confident nowhere
        assert all(terms[k]["grad_norm"] > 0 for k in ("det", "l1", "l2", "bev", "resp", "l3")), (name, terms)
    assert grads["inherited"]["det"] != grads["random"]["det"]  # the teacher's head and BEV encoder
    bad = subprocess.run([*kdg[:-2], "--set", "model.no_such_key=1"], cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no_such_key" in bad.stderr


def s0_command(out: Path) -> list[str]:
    """The recorded train.py command of seed 0's l1 run, as an argv."""
    import shlex

    state = json.loads((out / "ablation_state.json").read_text())
    argv = shlex.split(state["seed0/l1"]["command"])
    assert argv[:3] == ["python", "-m", "train.train"], argv
    return [sys.executable, *argv[1:]]
