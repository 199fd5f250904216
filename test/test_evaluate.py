"""Devkit evaluation on explicit sample lists: GT-as-predictions sanity, shift reaction, result format.

Dataset checks are parametrised over DATASETS (test/datasets.py): the real scene-0916 (mini_val) and
the validation scene(s) of a small synthetic dataset.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from imkd_core.evaluate import default_attribute, detections_to_results, evaluate, gt_as_predictions
from imkd_core.frame import CLASSES, Detections

from . import datasets

# Sweep files of the real subset are absent by design: the reader warns once (tested explicitly).
pytestmark = pytest.mark.filterwarnings("ignore:nuScenes sweep files missing:RuntimeWarning")

REPO = datasets.REPO
DATASETS = datasets.params("real", "synthetic")

_READERS: dict[tuple, object] = {}


def reader_for(root: Path, version: str, scenes: list[str]):
    from imkd_core.data.nuscenes import NuScenesReader

    key = (str(root), version, tuple(scenes))
    if key not in _READERS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            _READERS[key] = NuScenesReader(root, version, scenes=scenes, load_lidar=False)
    return _READERS[key]


def check_perfect(m: dict) -> None:
    present = m["classes_with_gt"]
    assert present, "no GT in the evaluated samples"
    for c in present:
        assert m["per_class_AP"][c] >= 0.99, (c, m["per_class_AP"][c])
        assert m["per_class_tp"][c]["mATE"] < 0.01
        assert m["per_class_tp"][c]["mASE"] < 0.01
    assert m["mAP_present"] >= 0.99
    assert m["NDS_present"] >= 0.99
    # the devkit's own mAP averages all 10 classes: classes without GT count as AP 0
    assert m["mAP"] == pytest.approx(len(present) / len(CLASSES), abs=0.01)


@pytest.mark.parametrize("ds", DATASETS)
def test_gt_as_predictions_is_perfect(ds, tmp_path: Path) -> None:
    spec = datasets.get(ds)
    root, version, scenes = spec.root, spec.version, list(spec.eval_scenes)
    reader = reader_for(root, version, scenes)
    results = gt_as_predictions(reader, reader.sample_tokens)
    m = evaluate(reader.nusc, version, results, reader.sample_tokens, tmp_path, verbose=False)
    check_perfect(m)
    assert (tmp_path / "metrics_summary.json").is_file() and (tmp_path / "results_nusc.json").is_file()
    summary = json.loads((tmp_path / "metrics_summary.json").read_text())
    assert summary["mean_ap"] == pytest.approx(m["mAP"])
    # attributes from the GT: attribute error 0 where defined
    assert all(m["per_class_tp"][c]["mAAE"] < 1e-6 for c in m["classes_with_gt"]
               if not math.isnan(m["per_class_tp"][c]["mAAE"]))


@pytest.mark.parametrize("ds", DATASETS)
def test_shifted_predictions_drop_map(ds, tmp_path: Path) -> None:
    spec = datasets.get(ds)
    root, version, scenes = spec.root, spec.version, list(spec.eval_scenes)
    reader = reader_for(root, version, scenes)
    results = gt_as_predictions(reader, reader.sample_tokens, shift_m=2.0)
    m = evaluate(reader.nusc, version, results, reader.sample_tokens, tmp_path, verbose=False)
    assert m["mAP"] < 0.3 and m["mAP_present"] < 0.3
    assert m["mATE"] > 0.5


@pytest.mark.parametrize("ds", DATASETS)
def test_gt_from_tables_equals_reader_round_trip(ds, tmp_path: Path) -> None:
    """Annotations copied straight (global) and via the reader's ego frame score the same."""
    spec = datasets.get(ds)
    root, version, scenes = spec.root, spec.version, list(spec.eval_scenes)
    reader = reader_for(root, version, scenes)
    tokens = reader.sample_tokens[::4]
    direct = gt_as_predictions(reader.nusc, tokens)
    via_ego = gt_as_predictions(reader, tokens)
    for t in tokens:
        a, b = direct["results"][t], via_ego["results"][t]
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x["detection_name"] == y["detection_name"] and x["attribute_name"] == y["attribute_name"]
            assert np.allclose(x["translation"], y["translation"], atol=1e-4)
            assert np.allclose(x["size"], y["size"], atol=1e-5)
            # upright boxes: yaw only; the ego frame tilts with the road so allow a few mrad
            assert abs(np.sin(0.5 * (_yaw(x["rotation"]) - _yaw(y["rotation"])))) < 5e-3
    m = evaluate(reader.nusc, version, direct, tokens, tmp_path, verbose=False)
    check_perfect(m)


@pytest.mark.parametrize("ds", DATASETS)
def test_cli_gt_as_predictions(ds, tmp_path: Path) -> None:
    """train/evaluate.py as a user runs it; its last stdout line is the metrics JSON."""
    spec = datasets.get(ds)
    root, version, scenes = spec.root, spec.version, list(spec.eval_scenes)
    cmd = [sys.executable, "-m", "train.evaluate", "--dataroot", str(root), "--version", version,
           "--scenes", *scenes, "--gt-as-predictions", "--out", str(tmp_path / "eval"), "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    m = json.loads(last)
    assert m["mode"] == "gt_as_predictions" and m["scenes"] == scenes
    for c in m["classes_with_gt"]:
        assert m["per_class_AP"][c] >= 0.99
    assert m["mAP_present"] >= 0.99 and m["NDS_present"] >= 0.99
    assert (tmp_path / "eval" / "metrics_summary.json").is_file()


@pytest.mark.parametrize("ds", datasets.params("synthetic"))
def test_cli_checkpoint_mode(ds, tmp_path: Path) -> None:
    """--checkpoint goes through imkd_core.predict.Predictor (a random-init tiny student here: the
    plumbing, not the accuracy, is under test)."""
    pytest.importorskip("imkd_core.predict")
    from imkd_core.checkpoint import save_checkpoint
    from imkd_core.config import get_config
    from imkd_core.models.detector import Student

    sys.path.insert(0, str(REPO))
    from train.evaluate import main

    cfg = get_config("tiny")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "student.pt", {"kind": "student", "config": cfg.to_dict(),
                                                     "model": Student(cfg, load_pretrained=False).state_dict()})
    spec = datasets.get(ds)
    root, version, scenes = spec.root, spec.version, list(spec.eval_scenes)
    m = main(["--dataroot", str(root), "--version", version, "--scenes", *scenes, "--checkpoint", str(ckpt),
              "--device", "cpu", "--max-samples", "1", "--out", str(tmp_path / "eval"), "--quiet"])
    assert m["num_samples"] == 1 and 0.0 <= m["mAP"] <= 1.0
    results = json.loads((tmp_path / "eval" / "results_nusc.json").read_text())["results"]
    assert len(results) == 1 and all(0 < len(v) <= 500 for v in results.values())


@pytest.mark.parametrize("ds", DATASETS)
def test_empty_and_partial_predictions(ds, tmp_path: Path) -> None:
    """No detections at all (and samples missing from the results) evaluate to 0, not a crash."""
    spec = datasets.get(ds)
    root, version, scenes = spec.root, spec.version, list(spec.eval_scenes)
    reader = reader_for(root, version, scenes)
    tokens = reader.sample_tokens[:5]
    empty = detections_to_results({t: Detections.empty() for t in tokens[:2]},
                                  {t: np.eye(4) for t in tokens[:2]})
    m = evaluate(reader.nusc, version, empty, tokens, tmp_path, verbose=False)
    assert m["mAP"] == 0.0 and m["NDS"] == 0.0
    with pytest.raises(ValueError, match="not in"):
        evaluate(reader.nusc, version, empty, ["no-such-token"], tmp_path, verbose=False)


# ----------------------------------------------------------------------------- conversion units
def _yaw(q) -> float:
    w, x, y, z = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def test_detections_to_results_geometry() -> None:
    yaw_ego, psi = 0.3, 1.0  # ego heading psi in the map
    T = np.eye(4)
    T[:3, :3] = [[np.cos(psi), -np.sin(psi), 0], [np.sin(psi), np.cos(psi), 0], [0, 0, 1]]
    T[:3, 3] = [100.0, 200.0, 1.0]
    box = np.array([[10.0, 2.0, 0.5, 4.5, 1.9, 1.6, yaw_ego, 3.0, 0.0]], np.float32)
    det = Detections(box, [0.8], [CLASSES.index("car")])
    res = detections_to_results({"tok": det}, {"tok": T})
    assert set(res) == {"meta", "results"}
    (b,) = res["results"]["tok"]
    assert np.allclose(b["translation"], T[:3, :3] @ [10.0, 2.0, 0.5] + T[:3, 3], atol=1e-5)
    assert b["size"] == pytest.approx([1.9, 4.5, 1.6])  # wlh
    assert _yaw(b["rotation"]) == pytest.approx(yaw_ego + psi)
    assert np.linalg.norm(b["rotation"]) == pytest.approx(1.0)
    assert b["velocity"] == pytest.approx([3 * np.cos(psi), 3 * np.sin(psi)])
    assert b["attribute_name"] == "vehicle.moving" and b["detection_name"] == "car"
    assert isinstance(b["detection_score"], float)


def test_detections_to_results_caps_and_sorts() -> None:
    n = 700
    rng = np.random.default_rng(0)
    boxes = np.zeros((n, 9), np.float32)
    boxes[:, 3:6] = 1.0
    scores = rng.random(n).astype(np.float32)
    res = detections_to_results({"t": Detections(boxes, scores, np.zeros(n, np.int64))}, {"t": np.eye(4)})
    out = res["results"]["t"]
    assert len(out) == 500
    got = [b["detection_score"] for b in out]
    assert got == sorted(got, reverse=True) and got[0] == pytest.approx(scores.max())


def test_default_attributes() -> None:
    assert default_attribute("truck", 0.1) == "vehicle.parked"
    assert default_attribute("bus", 1.0) == "vehicle.moving"
    assert default_attribute("bicycle", 0.0) == "cycle.without_rider"
    assert default_attribute("motorcycle", 2.0) == "cycle.with_rider"
    assert default_attribute("pedestrian", 1.0) == "pedestrian.moving"
    assert default_attribute("pedestrian", 0.0) == "pedestrian.standing"
    assert default_attribute("barrier", 3.0) == "" and default_attribute("traffic_cone", 0.0) == ""
