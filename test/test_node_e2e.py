"""The detector node in its own process, fed over real DDS, equals the offline Predictor.

Frames are the real nuScenes subset (../shared/nuscenes: 3 samples of each scene, scene-0916
first, so the stream jumps back in time between scenes like a bag loop) or, where it is absent,
the synthetic world of imkd_core.data.synthetic. They are published as ROS messages exactly as
the bag converter writes them(original JPEG bytes, CameraInfo, 18-field radar PointCloud2, /tf odometry, /tf_static
extrinsics) with a simulated clock (use_sim_time); every frame must yield exactly one
Detection3DArray equal to imkd_core's Predictor on the offline reader's SensorFrame of the same
sample (centres within 1e-3 m, same classes, scores within 1e-4). The real subset has no radar
sweep files, so node and reader both use radar_sweeps = 1 (the keyframe sweep).

The model is a random-init tiny student saved in tmp (imkd_ros.harness.make_test_checkpoint);
equality does not depend on the weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from imkd_ros.harness import (
    HARNESS_NODE_PARAMS,
    DetectorClient,
    FramePlayer,
    NodeProcess,
    compare_detections,
    make_test_checkpoint,
)
from imkd_ros.params import PARAMS, apply_detection_limits, default_params
from test.node_support import node_frames

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SCORE_THRESHOLD = 0.3
MAX_DETECTIONS = 50


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "student_tiny_random.pt")


@pytest.fixture(scope="module")
def node_params(checkpoint: Path) -> dict:
    return {**HARNESS_NODE_PARAMS, "checkpoint": str(checkpoint), "device": "cpu", "radar_sweeps": 1,
            "score_threshold": SCORE_THRESHOLD, "max_detections": MAX_DETECTIONS, "use_sim_time": True}


@pytest.fixture(scope="module")
def node(node_params: dict, tmp_path_factory: pytest.TempPathFactory):
    """Started first: it loads torch and the model while this process prepares the reference."""
    proc = NodeProcess(node_params, tmp_path_factory.mktemp("node") / "detector.log")
    yield proc
    proc.stop()


def test_node_detections_equal_offline_predictor(node: NodeProcess, node_params: dict, checkpoint: Path) -> None:
    from imkd_core.predict import Predictor

    frames = node_frames(per_scene=3)
    predictor = Predictor(checkpoint=checkpoint, device="cpu")
    apply_detection_limits(predictor, SCORE_THRESHOLD, MAX_DETECTIONS)
    expected = [predictor.predict(f) for f in frames.offline]
    assert sum(len(d) for d in expected) >= len(expected), "the test model should detect something"

    with DetectorClient() as client:
        client.wait_for_node(240, node)
        player = FramePlayer(client, sim_time=True)
        for raw, exp in zip(frames.raw, expected):
            det, msg, _ = player.play(raw, timeout=120)
            assert msg.header.frame_id == "base_link"
            assert det.stamp == raw.stamp
            problems = compare_detections(exp, det, xyz_tol=1e-3, score_tol=1e-4)
            assert not problems, f"{frames.source} frame {raw.token} ({raw.scene}): {problems}"
        client.wait_until(lambda: all(raw.stamp in client.received.timing for raw in frames.raw), 10)
        time.sleep(1.0)  # anything extra would have arrived by now

        got = {s: len(v) for s, v in client.received.detections.items()}
        assert got == {raw.stamp: 1 for raw in frames.raw}, "exactly one Detection3DArray per frame"
        assert all(client.received.markers[raw.stamp] == 1 for raw in frames.raw)
        for raw, exp in zip(frames.raw, expected):
            t = client.received.timing[raw.stamp]
            assert t["detections"] == len(exp) and t["cameras"] == 6
            assert {"preprocess", "backbone", "head", "decode", "total", "build", "publish"} <= set(t["stages_ms"])
            json.dumps(t)

        diag = client.wait_diagnostics(lambda v: v["frames"].get("frames_published") == str(len(frames.raw)), 10)
        assert diag["frames"]["frames_published"] == str(len(frames.raw))
        assert diag["frames"]["cameras_masked"] == "0" and diag["frames"]["frames_dropped_tf"] == "0"
        assert all(diag["bad input"][k] == "0" for k in diag["bad input"] if not k.startswith("_"))
        front = default_params()["image_topics"][0]
        assert int(diag["inputs"][f"count {front}"]) >= len(frames.raw)
        if frames.source == "nuscenes":  # scene-0916 -> scene-0523 goes back in time: a bag loop
            assert int(diag["frames"]["clock_resets"]) + int(diag["frames"]["ros_clock_resets"]) >= 1

        # every parameter is declared, with config/detector.yaml's default unless overridden
        values = client.get_parameters([p.name for p in PARAMS] + ["use_sim_time"])
        for p in PARAMS:
            want = node_params.get(p.name, p.default)
            have = values[p.name]
            assert (list(have) if isinstance(want, list) else have) == want, p.name
        assert values["use_sim_time"] is True
    assert node.alive(), node.output()[-3000:]


def test_raw_image_transport(checkpoint: Path, tmp_path: Path) -> None:
    """image_transport: raw (sensor_msgs/Image, decoded by the publisher, resized by the node):
    one Detection3DArray per frame from all six cameras, no input counted as bad."""
    d = default_params()
    topics = [t.removesuffix("/compressed") for t in d["image_topics"]]
    params = {**HARNESS_NODE_PARAMS, "checkpoint": str(checkpoint), "device": "cpu", "radar_sweeps": 1,
              "image_transport": "raw", "image_topics": topics, "warmup": False}
    raws = node_frames(real=False, per_scene=2, offline=False).raw
    with NodeProcess(params, tmp_path / "detector.log") as node, \
            DetectorClient(params={"image_transport": "raw", "image_topics": topics}) as client:
        client.wait_for_node(240, node)
        player = FramePlayer(client, transport="raw")
        for raw in raws:
            player.play(raw, timeout=120)
        client.wait_until(lambda: all(r.stamp in client.received.timing for r in raws), 10)
        assert all(client.received.timing[r.stamp]["cameras"] == 6 for r in raws)
        assert {s: len(v) for s, v in client.received.detections.items()} == {r.stamp: 1 for r in raws}
        diag = client.wait_diagnostics(lambda v: v["frames"].get("frames_published") == "2", 10)
        assert all(v == "0" for k, v in diag["bad input"].items() if not k.startswith("_")), diag["bad input"]
        assert diag["inputs"]["count /tf"] == "2"  # one odometry TFMessage per frame, counted once
