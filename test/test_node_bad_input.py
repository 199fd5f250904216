"""Bad input never stops the detector node: it is dropped, counted on /diagnostics and logged,
and the good frames that follow still give the offline Predictor's detections.

One node process (wall clock, like a live robot) gets, between good frames: an image before any
CameraInfo, wrong image formats, corrupt and empty JPEGs, an invalid CameraInfo, truncated /
NaN / wrongly named / empty / huge PointCloud2s, a cloud without frame id, zero and far-future
stamps, out-of-order trigger and radar stamps, invalid and zero-stamped TF, a whole frame with a
camera whose TF does not exist, and invalid run-time parameter changes. Start-up with a missing
or corrupt checkpoint or invalid parameters must end with exit code 2 and a clear message.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, PointCloud2
from tf2_msgs.msg import TFMessage

from imkd_ros import msgs as M
from imkd_ros.diagnostics import BAD_KINDS
from imkd_ros.harness import (
    HARNESS_NODE_PARAMS,
    DetectorClient,
    FramePlayer,
    NodeProcess,
    compare_detections,
    make_test_checkpoint,
)
from imkd_ros.params import apply_detection_limits
from imkd_ros.raw_frames import RawFrame, frame_messages, radar_cloud_msg
from test.node_support import node_frames

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SCORE_THRESHOLD = 0.3
MAX_DETECTIONS = 50
MS = 1_000_000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "student_tiny_random.pt")


def _bad_messages(raw: RawFrame) -> list[tuple[str, object]]:
    """(topic key, message) of many kinds of bad input, stamped between raw and the next frame,
    at most 3 per topic (the node's sensor queues keep the last 5, as SensorDataQoS)."""
    t = raw.stamp + 100 * MS
    jpeg = raw.cameras[0].data
    cams, sweeps = raw.cameras, raw.sweeps
    out: list[tuple[str, object]] = []
    # images
    c = cams[3]
    out.append((c.name, M.bytes_to_compressed(jpeg, t, c.frame_id, fmt="compressedDepth png")))   # not colour
    out.append((c.name, M.bytes_to_compressed(np.random.default_rng(0).integers(0, 256, 5000, np.uint8),
                                              t + 1 * MS, c.frame_id, fmt="jpeg")))               # corrupt JPEG
    c = cams[4]
    out.append((c.name, CompressedImage(header=M.make_header(t + 2 * MS, c.frame_id), format="jpeg")))  # empty
    out.append((c.name, M.bytes_to_compressed(jpeg, 0, c.frame_id)))                                # zero stamp
    c = cams[2]
    out.append((c.name, M.bytes_to_compressed(jpeg, time.time_ns() + 86_400 * 10**9, c.frame_id)))  # +1 day
    out.append((f"{c.name}/camera_info", M.K_to_camera_info(np.zeros((3, 3)), c.width, c.height, t, c.frame_id)))
    out.append(("CAM_FRONT", M.bytes_to_compressed(jpeg, raw.stamp - 200 * MS, cams[0].frame_id)))  # late trigger
    # radar
    s = sweeps[0]
    trunc = radar_cloud_msg(s)
    trunc.header = M.make_header(t + 3 * MS, s.frame_id)
    trunc.data = trunc.data[: len(trunc.data) // 2]
    out.append((s.name, trunc))                                                                     # truncated
    pts = s.points.copy()
    pts["x"][:3] = np.nan
    out.append((s.name, M.array_to_pointcloud2(pts, t + 4 * MS, s.frame_id)))                      # NaN points
    s = sweeps[1]
    wrong = np.zeros(10, dtype=[("a", "<f4"), ("b", "<f4"), ("c", "<f4")])
    out.append((s.name, M.array_to_pointcloud2(wrong, t + 5 * MS, s.frame_id)))                    # wrong fields
    out.append((s.name, PointCloud2(header=M.make_header(t + 6 * MS, s.frame_id))))                 # empty
    s = sweeps[2]
    huge = np.zeros(50_000, dtype=s.points.dtype)
    out.append((s.name, M.array_to_pointcloud2(huge, t + 7 * MS, s.frame_id)))                     # huge
    out.append((s.name, M.array_to_pointcloud2(s.points, t + 8 * MS, "")))                        # no frame id
    s = sweeps[3]
    out.append((s.name, M.array_to_pointcloud2(s.points, raw.stamp - 300 * MS, s.frame_id)))      # out of order
    # TF
    bad_tf = M.transforms_to_tf_message([("odom", "base_link", t, np.eye(4))])
    bad_tf.transforms[0].transform.rotation.w = 0.0                                                # zero quaternion
    out.append(("tf", bad_tf))
    out.append(("tf", M.transforms_to_tf_message([("odom", "base_link", 0, np.eye(4))])))       # zero stamp
    out.append(("tf", TFMessage()))                                                               # empty: harmless
    return out


def _unknown_camera_frame(raw: RawFrame) -> list[tuple[str, object]]:
    """The whole frame, but CAM_BACK claims an optical frame that no TF knows."""
    msgs = frame_messages(raw)
    for key, msg in msgs:
        if key in ("CAM_BACK", "CAM_BACK/camera_info"):
            msg.header.frame_id = "cam_nowhere"
    return msgs


def test_bad_input_is_counted_and_good_frames_stay_correct(checkpoint: Path, tmp_path: Path) -> None:
    from imkd_core.predict import Predictor

    params = {**HARNESS_NODE_PARAMS, "checkpoint": str(checkpoint), "device": "cpu", "radar_sweeps": 1,
              "score_threshold": SCORE_THRESHOLD, "max_detections": MAX_DETECTIONS, "warmup": False}
    node = NodeProcess(params, tmp_path / "detector.log")
    try:
        frames = node_frames(per_scene=4, max_scenes=1)
        good = [0, 2, 3]
        predictor = Predictor(checkpoint=checkpoint, device="cpu")
        apply_detection_limits(predictor, SCORE_THRESHOLD, MAX_DETECTIONS)
        expected = {i: predictor.predict(frames.offline[i]) for i in good}
        raw = frames.raw

        with DetectorClient() as client:
            client.wait_for_node(240, node)
            # an image before its camera has sent any CameraInfo: held, counted
            cam = raw[0].cameras[3]
            client.publish(cam.name, M.bytes_to_compressed(cam.data, raw[0].stamp - 300 * MS, cam.frame_id))
            time.sleep(0.5)
            player = FramePlayer(client)

            def check(i: int) -> None:
                det, _, _ = player.play(raw[i], timeout=120)
                problems = compare_detections(expected[i], det)
                assert not problems, f"frame {i} after bad input: {problems}"

            check(0)
            client.publish_messages(_bad_messages(raw[0]))
            time.sleep(1.0)
            player.play(raw[1], timeout=120, messages=_unknown_camera_frame(raw[1]))  # built with CAM_BACK masked
            check(2)

            # run-time parameters: invalid values and read-only ones are refused, valid ones taken
            results = client.set_parameters({"score_threshold": 1.5})
            assert not results[0].successful and "score_threshold" in results[0].reason
            results = client.set_parameters({"max_detections": 0})
            assert not results[0].successful
            results = client.set_parameters({"checkpoint": "/elsewhere.pt"})
            assert not results[0].successful and "read-only" in results[0].reason.lower()
            results = client.set_parameters({"sync_window": 0.5})
            assert not results[0].successful
            assert client.set_parameters({"marker_lifetime": 2.0})[0].successful
            values = client.get_parameters(["score_threshold", "max_detections", "checkpoint", "marker_lifetime"])
            assert values == {"score_threshold": SCORE_THRESHOLD, "max_detections": MAX_DETECTIONS,
                              "checkpoint": str(checkpoint), "marker_lifetime": 2.0}
            check(3)

            must = {"waiting_camera_info", "image_encoding", "image_corrupt", "image_empty", "stamp_zero",
                    "stamp_future", "camera_info_invalid", "radar_malformed", "radar_nan_points", "radar_fields",
                    "radar_empty", "radar_too_large", "frame_id_empty", "tf_invalid", "tf_stamp_invalid",
                    "parameter_rejected"}
            assert must <= set(BAD_KINDS)

            def counted(v: dict) -> bool:
                bad, fr = v.get("bad input", {}), v.get("frames", {})
                return all(int(bad.get(k, 0)) >= 1 for k in must) and int(fr.get("cameras_masked_tf", 0)) >= 1 \
                    and int(fr.get("trigger_duplicates", 0)) >= 1 and int(fr.get("radar_out_of_order", 0)) >= 1 \
                    and fr.get("frames_published") == "4"
            diag = client.wait_diagnostics(counted, 10)
            bad_summary = {k: {kk: vv for kk, vv in v.items() if vv not in ("0", "0.000")}
                           for k, v in diag.items() if k in ("bad input", "frames")}
            assert counted(diag), json.dumps(bad_summary)
            assert int(diag["bad input"]["inference_errors"]) == 0
            assert int(diag["bad input"]["parameter_rejected"]) >= 3
            assert int(diag["frames"]["frames_published"]) == 4
        assert node.alive()
        log = node.output()
        assert "bad input [image_corrupt]" in log and "bad input [radar_fields]" in log
        assert "Traceback" not in log, log[-3000:]
    finally:
        node.stop()
    print(f"{frames.source} frames; node log:\n{node.output()[-1500:]}")


def test_startup_errors_are_clear(checkpoint: Path, tmp_path: Path) -> None:
    """Missing / corrupt checkpoint and invalid parameters: exit code 2 naming the problem."""
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(os.urandom(2048))
    cases = {
        "missing": ({"checkpoint": str(tmp_path / "nope.pt")}, ["checkpoint", "file not found", "nope.pt"]),
        "corrupt": ({"checkpoint": str(corrupt)}, ["cannot load the model", "corrupt"]),
        "params": ({"checkpoint": str(checkpoint), "image_transport": "h264", "sync_window": -0.1,
                    "camera_offsets": [0.0], "device": "tpu"},
                   ["image_transport", "sync_window", "camera_offsets", "device"]),
        "cross": ({"checkpoint": str(checkpoint), "radar_sweeps": 20}, ["radar_buffer_len", "radar_sweeps"]),
        "range": ({"checkpoint": str(checkpoint), "score_threshold": 1.5}, ["score_threshold"]),
        "type": ({"checkpoint": str(checkpoint), "camera_timeout": 1}, ["camera_timeout", "double"]),
    }
    procs = {name: NodeProcess(p, tmp_path / f"{name}.log") for name, (p, _) in cases.items()}
    try:
        for name, (_, words) in cases.items():
            code = procs[name].wait(timeout=120)
            out = procs[name].output()
            assert code == 2, f"{name}: exit {code}\n{out}"
            assert "cannot start" in out and all(w in out for w in words), f"{name}:\n{out}"
            assert "Traceback" not in out, out
    finally:
        for p in procs.values():
            p.stop()
