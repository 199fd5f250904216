"""A second rig end to end: compact4 (4 cameras of three sizes and fields of view, 2 radars with
only x, y, z, rcs, vx, vy). Generate a world seen by it, train a micro teacher and a student
initialised from it for a few steps, convert the val scene to a bag with the rig's topics, then
replay it through the detector node (its own process, `rig:=compact4`): the node's frames equal
the offline reader's and its detections equal the offline Predictor's on every frame. A node
given the nuScenes rig for this checkpoint, or a broken rig file, does not start (exit 2, one line).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test.train_support import REPO, VERSION, micro_config_yaml, run_train

pytestmark = [pytest.mark.ros, pytest.mark.slow]

pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built into the venv (tools/build_interfaces.sh)")

RIG = "compact4"


@pytest.fixture(scope="module")
def compact4(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Data (2 scenes x 4 keyframes, with sweeps), a micro student trained for it, the val bag."""
    from imkd_core.data.synthetic import SyntheticConfig, generate
    from imkd_ros import nuscenes_to_bag as n2b

    root = tmp_path_factory.mktemp("rig_e2e")
    data = root / "data"
    generate(data, SyntheticConfig(scenes=2, samples_per_scene=4, seed=5, image_size=(320, 180), sweeps=True,
                                   lidar_azimuth_steps=180, val_fraction=0.5, rig=RIG))
    common = ["--config", micro_config_yaml(tmp_path_factory), "--rig", RIG, "--dataroot", data, "--version",
              VERSION, "--train-scenes", "synth-train-*", "--max-steps", 2, "--batch-size", 2, "--num-workers", 0,
              "--val-every", 0, "--no-progress", "--threads", 1, "--set", "data.lidar_sweeps=2"]
    run_train(["--model", "teacher", *common, "--out", root / "teacher"], timeout=600)
    run_train(["--model", "student", *common, "--teacher", root / "teacher" / "last.pt", "--kd", "l1,init",
               "--out", root / "student", "--export-slim", root / "student.pt"], timeout=600)
    nusc = n2b.load_nuscenes(data, VERSION)
    stats = n2b.convert_scene(nusc, "synth-val-0001", root / "bags",
                              n2b.ConvertOptions(lidar=False, progress=False, fsync=False, rig=RIG))
    assert stats.status == "ok" and not stats.missing and not stats.corrupt
    return {"data": data, "nusc": nusc, "bag": stats.bag, "ckpt": root / "student.pt", "root": root}


def test_bag_carries_the_rig_s_topics_and_fields(compact4: dict[str, Any]) -> None:
    from imkd_core.rig import load_rig
    from imkd_ros.replay import bag_topics, open_bag

    rig = load_rig(RIG)
    reader = open_bag(compact4["bag"])
    try:
        topics = set(bag_topics(reader))
        radar = next(c for c in reader.connections if c.topic == rig.radars[0].topic)
        _, _, raw = next(reader.messages(connections=[radar]))
    finally:
        reader.close()
    assert {c.topic for c in rig.cameras} | {c.info_topic for c in rig.cameras} | {r.topic for r in rig.radars} \
        <= topics
    assert not any(t.startswith("/sensors/camera/") for t in topics)  # no nuScenes channel leaked in
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    assert [f.name for f in deserialize_message(raw, PointCloud2).fields] == ["x", "y", "z", "rcs", "vx", "vy"]


def test_compact4_bag_through_the_assembler_equals_the_reader(compact4: dict[str, Any]) -> None:
    """The node's frame building for the rig (its topics, trigger camera, field mapping; cameras of
    other sizes resized to the reference camera's) equals the offline reader's frames."""
    from imkd_core.checkpoint import load_checkpoint
    from imkd_core.config import IMKDConfig
    from imkd_ros.harness import assemble_bag
    from imkd_ros.replay import bag_keyframes, open_bag
    from imkd_ros.replay_eval import make_reader
    from test.node_support import frame_differences

    cfg = IMKDConfig.from_dict(load_checkpoint(compact4["ckpt"])["config"])
    assert cfg.data.rig == RIG
    reader = open_bag(compact4["bag"])
    try:
        keyframes = bag_keyframes(reader)
    finally:
        reader.close()
    built = assemble_bag(compact4["bag"], cfg.data.radar_sweeps, tuple(cfg.data.image_size), triggers=keyframes,
                         rig=RIG)
    assert sorted(built) == sorted(keyframes) and len(keyframes) == 4
    offline = make_reader(compact4["nusc"], list(keyframes.values()), cfg)
    sweeps_used = 0
    for stamp, token in keyframes.items():
        ref, _ = offline[offline.index_of(token)]
        assert ref.images.shape[0] == 4 and ref.camera_mask.all()
        assert frame_differences(built[stamp], ref) == [], (stamp, frame_differences(built[stamp], ref))
        sweeps_used += len(np.unique(ref.radar[:, 6]))
    assert sweeps_used > 3 * len(keyframes)  # several sweeps of both radars: the sweep rule ran


def test_compact4_closed_loop_equals_offline(compact4: dict[str, Any]) -> None:
    from imkd_ros.replay_eval import METRIC_KEYS, run_replay_eval

    out = compact4["root"] / "eval"
    report = run_replay_eval(compact4["bag"], compact4["ckpt"], compact4["data"], out_dir=out, nusc=compact4["nusc"],
                             score_threshold=0.01, progress=False, verbose=False)
    s = report.summary
    assert s["frames_expected"] == 4 and s["frames_received"] == 4, s["frames_missing"]
    assert s["messages_lost"] == {} and s["message_errors"] == 0 and s["extra_frames"] == 0
    assert s["detections_agreement"]["frames_identical"] == 4, s["detections_agreement"]
    assert sum(len(d) for d in report.closed.detections.values()) > 0, "no detections at all: nothing compared"
    for key in METRIC_KEYS:
        assert s["replay"][key] == s["offline"][key], key
    assert all(f["cameras"] == 4 for f in report.closed.node_frames.values())
    assert report.closed.playback["skipped"].get("/vehicle/cam_front_wide/image_raw/compressed", 0) > 0


def _node(*params: str) -> subprocess.CompletedProcess:
    args = [a for p in params for a in ("-p", p)]
    return subprocess.run([sys.executable, "-m", "imkd_ros.detector_node", "--ros-args", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def test_node_refuses_a_rig_the_checkpoint_was_not_trained_for(compact4: dict[str, Any], tmp_path: Path) -> None:
    r = _node(f"checkpoint:={compact4['ckpt']}", "rig:=nuscenes", "warmup:=false")
    assert r.returncode == 2, r.stderr[-2000:]
    fatal = [line for line in r.stderr.splitlines() if "cannot start" in line]
    assert len(fatal) == 1 and "does not match the rig the checkpoint was trained for, 'compact4'" in fatal[0]
    assert "Traceback" not in r.stderr
    bad = tmp_path / "bad_rig.yaml"
    bad.write_text("name: broken\ncameras: []\n")
    r = _node(f"checkpoint:={compact4['ckpt']}", f"rig:={bad}")
    assert r.returncode == 2 and "'cameras' must be a non-empty list" in r.stderr and "Traceback" not in r.stderr
