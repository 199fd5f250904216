"""Bad input costs only itself, on the Humble code path; bad start-up input is one line and exit 2.

Run time (one node process over real DDS, wall clock): the node runs with
Node.add_pre_set_parameters_callback removed, as on Humble's rclpy, so its fallback is what
counts refused parameter changes. Its params files hold a misspelled key and a node key that
does not match (both warned at start, with hints). Then, per case, bad input goes in between
good frames and the case asserts exactly: the node still runs, the count of its kind rose by
one, and the next good frame equals the offline Predictor (boxes, scores, velocities) from all
six cameras. Cases: a 600-byte JPEG declaring 60000 x 60000 and a PNG declaring
100000 x 100000 (refused from the header, never decoded), a CameraInfo whose size differs from
its image's, a dynamic /tf re-parenting a camera's static edge, a read-only and an out-of-range
parameter change.

Start-up (no model is loaded for these): an empty checkpoint, a YAML syntax error, `.inf`,
`use_sim_time:=maybe`, `diagnostics_period: 1e-6`, a wrong type in a second params file.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from imkd_ros import msgs as M
from imkd_ros.harness import (
    HARNESS_NODE_PARAMS,
    DetectorClient,
    FramePlayer,
    NodeProcess,
    compare_detections,
    make_test_checkpoint,
    node_command,
)
from imkd_ros.params import apply_detection_limits
from imkd_ros.raw_frames import RawFrame
from imkd_ros.topics import NODE_NAME
from test.node_support import huge_jpeg, huge_png, node_frames

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
MS = 1_000_000
SCORE_THRESHOLD, MAX_DETECTIONS = 0.3, 50
# the node as on Humble: rclpy without the Iron+ pre-set parameter hook
HUMBLE_NODE = [sys.executable, "-c", textwrap.dedent("""
    import sys
    import rclpy.node
    del rclpy.node.Node.add_pre_set_parameters_callback
    print("humble mode: Node.add_pre_set_parameters_callback removed", flush=True)
    from imkd_ros.detector_node import main
    sys.exit(main(sys.argv))
""")]


# ------------------------------------------------------------------------------------- run time
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "student_tiny_random.pt")


@pytest.fixture(scope="module")
def frames():
    return node_frames(real=False, per_scene=7)


@pytest.fixture(scope="module")
def expected(frames, checkpoint: Path) -> list:
    from imkd_core.predict import Predictor

    predictor = Predictor(checkpoint=checkpoint, device="cpu")
    apply_detection_limits(predictor, SCORE_THRESHOLD, MAX_DETECTIONS)
    return [predictor.predict(f) for f in frames.offline]


@pytest.fixture(scope="module")
def humble_node(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("humble_node")
    typo = tmp / "typo.yaml"
    typo.write_text(yaml.safe_dump({f"/**/{NODE_NAME}": {"ros__parameters": {"sync_windw": 0.05}},
                                    "imkd_detectr": {"ros__parameters": {"camera_timeout": 5.0}}}))
    params = {**HARNESS_NODE_PARAMS, "checkpoint": str(checkpoint), "device": "cpu", "radar_sweeps": 1,
              "score_threshold": SCORE_THRESHOLD, "max_detections": MAX_DETECTIONS, "warmup": False}
    node = NodeProcess(params, tmp / "detector.log", command=HUMBLE_NODE + ["--ros-args", "--params-file", str(typo)])
    client = DetectorClient()
    client.wait_for_node(240, node)
    state = {"node": node, "client": client, "player": FramePlayer(client), "next": 0}
    yield state
    client.close()
    node.stop()


def _play_next(state: dict, frames, expected) -> RawFrame:
    """The next good frame must equal the offline Predictor, from all six cameras."""
    i = state["next"]
    state["next"] += 1
    raw = frames.raw[i]
    det, msg, _ = state["player"].play(raw, timeout=120)
    problems = compare_detections(expected[i], det, v_tol=1e-4)
    assert not problems, f"frame {i}: {problems}"
    client = state["client"]
    assert client.wait_until(lambda: raw.stamp in client.received.timing, 10)
    assert client.received.timing[raw.stamp]["cameras"] == 6
    return raw


def _bad_count(client: DetectorClient, kind: str) -> int:
    return int(client.wait_diagnostics(lambda v: kind in v.get("bad input", {}), 10)["bad input"][kind])


def test_humble_mode_starts_warns_and_equals_offline(humble_node: dict, frames, expected) -> None:
    _play_next(humble_node, frames, expected)
    log = humble_node["node"].output()
    assert "humble mode: Node.add_pre_set_parameters_callback removed" in log
    assert "unknown parameter 'sync_windw' ignored (did you mean 'sync_window'?)" in log
    assert "node key 'imkd_detectr' does not match this node (/imkd_detector)" in log


def _case_huge_jpeg(raw: RawFrame, client: DetectorClient) -> None:
    cam = raw.cameras[2]
    client.publish(cam.name, M.bytes_to_compressed(huge_jpeg(), raw.stamp + 100 * MS, cam.frame_id))


def _case_huge_png(raw: RawFrame, client: DetectorClient) -> None:
    cam = raw.cameras[4]
    client.publish(cam.name, M.bytes_to_compressed(huge_png(), raw.stamp + 100 * MS, cam.frame_id, fmt="png"))


def _case_camera_info_mismatch(raw: RawFrame, client: DetectorClient) -> None:
    cam, t = raw.cameras[3], raw.stamp + 100 * MS
    client.publish(f"{cam.name}/camera_info", M.K_to_camera_info(cam.K, cam.width // 2, cam.height // 2, t,
                                                                  cam.frame_id))
    client.publish(cam.name, M.bytes_to_compressed(cam.data, t, cam.frame_id))


def _case_static_reparent(raw: RawFrame, client: DetectorClient) -> None:
    cam = raw.cameras[3]
    client.publish("tf", M.transforms_to_tf_message([("rogue_mount", cam.frame_id, raw.stamp + 100 * MS,
                                                      np.eye(4))]))


def _case_read_only_parameter(raw: RawFrame, client: DetectorClient) -> None:
    result = client.set_parameters({"checkpoint": "/elsewhere.pt"})[0]
    assert not result.successful and "read-only" in result.reason


def _case_out_of_range_parameter(raw: RawFrame, client: DetectorClient) -> None:
    result = client.set_parameters({"score_threshold": 1.5})[0]
    assert not result.successful and "score_threshold" in result.reason
    assert client.get_parameters(["score_threshold"]) == {"score_threshold": SCORE_THRESHOLD}


RUNTIME_CASES = {
    "jpeg_declares_60000x60000": ("image_dimensions", _case_huge_jpeg),
    "png_declares_100000x100000": ("image_dimensions", _case_huge_png),
    "camera_info_size_mismatch": ("camera_info_mismatch", _case_camera_info_mismatch),
    "dynamic_tf_reparents_static_edge": ("tf_static_conflict", _case_static_reparent),
    "read_only_parameter": ("parameter_rejected", _case_read_only_parameter),
    "out_of_range_parameter": ("parameter_rejected", _case_out_of_range_parameter),
}


@pytest.mark.parametrize("case", list(RUNTIME_CASES))
def test_bad_input_costs_only_itself(case: str, humble_node: dict, frames, expected) -> None:
    kind, send = RUNTIME_CASES[case]
    client, node = humble_node["client"], humble_node["node"]
    if humble_node["next"] == 0:
        _play_next(humble_node, frames, expected)
    before = _bad_count(client, kind)
    send(frames.raw[humble_node["next"] - 1], client)
    diag = client.wait_diagnostics(lambda v: int(v["bad input"][kind]) > before, 10)
    assert int(diag["bad input"][kind]) == before + 1, diag["bad input"]
    assert node.alive(), node.output()[-3000:]
    _play_next(humble_node, frames, expected)
    others = {k: v for k, v in client.diagnostics_values()["bad input"].items()
              if not k.startswith("_") and k not in ("image_dimensions", "camera_info_mismatch", "tf_static_conflict",
                                                     "parameter_rejected")}
    assert all(v == "0" for v in others.values()), {k: v for k, v in others.items() if v != "0"}
    log = node.output()
    assert f"bad input [{kind}]" in log and "Traceback" not in log


# ------------------------------------------------------------------------------------- start-up
def _params_file(tmp: Path, name: str, body: str) -> Path:
    p = tmp / name
    p.write_text(body)
    return p


STARTUP_CASES = {
    "empty_checkpoint": ([], ["checkpoint is required", "imkd_tiny_demo.pt", "synthetic data only"]),
    "yaml_syntax_error": ([("bad.yaml", f"/**/{NODE_NAME}:\n  ros__parameters:\n    sync_window: [1, 2\n")],
                          ["bad.yaml: YAML syntax error at line"]),
    "inf_duration": ([("inf.yaml", f"/**/{NODE_NAME}:\n  ros__parameters:\n    camera_timeout: .inf\n")],
                     ["camera_timeout = inf: must be finite"]),
    "inf_override": (["-p", "tf_timeout:=.inf"], ["tf_timeout = inf: must be finite"]),
    "use_sim_time_maybe": (["-p", "use_sim_time:=maybe"], ["use_sim_time must be true or false"]),
    "diagnostics_period_1e-6": ([("fast.yaml", f"/**/{NODE_NAME}:\n  ros__parameters:\n"
                                               "    diagnostics_period: 1e-6\n")],
                                ["diagnostics_period = 1e-06: must be [0.01, 3600]"]),
    "wrong_type_in_second_file": ([("a.yaml", f"/**/{NODE_NAME}:\n  ros__parameters:\n    camera_timeout: 0.2\n"),
                                   ("b.yaml", f"/**/{NODE_NAME}:\n  ros__parameters:\n    camera_timeout: abc\n")],
                                  ["b.yaml: camera_timeout = 'abc': expected a double"]),
    "override_without_value": (["-p", "device:="], ["-p device:=: no value"]),
}


@pytest.mark.parametrize("case", list(STARTUP_CASES))
def test_startup_error_is_one_line_and_exit_2(case: str, checkpoint: Path, tmp_path: Path) -> None:
    spec, words = STARTUP_CASES[case]
    args: list[str] = []
    for item in spec:
        args += ["--params-file", str(_params_file(tmp_path, *item))] if isinstance(item, tuple) else [item]
    if case != "empty_checkpoint":
        args += ["-p", f"checkpoint:={checkpoint}"]
    proc = subprocess.run(node_command() + ["--ros-args", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot start: " in lines[0], out
    assert all(w in lines[0] for w in words), out
