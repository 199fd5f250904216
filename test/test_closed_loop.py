"""Closed loop on a synthetic bag: bag -> imkd_ros.replay -> detector node (own process) -> metrics.

The detections recorded from the node must match the offline evaluator's (NuScenesReader ->
Predictor) on the same samples: devkit metrics within 0.005 and, stronger, every
frame's boxes identical. One tiny synthetic scene WITH sweeps (12 Hz cameras, 13 Hz radars), so
the lock-step mode's trigger thinning and sync barriers are exercised. The model is the shipped
demo checkpoint when installed, else a random-init `tiny` student written to tmp (its scores
cluster just above the 0.1 decode threshold, so every frame has its 200 boxes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built into the venv (tools/build_interfaces.sh)")

from imkd_ros.closed_loop import ReplayEvalError  # noqa: E402
from imkd_ros.replay_eval import METRIC_KEYS, run_replay_eval  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "imkd_core" / "weights" / "imkd_tiny_demo.pt"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A one-scene synthetic dataset with sweeps, its bag, and a checkpoint."""
    from imkd_core.data.synthetic import SyntheticConfig, generate
    from imkd_ros import nuscenes_to_bag as n2b

    root = tmp_path_factory.mktemp("closed_loop")
    data = root / "data"
    generate(data, SyntheticConfig(scenes=1, samples_per_scene=5, seed=11, image_size=(352, 198), sweeps=True,
                                   lidar_azimuth_steps=180))
    nusc = n2b.load_nuscenes(data, "v1.0-synth")
    stats = n2b.convert_scene(nusc, nusc.scene[0]["name"], root / "bags",
                              n2b.ConvertOptions(lidar=False, progress=False, fsync=False))
    assert stats.status == "ok"
    if SHIPPED.is_file():
        ckpt = SHIPPED
    else:
        import torch

        from imkd_core.checkpoint import save_checkpoint
        from imkd_core.config import get_config
        from imkd_core.models.detector import Student

        torch.manual_seed(0)
        cfg = get_config("tiny")
        ckpt = save_checkpoint(root / "random_tiny.pt", {"kind": "student", "config": cfg.to_dict(),
                                                          "model": Student(cfg, load_pretrained=False).state_dict()})
    return {"data": data, "nusc": nusc, "bag": stats.bag, "ckpt": ckpt, "root": root}


def test_bag_through_the_assembler_equals_the_reader(synthetic: dict[str, Any]) -> None:
    """The node's frame building (FrameAssembler fed the bag in bag order, no DDS) and the offline
    reader build the same keyframes from the same scene with sweeps: the same images, poses and
    radar sweeps (the shared SweepRule), so the closed loop below can be held to equality."""
    from imkd_core.checkpoint import load_checkpoint
    from imkd_core.config import IMKDConfig
    from imkd_ros.harness import assemble_bag
    from imkd_ros.replay import bag_keyframes, open_bag
    from imkd_ros.replay_eval import make_reader
    from test.node_support import frame_differences

    cfg = IMKDConfig.from_dict(load_checkpoint(synthetic["ckpt"])["config"])
    reader = open_bag(synthetic["bag"])
    try:
        keyframes = bag_keyframes(reader)
    finally:
        reader.close()
    built = assemble_bag(synthetic["bag"], cfg.data.radar_sweeps, tuple(cfg.data.image_size), triggers=keyframes)
    assert sorted(built) == sorted(keyframes)
    offline = make_reader(synthetic["nusc"], list(keyframes.values()), cfg)
    sweeps_used = 0
    for stamp, token in keyframes.items():
        ref, _ = offline[offline.index_of(token)]
        assert frame_differences(built[stamp], ref) == [], (stamp, frame_differences(built[stamp], ref))
        sweeps_used += len(set(ref.radar[:, 6].tolist()))
    assert sweeps_used > 5 * len(keyframes)  # several sweeps per radar: the sweep rule was exercised


def test_closed_loop_matches_offline(synthetic: dict[str, Any]) -> None:
    out = synthetic["root"] / "eval"
    report = run_replay_eval(synthetic["bag"], synthetic["ckpt"], synthetic["data"], out_dir=out,
                             nusc=synthetic["nusc"], progress=False, verbose=False)
    s = report.summary
    assert s["frames_expected"] == 5 and s["frames_received"] == 5, s["frames_missing"]
    assert s["messages_lost"] == {} and s["message_errors"] == 0
    assert s["extra_frames"] == 0  # lock-step: only keyframes trigger the node
    for key in METRIC_KEYS:
        assert abs(s["replay"][key] - s["offline"][key]) <= 0.005, (key, s["replay"][key], s["offline"][key])
    agree = s["detections_agreement"]
    assert agree["frames_identical"] == 5, agree
    assert sum(len(d) for d in report.closed.detections.values()) > 0, "no detections at all: nothing compared"
    # outputs on disk, the summary parses
    summary = json.loads((out / "replay_eval.json").read_text())
    assert summary["frames_received"] == 5 and set(summary["replay"]) == set(METRIC_KEYS)
    for name in ("replay/metrics_summary.json", "offline/metrics_summary.json", "detections_replay.json",
                 "node.log", "node_frames.json"):
        assert (out / name).is_file(), name
    frames = json.loads((out / "node_frames.json").read_text())
    assert len(frames) == 5 and all(f["cameras"] == 6 for f in frames.values())
    # the replay itself: sweeps of CAM_FRONT were held back (lock-step), the barriers ran
    playback = report.closed.playback
    assert playback["skipped"].get("/sensors/camera/cam_front/image_rect_color/compressed", 0) > 0
    assert playback["barriers"] >= 4 and playback["barrier_timeouts"] == 0  # the last keyframe may end the bag


def test_cli_errors_are_clear(synthetic: dict[str, Any], tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "imkd_ros.replay_eval", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    bag, data, ckpt = str(synthetic["bag"]), str(synthetic["data"]), str(synthetic["ckpt"])
    r = run(str(tmp_path / "nobag"), "--checkpoint", ckpt, "--dataroot", data)
    assert r.returncode == 2 and "bag not found" in r.stderr
    r = run(bag, "--checkpoint", str(tmp_path / "none.pt"), "--dataroot", data)
    assert r.returncode == 2 and "checkpoint not found" in r.stderr
    r = run(bag, "--checkpoint", ckpt, "--dataroot", str(tmp_path))
    assert r.returncode == 2 and "v1.0-synth" in r.stderr


def test_node_failure_is_reported(synthetic: dict[str, Any], tmp_path: Path) -> None:
    """A node that cannot start ends the run with its own message, not a hang."""
    with pytest.raises(ReplayEvalError, match="detector node exited"):
        run_replay_eval(synthetic["bag"], synthetic["ckpt"], synthetic["data"], out_dir=tmp_path,
                        nusc=synthetic["nusc"], node_params={"sync_window": -1.0}, offline=False, progress=False,
                        verbose=False, startup_timeout=120)
